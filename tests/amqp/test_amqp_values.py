"""Field tables, arrays and values with RabbitMQ's type letters."""

from __future__ import annotations

import struct
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from amqp_strategies import Unencodable, field_values, tables, typed
from hypothesis import given
from hypothesis import strategies as st

from amqlite.amqp import values
from amqlite.core.errors import FrameError, SyntaxError_


@given(tables)
def test_table_round_trip(table: dict) -> None:
    encoded = values.encode_table(table)
    decoded, end = values.decode_table(encoded)
    assert end == len(encoded)
    assert typed(decoded) == typed(table)


@given(field_values)
def test_value_round_trip(value: object) -> None:
    encoded = values.encode_value(value)
    decoded, end = values.decode_value(encoded)
    assert end == len(encoded)
    assert typed(decoded) == typed(value)


def _entry(key: bytes, letter: bytes, payload: bytes) -> bytes:
    return bytes([len(key)]) + key + letter + payload


EVERY_TYPE = [
    (b"t", b"\x01", True),
    (b"t", b"\x00", False),
    (b"b", b"\xff", -1),
    (b"B", b"\xff", 255),
    (b"s", b"\xff\xfe", -2),
    (b"u", b"\xff\xfe", 65534),
    (b"I", b"\xff\xff\xff\xfd", -3),
    (b"i", b"\xff\xff\xff\xfd", 2**32 - 3),
    (b"l", b"\xff" * 7 + b"\xfc", -4),
    (b"L", b"\xff" * 7 + b"\xfc", -4),  # RabbitMQ reads L as signed too
    (b"f", struct.pack(">f", 1.5), 1.5),
    (b"d", struct.pack(">d", -2.25), -2.25),
    (b"D", b"\x02" + struct.pack(">i", -12345), Decimal("-123.45")),
    (b"S", b"\x00\x00\x00\x03abc", "abc"),
    (b"x", b"\x00\x00\x00\x02\x00\xff", b"\x00\xff"),
    (b"A", b"\x00\x00\x00\x07t\x01S\x00\x00\x00\x00", [True, ""]),
    (b"T", struct.pack(">Q", 1700000000), datetime(2023, 11, 14, 22, 13, 20, tzinfo=timezone.utc)),
    (b"F", b"\x00\x00\x00\x03\x01kV", {"k": None}),
    (b"V", b"", None),
]


@pytest.mark.parametrize(
    ("letter", "payload", "expected"), EVERY_TYPE, ids=[f"{t[0].decode()}-{i}" for i, t in enumerate(EVERY_TYPE)]
)
def test_decode_every_type_letter(letter: bytes, payload: bytes, expected: object) -> None:
    entries = _entry(b"key", letter, payload)
    table, end = values.decode_table(struct.pack(">I", len(entries)) + entries)
    assert typed(table) == typed({"key": expected})
    assert values.decode_table_entries(entries) == {"key": expected}


def test_all_types_in_one_nested_table() -> None:
    entries = b"".join(_entry(f"k{i}".encode(), t, payload) for i, (t, payload, _) in enumerate(EVERY_TYPE))
    expected = {f"k{i}": value for i, (_, _, value) in enumerate(EVERY_TYPE)}
    nested = _entry(b"inner", b"F", struct.pack(">I", len(entries)) + entries)
    array = b"F" + struct.pack(">I", len(entries)) + entries
    nested += _entry(b"list", b"A", struct.pack(">I", len(array) * 2) + array * 2)
    decoded = values.decode_table_entries(nested)
    assert typed(decoded) == typed({"inner": expected, "list": [expected, expected]})


def test_python_types_choose_rabbitmq_letters() -> None:
    assert values.encode_value(True) == b"t\x01"
    assert values.encode_value(7) == b"I\x00\x00\x00\x07"
    assert values.encode_value(-(2**31)) == b"I\x80\x00\x00\x00"
    assert values.encode_value(2**31) == b"l" + struct.pack(">q", 2**31)
    assert values.encode_value(1.0) == b"d" + struct.pack(">d", 1.0)
    assert values.encode_value("é") == b"S\x00\x00\x00\x02\xc3\xa9"
    assert values.encode_value(b"\x00") == b"x\x00\x00\x00\x01\x00"
    assert values.encode_value(Decimal("1.5")) == b"D\x01\x00\x00\x00\x0f"
    assert values.encode_value(Decimal("1.5E+3")) == b"D\x00" + struct.pack(">i", 1500)
    assert values.encode_value(None) == b"V"
    assert values.encode_value((1,)) == b"A\x00\x00\x00\x05I\x00\x00\x00\x01"
    assert values.encode_value({}) == b"F\x00\x00\x00\x00"


def test_datetimes_encode_as_utc_seconds() -> None:
    aware = datetime(2024, 1, 1, 12, 0, 0, tzinfo=timezone(timedelta(hours=2)))
    naive_utc = datetime(2024, 1, 1, 10, 0, 0)
    expected = b"T" + struct.pack(">Q", 1704103200)
    assert values.encode_value(aware) == expected
    assert values.encode_value(naive_utc) == expected
    decoded, _ = values.decode_value(expected)
    assert decoded == aware and decoded.tzinfo == timezone.utc


def test_timestamp_beyond_datetime_range_decodes_as_int() -> None:
    # Milliseconds where seconds belong: RabbitMQ passes it on, so must we.
    raw = b"T" + struct.pack(">Q", 2**63)
    assert values.decode_value(raw) == (2**63, 9)


def test_non_utf8_longstr_round_trips_byte_for_byte() -> None:
    table = b"\x01kS\x00\x00\x00\x02\xff\xfe"
    decoded = values.decode_table_entries(table)
    assert isinstance(decoded["k"], str)
    assert values.encode_table_entries(decoded) == table


def test_amqplain_response_from_py_amqp() -> None:
    amqp_sasl = pytest.importorskip("amqp.sasl")
    response = amqp_sasl.AMQPLAIN("guest", "secret").start(None)
    assert values.decode_table_entries(response) == {"LOGIN": "guest", "PASSWORD": "secret"}


def test_shortstr_and_longstr_helpers() -> None:
    assert values.encode_shortstr("my queue!") == b"\x09my queue!"
    assert values.decode_shortstr(b"\x00\x02ab", 1) == ("ab", 4)
    assert values.encode_longstr(b"\x00") == b"\x00\x00\x00\x01\x00"
    assert values.encode_longstr("é") == b"\x00\x00\x00\x02\xc3\xa9"
    assert values.decode_longstr(memoryview(b"\x00\x00\x00\x01z")) == (b"z", 5)
    with pytest.raises(SyntaxError_):
        values.encode_shortstr("x" * 256)
    with pytest.raises(FrameError, match="Malformed UTF-8"):
        values.decode_shortstr(b"\x01\xff")
    with pytest.raises(FrameError):
        values.decode_shortstr(b"\x05ab")
    with pytest.raises(FrameError):
        values.decode_longstr(b"\x00\x00\x00\x05ab")


@pytest.mark.parametrize(
    "bad",
    [
        {"k": Unencodable()},
        {"k": 2**64},
        {1: "non-str key"},
        {"k" * 256: 1},
        {"k": Decimal("NaN")},
        {"k": Decimal("1E-300")},
        {"k": Decimal(2**40)},
        {"k": datetime(1969, 12, 31, tzinfo=timezone.utc)},
        {"k": "\ud800"},
    ],
    ids=repr,
)
def test_unencodable_values_raise_syntax_error(bad: dict) -> None:
    with pytest.raises(SyntaxError_) as info:
        values.encode_table(bad)
    assert info.value.reply_code == 502


def test_self_referencing_table_raises_syntax_error() -> None:
    table: dict = {}
    table["me"] = table
    with pytest.raises(SyntaxError_):
        values.encode_table(table)


@pytest.mark.parametrize(
    "raw",
    [
        b"\x00\x00\x00",  # length truncated
        b"\x00\x00\x00\x05\x01k",  # length beyond the data
        b"\x00\x00\x00\x03\x01kZ",  # unknown type letter
        b"\x00\x00\x00\x04\x01kI\x00",  # value overruns the table
        b"\x00\x00\x00\x0a\x01kA\x00\x00\x00\x01t\x01",  # array element overruns the array
        b"\x00\x00\x00\x02\x05k",  # key overruns
        b"\x00\x00\x00\x07\x01kS\x00\x00\x00\x09",  # string overruns
    ],
)
def test_malformed_tables_raise_frame_error(raw: bytes) -> None:
    with pytest.raises(FrameError) as info:
        values.decode_table(raw)
    assert info.value.reply_code == 501


def test_deep_nesting_is_a_frame_error_not_a_crash() -> None:
    depth = 5000
    raw = b""
    for _ in range(depth):
        raw = b"A" + struct.pack(">I", len(raw)) + raw
    with pytest.raises(FrameError):
        values.decode_value(raw)


def _nested_table_bytes(depth: int) -> bytes:
    """A length-prefixed table with ``depth`` levels of tables in it."""
    raw = b"\x00\x00\x00\x00"  # the innermost, empty table
    for _ in range(depth - 1):
        entry = b"\x01kF" + raw
        raw = struct.pack(">I", len(entry)) + entry
    return raw


def test_decode_and_encode_accept_the_same_depth_without_recursion_limits() -> None:
    from amqlite.core.fieldtypes import MAX_NESTING

    table, _ = values.decode_table(_nested_table_bytes(MAX_NESTING))
    assert values.encode_table(table) == _nested_table_bytes(MAX_NESTING)
    with pytest.raises(FrameError, match=f"nest deeper than {MAX_NESTING} levels"):
        values.decode_table(_nested_table_bytes(MAX_NESTING + 1))
    # Far deeper than Python's recursion limit: still a clean protocol error.
    with pytest.raises(FrameError, match="nest deeper"):
        values.decode_table(_nested_table_bytes(5000))
    deep: dict = {}
    for _ in range(5000):
        deep = {"k": [deep]}
    with pytest.raises(SyntaxError_, match="nest deeper"):
        values.encode_table(deep)


@given(st.binary(max_size=255), st.binary(max_size=4))
def test_decode_name_keeps_any_bytes_and_refuses_a_truncated_name(raw: bytes, before: bytes) -> None:
    """Exchange names and routing keys as the store reads them back: any
    bytes survive the round trip through encode_shortstr; a name cut short
    is a FrameError, never a shorter name."""
    data = before + bytes([len(raw)]) + raw
    name, end = values.decode_name(data, len(before))
    assert end == len(data) and values.encode_shortstr(name) == data[len(before):]
    for cut in range(len(before), len(data)):
        with pytest.raises(FrameError):
            values.decode_name(data[:cut], len(before))
