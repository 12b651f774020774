"""Method classes and the method-payload codec, generic and hand-written paths."""

from __future__ import annotations

import dataclasses
import inspect
import re
import struct

import pika.spec as pika_spec
import pytest
from amqp_strategies import Unencodable, methods_of, typed
from hypothesis import given, settings
from hypothesis import strategies as st

from amqlite.amqp import spec
from amqlite.core.errors import FrameError, NotImplemented_, SyntaxError_

ALL = sorted(spec.METHODS.values(), key=lambda c: (c.class_id, c.method_id))
HOT_DECODE = [spec.Basic.Publish, spec.Basic.Ack, spec.Basic.Nack, spec.Basic.Reject]
HOT_ENCODE = [spec.Basic.Deliver, spec.Basic.Ack, spec.Basic.Nack]


def _fields(method: spec.Method) -> object:
    return typed({f.name: getattr(method, f.name) for f in dataclasses.fields(method)})  # type: ignore[arg-type]


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.name)
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_every_method_round_trips(cls: type[spec.Method], data: st.DataObject) -> None:
    method = data.draw(methods_of(cls))
    payload = spec.encode_method(method)
    assert payload[:4] == struct.pack(">HH", cls.class_id, cls.method_id)
    decoded = spec.decode_method(payload)
    assert type(decoded) is cls
    assert _fields(decoded) == _fields(method)
    # The same payload inside a larger buffer decodes in place.
    assert spec.decode_method_at(b"junk" + payload + b"junk", 4, 4 + len(payload)) == decoded


@pytest.mark.parametrize("cls", HOT_DECODE, ids=lambda c: c.name)
@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_hot_decoders_agree_with_generic(cls: type[spec.Method], data: st.DataObject) -> None:
    payload = spec.GENERIC_ENCODERS[cls](data.draw(methods_of(cls)))
    generic = spec.GENERIC_DECODERS[cls](payload, 4, len(payload))
    assert spec.decode_method(payload) == generic
    # Truncated or padded arguments fail the same way on both paths.
    for bad in (payload[:-1], payload + b"\x00"):
        with pytest.raises(FrameError):
            spec.decode_method(bad)
        with pytest.raises((FrameError, IndexError, struct.error)):
            spec.GENERIC_DECODERS[cls](bad, 4, len(bad))


@pytest.mark.parametrize("cls", HOT_ENCODE, ids=lambda c: c.name)
@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_hot_encoders_agree_with_generic(cls: type[spec.Method], data: st.DataObject) -> None:
    method = data.draw(methods_of(cls))
    assert spec.encode_method(method) == spec.GENERIC_ENCODERS[cls](method)


RENAMED = {"global_qos": "global_", "class_id": "failing_class_id", "method_id": "failing_method_id"}
CONTENT = {"basic.publish", "basic.return", "basic.deliver", "basic.get-ok"}


@pytest.mark.parametrize("index", sorted(pika_spec.methods), ids=lambda i: pika_spec.methods[i].NAME)
def test_same_methods_as_pika_spec(index: int) -> None:
    """pika.spec is generated from RabbitMQ's amqp-rabbitmq-0.9.1.json: same ids,
    names, synchronous flags, field order and spec defaults (ticket aside)."""
    theirs = pika_spec.methods[index]
    ours = spec.METHODS[index >> 16, index & 0xFFFF]
    assert ours.__qualname__ == theirs.NAME
    class_name, method_name = theirs.NAME.split(".")
    assert ours.name == f"{class_name}.{re.sub('(?<!^)(?=[A-Z])', '-', method_name)}".lower()
    assert ours.synchronous == theirs.synchronous.fget(None)  # type: ignore[attr-defined]
    assert ours.has_content == (ours.name in CONTENT)
    params = list(inspect.signature(theirs.__init__).parameters.values())[1:]
    if ours is not spec.Access.RequestOk:
        params = [p for p in params if p.name != "ticket"]
    names = [f.name for f in dataclasses.fields(ours)]  # type: ignore[arg-type]
    assert names == [RENAMED.get(p.name, p.name) for p in params]
    instance = ours()
    for p in params:
        if p.default not in (None, inspect.Parameter.empty):
            value = getattr(instance, RENAMED.get(p.name, p.name))
            assert (value.decode() if isinstance(value, bytes) else value) == p.default, p.name


def test_class_attributes_and_replies() -> None:
    assert spec.Basic.Publish.name == "basic.publish"
    assert (spec.Basic.Publish.class_id, spec.Basic.Publish.method_id) == (60, 40)
    assert spec.Basic.Publish.has_content and not spec.Basic.Publish.synchronous
    assert spec.Queue.Declare.synchronous and spec.Queue.Declare.replies == (spec.Queue.DeclareOk,)
    assert spec.Basic.Get.replies == (spec.Basic.GetOk, spec.Basic.GetEmpty)
    assert spec.Exchange.UnbindOk.method_id == 51
    assert spec.Basic.Ack.replies == ()
    assert spec.method_by_name("confirm.select") is spec.Confirm.Select
    assert all(not hasattr(m(), "__dict__") for m in ALL), "method classes are slotted"
    publish = spec.Basic.Publish("amq.topic", "a.b", True)
    assert (publish.exchange, publish.routing_key) == ("amq.topic", "a.b")
    assert (publish.mandatory, publish.immediate) == (True, False)


def test_rabbitmq_accepts_names_pamqp_rejects() -> None:
    declare = spec.Queue.Declare("my queue!", durable=True)
    assert spec.decode_method(spec.encode_method(declare)).queue == "my queue!"


def test_bits_pack_little_end_first_and_ticket_is_zero() -> None:
    declare = spec.Queue.Declare("q", passive=False, durable=True, exclusive=False, auto_delete=True, nowait=True)
    assert spec.encode_method(declare) == b"\x00\x32\x00\x0a\x00\x00\x01q\x1a\x00\x00\x00\x00"
    nack = spec.Basic.Nack(2**64 - 1, multiple=True, requeue=True)
    assert spec.encode_method(nack) == b"\x00\x3c\x00\x78" + b"\xff" * 8 + b"\x03"


def test_ticket_is_ignored_on_decode() -> None:
    payload = b"\x00\x3c\x00\x28\x12\x34\x00\x01q\x00"
    assert spec.decode_method(payload) == spec.Basic.Publish("", "q")
    assert spec.decode_method(memoryview(payload)) == spec.Basic.Publish("", "q")


def test_unknown_method_is_not_implemented() -> None:
    with pytest.raises(NotImplemented_) as info:
        spec.decode_method(b"\x00\x3c\x03\xe7")
    assert info.value.reply_code == 540
    with pytest.raises(NotImplemented_):
        spec.decode_method(b"\x00\x4d\x00\x0a")


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x00\x3c\x00",  # shorter than the ids
        b"\x00\x3c\x00\x50" + b"\x00" * 8,  # basic.ack without its bits
        b"\x00\x3c\x00\x50" + b"\x00" * 10,  # basic.ack with a trailing octet
        b"\x00\x32\x00\x0a\x00\x00\x05q",  # queue.declare, name overruns
        b"\x00\x32\x00\x0a\x00\x00\x01q\x00\x00\x00\x00\x04\x01kZ\x00",  # bad table type
        b"\x00\x0a\x00\x0b\x00\x00\x00\x00\x05PLAIN\x00\x00\x00\x09",  # start-ok longstr overruns
    ],
)
def test_malformed_arguments_are_frame_errors(payload: bytes) -> None:
    with pytest.raises(FrameError) as info:
        spec.decode_method(payload)
    assert info.value.reply_code == 501


def test_invalid_utf8_shortstr_is_rabbitmqs_frame_error() -> None:
    with pytest.raises(FrameError, match="Malformed UTF-8 in shortstr"):
        spec.decode_method(b"\x00\x32\x00\x0a\x00\x00\x02\xff\xfe\x00\x00\x00\x00\x00")


@pytest.mark.parametrize(
    "method",
    [
        spec.Queue.Declare("q" * 256),
        spec.Basic.Qos(prefetch_count=70000),
        spec.Basic.Deliver("c", -1),
        spec.Basic.Deliver("c" * 300, 1),
        spec.Basic.Ack(2**64),
        spec.Queue.Declare("q", arguments={"x": Unencodable()}),
    ],
    ids=repr,
)
def test_unencodable_methods_raise_syntax_error(method: spec.Method) -> None:
    with pytest.raises(SyntaxError_):
        spec.encode_method(method)


def test_encode_rejects_non_methods() -> None:
    with pytest.raises(TypeError):
        spec.encode_method("basic.ack")  # type: ignore[arg-type]
