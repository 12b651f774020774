"""Content-header payloads: flag word, every property, every combination."""

from __future__ import annotations

import struct

import pytest
from amqp_strategies import Unencodable, properties, typed
from hypothesis import given
from hypothesis import strategies as st

from amqlite.amqp import properties as P
from amqlite.core.errors import FrameError, SyntaxError_, UnexpectedFrame

ALL_SET = P.BasicProperties(
    content_type="application/json",
    content_encoding="gzip",
    headers={"x-death": [{"count": 1}], "n": 1},
    delivery_mode=2,
    priority=9,
    correlation_id="corr",
    reply_to="amq.rabbitmq.reply-to",
    expiration="60000",
    message_id="m-1",
    timestamp=1700000000,
    type="t",
    user_id="guest",
    app_id="app",
    cluster_id="c",
)


def test_field_order_is_the_wire_order() -> None:
    assert P.BasicProperties._fields == (
        "content_type",
        "content_encoding",
        "headers",
        "delivery_mode",
        "priority",
        "correlation_id",
        "reply_to",
        "expiration",
        "message_id",
        "timestamp",
        "type",
        "user_id",
        "app_id",
        "cluster_id",
    )


@given(properties, st.integers(0, 2**64 - 1))
def test_round_trip_any_combination(props: P.BasicProperties, body_size: int) -> None:
    payload = P.encode_content_header(60, body_size, props)
    class_id, size, decoded = P.decode_content_header(payload)
    assert (class_id, size) == (60, body_size)
    assert typed(tuple(decoded)) == typed(tuple(props))
    assert P.decode_content_header(payload) == (60, body_size, decoded)  # the cached path agrees


@pytest.mark.parametrize("index", range(14), ids=P.BasicProperties._fields)
def test_each_property_sets_its_own_flag_bit(index: int) -> None:
    name = P.BasicProperties._fields[index]
    props = P.BasicProperties(**{name: getattr(ALL_SET, name)})
    encoded = P.encode_properties(props)
    assert struct.unpack(">H", encoded[:2])[0] == 1 << (15 - index)
    assert P.decode_content_header(P.encode_content_header(60, 0, props))[2] == props


def test_empty_properties_fast_path() -> None:
    assert P.encode_properties(P.EMPTY_PROPERTIES) == b"\x00\x00"
    payload = P.encode_content_header(60, 5, P.BasicProperties())
    assert payload == b"\x00\x3c\x00\x00" + struct.pack(">Q", 5) + b"\x00\x00"
    assert P.decode_content_header(payload)[2] is P.EMPTY_PROPERTIES


def test_continuation_and_reserved_flag_bits_are_ignored_like_rabbitmq() -> None:
    payload = b"\x00\x3c\x00\x00" + struct.pack(">Q", 0) + b"\x10\x03\x02"
    assert P.decode_content_header(payload)[2] == P.BasicProperties(delivery_mode=2)


def test_non_utf8_property_survives_re_encoding() -> None:
    payload = b"\x00\x3c\x00\x00" + struct.pack(">Q", 0) + b"\x04\x00\x02\xff\xfe"
    decoded = P.decode_content_header(payload)[2]
    assert isinstance(decoded.correlation_id, str)
    assert P.encode_content_header(60, 0, decoded) == payload


def test_memoryview_input() -> None:
    payload = P.encode_content_header(60, 1, ALL_SET)
    assert P.decode_content_header(memoryview(payload)) == (60, 1, ALL_SET)


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"\x00\x3c\x00\x00" + b"\x00" * 8, FrameError),  # no flag word
        (b"\x00\x3c\x00\x00" + b"\x00" * 8 + b"\x00\x00\x00", FrameError),  # trailing octet
        (b"\x00\x3c\x00\x00" + b"\x00" * 8 + b"\x80\x00\x05ab", FrameError),  # shortstr overruns
        (b"\x00\x3c\x00\x00" + b"\x00" * 8 + b"\x20\x00\x00\x00\x00\x09", FrameError),  # table overruns
        (b"\x00\x3c\x00\x00" + b"\x00" * 8 + b"\x00\x40\x00", FrameError),  # timestamp truncated
        (b"\x00\x32\x00\x00" + b"\x00" * 8 + b"\x00\x00", UnexpectedFrame),  # class 50
        (b"\x00\x3c\x00\x01" + b"\x00" * 8 + b"\x00\x00", UnexpectedFrame),  # weight 1
    ],
)
def test_malformed_headers(payload: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        P.decode_content_header(payload)


@pytest.mark.parametrize(
    "props",
    [
        P.BasicProperties(delivery_mode=256),
        P.BasicProperties(priority=-1),
        P.BasicProperties(timestamp=-1),
        P.BasicProperties(content_type="x" * 256),
        P.BasicProperties(headers={"k": Unencodable()}),
    ],
    ids=repr,
)
def test_unencodable_properties(props: P.BasicProperties) -> None:
    with pytest.raises(SyntaxError_):
        P.encode_properties(props)


@given(properties, st.integers(0, 2**63 - 1))
def test_a_long_header_added_to_encoded_properties_decodes_as_if_encoded_with_it(
        props: P.BasicProperties, offset: int) -> None:
    """Streams stamp x-stream-offset into the client's header bytes rather
    than encoding the properties again: the result must be what encoding
    them with the header would give, to any decoder."""
    if props.headers and "x-stream-offset" in props.headers:
        return  # the caller never asks for a header that is there already
    header = P.encode_content_header(P.BASIC_CLASS_ID, 123, props)
    # The second stamp of the same header bytes reuses what the first found.
    for value in (offset, offset // 3):
        stamped = P.with_long_header(header, "x-stream-offset", value)
        class_id, size, decoded = P.decode_content_header(stamped)
        assert (class_id, size) == (P.BASIC_CLASS_ID, 123)
        assert decoded == props._replace(headers={**(props.headers or {}), "x-stream-offset": value})


# -- check_properties: what the embedded and management APIs accept ------

#: Any Python value a caller might pass as a property, of any type.
anything = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), st.floats(),
                     st.text(max_size=300), st.binary(max_size=10), st.lists(st.integers(), max_size=3),
                     st.dictionaries(st.text(max_size=5), st.integers(), max_size=3))


@given(st.dictionaries(st.sampled_from(P.BasicProperties._fields), anything, max_size=3))
def test_what_the_check_accepts_always_encodes(values: dict[str, object]) -> None:
    candidate = P.BasicProperties(**values)  # type: ignore[arg-type]
    try:
        P.check_properties(candidate)
    except P.InvalidProperty as refused:
        assert refused.field in P.BasicProperties._fields
        return
    P.encode_properties(candidate)  # raises nothing


@given(properties)
def test_the_check_accepts_every_decodable_set_of_properties(given_properties: P.BasicProperties) -> None:
    P.check_properties(given_properties)
    P.check_properties(P.decode_content_header(P.encode_content_header(60, 0, given_properties))[2])


@pytest.mark.parametrize("properties, reason", [
    (P.BasicProperties(priority="high"), ("not_int", "priority")),  # type: ignore[arg-type]
    (P.BasicProperties(delivery_mode=True), ("not_int", "delivery_mode")),
    (P.BasicProperties(priority=256), ("out_of_range", "priority")),
    (P.BasicProperties(timestamp=-1), ("out_of_range", "timestamp")),
    (P.BasicProperties(app_id=b"x"), ("not_string", "app_id")),  # type: ignore[arg-type]
    (P.BasicProperties(message_id="\ud800"), ("not_encodable", "message_id")),
    (P.BasicProperties(reply_to="é" * 128), ("too_long", "reply_to")),
    (P.BasicProperties(headers=[1]), ("not_table", "headers")),  # type: ignore[arg-type]
    (P.BasicProperties(headers={"k": object()}), ("not_encodable", "headers")),
    (P.BasicProperties(headers={"k": 2**64}), ("not_encodable", "headers")),
])
def test_the_check_names_the_property_and_the_problem(properties: P.BasicProperties,
                                                      reason: tuple[str, str]) -> None:
    with pytest.raises(P.InvalidProperty) as refused:
        P.check_properties(properties)
    assert (refused.value.reason, refused.value.field) == reason
    assert isinstance(refused.value, ValueError)
