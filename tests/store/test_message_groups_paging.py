"""Message groups on a durable queue whose backlog pages to disk: members
on disk keep their place in their group, and after a restart the queue's
messages come back in memory, where their groups can be known."""

from __future__ import annotations

from pathlib import Path

from amqlite.core.events import Deliver
from amqlite.core.message import Properties

from .support import Store

NOW = 1000.0


def test_groups_keep_order_through_paging_and_a_restart(tmp_path: Path) -> None:
    store = Store(tmp_path, queue_budget=10)
    store.ch.declare_queue("q", durable=True, arguments={"x-message-group-header": "g"}, now=NOW)
    for i in range(200):
        store.ch.publish(b"%d" % i, routing_key="q", now=NOW,
                         properties=Properties(delivery_mode=2, headers={"g": i % 3}))
    store.sync()
    assert store.queue("q").ready.paged == 190
    store = store.restart(now=NOW, crash=True)
    assert store.queue("q").ready.paged == 0 and store.queue("q").message_count == 200
    workers = [store.broker.connect().open_channel() for _ in range(3)]
    for worker in workers:
        worker.consume("q", now=NOW)
    order: dict[int, list[int]] = {0: [], 1: [], 2: []}
    for _ in range(300):
        progressed = False
        for worker in workers:
            events = [e for e in worker.outbox if isinstance(e, Deliver)]
            worker.outbox.clear()
            worker.delivered(len(events), now=NOW)
            out = [int(e.message.body) for e in events]
            assert len({n % 3 for n in out}) == len(out), f"two of one group out at once: {out}"
            for event, n in zip(events, out):
                order[n % 3].append(n)
                worker.ack(event.delivery_tag, now=NOW)
                progressed = True
        store.sync()
        store.page_in(NOW)
        if not progressed and not store.queue("q").message_count:
            break
    for group, numbers in order.items():
        assert numbers == list(range(group, 200, 3))


def test_paged_members_wait_their_turn(tmp_path: Path) -> None:
    store = Store(tmp_path, queue_budget=10)
    store.ch.declare_queue("q", durable=True, arguments={"x-message-group-header": "g"}, now=NOW)
    for i in range(100):
        store.ch.publish(b"%d" % i, routing_key="q", now=NOW,
                         properties=Properties(delivery_mode=2, headers={"g": "one" if i < 50 else "two"}))
    store.sync()
    assert store.queue("q").ready.paged == 90
    ch = store.broker.connect().open_channel()
    ch.consume("q", now=NOW)
    seen: list[int] = []
    while len(seen) < 100:
        events = [e for e in ch.outbox if isinstance(e, Deliver)]
        ch.outbox.clear()
        ch.delivered(len(events), now=NOW)
        assert len(events) <= 2
        for event in events:
            seen.append(int(event.message.body))
            ch.ack(event.delivery_tag, now=NOW)
        if not events:
            store.sync()
            assert store.page_in(NOW) or ch.outbox
    assert [n for n in seen if n < 50] == list(range(50))
    assert [n for n in seen if n >= 50] == list(range(50, 100))
