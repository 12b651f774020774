"""The store driver against a failing disk: a short write (half the bytes,
then ENOSPC), a failed fsync (EIO), a full disk that empties again. While
writes fail, persistent publishes are refused and publishers are told;
nothing already on disk is harmed, and what was pending is written once,
whole, when the disk works again. Also: stopping mid-write loses nothing,
and compaction never deletes what records not yet on disk depend on."""

from __future__ import annotations

import errno
import threading
import time
from pathlib import Path
from typing import BinaryIO

import pytest
import trio
from structlog.testing import capture_logs

from amqlite.core.events import WaitForDisk
from amqlite.core.message import Properties
from amqlite import storage
from amqlite.storage import StoreDriver

from faultyfs import FaultyFS

from .support import PERSISTENT, TINY, Store, drain, scan

NOW = 1000.0
# Retries back off from RETRY_MIN to RETRY_MAX; shortened here so an outage
# of a fraction of a second sees many of them. (The driver writes in worker
# threads, which trio's autojump clock cannot see: these tests run in real time.)
RETRY_MIN, RETRY_MAX = 0.01, 0.08


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage, "RETRY_MIN", RETRY_MIN)
    monkeypatch.setattr(storage, "RETRY_MAX", RETRY_MAX)


async def until(condition, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.005)


class Driven:
    """A :class:`StoreDriver` running over a :class:`Store`, recording what it says."""

    def __init__(self, store: Store, observer: storage.WriteObserver | None = None) -> None:
        self.store = store
        self.blocked: list[str | None] = []
        self.syncs = 0
        self.driver = StoreDriver(store.journal, on_synced=self._synced, on_blocked=self.blocked.append, now=time.time,
                                  observer=observer)

    def _synced(self) -> None:
        self.syncs += 1

    def publish(self, body: bytes, *, key: str = "q", exchange: str = "", properties: Properties = PERSISTENT) -> bool:
        """A publish; True when it was accepted (a confirm would be an ack)."""
        outcome = self.store.ch.publish(body, exchange=exchange, routing_key=key, properties=properties, now=NOW)
        assert outcome is not None
        return not outcome.rejected

    async def settle(self) -> None:
        """Wait until everything appended is on disk."""
        journal = self.store.journal
        while journal.dirty or journal.synced < journal.position:
            await trio.sleep(0.01)


def store_with_queue(tmp_path: Path, fs: FaultyFS, **kwargs: object) -> Store:
    store = Store(tmp_path, fs=fs, **kwargs)  # type: ignore[arg-type]
    store.ch.declare_queue("q", durable=True, now=NOW)
    return store


class Batches:
    """A write observer (storage.WriteObserver) that keeps what it is told."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, int]] = []

    def written(self, seconds: float, messages: int) -> None:
        self.seen.append((seconds, messages))


async def test_the_observer_hears_of_batches_written_not_of_failed_writes(tmp_path: Path) -> None:
    fs = FaultyFS()
    store = store_with_queue(tmp_path, fs)
    batches = Batches()
    driven = Driven(store, batches)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(driven.driver.run)
        for i in range(3):
            assert driven.publish(b"%d" % i)
        await driven.settle()
        assert sum(messages for _, messages in batches.seen) == 3
        assert all(0 < seconds < 60 for seconds, _ in batches.seen)
        before = len(batches.seen)

        fs.fsync_fails = True
        assert driven.publish(b"a") and driven.publish(b"b")  # one batch, which fails
        await until(lambda: not store.journal.accepting)
        assert len(batches.seen) == before
        fs.fsync_fails = False
        await until(lambda: store.journal.accepting)
        await driven.settle()
        # Written once, whole, by the retry: two messages, counted once.
        assert [messages for _, messages in batches.seen[before:]] == [2]
        nursery.cancel_scope.cancel()


async def test_a_failed_manifest_write_waits_for_the_next_write(tmp_path: Path) -> None:
    """A manifest the disk refuses is retried after the next write, not at
    once: retried at once, it failed hundreds of times a second for as long
    as the disk failed (a full-suite run saw 305 failures in a second)."""
    fs = FaultyFS()
    store = store_with_queue(tmp_path, fs)
    driven = Driven(store)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(driven.driver.run)
        await driven.settle()
        fs.fsync_fails = True
        with capture_logs() as logs:
            store.journal.manifest_stale = True
            driven.driver._index_wakeup.unpark_all()
            await trio.sleep(0.5)
        assert [e["event"] for e in logs] == ["store.manifest_failed"] and fs.failures == 1
        fs.fsync_fails = False
        assert driven.publish(b"next")
        await driven.settle()
        await until(lambda: not store.journal.manifest_stale)  # written after the next write
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("failure", ["short write", "failed fsync"])
async def test_failing_disk_blocks_then_recovers(tmp_path: Path, failure: str) -> None:
    fs = FaultyFS()
    store = store_with_queue(tmp_path, fs)
    driven = Driven(store)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(driven.driver.run)
        for i in range(5):
            assert driven.publish(b"before %d" % i)
        await driven.settle()
        on_disk = scan(tmp_path / "log")
        assert on_disk[1] == []

        if failure == "short write":
            fs.full = True
        else:
            fs.fsync_fails = True
        with capture_logs() as logs:
            # Accepted: the disk has not failed yet as far as anyone knows.
            assert driven.publish(b"in flight")
            got = store.ch.get("q", now=NOW)  # and an ack while the disk is failing
            assert got is not None and got.message.body == b"before 0"
            store.ch.ack(got.delivery_tag, now=NOW)
            await until(lambda: not store.journal.accepting)
            assert driven.blocked == [f"disk write failed: {'No space left on device' if failure == 'short write' else 'Input/output error'}"]
            refused = [driven.publish(b"refused %d" % i) for i in range(3)]
            assert refused == [False] * 3
            assert driven.publish(b"transient", properties=Properties(delivery_mode=1))  # not journaled
            # The failure goes on for a while: retries back off, the file stays clean.
            failures_before = fs.failures
            await trio.sleep(1.0)
            retries = fs.failures - failures_before
            assert 1.0 / RETRY_MAX / 2 <= retries <= 1.0 / RETRY_MAX + 8
            assert scan(tmp_path / "log") == on_disk  # nothing torn left behind, nothing lost
            assert store.journal.synced < store.journal.position  # the in-flight confirm still waits
            fs.full = fs.fsync_fails = False
            await until(lambda: store.journal.accepting)
        assert driven.blocked[-1] is None and len(driven.blocked) == 2
        assert store.journal.synced == store.journal.position
        events = [(e["event"], e["log_level"]) for e in logs]
        assert events.count(("store.write_failed", "error")) == 1
        assert ("store.recovered_writes", "info") in events
        assert driven.publish(b"after")
        await driven.settle()
        nursery.cancel_scope.cancel()
    count, problems = scan(tmp_path / "log")
    assert problems == []
    store = store.restart(crash=True)
    assert [body for body, _ in drain(store.ch, "q")] == [
        b"before 1", b"before 2", b"before 3", b"before 4", b"in flight", b"after"]
    store.close()


async def test_full_disk_with_pending_records_across_segments(tmp_path: Path) -> None:
    # Small segments: the records waiting during the outage span several
    # files; after it, each is written exactly once, in order.
    fs = FaultyFS()
    store = store_with_queue(tmp_path, fs, segment_size=200)
    driven = Driven(store)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(driven.driver.run)
        assert driven.publish(b"first")
        await driven.settle()
        fs.full = True
        store.ch.declare_queue("q2", durable=True, now=NOW)  # a definition meets the full disk
        await until(lambda: not store.journal.accepting)
        for _ in range(10):
            store.ch.declare_exchange("ex", "fanout", durable=True)
            store.ch.bind_queue("q", "ex", "")
            store.ch.delete_exchange("ex")
        store.ch.bind_queue("q2", "amq.fanout", "")
        got = store.ch.get("q", now=NOW)
        assert got is not None
        store.ch.nack(got.delivery_tag, now=NOW, requeue=True)  # a delivery count, pending
        await trio.sleep(0.3)
        fs.full = False
        await until(lambda: store.journal.accepting)
        await driven.settle()
        nursery.cancel_scope.cancel()
    assert scan(tmp_path / "log")[1] == []
    store = store.restart(crash=True)
    assert "ex" not in store.vhost.exchanges
    assert [(d.name, k) for (d, k, _) in store.vhost.exchanges["amq.fanout"].bindings] == [("q2", "")]
    got = store.ch.get("q", now=NOW, no_ack=True)
    assert got is not None and got.message.body == b"first" and got.redelivered and got.delivery_count == 1
    store.close()


async def test_stopping_mid_write_loses_nothing(tmp_path: Path) -> None:
    # The driver is cancelled (server stopping) while a write is in a worker
    # thread and more records wait: journal.close() must find them all.
    fs = FaultyFS()
    store = store_with_queue(tmp_path, fs)
    driven = Driven(store)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(driven.driver.run)
        await driven.settle()
        fs.gate = threading.Event()
        assert driven.publish(b"being written")
        await trio.to_thread.run_sync(fs.entered.wait)
        assert driven.publish(b"waiting")
        nursery.cancel_scope.cancel()
        fs.gate.set()
    store = store.restart()  # close() writes what is pending
    assert [body for body, _ in drain(store.ch, "q")] == [b"being written", b"waiting"]
    store.close()


async def test_compaction_only_counts_records_on_disk(tmp_path: Path) -> None:
    # A held message is released (RELEASE, then PUBLISH to its queue) while
    # another write is in flight. Its HOLD segment is obsolete in memory, but
    # the records that replace it are not on disk yet: a crash now must find
    # the message still held, so the HOLD's segment must not be deleted.
    fs = FaultyFS()
    store = Store(tmp_path, fs=fs, segment_size=TINY)
    ch = store.ch
    ch.declare_exchange("delay", "x-delayed-message", durable=True, arguments={"x-delayed-type": "fanout"})
    ch.declare_queue("q", durable=True, now=NOW)
    ch.bind_queue("q", "delay", "")
    driven = Driven(store)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(driven.driver.run)
        driven.publish(b"held", exchange="delay", key="",
                       properties=Properties(delivery_mode=2, headers={"x-delay": 1000}))
        await driven.settle()
        fs.gate = threading.Event()
        ch.declare_queue("other", durable=True, now=NOW)  # a write in flight...
        await trio.to_thread.run_sync(fs.entered.wait)
        store.broker.tick(NOW + 1)  # ...while the message is released
        assert store.queue("q").message_count == 1
        fs.full = True  # the write in flight succeeds; the release never reaches the disk
        gate, fs.gate = fs.gate, None
        gate.set()
        await until(lambda: not store.journal.accepting)
        await trio.sleep(0.1)  # compaction, if it wrongly ran, is done
        nursery.cancel_scope.cancel()
    store = store.restart(crash=True, now=NOW + 0.5)
    assert store.vhost.exchanges["delay"].pending_count == 1, "the held message was lost"
    store.broker.tick(NOW + 1)
    assert drain(store.ch, "q") == [(b"held", False)]
    store.close()


async def test_compaction_failure_is_not_fatal(tmp_path: Path) -> None:
    fs = FaultyFS()
    store = store_with_queue(tmp_path, fs, segment_size=TINY)
    driven = Driven(store)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(driven.driver.run)
        fs.remove_fails = True
        with capture_logs() as logs:
            for i in range(5):
                driven.publish(b"%d" % i)
                await driven.settle()
            drain(store.ch, "q")
            await driven.settle()
            driven.publish(b"still writing")
            await driven.settle()
        assert any(e["event"] == "store.delete_failed" for e in logs)
        # Deleting works: one segment is left; failing, obsolete ones pile up.
        assert len(store.segments()) > 4
        fs.remove_fails = False
        store.ch.declare_queue("x", durable=True, now=NOW)
        await driven.settle()
        store.ch.declare_queue("y", durable=True, now=NOW)
        await until(lambda: len(store.segments()) <= 4)
        nursery.cancel_scope.cancel()
    store = store.restart(crash=True)
    assert drain(store.ch, "q") == [(b"still writing", False)]
    assert set(store.vhost.queues) == {"q", "x", "y"}
    store.close()


async def test_snapshot_on_a_full_disk(tmp_path: Path) -> None:
    # The snapshot cannot be written: no segment is deleted, nothing breaks.
    class SnapshotFails(FaultyFS):
        fail = True

        def write(self, file, data):  # type: ignore[no-untyped-def]
            if self.fail and str(file.name).endswith(".tmp"):
                raise OSError(28, "No space left on device")
            super().write(file, data)

    fs = SnapshotFails()
    store = store_with_queue(tmp_path, fs, segment_size=TINY)
    driven = Driven(store)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(driven.driver.run)
        with capture_logs() as logs:
            for name in ("a", "b", "c"):  # records that only the snapshot makes obsolete
                store.ch.declare_queue(name, durable=True, now=NOW)
                store.ch.delete_queue(name, now=NOW)
                await driven.settle()
        assert any(e["event"] == "store.compaction_failed" for e in logs)
        assert store.segments()[:2] == [1, 2] and store.journal.accepting
        fs.fail = False
        store.ch.declare_queue("d", durable=True, now=NOW)
        await until(lambda: 2 not in store.segments())
        nursery.cancel_scope.cancel()
    store = store.restart(crash=True)
    assert set(store.vhost.queues) == {"q", "d"}
    store.close()


async def test_a_failing_page_in_read_is_retried_then_reported_never_a_hang(tmp_path: Path) -> None:
    """Issue 10, defect 2: a page-in read that fails left the level's
    in-flight batch set for good, so the queue waited forever. Now the read
    is retried with backoff; when it keeps failing, gets and consumers are
    refused with the reason (the log names the queue); once reads work
    again the messages come back, in order, none lost."""
    from amqlite.core.errors import NotFound
    from amqlite.core.events import WAIT_FOR_DISK, ConsumerCancelled

    fs = FaultyFS()
    store = store_with_queue(tmp_path, fs, queue_budget=5)
    driven = Driven(store)
    watcher = store.broker.connect().open_channel()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(driven.driver.run)
        for i in range(50):
            assert driven.publish(b"m%02d" % i)
        await driven.settle()
        assert store.queue("q").ready.paged == 45
        fs.read_fails = True
        got = [store.ch.get("q", now=NOW, no_ack=True) for _ in range(5)]
        assert [g.message.body for g in got if g is not None] == [b"m%02d" % i for i in range(5)]
        watcher.consume("q", now=NOW, consumer_tag="c")
        with capture_logs() as logs:
            assert store.ch.get("q", now=NOW, no_ack=True) is WAIT_FOR_DISK  # on its way back
            await until(lambda: ConsumerCancelled("c") in watcher.outbox)  # on main: waits forever
        failures = [e for e in logs if e["event"] == "store.page_in_failed"]
        assert [e["attempt"] for e in failures] == list(range(1, storage.PAGE_IN_ATTEMPTS + 1))
        assert failures[-1]["log_level"] == "error" and failures[-1]["queue"] == "q"
        assert "Input/output error" in failures[-1]["error"]
        with pytest.raises(NotFound, match="cannot read its messages from disk: .*Input/output error"):
            store.ch.get("q", now=NOW, no_ack=True)
        with pytest.raises(NotFound):
            watcher.consume("q", now=NOW)
        fs.read_fails = False  # the refused get asked for another try, which now works
        await until(lambda: store.queue("q").backing.page_in_error is None)
        bodies = []
        while len(bodies) < 45:
            got_one = store.ch.get("q", now=NOW, no_ack=True)
            if got_one is WAIT_FOR_DISK:
                await trio.sleep(0.01)
                continue
            bodies.append(got_one.message.body)
        assert bodies == [b"m%02d" % i for i in range(5, 50)]
        nursery.cancel_scope.cancel()
    store.close()


async def test_the_driver_trims_the_heap_after_writes_at_most_once_per_interval(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage, "TRIM_INTERVAL", 0.2)
    store = store_with_queue(tmp_path, FaultyFS())
    trims: list[float] = []

    def trim() -> int:
        trims.append(time.monotonic())
        return 2**20

    driver = StoreDriver(store.journal, on_synced=lambda: None, on_blocked=lambda reason: None, now=time.time,
                         trim_heap=trim)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(driver.run)
        with capture_logs() as logs:
            started = time.monotonic()
            while time.monotonic() - started < 0.7:  # a write about every 10 ms
                store.ch.publish(b"x", routing_key="q", properties=PERSISTENT, now=NOW)
                await trio.sleep(0.01)
            await trio.sleep(0.3)
        nursery.cancel_scope.cancel()
    assert 3 <= len(trims) <= 5  # 0.7 s of writes, trims 0.2 s apart
    assert all(b - a >= 0.19 for a, b in zip(trims, trims[1:]))
    assert [e["released_mb"] for e in logs if e["event"] == "memory.trimmed"] == [1.0] * len(trims)
    store.close()


async def test_the_driver_indexes_sealed_segments_and_an_index_it_cannot_write_costs_only_a_replay(
        tmp_path: Path) -> None:
    class IndexWritesFail(FaultyFS):
        failing = False

        def write(self, file: BinaryIO, data: bytes) -> None:
            if file.name.endswith(".idx.tmp") and self.failing:
                raise OSError(errno.ENOSPC, "No space left on device")
            super().write(file, data)

    fs = IndexWritesFail()
    store = store_with_queue(tmp_path, fs, segment_size=600)
    driven = Driven(store)
    log_dir = tmp_path / "log"
    async with trio.open_nursery() as nursery:
        nursery.start_soon(driven.driver.run)
        for i in range(20):
            assert driven.publish(b"m%02d" % i)
        await driven.settle()
        sealed = store.journal.log.sealed()
        assert len(sealed) >= 2
        await until(lambda: {int(p.stem) for p in log_dir.glob("*.idx")} == set(sealed))
        fs.failing = True
        with capture_logs() as logs:
            for i in range(20, 40):
                assert driven.publish(b"m%02d" % i)
            await driven.settle()
            failing = set(store.journal.log.sealed()) - set(sealed)
            await until(lambda: failing <= store.journal._indexed)
        nursery.cancel_scope.cancel()
    assert {e["segment"] for e in logs if e["event"] == "store.index_failed"} == failing
    assert not list(log_dir.glob("*.tmp")) and {int(p.stem) for p in log_dir.glob("*.idx")} == set(sealed)
    store = store.restart(crash=True)
    assert store.journal._indexed == set(sealed)  # the rest were replayed
    assert [body for body, _ in drain(store.ch, "q")] == [b"m%02d" % i for i in range(40)]
    store.close()


async def test_acks_alone_wait_for_more_and_a_publish_is_written_at_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Acks and deliveries, which no confirm waits for, are gathered for
    SETTLE_DELAY before they are written, acks coming meanwhile joining
    them; a publish appended meanwhile is written at once, with them."""
    monkeypatch.setattr(storage, "SETTLE_DELAY", 30.0)
    store = store_with_queue(tmp_path, FaultyFS())
    batches = Batches()
    driven = Driven(store, batches)

    def get_and_ack() -> None:
        got = store.ch.get("q", now=NOW)
        assert got is not None and not isinstance(got, WaitForDisk)
        store.ch.ack(got.delivery_tag, now=NOW)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(driven.driver.run)
        for i in range(4):
            assert driven.publish(b"%d" % i)
        await driven.settle()
        written = len(batches.seen)
        get_and_ack()
        await trio.sleep(0.3)
        get_and_ack()
        await trio.sleep(0.3)
        assert store.journal.dirty and len(batches.seen) == written  # both acks wait
        assert driven.publish(b"new")
        with trio.fail_after(10):  # well before SETTLE_DELAY
            await driven.settle()
        assert [messages for _, messages in batches.seen[written:]] == [1]  # one batch: the publish, both acks
        monkeypatch.setattr(storage, "SETTLE_DELAY", 0.05)
        get_and_ack()
        with trio.fail_after(10):
            await driven.settle()
        nursery.cancel_scope.cancel()
    store = store.restart(crash=True)  # the three acks were written, not left for close
    assert drain(store.ch, "q") == [(b"3", False), (b"new", False)]
    store.close()
