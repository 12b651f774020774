"""Millions of delayed messages cannot all stay in memory: a durable delayed
exchange keeps the near future in memory and pages the far future to disk,
in buckets that come back before they fall due (core/delayed.py)."""

from __future__ import annotations

import math
import random
from pathlib import Path

import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

import amqlite
from amqlite import Properties
from amqlite.core.delayed import BUCKET, PRELOAD, HeldMessages
from amqlite.core.message import Message

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
        held.hold(message, 1000.0 + 100 * n)  # not journalled: buckets keep them in memory
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
            held.hold(message, now + value, n + 1, 0)
        elif kind == "write":
            held.page_out(lambda segment, offset: True)
        else:
            advance(now + value)
            now += value
    advance(math.inf)
    assert set(fired) == set(due_of) and len(held) == 0
    assert fired == due_of  # each at its due time exactly: a bucket is back before its first is due
