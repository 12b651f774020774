"""A full or failing disk, as pika clients see it: persistent publishes are
nacked, connection.blocked goes to clients that announced the capability
(connection.unblocked when writes work again), transient traffic goes on,
data written before is intact, and what was waiting during the outage is
written once the disk recovers, by itself."""

from __future__ import annotations

import threading
import time
from typing import Any

import pika
import pika.exceptions
import pytest
from structlog.testing import capture_logs

from amqlite.amqp import spec
from amqlite import storage
from amqlite.amqp.properties import BasicProperties
from amqlite.server import listener

from store.support import scan  # tests/store (tests/ is on sys.path, as for this package)
from .durability_support import Durable, bodies, durable, persistent  # noqa: F401
from .rawamqp import RawClient
from wire import body, header, method, publish  # tests/wire.py


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage, "RETRY_MAX", 0.2)


def pump_until(connection: pika.BlockingConnection, predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        connection.process_data_events(time_limit=0.02)


def test_full_disk_nacks_blocks_and_recovers(durable: Durable) -> None:
    events: list[str] = []
    connection = durable.connect()
    connection.add_on_connection_blocked_callback(lambda c, frame: events.append(f"blocked: {frame.method.reason}"))
    connection.add_on_connection_unblocked_callback(lambda c, frame: events.append("unblocked"))
    ch = connection.channel()
    ch.confirm_delivery()
    ch.queue_declare("q", durable=True)
    for i in range(5):
        ch.basic_publish("", "q", b"before %d" % i, persistent())
    other = durable.channel()  # no confirms: its publishes do not wait

    with capture_logs() as logs:
        durable.fs.full = True
        # The first persistent publish meets the full disk: accepted (nobody
        # knew yet), its record waits in memory and is written later.
        other.basic_publish("", "q", b"in flight", persistent())
        pump_until(connection, lambda: events)
        assert events == ["blocked: disk write failed: No space left on device"]
        with pytest.raises(pika.exceptions.NackError):
            ch.basic_publish("", "q", b"refused", persistent())
        ch.basic_publish("", "q", b"transient")  # no disk needed: confirmed
        method, _, body = ch.basic_get("q")
        assert body == b"before 0"
        ch.basic_ack(method.delivery_tag)  # waits in memory too
        ch.queue_declare("declared during", durable=True)
        # A client connecting during the outage is told right after open-ok
        # (raw, since pika registers its callbacks only once connected).
        late = RawClient("127.0.0.1", durable.port)
        late.handshake(start_ok=spec.Connection.StartOk(
            {"product": "late", "capabilities": {"connection.blocked": True}}, "PLAIN", b"\0guest\0guest"))
        assert late.expect(spec.Connection.Blocked, 0).reason == "disk write failed"
        time.sleep(0.5)  # a few failed retries
        durable.fs.full = False
        pump_until(connection, lambda: len(events) == 2)
        assert events[1] == "unblocked"
        late.expect(spec.Connection.Unblocked, 0)
        late.close()
        ch.basic_publish("", "q", b"after", persistent())  # acked again
    logged = [(e["event"], e["log_level"]) for e in logs]
    assert ("store.write_failed", "error") in logged and ("store.recovered_writes", "info") in logged
    assert scan(durable.data_dir / "log")[1] == []  # no torn record was left behind

    durable.crash_and_restart()
    ch = durable.channel()
    assert bodies(ch, "q") == [b"before 1", b"before 2", b"before 3", b"before 4", b"in flight", b"after"]
    ch.queue_declare("declared during", passive=True)


def test_delayed_persistent_message_is_confirmed_once_on_disk(durable: Durable) -> None:
    ch = durable.channel(confirm=True)
    ch.exchange_declare("delay", "x-delayed-message", durable=True, arguments={"x-delayed-type": "fanout"})
    ch.queue_declare("q", durable=True)
    ch.queue_bind("q", "delay")
    durable.fs.full = True
    ch.queue_declare("trigger", durable=True)  # the disk fails under this definition
    time.sleep(0.1)
    confirmed = threading.Event()
    result: list[Any] = []

    def publish() -> None:
        publisher = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", durable.port))
        pch = publisher.channel()
        pch.confirm_delivery()
        try:
            pch.basic_publish("delay", "", b"held", persistent(headers={"x-delay": 500}))
            result.append("ack")
        except pika.exceptions.NackError:
            result.append("nack")
        confirmed.set()
        publisher.close()

    thread = threading.Thread(target=publish)
    thread.start()
    # While the disk refuses writes the confirm must not come as an ack: the
    # message is not on disk (it is either held back or refused).
    confirmed.wait(0.5)
    assert result != ["ack"], "confirmed before its record was on disk"
    durable.fs.full = False
    assert confirmed.wait(5)
    thread.join()
    if result == ["ack"]:
        durable.crash_and_restart()
        ch = durable.channel()
        deadline = time.monotonic() + 3
        while not (got := bodies(ch, "q")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert got == [b"held"]


def test_a_commit_waiting_for_the_disk_stops_the_server_reading_its_connection(durable: Durable) -> None:
    """Defect 3 of issue 10: while a tx.commit waits for a disk that fails,
    the frames behind it wait too, and the server stops reading them rather
    than buffering the client's stream for the whole outage (52 MB in the
    report). Other connections carry on; once the disk is back, everything
    the client sent is handled."""
    with RawClient("127.0.0.1", durable.port) as client:
        client.handshake()
        client.open_channel(1)
        client.call(1, spec.Queue.Declare("dq", durable=True), spec.Queue.DeclareOk)
        client.call(1, spec.Tx.Select(), spec.Tx.SelectOk)
        durable.fs.full = True
        client.send(method(1, spec.Basic.Publish("", "dq")) + header(1, 1, BasicProperties(delivery_mode=2))
                    + body(1, b"p") + method(1, spec.Tx.Commit()))
        message = publish(1, "dq", b"t" * 10000)
        batch = message * 50
        limit = 64 * 1024 * 1024
        sent, rest = client.send_until_stalled(batch, limit)
        assert sent < limit, "the server kept reading while the commit waited"

        server = durable.server
        assert server is not None

        def buffered_input() -> int:
            return next(c for c in server.server.connections if 1 in c._channels).buffered_input

        assert server.call(buffered_input) <= listener._RECEIVE_SIZE  # one read, no more
        durable.channel().queue_declare("others carry on")

        durable.fs.full = False
        client.send(rest)
        client.expect(spec.Tx.CommitOk, 1, timeout=10)
        client.send_method(1, spec.Tx.Commit())
        client.expect(spec.Tx.CommitOk, 1, timeout=10)
        ok = client.call(1, spec.Queue.Declare("dq", passive=True), spec.Queue.DeclareOk)
        assert ok.message_count == 1 + (sent + len(rest)) // len(message)


def test_a_get_on_a_queue_whose_paged_messages_cannot_be_read_gets_404_not_a_hang(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 10, defect 2, through pika: a failed page-in read used to leave
    a basic.get waiting forever, and every later frame on its connection
    behind it. Now the get fails with 404 and the reason once the retries
    are spent, other channels carry on, and once the disk reads again the
    messages come back in order."""
    store = Durable(tmp_path / "data", monkeypatch, queue_memory_budget=10).start()
    try:
        connection = store.connect()
        ch = connection.channel()
        ch.queue_declare("backlog", durable=True)
        ch.confirm_delivery()
        for i in range(100):
            ch.basic_publish("", "backlog", b"%03d" % i, persistent())
        assert store.server is not None
        queue = store.server.server.core.vhosts["/"].queues["backlog"]
        deadline = time.monotonic() + 5
        while store.server.call(lambda: queue.ready.paged) < 80:
            assert time.monotonic() < deadline, "nothing paged out"
            connection.process_data_events(time_limit=0.05)
        store.fs.read_fails = True
        got = []
        # A hang (as before the fix) ends with the server stopping under pika.
        watchdog = threading.Timer(20, store.server.stop)
        watchdog.start()
        try:
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
                while True:
                    method, _, body = ch.basic_get("backlog", auto_ack=True)
                    assert method is not None
                    got.append(body)
        finally:
            watchdog.cancel()
        assert got == [b"%03d" % i for i in range(len(got))]
        assert closed.value.reply_code == 404
        assert "cannot read its messages from disk" in closed.value.reply_text
        assert "Input/output error" in closed.value.reply_text
        other = connection.channel()  # the connection carries on
        assert other.queue_declare("backlog", passive=True).method.message_count == 100 - len(got)
        store.fs.read_fails = False
        while len(got) < 100:
            assert time.monotonic() < deadline + 10, f"stalled after {len(got)}"
            try:
                method, _, body = other.basic_get("backlog", auto_ack=True)
            except pika.exceptions.ChannelClosedByBroker:
                other = connection.channel()  # refused until the retry it asked for reads
                time.sleep(0.05)
                continue
            assert method is not None
            got.append(body)
        assert got == [b"%03d" % i for i in range(100)]
    finally:
        store.stop()
