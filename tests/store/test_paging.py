"""Backlogs larger than memory: beyond a queue's budget, persistent ready
messages live on disk only and are read back as consumers drain them."""

from __future__ import annotations

from pathlib import Path

from amqlite.core.broker import Broker
from amqlite.core.events import Deliver, WaitForDisk
from amqlite.core.message import Properties

from .support import Store

NOW = 1000.0


def fill(store: Store, queue: str, count: int, **properties: object) -> None:
    props = Properties(delivery_mode=2, **properties)  # type: ignore[arg-type]
    for i in range(count):
        store.ch.publish(b"m%04d" % i, routing_key=queue, properties=props, now=NOW)


def consume_all(store: Store, queue: str, *, prefetch: int = 7) -> list[bytes]:
    """A consumer acking everything, with the driver's page-ins in between."""
    ch = store.broker.connect().open_channel()
    ch.qos(prefetch, now=NOW)
    ch.consume(queue, now=NOW)
    got: list[bytes] = []
    while True:
        events = [e for e in ch.outbox if isinstance(e, Deliver)]
        ch.outbox.clear()
        if events:
            ch.delivered(len(events), now=NOW)
            got += [e.message.body for e in events]
            ch.ack(events[-1].delivery_tag, multiple=True, now=NOW)
            continue
        store.sync()
        if not store.page_in(NOW) and not ch.outbox:
            return got


def test_messages_beyond_the_budget_leave_memory_once_written(tmp_path: Path) -> None:
    store = Store(tmp_path, queue_budget=10)
    store.ch.declare_queue("q", durable=True, now=NOW)
    fill(store, "q", 100)
    ready = store.queue("q").ready
    assert ready.in_memory == 100  # nothing is on disk yet, so nothing may leave memory
    store.sync()
    assert (ready.count, ready.in_memory, ready.paged) == (100, 10, 90)
    assert store.queue("q").message_count == 100 and ready.bytes == 100 * 5


def test_consumers_get_every_message_in_order_across_pages(tmp_path: Path) -> None:
    store = Store(tmp_path, queue_budget=10)
    store.ch.declare_queue("q", durable=True, now=NOW)
    fill(store, "q", 60)
    store.sync()
    fill(store, "q", 40)  # more arrive while the middle is on disk: they queue behind it
    assert consume_all(store, "q") == [b"m%04d" % i for i in list(range(60)) + list(range(40))]
    assert store.queue("q").message_count == 0 and store.queue("q").ready.paged == 0


def test_a_priority_queue_pages_per_level_and_keeps_priority_order(tmp_path: Path) -> None:
    store = Store(tmp_path, queue_budget=4)
    store.ch.declare_queue("q", durable=True, now=NOW, arguments={"x-max-priority": 3})
    for i in range(30):
        store.ch.publish(b"%d-%02d" % (i % 3, i), routing_key="q",
                         properties=Properties(delivery_mode=2, priority=i % 3), now=NOW)
    store.sync()
    assert store.queue("q").ready.paged > 0
    got = consume_all(store, "q", prefetch=1)
    assert got == sorted(got, key=lambda body: (-int(body[:1]), body))


def test_get_returns_paged_messages_once_read_back(tmp_path: Path) -> None:
    store = Store(tmp_path, queue_budget=2)
    store.ch.declare_queue("q", durable=True, now=NOW)
    fill(store, "q", 6)
    store.sync()
    bodies = []
    while len(bodies) < 6:
        got = store.ch.get("q", now=NOW, no_ack=True)
        if isinstance(got, WaitForDisk):
            assert store.page_in(NOW) > 0  # the get asked for more
            continue
        assert got is not None
        bodies.append(got.message.body)
    assert bodies == [b"m%04d" % i for i in range(6)]


def test_messages_with_a_ttl_or_transient_stay_in_memory(tmp_path: Path) -> None:
    store = Store(tmp_path, queue_budget=2)
    store.ch.declare_queue("ttl", durable=True, now=NOW, arguments={"x-message-ttl": 60_000})
    store.ch.declare_queue("plain", durable=True, now=NOW)
    fill(store, "ttl", 10)  # expiry is enforced anywhere in the queue, so they stay in memory
    for i in range(10):
        store.ch.publish(b"t", routing_key="plain", now=NOW)  # transient: nothing on disk to read back
    store.sync()
    assert store.queue("ttl").ready.paged == 0 and store.queue("plain").ready.paged == 0


def test_purge_and_delete_drop_paged_messages_for_good(tmp_path: Path) -> None:
    store = Store(tmp_path, queue_budget=5)
    store.ch.declare_queue("q", durable=True, now=NOW)
    store.ch.declare_queue("d", durable=True, now=NOW)
    fill(store, "q", 50)
    fill(store, "d", 50)
    store.sync()
    assert store.ch.purge_queue("q") == 50
    assert store.ch.delete_queue("d", now=NOW) == 50
    assert store.queue("q").message_count == 0
    store.sync()
    store = store.restart()
    assert store.queue("q").message_count == 0 and "d" not in store.vhost.queues
    store.close()


def test_recovery_keeps_only_the_budget_in_memory_and_the_order(tmp_path: Path) -> None:
    store = Store(tmp_path, queue_budget=8)
    store.ch.declare_queue("q", durable=True, now=NOW)
    fill(store, "q", 50)
    first = store.ch.get("q", now=NOW)  # delivered, not acked: comes back redelivered, in memory
    assert first is not None
    store.sync()
    store = store.restart(crash=True)
    ready = store.queue("q").ready
    assert store.report.messages == 50 and store.report.paged == 42
    assert (ready.count, ready.in_memory) == (50, 8)
    assert consume_all(store, "q") == [b"m%04d" % i for i in range(50)]
    store.sync()
    store = store.restart()
    assert store.queue("q").message_count == 0  # the acks of paged-in messages stuck
    store.close()


def test_paging_matches_a_broker_that_never_pages(tmp_path: Path) -> None:
    """The same interleaving of publishes, syncs and consumption delivers the
    same messages in the same order with a budget of 3 as with no paging."""
    import random

    rng = random.Random(7)
    store = Store(tmp_path, queue_budget=3)
    plain = Broker().connect().open_channel()
    for ch in (store.ch, plain):
        ch.declare_queue("q", durable=True, now=NOW, arguments={"x-max-priority": 2})
    consumer = store.broker.connect().open_channel()
    reference = plain.connection.broker.connect().open_channel()
    for ch in (consumer, reference):
        ch.qos(2, now=NOW)
        ch.consume("q", now=NOW)
    seen: tuple[list[bytes], list[bytes]] = ([], [])
    n = 0
    for _ in range(400):
        action = rng.random()
        if action < 0.5:
            props = Properties(delivery_mode=2, priority=rng.randrange(3))
            for ch in (store.ch, plain):
                ch.publish(b"%d" % n, routing_key="q", properties=props, now=NOW)
            n += 1
        elif action < 0.7:
            store.sync()
        elif action < 0.8:
            store.page_in(NOW)
        for side, ch in enumerate((consumer, reference)):
            events = [e for e in ch.outbox if isinstance(e, Deliver)]
            ch.outbox.clear()
            if events:
                ch.delivered(len(events), now=NOW)
                seen[side].extend(e.message.body for e in events)
                ch.ack(events[-1].delivery_tag, multiple=True, now=NOW)
    # Drain both fully, then compare.
    for _ in range(200):
        store.sync()
        store.page_in(NOW)
        for side, ch in enumerate((consumer, reference)):
            events = [e for e in ch.outbox if isinstance(e, Deliver)]
            ch.outbox.clear()
            if events:
                ch.delivered(len(events), now=NOW)
                seen[side].extend(e.message.body for e in events)
                ch.ack(events[-1].delivery_tag, multiple=True, now=NOW)
    assert len(seen[1]) == n
    assert sorted(seen[0]) == sorted(seen[1])  # nothing lost, nothing doubled
    assert store.queue("q").message_count == 0


def test_pipelined_publishing_pages_out_from_the_oldest_written_message(tmp_path: Path) -> None:
    """Issue 10, defect 10: a publisher that never waits for confirms always
    has messages arriving while a sync is under way, so the newest message in
    memory is never on disk when paging is tried. Paging must still start
    (from the oldest written message) and keep memory near the budget."""
    budget, batch = 10, 50
    store = Store(tmp_path, queue_budget=budget)
    store.ch.declare_queue("q", durable=True, now=NOW)
    journal, ready = store.journal, store.queue("q").ready
    sent = 0
    for _ in range(20):
        pending, position = journal.take_batch()  # the driver starts a write...
        for _ in range(batch):  # ...and publishes keep arriving meanwhile
            store.ch.publish(b"m%04d" % sent, routing_key="q", properties=Properties(delivery_mode=2), now=NOW)
            sent += 1
        journal.log.write_and_sync(pending)
        journal.commit(position)
        assert ready.in_memory <= budget + batch
    assert ready.paged >= sent - budget - batch
    assert consume_all(store, "q") == [b"m%04d" % i for i in range(sent)]


def test_a_queue_over_budget_stays_on_the_list_until_under_it(tmp_path: Path) -> None:
    """Paging continues after later syncs with no new publish in between."""
    store = Store(tmp_path, queue_budget=10)
    store.ch.declare_queue("q", durable=True, now=NOW)
    journal, ready = store.journal, store.queue("q").ready
    pending, position = journal.take_batch()
    fill(store, "q", 100)  # all arrive during a write: none can page after it
    journal.log.write_and_sync(pending)
    journal.commit(position)
    assert ready.in_memory == 100
    store.sync()  # no publish since: the queue must still be due for paging
    assert (ready.in_memory, ready.paged) == (10, 90)


def test_purging_paged_messages_reports_each_drop(tmp_path: Path) -> None:
    """Issue 10, defect 7: every message a purge drops goes through the drop
    hook, paged ones too (core/queue.py's promise)."""
    store = Store(tmp_path, queue_budget=5)
    store.ch.declare_queue("q", durable=True, now=NOW)
    fill(store, "q", 50)
    store.sync()
    assert store.queue("q").ready.paged == 45
    seen: list[tuple[str, bytes | None, str]] = []
    store.broker.on_drop = lambda queue, message, reason: seen.append(
        (queue, None if message is None else message.body, reason))
    assert store.ch.purge_queue("q") == 50
    # The five in memory show their body; the 45 on disk only cannot.
    assert seen == [("q", b"m%04d" % i, "purged") for i in range(5)] + [("q", None, "purged")] * 45
    assert store.broker.drops["purged"] == 50


def test_a_page_in_batch_is_capped_in_bytes_and_never_empty() -> None:
    """Half the budget of big messages would come back at once (10,000 of
    10 KB: 100 MB); a batch stops at PAGE_IN_MAX_BYTES of bodies, and one
    message larger than that still comes back alone."""
    from amqlite.core.ready import PAGE_IN_MAX_BYTES, PagedRun

    run = PagedRun()
    size = PAGE_IN_MAX_BYTES // 4
    for seq in range(10):
        run.push(1, seq * 100, seq, size)
    assert [ref[2] for ref in run.take(8, PAGE_IN_MAX_BYTES)] == [0, 1, 2, 3]
    assert [ref[2] for ref in run.take(8, size // 2)] == [4]
    assert [ref[2] for ref in run.take(8)] == [5, 6, 7, 8, 9]
    assert run.bytes == 0
