"""Transient messages under memory pressure (issue 11): beyond a queue's
budget they are spilled to the journal and page out like persistent ones,
on durable and transient queues alike; spills are never recovered and
leave nothing behind once their messages are gone."""

from __future__ import annotations

import random
from pathlib import Path
from typing import NamedTuple

from hypothesis import given, settings
from hypothesis import strategies as st

from amqlite.core.broker import Broker
from amqlite.core.events import Deliver
from amqlite.core.message import Properties
from amqlite.store import records, segment_index

from .support import PERSISTENT, TINY, Store, live
from .test_paging import consume_all

NOW = 1000.0


def publish(store: Store, queue: str, bodies: range, properties: Properties = Properties()) -> None:
    for i in bodies:
        store.ch.publish(b"m%04d" % i, routing_key=queue, properties=properties, now=NOW)


def test_without_pressure_transient_messages_stay_in_memory(tmp_path: Path) -> None:
    store = Store(tmp_path, queue_budget=5)
    store.ch.declare_queue("q", now=NOW)
    publish(store, "q", range(50))
    store.sync()
    assert (store.queue("q").ready.in_memory, store.queue("q").ready.paged) == (50, 0)
    assert not store.journal.dirty  # nothing was written for them


def test_under_pressure_transient_messages_beyond_the_budget_page_out_and_come_back_in_order(tmp_path: Path) -> None:
    store = Store(tmp_path, queue_budget=5)
    store.ch.declare_queue("q", now=NOW)  # a transient queue: no durable record of it at all
    store.journal.set_memory_pressure(True)
    publish(store, "q", range(50))
    ready = store.queue("q").ready
    assert ready.in_memory == 50  # written yet? not until the next sync
    store.sync()
    assert (ready.count, ready.in_memory, ready.paged) == (50, 5, 45)
    assert consume_all(store, "q") == [b"m%04d" % i for i in range(50)]
    assert ready.paged == 0 and not live(store.journal)  # every spill let go of


def test_pressure_lowers_the_budget_and_lifting_it_restores_it(tmp_path: Path) -> None:
    store = Store(tmp_path, queue_budget=50_000)
    store.journal.set_memory_pressure(True)
    assert store.journal.queue_budget == 1_000
    store.journal.set_memory_pressure(False)
    assert store.journal.queue_budget == 50_000


def test_a_durable_queue_pages_both_kinds_in_order_and_recovers_only_persistent_ones(tmp_path: Path) -> None:
    store = Store(tmp_path, queue_budget=4)
    store.ch.declare_queue("q", durable=True, now=NOW)
    store.journal.set_memory_pressure(True)
    for i in range(40):
        store.ch.publish(b"m%04d" % i, routing_key="q", properties=PERSISTENT if i % 2 else Properties(), now=NOW)
    store.sync()
    assert store.queue("q").ready.paged == 36
    store = store.restart()
    # A restart forgets transient messages, spilled or not.
    assert consume_all(store, "q") == [b"m%04d" % i for i in range(1, 40, 2)]


def test_purge_and_delete_let_go_of_spilled_messages(tmp_path: Path) -> None:
    store = Store(tmp_path, queue_budget=3, segment_size=4096)
    store.ch.declare_queue("q", now=NOW)
    store.ch.declare_queue("d", durable=True, now=NOW)
    store.journal.set_memory_pressure(True)
    publish(store, "q", range(100))
    publish(store, "d", range(100))
    store.sync()
    assert store.queue("q").ready.paged == 97 and store.queue("d").ready.paged == 97
    assert store.ch.purge_queue("q") == 100
    assert store.ch.delete_queue("d", now=NOW) == 100
    assert not live(store.journal)
    store.sync()
    store.sync()
    assert len(store.segments()) <= 2  # the spills' segments are deleted


def test_a_delivered_spill_is_let_go_of_and_requeued_stays_in_memory(tmp_path: Path) -> None:
    store = Store(tmp_path, queue_budget=1)
    store.ch.declare_queue("q", now=NOW)
    store.journal.set_memory_pressure(True)
    publish(store, "q", range(3))  # the second and third are spilled, not yet written
    got = store.ch.get("q", now=NOW)
    got = store.ch.get("q", now=NOW)
    assert got is not None and got.message.body == b"m0001"
    store.ch.nack(got.delivery_tag, requeue=True, now=NOW)
    store.sync()
    ready = store.queue("q").ready
    assert ready.paged == 1  # the third; the requeued one stays in memory
    assert consume_all(store, "q") == [b"m0001", b"m0002"]
    assert not live(store.journal)


def test_a_segment_index_does_not_copy_spills(tmp_path: Path) -> None:
    store = Store(tmp_path, queue_budget=1, segment_size=TINY)
    store.ch.declare_queue("q", now=NOW)
    store.journal.set_memory_pressure(True)
    publish(store, "q", range(5))
    store.sync(index=False)
    kinds = {kind for _, _, kind, _ in store.journal.log.replay()}
    assert records.SPILL in kinds
    for segment in store.journal.log.sealed():
        with store.journal.log.mapped_segment(segment) as data:
            index = segment_index.build(segment, data)
        assert index is not None and index.others == []


class Outcome(NamedTuple):
    #: Bodies acked, on the store's side and on the never-paging side.
    acked: tuple[list[bytes], list[bytes]]
    published: int
    #: Messages still ready, still paged, and records still live, at the end.
    left: int
    left_paged: int
    live_records: int
    #: Messages on disk when the random phase ended.
    paged: int


def pressure_comes_and_goes(seed: int, directory: Path) -> Outcome:
    """Random publishes of both kinds, syncs, page-ins, pressure switching
    on and off and a slow consumer that acks or requeues, beside a broker
    that never pages; then everything is drained."""
    rng = random.Random(seed)
    store = Store(directory, queue_budget=3)
    plain = Broker().connect().open_channel()
    durable = rng.random() < 0.5
    for ch in (store.ch, plain):
        ch.declare_queue("q", durable=durable, now=NOW, arguments={"x-max-priority": 2})
    consumer, reference = store.broker.connect().open_channel(), plain.connection.broker.connect().open_channel()
    for ch in (consumer, reference):
        ch.qos(2, now=NOW)
        ch.consume("q", now=NOW)
    acked: tuple[list[bytes], list[bytes]] = ([], [])

    def take(side: int, ch) -> None:  # type: ignore[no-untyped-def]
        events = [e for e in ch.outbox if isinstance(e, Deliver)]
        ch.outbox.clear()
        if events:
            ch.delivered(len(events), now=NOW)
            if rng.random() < 0.2:
                ch.nack(events[-1].delivery_tag, multiple=True, requeue=True, now=NOW)
            else:
                ch.ack(events[-1].delivery_tag, multiple=True, now=NOW)
                acked[side].extend(e.message.body for e in events)

    n = 0
    for _ in range(300):
        action = rng.random()
        if action < 0.5:
            props = Properties(delivery_mode=rng.choice((1, 2)), priority=rng.randrange(3))
            for ch in (store.ch, plain):
                ch.publish(b"%d" % n, routing_key="q", properties=props, now=NOW)
            n += 1
        elif action < 0.65:
            store.sync()
        elif action < 0.75:
            store.page_in(NOW)
        elif action < 0.8:
            store.journal.set_memory_pressure(not store.journal.memory_pressure)
        elif action < 0.9:  # a slow consumer, so that the queue builds up and pages
            for side, ch in enumerate((consumer, reference)):
                take(side, ch)
    paged = store.queue("q").ready.paged
    store.journal.set_memory_pressure(False)
    for _ in range(300):
        store.sync()
        store.page_in(NOW)
        for side, ch in enumerate((consumer, reference)):
            take(side, ch)
    queue = store.queue("q")
    outcome = Outcome(acked, n, queue.message_count, queue.ready.paged, len(live(store.journal)), paged)
    store.close()
    return outcome


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32))
def test_pressure_that_comes_and_goes_loses_and_doubles_nothing(tmp_path_factory, seed: int) -> None:  # type: ignore[no-untyped-def]
    outcome = pressure_comes_and_goes(seed, tmp_path_factory.mktemp("spill"))
    for side in (0, 1):  # each message acked exactly once, requeues and pages notwithstanding
        assert sorted(int(body) for body in outcome.acked[side]) == list(range(outcome.published))
    assert outcome.left == 0 and outcome.left_paged == 0
    assert outcome.live_records == 0  # every record let go of, spills included


def test_the_random_scenario_does_page(tmp_path: Path) -> None:
    """Guards the property test: its scenario puts messages on disk."""
    assert sum(1 for seed in range(10) if pressure_comes_and_goes(seed, tmp_path / str(seed)).paged) >= 5
