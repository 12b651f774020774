"""Limits a live amqlite server enforces: channel_max, max_connections, the
handshake timeout, heartbeats, and bounded memory for clients that do not read.

channel_max counts open channels, as RabbitMQ does (and aiormq's suite
relies on): any channel number up to 65535 opens while fewer than
channel_max channels are open.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import time
from typing import Any, Iterator

import pika

import pytest

from amqlite.amqp import spec
from amqlite.amqp.frames import BodyFrame, HeartbeatFrame, MethodFrame
from amqlite.amqp import engine
from amqlite.server import listener
from amqlite.server.memory import memory_in_use

from .conftest import ServerThread, start_amqlite
from .rawamqp import HEARTBEAT, Closed, RawClient, body, header, method, publish


@pytest.fixture
def server() -> Iterator[ServerThread]:
    server = start_amqlite()
    yield server
    server.stop()


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def pika_roundtrip(server: ServerThread) -> None:
    """A separate, well-behaved client still gets its work done."""
    connection = server.connect()
    try:
        channel = connection.channel()
        queue = channel.queue_declare("", exclusive=True).method.queue
        channel.basic_publish("", queue, b"ping")
        _, _, body = channel.basic_get(queue, auto_ack=True)
        assert body == b"ping"
    finally:
        connection.close()


# -- channel_max ---------------------------------------------------------------


def test_channel_max_counts_open_channels_not_numbers(server: ServerThread) -> None:
    with RawClient("127.0.0.1", server.port) as client:
        client.handshake(channel_max=10)
        client.open_channel(65535)  # RabbitMQ opens it too
        for number in range(1, 10):
            client.open_channel(number)
        client.send_method(10, spec.Channel.Open())
        close = client.expect_connection_close()
        assert close.reply_code == 530
        assert close.reply_text == "NOT_ALLOWED - number of channels opened (10) has reached the negotiated channel_max (10)"
        assert client.wait_closed()


def test_a_closed_channel_frees_its_place_under_channel_max(server: ServerThread) -> None:
    with RawClient("127.0.0.1", server.port) as client:
        client.handshake(channel_max=2)
        client.open_channel(2047)
        client.open_channel(2048)
        client.send_method(2048, spec.Channel.Close(200, "bye", 0, 0))
        client.expect(spec.Channel.CloseOk, 2048)
        client.open_channel(4000)
        assert client.call(4000, spec.Queue.Declare("", exclusive=True), spec.Queue.DeclareOk).queue


# -- max_connections -------------------------------------------------------------


def test_max_connections_refuses_the_third() -> None:
    server = start_amqlite(max_connections=2)
    try:
        # One after the other: one address may hold only half of max_connections before login.
        first = RawClient("127.0.0.1", server.port)
        first.handshake()
        second = RawClient("127.0.0.1", server.port)
        second.handshake()
        with RawClient("127.0.0.1", server.port) as third:
            try:
                third.send(b"AMQP\x00\x00\x09\x01")
            except OSError:
                pass
            assert third.wait_closed(2)
            assert not third.decoder.next_frame()  # not even connection.start
        # The first two are unaffected; once one leaves, there is room again.
        first.open_channel(1)
        second.close()
        wait_for(lambda: server.call(lambda: len(server.server.connections)) == 1)
        with RawClient("127.0.0.1", server.port) as fourth:
            fourth.handshake()
        first.close()
    finally:
        server.stop()


# -- handshake timeout ---------------------------------------------------------------


def test_silent_socket_is_closed_after_the_handshake_timeout() -> None:
    server = start_amqlite(handshake_timeout=0.5)
    try:
        silent = RawClient("127.0.0.1", server.port)
        stalled = RawClient("127.0.0.1", server.port)
        stalled.start()  # header sent, start-ok never comes
        opened = RawClient("127.0.0.1", server.port)
        opened.handshake()
        began = time.monotonic()
        assert silent.wait_closed(3) and stalled.wait_closed(3)
        assert 0.3 < time.monotonic() - began < 2.0
        # A connection that finished its handshake in time stays.
        opened.open_channel(1)
        assert server.call(lambda: len(server.server.connections)) == 1
        for client in (silent, stalled, opened):
            client.close()
    finally:
        server.stop()


def test_a_client_that_never_sends_close_ok_is_dropped_after_the_close_timeout(
    server: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine, "CLOSE_TIMEOUT", 0.5)  # 5 s by default; read live by the server thread
    with RawClient("127.0.0.1", server.port) as client:
        client.handshake()
        client.send_method(3, spec.Queue.Declare("q"))  # 504: channel 3 is not open
        assert client.expect(spec.Connection.Close).reply_code == 504
        began = time.monotonic()
        client.send_method(0, spec.Connection.Open("/"))  # anything but close-ok is ignored now
        assert client.wait_closed(3)
        assert 0.3 < time.monotonic() - began < 2.0


# -- heartbeats ----------------------------------------------------------------------


def test_heartbeats_when_idle_and_a_silent_client_is_dropped_with_its_messages_requeued(server: ServerThread) -> None:
    with RawClient("127.0.0.1", server.port) as setup:
        setup.handshake()
        setup.open_channel(1)
        setup.call(1, spec.Queue.Declare("hb"), spec.Queue.DeclareOk)
        setup.send(publish(1, "hb", b"held"))
        setup.call(1, spec.Queue.Declare("hb", passive=True), spec.Queue.DeclareOk)

        client = RawClient("127.0.0.1", server.port)
        client.handshake(heartbeat=1)
        client.open_channel(1)
        client.call(1, spec.Basic.Consume("hb", "c"), spec.Basic.ConsumeOk)
        assert client.read_method().method.delivery_tag == 1
        began = time.monotonic()
        heartbeats = 0
        with pytest.raises(Closed):
            while True:
                f = client.read_frame(5)
                if isinstance(f, HeartbeatFrame):
                    heartbeats += 1
        elapsed = time.monotonic() - began
        client.close()
        assert heartbeats >= 2  # every half interval while idle
        assert 1.5 < elapsed < 3.5  # about two intervals of silence
        # The unacked delivery went back to the queue, flagged redelivered.
        setup.send_method(1, spec.Basic.Get("hb", no_ack=True))
        get_ok = setup.expect(spec.Basic.GetOk, 1)
        assert get_ok.redelivered is True


def test_a_client_sending_heartbeats_stays(server: ServerThread) -> None:
    with RawClient("127.0.0.1", server.port) as client:
        client.handshake(heartbeat=1)
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            client.send(HEARTBEAT)
            time.sleep(0.3)
        client.open_channel(1)  # still served after more than two heartbeat intervals
        assert client.call(1, spec.Queue.Declare("", exclusive=True), spec.Queue.DeclareOk).queue


# -- clients that do not read ----------------------------------------------------------


def test_slow_reader_memory_stays_bounded_and_others_carry_on(server: ServerThread) -> None:
    total, size = 20_000, 1000
    consumer = RawClient("127.0.0.1", server.port, rcvbuf=4096)
    consumer.handshake()
    consumer.open_channel(1)
    consumer.call(1, spec.Queue.Declare("slow"), spec.Queue.DeclareOk)
    consumer.call(1, spec.Basic.Consume("slow", "c"), spec.Basic.ConsumeOk)
    # From here on the consumer reads nothing.
    with RawClient("127.0.0.1", server.port) as publisher:
        publisher.handshake()
        publisher.open_channel(1)
        batch = publish(1, "slow", b"x" * size) * 1000
        for _ in range(total // 1000):
            publisher.send(batch)
        publisher.call(1, spec.Queue.Declare("slow", passive=True), spec.Queue.DeclareOk)

        def inspect() -> tuple[int, int, int, int, int]:
            conn = next(c for c in server.server.connections if 1 in c._channels and c._channels[1].core.consumers)
            core = conn._channels[1].core
            queue = core.vhost.queues["slow"]
            return core.buffered, core.buffer_limit, queue.message_count, len(core.unacked), conn.buffered_output

        time.sleep(0.3)
        buffered, limit, ready, unacked, output = server.call(inspect)
        assert buffered <= limit
        assert ready + unacked == total
        assert ready >= total // 2  # the rest waits in the queue, ready
        assert output < 64 * 1024  # no replies pile up either
        # Other connections are not held up.
        pika_roundtrip(server)
        ok = publisher.call(1, spec.Queue.Declare("slow", passive=True), spec.Queue.DeclareOk)
        assert ok.message_count == ready
    # Once it reads, everything arrives, in order.
    tags = bodies = 0
    while bodies < total:
        f = consumer.read_frame()
        if isinstance(f, MethodFrame):
            assert isinstance(f.method, spec.Basic.Deliver)
            tags += 1
            assert f.method.delivery_tag == tags
        elif isinstance(f, BodyFrame):
            bodies += 1
    consumer.send_method(1, spec.Basic.Ack(total, multiple=True))
    assert consumer.call(1, spec.Queue.Declare("slow", passive=True), spec.Queue.DeclareOk).message_count == 0
    consumer.close()


def test_publisher_that_never_reads_is_throttled_at_the_output_high_water_mark(
    server: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    high_water = 256 * 1024
    monkeypatch.setattr(engine, "OUTPUT_HIGH_WATER", high_water)  # the server thread reads it live
    size = 4000
    with RawClient("127.0.0.1", server.port, rcvbuf=4096) as publisher:
        publisher.handshake()
        publisher.open_channel(1)
        publisher.call(1, spec.Confirm.Select(), spec.Confirm.SelectOk)
        # Mandatory and unroutable: each publish earns a basic.return (with the body) and an ack.
        message = publish(1, "nowhere", b"x" * size, mandatory=True)
        batch = message * 64
        limit = 256 * 1024 * 1024
        sent, _ = publisher.send_until_stalled(batch, limit)
        assert sent < limit, "the server never stopped reading"

        def output() -> int:
            conn = next(c for c in server.server.connections if 1 in c._channels and c._channels[1].core.confirm)
            return conn.buffered_output

        # The reader stopped past the mark, by at most what one read's worth of input produced.
        buffered = server.call(output)
        assert high_water < buffered <= high_water + 2 * listener._RECEIVE_SIZE
        pika_roundtrip(server)

        # Reading again lets it all through: a return and an ack for every complete publish.
        complete = sent // len(message)
        returns = last_ack = 0
        while last_ack < complete:
            f = publisher.read_frame()
            if isinstance(f, MethodFrame):
                if isinstance(f.method, spec.Basic.Return):
                    returns += 1
                    assert f.method.reply_code == 312
                elif isinstance(f.method, spec.Basic.Ack):
                    last_ack = f.method.delivery_tag
                else:
                    raise AssertionError(f.method)
        assert last_ack == complete and returns == complete


def test_connections_still_in_the_handshake_are_bounded() -> None:
    server = start_amqlite(max_unauthenticated=2)
    try:
        silent = [RawClient("127.0.0.1", server.port) for _ in range(2)]  # connected, never speak
        wait_for(lambda: server.call(lambda: server.server.handshaking) == 2)
        with RawClient("127.0.0.1", server.port) as third:
            assert third.wait_closed(2)  # refused at accept
        # An authenticated connection does not count: once one is through, room again.
        silent[0].handshake()
        wait_for(lambda: server.call(lambda: server.server.handshaking) == 1)
        with RawClient("127.0.0.1", server.port) as fourth:
            fourth.handshake()
        for client in silent:
            client.close()
    finally:
        server.stop()


def test_the_default_connection_limit_keeps_descriptors_for_the_store(tmp_path: Any) -> None:
    # ulimit -n 128: sockets used to take every descriptor, and the journal
    # could not open its next segment, so persistent publishes were nacked.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path / "broker.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "amqlite.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--data-dir", str(tmp_path / "data"), "--management-port", "0", "--prometheus-port", "0"],
        env={**os.environ, "AMQLITE_SEGMENT_SIZE": "65536", "AMQLITE_LOG_FORMAT": "json"},
        stderr=log.open("w"), preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128)))
    try:
        wait_for(lambda: '"broker.listening"' in log.read_text(), timeout=15)
        listening = next(json.loads(line) for line in log.read_text().splitlines() if '"broker.listening"' in line)
        assert listening["max_connections"] == int((128 - 100) * 0.9)
        publisher = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
        # Past the limit, and the descriptors; from three addresses, since one may take only half the limit.
        crowd = [socket.create_connection(("127.0.0.1", port), source_address=(f"127.0.0.{n}", 0))
                 for n in (2, 3, 4) for _ in range(50)]
        channel = publisher.channel()
        channel.queue_declare("durable", durable=True)
        channel.confirm_delivery()
        for _ in range(300):  # 300 x 1 KB over 64 KB segments: the journal opens new ones
            channel.basic_publish("", "durable", b"x" * 1000, pika.BasicProperties(delivery_mode=2))
        assert channel.queue_declare("durable", passive=True).method.message_count == 300
        publisher.close()
        for sock in crowd:
            sock.close()
        assert '"max_connections (25) reached"' in log.read_text()
    finally:
        process.terminate()
        process.wait()


def test_partial_messages_on_many_channels_are_bounded_per_connection() -> None:
    # 100 channels x 15 MiB partial bodies used to pin 1.5 GB for as long as
    # the connection lived. Now the connection is closed at 64 MiB.
    server = start_amqlite()
    before = memory_in_use()
    try:
        with RawClient("127.0.0.1", server.port) as hoarder:
            hoarder.handshake()
            chunk = b"x" * (131072 - 8)
            size = 15 * 2**20
            sent = 0
            try:
                for number in range(1, 101):
                    hoarder.send(method(number, spec.Channel.Open()) + method(number, spec.Basic.Publish("", "q"))
                                 + header(number, size))
                    for _ in range(size // len(chunk)):  # all but the last few KB of each
                        hoarder.send(body(number, chunk))
                        sent += len(chunk)
            except (OSError, Closed, TimeoutError):
                pass  # the server closed the connection while we were still sending
            while not isinstance(close := hoarder.read_method().method, spec.Connection.Close):
                assert isinstance(close, spec.Channel.OpenOk)
            assert close.reply_code == 530
            held = int(close.reply_text.split(" hold ")[1].split()[0])
            assert 64 * 2**20 < held <= 64 * 2**20 + len(chunk)  # closed at the first frame past the bound
            assert "more than max_content_in_flight (67108864)" in close.reply_text
        # The server (this process) did not keep the 1.5 GB it was sent.
        assert sent > 1024 * 2**20
        assert memory_in_use() - before < 128 * 2**20
        pika_roundtrip(server)  # everyone else carries on
        wait_for(lambda: server.call(lambda: len(server.server.connections)) == 0)
    finally:
        server.stop()
