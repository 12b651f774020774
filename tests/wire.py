"""Client-side AMQP frame builders shared by the protocol tests: the sans-IO
engine tests feed these bytes to the engine, the raw-socket tests to a
live server."""

from __future__ import annotations

import struct
from typing import Any

from amqlite.amqp import spec
from amqlite.amqp.frames import encode_method_frame
from amqlite.amqp.properties import BASIC_CLASS_ID, BasicProperties, encode_content_header
from amqlite.amqp.values import encode_table_entries

_HEAD = struct.Struct(">BHI")
HEARTBEAT = b"\x08\x00\x00\x00\x00\x00\x00\xce"


def method(channel: int, m: spec.Method) -> bytes:
    return encode_method_frame(channel, m)


def frame(kind: int, channel: int, payload: bytes, end: bytes = b"\xce") -> bytes:
    return _HEAD.pack(kind, channel, len(payload)) + payload + end


def header(channel: int, body_size: int, properties: BasicProperties | None = None) -> bytes:
    return frame(2, channel, encode_content_header(BASIC_CLASS_ID, body_size, properties or BasicProperties()))


def body(channel: int, data: bytes) -> bytes:
    return frame(3, channel, data)


def publish(channel: int, routing_key: str, data: bytes, exchange: str = "", *, frame_max: int = 131072,
            **options: Any) -> bytes:
    """basic.publish + header + body frames of at most frame_max (none for an empty body)."""
    out = [method(channel, spec.Basic.Publish(exchange, routing_key, **options)), header(channel, len(data))]
    step = frame_max - 8
    out += [body(channel, data[i : i + step]) for i in range(0, len(data), step)]
    return b"".join(out)


def plain(user: str = "guest", password: str = "guest") -> spec.Connection.StartOk:
    return spec.Connection.StartOk({"product": "test"}, "PLAIN", f"\0{user}\0{password}".encode())


def amqplain(user: str = "guest", password: str = "guest") -> spec.Connection.StartOk:
    response = encode_table_entries({"LOGIN": user, "PASSWORD": password})
    return spec.Connection.StartOk({"product": "test"}, "AMQPLAIN", response)
