"""The dead-letter workbench in the pure core: browse (core/browse.py),
filters, and selective redrive, delete and count jobs (core/redrive.py)."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import dead_letter_broker as _setup
from support import props
from support import reject_all as _reject_all

from amqlite.core.broker import Broker
from amqlite.core.browse import Filter, page, parse_filter
from amqlite.core.redrive import COUNT, DELETE, DONE, REDRIVE, Job


def _job(broker: Broker, action: str, chosen: Filter, now: float = 0, **options) -> Job:
    queue = broker.vhosts["/"].queues["dlq"]
    return Job(1, "/", "dlq", action, chosen, now, queue.last_seq, **options)


def _run(broker: Broker, job: Job, now: float, batch: int = 500) -> None:
    """Step ``job`` at ``now`` until it stops moving (all in memory here)."""
    vhost = broker.vhosts["/"]
    queue = vhost.queues["dlq"]
    while job.running:
        before = (job.cursor, job.done)
        items = job.candidates(queue, batch)
        job.apply(vhost, queue, [(item, item.message) for item in items], now)
        if (job.cursor, job.done) == before:
            break


def test_browsing_changes_neither_the_order_nor_the_redelivered_flags() -> None:
    def run(browse: bool) -> list[tuple[bytes, bool]]:
        broker = Broker()
        ch = broker.connect().open_channel()
        ch.declare_queue("q", now=0, arguments={"x-max-priority": 5})
        for i in range(6):
            ch.publish(b"m%d" % i, routing_key="q", properties=props(priority=i % 3), now=0)
        got = ch.get("q", now=0)
        ch.reject(got.delivery_tag, requeue=True, now=0)  # one redelivered, back at its place
        queue = broker.vhosts["/"].queues["q"]
        if browse:
            shown = page(queue, 0, 100)
            assert [entry.message.body for entry in shown] == [b"m2", b"m5", b"m1", b"m4", b"m0", b"m3"]
            assert [entry.message.body for entry in page(queue, 2, 2)] == [b"m1", b"m4"]
            assert queue.message_count == 6
        out = []
        while (got := ch.get("q", now=0, no_ack=True)) is not None:
            out.append((got.message.body, got.redelivered))
        return out

    assert run(browse=True) == run(browse=False)
    assert run(browse=True)[0] == (b"m2", True)


def test_filters_select_by_reason_queue_count_header_key_and_time() -> None:
    broker, ch = _setup()
    ch.publish(b"a1", exchange="work", routing_key="a", properties=props(headers={"tenant": "t1"}), now=0)
    ch.publish(b"b1", exchange="work", routing_key="b", properties=props(headers={"tenant": "t2"}), now=0)
    _reject_all(ch, "a", now=1000)
    _reject_all(ch, "b", now=2000)
    messages = {entry.message.body: entry.message for entry in page(broker.vhosts["/"].queues["dlq"], 0, 10)}

    def chosen(**fields) -> set[bytes]:
        wanted = parse_filter(fields)
        return {body for body, message in messages.items() if wanted.matches(message)}

    assert chosen() == {b"a1", b"b1"}
    assert chosen(reason="rejected") == {b"a1", b"b1"}
    assert chosen(reason="expired") == set()
    assert chosen(queue="a") == {b"a1"}
    assert chosen(min_deaths="1", max_deaths=1) == {b"a1", b"b1"}
    assert chosen(min_deaths=2) == set()
    assert chosen(headers={"tenant": "t2"}) == {b"b1"}
    assert chosen(routing_key="a") == {b"a1"}
    assert chosen(since=1500) == {b"b1"}
    assert chosen(until="1970-01-01T00:25:00Z") == {b"a1"}  # 1500 s


@pytest.mark.parametrize("fields", [{"reason": "bored"}, {"min_deaths": "x"}, {"min_deaths": -1},
                                    {"since": "yesterday"}, {"headers": ["a"]}, {"queue": 5}])
def test_a_bad_filter_says_which_field(fields) -> None:
    with pytest.raises(ValueError, match=next(iter(fields))):
        parse_filter(fields)


def test_a_selective_redrive_moves_only_what_matches_and_marks_it() -> None:
    broker, ch = _setup()
    for i in range(4):
        ch.publish(b"a%d" % i, exchange="work", routing_key="a", properties=props(headers={"n": i % 2}), now=0)
    _reject_all(ch, "a")
    job = _job(broker, REDRIVE, parse_filter({"headers": {"n": "1"}}))
    _run(broker, job, now=5)
    assert (job.state, job.matched, job.done, job.scanned) == (DONE, 2, 2, 4)
    queues = broker.vhosts["/"].queues
    assert [e.message.body for e in page(queues["dlq"], 0, 10)] == [b"a0", b"a2"]
    back = ch.get("a", now=5)
    assert back.message.body == b"a1" and back.message.routing_key == "a"
    assert back.message.headers["x-redrive-count"] == 1
    assert back.message.headers["x-last-redrive"] == datetime.datetime.fromtimestamp(5, tz=datetime.timezone.utc)
    # It fails again and comes back: the count grows, x-death keeps both rounds.
    ch.reject(back.delivery_tag, requeue=False, now=6)
    _reject_all(ch, "a", now=6)
    job = _job(broker, REDRIVE, parse_filter({"headers": {"n": "1"}}), to="b")
    _run(broker, job, now=7)
    assert job.done == 2
    again = [ch.get("b", now=7).message for _ in range(2)]
    assert [m.body for m in again] == [b"a1", b"a3"]
    assert again[0].headers["x-redrive-count"] == 2 and again[0].headers["x-death"][0]["count"] == 2


def test_a_dry_run_counts_and_moves_nothing_and_a_delete_removes() -> None:
    broker, ch = _setup()
    for i in range(5):
        ch.publish(b"%d" % i, exchange="work", routing_key="a" if i < 3 else "b", now=0)
    _reject_all(ch, "a")
    _reject_all(ch, "b")
    queue = broker.vhosts["/"].queues["dlq"]
    count = _job(broker, COUNT, Filter(queue="a"))
    _run(broker, count, now=1)
    assert (count.matched, count.done, queue.message_count) == (3, 0, 5)
    delete = _job(broker, DELETE, Filter(queue="b"))
    _run(broker, delete, now=1)
    assert delete.done == 2 and [e.message.body for e in page(queue, 0, 10)] == [b"0", b"1", b"2"]
    assert broker.drops["deleted"] == 2


def test_a_rate_limit_moves_no_more_than_the_rate_as_time_passes() -> None:
    broker, ch = _setup()
    for i in range(10):
        ch.publish(b"%d" % i, exchange="work", routing_key="a", now=0)
    _reject_all(ch, "a")
    job = _job(broker, REDRIVE, Filter(), now=100, rate=2.0)
    moved = []
    for now in (100, 100, 100.4, 100.5, 101, 101, 103):
        assert job.next_due(now) <= now or job.done == moved[-1]
        _run(broker, job, now=now)
        moved.append(job.done)
    # One at once, then two a second, with at most a second's worth saved up.
    assert moved == [1, 1, 1, 2, 3, 3, 5]
    assert job.next_due(103) == 103.5


def test_messages_that_die_again_after_the_start_are_left_for_the_next_job() -> None:
    broker, ch = _setup()
    ch.publish(b"x", exchange="work", routing_key="a", now=0)
    _reject_all(ch, "a")
    job = _job(broker, REDRIVE, Filter())
    vhost, queue = broker.vhosts["/"], broker.vhosts["/"].queues["dlq"]
    items = job.candidates(queue, 10)
    job.apply(vhost, queue, [(item, item.message) for item in items], 1)
    _reject_all(ch, "a", now=1)  # back in the dead-letter queue, behind the job
    items = job.candidates(queue, 10)
    assert items == []
    job.apply(vhost, queue, [], 1)
    assert job.state == DONE and job.done == 1 and queue.message_count == 1


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("ab"), st.integers(0, 2), st.booleans(), st.integers(0, 2)), max_size=25),
       st.one_of(st.none(), st.sampled_from("ab")), st.one_of(st.none(), st.integers(0, 2)),
       st.integers(1, 7), st.one_of(st.none(), st.integers(0, 10)), st.integers(0, 4))
def test_a_redrive_moves_each_matching_message_exactly_once(messages, died_in, tag, batch, limit, requeued) -> None:
    """With priorities in the dead-letter queue, some of its messages
    requeued (out of publication order), and steps of any size."""
    broker, ch = _setup({"x-max-priority": 2})
    for n, (queue, t, first, priority) in enumerate(messages):
        ch.publish(b"%d" % n, exchange="work", routing_key=queue,
                   properties=props(headers={"t": t}, priority=priority), now=0)
        if first:
            _reject_all(ch, queue)
    _reject_all(ch, "a")
    _reject_all(ch, "b")
    taken = [ch.get("dlq", now=0) for _ in range(requeued)]
    for got in reversed([got for got in taken if got is not None]):
        ch.reject(got.delivery_tag, requeue=True, now=0)
    queues = broker.vhosts["/"].queues
    before = [e.message.body for e in page(queues["dlq"], 0, 1000)]
    chosen = Filter(queue=died_in, headers={} if tag is None else {"t": str(tag)})
    matching = [e.message.body for e in page(queues["dlq"], 0, 1000) if chosen.matches(e.message)]
    job = _job(broker, REDRIVE, chosen, limit=limit)
    _run(broker, job, now=1, batch=batch)
    moved = matching if limit is None else matching[:limit]
    assert job.done == len(moved) and job.state == DONE
    left = [e.message.body for e in page(queues["dlq"], 0, 1000)]
    assert left == [body for body in before if body not in moved]  # the rest in order
    back = [ch.get(q, now=1, no_ack=True) for q in "ab" for _ in range(queues[q].message_count)]
    assert sorted(got.message.body for got in back) == sorted(moved)
    for got in back:
        assert got.message.headers["x-redrive-count"] == 1
        assert got.message.routing_key == got.message.headers["x-death"][0]["queue"]


def test_a_full_destination_that_dead_letters_refusals_gets_no_copy() -> None:
    """Before, the copy it refused was dead-lettered back into the
    dead-letter queue while the original stayed there: a duplicate."""
    broker, ch = _setup()
    ch.declare_queue("full", now=0, arguments={"x-max-length": 1, "x-overflow": "reject-publish-dlx",
                                               "x-dead-letter-exchange": "dlx"})
    ch.publish(b"occupant", routing_key="full", now=0)
    ch.publish(b"x", exchange="work", routing_key="a", now=0)
    _reject_all(ch, "a")
    job = _job(broker, REDRIVE, Filter(), to="full")
    _run(broker, job, now=1)
    assert (job.matched, job.done, job.skipped) == (1, 0, 1)
    assert ch.redrive_queue("dlq", now=1, to="full") == 0
    queues = broker.vhosts["/"].queues
    assert [e.message.body for e in page(queues["dlq"], 0, 10)] == [b"x"]
    assert queues["full"].message_count == 1


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(0, 3), max_size=30), st.integers(0, 6), st.integers(0, 35), st.integers(1, 10))
def test_a_browse_shows_exactly_the_delivery_order(priorities, requeued, offset, limit) -> None:
    """Whatever the priorities and requeues, the browse is what consumers
    would get, page by page; and browsing changes nothing of it."""
    broker = Broker()
    ch = broker.connect().open_channel()
    ch.declare_queue("q", now=0, arguments={"x-max-priority": 3})
    for n, priority in enumerate(priorities):
        ch.publish(b"%d" % n, routing_key="q", properties=props(priority=priority), now=0)
    taken = [got for got in (ch.get("q", now=0) for _ in range(requeued)) if got is not None]
    for got in taken[::2]:
        ch.reject(got.delivery_tag, requeue=True, now=0)
    for got in taken[1::2]:
        ch.ack(got.delivery_tag, now=0)
    queue = broker.vhosts["/"].queues["q"]
    shown = [entry.message.body for entry in page(queue, 0, 100)]
    assert [entry.message.body for entry in page(queue, offset, limit)] == shown[offset:offset + limit]
    delivered = []
    while (got := ch.get("q", now=0, no_ack=True)) is not None:
        delivered.append(got.message.body)
    assert delivered == shown
