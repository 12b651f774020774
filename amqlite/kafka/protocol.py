"""Kafka's wire format: request framing, headers, and the bodies through kio.

A request is a 4-byte big-endian size, then a header (API key, version,
correlation id, client id; flexible versions add tagged fields), then the
body. A response is a size, the correlation id (plus an empty tagged-field
section when the response is flexible, except ApiVersions', whose header
stays v0 so that any client can read it), then the body.

Bodies are kio's types, generated from Kafka's own message schemas
(``clients/src/main/resources/common/message/*.json``): one frozen
dataclass per API, version and nested struct, read by kio's native
reader. Headers are read and written here, by hand: they are the same few
fields for every request, and the correlation id must be known even when
the body cannot be read.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import io
import struct
import sys
import typing
import uuid
from typing import Any, Callable

import attrs
from kio.index import KioIndexError, load_request_schema, load_response_schema
from kio.schema.errors import ErrorCode
from kio.serial import entity_reader, entity_writer

__all__ = ["ErrorCode", "Request", "FrameError", "read_frames", "parse_header", "request_type", "response_type",
           "decode_body", "encode_response", "error_response", "build", "API_VERSIONS"]

#: ApiVersions' key: its response header is v0 at every version (KIP-511).
API_VERSIONS = 18

_SIZE = struct.Struct(">i")
_HEADER = struct.Struct(">hhi")
_SHORT = struct.Struct(">h")
#: The smallest request: key, version, correlation id.
_MIN_REQUEST = _HEADER.size


class FrameError(Exception):
    """The byte stream cannot be read on (a bad size): close the connection,
    as a Kafka broker does."""


@attrs.define(slots=True)
class Request:
    """One request as the engine hands it to a handler."""

    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    #: The body: kio's request entity, or the raw bytes for an API
    #: registered with ``raw=True`` (its handler reads them itself).
    body: Any = None

    def response_type(self) -> type[Any]:
        """kio's response class for this request's key and version."""
        cls = response_type(self.api_key, self.api_version)
        assert cls is not None, "a served API has a response schema"
        return cls


def read_frames(buffer: bytearray, max_size: int) -> list[bytes]:
    """Take every complete request out of ``buffer``, leaving a partial one
    there; a size below the smallest header or above ``max_size`` is a
    FrameError, said before the rest of the claimed size is waited for."""
    frames = []
    start, end = 0, len(buffer)
    while end - start >= 4:
        (size,) = _SIZE.unpack_from(buffer, start)
        if size < _MIN_REQUEST or size > max_size:
            raise FrameError(f"request size {size} outside {_MIN_REQUEST}-{max_size} bytes")
        if end - start - 4 < size:
            break
        frames.append(bytes(buffer[start + 4:start + 4 + size]))
        start += 4 + size
    if start:
        del buffer[:start]
    return frames


def _skip_tagged_fields(data: bytes, offset: int) -> int:
    count, offset = _uvarint(data, offset)
    for _ in range(count):
        _, offset = _uvarint(data, offset)
        size, offset = _uvarint(data, offset)
        offset += size
    if offset > len(data):
        raise ValueError("tagged fields run past the end of the header")
    return offset


def _uvarint(data: bytes, offset: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if offset >= len(data) or shift > 28:
            raise ValueError("bad unsigned varint")
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, offset
        shift += 7


def parse_header(frame: bytes) -> tuple[Request, int]:
    """The header of one request, and where its body starts; ValueError for
    a header that cannot be read. Key, version and correlation id come
    first and always: an error response can be sent whenever the frame
    holds them (read_frames made sure it does)."""
    api_key, api_version, correlation_id = _HEADER.unpack_from(frame, 0)
    request = Request(api_key, api_version, correlation_id, None)
    offset = _HEADER.size
    if len(frame) < offset + 2:
        raise ValueError("header ends before its client id")
    (length,) = _SHORT.unpack_from(frame, offset)
    offset += 2
    if length >= 0:
        if offset + length > len(frame):
            raise ValueError("client id runs past the end of the request")
        request.client_id = frame[offset:offset + length].decode("utf-8", "replace")
        offset += length
    if is_flexible(api_key, api_version):
        offset = _skip_tagged_fields(frame, offset)
    return request, offset


@functools.lru_cache(maxsize=None)
def request_type(api_key: int, api_version: int) -> type[Any] | None:
    """kio's request class for this key and version; None if Kafka has none."""
    try:
        return load_request_schema(api_key, api_version)
    except KioIndexError:
        return None


@functools.lru_cache(maxsize=None)
def response_type(api_key: int, api_version: int) -> type[Any] | None:
    try:
        return load_response_schema(api_key, api_version)
    except KioIndexError:
        return None


def is_flexible(api_key: int, api_version: int) -> bool:
    """Whether the request header has tagged fields (header v2)."""
    cls = request_type(api_key, api_version)
    if cls is not None:
        return bool(cls.__flexible__)
    # A version newer than kio's schemas: ApiVersions must still be read
    # (KIP-511: the answer says which versions there are); it is flexible from 3.
    return api_key == API_VERSIONS and api_version >= 3


_READERS: dict[type[Any], Callable[[bytes, int], tuple[Any, int]]] = {}
_WRITERS: dict[type[Any], Callable[[io.BytesIO, Any], None]] = {}


def decode_body(cls: type[Any], frame: bytes, offset: int) -> Any:
    """The request body; any exception means it is malformed."""
    reader = _READERS.get(cls)
    if reader is None:
        reader = _READERS[cls] = entity_reader(cls)
    body, _ = reader(frame, offset)
    _check_nulls(body)
    return body


def _check_nulls(entity: Any) -> None:
    """ValueError for a null where the schema has none: kio reads a null
    array or string whatever the field's nullability, and a handler would
    trip on it (Kafka refuses such a request too)."""
    for name, nullable, nested in _null_rules(type(entity)):
        value = getattr(entity, name)
        if value is None:
            if not nullable:
                raise ValueError(f"{type(entity).__name__}.{name} is null")
        elif nested:
            for item in value if isinstance(value, tuple) else (value,):
                _check_nulls(item)


_NULL_RULES: dict[type[Any], list[tuple[str, bool, bool]]] = {}


def _null_rules(cls: type[Any]) -> list[tuple[str, bool, bool]]:
    """(field, may be null, holds entities) for each field of ``cls``."""
    rules = _NULL_RULES.get(cls)
    if rules is None:
        rules = []
        for name, hint in typing.get_type_hints(cls).items():
            if name.startswith("__"):
                continue
            args = typing.get_args(hint)
            nullable = type(None) in args
            inner = next((arg for arg in args if arg is not type(None)), hint) if nullable else hint
            element = typing.get_args(inner)[0] if typing.get_origin(inner) is tuple else inner
            rules.append((name, nullable, dataclasses.is_dataclass(element)))
        _NULL_RULES[cls] = rules
    return rules


def encode_response(correlation_id: int, body: Any) -> bytes:
    """A whole response frame: size, header, body (a kio response entity)."""
    out = io.BytesIO()
    out.write(b"\0\0\0\0")
    out.write(_SIZE.pack(correlation_id))
    if body.__flexible__ and body.__api_key__ != API_VERSIONS:
        out.write(b"\0")  # no tagged fields in the header
    writer = _WRITERS.get(type(body))
    if writer is None:
        writer = _WRITERS[type(body)] = entity_writer(type(body))
    writer(out, body)
    frame = out.getbuffer()
    _SIZE.pack_into(frame, 0, len(frame) - 4)
    return bytes(frame)


def encode_raw_response(correlation_id: int, flexible: bool, body: bytes) -> bytes:
    """A response frame around a body a raw handler encoded itself."""
    header = _SIZE.pack(correlation_id) + (b"\0" if flexible else b"")
    return _SIZE.pack(len(header) + len(body)) + header + body


def build(response_cls: type[Any], struct_name: str | None = None, /, **values: Any) -> Any:
    """``response_cls`` (or its nested struct ``struct_name``, from the same
    version's module) with ``values``, minus the fields this version does
    not have: one handler serves every version of an API."""
    cls = response_cls if struct_name is None else getattr(sys.modules[response_cls.__module__], struct_name)
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = frozenset(field.name for field in dataclasses.fields(cls))
    return cls(**{name: value for name, value in values.items() if name in names})


_FIELD_NAMES: dict[type[Any], frozenset[str]] = {}


def error_response(cls: type[Any], code: ErrorCode) -> Any:
    """A response of ``cls`` that carries nothing but ``code``: every
    error code field set to it, lists empty, the rest zero. What an API or
    version that is not served, or a request that cannot be read, gets."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        kind = field.metadata.get("kafka_type")
        if kind == "error_code":
            values[field.name] = code
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            values[field.name] = _zero(kind, hints[field.name], code)
    return cls(**values)


def _zero(kind: str | None, hint: Any, code: ErrorCode) -> Any:
    if typing.get_origin(hint) is tuple:
        return ()
    args = typing.get_args(hint)
    if type(None) in args:
        return None
    if dataclasses.is_dataclass(hint):
        return error_response(hint, code)  # type: ignore[arg-type]
    if kind in ("timedelta_i32", "timedelta_i64"):
        return datetime.timedelta(0)
    if kind == "bool":
        return False
    if kind == "string":
        return ""
    if kind in ("bytes", "records"):
        return b""
    if kind == "uuid":
        return uuid.UUID(int=0)
    if kind == "float64":
        return 0.0
    return 0
