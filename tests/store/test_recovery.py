"""Recovery never destroys what it cannot read: damage in the middle of the
log is skipped (and reported exactly), the file is left as it is, and every
other confirmed message comes back. Only a torn tail of the newest segment
is cut. Also: recovery is exact however far apart a message's records lie."""

from __future__ import annotations

import math
from pathlib import Path

import attrs
import pytest
from structlog.testing import capture_logs

from amqlite.core.broker import Broker
from amqlite.core.message import Message, Properties
from amqlite.store import records as kinds
from amqlite.store import recovery
from amqlite.store.journal import DiskJournal
from amqlite.core import delayed
from amqlite.store.recovery import HeldProgress, Progress, ProgressLog
from amqlite.store.segments import HEAD_SIZE, SegmentLog

from .support import PERSISTENT, Store, drain
from .test_paging import consume_all

NOW = 1000.0


def fill(tmp_path: Path, count: int, **kwargs: object) -> Store:
    store = Store(tmp_path, **kwargs)  # type: ignore[arg-type]
    store.ch.declare_queue("q", durable=True, now=NOW)
    for i in range(count):
        store.ch.publish(b"m%05d" % i, routing_key="q", properties=PERSISTENT, now=NOW)
    store.sync()  # every message confirmed
    store.close()
    return store


def publishes(tmp_path: Path) -> list[tuple[Path, int, int]]:
    """(segment file, offset, size) of every PUBLISH record, read without changing anything."""
    log = SegmentLog(tmp_path / "log")
    found = [(log._path(segment), offset, HEAD_SIZE + len(payload)) for segment, offset, kind, payload in log.replay()
             if kind == kinds.PUBLISH]
    log.close()
    return found


def flip(path: Path, index: int) -> None:
    data = bytearray(path.read_bytes())
    data[index] ^= 0x40
    path.write_bytes(bytes(data))


def bodies(store: Store) -> list[bytes]:
    return [body for body, _ in drain(store.ch, "q")]


@pytest.mark.parametrize("where", ["body", "length"])
def test_flipped_byte_mid_newest_segment_loses_only_its_record(tmp_path: Path, where: str) -> None:
    store = fill(tmp_path, 2000, queue_budget=100_000)
    path, offset, size = publishes(tmp_path)[1000]
    before = path.stat().st_size
    flip(path, offset + size - 2 if where == "body" else offset + 1)
    with capture_logs() as logs:
        store = Store(tmp_path, queue_budget=100_000)
    assert bodies(store) == [b"m%05d" % i for i in range(2000) if i != 1000]
    assert path.stat().st_size == before  # nothing cut
    report, lost = [e for e in logs if e["log_level"] == "warning"]
    assert report["event"] == "store.corrupt_segment" and report["segment"] == path.name
    assert report["skipped"][0]["start"] == offset and report["skipped"][0]["end"] == offset + size
    assert report["skipped_bytes"] == size
    assert report["skipped_records"] == (1 if where == "body" else None)
    # Not summarised (not sealed), yet counted: by the damaged record's own head.
    assert lost["event"] == "store.messages_lost" and lost["segment"] == path.name
    assert (lost["messages"], lost["held_delayed"], lost["queues"]) == (
        1, 0, [{"queue": "q", "vhost": "/", "messages": 1, "seqs": [1001, 1001]}])
    # A damaged length leaves the rest of the range unaccounted for: it could have held more records.
    assert lost.get("unreadable_bytes") == (None if where == "body" else size - HEAD_SIZE)
    # Appends after the damage land after the file's end; the damage stays reported, nothing else is lost.
    store.ch.publish(b"later", routing_key="q", properties=PERSISTENT, now=NOW)
    store.sync()
    store = store.restart()
    assert bodies(store) == [b"later"]
    store.close()


def test_damage_in_the_newest_segment_is_counted_per_queue_and_held(tmp_path: Path) -> None:
    # The newest segment has no summary until it is sealed: what its
    # damaged records held is read from their own heads. An acked message
    # (its REMOVE follows) and a cancelled held one are not lost.
    store = Store(tmp_path, queue_budget=100_000)
    for name in ("a", "b"):
        store.ch.declare_queue(name, durable=True, now=NOW)
    store.ch.declare_exchange("later", "x-delayed-message", durable=True, arguments={"x-delayed-type": "direct"})
    store.ch.bind_queue("a", "later", "a")
    for i in range(10):
        for name in ("a", "b"):
            store.ch.publish(b"%s%d" % (name.encode(), i), routing_key=name, properties=PERSISTENT, now=NOW)
        store.ch.publish(b"h%d" % i, exchange="later", routing_key="a", now=NOW,
                         properties=Properties(delivery_mode=2, headers={"x-delay": 3_600_000}))
    got = store.ch.get("a", now=NOW)
    assert got is not None and got.message.body == b"a0"
    store.ch.ack(got.delivery_tag, now=NOW)
    exchange = store.broker.vhosts["/"].exchanges["later"]
    assert exchange.cancel_scheduled(exchange.held.scheduled(limit=10)[6][0])
    store.sync()
    store.close()
    log = SegmentLog(tmp_path / "log")
    found = [(kind, log._path(segment), offset, HEAD_SIZE + len(payload)) for segment, offset, kind, payload
             in log.replay() if kind in (kinds.PUBLISH, kinds.HOLD)]
    log.close()
    # a_i, b_i and the i-th held message are records 3i, 3i + 1 and 3i + 2.
    assert [kind for kind, _, _, _ in found] == [kinds.PUBLISH, kinds.PUBLISH, kinds.HOLD] * 10
    assert len({path for _, path, _, _ in found}) == 1
    # a0 (acked), a4, b8, the second held message and the cancelled seventh;
    # none next to another (replay skips an intact record followed by a
    # damaged one with it).
    for i in (0, 12, 25, 8, 20):
        _, path, offset, size = found[i]
        flip(path, offset + size - 2)
    with capture_logs() as logs:
        store = Store(tmp_path, queue_budget=100_000)
    [lost] = [e for e in logs if e["event"] == "store.messages_lost"]
    assert lost["segment"] == found[0][1].name and lost["reason"] == "damaged records"
    assert (lost["messages"], lost["held_delayed"]) == (2, 1)
    assert sorted(lost["queues"], key=lambda q: q["queue"]) == [
        {"queue": "a", "vhost": "/", "messages": 1, "seqs": [5, 5]},
        {"queue": "b", "vhost": "/", "messages": 1, "seqs": [9, 9]}]
    assert [body for body, _ in drain(store.ch, "a")] == [b"a%d" % i for i in range(1, 10) if i != 4]
    assert [body for body, _ in drain(store.ch, "b")] == [b"b%d" % i for i in range(10) if i != 8]
    assert len(store.broker.vhosts["/"].exchanges["later"].held) == 8
    store.close()


def test_unreadable_damage_in_the_newest_segment_is_said_so(tmp_path: Path) -> None:
    store = fill(tmp_path, 100, queue_budget=100_000)
    path, offset, size = publishes(tmp_path)[40]
    data = bytearray(path.read_bytes())
    data[offset : offset + 3 * size] = bytes(3 * size)  # three records zeroed: no head to read
    path.write_bytes(bytes(data))
    with capture_logs() as logs:
        store = Store(tmp_path, queue_budget=100_000)
    assert bodies(store) == [b"m%05d" % i for i in range(100) if not 40 <= i < 43]
    [lost] = [e for e in logs if e["event"] == "store.messages_lost"]
    assert (lost["messages"], lost["unreadable_bytes"]) == (0, 3 * size)  # not counted, but said
    store.close()


def test_flipped_byte_in_an_older_segment_keeps_the_rest_of_it(tmp_path: Path) -> None:
    store = fill(tmp_path, 600, segment_size=8192, queue_budget=100_000)
    found = publishes(tmp_path)
    second = [item for item in found if item[0].name == "0000000002.seg"]
    assert len(second) > 10 and found[-1][0].name != "0000000002.seg"
    path, offset, size = second[len(second) // 2]
    lost = found.index((path, offset, size))
    before = path.stat().st_size
    flip(path, offset + HEAD_SIZE + 20)
    with capture_logs() as logs:
        store = Store(tmp_path, segment_size=8192, queue_budget=100_000)
    assert bodies(store) == [b"m%05d" % i for i in range(600) if i != lost]
    assert path.stat().st_size == before
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert [(e["event"], e.get("skipped_bytes")) for e in warnings] == [
        ("store.corrupt_segment", size), ("store.messages_lost", None)]
    assert warnings[1]["segment"] == path.name and warnings[1]["messages"] == 1  # the one message, named
    store.close()


def test_garbage_to_the_end_of_an_older_segment_is_left_on_disk(tmp_path: Path) -> None:
    # No write can stop there (a segment is fsynced before the next begins):
    # report it, never cut it.
    store = fill(tmp_path, 300, segment_size=8192, queue_budget=100_000)
    found = publishes(tmp_path)
    path, offset, size = [item for item in found if item[0].name == "0000000001.seg"][-1]
    flip(path, offset + size - 1)
    before = path.read_bytes()
    with capture_logs() as logs:
        store = Store(tmp_path, segment_size=8192, queue_budget=100_000)
    lost = found.index((path, offset, size))
    assert bodies(store) == [b"m%05d" % i for i in range(300) if i != lost]
    assert path.read_bytes() == before
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["store.corrupt_segment",
                                                                           "store.messages_lost"]
    store.close()


def test_damage_mid_segment_and_a_torn_tail(tmp_path: Path) -> None:
    store = fill(tmp_path, 100, queue_budget=100_000)
    found = publishes(tmp_path)
    path, offset, size = found[50]
    flip(path, offset + size - 1)
    _, last, _ = found[-1]
    with open(path, "r+b") as file:
        file.truncate(last + 5)  # the last record torn by a crash
    with capture_logs() as logs:
        store = Store(tmp_path, queue_budget=100_000)
    assert bodies(store) == [b"m%05d" % i for i in range(99) if i != 50]
    assert path.stat().st_size == last  # only the torn tail went
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert [e["event"] for e in warnings] == ["store.corrupt_segment", "store.corrupt_tail", "store.messages_lost"]
    assert warnings[2]["messages"] == 1 and warnings[2]["queues"][0]["seqs"] == [51, 51]  # the torn one is not counted
    store.close()


def test_torn_tail_of_the_newest_segment_is_cut(tmp_path: Path) -> None:
    store = fill(tmp_path, 100, queue_budget=100_000)
    path, last, size = publishes(tmp_path)[-1]
    with open(path, "ab") as file:
        file.write(bytes(1000))  # and a zero-filled tail after it (power loss)
    flip(path, last + size - 1)
    with capture_logs() as logs:
        store = Store(tmp_path, queue_budget=100_000)
    assert bodies(store) == [b"m%05d" % i for i in range(99)]
    assert path.stat().st_size == last
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["store.corrupt_tail"]
    store.close()


def test_a_second_queue_far_from_the_publish_recovers_its_copy(tmp_path: Path) -> None:
    # A message enters a second durable queue (an ENQUEUE record) after
    # thousands of other publishes: recovery must still find its body.
    store = Store(tmp_path, queue_budget=100_000)
    store.ch.declare_queue("q", durable=True, now=NOW)
    store.ch.declare_queue("later", durable=True, now=NOW)
    store.ch.publish(b"first", routing_key="q", properties=PERSISTENT, now=NOW)
    got = store.ch.get("q", now=NOW, no_ack=False)  # unacked: it comes back to "q" too
    assert got is not None
    for i in range(5000):
        store.ch.publish(b"m%05d" % i, routing_key="q", properties=PERSISTENT, now=NOW)
    store.sync()
    assert store.queue("later").enqueue(got.message, None, NOW)
    store.sync()
    with capture_logs() as logs:
        store = store.restart(crash=True)
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == []
    assert bodies_of(store, "later") == [b"first"]
    assert store.queue("q").message_count == 5001
    store.close()


def bodies_of(store: Store, queue: str) -> list[bytes]:
    return [body for body, _ in drain(store.ch, queue)]


def test_progress_reports_segments_records_and_percent(tmp_path: Path) -> None:
    fill(tmp_path, 300, segment_size=8192, queue_budget=100_000)
    seen: list[Progress] = []
    journal = DiskJournal(tmp_path, segment_size=8192)
    report = journal.recover(Broker(), NOW, progress=seen.append)
    journal.close()
    total = len(list((tmp_path / "log").glob("*.seg")))
    assert total >= 3 and report.messages == 300
    assert [p.segments_done for p in seen] == list(range(1, total)) + [total]
    assert all(p.segments_total == total for p in seen)
    assert [p.percent for p in seen] == sorted(p.percent for p in seen) and seen[-1].percent == 100.0
    assert 0 < seen[0].percent < 100
    assert seen[-1].messages == 300 and seen[-1].records > 300  # definitions too


def test_progress_is_logged_every_interval_by_default() -> None:
    ticks = iter([0.0, 0.5, 2.5, 3.0, 4.6])  # start, then one read per call
    progress = ProgressLog(clock=lambda: next(ticks))
    with capture_logs() as logs:
        for done in range(1, 5):
            progress(Progress(done, 4, done * 10, done * 5, done * 25.0))
    assert [(e["event"], e["segments"], e["percent"]) for e in logs] == [
        ("store.recovering", "2/4", 50.0), ("store.recovering", "4/4", 100.0)]


def test_progress_reports_the_restore_of_held_delayed_messages(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(tmp_path)
    store.ch.declare_exchange("later", "x-delayed-message", durable=True, arguments={"x-delayed-type": "direct"})
    for i in range(25):  # an hour and more ahead: on disk only once restored
        store.ch.publish(b"h%d" % i, exchange="later", routing_key="k", now=NOW,
                         properties=Properties(delivery_mode=2, headers={"x-delay": 3_700_000 + i}))
    store.sync()
    store.close()
    monkeypatch.setattr(delayed, "RESTORE_STEP", 10)
    seen: list[Progress | HeldProgress] = []
    journal = DiskJournal(tmp_path)
    report = journal.recover(Broker(), NOW, progress=seen.append)
    journal.close()
    assert report.held == 25
    assert seen[-4:] == [HeldProgress(0, 25), HeldProgress(10, 25), HeldProgress(20, 25), HeldProgress(25, 25)]
    replayed = seen[-5]
    assert isinstance(replayed, Progress) and replayed.messages == 25  # the replay counts them too


@pytest.mark.parametrize("few", [16, 10**9])  # found by bisection, or by passes over all the held
def test_cancelled_and_rescheduled_held_messages_come_back_as_they_were_left(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, few: int) -> None:
    store = Store(tmp_path)
    store.ch.declare_exchange("later", "x-delayed-message", durable=True, arguments={"x-delayed-type": "direct"})
    for i in range(80):  # 4 ids changed: 4 * 16 < 80
        store.ch.publish(b"h%d" % i, exchange="later", routing_key="k", now=NOW,
                         properties=Properties(delivery_mode=2, headers={"x-delay": 3_600_000 + 1000 * i}))
    held = store.broker.vhosts["/"].exchanges["later"]
    ids = [msg_id for msg_id, _ in held.held.scheduled(limit=100)]
    assert held.cancel_scheduled(ids[0]) and held.cancel_scheduled(ids[41])
    assert held.reschedule(ids[7], NOW + 7200.0) and held.reschedule(ids[79], NOW + 9000.0)
    assert held.reschedule(ids[79], NOW + 9999.0) and held.cancel_scheduled(ids[7])  # the last word counts
    expected = held.held.scheduled(limit=100)
    store.sync()
    store.close()
    monkeypatch.setattr(recovery, "_FEW", few)
    store = Store(tmp_path)
    restored = store.broker.vhosts["/"].exchanges["later"].held
    assert restored.scheduled(limit=100) == expected and len(restored) == 77
    assert restored.due_of(ids[79]) == NOW + 9999.0 and restored.due_of(ids[7]) is None
    store.close()


def test_held_restore_progress_is_logged_with_its_rate() -> None:
    ticks = iter([0.0, 2.5, 3.0, 3.5, 6.0, 6.5])  # start, then one read per call
    progress = ProgressLog(clock=lambda: next(ticks))
    with capture_logs() as logs:
        progress(Progress(3, 3, 30, 500_000, 100.0))  # 2.5 s: logged
        progress(HeldProgress(0, 1_000_000))  # 3.0: the restore starts
        progress(HeldProgress(250_000, 1_000_000))  # 3.5: too soon
        progress(HeldProgress(750_000, 1_000_000))  # 6.0: 750,000 in 3 s
        progress(HeldProgress(1_000_000, 1_000_000))  # 6.5: too soon
    assert [(e["event"], e.get("restored"), e.get("total"), e.get("percent"), e.get("per_second")) for e in logs] == [
        ("store.recovering", None, None, 100.0, None),
        ("store.restoring_held", 750_000, 1_000_000, 75.0, 250_000)]


@pytest.mark.parametrize("gap", [3, 10_000])
def test_enqueues_resolve_across_gaps_in_message_ids(tmp_path: Path, gap: int) -> None:
    # Msg ids skip (held delayed messages take ids too): the window of recent
    # PUBLISH locations drops ids by range, small jumps and large alike, and
    # every copy still finds its body.
    store = Store(tmp_path, queue_budget=100_000)
    store.ch.declare_queue("a", durable=True, now=NOW)
    store.ch.declare_queue("b", durable=True, now=NOW)
    store.sync()
    ids = {"a": store.queue("a").store_id, "b": store.queue("b").store_id}
    journal = store.journal
    message = Message("", "a", Properties(delivery_mode=2), b"", None)
    for n in range(3000):
        msg_id = 1 + n * gap
        head = kinds.PUBLISH_HEAD.pack(msg_id, ids["a"], n + 1, math.nan, 0, 6)
        journal.log.append(kinds.PUBLISH, head + kinds.content(attrs.evolve(message, body=b"b%05d" % n)))
        if n % 7 == 0:  # a copy in "b", some right behind its PUBLISH, some far behind
            back = msg_id if n % 2 else 1 + max(0, n - 2500) * gap
            journal.log.append(kinds.ENQUEUE, kinds.ENQUEUE_HEAD.pack(back, ids["b"], n + 1, math.nan))
    store.sync()
    with capture_logs() as logs:
        store = store.restart(crash=True)
    assert not [e for e in logs if e["log_level"] == "warning"]
    assert bodies_of(store, "a") == [b"b%05d" % n for n in range(3000)]
    assert bodies_of(store, "b") == [
        b"b%05d" % (n if n % 2 else max(0, n - 2500)) for n in range(0, 3000, 7)]
    store.close()


def test_runs_of_paged_entries_stop_where_an_entry_must_stay_in_memory(tmp_path: Path) -> None:
    # Start-up pages runs of plain entries in one call each; an entry with a
    # TTL comes back in memory, and after it (order) the rest does too.
    store = Store(tmp_path, queue_budget=8)
    store.ch.declare_queue("q", durable=True, now=NOW)
    for i in range(60):
        expiration = "100000000" if i in (25, 45) else None
        store.ch.publish(b"m%04d" % i, routing_key="q", properties=Properties(delivery_mode=2, expiration=expiration),
                         now=NOW)
    store.sync()
    store = store.restart(crash=True)
    ready = store.queue("q").ready
    assert store.report.paged == 17  # m0008..m0024
    assert (ready.count, ready.in_memory, ready.paged) == (60, 43, 17)
    assert consume_all(store, "q") == [b"m%04d" % i for i in range(60)]
    store.close()
