"""Helpers for the store tests: a journal on a temporary directory driven
by hand (write, compact, crash, recover). The failing file system is
tests/faultyfs.py, shared with the server tests."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from amqlite.core.broker import Broker
from amqlite.core.channel import Channel
from amqlite.core.message import Properties
from amqlite.store.journal import DiskJournal
from amqlite.store.segments import FileSystem, SegmentLog

PERSISTENT = Properties(delivery_mode=2)
#: A segment per record: every record rolls over to a new segment.
TINY = 1


class Store:
    """A broker core with a disk journal, written and compacted by hand the
    way :class:`amqlite.storage.StoreDriver` does it."""

    def __init__(self, directory: Path, *, segment_size: int | None = None, fs: FileSystem | None = None,
                 now: float = 1000.0, queue_budget: int = 20_000) -> None:
        self.directory = directory
        self.segment_size = segment_size
        self.queue_budget = queue_budget
        self.journal = DiskJournal(directory, segment_size=segment_size, fs=fs, queue_budget=queue_budget)
        self.broker = Broker()
        self.report = self.journal.recover(self.broker, now)
        self.vhost = self.broker.vhosts["/"]
        self.ch: Channel = self.broker.connect().open_channel()

    def queue(self, name: str) -> Any:
        return self.vhost.queues[name]

    def sync(self, *, compact: bool = True, index: bool = True, snapshot: bool = False) -> list[int]:
        """Write and fsync what is pending; then delete what that made
        obsolete and index what got sealed (the driver's order). With
        ``snapshot``, the snapshot the driver writes a second after a change
        of definitions is written now. Returns the deleted segments."""
        journal = self.journal
        pending, position = journal.take_batch()
        obsolete = journal.obsolete_segments() if compact else []
        journal.log.write_and_sync(pending)
        journal.commit(position)
        if obsolete and journal.needs_snapshot(obsolete) or snapshot and journal.snapshot_stale:
            self.write_snapshot()
        if obsolete:
            journal.write_manifest(journal.manifest_payload(obsolete))
        deleted = journal.delete_segments(obsolete) if obsolete else []
        journal.forget(deleted)
        if index:
            self.index()
        return deleted

    def write_snapshot(self) -> None:
        snapshot = self.journal.snapshot_payload()
        self.journal.write_snapshot(snapshot.payload)
        self.journal.snapshot_written(snapshot)

    def index(self) -> list[int]:
        """Write the index files of sealed segments, as the driver's index
        task does. Returns the segments indexed."""
        journal = self.journal
        segments = journal.unindexed_segments()
        for segment in segments:
            summary = journal.index_segment(segment)
            journal.indexed(segment)
            if summary is not None:
                journal.summarized(segment, summary)
        if journal.manifest_stale:
            journal.write_manifest(journal.manifest_payload())
        return segments

    def page_in(self, now: float = 1000.0) -> int:
        """Serve page-in requests as the driver's page-in task does."""
        served = 0
        for queue, priority, refs in self.journal.page_in_work():
            queue.paged_in(priority, refs, self.journal.read_paged(refs), now)
            served += len(refs)
        return served

    def crash(self) -> None:
        """Stop as kill -9 would: nothing pending is written."""
        journal = self.journal
        journal.take_batch()
        journal.log.close()
        journal._lock_file.close()

    def close(self) -> None:
        self.journal.close()

    def restart(self, *, now: float = 1000.0, crash: bool = False, fs: FileSystem | None = None) -> Store:
        if crash:
            self.crash()
        else:
            self.close()
        return Store(self.directory, segment_size=self.segment_size, fs=fs, now=now, queue_budget=self.queue_budget)

    def segments(self) -> list[int]:
        return sorted(int(p.stem) for p in (self.directory / "log").glob("*.seg"))


def live(journal: DiskJournal) -> Counter[int]:
    """Live things per segment but definition records (which are live
    while they are the newest of their definition)."""
    return +(journal._live - journal._definition_live)


def records(directory: Path) -> list[tuple[int, int]]:
    """(segment, kind) of every intact record on disk."""
    return [(segment, kind) for segment, _, kind, _ in SegmentLog(directory / "log").replay()]


def drain(ch: Channel, queue: str, now: float = 1000.0) -> list[tuple[bytes, bool]]:
    """basic.get with no-ack until empty: (body, redelivered) in order."""
    out = []
    while (got := ch.get(queue, now=now, no_ack=True)) is not None:
        out.append((got.message.body, got.redelivered))
    return out


def scan(log_dir: Path) -> tuple[int, list[str]]:
    """Read every segment in ``log_dir`` without changing it: (intact
    records, problems). A data directory keeps its log in ``log/``."""
    import struct
    import zlib

    head = struct.Struct(">IIB")
    count, problems = 0, []
    for path in sorted(log_dir.glob("*.seg")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            if len(data) - offset < head.size:
                problems.append(f"{path.name}@{offset}: short header")
                break
            length, crc, _ = head.unpack_from(data, offset)
            end = offset + 8 + length
            if length == 0 or end > len(data) or zlib.crc32(data[offset + 8 : end]) != crc:
                problems.append(f"{path.name}@{offset}: bad record")
                break
            count += 1
            offset = end
    return count, problems
