"""Scheduled messages (issue 25 part 2): held delayed messages have an id
(their journal message id) and can be listed, cancelled, rescheduled and
fired now; each operation is journalled and survives a restart."""

from __future__ import annotations

import math
from array import array
from pathlib import Path

import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

import amqlite
from amqlite import Properties
from amqlite.core.delayed import HeldMessages
from amqlite.core.message import Message

from test_delayed_paging import collect, hold, setup, written


async def test_cancel_reschedule_and_fire_now_paged_and_after_a_restart(
        tmp_path: Path, mock_clock: trio.testing.MockClock) -> None:
    async with amqlite.open_broker(data_dir=tmp_path, queue_memory_budget=40) as broker:
        ch = await setup(broker)
        started = trio.current_time()
        await hold(ch, [3600_000 + n for n in range(200)])  # an hour away: on disk only
        await written(broker)
        exchange = broker.core.vhosts["/"].exchanges["later"]
        assert exchange.held.paged == 200
        page = exchange.held.scheduled(limit=50)
        assert len(page) == 50 and [due for _, due in page] == sorted(due for _, due in page)
        ids = [msg_id for msg_id, _ in exchange.held.scheduled(limit=1000)]
        assert len(ids) == 200
        assert exchange.held.scheduled(after=ids[49], limit=1)[0][0] == ids[50]  # paged by id
        assert exchange.cancel_scheduled(ids[0]) and not exchange.cancel_scheduled(ids[0])
        assert not exchange.cancel_scheduled(10**9)
        first_due = exchange.held.due_of(ids[1])
        assert first_due is not None
        assert exchange.reschedule(ids[1], first_due + 3600)  # an hour later
        assert exchange.reschedule(ids[2], first_due - 3601)  # due a second ago: fire now
        assert len(exchange.held) == 199
        arrived = await collect(broker, 1, started)
        assert list(arrived) == [2] and arrived[2] < 60
        assert exchange.cancel_scheduled(ids[3])
        await written(broker)
    # A restart: what was cancelled, rescheduled or fired stays so.
    async with amqlite.open_broker(data_dir=tmp_path, queue_memory_budget=40) as broker:
        exchange = broker.core.vhosts["/"].exchanges["later"]
        assert len(exchange.held) == 197
        assert exchange.held.due_of(ids[1]) == first_due + 3600
        assert exchange.held.due_of(ids[0]) is None and exchange.held.due_of(ids[3]) is None
        mock_clock.autojump_threshold = 0
        arrived = await collect(broker, 197, trio.current_time())
    assert sorted(arrived) == [1] + list(range(4, 200))
    assert arrived[1] > max(arrived[n] for n in range(4, 200))  # rescheduled an hour after the others


def test_ids_are_found_by_bisection_and_the_columns_shed_what_is_gone() -> None:
    held = HeldMessages(budget=10)
    for n in range(1, 5001):
        message = Message("x", "k", Properties(), b"")
        message.store_id = n
        held.hold(message, due=1000.0 + n, now=0.0, segment=1, offset=n)
    for n in range(1, 4001):
        assert held.cancel(n)
    assert len(held) == 1000 and held.due_of(4001) == 5001.0 and held.due_of(10) is None
    assert len(held._ids) < 5000  # shed once half was gone
    assert held.scheduled(due_from=5990, due_to=math.inf) == [(n, 1000.0 + n) for n in range(4990, 5001)]
    assert not held.bring_back(10_000.0)  # in memory still (never paged out): back in the heap
    fired = []
    while (first := held.peek_due()) is not None:
        fired.append(held.pop().store_id)
    assert fired == list(range(4001, 5001)) and len(held) == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["hold", "cancel", "reschedule", "fire", "wait", "page_out"]),
                          st.integers(0, 40), st.floats(0, 7200)), max_size=80))
def test_every_held_message_fires_once_at_its_last_due_time_unless_cancelled(
        steps: list[tuple[str, int, float]]) -> None:
    """Nothing lost, nothing fired twice: any interleaving of holds,
    cancels, reschedules (back to an earlier due time too), fire-nows,
    paging out and time passing."""
    held = HeldMessages(budget=4)
    messages: dict[int, Message] = {}  # by id: what the "disk" reads back
    expected: dict[int, float] = {}  # id -> last due time, while held
    fired: list[tuple[int, float]] = []
    cancelled: set[int] = set()
    now = 0.0

    def read(segment: int, offset: int) -> Message:
        copy = Message("x", "k", Properties(), b"%d" % offset)
        copy.store_id = offset  # as the journal's read of a HOLD record sets it
        return copy

    def run_until(when: float) -> None:
        nonlocal now
        now = when
        held.bring_back(now, read)
        while (first := held.peek_due()) is not None and first[0] <= now:
            message = held.pop()
            assert message.store_id is not None
            assert expected.pop(message.store_id) == first[0]  # held, and due then: not stale, not early
            fired.append((message.store_id, first[0]))
            message.store_id = None  # released: routed on, as Journal.released does

    for action, n, value in steps:
        chosen = sorted(expected)[n % len(expected)] if expected else None
        if action == "hold":
            msg_id = len(messages) + 1
            message = messages[msg_id] = Message("x", "k", Properties(), b"%d" % msg_id)
            message.store_id = msg_id
            held.hold(message, now + 1 + value, now, segment=1, offset=msg_id)
            expected[msg_id] = now + 1 + value
        elif action == "cancel" and chosen is not None:
            assert held.cancel(chosen)
            del expected[chosen]
            cancelled.add(chosen)
        elif action == "reschedule" and chosen is not None:
            assert held.reschedule(chosen, now + value)
            expected[chosen] = now + value
        elif action == "fire" and chosen is not None:
            assert held.reschedule(chosen, now)
            expected[chosen] = now
        elif action == "page_out":
            held.page_out(lambda segment, offset: True)
        elif action == "wait":
            run_until(now + value / 10)
        assert len(held) == len(expected)
    run_until(now + 10 * 86_400)
    assert len(held) == 0 and held.scheduled() == []
    ids = [msg_id for msg_id, _ in fired]
    assert len(ids) == len(set(ids)) and set(ids) == set(messages) - cancelled  # each once, none lost
    assert not held.cancel(1) and not held.reschedule(1, now)


async def test_messages_held_in_memory_only_have_ids_too(mock_clock: trio.testing.MockClock) -> None:
    """No data directory: held messages get the broker's numbers (or
    their message_id) and are listed, cancelled, rescheduled and fired."""
    mock_clock.autojump_threshold = 0
    async with amqlite.open_broker() as broker:
        ch = await broker.channel()
        await ch.exchange_declare("later", "x-delayed-message", arguments={"x-delayed-type": "direct"})
        await ch.queue_declare("due")
        await ch.queue_bind("due", "later", "k")
        started = trio.current_time()
        for n in range(4):
            await ch.publish(b"%d" % n, exchange="later", routing_key="k", properties=Properties(
                message_id="twice" if n < 2 else None, headers={"x-delay": 60_000 + n}))
        exchange = broker.core.vhosts["/"].exchanges["later"]
        listed = exchange.held.scheduled()
        held_at = listed[0][1] - 60  # the broker's clock when they were held
        assert [round(due - held_at, 3) for _, due in listed] == [60.0, 60.001, 60.002, 60.003]
        numbers = [msg_id for msg_id, _ in listed]
        assert exchange.find_scheduled("twice") == numbers[:2] and exchange.find_scheduled(str(numbers[0])) == []
        assert exchange.held.resident(numbers[3]) is not None and exchange.held.named(numbers[0])
        assert exchange.cancel_scheduled(numbers[3]) and not exchange.find_scheduled(str(numbers[3]))
        assert all(exchange.reschedule(msg_id, held_at + 3600) for msg_id in exchange.find_scheduled("twice"))
        assert exchange.reschedule(numbers[2], held_at)  # fire now
        arrived = await collect(broker, 1, started)
        assert list(arrived) == [2] and arrived[2] < 1
        assert len(exchange.held) == 2
        arrived = await collect(broker, 2, started)
        assert sorted(arrived) == [0, 1] and min(arrived.values()) >= 3600


async def test_message_ids_name_held_messages_after_a_restart(tmp_path: Path) -> None:
    async with amqlite.open_broker(data_dir=tmp_path, queue_memory_budget=40) as broker:
        ch = await setup(broker)
        for n in range(100):
            await ch.publish(b"%d" % n, exchange="later", routing_key="k", properties=Properties(
                delivery_mode=2, message_id=f"m{n % 50}", headers={"x-delay": 3600_000 + n}))
        await ch.publish(b"transient", exchange="later", routing_key="k",
                         properties=Properties(message_id="m0", headers={"x-delay": 3600_000}))
        exchange = broker.core.vhosts["/"].exchanges["later"]
        assert len(exchange.find_scheduled("m0")) == 3
        assert exchange.cancel_scheduled(exchange.find_scheduled("m1")[0])
        await written(broker)
    async with amqlite.open_broker(data_dir=tmp_path, queue_memory_budget=40) as broker:
        exchange = broker.core.vhosts["/"].exchanges["later"]
        assert len(exchange.held) == 99  # the transient one is gone
        assert len(exchange.find_scheduled("m0")) == 2 and len(exchange.find_scheduled("m1")) == 1
        assert all(len(exchange.find_scheduled(f"m{n}")) == 2 for n in range(2, 50))
        numbers = [msg_id for msg_id, _ in exchange.held.scheduled(limit=1000)]
        assert all(exchange.find_scheduled(str(number)) == [] for number in numbers)  # all named


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 30), st.integers(0, 5)), max_size=400),
       st.sampled_from([2, 3, 8]))
def test_sorted_pairs_keep_what_a_sorted_list_keeps(steps: list[tuple[bool, int, int]], chunk: int) -> None:
    from amqlite.core import sortedpairs

    old, sortedpairs.CHUNK = sortedpairs.CHUNK, chunk
    try:
        pairs, model = sortedpairs.SortedPairs("Q"), []
        for add, key, value in steps:
            if add:
                pairs.add(key, value)
                model.append((key, value))
            else:
                assert pairs.remove(key, value) == ((key, value) in model)
                if (key, value) in model:
                    model.remove((key, value))
            model.sort()
            assert len(pairs) == len(model)
        assert list(pairs.from_(0)) == model
        for key in range(31):
            assert pairs.values_of(key) == [v for k, v in model if k == key]
            assert list(pairs.from_(key, 3)) == [p for p in model if p >= (key, 3)]
    finally:
        sortedpairs.CHUNK = old


async def test_a_rescheduled_retry_keeps_its_new_due_time_after_a_restart(
        tmp_path: Path, mock_clock: trio.testing.MockClock) -> None:
    """A queue's retry waiting out its delay (core/retries.py): rescheduled
    (journalled as a RETRY record), it keeps its new due time through a
    restart; a grouped queue's retry fired now comes back at the head of
    its group."""
    mock_clock.autojump_threshold = 0
    arguments = {"x-delayed-retry-min": 60_000, "x-message-group-header": "order"}
    async with amqlite.open_broker(data_dir=tmp_path) as broker:
        ch = await broker.channel()
        await ch.queue_declare("work", durable=True, arguments=arguments)
        for n in range(3):
            await ch.publish(b"%d" % n, routing_key="work", properties=Properties(
                delivery_mode=2, message_id=f"job-{n}", headers={"order": "A"}))
        delivery = await ch.get("work")
        assert delivery is not None and delivery.body == b"0"
        delivery.nack(requeue=True)
        queue = broker.core.vhosts["/"].queues["work"]
        (seq,) = queue.retries.lookup("job-0")
        waiting = queue.retries.due_of(seq)
        assert waiting is not None and queue.reschedule_retry(seq, waiting + 3600)
        assert await ch.get("work") is None  # its group waits for it
        await written(broker)
    async with amqlite.open_broker(data_dir=tmp_path) as broker:
        queue = broker.core.vhosts["/"].queues["work"]
        assert queue.retries.due_of(seq) == waiting + 3600 and queue.retries.lookup(str(seq)) == []
        assert queue.reschedule_retry(seq, waiting - 60)  # fire now
        ch = await broker.channel()
        await trio.sleep(0.01)
        delivery = await ch.get("work")
        assert delivery is not None and delivery.body == b"0" and delivery.redelivered
        assert len(queue.retries) == 0 and not queue.cancel_retry(seq, 0.0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 30 * 86_400), min_size=1, max_size=60),
       st.lists(st.tuples(st.sampled_from(["hold", "cancel", "reschedule", "split", "fire"]), st.integers(0, 100),
                          st.floats(0, 30 * 86_400)), max_size=40),
       st.floats(0, 30 * 86_400), st.floats(0, 30 * 86_400), st.integers(1, 7))
def test_pages_by_due_time_list_what_is_held_in_due_order(
        restored: list[float], steps: list[tuple[str, int, float]], low: float, width: float, limit: int) -> None:
    """Held messages restored at start-up (indexed by due time an hour at
    a time, when a page or a split reaches them) and held, cancelled,
    rescheduled or fired since: pages by due time, followed from page to
    page, list exactly those due in the range, in (due, id) order."""
    held = HeldMessages(budget=4)
    ids = array("Q", range(1, len(restored) + 1))
    held.restore_all(array("d", restored), ids, array("I", [1] * len(ids)), array("I", ids))
    expected = dict(zip(ids, restored))
    now = 0.0

    def read(segment: int, offset: int) -> Message:
        copy = Message("x", "k", Properties(), b"")
        copy.store_id = offset
        return copy

    for action, n, value in steps:
        chosen = sorted(expected)[n % len(expected)] if expected else None
        if action == "hold":
            message = Message("x", "k", Properties(), b"")
            held.hold(message, value + 1, now)
            expected[max(held._last_id, 0)] = value + 1
        elif action == "cancel" and chosen is not None:
            assert held.cancel(chosen)
            del expected[chosen]
        elif action == "reschedule" and chosen is not None:
            assert held.reschedule(chosen, value)
            expected[chosen] = value
        elif action == "split":  # time passes: hours split, due ones fire
            now += value / 10
            held.bring_back(now, read)
            while (first := held.peek_due()) is not None and first[0] <= now:
                due = first[0]
                gone = [msg_id for msg_id, at in expected.items() if at == due]
                held.pop()
                del expected[min(gone)]
    want = sorted((due, msg_id) for msg_id, due in expected.items() if low <= due < low + width)
    got: list[tuple[float, int]] = []
    after = None
    while page := held.scheduled_by_due(low, low + width, after, limit):
        assert len(page) <= limit
        got += [(due, msg_id) for msg_id, due in page]
        after = got[-1]
    assert got == want
