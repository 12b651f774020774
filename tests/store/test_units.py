"""A transaction's commit is one atomic unit of the journal: after a crash,
recovery finds all of it (messages to every queue and stream, the acks,
the consumer group's offset those acks move) or none of it, wherever the
crash cut the log, from a replay or from an index file."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from amqlite.core.channel import Channel
from amqlite.core.errors import NotFound, PreconditionFailed
from amqlite.core.events import Deliver
from amqlite.store import records as kinds
from amqlite.store import segment_index
from amqlite.store.segments import HEAD_SIZE, SegmentLog

from .support import PERSISTENT, TINY, Store, drain, records

NOW = 1000.0
QUEUES = ["q1", "q2", "q3"]
STREAMS = ["s2", "s3"]


def setup(store: Store) -> Channel:
    """Three messages in ``in`` and four in stream ``s1``, all delivered to
    a worker (``s1`` to its group ``g``), nothing acked; written."""
    ch = store.ch
    for name in ["in", *QUEUES]:
        ch.declare_queue(name, durable=True, now=NOW)
    for name in ["s1", *STREAMS]:
        ch.declare_queue(name, durable=True, arguments={"x-queue-type": "stream"}, now=NOW)
    for n in range(3):
        ch.publish(b"in%d" % n, routing_key="in", properties=PERSISTENT, now=NOW)
    for n in range(4):
        ch.publish(b"s%d" % n, routing_key="s1", properties=PERSISTENT, now=NOW)
    worker = store.broker.connect().open_channel()
    worker.qos(10, now=NOW)
    worker.consume("in", now=NOW)
    worker.consume("s1", now=NOW, arguments={"x-stream-group": "g", "x-stream-offset": "first"})
    store.sync()
    return worker


def commit(store: Store, worker: Channel) -> int:
    """One transaction: a message to each of five queues and streams, the
    three ``in`` deliveries acked and two of the group's. Returns where the
    unit ends (its position)."""
    tags = {(event.message.routing_key, event.message.body): event.delivery_tag
            for event in worker.outbox if isinstance(event, Deliver)}
    worker.tx_select()
    for name in QUEUES + STREAMS:
        worker.publish(b"out-" + name.encode(), routing_key=name, properties=PERSISTENT, now=NOW)
    for n in range(3):
        worker.ack(tags["in", b"in%d" % n], now=NOW)
    worker.ack(tags["s1", b"s1"], multiple=True, now=NOW)
    worker.tx_commit(now=NOW)
    return worker.committed_at


def state(store: Store) -> tuple[object, ...]:
    s1 = store.queue("s1")
    committed = s1.group_offsets["g"].committed if "g" in s1.group_offsets else 0
    return (sorted(body for body, _ in drain(store.ch, "in")),
            [[body for body, _ in drain(store.ch, name)] for name in QUEUES],
            [store.queue(name).end for name in STREAMS], committed)


BEFORE = ([b"in0", b"in1", b"in2"], [[], [], []], [0, 0], 0)
AFTER = ([], [[b"out-q1"], [b"out-q2"], [b"out-q3"]], [1, 1], 2)


def unit_records(directory: Path) -> list[tuple[int, int, int, int]]:
    """(segment, offset, end, kind) of the unit's records, its UNIT first."""
    log = SegmentLog(directory / "log")
    found, unit, stop = [], 0, -1
    for segment, offset, kind, payload in log.replay():
        end = offset + HEAD_SIZE + len(payload)
        if kind == kinds.UNIT:
            unit, stop = segment, end + int.from_bytes(payload, "big")
        if kind == kinds.UNIT or segment == unit and offset < stop:
            found.append((segment, offset, end, kind))
    log.close()
    return found


def test_a_commit_cut_anywhere_by_a_crash_recovers_whole_or_not_at_all(tmp_path: Path) -> None:
    origin = tmp_path / "origin"
    store = Store(origin)
    worker = setup(store)
    position = commit(store, worker)
    assert position == store.journal.position
    store.sync()
    store.crash()
    unit = unit_records(origin)
    segment, start, _, _ = unit[0]
    end = unit[-1][2]
    assert {kinds.PUBLISH, kinds.REMOVE, kinds.GROUP} <= {kind for *_, kind in unit}
    assert {s for s, *_ in unit} == {segment}  # one segment
    path = origin / "log" / f"{segment:010d}.seg"
    assert path.stat().st_size == end  # the unit ends the log
    cuts = sorted({start, start + 3, end - 1} | {offset + 5 for _, offset, _, _ in unit[1:]}
                  | {offset for _, offset, _, _ in unit[1:]})
    for cut in cuts:
        copy = tmp_path / f"cut{cut}"
        shutil.copytree(origin, copy)
        with open(copy / "log" / path.name, "r+b") as file:
            file.truncate(cut)
        with capture_logs() as logs:
            recovered = Store(copy)
        assert state(recovered) == BEFORE, cut
        assert (copy / "log" / path.name).stat().st_size == start, cut  # cut from the unit's first record
        warned = [e["event"] for e in logs if e["log_level"] == "warning"]
        assert warned == ([] if cut == start else ["store.corrupt_tail"]), cut
        recovered.close()
    assert state(Store(origin)) == AFTER


def test_a_unit_in_an_indexed_segment_loads_as_its_replay_does(tmp_path: Path) -> None:
    store = Store(tmp_path / "replayed", segment_size=4096)
    worker = setup(store)
    commit(store, worker)
    store.sync()
    for n in range(40):  # later records: the unit's segment is sealed
        store.ch.publish(b"x" * 100, routing_key="q1", properties=PERSISTENT, now=NOW)
    store.sync()
    store.close()
    shutil.copytree(tmp_path / "replayed", tmp_path / "indexed")
    for path in (tmp_path / "replayed" / "log").glob("*.idx"):
        path.unlink()
    segment = unit_records(tmp_path / "replayed")[0][0]
    assert (tmp_path / "indexed" / "log" / f"{segment:010d}.idx").exists()
    assert not (tmp_path / "replayed" / "log" / f"{segment:010d}.idx").exists()
    expected = (AFTER[0], [[b"out-q1", *[b"x" * 100] * 40], [b"out-q2"], [b"out-q3"]], AFTER[2], AFTER[3])
    assert state(Store(tmp_path / "replayed", segment_size=4096)) == expected
    assert state(Store(tmp_path / "indexed", segment_size=4096)) == expected


def test_a_segment_whose_unit_is_not_whole_gets_no_index(tmp_path: Path) -> None:
    store = Store(tmp_path)
    commit(store, setup(store))
    store.sync()
    store.crash()
    unit = unit_records(tmp_path)
    segment, start, _, _ = unit[0]
    data = (tmp_path / "log" / f"{segment:010d}.seg").read_bytes()
    assert segment_index.build(segment, data) is not None
    for cut in (unit[1][2], unit[-1][1]):  # after the unit's first record, before its last
        assert segment_index.build(segment, data[:cut]) is None


def test_damage_inside_a_unit_of_an_older_segment_skips_the_whole_unit(tmp_path: Path) -> None:
    store = Store(tmp_path, segment_size=4096)
    worker = setup(store)
    commit(store, worker)
    store.sync()
    for n in range(40):
        store.ch.publish(b"later%d" % n, routing_key="q2", properties=PERSISTENT, now=NOW)
    store.sync()
    store.close()
    unit = unit_records(tmp_path)
    segment, _, _, _ = unit[0]
    _, offset, end, _ = unit[len(unit) // 2]
    path = tmp_path / "log" / f"{segment:010d}.seg"
    data = bytearray(path.read_bytes())
    data[end - 1] ^= 0x40
    path.write_bytes(bytes(data))
    with capture_logs() as logs:
        recovered = Store(tmp_path, segment_size=4096)
    got = state(recovered)
    assert got == (BEFORE[0], [[], [b"later%d" % n for n in range(40)], []], BEFORE[2], BEFORE[3])
    assert path.stat().st_size == len(data)  # left on disk
    [damage] = [e for e in logs if e["event"] == "store.corrupt_segment"]
    assert damage["skipped"][0]["start"] == unit[0][1] and damage["skipped"][0]["end"] == unit[-1][2]


def test_the_log_does_not_roll_inside_a_unit(tmp_path: Path) -> None:
    store = Store(tmp_path, segment_size=TINY)  # a segment per record, but for a unit
    commit(store, setup(store))
    store.sync()
    store.close()
    unit = unit_records(tmp_path)
    assert len(unit) > 5 and len({segment for segment, *_ in unit}) == 1
    assert state(Store(tmp_path, segment_size=TINY)) == AFTER


def test_a_commit_that_records_nothing_writes_no_unit(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.ch.declare_queue("q", durable=True, now=NOW)
    store.sync()
    before = store.journal.position
    store.ch.tx_select()
    store.ch.publish(b"transient", routing_key="q", now=NOW)  # not journalled
    store.ch.tx_commit(now=NOW)
    assert store.ch.committed_at == 0 and store.journal.position == before
    store.ch.tx_commit(now=NOW)  # an empty one
    assert store.ch.committed_at == 0 and not store.journal.dirty
    store.close()
    assert kinds.UNIT not in {kind for _, kind in records(tmp_path)}


def test_compaction_deletes_what_a_units_acks_removed_once_the_unit_is_written(tmp_path: Path) -> None:
    store = Store(tmp_path)
    ch = store.ch
    for name in ("in", "q1"):
        ch.declare_queue(name, durable=True, now=NOW)
    for n in range(3):  # large: the definitions beside them are copied on
        ch.publish(b"in%d" % n * 5000, routing_key="in", properties=PERSISTENT, now=NOW)
    worker = store.broker.connect().open_channel()
    worker.consume("in", now=NOW)
    assert store.sync() == []
    store.journal.log.roll()
    worker.tx_select()
    worker.publish(b"out", routing_key="q1", properties=PERSISTENT, now=NOW)
    worker.ack(0, multiple=True, now=NOW)
    worker.tx_commit(now=NOW)
    assert store.sync() == [1]
    assert unit_records(tmp_path)[0][0] == 2
    store.crash()
    recovered = Store(tmp_path)
    assert drain(recovered.ch, "in") == [] and drain(recovered.ch, "q1") == [(b"out", False)]


# `make fuzz` runs a longer campaign (AMQLITE_FUZZ_EXAMPLES).
@settings(max_examples=int(os.environ.get("AMQLITE_FUZZ_EXAMPLES", "25")), deadline=None)
@given(commits=st.lists(st.tuples(st.lists(st.sampled_from(["q1", "q2", "s2"]), max_size=4), st.integers(0, 3)),
                        min_size=1, max_size=6),
       where=st.floats(0, 1))
def test_a_log_cut_anywhere_keeps_the_commits_before_the_cut_whole_and_none_after(
        tmp_path_factory: pytest.TempPathFactory, commits: list[tuple[list[str], int]], where: float) -> None:
    directory = tmp_path_factory.mktemp("units")
    store = Store(directory)
    ch = store.ch
    for name in ("in", "q1", "q2"):
        ch.declare_queue(name, durable=True, now=NOW)
    ch.declare_queue("s2", durable=True, arguments={"x-queue-type": "stream"}, now=NOW)
    for n in range(20):
        ch.publish(b"in%02d" % n, routing_key="in", properties=PERSISTENT, now=NOW)
    worker = store.broker.connect().open_channel()
    worker.consume("in", now=NOW)
    tags = [event.delivery_tag for event in worker.outbox if isinstance(event, Deliver)]
    store.sync()
    start = store.journal.position
    worker.tx_select()

    def expected(acked: int, sent: list[tuple[str, bytes]]) -> tuple[object, ...]:
        return ([b"in%02d" % n for n in range(acked, 20)], [[body for name, body in sent if name == queue]
                                                            for queue in ("q1", "q2")],
                sum(name == "s2" for name, _ in sent))

    states, acked, sent = [(0, expected(0, []))], 0, []
    for number, (targets, acks) in enumerate(commits):
        for target in targets:
            body = b"c%d-%s" % (number, target.encode())
            worker.publish(body, routing_key=target, properties=PERSISTENT, now=NOW)
            sent.append((target, body))
        for _ in range(acks):
            worker.ack(tags[acked], now=NOW)
            acked += 1
        worker.tx_commit(now=NOW)
        if worker.committed_at:
            states.append((worker.committed_at, expected(acked, sent)))
    store.sync()
    store.crash()
    path = directory / "log" / f"{store.journal.log.current:010d}.seg"
    cut = start + round(where * (path.stat().st_size - start))
    with open(path, "r+b") as file:
        file.truncate(cut)
    recovered = Store(directory)
    got = (sorted(body for body, _ in drain(recovered.ch, "in")),
           [[body for body, _ in drain(recovered.ch, queue)] for queue in ("q1", "q2")], recovered.queue("s2").end)
    assert got == [state for end, state in states if end <= cut][-1]


def _worker_holding(store: Store, out_arguments: dict[str, object] | None = None) -> tuple[Channel, int]:
    """``in`` with one persistent message delivered to a transactional
    worker, and a durable queue ``out``: (worker, the delivery's tag)."""
    ch = store.ch
    ch.declare_queue("in", durable=True, now=NOW)
    ch.declare_queue("out", durable=True, arguments=out_arguments, now=NOW)
    ch.publish(b"work", routing_key="in", properties=PERSISTENT, now=NOW)
    worker = store.broker.connect().open_channel()
    worker.consume("in", now=NOW)
    store.sync()
    (tag,) = [event.delivery_tag for event in worker.outbox if isinstance(event, Deliver)]
    worker.tx_select()
    return worker, tag


@pytest.mark.parametrize("refusal", ["disk alarm", "reject-publish"])
def test_a_commit_whose_publish_is_refused_fails_and_keeps_its_acks_undone(tmp_path: Path, refusal: str) -> None:
    """A queue that refuses a publish at commit (the disk alarm, a full
    x-overflow reject-publish queue) fails the commit with 406, as
    RabbitMQ's "partial tx completion", and the commit's acks are not
    applied: the channel's close requeues the input rather than losing it
    with no output made from it."""
    store = Store(tmp_path)
    worker, tag = _worker_holding(store, {"x-max-length": 0, "x-overflow": "reject-publish"}
                                  if refusal == "reject-publish" else None)
    worker.publish(b"result", routing_key="out", properties=PERSISTENT, now=NOW)
    worker.ack(tag, now=NOW)
    if refusal == "disk alarm":
        store.journal.disk_low = True
    with pytest.raises(PreconditionFailed, match="partial tx completion"):
        worker.tx_commit(now=NOW)
    worker.close(now=NOW)
    store.journal.disk_low = False
    assert drain(store.ch, "in") == [(b"work", True)]


def test_a_commit_whose_exchange_was_deleted_requeues_its_acks_at_close(tmp_path: Path) -> None:
    """A held publish to an exchange deleted before tx.commit fails the
    commit (404); the acks held with it go back to the channel's unacked,
    so closing the channel requeues their messages (they were neither
    acked nor requeued: stuck until a restart)."""
    store = Store(tmp_path)
    worker, tag = _worker_holding(store)
    store.ch.declare_exchange("x", "fanout", durable=True)
    store.ch.bind_queue("out", "x", "")
    worker.publish(b"result", exchange="x", properties=PERSISTENT, now=NOW)
    worker.ack(tag, now=NOW)
    store.ch.delete_exchange("x")
    with pytest.raises(NotFound):
        worker.tx_commit(now=NOW)
    worker.close(now=NOW)
    assert drain(store.ch, "in") == [(b"work", True)]
