"""Damage to a stopped data directory: declarations are kept twice (the
snapshot and the log each restore every definition), a queue whose every
declaration is gone brings its messages back in a quarantine queue, and
every loss is reported (issue 22, items 1 and 3)."""

from __future__ import annotations

from pathlib import Path

from structlog.testing import capture_logs

from amqlite.store.recovery import QUARANTINE
from amqlite.store.records import SNAPSHOT

from .support import PERSISTENT, Store, drain

NOW = 1000.0


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def segment(directory: Path, number: int) -> Path:
    return directory / "log" / f"{number:010d}.seg"


def queue_with_messages(directory: Path, count: int, **kwargs: object) -> Store:
    store = Store(directory, **kwargs)  # type: ignore[arg-type]
    store.ch.declare_queue("orders", durable=True, now=NOW, arguments={"x-max-priority": 3})
    for i in range(count):
        store.ch.publish(b"%d" % i, routing_key="orders", properties=PERSISTENT, now=NOW)
    store.sync(snapshot=True)
    store.close()
    return store


def events(logs: list[dict], name: str) -> list[dict]:
    return [entry for entry in logs if entry["event"] == name]


def test_a_damaged_declaration_record_loses_nothing_the_snapshot_restores_it(tmp_path: Path) -> None:
    queue_with_messages(tmp_path, 50)
    flip(segment(tmp_path, 1), 20)  # inside the first record: the queue's declaration
    with capture_logs() as logs:
        store = Store(tmp_path)
    assert events(logs, "store.corrupt_segment")
    assert store.queue("orders").settings.max_priority == 3
    assert [body for body, _ in drain(store.ch, "orders")] == [b"%d" % i for i in range(50)]
    store.close()


def test_a_damaged_snapshot_falls_back_to_the_log_and_says_so(tmp_path: Path) -> None:
    queue_with_messages(tmp_path, 10)
    flip(tmp_path / SNAPSHOT, 30)
    with capture_logs() as logs:
        store = Store(tmp_path)  # no traceback
    [warning] = events(logs, "store.snapshot_damaged")
    assert warning["file"] == SNAPSHOT and "log" in warning["action"]
    assert store.queue("orders").settings.max_priority == 3
    assert len(drain(store.ch, "orders")) == 10
    store.sync(snapshot=True)  # the driver writes a sound one again
    store.close()
    with capture_logs() as logs:
        Store(tmp_path).close()
    assert not events(logs, "store.snapshot_damaged")


def test_garbage_for_a_snapshot_is_reported_not_a_traceback(tmp_path: Path) -> None:
    queue_with_messages(tmp_path, 3)
    for garbage in (b"", b"\x00\x00\x00\x05abcde", b"AMQLSNP2\x00\x00"):
        (tmp_path / SNAPSHOT).write_bytes(garbage)
        with capture_logs() as logs:
            store = Store(tmp_path)
        assert events(logs, "store.snapshot_damaged"), garbage
        assert store.queue("orders").message_count == 3
        store.close()


def test_the_log_alone_restores_definitions_whose_first_records_were_compacted(tmp_path: Path) -> None:
    """A definition's record is copied forward before its segment goes,
    so a lost snapshot loses no definition even after compaction."""
    store = Store(tmp_path, segment_size=4096)
    store.ch.declare_exchange("ex", "topic", durable=True)
    store.ch.declare_queue("orders", durable=True, now=NOW)
    store.ch.bind_queue("orders", "ex", "o.#")
    for i in range(200):
        store.ch.publish(b"x" * 100, routing_key="orders", properties=PERSISTENT, now=NOW)
    store.sync()
    drain(store.ch, "orders")
    for _ in range(3):
        store.sync()
    assert store.segments()[0] > 1  # the declarations' first segment is gone
    store.ch.publish(b"kept", exchange="ex", routing_key="o.1", properties=PERSISTENT, now=NOW)
    store.sync()
    store.close()
    (tmp_path / SNAPSHOT).unlink()
    with capture_logs() as logs:
        store = Store(tmp_path)
    assert events(logs, "store.snapshot_missing")
    assert {(d.name, key) for (d, key, _) in store.vhost.exchanges["ex"].bindings} == {("orders", "o.#")}
    assert drain(store.ch, "orders") == [(b"kept", False)]
    store.close()


def test_messages_of_a_queue_with_no_declaration_left_come_back_in_quarantine(tmp_path: Path) -> None:
    queue_with_messages(tmp_path, 40, segment_size=1024)
    (tmp_path / SNAPSHOT).unlink()
    flip(segment(tmp_path, 1), 20)
    with capture_logs() as logs:
        store = Store(tmp_path, segment_size=1024)
    [warning] = events(logs, "store.queue_quarantined")
    name = f"{QUARANTINE}{warning['queue_id']}"
    assert warning["queue"] == name and warning["messages"] == 40
    assert "orders" not in store.vhost.queues
    # Compaction keeps every segment that holds them; a restart keeps the queue.
    for _ in range(3):
        store.sync()
    store = store.restart(crash=True)
    with capture_logs() as logs:
        store = store.restart()
    assert not events(logs, "store.queue_quarantined")  # a queue like any other now
    assert [body for body, _ in drain(store.ch, name)] == [b"%d" % i for i in range(40)]
    store.close()


def published(directory: Path, *, stream: bool = False, acks: int = 0, compact: bool = True) -> tuple[int, list[int]]:
    """200 messages on "q" in segments of 4 KiB, the first ``acks`` acked,
    everything written and indexed (so the manifest knows every sealed
    segment). Returns how many are left and the sealed segments."""
    store = Store(directory, segment_size=4096)
    arguments = {"x-queue-type": "stream"} if stream else {}
    store.ch.declare_queue("q", durable=True, now=NOW, arguments=arguments)
    for i in range(200):
        store.ch.publish(b"%03d" % i + b"." * 60, routing_key="q", properties=PERSISTENT, now=NOW)
    for _ in range(acks):
        got = store.ch.get("q", now=NOW)
        assert got is not None
        store.ch.ack(got.delivery_tag, now=NOW)
    store.sync(compact=compact)
    store.sync(compact=compact)
    sealed = store.segments()[:-1]
    assert len(sealed) >= 3
    store.close()
    return 200 - acks, sealed


def lost_lines(logs: list[dict]) -> list[dict]:
    return events(logs, "store.messages_lost")


def test_a_deleted_sealed_segment_is_reported_with_its_queue_and_count(tmp_path: Path) -> None:
    left, sealed = published(tmp_path, acks=5)  # acked ones are not lost
    segment(tmp_path, sealed[1]).unlink()
    with capture_logs() as logs:
        store = Store(tmp_path, segment_size=4096)
    [line] = lost_lines(logs)
    back = len(drain(store.ch, "q"))
    assert line["segment"] == f"{sealed[1]:010d}.seg" and line["reason"] == "missing"
    [queue] = line["queues"]
    assert queue["queue"] == "q" and queue["messages"] == line["messages"] == left - back > 0
    store.index()  # the driver writes the manifest again at once
    store.close()
    with capture_logs() as logs:
        Store(tmp_path, segment_size=4096).close()
    assert not lost_lines(logs)  # said once


def test_a_deleted_segment_whose_messages_were_all_acked_loses_nothing(tmp_path: Path) -> None:
    left, sealed = published(tmp_path, acks=62, compact=False)
    store = Store(tmp_path, segment_size=4096)
    assert sealed[1] in store.journal.obsolete_segments()  # all acked, compaction not yet run
    store.crash()
    segment(tmp_path, sealed[1]).unlink()
    with capture_logs() as logs:
        store = Store(tmp_path, segment_size=4096)
    assert not lost_lines(logs)
    assert len(drain(store.ch, "q")) == left
    store.close()


def test_a_segment_cut_in_half_reports_the_messages_cut(tmp_path: Path) -> None:
    left, sealed = published(tmp_path)
    path = segment(tmp_path, sealed[0])
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[: size // 2])
    with capture_logs() as logs:
        store = Store(tmp_path, segment_size=4096)
    [line] = lost_lines(logs)
    back = len(drain(store.ch, "q"))
    assert line["reason"] == f"cut to {size // 2} of {size} bytes"
    assert line["messages"] == left - back > 0
    store.close()


def test_a_flipped_byte_in_a_message_reports_that_message(tmp_path: Path) -> None:
    left, sealed = published(tmp_path)
    flip(segment(tmp_path, sealed[1]), 300)
    with capture_logs() as logs:
        store = Store(tmp_path, segment_size=4096)
    [line] = lost_lines(logs)
    assert line["reason"] == "damaged records" and line["messages"] == 1
    assert len(drain(store.ch, "q")) == left - 1
    store.close()


def test_a_stream_reports_the_offsets_it_lost(tmp_path: Path) -> None:
    _, sealed = published(tmp_path, stream=True)
    segment(tmp_path, sealed[1]).unlink()
    with capture_logs() as logs:
        store = Store(tmp_path, segment_size=4096)
    [line] = lost_lines(logs)
    [queue] = line["queues"]
    first, last = queue["offsets"]
    assert queue["messages"] == last - first + 1 > 0 and first > 0
    store.close()


def test_compaction_is_not_taken_for_loss(tmp_path: Path) -> None:
    left, sealed = published(tmp_path, acks=120)
    assert sealed[0] > 1  # the first segments were compacted
    with capture_logs() as logs:
        store = Store(tmp_path, segment_size=4096)
    assert not lost_lines(logs) and not events(logs, "store.manifest_missing")
    assert len(drain(store.ch, "q")) == left
    store.close()


def test_a_deleted_manifest_is_reported_and_written_again(tmp_path: Path) -> None:
    from amqlite.store.manifest import MANIFEST

    published(tmp_path)
    (tmp_path / MANIFEST).unlink()
    with capture_logs() as logs:
        store = Store(tmp_path, segment_size=4096)
    assert events(logs, "store.manifest_missing")
    store.index()
    store.close()
    assert (tmp_path / MANIFEST).exists()


def test_a_deleted_queue_with_unacked_messages_is_not_taken_for_a_lost_one(tmp_path: Path) -> None:
    """Its unacked message's entry outlives the queue until acked; the
    records declaring and deleting it must not go first, or a restart
    would bring the message back in quarantine."""
    store = Store(tmp_path, segment_size=1)  # a segment per record: compaction deletes all it may
    store.ch.declare_queue("gone", durable=True, now=NOW)
    store.ch.publish(b"out", routing_key="gone", properties=PERSISTENT, now=NOW)
    assert store.ch.get("gone", now=NOW) is not None  # out with a consumer...
    store.ch.delete_queue("gone", now=NOW)  # ...as the queue is deleted
    for _ in range(3):
        store.sync()
    for _ in range(2):  # restarts, each followed by compaction
        with capture_logs() as logs:
            store = store.restart(crash=True)
        assert not events(logs, "store.queue_quarantined")
        assert list(store.vhost.queues) == []
        store.sync()
        store.sync()
    store.close()
