"""AMQP 0-9-1 field values, field tables and field arrays with RabbitMQ's type letters.

RabbitMQ follows the errata table, not the 0-9-1 spec text (``s`` is int16,
``l`` is int64, ``x`` is a byte array); clients (pika, Java, aiormq) follow
RabbitMQ, so we do too. The letter-to-type mapping is ``_READERS_BY_LETTER``.

Decoding works on ``(buffer, offset)`` pairs so the method and header codecs
can read tables in place, without slicing them out of a frame first. Readers
whose name starts with ``_`` may overrun the buffer or raise IndexError or
struct.error on malformed input; the public ``decode_*`` functions turn all of
that into :class:`FrameError` (501), which is what RabbitMQ answers for method
arguments it cannot decode.

Text: ``S`` (longstr) values and table keys decode to ``str`` with
``errors="surrogateescape"``. RabbitMQ treats both as opaque bytes, so a client
may put non-UTF-8 data there; surrogateescape keeps such a header a ``str`` and
re-encodes it to the identical bytes under the same ``S`` letter, where falling
back to ``bytes`` would change it to ``x`` on the way out. Method-level
shortstrs (queue names, consumer tags) are strict UTF-8, as RabbitMQ asserts
for every method argument except the exchange and routing key of publish,
return, deliver and get-ok: those two are bytes to RabbitMQ, so they decode
with surrogateescape here too (:func:`decode_name`) and every shortstr
encodes that way, so they go back out as the bytes that came in.

Tables and arrays nest at most ``MAX_NESTING`` deep, in decoding and in
encoding alike, so whatever was accepted can always be encoded again (to
disk, to a dead-letter queue, to a consumer) without meeting Python's
recursion limit.
"""

from __future__ import annotations

import functools
import struct
from calendar import timegm
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from amqlite.core.errors import FrameError, SyntaxError_
from amqlite.core.fieldtypes import MAX_NESTING, Long

FieldTable = dict[str, Any]
FieldArray = list[Any]

#: Errors a raw reader may raise on malformed input; public decoders map them to FrameError.
DECODE_ERRORS = (IndexError, struct.error, ValueError, OverflowError)

_UINT32 = struct.Struct(">I")
_UINT8 = struct.Struct(">B")
_INT32 = struct.Struct(">i")
_INT64 = struct.Struct(">q")
_UINT64 = struct.Struct(">Q")
_DECIMAL = struct.Struct(">Bi")
_LONGSTR_S = struct.Struct(">cI")  # type letter + length, for S, x, A and F

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_UINT32_MAX = 2**32 - 1


# --------------------------------------------------------------------------- decoding


def _fixed(fmt: str) -> Callable[[bytes, int], tuple[Any, int]]:
    """A reader for a fixed-size numeric value; one closure per type letter."""
    s = struct.Struct(fmt)
    unpack_from, size = s.unpack_from, s.size

    def read(buf: bytes, off: int) -> tuple[Any, int]:
        return unpack_from(buf, off)[0], off + size

    return read


def _read_bool(buf: bytes, off: int) -> tuple[bool, int]:
    return buf[off] != 0, off + 1


def _read_longstr_text(buf: bytes, off: int) -> tuple[str, int]:
    n = _UINT32.unpack_from(buf, off)[0]
    off += 4
    return buf[off : off + n].decode("utf-8", "surrogateescape"), off + n


def _read_bytes(buf: bytes, off: int) -> tuple[bytes, int]:
    n = _UINT32.unpack_from(buf, off)[0]
    off += 4
    return buf[off : off + n], off + n


def _read_decimal(buf: bytes, off: int) -> tuple[Decimal, int]:
    scale, value = _DECIMAL.unpack_from(buf, off)
    return Decimal(value).scaleb(-scale), off + 5


def _read_timestamp(buf: bytes, off: int) -> tuple[datetime | int, int]:
    seconds = _UINT64.unpack_from(buf, off)[0]
    try:
        return datetime.fromtimestamp(seconds, timezone.utc), off + 8
    except (OverflowError, OSError, ValueError):
        # RabbitMQ accepts any uint64 (senders put milliseconds here); closing the
        # connection over an unrepresentable date would be worse than an int.
        return seconds, off + 8


def _read_void(buf: bytes, off: int) -> tuple[None, int]:
    return None, off


def _read_table_field(buf: bytes, off: int, depth: int = 1) -> tuple[FieldTable, int]:
    n = _UINT32.unpack_from(buf, off)[0]
    off += 4
    return _read_entries(buf, off, off + n, depth), off + n


def _read_array_field(buf: bytes, off: int, depth: int = 1) -> tuple[FieldArray, int]:
    n = _UINT32.unpack_from(buf, off)[0]
    off += 4
    end = off + n
    items: FieldArray = []
    append = items.append
    while off < end:
        value, off = _read_value(buf, off, depth)
        append(value)
    if off != end:
        raise FrameError("field array overruns its length")
    return items, off


def _read_unknown(buf: bytes, off: int) -> tuple[Any, int]:
    raise FrameError(f"unknown field value type {buf[off - 1 : off]!r}")


_READERS_BY_LETTER: dict[str, Callable[[bytes, int], tuple[Any, int]]] = {
    "t": _read_bool,
    "b": _fixed(">b"),
    "B": _fixed(">B"),
    "s": _fixed(">h"),
    "u": _fixed(">H"),
    "I": _fixed(">i"),
    "i": _fixed(">I"),
    "l": _fixed(">q"),
    "L": _fixed(">q"),  # RabbitMQ reads L as signed 64 too (rabbit_binary_parser)
    "f": _fixed(">f"),
    "d": _fixed(">d"),
    "D": _read_decimal,
    "S": _read_longstr_text,
    "x": _read_bytes,
    "T": _read_timestamp,
    "V": _read_void,
}
# Indexed by the type octet itself: one list lookup per value, no miss branch.
# Tables (F) and arrays (A) are not in it: they carry their depth.
_READERS = [_READERS_BY_LETTER.get(chr(octet), _read_unknown) for octet in range(256)]
_TABLE, _ARRAY = ord("F"), ord("A")


def _read_nested(kind: int, buf: bytes, off: int, depth: int) -> tuple[Any, int]:
    if depth >= MAX_NESTING:
        raise FrameError(f"field tables and arrays nest deeper than {MAX_NESTING} levels")
    if kind == _TABLE:
        return _read_table_field(buf, off, depth + 1)
    return _read_array_field(buf, off, depth + 1)


def _read_value(buf: bytes, off: int, depth: int = 0) -> tuple[Any, int]:
    kind = buf[off]
    if kind == _TABLE or kind == _ARRAY:
        return _read_nested(kind, buf, off + 1, depth)
    return _READERS[kind](buf, off + 1)


def _read_entries(buf: bytes, off: int, end: int, depth: int = 1) -> FieldTable:
    """Table entries between ``off`` and ``end`` (no length prefix)."""
    table: FieldTable = {}
    readers = _READERS
    while off < end:
        n = buf[off]
        off += 1 + n
        key = buf[off - n : off].decode("utf-8", "surrogateescape")
        kind = buf[off]
        if kind == _TABLE or kind == _ARRAY:
            table[key], off = _read_nested(kind, buf, off + 1, depth)
        else:
            table[key], off = readers[kind](buf, off + 1)
    if off != end:
        raise FrameError("field table overruns its length")
    return table


def read_table(buf: bytes, off: int) -> tuple[FieldTable, int]:
    """Raw reader for a length-prefixed table; the caller checks the final offset."""
    return _read_table_field(buf, off)


def decode_error(exc: Exception, what: str) -> FrameError:
    """The FrameError (501) for a raw reader's failure, with RabbitMQ's wording."""
    if isinstance(exc, UnicodeDecodeError):
        return FrameError("Malformed UTF-8 in shortstr")
    return FrameError(f"cannot decode {what}")


def _checked(
    reader: Callable[[bytes, int], tuple[Any, int]], data: bytes | memoryview, offset: int, what: str
) -> tuple[Any, int]:
    buf = data if type(data) is bytes else bytes(data)
    try:
        value, end = reader(buf, offset)
    except DECODE_ERRORS as exc:
        raise decode_error(exc, what) from exc
    if end > len(buf):
        raise FrameError(f"cannot decode {what}: truncated")
    return value, end


def decode_table(data: bytes | memoryview, offset: int = 0) -> tuple[FieldTable, int]:
    """Decode a length-prefixed field table; returns it and the offset after it."""
    return _checked(_read_table_field, data, offset, "field table")


def decode_table_entries(data: bytes | memoryview) -> FieldTable:
    """Decode table entries that fill ``data`` without a length prefix.

    This is how AMQPLAIN carries LOGIN and PASSWORD in ``connection.start-ok``'s
    response longstr.
    """
    buf = data if type(data) is bytes else bytes(data)
    try:
        return _read_entries(buf, 0, len(buf))
    except DECODE_ERRORS as exc:
        raise decode_error(exc, "field table") from exc


def decode_array(data: bytes | memoryview, offset: int = 0) -> tuple[FieldArray, int]:
    """Decode a length-prefixed field array; returns it and the offset after it."""
    return _checked(_read_array_field, data, offset, "field array")


def decode_value(data: bytes | memoryview, offset: int = 0) -> tuple[Any, int]:
    """Decode one type letter and its value; returns it and the offset after it."""
    return _checked(_read_value, data, offset, "field value")


def _read_shortstr(buf: bytes, off: int) -> tuple[str, int]:
    n = buf[off]
    off += 1
    return buf[off : off + n].decode(), off + n


def decode_shortstr(data: bytes | memoryview, offset: int = 0) -> tuple[str, int]:
    """Decode a strict UTF-8 shortstr (RabbitMQ: 501 "Malformed UTF-8 in shortstr")."""
    return _checked(_read_shortstr, data, offset, "shortstr")


def decode_name(data: bytes | memoryview, offset: int = 0) -> tuple[str, int]:
    """Decode a shortstr that may hold any bytes (a message's exchange or
    routing key): invalid UTF-8 is kept by surrogateescape, so only a
    truncated one fails. Inline rather than through _checked: the store
    reads two per message read back."""
    buf = data if type(data) is bytes else bytes(data)
    start = offset + 1
    if start > len(buf) or (end := start + buf[offset]) > len(buf):
        raise FrameError("cannot decode shortstr: truncated")
    return buf[start:end].decode("utf-8", "surrogateescape"), end


def decode_longstr(data: bytes | memoryview, offset: int = 0) -> tuple[bytes, int]:
    """Decode a longstr as bytes; RabbitMQ gives longstr arguments no encoding."""
    return _checked(_read_bytes, data, offset, "longstr")


# --------------------------------------------------------------------------- encoding


def encode_shortstr(value: str) -> bytes:
    """Length octet + UTF-8; SyntaxError_ past 255 bytes. Text decoded with
    surrogateescape (names and properties RabbitMQ does not check for UTF-8)
    goes back out as the bytes it came from."""
    try:
        raw = value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as exc:
        raise SyntaxError_(f"shortstr is not encodable as UTF-8: {value!r}") from exc
    if len(raw) > 255:
        raise SyntaxError_(f"shortstr longer than 255 bytes: {value[:40]!r}...")
    return _UINT8.pack(len(raw)) + raw


def encode_longstr(value: bytes | str) -> bytes:
    """Length long + bytes; a str is encoded as UTF-8 for convenience."""
    raw = value.encode() if isinstance(value, str) else bytes(value)
    if len(raw) > _UINT32_MAX:
        raise SyntaxError_("longstr longer than 4 GiB")
    return _UINT32.pack(len(raw)) + raw


def _write_sized(letter: bytes, raw: bytes, out: list[bytes]) -> None:
    if len(raw) > _UINT32_MAX:
        raise SyntaxError_("field value longer than 4 GiB")
    out.append(_LONGSTR_S.pack(letter, len(raw)))
    out.append(raw)


def _write_value(value: Any, out: list[bytes], depth: int = 0) -> None:
    # bool before int: bool is an int subclass but has its own letter.
    if isinstance(value, str):
        _write_sized(b"S", value.encode("utf-8", "surrogateescape"), out)
    elif isinstance(value, bool):
        out.append(b"t\x01" if value else b"t\x00")
    elif isinstance(value, int):
        if _INT32_MIN <= value <= _INT32_MAX and type(value) is not Long:
            out.append(b"I" + _INT32.pack(value))
        elif _INT64_MIN <= value <= _INT64_MAX:
            out.append(b"l" + _INT64.pack(value))
        else:
            raise SyntaxError_(f"integer does not fit in 64 bits: {value}")
    elif isinstance(value, Mapping):
        _write_sized(b"F", _encode_entries(value, _deeper(depth)), out)
    elif value is None:
        out.append(b"V")
    elif isinstance(value, float):
        out.append(b"d" + struct.pack(">d", value))
    elif isinstance(value, (bytes, bytearray, memoryview)):
        _write_sized(b"x", bytes(value), out)
    elif isinstance(value, (list, tuple)):
        _write_sized(b"A", _encode_items(value, _deeper(depth)), out)
    elif isinstance(value, datetime):
        out.append(b"T" + _pack_timestamp(value))
    elif isinstance(value, Decimal):
        out.append(b"D" + _encode_decimal(value))
    else:
        raise SyntaxError_(f"no AMQP field type for {type(value).__name__}")


def _pack_timestamp(value: datetime) -> bytes:
    # A naive datetime is taken as UTC, as pika and pamqp do.
    utc = value if value.tzinfo is None else value.astimezone(timezone.utc)
    seconds = timegm(utc.timetuple())
    if seconds < 0:
        raise SyntaxError_("timestamp before 1970 has no AMQP encoding")
    return _UINT64.pack(seconds)


def _encode_decimal(value: Decimal) -> bytes:
    try:
        exponent = value.as_tuple().exponent
        if not isinstance(exponent, int):  # "n", "N" or "F": NaN or infinity
            raise SyntaxError_(f"decimal is not finite: {value}")
        scale = max(0, -exponent)
        mantissa = int(value.scaleb(scale))
        return _DECIMAL.pack(scale, mantissa)
    except (struct.error, InvalidOperation) as exc:
        raise SyntaxError_(f"decimal does not fit AMQP's scale octet + int32: {value}") from exc


def _deeper(depth: int) -> int:
    if depth >= MAX_NESTING:
        raise SyntaxError_(f"field tables and arrays nest deeper than {MAX_NESTING} levels")
    return depth + 1


def _encode_entries(table: Mapping[str, Any], depth: int = 1) -> bytes:
    out: list[bytes] = []
    for key, value in table.items():
        if not isinstance(key, str):
            raise SyntaxError_(f"field table key is not a str: {key!r}")
        raw = key.encode("utf-8", "surrogateescape")
        if len(raw) > 255:
            raise SyntaxError_(f"field table key longer than 255 bytes: {key[:40]!r}...")
        out.append(_UINT8.pack(len(raw)))
        out.append(raw)
        _write_value(value, out, depth)
    return b"".join(out)


def _encode_items(items: list[Any] | tuple[Any, ...], depth: int = 1) -> bytes:
    out: list[bytes] = []
    for value in items:
        _write_value(value, out, depth)
    return b"".join(out)


def _with_length(raw: bytes) -> bytes:
    if len(raw) > _UINT32_MAX:
        raise SyntaxError_("field table longer than 4 GiB")
    return _UINT32.pack(len(raw)) + raw


def _encoding_errors(func: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
    """Map the ways a bad Python value fails to encode onto SyntaxError_ (502)."""

    @functools.wraps(func)
    def encode(value: Any) -> bytes:
        try:
            return func(value)
        except UnicodeEncodeError as exc:
            raise SyntaxError_(f"value not encodable as an AMQP field: {exc}") from exc

    return encode


@_encoding_errors
def encode_table(table: Mapping[str, Any]) -> bytes:
    """Length-prefixed field table (what a ``table`` argument puts on the wire)."""
    return _with_length(_encode_entries(table))


@_encoding_errors
def encode_table_entries(table: Mapping[str, Any]) -> bytes:
    """Table entries without the length prefix (AMQPLAIN responses)."""
    return _encode_entries(table)


@_encoding_errors
def encode_array(items: list[Any] | tuple[Any, ...]) -> bytes:
    """Length-prefixed field array."""
    return _with_length(_encode_items(items))


@_encoding_errors
def encode_value(value: Any) -> bytes:
    """Type letter + value: bool t, int I or l, float d, str S, bytes x, Decimal D,
    datetime T, mapping F, list/tuple A, None V."""
    out: list[bytes] = []
    _write_value(value, out)
    return b"".join(out)
