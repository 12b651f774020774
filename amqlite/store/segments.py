"""Append-only segment files of CRC-checked records.

A record on disk is ``length (u32) | crc32 (u32) | type (u8) | payload``,
where ``length`` counts type and payload and the CRC covers them. Segments
are numbered files that roll over at a size limit; a segment whose records
are all obsolete is deleted whole.

Writing happens in two steps so that the event loop never blocks:
:meth:`SegmentLog.append` only encodes into memory (trio thread), and
:meth:`SegmentLog.write_and_sync` writes and fsyncs what was appended
(worker thread). Appends that arrive during a sync are carried by the next
one: group commit.

Every file operation goes through :class:`FileSystem`, so tests can inject a
short write, a failed fsync or a full disk.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import re
import struct
import threading
import zlib
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from .. import defaults
from ..log import get_logger

log = get_logger(__name__)

RECORD_HEAD = struct.Struct(">IIB")  # length, crc32, type
HEAD_SIZE = RECORD_HEAD.size
#: The payload of a record that opens an atomic unit: how many bytes of
#: records follow in the unit (see SegmentLog.open_unit).
UNIT_SPAN = struct.Struct(">Q")
#: Bytes one read takes when reading records back in a batch.
READ_SPAN = 256 * 1024
_SUFFIX = ".seg"
_INDEX_SUFFIX = ".idx"
_CHECKSUM_CHUNK = 1 << 20


class FileSystem:
    """The file operations the log performs; a seam for fault injection."""

    def open_append(self, path: Path) -> BinaryIO:
        return open(path, "ab")

    def write(self, file: BinaryIO, data: bytes) -> None:
        file.write(data)
        file.flush()

    def fsync(self, file: BinaryIO) -> None:
        os.fsync(file.fileno())

    def fsync_dir(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        return os.pread(fd, size, offset)

    def truncate(self, path: Path, size: int) -> None:
        with open(path, "r+b") as file:
            file.truncate(size)
            os.fsync(file.fileno())

    def remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)

    def allocate(self, file: BinaryIO, size: int) -> None:
        """Give ``file`` ``size`` bytes of disk (ENOSPC if there is no room)."""
        os.posix_fallocate(file.fileno(), 0, size)

    def free_bytes(self, path: Path) -> int:
        """Space left to an unprivileged writer on the file system of ``path``."""
        stats = os.statvfs(path)
        return stats.f_bavail * stats.f_frsize


#: The CRC of each kind byte, so that a record's CRC (kind and payload)
#: continues from it rather than from a copy of the payload with the kind.
_KIND_CRC = [zlib.crc32(bytes((kind,))) for kind in range(256)]


def encode_record(kind: int, payload: bytes) -> bytes:
    return RECORD_HEAD.pack(len(payload) + 1, zlib.crc32(payload, _KIND_CRC[kind]), kind) + payload


def _by_segment(pending: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    """Consecutive records of one segment joined, so a batch is one write
    per segment rather than one system call per record."""
    runs: list[tuple[int, list[bytes]]] = []
    for segment, data in pending:
        if runs and runs[-1][0] == segment:
            runs[-1][1].append(data)
        else:
            runs.append((segment, [data]))
    return [(segment, b"".join(chunks)) for segment, chunks in runs]


def record_end(data: bytes, offset: int) -> int:
    """Where the intact record at ``offset`` ends, or -1 if there is none."""
    if len(data) - offset < HEAD_SIZE:
        return -1
    length, crc, _ = RECORD_HEAD.unpack_from(data, offset)
    end = offset + 8 + length
    if length == 0 or end > len(data) or zlib.crc32(memoryview(data)[offset + 8 : end]) != crc:
        return -1
    return end


def _chains(data: bytes, offset: int) -> bool:
    """An intact record starts at ``offset`` and is followed by another or
    by the end of the data: two checksums in a row, so bytes inside a
    message body that happen to look like a record are not taken for one."""
    end = record_end(data, offset)
    return end == len(data) or (end > 0 and record_end(data, end) > 0)


def _unit_break(data: bytes, start: int, stop: int) -> int | None:
    """Where the records of a unit from ``start`` to ``stop`` stop being
    intact: None if they all are and the last ends at ``stop``."""
    offset = start
    while offset < stop:
        end = record_end(data, offset)
        if end < 0 or end > stop:
            return offset
        offset = end
    return None


_NONZERO = re.compile(rb"[^\x00]")


def _starts(size: int) -> re.Pattern[bytes]:
    """Where a record could start in ``size`` bytes: its big-endian length
    is not zero and fits, so its first byte is at most ``size >> 24`` and its
    first four bytes are not all zero. The regex engine skips the rest (zero
    fill, random garbage) at C speed."""
    top = re.escape(bytes([min(255, size >> 24)]))
    return re.compile(b"(?=[\\x00-" + top + b"])(?!\\x00\\x00\\x00\\x00)", re.DOTALL)


def _resync(data: bytes, bad: int) -> tuple[int, int | None]:
    """Where intact records start again after the bad record at ``bad``
    (``len(data)`` if they never do), and how many records were skipped
    (None when a damaged length field hides it)."""
    if len(data) - bad >= HEAD_SIZE:
        # Most damage spares the length field: the next record follows.
        after = bad + 8 + RECORD_HEAD.unpack_from(data, bad)[0]
        if after == len(data) or (bad < after < len(data) and _chains(data, after)):
            return after, 1
    starts, last = _starts(len(data)), len(data) - HEAD_SIZE
    candidate = bad + 1
    while candidate <= last:
        nonzero = _NONZERO.search(data, candidate)  # a zero-filled stretch is skipped fastest this way
        if nonzero is None:
            break
        found = starts.search(data, max(candidate, nonzero.start() - 3), last + 1)
        if found is None:
            break
        candidate = found.start()
        if _chains(data, candidate):
            return candidate, None
        candidate += 1
    return len(data), None


#: One record as replay finds it: (segment, offset, kind, payload). A plain
#: tuple: start-up builds one per record of the log.
Record = tuple[int, int, int, bytes]


class SegmentLog:
    def __init__(self, directory: Path, *, segment_size: int = defaults.SEGMENT_SIZE, fs: FileSystem | None = None) -> None:
        self.directory = directory
        self.segment_size = segment_size
        self.fs = fs or FileSystem()
        directory.mkdir(parents=True, exist_ok=True)
        self.segments: list[int] = sorted(int(p.stem) for p in directory.glob(f"*{_SUFFIX}"))
        if not self.segments:
            self.segments.append(1)
        #: Segment the next append goes to, and its size once written.
        self.current = self.segments[-1]
        #: Bytes of each segment known to be on disk, so a failed write can
        #: be cut back to them.
        self._written: dict[int, int] = self.segment_sizes()
        self._size = self._written.setdefault(self.current, 0)
        #: Final sizes of the segments nothing will be appended to again.
        self._sealed: dict[int, int] = {segment: self._written[segment] for segment in self.segments[:-1]
                                        if segment in self._written}
        self._pending: list[tuple[int, bytes]] = []  # (segment, bytes) not yet written
        self._pending_size = 0
        #: The atomic unit being appended: (its first record's kind, index
        #: in ``_pending``, where its records start).
        self._unit: tuple[int, int, int] | None = None
        self._file: BinaryIO | None = None
        self._file_segment = 0
        #: Segments a failed write may have left bytes in beyond ``_written``.
        self._damaged: set[int] = set()
        #: Segments whose replay skipped damaged records (start-up), and the
        #: byte ranges skipped in each.
        self.damaged: set[int] = set()
        self.skipped: dict[int, list[tuple[int, int]]] = {}
        #: Positions: every appended byte gets one; ``synced`` trails ``appended``.
        self.appended = 0
        self.synced = 0
        #: Called when records start waiting for a write: the writer's wake-up.
        self.on_pending: Callable[[], object] | None = None
        self._lock = threading.Lock()
        self._readers: dict[int, int] = {}  # segment -> fd open for reading
        #: Reads in progress per reader fd, and fds of deleted segments that
        #: their last reader closes: compaction never closes an fd in use
        #: (its number could be reused under the reader's feet).
        self._reading: dict[int, int] = {}
        self._closing: set[int] = set()

    def _path(self, segment: int) -> Path:
        return self.directory / f"{segment:010d}{_SUFFIX}"

    # -- reading (start-up) ---------------------------------------------

    def segment_sizes(self) -> dict[int, int]:
        """Bytes in each segment file on disk (start-up, before replay)."""
        sizes = {}
        for segment in self.segments:
            try:
                sizes[segment] = self._path(segment).stat().st_size
            except FileNotFoundError:
                pass
        return sizes

    def replay(self) -> Iterator[Record]:
        """Every intact record, oldest first."""
        for segment in self.segment_sizes():
            yield from self.records(segment, self.read_segment(segment))

    def checksum(self, segment: int) -> int:
        """The CRC-32 of a segment file, read through one small buffer:
        start-up checks every indexed segment this way, gigabytes that need
        not be held (see segment_index)."""
        crc, buffer = 0, bytearray(_CHECKSUM_CHUNK)
        view = memoryview(buffer)
        with open(self._path(segment), "rb", buffering=0) as file:
            while read := file.readinto(buffer):
                crc = zlib.crc32(view[:read], crc)
        return crc

    def records(self, segment: int, data: bytes, unit: int = 0) -> Iterator[Record]:
        """The intact records of one segment, given its bytes (start-up).

        Damage is never cut where good records could lie. Bad bytes that run
        to the end of the newest segment are what a crash mid-write leaves
        (a torn record, a zero-filled tail): they are truncated, so appends
        continue on a record boundary, and logged as ``store.corrupt_tail``.
        Anywhere else replay skips to the next intact record and leaves the
        file as it is; ``store.corrupt_segment`` names every range skipped.

        A record of kind ``unit`` opens an atomic unit (:meth:`open_unit`):
        its records come only if every one of them is intact. A unit that a
        crash cut short is part of the torn tail, cut from the unit's first
        record; one damaged elsewhere is skipped whole.
        """
        path = self._path(segment)
        skipped: list[dict[str, int | None]] = []
        offset, size, view, unpack, crc32 = 0, len(data), memoryview(data), RECORD_HEAD.unpack_from, zlib.crc32
        while offset < size:
            if size - offset >= HEAD_SIZE:  # record_end inlined: this loop is start-up's hot path
                length, crc, kind = unpack(data, offset)
                end = offset + 8 + length
                if length and end <= size and crc32(view[offset + 8 : end]) == crc:
                    if kind == unit:
                        stop = end + UNIT_SPAN.unpack_from(data, offset + HEAD_SIZE)[0]
                        broken = _unit_break(data, end, stop)
                        if broken is not None:
                            resume = (stop if stop == size or stop < size and _chains(data, stop)
                                      else _resync(data, broken)[0])
                            if resume == size and segment == self.segments[-1]:
                                break  # a unit the crash tore: cut below, from its first record
                            skipped.append({"start": offset, "end": resume, "bytes": resume - offset,
                                            "records": None})
                            offset = resume
                            continue
                    yield segment, offset, kind, data[offset + HEAD_SIZE : end]
                    offset = end
                    continue
            resume, records = _resync(data, offset)
            if resume == size and segment == self.segments[-1]:
                break  # a torn tail: cut below
            skipped.append({"start": offset, "end": resume, "bytes": resume - offset, "records": records})
            offset = resume
        if skipped:
            self.damaged.add(segment)
            self.skipped[segment] = [(int(item["start"] or 0), int(item["end"] or 0)) for item in skipped]
            counts = [item["records"] for item in skipped]
            log.warning(
                "store.corrupt_segment",
                segment=path.name,
                skipped=skipped,
                skipped_bytes=sum(int(item["bytes"] or 0) for item in skipped),
                # None: a damaged length field hides how many records the range held.
                skipped_records=None if None in counts else sum(int(c or 0) for c in counts),
                action="left on disk",
            )
        if offset < len(data):
            log.warning("store.corrupt_tail", segment=path.name, offset=offset, dropped_bytes=len(data) - offset)
            self.fs.truncate(path, offset)
            if segment == self.current:
                self._size = self._written[segment] = offset

    # -- index files ------------------------------------------------------

    def sealed(self) -> list[int]:
        """Segments wholly on disk that nothing will be appended to again."""
        return [segment for segment, size in list(self._sealed.items())
                if self._written.get(segment, 0) >= size and segment not in self._damaged]

    def read_segment(self, segment: int) -> bytes:
        return self._path(segment).read_bytes()

    @contextlib.contextmanager
    def mapped_segment(self, segment: int) -> Iterator[bytes | mmap.mmap]:
        """A sealed segment's bytes, mapped rather than read: they stay in
        the page cache, not on the heap (indexing a segment read 64 MB onto
        the heap at each roll, a jump in memory use the memory watch saw)."""
        with open(self._path(segment), "rb") as file:
            if not os.fstat(file.fileno()).st_size:
                yield b""
                return
            with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
                yield data

    def read_index(self, segment: int) -> bytes | None:
        """The index file kept beside ``segment``, if there is one."""
        try:
            return self._index_path(segment).read_bytes()
        except FileNotFoundError:
            return None

    def write_index(self, segment: int, data: bytes) -> bool:
        """Write the index file of a sealed segment (worker thread); False
        if the segment was deleted meanwhile. An index is only a cache,
        validated when read: it is written without fsync, and one torn by a
        crash is ignored at start-up."""
        path = self._index_path(segment)
        temp = path.with_name(path.name + ".tmp")
        with self._lock:
            if segment not in self._sealed:
                return False
            try:
                with open(temp, "wb") as file:
                    self.fs.write(file, data)
                os.replace(temp, path)
            except OSError:
                self.fs.remove(temp)
                raise
        return True

    def _index_path(self, segment: int) -> Path:
        return self.directory / f"{segment:010d}{_INDEX_SUFFIX}"

    # -- writing --------------------------------------------------------

    def append(self, kind: int, payload: bytes) -> tuple[int, int]:
        """Queue a record for the next write; returns (segment, offset)."""
        data = encode_record(kind, payload)
        if self._size and self._size + len(data) > self.segment_size and self._unit is None:
            self._seal()
        if not self._pending and self.on_pending is not None:
            self.on_pending()
        self._pending.append((self.current, data))
        self._pending_size += len(data)
        offset = self._size
        self._size += len(data)
        self.appended += len(data)
        return self.current, offset

    def open_unit(self, kind: int) -> None:
        """The records appended from here to :meth:`close_unit` form one
        atomic unit: recovery finds all of them or none (:meth:`records`).
        A record of ``kind`` opens it and says how many bytes follow in it.
        A unit lies in one segment (the log does not roll inside one, so a
        unit may take a segment past its size): a crash tears only the
        newest segment, and compaction deletes a unit whole or not at all."""
        assert self._unit is None, "units do not nest"
        self.append(kind, UNIT_SPAN.pack(0))
        self._unit = (kind, len(self._pending) - 1, self._size)

    def close_unit(self) -> bool:
        """End the open unit: its first record now says how long it is.
        A unit with nothing in it is taken back; then False."""
        assert self._unit is not None, "no unit is open"
        (kind, at, start), self._unit = self._unit, None
        span = self._size - start
        segment, data = self._pending[at]
        if not span:
            del self._pending[at]  # the last record appended: nothing saw its position
            self._pending_size -= len(data)
            self._size -= len(data)
            self.appended -= len(data)
            return False
        self._pending[at] = (segment, encode_record(kind, UNIT_SPAN.pack(span)))
        return True

    def roll(self) -> None:
        """Start a new segment now, so the current one can be deleted once
        nothing in it is needed (a drained log while the disk is low)."""
        if self._size:
            self._seal()

    def _seal(self) -> None:
        self._sealed[self.current] = self._size
        self.current += 1
        self.segments.append(self.current)
        self._size = 0

    def size(self, segment: int) -> int:
        """Bytes of ``segment``, written or waiting to be."""
        return self._size if segment == self.current else self._sealed.get(segment, self._written.get(segment, 0))

    def is_written(self, segment: int, offset: int) -> bool:
        """Whether the record at ``offset`` of ``segment`` is on disk (synced)."""
        return offset < self._written.get(segment, 0)

    def read(self, segment: int, offset: int) -> tuple[int, bytes]:
        """The record at ``offset`` of ``segment``: (kind, payload). For a
        worker thread (or start-up); the record must be written. Raises
        ValueError if it does not check. Segment files stay open for
        reading until deleted, so reading a batch back opens each once."""
        return self.read_many([(segment, offset)])[0]

    def read_many(self, locations: list[tuple[int, int]]) -> list[tuple[int, bytes]]:
        """The records at ``locations`` (segment, offset), in that order, as
        :meth:`read` gives each. Records near each other come in with one
        read of up to READ_SPAN bytes: a batch of paged messages read back
        one record at a time took two preads a message, 16% of the server's
        time while consuming a paged backlog."""
        records: list[tuple[int, bytes]] = []
        start = 0
        while start < len(locations):
            segment = locations[start][0]
            end = start + 1
            while end < len(locations) and locations[end][0] == segment:
                end += 1
            fd = self._open_reader(segment)
            try:
                records.extend(self._read_records(fd, segment, [offset for _, offset in locations[start:end]]))
            finally:
                self._release_reader(fd)
            start = end
        return records

    def _read_records(self, fd: int, segment: int, offsets: list[int]) -> list[tuple[int, bytes]]:
        records = []
        window, window_start = b"", 0
        for offset in offsets:
            at = offset - window_start
            if not 0 <= at <= len(window) - HEAD_SIZE:
                window, window_start, at = self.fs.pread(fd, READ_SPAN, offset), offset, 0
                if len(window) < HEAD_SIZE:
                    raise ValueError(f"no record at {segment}:{offset}")
            length, crc, kind = RECORD_HEAD.unpack_from(window, at)
            end = at + HEAD_SIZE + length - 1
            if end > len(window):  # a record larger than what the window holds of it
                window, window_start, at = self.fs.pread(fd, HEAD_SIZE + length - 1, offset), offset, 0
                end = HEAD_SIZE + length - 1
            payload = window[at + HEAD_SIZE : end]
            if len(payload) != length - 1 or zlib.crc32(payload, _KIND_CRC[kind]) != crc:
                raise ValueError(f"bad record at {segment}:{offset}")
            records.append((kind, payload))
        return records

    def _open_reader(self, segment: int) -> int:
        with self._lock:
            fd = self._readers.get(segment)
            if fd is None:
                fd = self._readers[segment] = os.open(self._path(segment), os.O_RDONLY)
            self._reading[fd] = self._reading.get(fd, 0) + 1
        return fd

    def _release_reader(self, fd: int) -> None:
        with self._lock:
            self._reading[fd] -= 1
            if not self._reading[fd]:
                del self._reading[fd]
                if fd in self._closing:
                    self._closing.discard(fd)
                    os.close(fd)

    def _close_reader(self, segment: int) -> None:
        """Close a segment's reader fd now, or when its last read ends (lock held)."""
        fd = self._readers.pop(segment, None)
        if fd is None:
            return
        if fd in self._reading:
            self._closing.add(fd)
        else:
            os.close(fd)

    @property
    def dirty(self) -> bool:
        return bool(self._pending)

    @property
    def pending_bytes(self) -> int:
        """Bytes appended and not yet handed to a writer."""
        return self._pending_size

    def take_pending(self) -> tuple[list[tuple[int, bytes]], int]:
        """Hand the appended records to a writer (trio thread)."""
        pending, self._pending = self._pending, []
        self._pending_size = 0
        return pending, self.appended

    def put_back(self, pending: list[tuple[int, bytes]]) -> None:
        """Records whose write failed go first in line again (trio thread)."""
        self._pending[:0] = pending
        self._pending_size += sum(len(data) for _, data in pending)

    def write_and_sync(self, pending: list[tuple[int, bytes]]) -> None:
        """Write and fsync records (worker thread). On error nothing is
        considered written: the caller puts the records back for a retry,
        and whatever part of them reached the files (a short write, or data
        whose fsync failed) is cut off before anything else is written."""
        with self._lock:
            if self._damaged:
                self._repair()
            try:
                self._write(pending)
            except OSError:
                self._damaged.update(segment for segment, _ in pending)
                self._close_file()  # a file whose write or fsync failed is not trusted again
                try:
                    self._repair()
                except OSError:
                    pass  # still damaged: the next write repairs first, or fails
                raise
            for segment, data in pending:
                self._written[segment] = self._written.get(segment, 0) + len(data)

    def _write(self, pending: list[tuple[int, bytes]]) -> None:
        new_segment = False
        for segment, data in _by_segment(pending):
            if self._file is None or self._file_segment != segment:
                if self._file is not None:
                    self.fs.fsync(self._file)
                    self._close_file()
                self._file = self.fs.open_append(self._path(segment))
                self._file_segment = segment
                new_segment = True
            self.fs.write(self._file, data)
        if self._file is not None:
            self.fs.fsync(self._file)
        if new_segment:
            self.fs.fsync_dir(self.directory)

    def _close_file(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None

    def _repair(self) -> None:
        """Cut damaged segments back to what is known to be on disk."""
        for segment in sorted(self._damaged):
            path = self._path(segment)
            written = self._written.get(segment, 0)
            if path.exists() and path.stat().st_size > written:
                self.fs.truncate(path, written)
            self._damaged.discard(segment)

    def delete(self, segment: int) -> None:
        """Remove a segment none of whose records is needed any more
        (worker thread). The directory is synced after each removal, so
        segments disappear oldest first even across a power loss."""
        if segment == self.current:
            return
        with self._lock:
            self._close_reader(segment)
            if self._file_segment == segment:
                self._close_file()  # rolled away from: its space comes back only once closed
            self._sealed.pop(segment, None)  # no index gets written for it from now on
            self.fs.remove(self._index_path(segment))  # first: an index never outlives its segment
        self.fs.remove(self._path(segment))
        self.fs.fsync_dir(self.directory)
        self.segments.remove(segment)
        self._written.pop(segment, None)

    def close(self) -> None:
        with self._lock:
            self._close_file()
            for segment in list(self._readers):
                self._close_reader(segment)
