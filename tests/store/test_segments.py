"""The segment log on its own: records round-trip, a torn tail of the newest
segment is cut off (and logged), segments roll over, failed writes leave no
trace, and compaction never closes a file a read is using."""

from __future__ import annotations

import errno
import random
import os
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from amqlite.store.segments import HEAD_SIZE, READ_SPAN, FileSystem, SegmentLog

from faultyfs import FaultyFS

from .support import scan


def write_all(log: SegmentLog) -> None:
    pending, position = log.take_pending()
    log.write_and_sync(pending)
    log.synced = position


def payloads(directory: Path, **kwargs: object) -> list[tuple[int, bytes]]:
    log = SegmentLog(directory, **kwargs)  # type: ignore[arg-type]
    return [(kind, payload) for _, _, kind, payload in log.replay()]


def test_round_trip(tmp_path: Path) -> None:
    log = SegmentLog(tmp_path)
    written = [(1 + i % 10, bytes([i]) * i) for i in range(50)]
    for kind, payload in written:
        log.append(kind, payload)
    assert log.dirty and log.synced == 0
    write_all(log)
    assert not log.dirty and log.synced == log.appended
    log.append(3, b"later")
    write_all(log)
    log.close()
    assert payloads(tmp_path) == written + [(3, b"later")]


def test_appends_return_record_offsets_and_positions_grow(tmp_path: Path) -> None:
    log = SegmentLog(tmp_path)
    _, first = log.append(1, b"a")
    _, second = log.append(1, b"bb")
    assert first == 0 and second == HEAD_SIZE + 1
    assert log.appended == 2 * HEAD_SIZE + 3
    write_all(log)
    assert log.read(1, second) == (1, b"bb")  # an offset finds its record
    assert log.is_written(1, second) and not log.is_written(1, second + HEAD_SIZE + 2)


def test_appends_continue_an_existing_log(tmp_path: Path) -> None:
    log = SegmentLog(tmp_path)
    log.append(1, b"one")
    write_all(log)
    log.close()
    log = SegmentLog(tmp_path)
    list(log.replay())
    log.append(2, b"two")
    write_all(log)
    log.close()
    assert payloads(tmp_path) == [(1, b"one"), (2, b"two")]


def _three_records(tmp_path: Path) -> Path:
    log = SegmentLog(tmp_path)
    for payload in (b"first", b"second", b"third record"):
        log.append(1, payload)
    write_all(log)
    log.close()
    return tmp_path / "0000000001.seg"


@pytest.mark.parametrize("cut", [1, HEAD_SIZE - 1, HEAD_SIZE, HEAD_SIZE + 5])
def test_torn_tail_is_truncated_and_logged(tmp_path: Path, cut: int) -> None:
    path = _three_records(tmp_path)
    size = path.stat().st_size
    intact = size - (HEAD_SIZE + len(b"third record"))
    with open(path, "r+b") as file:
        file.truncate(intact + cut)  # a crash in the middle of the last record
    with capture_logs() as logs:
        assert payloads(tmp_path) == [(1, b"first"), (1, b"second")]
    assert path.stat().st_size == intact
    assert [e["event"] for e in logs] == ["store.corrupt_tail"]
    assert logs[0]["log_level"] == "warning" and logs[0]["dropped_bytes"] == cut
    # Appending after the cut continues cleanly.
    log = SegmentLog(tmp_path)
    list(log.replay())
    log.append(1, b"fourth")
    write_all(log)
    log.close()
    assert payloads(tmp_path) == [(1, b"first"), (1, b"second"), (1, b"fourth")]


@pytest.mark.parametrize("where", ["payload", "crc", "length"])
def test_flipped_byte_in_last_record_is_truncated(tmp_path: Path, where: str) -> None:
    path = _three_records(tmp_path)
    data = bytearray(path.read_bytes())
    last = len(data) - (HEAD_SIZE + len(b"third record"))
    index = {"payload": len(data) - 3, "crc": last + 5, "length": last + 3}[where]
    data[index] ^= 0x40
    path.write_bytes(bytes(data))
    with capture_logs() as logs:
        assert payloads(tmp_path) == [(1, b"first"), (1, b"second")]
    assert path.stat().st_size == last
    assert [e["event"] for e in logs] == ["store.corrupt_tail"]


def test_zero_filled_tail_is_truncated(tmp_path: Path) -> None:
    # What a file system may show after a power loss: the size grew, the data did not land.
    path = _three_records(tmp_path)
    size = path.stat().st_size
    with open(path, "ab") as file:
        file.write(bytes(4096))
    with capture_logs() as logs:
        assert len(payloads(tmp_path)) == 3
    assert path.stat().st_size == size
    assert logs and logs[0]["event"] == "store.corrupt_tail"


def test_rollover_to_new_segments(tmp_path: Path) -> None:
    log = SegmentLog(tmp_path, segment_size=100)
    places = [log.append(1, bytes(40))[0] for _ in range(7)]
    # 49 bytes a record: two fit in 100 bytes, the third starts a segment.
    assert places == [1, 1, 2, 2, 3, 3, 4]
    write_all(log)
    log.close()
    assert sorted(p.name for p in tmp_path.glob("*.seg")) == [f"{n:010d}.seg" for n in (1, 2, 3, 4)]
    assert all(p.stat().st_size <= 100 for p in tmp_path.glob("*.seg"))
    # A record larger than a segment still goes somewhere: a segment of its own.
    log = SegmentLog(tmp_path, segment_size=100)
    list(log.replay())
    assert log.current == 4
    assert log.append(2, bytes(500))[0] == 5
    assert log.append(2, b"x")[0] == 6
    write_all(log)
    log.close()
    assert [kind for kind, _ in payloads(tmp_path, segment_size=100)] == [1] * 7 + [2, 2]


def test_records_spanning_segments_are_written_in_one_batch(tmp_path: Path) -> None:
    log = SegmentLog(tmp_path, segment_size=1)  # a segment per record
    for i in range(5):
        log.append(1, b"%d" % i)
    write_all(log)
    log.close()
    assert len(list(tmp_path.glob("*.seg"))) == 5
    assert payloads(tmp_path) == [(1, b"%d" % i) for i in range(5)]


def test_corrupt_middle_segment_keeps_later_segments(tmp_path: Path) -> None:
    log = SegmentLog(tmp_path, segment_size=1)
    for i in range(3):
        log.append(1, b"record %d" % i)
    write_all(log)
    log.close()
    middle = tmp_path / "0000000002.seg"
    data = bytearray(middle.read_bytes())
    data[-1] ^= 1
    middle.write_bytes(bytes(data))
    with capture_logs() as logs:
        assert payloads(tmp_path, segment_size=1) == [(1, b"record 0"), (1, b"record 2")]
    assert [e["event"] for e in logs] == ["store.corrupt_segment"]


def test_delete_keeps_the_current_segment(tmp_path: Path) -> None:
    log = SegmentLog(tmp_path, segment_size=1)
    for i in range(3):
        log.append(1, b"%d" % i)
    write_all(log)
    log.delete(1)
    log.delete(3)  # current: refused
    assert log.segments == [2, 3]
    assert sorted(p.name for p in tmp_path.glob("*.seg")) == ["0000000002.seg", "0000000003.seg"]
    log.close()


# -- failed writes -------------------------------------------------------------


def test_short_write_is_cut_off_and_retried(tmp_path: Path) -> None:
    fs = FaultyFS()
    log = SegmentLog(tmp_path, fs=fs)
    log.append(1, b"before")
    write_all(log)
    fs.full = True  # half of each write lands, then ENOSPC
    log.append(1, b"during the outage")
    pending, position = log.take_pending()
    with pytest.raises(OSError) as error:
        log.write_and_sync(pending)
    assert error.value.errno == errno.ENOSPC
    log.put_back(pending)
    # The half-written record is gone at once: the file ends on a record boundary.
    assert scan(tmp_path) == (1, [])
    log.append(1, b"queued behind it")
    fs.full = False
    write_all(log)
    log.close()
    assert payloads(tmp_path) == [(1, b"before"), (1, b"during the outage"), (1, b"queued behind it")]


def test_failed_fsync_rewrites_the_records(tmp_path: Path) -> None:
    fs = FaultyFS()
    log = SegmentLog(tmp_path, fs=fs)
    log.append(1, b"a")
    write_all(log)
    fs.fsync_fails = True
    log.append(1, b"b")
    pending, _ = log.take_pending()
    with pytest.raises(OSError) as error:
        log.write_and_sync(pending)
    assert error.value.errno == errno.EIO
    log.put_back(pending)
    fs.fsync_fails = False
    write_all(log)
    log.close()
    assert payloads(tmp_path) == [(1, b"a"), (1, b"b")]  # once, not twice


def test_failure_across_a_rollover(tmp_path: Path) -> None:
    fs = FaultyFS()
    log = SegmentLog(tmp_path, fs=fs, segment_size=60)
    log.append(1, bytes(20))
    write_all(log)
    for i in range(4):
        log.append(2, bytes([i]) * 20)  # spans segments 1..3
    fs.full = True
    for _ in range(3):
        pending, _ = log.take_pending()
        with pytest.raises(OSError):
            log.write_and_sync(pending)
        log.put_back(pending)
        assert scan(tmp_path)[1] == []
    fs.full = False
    write_all(log)
    log.close()
    assert payloads(tmp_path, segment_size=60) == [(1, bytes(20))] + [(2, bytes([i]) * 20) for i in range(4)]


def test_repair_that_fails_is_done_before_the_next_write(tmp_path: Path) -> None:
    class StuckTruncate(FaultyFS):
        stuck = True

        def truncate(self, path: Path, size: int) -> None:
            if self.stuck:
                raise OSError(errno.EIO, "Input/output error")
            super().truncate(path, size)

    fs = StuckTruncate()
    log = SegmentLog(tmp_path, fs=fs)
    log.append(1, b"kept")
    write_all(log)
    fs.full = True
    log.append(1, b"torn")
    pending, _ = log.take_pending()
    with pytest.raises(OSError):
        log.write_and_sync(pending)
    log.put_back(pending)
    fs.full = False
    pending, _ = log.take_pending()
    with pytest.raises(OSError):  # cannot cut the torn bytes: writes nothing after them
        log.write_and_sync(pending)
    log.put_back(pending)
    assert scan(tmp_path)[1] != []  # still torn, and nothing appended after the tear
    fs.stuck = False
    write_all(log)
    log.close()
    assert payloads(tmp_path) == [(1, b"kept"), (1, b"torn")]


# -- reads racing compaction ---------------------------------------------------------


class DeleteDuringRead(FileSystem):
    """Compaction (the delete) runs between a read taking its fd and reading
    through it: the interleaving that the lock alone does not prevent."""

    def __init__(self) -> None:
        self.log: SegmentLog | None = None
        self.fds: list[int] = []

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        if self.log is not None and not self.fds:
            self.fds.append(fd)
            self.log.delete(1)
            # What a concurrent open would get if the delete had closed the fd:
            # the same number, another file.
            other = os.open(os.devnull, os.O_RDONLY)
            self.fds.append(other)
        return super().pread(fd, size, offset)


def test_compaction_never_closes_an_fd_a_read_is_using(tmp_path: Path) -> None:
    fs = DeleteDuringRead()
    log = SegmentLog(tmp_path, segment_size=1, fs=fs)
    log.append(1, b"in segment one")
    log.append(1, b"in segment two")
    write_all(log)
    fs.log = log
    assert log.read(1, 0) == (1, b"in segment one")
    reader, other = fs.fds
    assert reader != other  # the fd stayed open while the read used it
    with pytest.raises(OSError):
        os.fstat(reader)  # and the last reader closed it
    os.close(other)
    assert log.segments == [2] and not (tmp_path / "0000000001.seg").exists()
    log.close()


@pytest.mark.parametrize("filler", ["random", "zeros"])
def test_replay_resynchronises_after_a_damaged_stretch(tmp_path: Path, filler: str) -> None:
    # A stretch of garbage (or a hole of zeros) overwrites records in the
    # middle of an older segment; replay finds the next intact record.
    log = SegmentLog(tmp_path, segment_size=1 << 20)
    for i in range(400):
        log.append(1, b"record %03d " % i + bytes(200))
    log.append(2, b"x" * (1 << 20))  # seals the first segment
    write_all(log)
    log.close()
    path = tmp_path / "0000000001.seg"
    data = bytearray(path.read_bytes())
    size = HEAD_SIZE + 211
    start, end = 10 * size + 5, 390 * size + 17  # from inside record 10 to inside record 390
    data[start:end] = random.Random(7).randbytes(end - start) if filler == "random" else bytes(end - start)
    path.write_bytes(bytes(data))
    with capture_logs() as logs:
        kept = payloads(tmp_path, segment_size=1 << 20)
    assert [p[:10] for _, p in kept[:-1]] == [b"record %03d" % i for i in (*range(10), *range(391, 400))]
    assert path.read_bytes() == bytes(data)
    [report] = logs
    assert report["skipped"] == [{"start": 10 * size, "end": 391 * size, "bytes": 381 * size, "records": None}]


def test_read_many_gives_each_record_as_read_does_with_few_reads(tmp_path: Path) -> None:
    """Records across segments, out of order, one larger than a read's span:
    each as read() gives it, nearby ones from one read; a damaged one in the
    middle of a window is refused."""
    counting = CountingReads()
    log = SegmentLog(tmp_path, segment_size=64 * 1024, fs=counting)
    where = [log.append(1 + i % 3, b"record %04d " % i + bytes(i % 50)) for i in range(2000)]
    where.append(log.append(2, b"big" * READ_SPAN))
    write_all(log)
    wanted = where[::3] + [where[-1], where[5], where[1]]
    one_by_one = [log.read(*location) for location in wanted]
    counting.reads = 0
    assert log.read_many(wanted) == one_by_one
    assert counting.reads < 20  # 671 records, not 671 reads
    segment, offset = where[100]
    path = tmp_path / f"{segment:010d}.seg"
    data = bytearray(path.read_bytes())
    data[offset + HEAD_SIZE + 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"bad record at {segment}:{offset}"):
        log.read_many(where[98:103])
    log.close()


class CountingReads(FileSystem):
    def __init__(self) -> None:
        self.reads = 0

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        self.reads += 1
        return super().pread(fd, size, offset)
