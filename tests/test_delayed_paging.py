"""Millions of delayed messages cannot all stay in memory: a durable delayed
exchange keeps the near future in memory and pages the far future to disk,
in buckets that come back before they fall due (core/delayed.py)."""

from __future__ import annotations

import gc
import math
import random
import tracemalloc
from array import array
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

import amqlite
from amqlite import Properties
from amqlite.core.broker import Broker
from amqlite.core import delayed
from amqlite.core.delayed import BUCKET, LATER, PRELOAD, HeldMessages
from amqlite.core.message import Message
from amqlite.store.journal import DiskJournal

DELAYED = {"x-delayed-type": "direct"}


async def setup(broker: amqlite.Broker) -> amqlite.Channel:
    ch = await broker.channel()
    await ch.exchange_declare("later", "x-delayed-message", durable=True, arguments=DELAYED)
    await ch.queue_declare("due", durable=True)
    await ch.queue_bind("due", "later", "k")
    return ch


async def written(broker: amqlite.Broker) -> None:
    """Until the journal has written everything (so it can page out)."""
    journal = broker.core.journal
    assert journal is not None
    await broker._synced_to(journal.position)
    await trio.sleep(0)


async def hold(ch: amqlite.Channel, delays_ms: list[int]) -> None:
    for n, delay in enumerate(delays_ms):
        await ch.publish(b"%d" % n, exchange="later", routing_key="k",
                         properties=Properties(delivery_mode=2, headers={"x-delay": delay}))


async def collect(broker: amqlite.Broker, count: int, started: float) -> dict[int, float]:
    """When each message reached the queue, in seconds after ``started``."""
    ch = await broker.channel()
    arrived: dict[int, float] = {}
    async with await ch.consume("due", prefetch=100) as deliveries:
        async for delivery in deliveries:
            arrived[int(delivery.body)] = trio.current_time() - started
            delivery.ack()
            if len(arrived) == count:
                break
    return arrived


async def test_the_far_future_pages_out_and_every_message_fires_on_time(tmp_path: Path,
                                                                         mock_clock: trio.testing.MockClock) -> None:
    rng = random.Random(7)
    delays = [rng.randint(3600_000, 3 * 3600_000) for _ in range(400)]  # 1 to 3 hours
    async with amqlite.open_broker(data_dir=tmp_path, queue_memory_budget=40) as broker:
        ch = await setup(broker)
        started = trio.current_time()
        await hold(ch, delays)
        await written(broker)  # time stands still meanwhile
        held = broker.core.vhosts["/"].exchanges["later"].held
        assert len(held) == 400 and held.paged > 300  # most of it on disk only
        mock_clock.autojump_threshold = 0  # now let the hours pass
        arrived = await collect(broker, 400, started)
    # Every one, none before its time (but for float rounding of the clock
    # shifted to wall time). How late is for make bench-durable to
    # measure: the autojump clock runs on while a read is in a thread.
    assert sorted(arrived) == list(range(400))
    early = [(n, delay / 1000, arrived[n]) for n, delay in enumerate(delays) if arrived[n] < delay / 1000 - 1e-6]
    assert not early, early[:5]


async def test_messages_sharing_one_delay_page_out_too(tmp_path: Path, mock_clock: trio.testing.MockClock) -> None:
    """Issue 22, item 5: all delayed by one hour (the common "retry in an
    hour"), they share one bucket an hour away; the heap kept them all in
    memory (1,090 B each over AMQP), because it looked for a horizon among
    its own due times and found them all "due soon"."""
    async with amqlite.open_broker(data_dir=tmp_path, queue_memory_budget=40) as broker:
        ch = await setup(broker)
        started = trio.current_time()
        await hold(ch, [3600_000] * 400)
        await written(broker)
        held = broker.core.vhosts["/"].exchanges["later"].held
        assert len(held) == 400 and held.paged == 400
        mock_clock.autojump_threshold = 0
        arrived = await collect(broker, 400, started)
    assert sorted(arrived) == list(range(400))
    assert all(3600 - 1e-6 <= at for at in arrived.values())


def test_held_messages_spread_over_30_days_cost_little_more_than_their_records(tmp_path: Path) -> None:
    """Issue 22, item 5: one bucket a minute for 30 days is 43,200 buckets,
    each with its own objects and buffers (about 700 B), whatever few
    messages each held. Later buckets of an hour hold the records of the
    far future; what stays in memory per held message, once written, is
    its 24-byte record, its 25 bytes in the columns by id (scheduled
    messages), and little else (Python objects, by tracemalloc: 73 B
    here, of which 11 B are the journal's own, fixed, spread over 20,000;
    91 B once pages by due time have indexed every hour)."""
    count = 20_000
    broker = Broker()
    journal = DiskJournal(tmp_path, queue_budget=1000)
    journal.recover(broker, now=0.0)
    channel = broker.connect().open_channel()
    channel.declare_exchange("later", "x-delayed-message", durable=True, arguments=DELAYED)
    rng = random.Random(3)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for start in range(0, count, 1000):
            for _ in range(1000):
                channel.publish(b"x" * 100, exchange="later", routing_key="k", now=0.0, properties=Properties(
                    delivery_mode=2, headers={"x-delay": rng.randint(60_000, 30 * 86_400_000)}))
            pending, position = journal.take_batch()
            journal.log.write_and_sync(pending)
            journal.commit(position)  # pages out what this write brought to disk
        gc.collect()
        held_bytes = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        journal.close()
    held = broker.vhosts["/"].exchanges["later"].held
    assert len(held) == count and held.paged == count
    assert held_bytes / count < 80  # about 600 with a bucket a minute


async def test_held_messages_come_back_after_a_restart_paged(tmp_path: Path,
                                                             mock_clock: trio.testing.MockClock) -> None:
    delays = [60_000 * (60 + n % 90) for n in range(300)]  # 1 to 2.5 hours
    async with amqlite.open_broker(data_dir=tmp_path, queue_memory_budget=30) as broker:
        await hold(await setup(broker), delays)
        await written(broker)
    async with amqlite.open_broker(data_dir=tmp_path, queue_memory_budget=30) as broker:
        held = broker.core.vhosts["/"].exchanges["later"].held
        assert len(held) == 300 and held.paged >= 290  # back on disk only, not in memory
        mock_clock.autojump_threshold = 0
        arrived = await collect(broker, 300, trio.current_time())
    assert sorted(arrived) == list(range(300))


def test_a_bucket_comes_back_preload_seconds_before_it_starts() -> None:
    held = HeldMessages(budget=4)
    messages = [Message("", "k", Properties(), b"%d" % n) for n in range(12)]
    for n, message in enumerate(messages):
        held.hold(message, 1000.0 + 100 * n, 0.0)  # not journalled: buckets keep them in memory
    assert held.horizon < 1000.0 + 100 * 11  # the heap outgrew 4: the horizon came down
    fired = []
    now = 0.0
    while len(fired) < 12:
        deadline = held.next_deadline()
        assert deadline is not None
        now = max(now, deadline)
        held.bring_back(now)
        while (first := held.peek_due()) is not None and first[0] <= now:
            fired.append((first[0], held.pop()))
    assert [message for _, message in fired] == messages  # in due order, none lost
    assert all(due >= (due // BUCKET) * BUCKET - PRELOAD for due, _ in fired)


def test_a_later_bucket_splits_a_step_at_a_time_and_its_minutes_wait_for_the_end(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An hour bucket of 1,000,000 records split at once stopped the event
    loop for 0.8 s: it splits SPLIT_STEP records per timer step, and no
    minute of that hour comes back before the split ends (even with the
    timer an hour late, as after a stop), so nothing fires early or twice."""
    monkeypatch.setattr(delayed, "SPLIT_STEP", 3)
    held = HeldMessages(budget=4)
    hour = 100 * LATER
    disk = {(1, n): Message("", "k", Properties(), b"%d" % n, store_id=n) for n in range(20)}
    for n in range(20):
        held.restore(hour + 10 * n, n, 1, n)  # the hour's first 200 s
    now = hour - PRELOAD  # its first minute is due back too
    fired: list[bytes] = []
    mid_split = 0
    while len(fired) < 20:
        deadline = held.next_deadline()
        assert deadline is not None and mid_split < 50
        now = max(now, deadline)
        if held.bring_back(now):
            for key, refs in held.page_in_requests():
                held.paged_in(key, refs, [disk[segment, offset] for segment, offset, _, _ in refs])
        if held._later.records:  # mid-split: no minute came back
            assert held.peek_due() is None and held.next_deadline() == deadline
            mid_split += 1
        while (first := held.peek_due()) is not None and first[0] <= now:
            fired.append(held.pop().body)
    assert sorted(fired, key=int) == [b"%d" % n for n in range(20)] and len(held) == 0
    assert mid_split == 6  # 20 records, 3 a step: the seventh step ends it


@settings(max_examples=80, deadline=None)
@given(
    budget=st.integers(2, 12),
    steps=st.lists(st.one_of(
        st.tuples(st.just("hold"), st.floats(0, 4 * 3600)),
        st.tuples(st.just("wait"), st.floats(0, 1800)),
        st.tuples(st.just("write"), st.just(0.0)),
    ), max_size=80),
)
def test_held_messages_fire_once_each_never_early_never_late_whatever_pages(
        budget: int, steps: list[tuple[str, float]]) -> None:
    """A fake disk that reads at once: each message fires exactly once, at
    the first step at or after its due time, whatever the horizon and the
    paging did."""
    held = HeldMessages(budget)
    disk: dict[tuple[int, int], Message] = {}
    due_of: dict[int, float] = {}
    fired: dict[int, float] = {}
    now = 0.0

    def advance(to: float) -> None:
        while (deadline := held.next_deadline()) is not None and deadline <= to:
            at = max(now, deadline)
            if held.bring_back(at):
                for key, refs in held.page_in_requests():
                    held.paged_in(key, refs, [disk[segment, offset] for segment, offset, _, _ in refs])
            while (first := held.peek_due()) is not None and first[0] <= at:
                message = held.pop()
                assert message.store_id not in fired
                fired[message.store_id] = at  # type: ignore[index]

    for kind, value in steps:
        if kind == "hold":
            n = len(due_of)
            message = Message("", "k", Properties(), b"", store_id=n)
            due_of[n] = now + value
            disk[n + 1, 0] = message
            held.hold(message, now + value, now, n + 1, 0)
        elif kind == "write":
            held.page_out(lambda segment, offset: True)
        else:
            advance(now + value)
            now += value
    advance(math.inf)
    assert set(fired) == set(due_of) and len(held) == 0
    assert fired == due_of  # each at its due time exactly: a bucket is back before its first is due


@settings(max_examples=60, deadline=None)
@given(dues=st.lists(st.floats(min_value=0, max_value=5 * LATER, allow_nan=False), max_size=40),
       step=st.integers(1, 8), split_first=st.booleans())
def test_a_bulk_restore_files_what_a_restore_per_message_would(dues: list[float], step: int,
                                                               split_first: bool) -> None:
    """Start-up restores millions of held messages from the index columns
    in one call (restore_all, RESTORE_STEP records packed at a time): each
    record lands in the bucket of its due time, in id order, and every
    message fires once, in due order, on time."""
    held = HeldMessages(budget=4)
    if split_first:  # minutes of the first hours are filed in far buckets
        held.bring_back(0.0)
    split_until = held._split_until
    ids = array("Q", range(1, len(dues) + 1))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(delayed, "RESTORE_STEP", step)
        held.restore_all(array("d", dues), ids, array("I", [7] * len(dues)), array("I", ids))
    expected: dict[tuple[bool, int], bytes] = {}
    for msg_id, due in zip(ids, dues):
        far = due < split_until
        key = (far, math.floor(due / (BUCKET if far else LATER)))
        expected[key] = expected.get(key, b"") + delayed._RECORD.pack(due, msg_id, 7, msg_id)
    assert {**{(True, k): bytes(v) for k, v in held._far.records.items()},
            **{(False, k): bytes(v) for k, v in held._later.records.items()}} == expected
    assert len(held) == len(dues) and [held.due_of(msg_id) for msg_id in ids] == dues
    disk = {(7, n): Message("", "k", Properties(), b"%d" % n, store_id=n) for n in ids}
    fired: list[tuple[float, int]] = []
    now = 0.0
    while (deadline := held.next_deadline()) is not None:
        now = max(now, deadline)
        if held.bring_back(now):
            for key, refs in held.page_in_requests():
                held.paged_in(key, refs, [disk[segment, offset] for segment, offset, _, _ in refs])
        while (first := held.peek_due()) is not None and first[0] <= now:
            assert first[0] >= now - PRELOAD - BUCKET  # not late beyond the timer's own step
            fired.append((first[0], int(held.pop().body)))
    assert sorted(fired) == sorted(zip(dues, ids)) and [due for due, _ in fired] == sorted(dues)


def test_a_bulk_restore_tells_how_many_are_filed_after_each_step(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(delayed, "RESTORE_STEP", 3)
    held = HeldMessages(budget=4)
    ids = array("Q", range(1, 9))
    told: list[int] = []
    held.restore_all(array("d", [LATER * i for i in ids]), ids, array("I", [7] * 8), array("I", ids), told.append)
    assert told == [3, 6, 8] and len(held) == 8


def test_a_bulk_restore_refuses_ids_that_do_not_grow() -> None:
    held = HeldMessages(budget=4)
    held.restore(10.0, 5, 1, 0)
    with pytest.raises(ValueError):
        held.restore_all(array("d", [20.0]), array("Q", [5]), array("I", [1]), array("I", [0]))
    with pytest.raises(ValueError):
        held.restore_all(array("d", [20.0, 30.0]), array("Q", [9, 8]), array("I", [1, 1]), array("I", [0, 0]))
