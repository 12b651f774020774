"""The disk journal over a temporary directory: what the core records comes
back after a restart (clean or not), and segments are deleted only when
nothing in them can matter again."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from amqlite.amqp.properties import encode_content_header
from amqlite.core.message import Message, Properties
from amqlite.store.records import content, read_message
from amqlite.store import journal as records_
from amqlite.store.journal import SNAPSHOT

from .support import PERSISTENT, TINY, Store, drain, records

NOW = 1000.0


def publish(store: Store, body: bytes, *, exchange: str = "", key: str = "q", now: float = NOW,
            properties: Properties = PERSISTENT) -> None:
    store.ch.publish(body, exchange=exchange, routing_key=key, properties=properties, now=now)


def test_definitions_round_trip(tmp_path: Path) -> None:
    store = Store(tmp_path)
    ch = store.ch
    ch.declare_exchange("ex.direct", "direct", durable=True)
    ch.declare_exchange("ex.topic", "topic", durable=True, auto_delete=True)
    ch.declare_exchange("ex.fanout", "fanout", durable=True, internal=True)
    ch.declare_exchange("ex.headers", "headers", durable=True, arguments={"alternate-exchange": "ex.fanout"})
    ch.declare_exchange("ex.delayed", "x-delayed-message", durable=True, arguments={"x-delayed-type": "topic"})
    ch.declare_exchange("transient", "direct")
    ch.declare_queue("q1", durable=True, now=NOW, arguments={
        "x-max-priority": 5, "x-message-ttl": 60000, "x-dead-letter-exchange": "ex.direct",
        "x-dead-letter-routing-key": "dead", "x-delivery-limit": 3})
    ch.declare_queue("q2", durable=True, now=NOW)
    ch.declare_queue("tq", now=NOW)
    ch.bind_queue("q1", "ex.direct", "k1")
    ch.bind_queue("q1", "ex.topic", "a.*.c")
    ch.bind_queue("q2", "ex.headers", "", {"x-match": "any", "a": 1, "b": "two"})
    ch.bind_queue("q2", "ex.headers", "", {"x-match": "all", "a": 1})
    ch.bind_queue("q2", "amq.direct", "from-amq")
    ch.bind_queue("tq", "ex.direct", "k1")  # to a transient queue: not durable
    ch.bind_exchange("ex.fanout", "ex.topic", "#")  # e2e
    ch.bind_exchange("ex.topic", "ex.delayed", "later.#")
    ch.bind_exchange("transient", "ex.direct", "k2")  # to a transient exchange: not durable
    store = store.restart()

    vhost = store.vhost
    assert set(vhost.exchanges) - {"", "amq.direct", "amq.fanout", "amq.topic", "amq.headers", "amq.match"} == {
        "ex.direct", "ex.topic", "ex.fanout", "ex.headers", "ex.delayed"}
    topic, fanout = vhost.exchanges["ex.topic"], vhost.exchanges["ex.fanout"]
    assert topic.type == "topic" and topic.auto_delete and topic.durable
    assert fanout.internal
    assert vhost.exchanges["ex.headers"].alternate == "ex.fanout"
    delayed = vhost.exchanges["ex.delayed"]
    assert delayed.delayed and delayed.routing_type == "topic"
    assert set(vhost.queues) == {"q1", "q2"}
    q1 = vhost.queues["q1"]
    assert q1.settings.max_priority == 5 and q1.settings.message_ttl == 60
    assert q1.settings.dead_letter_exchange == "ex.direct" and q1.settings.delivery_limit == 3

    def bindings(name: str) -> set[tuple[str, str, tuple]]:
        return {(d.name, key, tuple(sorted(args.items()))) for (d, key, _), args in vhost.exchanges[name].bindings.items()}

    assert bindings("ex.direct") == {("q1", "k1", ())}
    assert bindings("ex.topic") == {("q1", "a.*.c", ()), ("ex.fanout", "#", ())}
    assert bindings("ex.headers") == {("q2", "", (("a", 1), ("b", "two"), ("x-match", "any"))),
                                      ("q2", "", (("a", 1), ("x-match", "all")))}
    assert bindings("amq.direct") == {("q2", "from-amq", ())}
    assert bindings("ex.delayed") == {("ex.topic", "later.#", ())}
    # And they route: headers with arguments, e2e.
    publish(store, b"h", exchange="ex.headers", key="", properties=Properties(delivery_mode=2, headers={"b": "two"}))
    publish(store, b"e2e", exchange="ex.delayed", key="later.x.c")  # no x-delay: routes now
    assert drain(store.ch, "q2") == [(b"h", False)]
    store.close()


def test_unbind_and_delete_survive(tmp_path: Path) -> None:
    store = Store(tmp_path)
    ch = store.ch
    ch.declare_exchange("ex", "headers", durable=True)
    ch.declare_exchange("gone", "fanout", durable=True)
    ch.declare_queue("q", durable=True, now=NOW)
    ch.declare_queue("dropped", durable=True, now=NOW)
    ch.bind_queue("q", "ex", "", {"x-match": "all", "a": 1, "b": 2})
    ch.bind_queue("q", "ex", "", {"x-match": "any", "c": 3})
    ch.bind_queue("dropped", "ex", "", {"x-match": "any", "c": 3})
    # Unbind naming the arguments in another order: the same binding.
    ch.unbind_queue("q", "ex", "", {"b": 2, "a": 1, "x-match": "all"})
    ch.delete_exchange("gone")
    ch.delete_queue("dropped", now=NOW)
    store = store.restart()
    vhost = store.vhost
    assert "gone" not in vhost.exchanges and "dropped" not in vhost.queues
    assert [args for _, args in vhost.exchanges["ex"].bindings.items()] == [{"x-match": "any", "c": 3}]
    store.close()


def test_persistent_messages_round_trip(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.ch.declare_queue("q", durable=True, now=NOW)
    store.ch.declare_queue("tq", now=NOW)
    props = Properties(delivery_mode=2, content_type="text/plain", headers={"h": [1, "x", {"n": True}]},
                       priority=3, correlation_id="c", message_id="m", timestamp=12345, app_id="app")
    publish(store, b"one", properties=props)
    publish(store, b"transient", properties=Properties(delivery_mode=1))
    publish(store, b"", properties=PERSISTENT)
    publish(store, b"x" * 100_000)
    publish(store, b"to transient queue", key="tq")
    store = store.restart()
    assert "tq" not in store.vhost.queues
    got = store.ch.get("q", now=NOW, no_ack=True)
    assert got is not None and got.message.body == b"one" and got.message.properties == props
    assert drain(store.ch, "q") == [(b"", False), (b"x" * 100_000, False)]
    store.close()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["", "amq.topic", "ex"]), st.sampled_from(["q", "a.b", "\u00e9t\u00e9"]),
                          st.sampled_from([PERSISTENT, Properties(content_type="text/plain"),
                                           Properties(headers={"h": [1, "x"]}), Properties()]),
                          st.binary(max_size=20)), min_size=1, max_size=20))
def test_messages_read_back_are_the_messages_written(
        messages: list[tuple[str, str, Properties, bytes]]) -> None:
    """Names and headers repeat from message to message and are decoded
    once for many (records.read_message): every message read back still
    has its own exchange, routing key, properties, body and header bytes,
    and a headers table is never one dict shared by two messages."""
    read = []
    for exchange, key, properties, body in messages:
        payload = b"\x00" * 3 + content(Message(exchange, key, properties, body))
        read.append(read_message(payload, 3, 7, 9))
    assert [(m.exchange, m.routing_key, m.properties, m.body, m.store_id, m.store_segment) for m in read] == [
        (exchange, key, properties, body, 7, 9) for exchange, key, properties, body in messages]
    assert all(m.wire_header == encode_content_header(60, len(m.body), m.properties) for m in read)
    tables = [id(m.properties.headers) for m in read if m.properties.headers is not None]
    assert len(set(tables)) == len(tables)
    with pytest.raises(ValueError, match="truncated"):
        read_message(content(Message("ex", "q", PERSISTENT, b""))[:4], 0)


def test_ack_delivery_and_requeue_state(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.ch.declare_queue("q", durable=True, now=NOW)
    for i in range(5):
        publish(store, b"%d" % i)
    first = store.ch.get("q", now=NOW)
    second = store.ch.get("q", now=NOW)
    third = store.ch.get("q", now=NOW)
    assert first and second and third
    store.ch.ack(first.delivery_tag, now=NOW)
    store.ch.nack(third.delivery_tag, now=NOW, requeue=True)  # back, counted
    # "second" stays delivered and unacked: after a crash it is redelivered.
    store = _restart_keeping_unacked(store)
    assert drain(store.ch, "q") == [(b"1", True), (b"2", True), (b"3", False), (b"4", False)]
    store.close()


def _restart_keeping_unacked(store: Store) -> Store:
    """A restart after everything was synced, but without closing channels
    (as after kill -9): unacked messages stay as they were on disk."""
    store.sync()
    return store.restart(crash=True)


def test_crash_loses_only_what_was_not_synced(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.ch.declare_queue("q", durable=True, now=NOW)
    publish(store, b"synced")
    store.sync()
    publish(store, b"pending")  # its confirm would still be waiting
    store = store.restart(crash=True)
    assert drain(store.ch, "q") == [(b"synced", False)]
    store.close()


def test_acked_and_synced_never_comes_back(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.ch.declare_queue("q", durable=True, now=NOW)
    publish(store, b"a")
    publish(store, b"b")
    store.sync()
    got = store.ch.get("q", now=NOW)
    assert got is not None
    store.ch.ack(got.delivery_tag, now=NOW)
    store.sync()
    store = store.restart(crash=True)
    assert drain(store.ch, "q") == [(b"b", False)]
    store.close()


def test_message_in_several_queues(tmp_path: Path) -> None:
    store = Store(tmp_path, segment_size=TINY)
    ch = store.ch
    ch.declare_exchange("fan", "fanout", durable=True)
    for name in ("a", "b", "c"):
        ch.declare_queue(name, durable=True, now=NOW)
        ch.bind_queue(name, "fan", "")
    ch.declare_queue("t", now=NOW)
    ch.bind_queue("t", "fan", "")
    publish(store, b"m", exchange="fan", key="")
    store.sync()
    drain(ch, "a")
    drain(ch, "b")
    store.sync()
    store.sync()  # the body stays while c holds it
    store = store.restart(crash=True)
    assert [drain(store.ch, name) for name in ("a", "b", "c")] == [[], [], [(b"m", False)]]
    store.sync()
    store.sync()
    store = store.restart(crash=True)
    assert drain(store.ch, "c") == []
    store.close()


def test_queue_delete_then_redeclare_does_not_resurrect(tmp_path: Path) -> None:
    store = Store(tmp_path, segment_size=TINY)
    ch = store.ch
    ch.declare_queue("q", durable=True, now=NOW)
    publish(store, b"old 1")
    publish(store, b"old 2")
    got = ch.get("q", now=NOW)  # unacked when the queue goes
    store.sync()
    ch.delete_queue("q", now=NOW)
    ch.declare_queue("q", durable=True, now=NOW)
    publish(store, b"new")
    assert got is not None
    ch.ack(got.delivery_tag, now=NOW)  # acking into the deleted queue is harmless
    store.sync()
    store = store.restart(crash=True)
    assert drain(store.ch, "q") == [(b"new", False)]
    store.sync()
    store = store.restart()
    assert drain(store.ch, "q") == []
    store.close()


# -- segment deletion ------------------------------------------------------------


def test_segment_with_live_messages_is_kept(tmp_path: Path) -> None:
    store = Store(tmp_path, segment_size=200)
    store.ch.declare_queue("q", durable=True, now=NOW)
    for i in range(20):
        publish(store, b"message %02d" % i)
    store.sync()
    segments = store.segments()
    assert len(segments) > 3
    drain(store.ch, "q", now=NOW)
    store = store.restart(crash=True)  # the REMOVEs were not synced
    assert len(drain(store.ch, "q")) == 20
    store.sync()
    store.sync()
    # All acked and synced: every segment but the current one goes, and the
    # first: its live record (the queue's declaration) is most of it, and a
    # copy forward would write more than it frees.
    assert store.segments()[1:] == [store.journal.log.current] and store.segments()[0] == 1
    store = store.restart(crash=True)
    assert drain(store.ch, "q") == []
    store.close()


def test_live_segment_kept_while_later_ones_go(tmp_path: Path) -> None:
    store = Store(tmp_path, segment_size=TINY)
    store.ch.declare_queue("q", durable=True, now=NOW)  # segment 1
    publish(store, b"keep")  # segment 2
    publish(store, b"ack")  # segment 3
    store.ch.get("q", now=NOW, no_ack=True)  # "keep" leaves: DELIVERED 4, REMOVE 5
    store.sync()
    store.ch.declare_queue("other", durable=True, now=NOW)  # segment 6, so 5 is not current
    store.sync()
    store.sync()
    assert 3 in store.segments()  # "ack" is live
    assert 2 not in store.segments()
    store = store.restart(crash=True)
    assert drain(store.ch, "q") == [(b"ack", False)]
    store.close()


def roll(store: Store) -> int:
    """End the current segment with a filler record of a segment's size
    (a kind recovery ignores); returns the filler's segment."""
    log = store.journal.log
    log.append(99, bytes(log.segment_size))
    return log.current


def test_removal_kept_while_what_it_removes_is_on_disk(tmp_path: Path) -> None:
    # One segment holds two messages; one is acked (REMOVE in a later segment).
    # That segment holds nothing live, but deleting it would bring the acked
    # message back: it stays while the messages' segment does.
    store = Store(tmp_path, segment_size=1000)
    store.ch.declare_queue("q", durable=True, now=NOW)
    roll(store)
    publish(store, b"acked")
    publish(store, b"kept")
    messages = store.journal.log.current
    got = store.ch.get("q", now=NOW)
    roll(store)
    assert got is not None
    store.ch.ack(got.delivery_tag, now=NOW)
    store.sync(compact=False)  # the REMOVE goes with the batch, into the current segment
    removal = store.journal.log.current
    assert removal > messages
    roll(store)
    store.sync()
    store.sync()
    assert {messages, removal} <= set(store.segments())
    for restart in range(3):  # and the rule holds after restarts too
        store = store.restart(crash=True)
        assert store.queue("q").message_count == 1, restart
        roll(store)
        roll(store)
        store.sync()
        store.sync()
        assert messages in store.segments()
        assert removal in store.segments(), "the REMOVE's segment went before the segment it points into"
    assert drain(store.ch, "q") == [(b"kept", False)]
    store.sync()
    roll(store)
    store.sync()
    assert messages not in store.segments() and removal not in store.segments()
    store.close()


def test_snapshot_written_before_definition_segments_go(tmp_path: Path) -> None:
    store = Store(tmp_path, segment_size=TINY)
    ch = store.ch
    ch.declare_exchange("ex", "topic", durable=True)  # segment 1
    ch.declare_exchange("later-deleted", "direct", durable=True)
    ch.declare_queue("q", durable=True, now=NOW, arguments={"x-max-priority": 2})  # 3
    ch.bind_queue("q", "ex", "a.#")  # 4
    ch.bind_queue("q", "ex", "b.#")
    ch.unbind_queue("q", "ex", "b.#")
    ch.delete_exchange("later-deleted")
    publish(store, b"m")  # 8
    assert not (tmp_path / SNAPSHOT).exists()
    deleted = store.sync()
    # The records of what was deleted go, once the snapshot is written;
    # the newest record of each definition stays: the log keeps them all.
    assert deleted == [2, 5, 6, 7] and (tmp_path / SNAPSHOT).exists()
    assert [segment for segment, kind in records(tmp_path) if kind == records_.DEFINITION] == [1, 3, 4]
    ch.declare_queue("q2", durable=True, now=NOW)  # after the snapshot: replayed on top
    ch.bind_queue("q2", "ex", "c")
    store.sync()
    store = store.restart(crash=True)
    vhost = store.vhost
    assert "later-deleted" not in vhost.exchanges
    assert {(d.name, key) for (d, key, _) in vhost.exchanges["ex"].bindings} == {("q", "a.#"), ("q2", "c")}
    assert vhost.queues["q"].settings.max_priority == 2
    assert drain(store.ch, "q") == [(b"m", False)]
    # New ids keep growing past the snapshot's.
    store.ch.declare_queue("q3", durable=True, now=NOW)
    ids = {q.store_id for q in vhost.queues.values()}
    assert len(ids) == 3
    # Another round of compaction rewrites the snapshot; still all there.
    store.ch.delete_queue("q2", now=NOW)
    store.sync()
    store.sync()
    store = store.restart(crash=True)
    assert set(store.vhost.queues) == {"q", "q3"}
    assert {(d.name, key) for (d, key, _) in store.vhost.exchanges["ex"].bindings} == {("q", "a.#")}
    store.close()


def test_snapshot_is_replaced_atomically(tmp_path: Path) -> None:
    store = Store(tmp_path, segment_size=TINY)
    store.ch.declare_queue("q", durable=True, now=NOW)
    store.sync()
    store.ch.declare_queue("q2", durable=True, now=NOW)
    store.sync(snapshot=True)
    store.sync()
    assert (tmp_path / SNAPSHOT).exists()
    assert not list(tmp_path.glob("*.tmp"))
    # A temp file left by a crash mid-write is ignored.
    (tmp_path / "definitions.tmp").write_bytes(b"garbage")
    store = store.restart(crash=True)
    assert set(store.vhost.queues) == {"q", "q2"}
    store.close()


# -- delays, retries, counts, deadlines ---------------------------------------------


def test_delayed_messages_recover_with_their_due_time(tmp_path: Path) -> None:
    store = Store(tmp_path)
    ch = store.ch
    ch.declare_exchange("delay", "x-delayed-message", durable=True, arguments={"x-delayed-type": "direct"})
    ch.declare_queue("q", durable=True, now=NOW)
    ch.bind_queue("q", "delay", "k")
    for delay in (5000, 1000, 3000):
        publish(store, b"after %d" % delay, exchange="delay", key="k",
                properties=Properties(delivery_mode=2, headers={"x-delay": delay}))
    publish(store, b"transient", exchange="delay", key="k", properties=Properties(headers={"x-delay": 1000}))
    store = store.restart(now=NOW + 0.5)
    exchange = store.vhost.exchanges["delay"]
    assert exchange.pending_count == 3 and store.report.held == 3
    assert store.broker.next_deadline() == pytest.approx(NOW + 1)
    store.broker.tick(NOW + 0.9)
    assert drain(store.ch, "q") == []
    store.broker.tick(NOW + 1.0)
    assert store.queue("q").message_count == 1
    store.sync()
    store = store.restart(now=NOW + 2, crash=True)  # released, and the release synced
    assert store.vhost.exchanges["delay"].pending_count == 2
    assert drain(store.ch, "q") == [(b"after 1000", False)]
    store.sync()
    store = store.restart(now=NOW + 10)  # both overdue: released at the first tick
    store.broker.tick(NOW + 10)
    assert drain(store.ch, "q") == [(b"after 3000", False), (b"after 5000", False)]
    store.sync()
    store = store.restart()
    assert store.vhost.exchanges["delay"].pending_count == 0 and drain(store.ch, "q") == []
    store.close()


def test_deleted_delayed_exchange_takes_its_held_messages(tmp_path: Path) -> None:
    store = Store(tmp_path)
    args = {"x-delayed-type": "fanout"}
    store.ch.declare_exchange("delay", "x-delayed-message", durable=True, arguments=args)
    publish(store, b"held", exchange="delay", key="", properties=Properties(delivery_mode=2, headers={"x-delay": 10}))
    store.ch.delete_exchange("delay")
    store.ch.declare_exchange("delay", "x-delayed-message", durable=True, arguments=args)
    store = store.restart()
    assert store.vhost.exchanges["delay"].pending_count == 0
    store.close()


def test_retry_schedule_recovers(tmp_path: Path) -> None:
    store = Store(tmp_path)
    ch = store.ch
    ch.declare_queue("q", durable=True, now=NOW, arguments={
        "x-delayed-retry-min": 2000, "x-delayed-retry-multiplier": 2, "x-delivery-limit": 5})
    publish(store, b"a")
    publish(store, b"b")
    got = ch.get("q", now=NOW)
    assert got is not None
    ch.nack(got.delivery_tag, now=NOW, requeue=True)  # "a" waits until NOW + 2
    store = store.restart(now=NOW + 1)
    queue = store.queue("q")
    assert queue.delayed_count == 1 and queue.message_count == 1
    assert store.broker.next_deadline() == pytest.approx(NOW + 2)
    assert drain(store.ch, "q", now=NOW + 1) == [(b"b", False)]
    store.broker.tick(NOW + 2)
    got = store.ch.get("q", now=NOW + 2)
    assert got is not None and got.message.body == b"a" and got.redelivered and got.delivery_count == 1
    store.ch.nack(got.delivery_tag, now=NOW + 2, requeue=True)  # second failure: 4 s
    store = store.restart(now=NOW + 3)
    assert store.broker.next_deadline() == pytest.approx(NOW + 6)
    store.broker.tick(NOW + 6)
    # Back from its retry at the tail (MOVE): still there after a crash.
    store.sync()
    store = store.restart(now=NOW + 7, crash=True)
    got = store.ch.get("q", now=NOW + 7, no_ack=True)
    assert got is not None and got.delivery_count == 2 and store.queue("q").delayed_count == 0
    store.close()


def test_delivery_counts_recover_and_the_limit_keeps_counting(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.ch.declare_exchange("dlx", "fanout", durable=True)
    store.ch.declare_queue("dead", durable=True, now=NOW)
    store.ch.bind_queue("dead", "dlx", "")
    store.ch.declare_queue("q", durable=True, now=NOW,
                           arguments={"x-delivery-limit": 2, "x-dead-letter-exchange": "dlx"})
    publish(store, b"poison")
    for attempt in range(1, 4):
        got = store.ch.get("q", now=NOW)
        assert got is not None and got.delivery_count == attempt - 1, attempt
        store.ch.nack(got.delivery_tag, now=NOW, requeue=True)  # counts attempt
        store = store.restart()
    # Third failure is over the limit of 2: dead-lettered, and that survived too.
    assert drain(store.ch, "q") == []
    letters = drain(store.ch, "dead")
    assert [body for body, _ in letters] == [b"poison"]
    store.close()


def test_message_deadlines_keep_counting(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.ch.declare_queue("q", durable=True, now=NOW, arguments={"x-message-ttl": 10_000})
    publish(store, b"queue ttl")
    publish(store, b"message ttl", properties=Properties(delivery_mode=2, expiration="4000"))
    store = store.restart(now=NOW + 3)
    assert store.broker.next_deadline() == pytest.approx(NOW + 4)
    store.broker.tick(NOW + 4)
    assert store.queue("q").message_count == 1
    store.sync()
    store = store.restart(now=NOW + 11)  # past the queue TTL while down
    store.broker.tick(NOW + 11)
    assert store.queue("q").message_count == 0
    store.close()


def test_torn_last_record_of_the_journal(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.ch.declare_queue("q", durable=True, now=NOW)
    publish(store, b"a")
    publish(store, b"b")
    store.sync()
    store.ch.get("q", now=NOW, no_ack=True)  # DELIVERED + REMOVE of "a"
    store.sync()
    store.close()
    segment = tmp_path / "log" / "0000000001.seg"
    with open(segment, "r+b") as file:
        file.truncate(segment.stat().st_size - 3)  # the REMOVE is torn
    with capture_logs() as logs:
        store = Store(tmp_path)
    assert any(e["event"] == "store.corrupt_tail" and e["log_level"] == "warning" for e in logs)
    # The ack did not make it: "a" is back.
    assert drain(store.ch, "q") == [(b"a", False), (b"b", False)]
    store.close()


def test_data_directory_is_locked(tmp_path: Path) -> None:
    store = Store(tmp_path)
    with pytest.raises(records_.StoreLocked):
        Store(tmp_path)
    store.close()
    Store(tmp_path).close()


def test_due_delayed_message_stays_held_while_the_disk_fails(tmp_path: Path) -> None:
    # Released now, its durable queue would refuse it (and it would be lost).
    store = Store(tmp_path)
    store.ch.declare_exchange("delay", "x-delayed-message", durable=True, arguments={"x-delayed-type": "fanout"})
    store.ch.declare_queue("q", durable=True, now=NOW)
    store.ch.bind_queue("q", "delay", "")
    publish(store, b"held", exchange="delay", key="", properties=Properties(delivery_mode=2, headers={"x-delay": 500}))
    store.journal.disk_low = True  # not accepting, as in a write outage
    store.broker.tick(NOW + 1)
    assert store.vhost.exchanges["delay"].pending_count == 1 and store.queue("q").message_count == 0
    assert store.broker.drops["store-unavailable"] == 0
    store.journal.disk_low = False
    store.broker.tick(store.broker.next_deadline())
    assert drain(store.ch, "q") == [(b"held", False)]
    store.close()


@pytest.mark.parametrize("release_to", ["durable queue", "two durable queues"])
def test_a_torn_batch_never_loses_a_released_message(tmp_path: Path, release_to: str) -> None:
    # A crash can cut a batch anywhere (between segment files, or inside a
    # multi-page write): every prefix of the records written when a delayed
    # message is released must leave it held, queued, or both, never neither.
    cut = 0
    while True:
        directory = tmp_path / f"cut-{cut}"
        store = Store(directory)
        store.ch.declare_exchange("delay", "x-delayed-message", durable=True, arguments={"x-delayed-type": "fanout"})
        queues = ["q1", "q2"] if release_to == "two durable queues" else ["q1"]
        for name in queues:
            store.ch.declare_queue(name, durable=True, now=NOW)
            store.ch.bind_queue(name, "delay", "")
        publish(store, b"held", exchange="delay", key="",
                properties=Properties(delivery_mode=2, headers={"x-delay": 500}))
        store.sync()
        store.broker.tick(NOW + 1)
        pending, _ = store.journal.take_batch()
        store.journal.log.write_and_sync(pending[:cut])
        store = store.restart(crash=True, now=NOW + 2)
        held = store.vhost.exchanges["delay"].pending_count
        store.broker.tick(NOW + 2)
        for name in queues:
            assert [body for body, _ in drain(store.ch, name)] in ([b"held"], [b"held", b"held"]), (cut, name)
        store.close()
        if cut >= len(pending):
            assert held == 0  # the whole batch: released for good
            break
        cut += 1


def test_a_crash_at_any_step_of_compaction(tmp_path: Path) -> None:
    # Compaction writes a snapshot, then deletes segments oldest first. A
    # crash after any of those steps recovers the same definitions and messages.
    def build(directory: Path) -> Store:
        store = Store(directory, segment_size=TINY)
        ch = store.ch
        ch.declare_exchange("ex", "topic", durable=True)
        ch.declare_queue("q", durable=True, now=NOW)
        ch.bind_queue("q", "ex", "a.#")
        for i in range(4):
            publish(store, b"m%d" % i)
        ch.declare_queue("gone", durable=True, now=NOW)
        ch.bind_queue("gone", "ex", "b")
        got = ch.get("q", now=NOW)
        assert got is not None
        ch.ack(got.delivery_tag, now=NOW)  # m0 goes
        ch.delete_queue("gone", now=NOW)
        ch.unbind_queue("q", "ex", "a.#")
        ch.bind_queue("q", "ex", "c.#")
        publish(store, b"last")
        return store

    def state(store: Store) -> tuple[object, ...]:
        vhost = store.vhost
        bindings = sorted((d.name, k) for (d, k, _) in vhost.exchanges["ex"].bindings)
        return sorted(vhost.queues), bindings, [body for body, _ in drain(store.ch, "q")]

    expected = (["q"], [("q", "c.#")], [b"m1", b"m2", b"m3", b"last"])
    steps = 0
    while True:
        directory = tmp_path / f"crash-{steps}"
        store = build(directory)
        journal = store.journal
        pending, position = journal.take_batch()
        journal.log.write_and_sync(pending)
        obsolete = journal.obsolete_segments()
        assert obsolete and journal.needs_snapshot(obsolete)
        snapshot = journal.snapshot_payload()
        done = 0
        if steps > 0:
            journal.write_snapshot(snapshot.payload)
            journal.snapshot_written(snapshot)
            for victim in obsolete[: steps - 1]:
                journal.log.delete(victim)
                done += 1
        store = store.restart(crash=True)
        assert state(store) == expected, steps
        store.close()
        if steps > 0 and done == len(obsolete):
            break
        steps += 1


def test_a_delivery_cut_short_by_a_crash_counts_as_returned(tmp_path: Path) -> None:
    """Out with a consumer when the broker died, a message comes back as if
    its channel had closed: redelivered, and its delivery count up by one, so
    x-delivery-limit still ends a message that brings the broker down."""
    store = Store(tmp_path)
    store.ch.declare_queue("q", durable=True, now=NOW, arguments={"x-delivery-limit": 5})
    publish(store, b"out")
    publish(store, b"requeued")
    publish(store, b"waiting")
    assert store.ch.get("q", now=NOW) is not None
    second = store.ch.get("q", now=NOW)
    store.ch.nack(second.delivery_tag, requeue=True, now=NOW)  # back in the queue: not out at the crash
    store.sync()
    store = store.restart(crash=True)
    got = {g.message.body: (g.redelivered, g.delivery_count)
           for g in (store.ch.get("q", now=NOW, no_ack=True) for _ in range(3))}
    assert got == {b"out": (True, 1), b"requeued": (True, 1), b"waiting": (False, 0)}
    store.close()


def test_a_delivery_acked_within_the_batch_writes_no_delivered_record(tmp_path: Path) -> None:
    """DELIVERED records wait for the batch: one acked before it is taken
    costs a REMOVE only; one still unacked is written and comes back
    redelivered after a crash; one requeued in the same batch keeps its
    DELIVERED before its COUNT, so its delivery count comes back right."""
    from amqlite.store.records import COUNT, DELIVERED, REMOVE

    store = Store(tmp_path)
    store.ch.declare_queue("q", durable=True, now=1000.0)
    for body in (b"acked", b"held", b"requeued"):
        store.ch.publish(body, routing_key="q", properties=PERSISTENT, now=1000.0)
    store.sync()
    acked = store.ch.get("q", now=1000.0)
    held = store.ch.get("q", now=1000.0)
    requeued = store.ch.get("q", now=1000.0)
    assert acked is not None and held is not None and requeued is not None
    store.ch.ack(acked.delivery_tag, now=1000.0)
    store.ch.nack(requeued.delivery_tag, requeue=True, now=1000.0)
    before = len(records(tmp_path))
    store.sync()
    kinds = [kind for _, kind in records(tmp_path)[before:]]
    assert sorted(kinds) == sorted([REMOVE, DELIVERED, DELIVERED, COUNT])
    assert kinds.index(DELIVERED) < kinds.index(COUNT)
    store = store.restart(crash=True)
    got = {g.message.body: (g.redelivered, g.delivery_count)
           for g in iter(lambda: store.ch.get("q", now=1000.0, no_ack=True), None)}
    # Out at the crash counts as a delivery; back in the queue it does not
    # again (a DELIVERED after the COUNT would make that 2).
    assert got == {b"held": (True, 1), b"requeued": (True, 1)}
    store.close()


def test_the_removals_and_deliveries_of_a_batch_share_records_and_recovery_reads_every_entry(
        tmp_path: Path) -> None:
    """Acks and deliveries of one batch are written as REMOVE and
    DELIVERED records of many entries each (ENTRIES_PER_RECORD at most),
    not one record per message; after a crash every acked message stays
    gone and every one delivered and not acked comes back redelivered."""
    from amqlite.store.records import DELIVERED, ENTRIES_PER_RECORD, REMOVE

    count = ENTRIES_PER_RECORD + 904  # two records of each kind
    store = Store(tmp_path)
    store.ch.declare_queue("q", durable=True, now=NOW)
    for n in range(2 * count + 10):
        store.ch.publish(b"%d" % n, routing_key="q", properties=PERSISTENT, now=NOW)
    store.sync()
    for n in range(2 * count):
        got = store.ch.get("q", now=NOW)
        assert got is not None
        if n % 2 == 0:
            store.ch.ack(got.delivery_tag, now=NOW)
    before = len(records(tmp_path))
    store.sync()
    kinds = [kind for _, kind in records(tmp_path)[before:]]
    assert sorted(kinds) == [REMOVE, REMOVE, DELIVERED, DELIVERED]
    store = store.restart(crash=True)
    left = drain(store.ch, "q")
    assert left == [(b"%d" % n, True) for n in range(1, 2 * count, 2)] + [
        (b"%d" % n, False) for n in range(2 * count, 2 * count + 10)]
    store.close()


@pytest.mark.parametrize("arguments", [{"x-message-deduplication": True},
                                       {"x-queue-type": "stream", "x-message-deduplication": True}],
                         ids=["queue", "stream"])
def test_a_batch_torn_between_an_id_and_its_message_forgets_the_id(tmp_path: Path, arguments: dict) -> None:
    """A deduplicating queue or stream writes the id (DEDUP) just before
    the message, in the same batch. A kill that tears the batch between
    the two must not leave the id without the message: the publisher had
    no confirm, retries, and the retry would be dropped as a duplicate, the
    message lost. Recovery ignores the DEDUP records the log ends with."""
    from amqlite.store.records import DEDUP, PUBLISH

    store = Store(tmp_path)
    store.ch.declare_queue("q", durable=True, arguments=arguments, now=NOW)
    kept = Properties(delivery_mode=2, headers={"x-deduplication-header": "kept"})
    store.ch.publish(b"kept", routing_key="q", properties=kept, now=NOW)
    store.sync()
    torn = Properties(delivery_mode=2, headers={"x-deduplication-header": "torn"})
    store.ch.publish(b"torn", routing_key="q", properties=torn, now=NOW)
    pending, _ = store.journal.take_batch()
    assert [record[8] for _, record in pending[-2:]] == [DEDUP, PUBLISH]  # the id, then the message it admits
    store.journal.log.write_and_sync(pending[:-1])  # the kill lands between them
    store.journal.log.close()
    store.journal._lock_file.close()
    store = Store(tmp_path)
    for body, properties in ((b"torn", torn), (b"kept", kept)):  # the retry of each
        store.ch.publish(body, routing_key="q", properties=properties, now=NOW)
    store.sync()
    store = store.restart(crash=True)
    if "x-queue-type" in arguments:
        stream = store.queue("q")
        assert stream.message_count == 2  # kept, then the retried torn; the kept retry dropped
    else:
        assert drain(store.ch, "q") == [(b"kept", False), (b"torn", False)]
    store.close()
