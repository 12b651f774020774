"""Basic content-header properties and the content-header payload codec.

The payload is class id (short), weight (short, always 0), body size
(longlong), a 16-bit presence-flag word and then the present properties in
order. Bit 15 flags content_type, bit 2 cluster_id; bit 0 would announce a
further flag word, which the basic class never needs: RabbitMQ ignores bits 1
and 0, and so do we.

:class:`BasicProperties` is the core's ``Properties`` NamedTuple, so a
decoded header goes into a Message as is: immutable, slotted, and built by the
decoder with one ``tuple.__new__`` call, which matters once per message.
Decoding is eager but planned per flag word: the list of (slot, kind) steps
for a given word is computed once and cached, so a header with two properties
runs two steps, not fourteen tests. Properties without headers are also
remembered by their bytes (a bounded cache), because publishers tend to send
the same content_type and delivery_mode with every message.

Property shortstrs decode with ``errors="surrogateescape"``: RabbitMQ does not
check them for UTF-8, and a client's binary correlation id must neither close
the connection nor change on its way to the consumer. ``timestamp`` stays the
integer on the wire (seconds since the epoch by convention): senders often put
milliseconds there, which no datetime can hold, and RabbitMQ passes any value.
"""

from __future__ import annotations

import struct
from typing import Any

from collections.abc import Mapping

from amqlite.amqp.values import DECODE_ERRORS, decode_error, encode_shortstr, encode_table, read_table
from amqlite.core.errors import FrameError, SyntaxError_, UnexpectedFrame
from amqlite.core.message import EMPTY_PROPERTIES
from amqlite.core.message import Properties as BasicProperties

BASIC_CLASS_ID = 60


_SHORTSTR, _OCTET, _TABLE, _TIMESTAMP = range(4)
# Wire kind of each property, in BasicProperties field order (= flag bits 15 down to 2);
# the tests hold the core's field order to this.
_KINDS = (
    _SHORTSTR,  # content_type
    _SHORTSTR,  # content_encoding
    _TABLE,  # headers
    _OCTET,  # delivery_mode
    _OCTET,  # priority
    _SHORTSTR,  # correlation_id
    _SHORTSTR,  # reply_to
    _SHORTSTR,  # expiration
    _SHORTSTR,  # message_id
    _TIMESTAMP,  # timestamp
    _SHORTSTR,  # type
    _SHORTSTR,  # user_id
    _SHORTSTR,  # app_id
    _SHORTSTR,  # cluster_id
)
_MASKS = tuple(1 << (15 - i) for i in range(len(_KINDS)))
_FLAG_BITS = sum(_MASKS)  # bits 1 and 0 are ignored on decode, never set on encode

_HEADER = struct.Struct(">HHQH")  # class id, weight, body size, flags
_HEADER_PREFIX = struct.Struct(">HHQ")
_UINT16 = struct.Struct(">H")
_UINT64 = struct.Struct(">Q")
_UINT8 = struct.Struct(">B")

_HEADERS_FLAG = _MASKS[2]
_RECENT_MAX = 1024
_recent: dict[bytes, BasicProperties] = {}
_new = tuple.__new__
_plans: dict[int, tuple[tuple[int, int], ...]] = {}


def _plan(flags: int) -> tuple[tuple[int, int], ...]:
    steps = tuple((i, kind) for i, (kind, mask) in enumerate(zip(_KINDS, _MASKS)) if flags & mask)
    _plans[flags] = steps
    return steps


def _read_properties(buf: bytes, off: int, end: int) -> BasicProperties:
    """Raw decoder for flags + properties in ``buf[off:end]``; may raise DECODE_ERRORS."""
    flags = _UINT16.unpack_from(buf, off)[0] & _FLAG_BITS
    off += 2
    if not flags and off == end:
        return EMPTY_PROPERTIES
    values: list[Any] = [None] * 14
    for i, kind in _plans.get(flags) or _plan(flags):
        if kind == _SHORTSTR:
            n = buf[off]
            off += 1 + n
            values[i] = buf[off - n : off].decode("utf-8", "surrogateescape")
        elif kind == _OCTET:
            values[i] = buf[off]
            off += 1
        elif kind == _TABLE:
            values[i], off = read_table(buf, off)
        else:
            values[i] = _UINT64.unpack_from(buf, off)[0]
            off += 8
    if off != end:
        raise FrameError("cannot decode content header properties")
    return _new(BasicProperties, values)


def decode_content_header(payload: bytes | memoryview) -> tuple[int, int, BasicProperties]:
    """Decode a content-header payload into (class_id, body_size, properties).

    Weight must be 0 and the class basic; RabbitMQ answers either mismatch with
    505 UNEXPECTED_FRAME, since no method could be expecting such a header.
    """
    buf = payload if type(payload) is bytes else bytes(payload)
    return decode_content_header_at(buf, 0, len(buf))


def decode_content_header_at(buf: bytes, off: int, end: int) -> tuple[int, int, BasicProperties]:
    """decode_content_header on ``buf[off:end]`` in place (the frame decoder's path)."""
    if end - off < 14:
        raise FrameError("content header frame too short")
    class_id, weight, body_size, flags = _HEADER.unpack_from(buf, off)
    if class_id != BASIC_CLASS_ID or weight != 0:
        raise UnexpectedFrame(
            f"content header for class {class_id} with weight {weight}; "
            "only class 60 with weight 0 carries content"
        )
    if not flags and end - off == 14:
        return class_id, body_size, EMPTY_PROPERTIES
    if flags & _HEADERS_FLAG:
        return class_id, body_size, _read_checked(buf, off + 12, end)
    # Without headers, a publisher's properties rarely change from message to
    # message, and every field is immutable: share one decoded value per bytes.
    key = buf[off + 12 : end]
    properties = _recent.get(key)
    if properties is None:
        properties = _read_checked(buf, off + 12, end)
        if len(_recent) >= _RECENT_MAX:
            _recent.clear()
        _recent[key] = properties
    return class_id, body_size, properties


def _read_checked(buf: bytes, off: int, end: int) -> BasicProperties:
    try:
        return _read_properties(buf, off, end)
    except DECODE_ERRORS as exc:
        raise decode_error(exc, "content header properties") from exc


def encode_properties(properties: BasicProperties) -> bytes:
    """Flag word + present properties; SyntaxError_ for values that do not fit."""
    if properties == EMPTY_PROPERTIES:
        return b"\x00\x00"
    flags = 0
    out = [b""]
    try:
        for value, kind, mask in zip(properties, _KINDS, _MASKS):
            if value is None:
                continue
            flags |= mask
            if kind == _SHORTSTR:
                out.append(encode_shortstr(value))  # type: ignore[arg-type]
            elif kind == _OCTET:
                out.append(_UINT8.pack(value))
            elif kind == _TABLE:
                out.append(encode_table(value))
            else:
                out.append(_UINT64.pack(value))
    except struct.error as exc:
        raise SyntaxError_(f"content header property out of range: {exc}") from exc
    out[0] = _UINT16.pack(flags)
    return b"".join(out)


class InvalidProperty(ValueError):
    """A property value that has no encoding on the wire. ``reason`` and
    ``field`` are RabbitMQ's management API words: ``("not_int", "priority")``."""

    def __init__(self, reason: str, field: str, value: Any) -> None:
        super().__init__(f"property {field}: {reason} (got {value!r:.80})")
        self.reason = reason
        self.field = field


_MAX_UINT64 = (1 << 64) - 1
_checked: dict[tuple[Any, ...], None] = {}


_PLAIN = frozenset({bool, float, bytes, type(None)})
_INT64_RANGE = range(-(1 << 63), 1 << 63)


def _plain_table(table: Mapping[str, Any]) -> bool:
    """True for the common headers, ASCII keys and scalar values, which
    always encode: the quick answer before trying the encoder."""
    for key, value in table.items():
        if type(key) is not str or len(key) > 255 or not key.isascii():
            return False
        kind = type(value)
        if not (kind in _PLAIN or (kind is str and value.isascii()) or (kind is int and value in _INT64_RANGE)):
            return False
    return True


def check_properties(properties: BasicProperties) -> None:
    """Raise InvalidProperty unless :func:`encode_properties` can write
    ``properties``. Entries that build properties in process (the embedded
    API, the management API) call it, so that a message the broker accepts
    can always be delivered and journalled; a decoded header needs no check.
    The properties other than headers are remembered once checked (a bounded
    cache), since a publisher repeats them; headers are checked each time."""
    if properties is EMPTY_PROPERTIES:
        return
    headers = properties.headers
    if headers is not None:
        if not isinstance(headers, Mapping):
            raise InvalidProperty("not_table", "headers", headers)
        if not _plain_table(headers):
            try:
                encode_table(headers)
            except (SyntaxError_, TypeError) as exc:
                raise InvalidProperty("not_encodable", "headers", str(exc)) from None
        scalars: tuple[Any, ...] = properties[:2] + (None,) + properties[3:]
    else:
        scalars = properties
    try:
        if scalars in _checked:
            return
    except TypeError:  # a value of the wrong type that has no hash
        pass
    for value, kind, field in zip(scalars, _KINDS, BasicProperties._fields):
        if value is None or kind == _TABLE:
            continue
        if kind == _SHORTSTR:
            if not isinstance(value, str):
                raise InvalidProperty("not_string", field, value)
            try:
                size = len(value.encode("utf-8", "surrogateescape"))
            except UnicodeEncodeError:
                raise InvalidProperty("not_encodable", field, value) from None
            if size > 255:
                raise InvalidProperty("too_long", field, value)
        elif isinstance(value, bool) or not isinstance(value, int):
            raise InvalidProperty("not_int", field, value)
        elif not 0 <= value <= (255 if kind == _OCTET else _MAX_UINT64):
            raise InvalidProperty("out_of_range", field, value)
    if len(_checked) >= _RECENT_MAX:
        _checked.clear()
    _checked[scalars] = None


def encode_content_header(class_id: int, body_size: int, properties: BasicProperties) -> bytes:
    """The content-header frame payload (class id, weight 0, body size, properties)."""
    return _HEADER_PREFIX.pack(class_id, 0, body_size) + encode_properties(properties)


_CONTENT_TYPE, _CONTENT_ENCODING, _HEADERS = _MASKS[:3]
_TABLE_SIZE = struct.Struct(">I")
_INT64 = struct.Struct(">q")
_long_header_splits: dict[tuple[bytes, str], tuple[bytes, bytes]] = {}


def with_long_header(header: bytes, name: str, value: int) -> bytes:
    """An encoded content header with one more header, ``name`` as a signed
    64-bit ``l``: byte surgery on the headers table, so a stream stamping
    each message's offset does not encode the properties again. The caller
    makes sure ``name`` is not among the headers already.

    A publisher sends the same header bytes message after message, so the
    bytes around the value are kept per header (as decoded properties are)."""
    around = _long_header_splits.get((header, name))
    if around is None:
        around = _split_for_long_header(header, name)
        if len(_long_header_splits) >= _RECENT_MAX:
            _long_header_splits.clear()
        _long_header_splits[header, name] = around
    before, after = around
    return b"".join((before, _INT64.pack(value), after))


def _split_for_long_header(header: bytes, name: str) -> tuple[bytes, bytes]:
    """The header with ``name`` added as an ``l``, as the bytes before the
    value and the bytes after it."""
    flags = _HEADER.unpack_from(header)[3]
    at = _HEADER.size
    if flags & _CONTENT_TYPE:
        at += 1 + header[at]
    if flags & _CONTENT_ENCODING:
        at += 1 + header[at]
    entry = encode_shortstr(name) + b"l"
    entry_size = len(entry) + _INT64.size
    if flags & _HEADERS:
        (size,) = _TABLE_SIZE.unpack_from(header, at)
        end = at + 4 + size
        return header[:at] + _TABLE_SIZE.pack(size + entry_size) + header[at + 4 : end] + entry, header[end:]
    prefix = header[: _HEADER.size - 2] + _UINT16.pack(flags | _HEADERS) + header[_HEADER.size : at]
    return prefix + _TABLE_SIZE.pack(entry_size) + entry, header[at:]
