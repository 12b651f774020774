"""Every AMQP 0-9-1 method RabbitMQ speaks, and the codec for method-frame payloads.

Each method is a small slotted dataclass. Its annotations *are* the codec's
field table: with ``from __future__ import annotations`` they stay strings,
and a string names a wire type (``shortstr``, ``bit``, ...). The aliases below
give type checkers the Python type of each wire type. One generic interpreter
encodes and decodes every method from that table; the methods on the
broker's hot path (publish, ack, nack, reject in; deliver, ack, nack out) also
get hand-written struct code, which the tests hold equal to the generic path.

The deprecated access ``ticket`` (always 0, ignored by RabbitMQ) is on the wire
but not in the Python fields, so ``Basic.Publish(exchange, routing_key,
mandatory, immediate)`` reads as the protocol is used. Field names are the
spec's in snake_case; ``global`` becomes ``global_``, and the close methods'
``class-id``/``method-id`` (the method that failed) become
``failing_class_id``/``failing_method_id`` because ``class_id``/``method_id``
are the class attributes naming each method. Every field has a
default: the spec's where it gives one, else the type's zero.

Methods are mutable slotted dataclasses rather than frozen ones: frozen
construction costs three times as much, and a publish is decoded per message.
Treat them as values all the same.

Method names follow the spec ("queue.declare-ok"); RabbitMQ's Erlang names use
an underscore ("queue.declare_ok") in its error texts.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar, dataclass_transform

from amqlite.amqp.values import (
    DECODE_ERRORS,
    decode_error,
    encode_longstr,
    encode_shortstr,
    encode_table,
    read_table,
)
from amqlite.core.errors import FrameError, NotImplemented_, SyntaxError_

# Wire types, as annotations. The string is what the codec reads.
octet = int
short = int
long = int
longlong = int
shortstr = str
longstr = bytes
bit = bool
table = dict[str, Any]


class Method:
    """Base of every method class; the class attributes describe the method on the wire."""

    __slots__ = ()

    class_id: ClassVar[int]
    method_id: ClassVar[int]
    #: The spec's name, e.g. "basic.publish".
    name: ClassVar[str]
    #: True when the sender waits for a reply (unless it sets nowait).
    synchronous: ClassVar[bool]
    #: True when a content header and body frames follow the method frame.
    has_content: ClassVar[bool]
    #: The methods that may answer this one: (Queue.DeclareOk,), (Basic.GetOk, Basic.GetEmpty).
    replies: ClassVar[tuple[type[Method], ...]]


M = TypeVar("M", bound=type[Method])

_UINT16X2 = struct.Struct(">HH")
_UINT32 = struct.Struct(">I")

# Codec steps: (kind, argument, field names).
_FIXED, _BITS, _SHORTSTR, _LONGSTR, _TABLE, _TICKET = range(6)
_FIXED_CODES = {"octet": "B", "short": "H", "long": "I", "longlong": "Q"}
_VARIABLE_KINDS = {"shortstr": _SHORTSTR, "longstr": _LONGSTR, "table": _TABLE}
Step = tuple[int, Any, tuple[str, ...]]

Decoder = Callable[[bytes, int, int], Method]
Encoder = Callable[[Any], bytes]

#: Every method class by (class_id, method_id).
METHODS: dict[tuple[int, int], type[Method]] = {}
_BY_NAME: dict[str, type[Method]] = {}
#: The table-driven codecs of every method, kept so the tests can hold the
#: hand-written hot paths to them.
GENERIC_DECODERS: dict[type[Method], Decoder] = {}
GENERIC_ENCODERS: dict[type[Method], Encoder] = {}
_DECODERS: dict[int, Decoder] = {}  # by class_id << 16 | method_id; hot methods overridden below
_ENCODERS: dict[type[Method], Encoder] = {}


def _compile(fields: list[tuple[str, str]], ticket: bool) -> list[Step]:
    """Turn (name, wire type) pairs into steps: adjacent fixed-size fields share
    one struct, adjacent bits share octets (eight to an octet, as the spec packs them)."""
    steps: list[Step] = [(_TICKET, None, ())] if ticket else []
    for name, kind in fields:
        last = steps[-1] if steps else None
        if kind in _FIXED_CODES:
            if last is not None and last[0] == _FIXED:
                steps[-1] = (_FIXED, last[1] + _FIXED_CODES[kind], last[2] + (name,))
            else:
                steps.append((_FIXED, ">" + _FIXED_CODES[kind], (name,)))
        elif kind == "bit":
            if last is not None and last[0] == _BITS and len(last[2]) < 8:
                steps[-1] = (_BITS, None, last[2] + (name,))
            else:
                steps.append((_BITS, None, (name,)))
        elif kind in _VARIABLE_KINDS:
            steps.append((_VARIABLE_KINDS[kind], None, (name,)))
        else:
            raise TypeError(f"unknown AMQP wire type {kind!r} for field {name}")
    return [(k, struct.Struct(a) if k == _FIXED else a, n) for k, a, n in steps]


def _generic_decoder(cls: type[Method], steps: list[Step]) -> Decoder:
    def decode(buf: bytes, off: int, end: int) -> Method:
        values: list[Any] = []
        for kind, arg, names in steps:
            if kind == _SHORTSTR:
                n = buf[off]
                off += 1 + n
                values.append(buf[off - n : off].decode())
            elif kind == _FIXED:
                values.extend(arg.unpack_from(buf, off))
                off += arg.size
            elif kind == _BITS:
                flags = buf[off]
                off += 1
                values.extend([flags >> i & 1 == 1 for i in range(len(names))])
            elif kind == _TABLE:
                value, off = read_table(buf, off)
                values.append(value)
            elif kind == _LONGSTR:
                n = _UINT32.unpack_from(buf, off)[0]
                off += 4 + n
                values.append(buf[off - n : off])
            else:  # _TICKET
                off += 2
        if off != end:
            raise FrameError(f"cannot decode {cls.name}")
        return cls(*values)

    return decode


def _generic_encoder(cls: type[Method], steps: list[Step]) -> Encoder:
    prefix = _UINT16X2.pack(cls.class_id, cls.method_id)

    def encode(method: Any) -> bytes:
        out = [prefix]
        for kind, arg, names in steps:
            if kind == _SHORTSTR:
                out.append(encode_shortstr(getattr(method, names[0])))
            elif kind == _FIXED:
                out.append(arg.pack(*[getattr(method, n) for n in names]))
            elif kind == _BITS:
                flags = 0
                for i, n in enumerate(names):
                    if getattr(method, n):
                        flags |= 1 << i
                out.append(bytes((flags,)))
            elif kind == _TABLE:
                out.append(encode_table(getattr(method, names[0])))
            elif kind == _LONGSTR:
                out.append(encode_longstr(getattr(method, names[0])))
            else:  # _TICKET
                out.append(b"\x00\x00")
        return b"".join(out)

    return encode


@dataclass_transform(field_specifiers=(dataclasses.field,))
def _method(
    class_id: int,
    method_id: int,
    name: str,
    *,
    synchronous: bool = False,
    content: bool = False,
    ticket: bool = False,
) -> Callable[[M], M]:
    """Make a method class: a slotted dataclass plus its codec, registered by id and name."""

    def register(cls: M) -> M:
        made: Any = dataclasses.dataclass(slots=True)(cls)
        made.class_id, made.method_id, made.name = class_id, method_id, name
        made.synchronous, made.has_content, made.replies = synchronous, content, ()
        # Annotations stay strings (postponed evaluation): the wire type's name.
        fields = [(f.name, str(f.type)) for f in dataclasses.fields(made)]
        steps = _compile(fields, ticket)
        key = class_id << 16 | method_id
        METHODS[class_id, method_id] = _BY_NAME[name] = made
        GENERIC_DECODERS[made] = _DECODERS[key] = _generic_decoder(made, steps)
        GENERIC_ENCODERS[made] = _ENCODERS[made] = _generic_encoder(made, steps)
        return made

    return register


def _table() -> Any:
    """Default for a table field: a fresh dict per instance."""
    return dataclasses.field(default_factory=dict)


# --------------------------------------------------------------------------- the methods


class Connection:
    @_method(10, 10, "connection.start", synchronous=True)
    class Start(Method):
        version_major: octet = 0
        version_minor: octet = 9
        server_properties: table = _table()
        mechanisms: longstr = b"PLAIN"
        locales: longstr = b"en_US"

    @_method(10, 11, "connection.start-ok")
    class StartOk(Method):
        client_properties: table = _table()
        mechanism: shortstr = "PLAIN"
        response: longstr = b""
        locale: shortstr = "en_US"

    @_method(10, 20, "connection.secure", synchronous=True)
    class Secure(Method):
        challenge: longstr = b""

    @_method(10, 21, "connection.secure-ok")
    class SecureOk(Method):
        response: longstr = b""

    @_method(10, 30, "connection.tune", synchronous=True)
    class Tune(Method):
        channel_max: short = 0
        frame_max: long = 0
        heartbeat: short = 0

    @_method(10, 31, "connection.tune-ok")
    class TuneOk(Method):
        channel_max: short = 0
        frame_max: long = 0
        heartbeat: short = 0

    @_method(10, 40, "connection.open", synchronous=True)
    class Open(Method):
        virtual_host: shortstr = "/"
        capabilities: shortstr = ""
        insist: bit = False

    @_method(10, 41, "connection.open-ok")
    class OpenOk(Method):
        known_hosts: shortstr = ""

    @_method(10, 50, "connection.close", synchronous=True)
    class Close(Method):
        reply_code: short = 0
        reply_text: shortstr = ""
        failing_class_id: short = 0
        failing_method_id: short = 0

    @_method(10, 51, "connection.close-ok")
    class CloseOk(Method):
        pass

    @_method(10, 60, "connection.blocked")
    class Blocked(Method):
        reason: shortstr = ""

    @_method(10, 61, "connection.unblocked")
    class Unblocked(Method):
        pass

    @_method(10, 70, "connection.update-secret", synchronous=True)
    class UpdateSecret(Method):
        new_secret: longstr = b""
        reason: shortstr = ""

    @_method(10, 71, "connection.update-secret-ok")
    class UpdateSecretOk(Method):
        pass


class Channel:
    @_method(20, 10, "channel.open", synchronous=True)
    class Open(Method):
        out_of_band: shortstr = ""

    @_method(20, 11, "channel.open-ok")
    class OpenOk(Method):
        channel_id: longstr = b""

    @_method(20, 20, "channel.flow", synchronous=True)
    class Flow(Method):
        active: bit = False

    @_method(20, 21, "channel.flow-ok")
    class FlowOk(Method):
        active: bit = False

    @_method(20, 40, "channel.close", synchronous=True)
    class Close(Method):
        reply_code: short = 0
        reply_text: shortstr = ""
        failing_class_id: short = 0
        failing_method_id: short = 0

    @_method(20, 41, "channel.close-ok")
    class CloseOk(Method):
        pass


class Access:
    """Deprecated in 0-9-1; RabbitMQ still answers request with request-ok(ticket=1)."""

    @_method(30, 10, "access.request", synchronous=True)
    class Request(Method):
        realm: shortstr = "/data"
        exclusive: bit = False
        passive: bit = True
        active: bit = True
        write: bit = True
        read: bit = True

    @_method(30, 11, "access.request-ok")
    class RequestOk(Method):
        ticket: short = 1


class Exchange:
    @_method(40, 10, "exchange.declare", synchronous=True, ticket=True)
    class Declare(Method):
        exchange: shortstr = ""
        type: shortstr = "direct"
        passive: bit = False
        durable: bit = False
        auto_delete: bit = False
        internal: bit = False
        nowait: bit = False
        arguments: table = _table()

    @_method(40, 11, "exchange.declare-ok")
    class DeclareOk(Method):
        pass

    @_method(40, 20, "exchange.delete", synchronous=True, ticket=True)
    class Delete(Method):
        exchange: shortstr = ""
        if_unused: bit = False
        nowait: bit = False

    @_method(40, 21, "exchange.delete-ok")
    class DeleteOk(Method):
        pass

    @_method(40, 30, "exchange.bind", synchronous=True, ticket=True)
    class Bind(Method):
        destination: shortstr = ""
        source: shortstr = ""
        routing_key: shortstr = ""
        nowait: bit = False
        arguments: table = _table()

    @_method(40, 31, "exchange.bind-ok")
    class BindOk(Method):
        pass

    @_method(40, 40, "exchange.unbind", synchronous=True, ticket=True)
    class Unbind(Method):
        destination: shortstr = ""
        source: shortstr = ""
        routing_key: shortstr = ""
        nowait: bit = False
        arguments: table = _table()

    @_method(40, 51, "exchange.unbind-ok")  # 51, not 41: RabbitMQ's extension numbering
    class UnbindOk(Method):
        pass


class Queue:
    @_method(50, 10, "queue.declare", synchronous=True, ticket=True)
    class Declare(Method):
        queue: shortstr = ""
        passive: bit = False
        durable: bit = False
        exclusive: bit = False
        auto_delete: bit = False
        nowait: bit = False
        arguments: table = _table()

    @_method(50, 11, "queue.declare-ok")
    class DeclareOk(Method):
        queue: shortstr = ""
        message_count: long = 0
        consumer_count: long = 0

    @_method(50, 20, "queue.bind", synchronous=True, ticket=True)
    class Bind(Method):
        queue: shortstr = ""
        exchange: shortstr = ""
        routing_key: shortstr = ""
        nowait: bit = False
        arguments: table = _table()

    @_method(50, 21, "queue.bind-ok")
    class BindOk(Method):
        pass

    @_method(50, 30, "queue.purge", synchronous=True, ticket=True)
    class Purge(Method):
        queue: shortstr = ""
        nowait: bit = False

    @_method(50, 31, "queue.purge-ok")
    class PurgeOk(Method):
        message_count: long = 0

    @_method(50, 40, "queue.delete", synchronous=True, ticket=True)
    class Delete(Method):
        queue: shortstr = ""
        if_unused: bit = False
        if_empty: bit = False
        nowait: bit = False

    @_method(50, 41, "queue.delete-ok")
    class DeleteOk(Method):
        message_count: long = 0

    @_method(50, 50, "queue.unbind", synchronous=True, ticket=True)
    class Unbind(Method):
        queue: shortstr = ""
        exchange: shortstr = ""
        routing_key: shortstr = ""
        arguments: table = _table()

    @_method(50, 51, "queue.unbind-ok")
    class UnbindOk(Method):
        pass


class Basic:
    @_method(60, 10, "basic.qos", synchronous=True)
    class Qos(Method):
        prefetch_size: long = 0
        prefetch_count: short = 0
        global_: bit = False

    @_method(60, 11, "basic.qos-ok")
    class QosOk(Method):
        pass

    @_method(60, 20, "basic.consume", synchronous=True, ticket=True)
    class Consume(Method):
        queue: shortstr = ""
        consumer_tag: shortstr = ""
        no_local: bit = False
        no_ack: bit = False
        exclusive: bit = False
        nowait: bit = False
        arguments: table = _table()

    @_method(60, 21, "basic.consume-ok")
    class ConsumeOk(Method):
        consumer_tag: shortstr = ""

    @_method(60, 30, "basic.cancel", synchronous=True)
    class Cancel(Method):
        consumer_tag: shortstr = ""
        nowait: bit = False

    @_method(60, 31, "basic.cancel-ok")
    class CancelOk(Method):
        consumer_tag: shortstr = ""

    @_method(60, 40, "basic.publish", content=True, ticket=True)
    class Publish(Method):
        exchange: shortstr = ""
        routing_key: shortstr = ""
        mandatory: bit = False
        immediate: bit = False

    @_method(60, 50, "basic.return", content=True)
    class Return(Method):
        reply_code: short = 0
        reply_text: shortstr = ""
        exchange: shortstr = ""
        routing_key: shortstr = ""

    @_method(60, 60, "basic.deliver", content=True)
    class Deliver(Method):
        consumer_tag: shortstr = ""
        delivery_tag: longlong = 0
        redelivered: bit = False
        exchange: shortstr = ""
        routing_key: shortstr = ""

    @_method(60, 70, "basic.get", synchronous=True, ticket=True)
    class Get(Method):
        queue: shortstr = ""
        no_ack: bit = False

    @_method(60, 71, "basic.get-ok", content=True)
    class GetOk(Method):
        delivery_tag: longlong = 0
        redelivered: bit = False
        exchange: shortstr = ""
        routing_key: shortstr = ""
        message_count: long = 0

    @_method(60, 72, "basic.get-empty")
    class GetEmpty(Method):
        cluster_id: shortstr = ""

    @_method(60, 80, "basic.ack")
    class Ack(Method):
        delivery_tag: longlong = 0
        multiple: bit = False

    @_method(60, 90, "basic.reject")
    class Reject(Method):
        delivery_tag: longlong = 0
        requeue: bit = True

    @_method(60, 100, "basic.recover-async")
    class RecoverAsync(Method):
        requeue: bit = False

    @_method(60, 110, "basic.recover", synchronous=True)
    class Recover(Method):
        requeue: bit = False

    @_method(60, 111, "basic.recover-ok")
    class RecoverOk(Method):
        pass

    @_method(60, 120, "basic.nack")
    class Nack(Method):
        delivery_tag: longlong = 0
        multiple: bit = False
        requeue: bit = True


class Confirm:
    @_method(85, 10, "confirm.select", synchronous=True)
    class Select(Method):
        nowait: bit = False

    @_method(85, 11, "confirm.select-ok")
    class SelectOk(Method):
        pass


class Tx:
    @_method(90, 10, "tx.select", synchronous=True)
    class Select(Method):
        pass

    @_method(90, 11, "tx.select-ok")
    class SelectOk(Method):
        pass

    @_method(90, 20, "tx.commit", synchronous=True)
    class Commit(Method):
        pass

    @_method(90, 21, "tx.commit-ok")
    class CommitOk(Method):
        pass

    @_method(90, 30, "tx.rollback", synchronous=True)
    class Rollback(Method):
        pass

    @_method(90, 31, "tx.rollback-ok")
    class RollbackOk(Method):
        pass


for _cls in _BY_NAME.values():
    if _cls.synchronous:
        _cls.replies = (_BY_NAME[_cls.name + "-ok"],)
Basic.Get.replies = (Basic.GetOk, Basic.GetEmpty)


# --------------------------------------------------------------------------- hot paths

_ACK_ARGS = struct.Struct(">QB")
_DELIVER_HEAD = struct.Struct(">HHB")
_DELIVER_MID = struct.Struct(">QBB")
_UINT8 = struct.Struct(">B")
_ACK_PREFIX = _UINT16X2.pack(60, 80)
_NACK_PREFIX = _UINT16X2.pack(60, 120)


def _decode_publish(buf: bytes, off: int, end: int) -> Method:
    n = buf[off + 2]  # skip the ticket
    off += 3 + n
    # Bytes to RabbitMQ, which accepts any: kept by surrogateescape.
    exchange = buf[off - n : off].decode("utf-8", "surrogateescape")
    n = buf[off]
    off += 1 + n
    routing_key = buf[off - n : off].decode("utf-8", "surrogateescape")
    flags = buf[off]
    if off + 1 != end:
        raise FrameError("cannot decode basic.publish")
    return Basic.Publish(exchange, routing_key, flags & 1 == 1, flags & 2 == 2)


def _decode_ack(buf: bytes, off: int, end: int) -> Method:
    if end - off != 9:
        raise FrameError("cannot decode basic.ack")
    tag, flags = _ACK_ARGS.unpack_from(buf, off)
    return Basic.Ack(tag, flags & 1 == 1)


def _decode_nack(buf: bytes, off: int, end: int) -> Method:
    if end - off != 9:
        raise FrameError("cannot decode basic.nack")
    tag, flags = _ACK_ARGS.unpack_from(buf, off)
    return Basic.Nack(tag, flags & 1 == 1, flags & 2 == 2)


def _decode_reject(buf: bytes, off: int, end: int) -> Method:
    if end - off != 9:
        raise FrameError("cannot decode basic.reject")
    tag, flags = _ACK_ARGS.unpack_from(buf, off)
    return Basic.Reject(tag, flags & 1 == 1)


def _encode_deliver(m: Basic.Deliver) -> bytes:
    tag = m.consumer_tag.encode()
    ex = m.exchange.encode("utf-8", "surrogateescape")
    rk = m.routing_key.encode("utf-8", "surrogateescape")
    return b"".join(
        (
            _DELIVER_HEAD.pack(60, 60, len(tag)),
            tag,
            _DELIVER_MID.pack(m.delivery_tag, m.redelivered, len(ex)),
            ex,
            _UINT8.pack(len(rk)),
            rk,
        )
    )


def _encode_ack(m: Basic.Ack) -> bytes:
    return _ACK_PREFIX + _ACK_ARGS.pack(m.delivery_tag, m.multiple)


def _encode_nack(m: Basic.Nack) -> bytes:
    return _NACK_PREFIX + _ACK_ARGS.pack(m.delivery_tag, m.multiple | m.requeue << 1)


_DECODERS[60 << 16 | 40] = _decode_publish
_DECODERS[60 << 16 | 80] = _decode_ack
_DECODERS[60 << 16 | 120] = _decode_nack
_DECODERS[60 << 16 | 90] = _decode_reject
_ENCODERS[Basic.Deliver] = _encode_deliver
_ENCODERS[Basic.Ack] = _encode_ack
_ENCODERS[Basic.Nack] = _encode_nack


# --------------------------------------------------------------------------- entry points


def decode_method_at(buf: bytes, off: int, end: int) -> Method:
    """Decode the method payload ``buf[off:end]`` in place (the frame decoder's path).

    An unknown class or method id raises NotImplemented_ (540): RabbitMQ has no
    answer of its own (its reader crashes and drops the TCP connection), and
    540 says what happened. Arguments that do not decode exactly to ``end``
    raise FrameError (501), as RabbitMQ does ("cannot decode").
    """
    if end - off < 4:
        raise FrameError("method frame too short for class and method ids")
    key = _UINT32.unpack_from(buf, off)[0]  # class_id << 16 | method_id
    decoder = _DECODERS.get(key)
    if decoder is None:
        raise NotImplemented_(f"unknown method: class {key >> 16}, method {key & 0xFFFF}")
    try:
        return decoder(buf, off + 4, end)
    except DECODE_ERRORS as exc:
        raise decode_error(exc, METHODS[key >> 16, key & 0xFFFF].name) from exc


def decode_method(payload: bytes | memoryview) -> Method:
    """Decode a method-frame payload (class id, method id, arguments)."""
    buf = payload if type(payload) is bytes else bytes(payload)
    return decode_method_at(buf, 0, len(buf))


def encode_method(method: Method) -> bytes:
    """Encode a method-frame payload; SyntaxError_ (502) for values the wire type cannot hold."""
    encoder = _ENCODERS.get(type(method))
    if encoder is None:
        raise TypeError(f"not an AMQP method: {method!r}")
    try:
        return encoder(method)
    except (struct.error, UnicodeEncodeError) as exc:
        raise SyntaxError_(f"cannot encode {method.name}: {exc}") from exc


def method_by_name(name: str) -> type[Method]:
    """The class for a spec name such as "basic.publish"; KeyError if unknown."""
    return _BY_NAME[name]
