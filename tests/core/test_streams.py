"""Stream queues in the pure core: offsets, readers, retention, chunks."""

from __future__ import annotations

import math
import time
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amqlite.core.broker import Broker
from amqlite.core.channel import Channel
from amqlite.core.errors import NotImplemented_, PreconditionFailed
from amqlite.core.message import Message, Properties
from amqlite.core.stream import Stream, _Reader

from support import deliveries

STREAM = {"x-queue-type": "stream"}


def declare(ch: Channel, name: str = "s", now: float = 0.0, **arguments: object) -> Stream:
    stream = ch.declare_queue(name, durable=True, arguments={**STREAM, **arguments}, now=now)
    assert isinstance(stream, Stream)
    return stream


def offsets_of(events: list) -> list[int]:
    return [event.stream_offset for event in events]


def reader(broker: Broker, offset: object = "first", prefetch: int = 1000, now: float = 0.0) -> Channel:
    ch = broker.connect().open_channel()
    ch.qos(prefetch, now=now)
    ch.consume("s", now=now, arguments={"x-stream-offset": offset})
    return ch


def test_every_reader_gets_everything_from_its_offset_and_acks_remove_nothing(broker: Broker, ch: Channel) -> None:
    stream = declare(ch)
    for n in range(10):
        ch.publish(b"%d" % n, routing_key="s", now=0.0)
    early, late = reader(broker, "first"), reader(broker, 7)
    got = deliveries(early)
    assert offsets_of(got) == list(range(10)) and [e.message.body for e in got] == [b"%d" % n for n in range(10)]
    assert offsets_of(deliveries(late)) == [7, 8, 9]
    early.ack(got[-1].delivery_tag, multiple=True, now=0.0)
    assert stream.message_count == 10 and stream.first == 0
    assert offsets_of(deliveries(reader(broker, "first"))) == list(range(10))


def test_prefetch_is_required_and_bounds_each_reader(broker: Broker, ch: Channel) -> None:
    declare(ch)
    with pytest.raises(PreconditionFailed, match="consumer prefetch count is not set"):
        ch.consume("s", now=0.0)
    for n in range(5):
        ch.publish(b"x", routing_key="s", now=0.0)
    slow = reader(broker, "first", prefetch=2)
    first = deliveries(slow)
    assert offsets_of(first) == [0, 1]
    slow.ack(first[0].delivery_tag, now=0.0)
    assert offsets_of(deliveries(slow)) == [2]


def test_get_purge_and_nack_are_refused_at_connection_level(broker: Broker, ch: Channel) -> None:
    declare(ch)
    ch.publish(b"x", routing_key="s", now=0.0)
    for refused in (lambda: ch.get("s", now=0.0), lambda: ch.purge_queue("s")):
        with pytest.raises(NotImplemented_) as error:
            refused()
        assert error.value.connection_level
    consumer = reader(broker)
    tag = deliveries(consumer)[0].delivery_tag
    with pytest.raises(NotImplemented_, match="basic.nack and basic.reject"):
        consumer.nack(tag, now=0.0)
    assert tag in consumer.unacked  # still there for the close that follows


def test_offsets_by_time_and_interval_find_the_first_chunk_at_or_after(broker: Broker, ch: Channel) -> None:
    declare(ch)
    base = datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp()
    for minute in range(60):  # one message a minute for an hour
        ch.publish(b"%d" % minute, routing_key="s", now=base + 60 * minute)
    end = base + 3600
    assert offsets_of(deliveries(reader(broker, "30m", now=end)))[0] == 30
    assert offsets_of(deliveries(reader(broker, "1h", now=end)))[0] == 0
    assert offsets_of(deliveries(reader(broker, "7D", now=end)))[0] == 0
    at = datetime.fromtimestamp(base + 60 * 45 - 1, timezone.utc)
    assert offsets_of(deliveries(reader(broker, at, now=end)))[0] == 45
    assert deliveries(reader(broker, "1s", now=end)) == []  # nothing that recent
    assert offsets_of(deliveries(reader(broker, "last", now=end))) == [59]


def test_last_is_the_first_message_of_the_last_chunk(broker: Broker, ch: Channel) -> None:
    declare(ch)
    ch.publish(b"a", routing_key="s", now=1.0)
    for body in (b"b", b"c", b"d"):  # appended at one instant: one chunk
        ch.publish(body, routing_key="s", now=2.0)
    assert offsets_of(deliveries(reader(broker, "last", now=3.0))) == [1, 2, 3]


@pytest.mark.parametrize("spec", ["bogus", 1.5, "10x", True])
def test_an_unusable_offset_is_406_not_a_crash(broker: Broker, ch: Channel, spec: object) -> None:
    declare(ch)
    ch.qos(10, now=0.0)
    with pytest.raises(PreconditionFailed, match="invalid x-stream-offset"):
        ch.consume("s", now=0.0, arguments={"x-stream-offset": spec})
    assert ch.consumers == {}


def test_retention_by_size_removes_whole_old_segments_never_the_last(broker: Broker, ch: Channel) -> None:
    stream = declare(ch, **{"x-max-length-bytes": 250, "x-stream-max-segment-size-bytes": 100})
    for n in range(100):
        ch.publish(b"0123456789", routing_key="s", now=float(n))  # 10 segments of 10 messages
    # Retention ran when the last segment rolled (at offset 90): the sealed
    # segments within 250 bytes stayed (70-89), then the new one filled up.
    assert (stream.first, stream.end, stream.bytes, stream.segment_count) == (70, 100, 300, 3)
    assert offsets_of(deliveries(reader(broker, "first")))[0] == stream.first
    assert offsets_of(deliveries(reader(broker, 0)))[0] == stream.first


def test_retention_by_age_removes_segments_whose_newest_message_is_too_old(broker: Broker, ch: Channel) -> None:
    stream = declare(ch, **{"x-max-age": "1h", "x-stream-max-segment-size-bytes": 10})
    for n in range(5):
        ch.publish(b"0123456789", routing_key="s", now=0.0)  # five full one-message segments
    ch.publish(b"late", routing_key="s", now=3601.0)  # rolls: the old ones are past an hour
    assert (stream.first, stream.end, stream.segment_count) == (5, 6, 1)


def test_a_reader_on_a_removed_segment_moves_to_the_new_first_offset(broker: Broker, ch: Channel) -> None:
    stream = declare(ch, **{"x-max-length-bytes": 20, "x-stream-max-segment-size-bytes": 10})
    ch.publish(b"0123456789", routing_key="s", now=0.0)
    slow = reader(broker, "first", prefetch=1)
    assert offsets_of(deliveries(slow)) == [0]
    for _ in range(10):
        ch.publish(b"0123456789", routing_key="s", now=0.0)
    slow.ack(0, multiple=True, now=0.0)
    assert offsets_of(deliveries(slow)) == [stream.first] and stream.first > 1


def test_deleting_a_stream_cancels_its_readers(broker: Broker, ch: Channel) -> None:
    declare(ch)
    consumer = reader(broker)
    ch.delete_queue("s", now=0.0)
    assert [type(event).__name__ for event in consumer.outbox] == ["ConsumerCancelled"]


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(st.one_of(
        st.tuples(st.just("publish"), st.integers(1, 30)),
        st.tuples(st.just("join"), st.one_of(st.integers(-5, 200), st.sampled_from(["first", "last", "next"]))),
        st.tuples(st.just("ack"), st.integers(0, 5)),
    ), max_size=40),
    segment=st.integers(20, 200),
    limit=st.one_of(st.none(), st.integers(50, 400)),
)
def test_readers_see_each_retained_offset_once_in_order_and_retention_only_moves_them_forward(
        steps: list[tuple[str, object]], segment: int, limit: int | None) -> None:
    """Nothing lost, nothing duplicated: a reader receives consecutive
    offsets from where it started, except where retention removed the
    segment it was on, and then it goes on at the new first offset."""
    broker = Broker()
    ch = broker.connect().open_channel()
    arguments: dict[str, object] = {"x-stream-max-segment-size-bytes": segment}
    if limit is not None:
        arguments["x-max-length-bytes"] = limit
    stream = declare(ch, **arguments)
    readers: list[tuple[Channel, list[int]]] = []
    for kind, value in steps:
        if kind == "publish":
            assert isinstance(value, int)
            for _ in range(value):
                ch.publish(b"0123456789", routing_key="s", now=0.0)
        elif kind == "join":
            readers.append((reader(broker, value, prefetch=7), []))
        elif readers:
            assert isinstance(value, int)
            consumer, _ = readers[value % len(readers)]
            if consumer.unacked:
                consumer.ack(0, multiple=True, now=0.0)
        for consumer, seen in readers:
            for offset in offsets_of(deliveries(consumer)):
                if seen:
                    assert offset == seen[-1] + 1 or offset == stream.first > seen[-1] + 1
                seen.append(offset)
            assert not seen or stream.first <= seen[-1] + 1 or consumer.unacked
    for consumer, seen in readers:
        assert seen == sorted(set(seen))
        assert all(offset < stream.end for offset in seen)


# -- consumer groups ------------------------------------------------------------


def member(broker: Broker, group: str, stream: str = "s", prefetch: int = 100, **arguments: object) -> Channel:
    """A member of ``group`` (a connection of its own) consuming ``stream``."""
    ch = broker.connect().open_channel()
    ch.qos(prefetch, now=0.0)
    ch.consume(stream, now=0.0, consumer_tag=f"{group}@{stream}",
               arguments={"x-stream-group": group, **arguments})
    return ch


def test_one_member_of_a_group_is_active_and_the_next_resumes_after_the_committed_offset(
        broker: Broker, ch: Channel) -> None:
    stream = declare(ch)
    for n in range(10):
        ch.publish(b"%d" % n, routing_key="s", now=0.0)
    first = member(broker, "billing", **{"x-stream-offset": "first"})
    second = member(broker, "billing")
    got = deliveries(first)
    assert offsets_of(got) == list(range(10)) and deliveries(second) == []
    first.ack(got[4].delivery_tag, multiple=True, now=0.0)  # 0-4 done
    first.ack(got[7].delivery_tag, now=0.0)  # 7 done, 5 and 6 not
    assert stream.group_offsets["billing"].committed == 5
    first.close(now=0.0)
    # At least once: the unacked tail comes again, 7 too (acked past a gap).
    assert offsets_of(deliveries(second)) == [5, 6, 7, 8, 9]


def test_groups_are_independent_and_a_returning_group_resumes(broker: Broker, ch: Channel) -> None:
    stream = declare(ch)
    for n in range(6):
        ch.publish(b"%d" % n, routing_key="s", now=0.0)
    a = member(broker, "a", **{"x-stream-offset": "first"})
    b = member(broker, "b", **{"x-stream-offset": 3})
    got_a, got_b = deliveries(a), deliveries(b)
    assert (offsets_of(got_a), offsets_of(got_b)) == ([0, 1, 2, 3, 4, 5], [3, 4, 5])
    a.ack(got_a[2].delivery_tag, multiple=True, now=0.0)
    a.close(now=0.0)
    assert "a" not in broker.vhosts["/"].groups and stream.group_offsets["a"].committed == 3
    # The group's offset wins over the argument, as Kafka's does over auto.offset.reset.
    back = member(broker, "a", **{"x-stream-offset": "first"})
    assert offsets_of(deliveries(back)) == [3, 4, 5]


def test_a_group_shares_partitions_among_members_and_rebalances(broker: Broker, ch: Channel) -> None:
    partitions = [f"p{n}" for n in range(4)]
    for name in partitions:
        declare(ch, name)
    members = []
    for _ in range(2):
        conn = broker.connect().open_channel()
        conn.qos(10, now=0.0)
        for name in partitions:
            conn.consume(name, now=0.0, arguments={"x-stream-group": "workers", "x-stream-offset": "first"})
        members.append(conn)

    def owners() -> list[int]:
        for name in partitions:
            ch.publish(name.encode(), routing_key=name, now=0.0)
        served = [sorted(e.message.body.decode() for e in deliveries(m)) for m in members]
        return [next(i for i, got in enumerate(served) if name in got) for name in partitions]

    assert owners() == [0, 1, 0, 1]  # partition i to member i mod 2
    third = broker.connect().open_channel()
    third.qos(10, now=0.0)
    for name in partitions:
        third.consume(name, now=0.0, arguments={"x-stream-group": "workers"})
    members.append(third)
    assert sorted(set(owners())) == [0, 1, 2]
    members[0].close(now=0.0)
    assert set(owners()) == {1, 2}


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(st.one_of(
    st.tuples(st.just("publish"), st.integers(1, 20)),
    st.tuples(st.just("join"), st.integers(1, 5)),
    st.tuples(st.just("ack"), st.integers(0, 100)),
    st.tuples(st.just("die"), st.integers(0, 100)),
), max_size=40))
def test_a_groups_committed_offset_never_passes_an_unacked_message_and_every_message_arrives(
        steps: list[tuple[str, int]]) -> None:
    broker = Broker()
    ch = broker.connect().open_channel()
    stream = declare(ch)
    members: list[Channel] = []
    unacked: dict[Channel, dict[int, int]] = {}  # member -> offset -> delivery tag
    acked: set[int] = set()
    delivered: set[int] = set()
    for kind, value in steps:
        if kind == "publish":
            for _ in range(value):
                ch.publish(b"x", routing_key="s", now=0.0)
        elif kind == "join":
            m = member(broker, "g", prefetch=value, **{"x-stream-offset": "first"})
            members.append(m)
            unacked[m] = {}
        elif members and kind == "ack":
            m = members[value % len(members)]
            if unacked[m]:
                offset = sorted(unacked[m])[value % len(unacked[m])]
                m.ack(unacked[m].pop(offset), now=0.0)
                acked.add(offset)
        elif members:
            m = members.pop(value % len(members))
            m.close(now=0.0)
            del unacked[m]
        for m in members:
            for event in deliveries(m):
                offset = event.stream_offset
                unacked[m][offset] = event.delivery_tag
                delivered.add(offset)
        group = stream.group_offsets.get("g")
        if group is not None:
            outstanding = {offset for held in unacked.values() for offset in held} - acked
            # Committed: everything before it was acked at some point.
            assert all(offset in acked for offset in range(group.committed))
            assert all(offset >= group.committed for offset in outstanding - acked) or not outstanding
    if members:
        # A member left that acks everything: every message reaches the group.
        while any(unacked.values()):
            for m in members:
                for offset, tag in unacked[m].items():
                    m.ack(tag, now=0.0)
                    acked.add(offset)
                unacked[m] = {}
                for event in deliveries(m):
                    unacked[m][event.stream_offset] = event.delivery_tag
        assert acked >= set(range(stream.end))
        assert stream.group_offsets["g"].committed == stream.end


def test_a_stream_in_memory_reads_any_offset_in_constant_time(broker: Broker, ch: Channel) -> None:
    """Issue 22, item 9: without a data dir every message stays in memory,
    and a read of offset n cost O(n) (a deque indexed by position: 22 us a
    read at 1M messages, 473 us at 4M). Reads in the middle of 400,000
    messages cost what reads at the start cost. A ratio within one run, so
    the machine's speed and load cancel out; a deque made it over 20."""
    stream = declare(ch)
    message = Message("", "s", Properties(), b"x")
    count = 400_000
    for _ in range(count):
        stream.enqueue(message, None, 0.0)

    def cost(start: int) -> float:
        best = math.inf
        for _ in range(5):
            began = time.perf_counter()
            for offset in range(start, start + 2000):
                stream._message_for(_Reader(0, offset))
            best = min(best, time.perf_counter() - began)
        return best

    assert stream._message_for(_Reader(0, count // 2)) is message
    assert cost(count // 2) < 4 * cost(0)


def test_a_stream_in_memory_lets_retained_out_messages_go_and_keeps_its_offsets(broker: Broker, ch: Channel) -> None:
    """Retention drops the oldest segments from the in-memory window: the
    messages left are still read at their offsets, the dropped are gone."""
    stream = declare(ch, **{"x-max-length-bytes": 50_000, "x-stream-max-segment-size-bytes": 10_000})
    for n in range(30_000):
        ch.publish(b"%05d" % n, routing_key="s", now=0.0)
    assert 0 < stream.first < 30_000 - 8_000
    assert len(stream._memory) == 30_000 - stream.first
    for offset in (stream.first, stream.first + 1, 29_999):
        assert stream._message_for(_Reader(0, offset)).body == b"%05d" % offset
    assert offsets_of(deliveries(reader(broker, "first", prefetch=5)))[0] == stream.first


# A message's record time: x-kafka-timestamp (ms), else timestamp (s), else when appended.
STAMPS = st.one_of(st.tuples(st.just("header"), st.integers(0, 50_000)),
                   st.tuples(st.just("property"), st.integers(0, 50)),
                   st.tuples(st.just("appended"), st.just(0)))


@settings(max_examples=150, deadline=None)
@given(stamps=st.lists(STAMPS, min_size=1, max_size=40), targets=st.lists(st.integers(-5, 55_000), max_size=10),
       retained=st.none() | st.integers(20, 200))
def test_the_entry_stamped_from_a_time_is_the_first_with_a_record_time_at_or_after_it(
        stamps: list[tuple[str, int]], targets: list[int], retained: int | None) -> None:
    """Exactly the first retained such offset; after retention has removed
    the head, never later than it (early at most, never a record missed)."""
    broker = Broker()
    ch = broker.connect().open_channel()
    arguments = {} if retained is None else {"x-max-length-bytes": retained, "x-stream-max-segment-size-bytes": 10}
    stream = declare(ch, **arguments)
    times = []
    for n, (kind, value) in enumerate(stamps):
        now = 25.0 + n  # appended at 25 s, 26 s ...
        properties = (Properties(headers={"x-kafka-timestamp": value}) if kind == "header"
                      else Properties(timestamp=value) if kind == "property" else Properties())
        times.append(value if kind == "header" else value * 1000 if kind == "property" else int(now * 1000))
        ch.publish(b"0123456789", routing_key="s", properties=properties, now=now)
    for target in targets + [max(times), max(times) + 1]:
        later = [offset for offset in range(stream.first, stream.end) if times[offset] >= target]
        found, newest = stream.entry_stamped_from(target)
        if retained is None or stream.first == 0:
            assert found == (later[0] if later else stream.end)
        else:
            assert stream.first <= found <= (later[0] if later else stream.end)
        assert (newest >= target) if found < stream.end else newest == -1
