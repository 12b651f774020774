"""Index files of sealed segments: start-up from them recovers exactly what
replaying the segments record by record recovers, and an index that does not
describe its segment as it is now is ignored."""

from __future__ import annotations

import math
import shutil
import zlib
from array import array
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from amqlite.core.message import Properties
from amqlite.core.events import WaitForDisk
from amqlite.store import records, segment_index
from amqlite.store.segments import encode_record

from .support import PERSISTENT, Store

NOW = 1000.0
#: Small segments, so a workload spans many, and a small memory budget, so
#: start-up pages some of what it restores.
SEGMENT = 700
BUDGET = 3


def setup(store: Store) -> None:
    ch = store.ch
    ch.declare_exchange("fan", "fanout", durable=True)
    ch.declare_exchange("dlx", "fanout", durable=True)
    ch.declare_exchange("later", "x-delayed-message", durable=True, arguments={"x-delayed-type": "fanout"})
    ch.declare_queue("a", durable=True, now=NOW)
    ch.declare_queue("b", durable=True, now=NOW)
    ch.declare_queue("dead", durable=True, now=NOW)
    ch.declare_queue("r", durable=True, now=NOW, arguments={
        "x-delayed-retry-min": 1000, "x-delivery-limit": 2, "x-dead-letter-exchange": "dlx"})
    ch.bind_queue("a", "fan", "")
    ch.bind_queue("b", "fan", "")
    ch.bind_queue("dead", "dlx", "")
    ch.bind_queue("a", "later", "")
    # Streams, deduplication (a queue, a stream, an exchange), consumer groups.
    dedup = {"x-message-deduplication": True}
    ch.declare_queue("s", durable=True, now=NOW, arguments={"x-queue-type": "stream", **dedup})
    ch.declare_queue("d", durable=True, now=NOW, arguments={**dedup, "x-cache-size": 3})
    ch.declare_exchange("once", "fanout", durable=True, arguments=dedup)
    ch.bind_queue("b", "once", "")


QUEUES = ["a", "b", "r", "dead", "d"]
operations = st.lists(st.tuples(
    st.sampled_from(["direct", "fanout", "ttl", "retry", "delayed", "far", "get", "ack", "requeue", "tick", "sync",
                     "unbind", "stream", "dedup", "once", "group"]),
    st.integers(0, 3)), min_size=30, max_size=120)


def run(store: Store, ops: list[tuple[str, int]]) -> float:
    ch, now, tags = store.ch, NOW, []
    for n, (op, arg) in enumerate(ops):
        body = b"m%03d" % n
        if op == "direct":
            ch.publish(body, routing_key="a", properties=PERSISTENT, now=now)
        elif op == "fanout":
            ch.publish(body, exchange="fan", routing_key="", properties=PERSISTENT, now=now)
        elif op == "ttl":
            ch.publish(body, routing_key="b", properties=Properties(delivery_mode=2, expiration="900000"), now=now)
        elif op == "retry":
            ch.publish(body, routing_key="r", properties=PERSISTENT, now=now)
        elif op == "delayed":
            ch.publish(body, exchange="later", routing_key="",
                       properties=Properties(delivery_mode=2, headers={"x-delay": 500 * (arg + 1)}), now=now)
        elif op == "get":
            got = ch.get(QUEUES[arg], now=now)
            if isinstance(got, WaitForDisk):
                store.page_in(now)  # the next message was paged out: read back, taken by a later get
            elif got is not None:
                tags.append(got.delivery_tag)
        elif op in ("ack", "requeue") and tags:
            tag = tags.pop(arg % len(tags))
            if op == "ack":
                ch.ack(tag, now=now)
            else:
                ch.nack(tag, requeue=True, now=now)
        elif op == "tick":
            now += 400 * (arg + 1)
            store.broker.tick(now)
        elif op == "sync":
            store.sync()
        elif op == "unbind":
            ch.unbind_queue("b", "fan", "") if arg else ch.bind_queue("b", "fan", "")
        elif op == "far":  # held for hours: on disk only, in a far bucket
            ch.publish(body, exchange="later", routing_key="",
                       properties=Properties(delivery_mode=2, headers={"x-delay": 3_600_000 * (arg + 1)}), now=now)
        elif op in ("stream", "dedup", "once"):  # ids repeat: some are duplicates
            exchange, key = ("once", "") if op == "once" else ("", "s" if op == "stream" else "d")
            ch.publish(body, exchange=exchange, routing_key=key, now=now,
                       properties=Properties(delivery_mode=2, headers={"x-deduplication-header": arg}))
        elif op == "group":
            stream = store.queue("s")
            stream.commit_group(f"g{arg % 2}", stream.end - arg)
    store.sync()
    return now


def state(store: Store, now: float) -> object:
    """Everything a queue would hand out, in order, with how: taken after
    start-up with paged messages read back as the driver does."""
    queues = {}
    for name in QUEUES:
        queue = store.queue(name)
        counts = (queue.message_count, queue.delayed_count)
        got = []
        while True:
            item = store.ch.get(name, now=now, no_ack=True)
            if isinstance(item, WaitForDisk):
                assert store.page_in(now)
                continue
            if item is None:
                break
            message = item.message
            got.append((message.body, item.redelivered, item.delivery_count, message.properties.expiration))
        queues[name] = (counts, got)
    later = store.vhost.exchanges["later"]
    held = (later.pending_count, later.held.next_deadline())
    stream = store.queue("s")
    streams = (stream.first, stream.end, sorted((name, offset.committed) for name, offset in
                                                stream.group_offsets.items()))
    windows = [sorted(map(repr, owner.deduplicator._seen)) for owner in (stream, store.queue("d"),
                                                                        store.vhost.exchanges["once"])]
    journal = store.journal
    return (queues, held, streams, windows, dict(journal._live), journal._refs, journal._next_msg,
            sorted(journal._definitions))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
def test_start_up_from_index_files_equals_a_full_replay(tmp_path_factory: pytest.TempPathFactory,
                                                        ops: list[tuple[str, int]]) -> None:
    indexed_dir = tmp_path_factory.mktemp("indexed")
    store = Store(indexed_dir, segment_size=SEGMENT, queue_budget=BUDGET)
    setup(store)
    now = run(store, ops)
    sealed = set(store.journal.log.sealed())
    store.crash()
    replayed_dir = tmp_path_factory.mktemp("replayed")
    shutil.copytree(indexed_dir, replayed_dir, dirs_exist_ok=True)
    for path in (replayed_dir / "log").glob("*.idx"):
        path.unlink()

    from_index = Store(indexed_dir, segment_size=SEGMENT, queue_budget=BUDGET, now=now)
    replayed = Store(replayed_dir, segment_size=SEGMENT, queue_budget=BUDGET, now=now)
    assert from_index.journal._indexed == sealed  # every sealed segment came from its index
    assert replayed.journal._indexed == set()
    assert from_index.report.messages == replayed.report.messages
    assert from_index.report.paged == replayed.report.paged
    assert state(from_index, now) == state(replayed, now)
    from_index.close()
    replayed.close()


def filled(tmp_path: Path) -> tuple[Store, int]:
    """A store whose first segment is sealed and indexed."""
    store = Store(tmp_path, segment_size=SEGMENT)
    store.ch.declare_queue("a", durable=True, now=NOW)
    for n in range(20):
        store.ch.publish(b"m%02d" % n, routing_key="a", properties=PERSISTENT, now=NOW)
    store.sync()
    first = min(store.journal.log.sealed())
    assert first in store.journal._indexed and (tmp_path / "log" / f"{first:010d}.idx").exists()
    return store, first


def bodies(store: Store) -> list[bytes]:
    out = []
    while (got := store.ch.get("a", now=NOW, no_ack=True)) is not None:
        out.append(got.message.body)
    return out


@pytest.mark.parametrize("damage", ["index byte", "index torn", "segment byte", "segment grown", "other segment"])
def test_an_index_that_does_not_describe_its_segment_is_ignored(tmp_path: Path, damage: str) -> None:
    store, first = filled(tmp_path)
    store.crash()
    index_path = tmp_path / "log" / f"{first:010d}.idx"
    segment_path = tmp_path / "log" / f"{first:010d}.seg"
    blob = bytearray(index_path.read_bytes())
    if damage == "index byte":
        blob[-1] ^= 0xFF
        index_path.write_bytes(blob)
    elif damage == "index torn":
        index_path.write_bytes(blob[: len(blob) // 2])
    elif damage == "segment byte":  # the segment changed since: its CRC no longer matches
        data = bytearray(segment_path.read_bytes())
        data[-1] ^= 0xFF
        segment_path.write_bytes(data)
    elif damage == "segment grown":
        with open(segment_path, "ab") as file:
            file.write(b"\0" * 16)
    else:  # an index copied from another segment
        second = sorted(int(p.stem) for p in (tmp_path / "log").glob("*.idx"))[1]
        index_path.write_bytes((tmp_path / "log" / f"{second:010d}.idx").read_bytes())
    with capture_logs() as logs:
        store = Store(tmp_path, segment_size=SEGMENT)
    assert first not in store.journal._indexed
    expected = [b"m%02d" % n for n in range(20)]
    got = bodies(store)
    if damage == "segment byte":  # its last record is lost, as it is without an index, and reported
        assert len(got) == 19 and [m for m in expected if m in got] == got
        assert [e["segment"] for e in logs if e["event"] == "store.corrupt_segment"] == [segment_path.name]
    else:
        assert got == expected
    store.close()


def test_a_segment_with_damaged_records_gets_no_index(tmp_path: Path) -> None:
    store = Store(tmp_path, segment_size=SEGMENT)
    store.ch.declare_queue("a", durable=True, now=NOW)
    for n in range(20):
        store.ch.publish(b"m%02d" % n, routing_key="a", properties=PERSISTENT, now=NOW)
    store.sync(index=False)
    first = min(store.journal.log.sealed())
    path = tmp_path / "log" / f"{first:010d}.seg"
    data = bytearray(path.read_bytes())
    data[20] ^= 0xFF
    path.write_bytes(data)
    with capture_logs() as logs:
        store.index()
    assert not (tmp_path / "log" / f"{first:010d}.idx").exists()
    assert [e["segment"] for e in logs if e["event"] == "store.index_skipped"] == [first]
    store.close()


def test_deleting_a_segment_deletes_its_index_and_none_is_written_after(tmp_path: Path) -> None:
    store, first = filled(tmp_path)
    log = store.journal.log
    data = log.read_segment(first)
    blob = segment_index.encode(segment_index.build(first, data) or pytest.fail("no index"), data)
    log.delete(first)
    assert not (tmp_path / "log" / f"{first:010d}.idx").exists()
    assert log.write_index(first, blob) is False  # an indexer that raced the deletion writes nothing
    assert not (tmp_path / "log" / f"{first:010d}.idx").exists()
    store.close()


def test_an_index_records_what_the_segment_holds() -> None:
    def publish(msg_id: int, queue: int, seq: int) -> bytes:
        return records.PUBLISH_HEAD.pack(msg_id, queue, seq, math.nan, 0, 3) + b"\0\0\0\0\0\0body"

    def hold(msg_id: int, due: float, exchange: str) -> bytes:
        return records.HOLD_HEAD.pack(msg_id, due) + b"\x01/" + bytes([len(exchange)]) + exchange.encode() + b"content"

    log_records = [
        encode_record(records.PUBLISH, publish(7, 1, 1)),
        encode_record(records.ENQUEUE, records.ENQUEUE_HEAD.pack(7, 2, 1, 5.0)),
        encode_record(records.ENQUEUE, records.ENQUEUE_HEAD.pack(3, 2, 2, math.nan)),  # body in an earlier segment
        encode_record(records.REMOVE, records.ENTRY.pack(1, 1)),
        encode_record(records.PUBLISH, publish(8, 1, 2)),
        encode_record(records.HOLD, hold(9, 50.0, "later")),
        encode_record(records.HOLD, hold(10, 60.0, "other")),
    ]
    data = b"".join(log_records)
    queues: dict[int, segment_index.Rows] = {1: segment_index.Rows()}
    queues[1].add(1, 1, 4, 99, math.nan, 0, 3, 0)  # decoding appends to what a queue already has
    holds = segment_index.Holds()
    holds.add_all(bytes(77) + encode_record(records.HOLD, hold(2, 10.0, "other")), array("I", [77]), 4)  # and to the held messages found before
    blob = segment_index.encode(segment_index.build(5, data) or pytest.fail(), data)
    index = segment_index.decode(blob, 5, len(data), lambda: zlib.crc32(data),
                                 lambda queue: queues.setdefault(queue, segment_index.Rows()), holds)
    assert index is not None and (index.records, index.max_msg_id, index.entries, index.held) == (7, 8, 4, 2)
    # HOLD records as columns, their exchanges numbered as the replay numbers them.
    assert (list(holds.ids), list(holds.dues), list(holds.segments)) == ([2, 9, 10], [10.0, 50.0, 60.0], [4, 5, 5])
    assert list(holds.offsets) == [77, sum(map(len, log_records[:5])), sum(map(len, log_records[:6]))]
    assert [list(holds.exchanges)[owner] for owner in holds.owners] == [("/", "other"), ("/", "later"),
                                                                        ("/", "other")]
    a, b = queues[1], queues[2]
    assert (list(a.seqs), list(a.msg_ids), list(a.flags), list(a.segments)) == ([1, 1, 2], [1, 7, 8], [0, 0, 0],
                                                                                  [4, 5, 5])
    assert list(a.offsets) == [99, 0, sum(map(len, log_records[:4]))]
    assert (list(b.seqs), list(b.flags)) == ([1, 2], [segment_index.COPY | segment_index.EXPIRES, segment_index.COPY])
    assert index.copies == [(2, 1, 7, 0), (2, 2, 3, segment_index.ELSEWHERE)]
    assert index.recent == [(7, 0), (8, a.offsets[2])]
    offset = sum(map(len, log_records[:3]))
    assert index.others == [(offset, records.REMOVE, records.ENTRY.pack(1, 1))]
    assert segment_index.decode(blob, 6, len(data), lambda: zlib.crc32(data), lambda queue: pytest.fail(),
                                holds) is None
