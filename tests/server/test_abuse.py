"""The abuse campaign (issue 11): hostile bytes against amqlite and, where
it answers, the reference RabbitMQ, over raw sockets. Each case asserts
RabbitMQ's answer (or the deliberate difference, said where it is), that
another client is served afterwards, and for amqlite, which runs in this
process, that the memory the case made the broker take is given back.

``make fuzz`` runs every case AMQLITE_ABUSE_ROUNDS times (a leak would
add up); ``make test`` runs each once. docs/operations.md has the table.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import ssl
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import pika
import pytest
import trustme
from structlog.testing import capture_logs

from amqlite.amqp import spec
from amqlite.amqp.frames import MethodFrame
from amqlite.amqp.properties import BasicProperties
from amqlite.server.memory import memory_in_use

from .conftest import BrokerUnderTest, start_amqlite
from .pika_support import wait_for
from .rawamqp import Closed, RawClient, body, frame, header, method

ROUNDS = int(os.environ.get("AMQLITE_ABUSE_ROUNDS", "1"))
#: What one case may leave behind in the (shared, in-process) heap.
MEMORY_SLACK = 16 * 2**20


@pytest.fixture
def rounds(broker: BrokerUnderTest) -> Iterator[range]:
    """Run the case ROUNDS times; then someone else must still be served,
    and amqlite must hold no more memory than before (give or take)."""
    before = memory_in_use()
    yield range(ROUNDS)
    connection = pika.BlockingConnection(pika.ConnectionParameters(broker.host, broker.port))
    channel = connection.channel()
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.basic_publish("", queue, b"still here")
    assert channel.basic_get(queue, auto_ack=True)[2] == b"still here"
    connection.close()
    if broker.kind == "amqlite":
        assert memory_in_use() - before < MEMORY_SLACK


def opened(broker: BrokerUnderTest) -> RawClient:
    client = RawClient(broker.host, broker.port)
    client.handshake()
    client.open_channel(1)
    return client


def answer(client: RawClient, timeout: float = 5.0) -> str:
    """What the broker said: 'ok', 'close <code> <text>', 'dropped' or 'silent'."""
    try:
        while True:
            f = client.read_frame(timeout)
            if isinstance(f, MethodFrame):
                if isinstance(f.method, spec.Connection.Close | spec.Channel.Close):
                    return f"close {f.method.reply_code} {f.method.reply_text}"
                return "ok"
    except Closed:
        return "dropped"
    except TimeoutError:
        return "silent"


def declare_with_arguments(table: bytes) -> bytes:
    """queue.declare "abuse" with a hand-built arguments table."""
    payload = struct.pack(">HHH", 50, 10, 0) + b"\x05abuse" + b"\x00" + struct.pack(">I", len(table)) + table
    return frame(1, 1, payload)


def entry(name: bytes, kind: bytes, value: bytes) -> bytes:
    return bytes([len(name)]) + name + kind + value


@pytest.mark.parametrize("data", [
    b"\x00\xffgarbage" + b"AMQP\x00\x00\x09\x01",
    b"AMQP\x00\x01\x00\x00",  # AMQP 1.0
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",  # a TLS client hello on the plain port
], ids=["garbage-before-header", "amqp-1.0", "tls-hello"])
def test_a_foreign_greeting_gets_our_header_and_a_close(broker: BrokerUnderTest, rounds: range, data: bytes) -> None:
    for _ in rounds:
        with RawClient(broker.host, broker.port) as client:
            client.send(data)
            assert client.read_raw(8) == b"AMQP\x00\x00\x09\x01"
            assert client.read_raw(1) == b"" and client.eof


@pytest.mark.parametrize("size", [131073, 2**31, 2**32 - 1], ids=["frame_max+1", "2GiB", "4GiB"])
def test_a_frame_size_past_frame_max_is_501_and_never_allocated(broker: BrokerUnderTest, rounds: range,
                                                                size: int) -> None:
    for _ in rounds:
        with opened(broker) as client:
            client.send(struct.pack(">BHI", 1, 1, size) + b"\x00" * 64)
            assert answer(client).startswith("close 501 FRAME_ERROR")


def test_a_table_nested_10000_deep(broker: BrokerUnderTest, rounds: range) -> None:
    table = b""
    for _ in range(10_000):
        table = entry(b"a", b"F", struct.pack(">I", len(table)) + table)
    for _ in rounds:
        with opened(broker) as client:
            started = time.monotonic()
            client.send(declare_with_arguments(table))
            said = answer(client)
            # RabbitMQ takes it (and then refuses nothing); amqlite refuses
            # nesting past 64 levels, on purpose: decoding it is recursion
            # and work an attacker chooses, and no client needs it.
            if broker.kind == "rabbitmq":
                assert said == "ok"
            else:
                assert said == "close 501 FRAME_ERROR - field tables and arrays nest deeper than 64 levels"
                assert time.monotonic() - started < 1


def test_a_table_of_40000_entries(broker: BrokerUnderTest, rounds: range) -> None:
    # 100,000 entries do not fit a 128 KiB frame; 40,000 void ones are the most that do.
    table = b"".join(entry(b"k", b"V", b"") for _ in range(40_000))
    for _ in rounds:
        with opened(broker) as client:
            started = time.monotonic()
            client.send(declare_with_arguments(table))
            assert answer(client) == "ok"
            assert time.monotonic() - started < 2
            client.send_method(1, spec.Queue.Delete("abuse"))
            assert answer(client) == "ok"


def test_invalid_utf8_in_a_short_string_is_501(broker: BrokerUnderTest, rounds: range) -> None:
    payload = struct.pack(">HHH", 50, 10, 0) + b"\x02\xff\xfe" + b"\x00" + struct.pack(">I", 0)
    for _ in rounds:
        with opened(broker) as client:
            client.send(frame(1, 1, payload))
            assert answer(client) == "close 501 FRAME_ERROR - Malformed UTF-8 in shortstr"


def test_a_body_longer_than_its_header_said(broker: BrokerUnderTest, rounds: range) -> None:
    for _ in rounds:
        with opened(broker) as client:
            client.send(method(1, spec.Basic.Publish("", "nowhere")) + header(1, 10) + body(1, b"x" * 20))
            # RabbitMQ 3.10 says nothing; amqlite will not guess which bytes
            # were meant, and closes with a frame error (a difference on purpose).
            expected = "silent" if broker.kind == "rabbitmq" else (
                "close 501 FRAME_ERROR - content body on channel 1 is longer than its header said")
            assert answer(client, timeout=1) == expected


@pytest.mark.parametrize("frames", ["short-body-then-method", "body-without-header"])
def test_content_out_of_turn_is_505_with_rabbitmqs_words(broker: BrokerUnderTest, rounds: range,
                                                         frames: str) -> None:
    publish = method(1, spec.Basic.Publish("", "nowhere"))
    data, text = {
        "short-body-then-method": (publish + header(1, 10) + body(1, b"x" * 5) + publish,
                                   "expected content body, got non content body frame instead"),
        "body-without-header": (publish + body(1, b"x" * 5),
                                "expected content header for class 60, got non content header frame instead"),
    }[frames]
    for _ in rounds:
        with opened(broker) as client:
            client.send(data)
            assert answer(client).startswith(f"close 505 UNEXPECTED_FRAME - {text}")


def test_65535_channel_opens_stop_at_channel_max_with_530(broker: BrokerUnderTest, rounds: range) -> None:
    for _ in rounds:
        with RawClient(broker.host, broker.port) as client:
            client.handshake()
            client.send(b"".join(method(n, spec.Channel.Open()) for n in range(1, 65536)))
            opened_ok = 0
            while isinstance(reply := client.read_method(10).method, spec.Channel.OpenOk):
                opened_ok += 1
            assert opened_ok == 2047
            assert isinstance(reply, spec.Connection.Close) and reply.reply_code == 530
            assert reply.reply_text == ("NOT_ALLOWED - number of channels opened (2047) has reached the "
                                        "negotiated channel_max (2047)")


def test_slowloris_peers_are_dropped_at_the_handshake_timeout_and_cost_others_nothing() -> None:
    # amqlite only: RabbitMQ's handshake timeout is 10 s, its behaviour the same.
    server = start_amqlite(handshake_timeout=1.0)
    try:
        peers = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(20 * ROUNDS)]
        started = time.monotonic()
        dropped: set[int] = set()
        sent = 0
        while len(dropped) < len(peers) and time.monotonic() - started < 5:
            for n, peer in enumerate(peers):
                if n in dropped:
                    continue
                try:
                    # The right header, a byte at a time, and never its last byte.
                    peer.send(b"AMQP\x00\x00\x09"[sent:sent + 1])
                    if peer.recv(1, socket.MSG_DONTWAIT) == b"":
                        dropped.add(n)
                except BlockingIOError:
                    pass  # nothing said yet
                except OSError:
                    dropped.add(n)
            sent += 1
            connection = server.connect()  # someone else is served meanwhile
            connection.close()
            time.sleep(0.25)
        assert len(dropped) == len(peers)
        assert 1.0 <= time.monotonic() - started < 2.5  # at the timeout, not at the end of the header
    finally:
        for peer in peers:
            peer.close()
        server.stop()


# -- floods: no peer that has not logged in stops the broker or locks others out (issue 21)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _eof(sock: socket.socket, timeout: float = 10) -> bool:
    """Whether the server closed ``sock`` within ``timeout``."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def _certificate(tmp_path: Path) -> tuple[Path, Path, ssl.SSLContext]:
    """A server certificate and key for 127.0.0.1, and a client context that trusts it."""
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return cert, key, context


def test_a_pre_login_flood_from_one_address_locks_out_no_one_else(tmp_path: Path) -> None:
    # Stalled TLS handshakes from 127.0.0.1, more than max_unauthenticated:
    # they filled the one pool every listener shared, and new clients on
    # both ports were refused until the handshake timeout, with a warning
    # line each. Only settings main had then, so that this fails there.
    cert, key, context = _certificate(tmp_path)
    server = start_amqlite(port=_free_port(), tls_port=_free_port(), tls_cert=str(cert), tls_key=str(key),
                           max_unauthenticated=150, handshake_timeout=60.0)
    assert server.server is not None
    plain, secure = server.server.addresses[0][1], server.server.tls_addresses[0][1]
    flood: list[socket.socket] = []
    try:
        with capture_logs() as logs:
            for _ in range(ROUNDS):
                flood += [socket.create_connection(("127.0.0.1", secure)) for _ in range(160)]
                assert _eof(flood[-1])  # refused, so every one before it has been seen
                # Another address logs in on either port at once.
                for port, tls in ((plain, None), (secure, context)):
                    started = time.monotonic()
                    with RawClient("127.0.0.1", port, source="127.0.0.2", tls=tls) as other:
                        other.handshake()
                        other.open_channel(1)
                    assert time.monotonic() - started < 2
                # 127.0.0.1 has spent its share, on the other port too (item 1's follow-up).
                with RawClient("127.0.0.1", plain) as same, pytest.raises(Closed):
                    same.handshake()
            assert server.call(lambda: server.server.gates["tls_port"].unauthenticated) == 100
            # The flood gives up: 100 handshakes fail at once.
            for sock in flood:
                sock.close()
            wait_for(lambda: server.call(lambda: server.server.gates["tls_port"].unauthenticated) == 0)
        # One line per kind and listener at once; the rest are counted for a
        # summary line (with its interval's seconds) at the interval's end.
        at_once = [entry for entry in logs if "seconds" not in entry]
        refused = [(entry["listener"], entry["reason"]) for entry in at_once if entry["event"] == "connection.refused"]
        reason = "max_unauthenticated_per_address (100) connections from this address not yet logged in on any listener"
        assert refused == [("tls_port", reason), ("port", reason)]
        assert len([entry for entry in at_once if entry["event"] == "connection.tls_failed"]) == 1
    finally:
        for sock in flood:
            sock.close()
        server.stop()


def _serve_limited(tmp_path: Path, open_files: int, *, every_listener: bool = False,
                   **env: str) -> tuple[subprocess.Popen[bytes], Path, dict[str, int]]:
    """`amqlite serve` under ``ulimit -n open_files`` with the AMQP, management
    and Prometheus ports (and with ``every_listener``, AMQPS, Kafka and HTTPS
    management too); its log and ports."""
    names = ("port", "management_port", "prometheus_port")
    if every_listener:
        names += ("tls_port", "kafka_port", "management_tls_port")
        cert, key, _ = _certificate(tmp_path)
        env = {"AMQLITE_TLS_CERT": str(cert), "AMQLITE_TLS_KEY": str(key), **env}
    log = tmp_path / "broker.log"
    # A port found free can be taken before the broker binds it, as the local
    # port of a client socket of a test running beside this one (pytest-xdist):
    # then the broker says so and exits, and it is started again on others.
    for _ in range(3):
        ports = {name: _free_port() for name in names}
        process = subprocess.Popen(
            [sys.executable, "-m", "amqlite.cli", "serve", "--host", "127.0.0.1", "--data-dir",
             str(tmp_path / "data")],
            env={**os.environ, "AMQLITE_LOG_FORMAT": "json", **{f"AMQLITE_{name.upper()}": str(port)
                                                                for name, port in ports.items()}, **env},
            stderr=log.open("w"),
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files)))
        deadline = time.monotonic() + 15
        while '"broker.listening"' not in log.read_text():
            if process.poll() is not None and "Address already in use" in log.read_text():
                break
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        else:
            return process, log, ports
    raise AssertionError(log.read_text())


def _served(ports: dict[str, int], source: str = "127.0.0.2", wait: float = 5.0) -> None:
    """A client from ``source`` is served: a persistent publish confirmed
    over AMQP, and the management API's overview. Retried for ``wait``
    seconds: a crowd just closed takes the server a moment to see go."""
    deadline = time.monotonic() + wait
    while True:
        try:
            with RawClient("127.0.0.1", ports["port"], source=source) as client:
                client.handshake()
                client.open_channel(1)
                client.call(1, spec.Confirm.Select(), spec.Confirm.SelectOk)
                client.call(1, spec.Queue.Declare("kept", durable=True), spec.Queue.DeclareOk)
                client.send(method(1, spec.Basic.Publish("", "kept"))
                            + header(1, 1000, BasicProperties(delivery_mode=2)) + body(1, b"x" * 1000))
                client.expect(spec.Basic.Ack, 1)
            transport = httpx.HTTPTransport(local_address=source)
            with httpx.Client(transport=transport, auth=("guest", "guest"), timeout=10) as http:
                assert http.get(f"http://127.0.0.1:{ports['management_port']}/api/overview").status_code == 200
            return
        except (Closed, OSError, httpx.TransportError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_idle_http_sockets_count_against_the_descriptor_budget(tmp_path: Path) -> None:
    # ulimit -n 256 and 300 idle sockets on the management port: the memory
    # watch could not open /proc/self/statm, and the broker exited 1.
    process, log, ports = _serve_limited(tmp_path, 256)
    try:
        for _ in range(ROUNDS):
            for target in ("management_port", "prometheus_port", "port"):
                crowd = [socket.create_connection(("127.0.0.1", ports[target])) for _ in range(300)]
                assert _eof(crowd[-1])  # past the address's share (half the budget): refused at accept
                _served(ports, wait=0)  # another address is served meanwhile
                time.sleep(0.5)  # a round of the memory watch with the descriptors taken
                assert process.poll() is None, log.read_text()[-3000:]
                for sock in crowd:
                    sock.close()
        refused = [json.loads(line) for line in log.read_text().splitlines() if '"connection.refused"' in line]
        assert {entry["listener"] for entry in refused} == {"management_port", "prometheus_port", "port"}
        assert len(refused) <= 3 * (1 + ROUNDS)  # one line per listener and interval, not one per socket
    finally:
        process.terminate()
        assert process.wait(10) == 0


def test_a_flood_on_every_port_from_one_address_leaves_room_for_another(tmp_path: Path) -> None:
    # ulimit -n 256 leaves a budget of 140 sockets. With a share per
    # listener, 127.0.0.1 held 100 on the AMQP port and took the last 40 on
    # AMQPS: 127.0.0.2 was refused everywhere until the sockets closed.
    process, log, ports = _serve_limited(tmp_path, 256, every_listener=True, AMQLITE_HANDSHAKE_TIMEOUT="60")
    try:
        for _ in range(ROUNDS):
            crowd: list[socket.socket] = []
            for target in ("port", "tls_port", "kafka_port", "management_port", "management_tls_port",
                           "prometheus_port"):
                crowd += [socket.create_connection(("127.0.0.1", ports[target])) for _ in range(100)]
            assert _eof(crowd[-1])
            _served(ports, wait=0)  # at once, on AMQP and the management API
            assert process.poll() is None, log.read_text()[-3000:]
            for sock in crowd:
                sock.close()
        refused = [json.loads(line) for line in log.read_text().splitlines() if '"connection.refused"' in line]
        assert {entry["reason"] for entry in refused} == {
            "half of max_connections (70) connections from this address not yet logged in on any listener"}
        assert {entry["listener"] for entry in refused} == set(ports)
    finally:
        process.terminate()
        assert process.wait(10) == 0


def test_max_connections_above_the_open_files_limit_is_lowered(tmp_path: Path) -> None:
    process, log, ports = _serve_limited(tmp_path, 256, AMQLITE_MAX_CONNECTIONS="1000",
                                         AMQLITE_MAX_UNAUTHENTICATED_PER_ADDRESS="1000")
    try:
        lowered = next(json.loads(line) for line in log.read_text().splitlines()
                       if '"broker.max_connections_lowered"' in line)
        assert (lowered["configured"], lowered["max_connections"]) == (1000, int((256 - 100) * 0.9))
        for _ in range(ROUNDS):
            # Three addresses, since one takes at most half the budget.
            crowd = [RawClient("127.0.0.1", ports["port"], source=f"127.0.0.{n}").sock
                     for n in (3, 4, 5) for _ in range(100)]
            assert _eof(crowd[-1])
            time.sleep(0.5)
            assert process.poll() is None, log.read_text()[-3000:]
            for sock in crowd:
                sock.close()
            _served(ports)
        refused = [json.loads(line) for line in log.read_text().splitlines() if '"connection.refused"' in line]
        assert "max_connections (140) reached" in {entry["reason"] for entry in refused}
    finally:
        process.terminate()
        assert process.wait(10) == 0
