"""Fuzzing the AMQP server: random and mutated input must never break it.

(a) The sans-IO engine gets random bytes, mutated copies of a valid session
    (bytes flipped, inserted, deleted; fed in random chunks) and random but
    well-formed method sequences with hostile arguments. It must never raise,
    everything it sends must decode, and it must end either still usable or
    closed with a connection.close carrying a proper reply code (never 541,
    which would mean a bug was caught only by the safety net).
(b) A live server gets the same over sockets. It must never crash or hang,
    answer only with well-formed frames (or its protocol header), and a
    healthy pika connection opened before the fuzzing must still work after.

The default run is short (about ten seconds in all). For a long campaign set
AMQLITE_FUZZ_EXAMPLES, e.g. ``AMQLITE_FUZZ_EXAMPLES=20000 pytest tests/server/test_fuzz.py``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import socket
import struct
import time
from decimal import Decimal
from typing import Any, Iterator

import pika
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from amqlite.amqp import spec
from amqlite.amqp.engine import ServerConnection, State
from amqlite.amqp.frames import PROTOCOL_HEADER, FrameDecoder, MethodFrame
from amqlite.amqp.properties import BasicProperties
from amqlite.auth import Users
from amqlite.config import Settings
from amqlite.core.broker import Broker
from amqlite.core import errors
from amqlite.core.errors import AMQPError

from .conftest import ServerThread, start_amqlite
from .rawamqp import HEARTBEAT, body, header, method, plain

_LONG_RUN = os.environ.get("AMQLITE_FUZZ_EXAMPLES")


def fuzz_settings(default: int) -> settings:
    return settings(
        max_examples=int(_LONG_RUN) if _LONG_RUN else default,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
    )


CONNECTION_CODES = {320, 402, 403, 501, 502, 503, 504, 505, 506, 530, 540}
CHANNEL_CODES = {403, 404, 405, 406, 312, 313, 311}


# -- input ---------------------------------------------------------------------------

PROPS = BasicProperties(content_type="text/plain", delivery_mode=2, priority=3,
                        headers={"x-delay": 10, "h": "v"}, expiration="60000", message_id="m1")


def publish(channel: int, routing_key: str, data: bytes, exchange: str = "", properties: BasicProperties | None = None,
            **options: Any) -> bytes:
    out = method(channel, spec.Basic.Publish(exchange, routing_key, **options)) + header(channel, len(data), properties)
    return out + body(channel, data) if data else out


#: One valid session touching most of the protocol; the seed for mutations.
VALID_SESSION: list[bytes] = [
    PROTOCOL_HEADER,
    method(0, plain()),
    method(0, spec.Connection.TuneOk(2047, 131072, 60)),
    method(0, spec.Connection.Open("/")),
    method(1, spec.Channel.Open()),
    method(1, spec.Queue.Declare("q", arguments={"x-max-length": 10, "x-message-ttl": 60000, "x-max-priority": 5})),
    method(1, spec.Exchange.Declare("ex", "topic")),
    method(1, spec.Queue.Bind("q", "ex", "a.#")),
    method(1, spec.Confirm.Select()),
    publish(1, "q", b"hello", properties=PROPS),
    publish(1, "a.b", b"x" * 300, exchange="ex", mandatory=True),
    publish(1, "nowhere", b"", mandatory=True),
    method(1, spec.Basic.Qos(0, 5, False)),
    method(1, spec.Basic.Consume("q", "c")),
    method(1, spec.Basic.Ack(1)),
    method(1, spec.Basic.Nack(2, False, True)),
    method(1, spec.Basic.Get("q")),
    HEARTBEAT,
    method(2, spec.Channel.Open()),
    method(2, spec.Tx.Select()),
    publish(2, "q", b"tx"),
    method(2, spec.Tx.Commit()),
    method(1, spec.Basic.Cancel("c")),
    method(1, spec.Queue.Purge("q")),
    method(1, spec.Queue.Delete("q")),
    method(1, spec.Channel.Close(200, "")),
    method(0, spec.Connection.Close(200, "")),
]
VALID_BYTES = b"".join(VALID_SESSION)
HANDSHAKE = b"".join(VALID_SESSION[:5])


@st.composite
def mutated_session(draw: st.DrawFn) -> bytes:
    data = bytearray(VALID_BYTES[: draw(st.integers(8, len(VALID_BYTES)))])
    for _ in range(draw(st.integers(1, 6))):
        where = draw(st.integers(0, len(data)))
        how = draw(st.sampled_from(["flip", "set", "insert", "delete", "duplicate"]))
        if how == "flip" and where < len(data):
            data[where] ^= 1 << draw(st.integers(0, 7))
        elif how == "set" and where < len(data):
            data[where] = draw(st.sampled_from([0, 1, 2, 3, 8, 0x7F, 0xCE, 0xFF]))
        elif how == "insert":
            data[where:where] = draw(st.binary(min_size=1, max_size=12))
        elif how == "delete":
            del data[where : where + draw(st.integers(1, 12))]
        elif how == "duplicate":
            data[where:where] = data[where : where + draw(st.integers(1, 40))]
    return bytes(data)


random_input = st.one_of(
    st.binary(max_size=200),
    st.binary(max_size=200).map(lambda b: PROTOCOL_HEADER + b),
    st.binary(max_size=200).map(lambda b: HANDSHAKE + b),
)

# Hostile but well-formed arguments: the values handlers and the core validate.
NAMES = st.sampled_from(["", "q", "q2", "ex", "amq.direct", "amq.topic", "amq.headers", "amq.fanout", "amq.x", "c",
                        "c2", "#"])
ARG_KEYS = st.sampled_from([
    "x-message-ttl", "x-expires", "x-max-length", "x-max-length-bytes", "x-overflow", "x-dead-letter-exchange",
    "x-dead-letter-routing-key", "x-max-priority", "x-queue-type", "x-single-active-consumer", "x-delivery-limit",
    "x-delayed-type", "x-delayed-retry-min", "x-delayed-retry-multiplier", "x-delayed-retry-max", "x-match",
    "x-priority", "alternate-exchange", "x-consumer-timeout", "x-queue-mode", "x-cancel-on-ha-failover", "other",
])
ARG_VALUES = st.recursive(
    st.one_of(
        st.integers(-(2**63), 2**63 - 1), st.sampled_from([0, 1, -1, 2**31, 2**32 + 1]), st.booleans(), st.none(),
        st.floats(), st.sampled_from([math.nan, math.inf, -0.0]), st.text(max_size=10), st.binary(max_size=10),
        st.sampled_from(["drop-head", "reject-publish", "reject-publish-dlx", "classic", "quorum", "stream",
                         "direct", "topic", "all", "any", "lazy"]),
        st.builds(lambda m, s: Decimal(m).scaleb(-s), st.integers(-(2**31), 2**31 - 1), st.integers(0, 9)),
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=3,
)
ARG_TABLES = st.dictionaries(ARG_KEYS, ARG_VALUES, max_size=3)
FIELDS = {
    "octet": st.integers(0, 255),
    "short": st.one_of(st.integers(0, 5), st.integers(0, 2**16 - 1)),
    "long": st.one_of(st.integers(0, 5), st.integers(0, 2**32 - 1)),
    "longlong": st.one_of(st.integers(0, 5), st.integers(0, 2**64 - 1)),
    "shortstr": st.one_of(NAMES, st.text(max_size=20)),
    "longstr": st.binary(max_size=20),
    "bit": st.booleans(),
    "table": ARG_TABLES,
}
# Server-to-client methods are in here too: a client must not send them, and the server must say so politely.
ALL_METHODS = sorted(spec.METHODS.values(), key=lambda m: (m.class_id, m.method_id))


def any_method(cls: type[spec.Method]) -> st.SearchStrategy[spec.Method]:
    return st.builds(cls, **{f.name: FIELDS[str(f.type)] for f in dataclasses.fields(cls)})  # type: ignore[arg-type]


hostile_properties = st.builds(
    BasicProperties,
    headers=st.none() | st.dictionaries(st.sampled_from(["x-delay", "x-death", "CC", "BCC", "x-match", "h"]),
                                        ARG_VALUES, max_size=3),
    delivery_mode=st.none() | st.integers(0, 255),
    priority=st.none() | st.integers(0, 255),
    expiration=st.none() | st.sampled_from(["0", "1", "-1", "abc", "99999999999999999999", ""]),
    user_id=st.none() | st.sampled_from(["guest", "other"]),
    reply_to=st.none() | st.sampled_from(["amq.rabbitmq.reply-to", "q"]),
)


CLIENT_METHODS = [
    spec.Exchange.Declare, spec.Exchange.Delete, spec.Exchange.Bind, spec.Exchange.Unbind,
    spec.Queue.Declare, spec.Queue.Bind, spec.Queue.Purge, spec.Queue.Delete, spec.Queue.Unbind,
    spec.Basic.Qos, spec.Basic.Consume, spec.Basic.Cancel, spec.Basic.Get, spec.Basic.Ack, spec.Basic.Reject,
    spec.Basic.Nack, spec.Basic.Recover, spec.Basic.RecoverAsync, spec.Confirm.Select, spec.Tx.Select,
    spec.Tx.Commit, spec.Tx.Rollback, spec.Channel.Flow, spec.Channel.Close, spec.Channel.CloseOk, spec.Channel.Open,
]
#: After the handshake: a second channel, two queues and an exchange to route through.
SETUP = b"".join([
    method(2, spec.Channel.Open()),
    method(1, spec.Queue.Declare("q")),
    method(1, spec.Queue.Declare("q2", arguments={"x-max-length": 3, "x-dead-letter-exchange": "ex"})),
    method(1, spec.Exchange.Declare("ex", "topic")),
    method(1, spec.Queue.Bind("q", "ex", "#")),
    method(2, spec.Basic.Consume("q2", "c2")),
])


@st.composite
def method_sequence(draw: st.DrawFn) -> bytes:
    """A valid handshake and setup, then well-formed frames in a random order with hostile arguments."""
    out = [HANDSHAKE, SETUP]
    for _ in range(draw(st.integers(1, 20))):
        channel = draw(st.sampled_from([1, 1, 1, 2, 2, 0, 5]))
        kind = draw(st.sampled_from(["method", "method", "method", "publish", "publish", "content", "heartbeat"]))
        try:
            if kind == "method":
                pool = CLIENT_METHODS if draw(st.integers(0, 9)) else ALL_METHODS
                out.append(method(channel, draw(any_method(draw(st.sampled_from(pool))))))
            elif kind == "publish":
                data = draw(st.binary(max_size=50))
                out.append(publish(channel, draw(NAMES), data, exchange=draw(NAMES),
                                   properties=draw(hostile_properties), mandatory=draw(st.booleans())))
            elif kind == "content":
                out.append(draw(st.sampled_from([header(channel, 3), body(channel, b"abc"), header(channel, 0)])))
            else:
                out.append(HEARTBEAT)
        except AMQPError:  # a value the wire cannot carry
            pass
    return b"".join(out)


def chunked(data: bytes, cuts: list[int]) -> Iterator[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for start, end in zip(points, points[1:]):
        yield data[start:end]


# -- checking what comes out -------------------------------------------------------


def check_output(output: bytes) -> list[Any]:
    """Everything the server said must decode; connection.close must carry a proper code.

    Returns the decoded frames (empty when the answer was our protocol header).
    """
    if output.startswith(b"AMQP"):
        assert output == PROTOCOL_HEADER, output
        return []
    decoder = FrameDecoder(0)
    decoder.feed(output)
    frames = []
    while (f := decoder.next_frame()) is not None:
        frames.append(f)
    assert decoder._pos == len(decoder._buf) and not decoder._pending, "a partial frame was sent"
    closed = False
    for f in frames:
        if isinstance(f, MethodFrame):
            m = f.method
            assert not closed or isinstance(m, spec.Connection.CloseOk), f"{m!r} after connection.close"
            if isinstance(m, spec.Connection.Close):
                assert m.reply_code in CONNECTION_CODES, m
                closed = True
            elif isinstance(m, spec.Channel.Close):
                assert m.reply_code in CHANNEL_CODES, m
    if frames:
        first = frames[0]
        assert isinstance(first, MethodFrame) and isinstance(first.method, spec.Connection.Start)
    return frames


def run_engine(data: bytes, cuts: list[int], broker: Broker | None = None) -> tuple[ServerConnection, list[Any]]:
    broker = broker or Broker(max_message_size=10_000)
    conn = ServerConnection(broker, Users.from_settings(Settings()), now=0.0, peer_loopback=True, peer="fuzz")
    output = []
    now = 0.0
    for i, chunk in enumerate(chunked(data, cuts)):
        conn.receive_data(chunk, now)
        output.append(conn.data_to_send(now))
        deadline = conn.next_deadline()
        if deadline is not None and i % 3 == 2:
            now = max(now, deadline)
            conn.tick(now)
            output.append(conn.data_to_send(now))
        now += 0.01
    broker.tick(now + 3600)
    output.append(conn.data_to_send(now))
    frames = check_output(b"".join(output))
    if currently_in_test_context():
        event(f"ended {conn.state.name}; closes {sorted(set(close_codes(frames)))}")
    closes = [f.method for f in frames if isinstance(f, MethodFrame) and f.method.class_id == 10
              and isinstance(f.method, (spec.Connection.Close, spec.Connection.CloseOk))]
    if conn.state is State.CLOSING:
        assert closes and isinstance(closes[-1], spec.Connection.Close), "closing without a connection.close"
    # CLOSED without a close of ours is fine: a bad protocol header, or the client's own
    # close or close-ok (RabbitMQ answers an unsolicited close-ok with 504; amqlite just ends).
    conn.connection_lost(now)
    return conn, frames


def assert_broker_healthy(broker: Broker) -> None:
    """A fresh, well-behaved connection to the same broker still works."""
    conn, frames = run_engine(
        b"".join(VALID_SESSION[:5])
        + method(1, spec.Queue.Declare("health", exclusive=True))
        + publish(1, "health", b"ok")
        + method(1, spec.Basic.Get("health", no_ack=True)),
        [],
        broker,
    )
    methods = [f.method for f in frames if isinstance(f, MethodFrame)]
    assert isinstance(methods[-1], spec.Basic.GetOk), methods


# -- (a) the sans-IO engine ----------------------------------------------------------


@fuzz_settings(300)
@given(data=random_input, cuts=st.lists(st.integers(0, 1000), max_size=5))
def test_engine_survives_random_bytes(data: bytes, cuts: list[int]) -> None:
    _, frames = run_engine(data, cuts)
    assert errors.INTERNAL_ERROR not in close_codes(frames)


@fuzz_settings(300)
@given(data=mutated_session(), cuts=st.lists(st.integers(0, 5000), max_size=8))
def test_engine_survives_mutated_sessions(data: bytes, cuts: list[int]) -> None:
    broker = Broker(max_message_size=10_000)
    run_engine(data, cuts, broker)
    assert_broker_healthy(broker)


@fuzz_settings(150)
@given(data=method_sequence(), cuts=st.lists(st.integers(0, 5000), max_size=4))
def test_engine_survives_hostile_method_sequences(data: bytes, cuts: list[int]) -> None:
    broker = Broker(max_message_size=10_000)
    run_engine(data, cuts, broker)
    assert_broker_healthy(broker)


def test_the_valid_session_is_valid() -> None:
    conn, frames = run_engine(VALID_BYTES, [])
    assert conn.state is State.CLOSED
    assert not any(isinstance(f, MethodFrame) and isinstance(f.method, (spec.Connection.Close, spec.Channel.Close))
                   and f.method.reply_code != 200 for f in frames)
    assert isinstance(frames[-1].method, spec.Connection.CloseOk)


# -- (b) a live server ---------------------------------------------------------------


@pytest.fixture(scope="module")
def live() -> Iterator[tuple[ServerThread, pika.BlockingConnection]]:
    server = start_amqlite(max_message_size=10_000)
    healthy = server.connect()
    try:
        yield server, healthy
        # The server is alive and the healthy connection still works.
        channel = healthy.channel()
        queue = channel.queue_declare("", exclusive=True).method.queue
        channel.basic_publish("", queue, b"still here")
        _, _, got = channel.basic_get(queue, auto_ack=True)
        assert got == b"still here"
        # Every fuzzing socket is gone: nothing hangs around.
        deadline = time.monotonic() + 8
        while server.call(lambda: len(server.server.connections)) > 1:
            assert time.monotonic() < deadline, "fuzzed connections still open on the server"
            time.sleep(0.05)
        healthy.close()
    finally:
        server.stop()


def fire(port: int, data: bytes, cuts: list[int]) -> bytes:
    """Send ``data`` in chunks, collect the answer until the server closes or goes quiet."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    received = []
    try:
        try:
            for chunk in chunked(data, cuts):
                sock.sendall(chunk)
        except OSError:
            pass  # the server closed on us mid-way: fine
        sock.settimeout(0.05)
        while True:
            try:
                got = sock.recv(65536)
            except socket.timeout:
                break  # still open and quiet: it keeps going
            except OSError:
                break
            if not got:
                break
            received.append(got)
    finally:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    return b"".join(received)


def close_codes(frames: list[Any]) -> list[int]:
    """Reply codes of every connection.close and channel.close among ``frames``."""
    return [f.method.reply_code for f in frames if isinstance(f, MethodFrame)
            and isinstance(f.method, (spec.Connection.Close, spec.Channel.Close))]


def check_live(live: tuple[ServerThread, pika.BlockingConnection], data: bytes, cuts: list[int]) -> list[int]:
    """Fire ``data`` at the live server; returns the close codes it answered with."""
    server, healthy = live
    output = fire(server.port, data, cuts)
    # A frame may be cut where we stopped listening; whole frames before it must be well-formed.
    decoder = FrameDecoder(0)
    if not output.startswith(b"AMQP"):
        decoder.feed(output)
        while decoder.next_frame() is not None:
            pass
        complete = len(output) - (len(decoder._buf) - decoder._pos) - decoder._pending_size
        output = output[:complete]
    frames = check_output(output)
    assert server._thread.is_alive() and server._error is None
    healthy.process_data_events(0)
    return close_codes(frames)


@fuzz_settings(30)
@given(data=st.one_of(random_input, mutated_session()), cuts=st.lists(st.integers(0, 5000), max_size=4))
def test_live_server_survives_random_and_mutated_input(
    live: tuple[ServerThread, pika.BlockingConnection], data: bytes, cuts: list[int]
) -> None:
    assert errors.INTERNAL_ERROR not in check_live(live, data, cuts)


@fuzz_settings(30)
@given(data=method_sequence(), cuts=st.lists(st.integers(0, 5000), max_size=4))
def test_live_server_survives_hostile_method_sequences(
    live: tuple[ServerThread, pika.BlockingConnection], data: bytes, cuts: list[int]
) -> None:
    assert errors.INTERNAL_ERROR not in check_live(live, data, cuts)
