"""Cross-check against pika: what pika encodes we decode, and what we encode pika decodes."""

from __future__ import annotations

import ast
import dataclasses
from decimal import Decimal
from typing import Any

import pika.data
import pika.frame
import pika.spec as pika_spec
import pytest
from amqp_strategies import keys, shortstrs, typed
from hypothesis import given, settings
from hypothesis import strategies as st

from amqlite.amqp import frames, spec, values
from amqlite.amqp.frames import BodyFrame, FrameDecoder, HeaderFrame, MethodFrame
from amqlite.amqp.properties import BasicProperties, encode_content_header

OUR_NAMES = {"global_qos": "global_", "class_id": "failing_class_id", "method_id": "failing_method_id"}
PIKA_NAMES = {ours: theirs for theirs, ours in OUR_NAMES.items()}

# pika has no float encoder, decodes doubles as ints and timestamps as naive
# datetimes: leave those out of what we compare.
pika_leaves = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.text(max_size=20),
    st.binary(max_size=20),
    st.none(),
    st.builds(lambda m, s: Decimal(m).scaleb(-s), st.integers(-(2**31), 2**31 - 1), st.integers(0, 9)),
)
pika_tables = st.dictionaries(
    keys,
    st.recursive(
        pika_leaves, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3), max_leaves=8
    ),
    max_size=5,
)
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "octet": st.integers(0, 2**8 - 1),
    "short": st.integers(0, 2**16 - 1),
    "long": st.integers(0, 2**32 - 1),
    "longlong": st.integers(0, 2**64 - 1),
    "shortstr": shortstrs,
    "longstr": st.binary(max_size=40),
    "bit": st.booleans(),
    "table": pika_tables,
}
ALL = sorted(spec.METHODS.values(), key=lambda c: (c.class_id, c.method_id))


def _draw(cls: type[spec.Method], data: st.DataObject) -> spec.Method:
    fields = {f.name: FIELDS[str(f.type)] for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return data.draw(st.builds(cls, **fields))


def _pika_class(cls: type[spec.Method]) -> Any:
    return pika_spec.methods[cls.class_id << 16 | cls.method_id]


def _to_pika(method: spec.Method) -> Any:
    fields = dataclasses.fields(method)  # type: ignore[arg-type]
    kwargs = {PIKA_NAMES.get(f.name, f.name): getattr(method, f.name) for f in fields}
    return _pika_class(type(method))(**kwargs)


def _longstr(value: bytes | str) -> bytes:
    # pika 1.x decodes a longstr argument to bytes or to the text "b'...'".
    return ast.literal_eval(value) if isinstance(value, str) else value


def _same(ours: spec.Method, theirs: Any) -> None:
    for f in dataclasses.fields(ours):  # type: ignore[arg-type]
        value = getattr(theirs, PIKA_NAMES.get(f.name, f.name))
        if f.type == "longstr":
            value = _longstr(value)
        assert typed(value) == typed(getattr(ours, f.name)), f.name


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.name)
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_pika_encodes_we_decode(cls: type[spec.Method], data: st.DataObject) -> None:
    method = _draw(cls, data)
    decoder = FrameDecoder(0)
    decoder.feed(pika.frame.Method(3, _to_pika(method)).marshal())
    frame = decoder.next_frame()
    assert isinstance(frame, MethodFrame) and frame.channel == 3
    assert type(frame.method) is cls
    _same(frame.method, _to_pika(method))


# pika cannot decode connection.update-secret: its class has no defaults to build from.
@pytest.mark.parametrize("cls", [c for c in ALL if c is not spec.Connection.UpdateSecret], ids=lambda c: c.name)
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_we_encode_pika_decodes(cls: type[spec.Method], data: st.DataObject) -> None:
    method = _draw(cls, data)
    encoded = frames.encode_method_frame(3, method)
    consumed, frame = pika.frame.decode_frame(encoded)
    assert consumed == len(encoded)
    assert frame.channel_number == 3 and type(frame.method) is _pika_class(cls)
    _same(method, frame.method)


def test_start_ok_with_amqplain_response_and_capabilities() -> None:
    """What py-amqp sends: AMQPLAIN, whose response is a table without its length prefix."""
    pieces: list[bytes] = []
    pika.data.encode_table(pieces, {"LOGIN": "guest", "PASSWORD": "guest"})
    response = b"".join(pieces)[4:]
    client_properties = {
        "product": "py-amqp",
        "version": "5.2.0",
        "capabilities": {
            "consumer_cancel_notify": True,
            "connection.blocked": True,
            "authentication_failure_close": True,
        },
    }
    start_ok = pika_spec.Connection.StartOk(client_properties, "AMQPLAIN", response, "en_US")
    decoder = FrameDecoder(frames.FRAME_MIN_SIZE)
    decoder.feed(pika.frame.Method(0, start_ok).marshal())
    frame = decoder.next_frame()
    assert isinstance(frame, MethodFrame)
    assert frame.method == spec.Connection.StartOk(client_properties, "AMQPLAIN", response, "en_US")
    assert values.decode_table_entries(frame.method.response) == {"LOGIN": "guest", "PASSWORD": "guest"}


def test_our_connection_start_reads_in_pika() -> None:
    server_properties = {
        "product": "amqlite",
        "version": "0.1.0",
        "capabilities": {"publisher_confirms": True, "basic.nack": True, "consumer_cancel_notify": True},
    }
    start = spec.Connection.Start(0, 9, server_properties, b"PLAIN AMQPLAIN", b"en_US")
    _, frame = pika.frame.decode_frame(frames.encode_method_frame(0, start))
    assert frame.method.server_properties == server_properties
    assert _longstr(frame.method.mechanisms) == b"PLAIN AMQPLAIN"


pika_properties = st.builds(
    pika_spec.BasicProperties,
    content_type=st.none() | shortstrs,
    content_encoding=st.none() | shortstrs,
    headers=st.none() | pika_tables,
    delivery_mode=st.none() | st.sampled_from([1, 2]),
    priority=st.none() | st.integers(0, 255),
    correlation_id=st.none() | shortstrs,
    reply_to=st.none() | shortstrs,
    expiration=st.none() | st.integers(0, 10**9).map(str),
    message_id=st.none() | shortstrs,
    timestamp=st.none() | st.integers(0, 2**64 - 1),
    type=st.none() | shortstrs,
    user_id=st.none() | shortstrs,
    app_id=st.none() | shortstrs,
    cluster_id=st.none() | shortstrs,
)


def _as_ours(props: Any) -> BasicProperties:
    return BasicProperties(**{name: getattr(props, name) for name in BasicProperties._fields})


@settings(max_examples=60, deadline=None)
@given(pika_properties, st.binary(max_size=10_000), st.sampled_from([4096, 131072]))
def test_pika_publish_header_body_decode(props: Any, body: bytes, frame_max: int) -> None:
    publish = pika_spec.Basic.Publish(exchange="amq.topic", routing_key="my key!", mandatory=True)
    data = pika.frame.Method(1, publish).marshal() + pika.frame.Header(1, len(body), props).marshal()
    step = frame_max - 8
    data += b"".join(pika.frame.Body(1, body[i : i + step]).marshal() for i in range(0, len(body), step))
    decoder = FrameDecoder(frame_max)
    decoder.feed(data)
    out = []
    while (frame := decoder.next_frame()) is not None:
        out.append(frame)
    assert out[0] == MethodFrame(1, spec.Basic.Publish("amq.topic", "my key!", True, False))
    header = out[1]
    assert isinstance(header, HeaderFrame) and header.body_size == len(body)
    assert typed(tuple(header.properties)) == typed(tuple(_as_ours(props)))
    assert b"".join(f.payload for f in out[2:] if isinstance(f, BodyFrame)) == body


@settings(max_examples=60, deadline=None)
@given(pika_properties, st.binary(max_size=10_000))
def test_our_deliver_decodes_in_pika(props: Any, body: bytes) -> None:
    ours = _as_ours(props)
    header = encode_content_header(60, len(body), ours)
    data = frames.encode_deliver(2, "ctag", 99, True, "ex", "rk", header, body, 4096)
    decoded = []
    while data:
        consumed, frame = pika.frame.decode_frame(data)
        decoded.append(frame)
        data = data[consumed:]
    deliver = decoded[0].method
    fields = (deliver.consumer_tag, deliver.delivery_tag, deliver.redelivered, deliver.exchange, deliver.routing_key)
    assert fields == ("ctag", 99, True, "ex", "rk")
    assert decoded[1].body_size == len(body)
    assert typed(tuple(_as_ours(decoded[1].properties))) == typed(tuple(ours))
    assert b"".join(f.fragment for f in decoded[2:]) == body
