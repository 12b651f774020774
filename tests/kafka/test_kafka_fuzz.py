"""A fuzz target for the Kafka request decoder and the handlers behind it.

Hypothesis writes requests of every served API at every served version
(kio's types give the strategies), then mangles some: bodies cut short or
followed by junk, bytes flipped, unknown keys and versions, sizes under a
header or claiming up to 2 GiB, all fed in chunks split anywhere. Whatever
comes, the engine raises nothing, answers every request it answers in
request order and in that API's response at the version asked (or v0 for
ApiVersions beyond v3), and otherwise closes the connection. Over a socket,
a connection that sends garbage does not disturb another one.

``make fuzz`` runs a long campaign (AMQLITE_FUZZ_EXAMPLES); the suite runs
a slice.
"""

from __future__ import annotations

import io
import os
import socket
import struct
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kio.serial import entity_writer
from kio.static.primitive import Records
from structlog.testing import capture_logs

from amqlite.core.broker import Broker
from amqlite.kafka.protocol import request_type
from amqlite.kafka.registry import APIS
from kafka_support import KafkaServerThread, decode_response, engine, raw_frame, request, request_frame, split_responses

_LONG_RUN = os.environ.get("AMQLITE_FUZZ_EXAMPLES")
st.register_type_strategy(Records, st.binary(max_size=200).map(Records))

SERVED = [(api.key, version) for api in APIS.values() for version in range(api.min_version, api.max_version + 1)]


def fuzz_settings(default: int) -> Any:
    return settings(max_examples=int(_LONG_RUN) if _LONG_RUN else default, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


@st.composite
def well_formed(draw: st.DrawFn) -> tuple[int, int, bytes]:
    """(key, version, body) of a request a client could send."""
    key, version = draw(st.sampled_from(SERVED))
    cls = request_type(key, version)
    assert cls is not None
    out = io.BytesIO()
    entity_writer(cls)(out, draw(st.from_type(cls)))
    return key, version, out.getvalue()


@st.composite
def frames(draw: st.DrawFn, correlation_id: int) -> tuple[int, int, bytes]:
    """(key, version, whole frame) of one request, mangled or not."""
    kind = draw(st.sampled_from(["valid", "valid", "cut", "junk", "flip", "unknown", "size"]))
    if kind == "unknown":
        key = draw(st.integers(-3, 120))
        version = draw(st.integers(-2, 30))
        return key, version, raw_frame(key, version, correlation_id, draw(st.binary(max_size=64)))
    key, version, body = draw(well_formed())
    header = struct.pack(">hhih", key, version, correlation_id, -1)
    if request_type(key, version).__flexible__:  # type: ignore[union-attr]
        header += b"\0"
    if kind == "cut":
        body = body[:draw(st.integers(0, max(0, len(body) - 1)))]
    elif kind == "junk":
        body += draw(st.binary(min_size=1, max_size=32))
    elif kind == "flip" and body:
        at = draw(st.integers(0, len(body) - 1))
        body = body[:at] + bytes([body[at] ^ draw(st.integers(1, 255))]) + body[at + 1:]
    data = header + body
    size = len(data)
    if kind == "size":
        size = draw(st.sampled_from([2**31 - 1, 2**31 - 2, 1 << 30, 200 * 1024 * 1024, -1, 0, 3, 7]))
    return key, version, struct.pack(">i", size) + data


def _check_answers(sent: list[tuple[int, int]], output: bytes) -> None:
    """Responses come in request order, each whole, each in its request's
    response type at the version asked."""
    next_request = 0
    for frame in split_responses(output):
        (correlation_id,) = struct.unpack_from(">i", frame)
        assert next_request <= correlation_id < len(sent), "answered out of order, twice, or never asked"
        next_request = correlation_id + 1
        key, version = sent[correlation_id]
        if key == 18 and version > 3:
            version = 0  # KIP-511
        assert decode_response(frame, key, version)[0] == correlation_id


@fuzz_settings(200)
@given(st.data())
def test_any_bytes_get_kafka_errors_or_a_close_never_an_exception(data: st.DataObject) -> None:
    conn = engine(Broker())
    count = data.draw(st.integers(1, 6))
    sent, stream = [], b""
    for correlation_id in range(count):
        key, version, frame = data.draw(frames(correlation_id))
        sent.append((key, version))
        stream += frame
    output = b""
    position = 0
    while position < len(stream) and not conn.closed:
        step = data.draw(st.integers(1, max(1, len(stream) - position)))
        conn.receive_data(stream[position:position + step], 0.0)
        position += step
        output += conn.data_to_send(0.0)
    conn.tick(60.0)  # long polls and handshake deadlines come due
    output += conn.data_to_send(60.0)
    _check_answers(sent, output)


@fuzz_settings(100)
@given(well_formed())
def test_every_well_formed_request_is_answered_without_a_handler_failure(sent: tuple[int, int, bytes]) -> None:
    key, version, body = sent
    conn = engine(Broker())
    header = struct.pack(">hhih", key, version, 0, 2) + b"fz"
    if request_type(key, version).__flexible__:  # type: ignore[union-attr]
        header += b"\0"
    with capture_logs() as logs:
        conn.receive_data(struct.pack(">i", len(header) + len(body)) + header + body, 0.0)
        conn.tick(60.0)
    assert not [entry for entry in logs if entry["event"] == "kafka.handler_failed"], logs
    _check_answers([(key, version)], conn.data_to_send(60.0))


def test_two_gib_claims_close_only_that_connection(kafka_server: KafkaServerThread) -> None:
    versions = request_frame(request(18, 3, client_software_name="t", client_software_version="1"), 9)
    with socket.create_connection(("127.0.0.1", kafka_server.kafka_port), timeout=10) as good, \
            socket.create_connection(("127.0.0.1", kafka_server.kafka_port), timeout=10) as bad:
        good.sendall(versions[:7])  # half a request, finished after the other connection's garbage
        bad.sendall(struct.pack(">i", 2**31 - 1) + b"\0" * 64)
        assert bad.recv(10) == b""  # closed
        good.sendall(versions[7:])
        (size,) = struct.unpack(">i", _read(good, 4))
        assert decode_response(_read(good, size), 18, 3)[1].error_code == 0


def _read(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "connection closed"
        data += chunk
    return data
