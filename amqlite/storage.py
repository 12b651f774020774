"""The trio driver of the disk journal: group commit, off the event loop.

One task writes and fsyncs whatever the journal has gathered, in a worker
thread, while the broker keeps running; publishes that arrive meanwhile
ride the next sync. After each sync, connections release the confirms that
were waiting for it, and queues over their memory budget page out what
is now on disk. A second task reads paged messages back, in a worker
thread, for queues running low; a read that keeps failing is retried with
backoff, then reported to the queue, which refuses gets and consumers with
the reason instead of leaving them waiting. A third writes the index file
of each segment once it is sealed, so start-up need not replay it. A failing disk blocks
publishers (nack, and connection.blocked) until a write succeeds again.
Both the server and the embedded broker run it.
"""

from __future__ import annotations

import errno
import time
from typing import TYPE_CHECKING, Callable, Protocol

import trio

from .heap import TRIM_INTERVAL, Trimmer
from .log import get_logger
from .store.journal import DiskJournal

if TYPE_CHECKING:
    from .core.message import Message
    from .core.journal import Pageable
    from .core.ready import PagedRef

log = get_logger(__name__)

#: Wait before retrying after a failed write or read, doubling up to the maximum.
RETRY_MIN = 0.1
RETRY_MAX = 5.0
#: Reads of paged messages tried before their queue reports the failure.
PAGE_IN_ATTEMPTS = 5
#: Seconds between two looks at the free disk space; more often while low.
DISK_CHECK_INTERVAL = 5.0
DISK_CHECK_INTERVAL_LOW = 1.0
#: The most the reserve holds (never more than disk_free_limit).
RESERVE_SIZE = 16 * 2**20
#: Seconds from a change of definitions to the snapshot that holds it.
SNAPSHOT_DELAY = 1.0
#: Seconds acks and deliveries wait for more before they are written, when
#: nothing else is (see the write loop).
SETTLE_DELAY = 0.01


class WriteObserver(Protocol):
    """Told of every batch written: the seconds its write and fsync took
    (in the worker thread) and how many messages it brought to disk."""

    def written(self, seconds: float, messages: int) -> None: ...


class StoreDriver:
    def __init__(
        self,
        journal: DiskJournal,
        *,
        on_synced: Callable[[], object],
        on_blocked: Callable[[str | None], None],
        now: Callable[[], float],
        on_paged_in: Callable[[], object] = lambda: None,
        trim_heap: Callable[[], int | None] | None = None,
        disk_free_limit: int = 0,
        observer: WriteObserver | None = None,
    ) -> None:
        self.journal = journal
        self.observer = observer
        #: journal.messages_written as of the last batch written.
        self._messages_written = journal.messages_written
        #: Below this many free bytes, persistent publishes are refused (0: never).
        self.disk_free_limit = disk_free_limit
        self._write_error: OSError | None = None
        self._blocked_reason: str | None = None
        self.on_synced = on_synced
        self.on_blocked = on_blocked
        self.now = now
        self.on_paged_in = on_paged_in
        self._wakeup = trio.lowlevel.ParkingLot()
        journal.log.on_pending = self._wakeup.unpark_all
        self._page_requests = trio.lowlevel.ParkingLot()
        journal.on_page_request = self._page_requests.unpark_all
        self.trim_heap = trim_heap if trim_heap is not None else Trimmer()
        self._trim_wanted = False
        self._trim_wakeup = trio.lowlevel.ParkingLot()
        self._index_wakeup = trio.lowlevel.ParkingLot()
        self._snapshot_wakeup = trio.lowlevel.ParkingLot()
        self._snapshot_lock = trio.Lock()
        #: Space kept in RESERVE for settling on a full disk, and whether
        #: the file holds it now.
        self.reserve_size = min(RESERVE_SIZE, disk_free_limit)
        self._reserve_kept = False
        self._disk_check = trio.lowlevel.ParkingLot()
        #: Bytes of the batch being written, and of all batches taken.
        self._in_flight = 0
        self._taken_total = 0
        if disk_free_limit:
            # Before the first publish: the reserve, then the room left.
            self._reserve_kept = journal.keep_reserve(self.reserve_size)
            if not self._reserve_kept:
                log.warning("store.reserve_missing", reserve_mb=round(self.reserve_size / 2**20, 1),
                            action="a full disk may stop acks from being written; retried when space is back")
            journal.room = max(0, journal.free_bytes() - disk_free_limit)
        self._manifest_lock = trio.Lock()

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._write_loop)
            nursery.start_soon(self._page_in_loop)
            nursery.start_soon(self._trim_loop)
            nursery.start_soon(self._index_loop)
            nursery.start_soon(self._snapshot_loop)
            if self.disk_free_limit:
                nursery.start_soon(self._disk_monitor)

    def _report_blocked(self) -> None:
        """Tell connections when the reason to refuse publishes changes."""
        if self._write_error is not None:
            reason: str | None = f"disk write failed: {self._write_error.strerror or self._write_error}"
        elif self.journal.disk_low:
            reason = "free disk space below disk_free_limit"
        else:
            reason = None
        if reason != self._blocked_reason:
            self._blocked_reason = reason
            self.on_blocked(reason)

    async def _disk_monitor(self) -> None:
        """Refuse persistent publishes while free space is below the limit,
        as RabbitMQ's disk alarm does, so that what must always be written
        (acks, removals, definitions) still finds room, and draining the
        queues can give the space back (see the write loop). Between two
        looks the write loop counts down what it writes from the room
        left, so the limit holds whatever the publish rate."""
        journal = self.journal
        while True:
            # What is being written, or gets written while we look, may not
            # show in the figure yet: it is taken off (at worst twice).
            unseen = self._in_flight - self._taken_total
            try:
                free = await trio.to_thread.run_sync(journal.free_bytes)
            except OSError as error:
                log.warning("store.disk_check_failed", error=str(error))
            else:
                await self._measured(free - unseen - self._taken_total)
            with trio.move_on_after(DISK_CHECK_INTERVAL_LOW if journal.disk_low else DISK_CHECK_INTERVAL):
                await self._disk_check.park()

    async def _measured(self, free: int) -> None:
        """A fresh look at the free space: the room left, and the alarm.
        With the reserve given up, the alarm clears only once there is
        room for the reserve again, which is then taken back."""
        journal, limit = self.journal, self.disk_free_limit
        journal.room = max(0, free - limit)
        if journal.disk_low and not self._reserve_kept and free >= limit + self.reserve_size:
            self._reserve_kept = await trio.to_thread.run_sync(journal.keep_reserve, self.reserve_size)
            if self._reserve_kept:
                free -= self.reserve_size
                journal.room = max(0, free - limit)
                log.info("store.reserve_kept", reserve_mb=round(self.reserve_size / 2**20, 1))
        self._set_low(free < limit or not self._reserve_kept and journal.disk_low, free)

    def _set_low(self, low: bool, free: int) -> None:
        journal, limit = self.journal, self.disk_free_limit
        if low == journal.disk_low:
            return
        journal.disk_low = low
        (log.error if low else log.info)(
            "store.disk_alarm" if low else "store.disk_alarm_cleared",
            free_mb=round(free / 2**20, 1), limit_mb=round(limit / 2**20, 1),
            action="persistent publishes refused" if low else "persistent publishes accepted again")
        self._report_blocked()
        if low:
            self._wakeup.unpark_all()  # a drained log may roll and compact at once
            self._disk_check.unpark_all()  # the estimate ran out: look at the real figure

    def _taken(self, size: int) -> None:
        """``size`` bytes are being written: less room left until the next look."""
        self._taken_total += size
        room = self.journal.room
        if room is not None:
            self.journal.room = room = room - size
            if room <= 0 and not self.journal.disk_low:
                self._set_low(True, room + self.disk_free_limit)

    async def _release_reserve(self) -> None:
        """The disk is full: give up the reserve, so the acks and removals
        waiting can be written and compaction can run. Persistent publishes
        stay refused until there is room for the reserve again."""
        released = await trio.to_thread.run_sync(self.journal.release_reserve)
        self._reserve_kept = False
        log.warning("store.reserve_released", released_mb=round(released / 2**20, 1),
                    action="acks and compaction written in it; persistent publishes refused until space is back")
        self._set_low(True, 0)

    async def _write_snapshot(self) -> None:
        """Write the definitions snapshot as they are now (one writer at a time)."""
        journal = self.journal
        async with self._snapshot_lock:
            snapshot = journal.snapshot_payload()
            await trio.to_thread.run_sync(lambda: journal.write_snapshot(snapshot.payload))
            journal.snapshot_written(snapshot)

    async def _snapshot_loop(self) -> None:
        """Keep the snapshot a second copy of every definition, beside the
        log's records: rewritten SNAPSHOT_DELAY after definitions change (a
        burst of declarations makes one), not while the disk is low."""
        journal = self.journal
        while True:
            while not journal.snapshot_stale or journal.disk_low:
                await self._snapshot_wakeup.park()
            await trio.sleep(SNAPSHOT_DELAY)
            try:
                await self._write_snapshot()
            except OSError as error:
                log.warning("store.snapshot_failed", error=str(error), errno=error.errno, action="retried later")
                await trio.sleep(RETRY_MAX)

    async def _trim_loop(self) -> None:
        """After writes (acks, purges, deletes and page-outs free memory),
        hand freed heap memory back to the OS, at most once per interval."""
        while True:
            while not self._trim_wanted:
                await self._trim_wakeup.park()
            self._trim_wanted = False
            released = await trio.to_thread.run_sync(self.trim_heap)
            if released is not None:
                log.info("memory.trimmed", released_mb=round(released / 2**20, 1))
            await trio.sleep(TRIM_INTERVAL)

    async def _index_loop(self) -> None:
        """Write the index file of each sealed segment, in a worker thread,
        so that the next start-up loads it instead of replaying it record
        by record. Not while the disk is low: an index is only a cache."""
        journal = self.journal
        while True:
            segments = [] if journal.disk_low else journal.unindexed_segments()
            if not segments and not (journal.manifest_stale and not journal.disk_low):
                await self._index_wakeup.park()
                continue
            for segment in segments:
                try:
                    summary = await trio.to_thread.run_sync(journal.index_segment, segment)
                except OSError as error:
                    summary = None
                    log.warning("store.index_failed", segment=segment, error=str(error),
                                action="the segment is replayed at start-up")
                journal.indexed(segment)
                if summary is not None:
                    journal.summarized(segment, summary)
            if journal.manifest_stale:
                try:
                    await self._write_manifest()
                except OSError as error:
                    journal.manifest_stale = True
                    log.warning("store.manifest_failed", error=str(error), action="retried after the next write")
                    # Not at once: while the disk fails, that would be a busy loop.
                    await self._index_wakeup.park()

    async def _write_manifest(self, leaving: list[int] | None = None) -> None:
        """Write the manifest (see store/manifest.py) as it stands, without
        the segments ``leaving`` (one writer at a time)."""
        journal = self.journal
        async with self._manifest_lock:
            manifest = journal.manifest_payload(leaving or ())
            await trio.to_thread.run_sync(journal.write_manifest, manifest)

    async def _page_in_loop(self) -> None:
        """Read paged messages back for queues running low, in a worker
        thread; the queue takes them on the trio thread."""
        journal = self.journal
        while True:
            work = journal.page_in_work()
            if not work:
                await self._page_requests.park()
                continue
            for queue, priority, refs in work:
                try:
                    messages = await self._read_paged(queue, refs)
                except (OSError, ValueError) as error:
                    queue.page_in_failed(priority, refs, str(error))
                    continue
                queue.paged_in(priority, refs, messages, self.now())
            self.on_paged_in()  # a waiting get gets its message or the error

    async def _read_paged(self, queue: Pageable, refs: list[PagedRef]) -> list[Message]:
        """The messages of ``refs``, retried with backoff; the last error is
        raised once the read failed PAGE_IN_ATTEMPTS times."""
        delay = RETRY_MIN
        attempt = 0
        while True:
            attempt += 1
            try:
                return await trio.to_thread.run_sync(self.journal.read_paged, refs)
            except (OSError, ValueError) as error:
                last = attempt == PAGE_IN_ATTEMPTS
                (log.error if last else log.warning)(
                    "store.page_in_failed", queue=queue.name, vhost=queue.vhost.name, error=str(error),
                    messages=len(refs), attempt=attempt,
                    action="gets and consumers refused until a read works" if last else "retrying")
                if last:
                    raise
            await trio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)

    async def _write_loop(self) -> None:
        journal, log_ = self.journal, self.journal.log
        delay = RETRY_MIN
        while True:
            while not journal.dirty:
                if journal.disk_low and journal.roll_if_drained():
                    break  # nothing pending: delete what the roll made obsolete
                await self._wakeup.park()
            # Nothing waits for acks and deliveries to be on disk (an ack a
            # crash catches unwritten comes back either way): they are
            # gathered for a while, so that a consumer's stream of acks makes
            # a write every SETTLE_DELAY, not one per read, and those acked
            # meanwhile need no DELIVERED record. A record of anything else
            # (a publish, a commit) ends the wait.
            with trio.move_on_after(SETTLE_DELAY):
                while journal.settlements_only:
                    await self._wakeup.park()
            pending, position = journal.take_batch()
            messages_written = journal.messages_written
            # What may be deleted once this batch is on disk is decided now,
            # while the journal's state is exactly what the batch records:
            # records appended during the write (an ack making an old segment
            # obsolete, say) are not on disk when compaction runs.
            obsolete = journal.obsolete_segments()
            size = self._in_flight = sum(len(data) for _, data in pending)
            self._taken(size)
            # Records taken from the log are written or put back, even when
            # the server is stopping: journal.close() writes what is left.
            with trio.CancelScope(shield=True):
                try:
                    seconds = await trio.to_thread.run_sync(_timed, log_.write_and_sync, pending)
                    failure = None
                    self._in_flight = 0
                except OSError as error:
                    failure = self._write_error = error
                    self._in_flight = 0
                    if journal.room is not None:
                        journal.room += size  # put back, counted again when taken again
                    if journal.write_failed(pending):
                        log.error("store.write_failed", error=str(failure), errno=failure.errno,
                                  action="persistent publishes refused until the disk accepts writes")
                        self._report_blocked()
                    if failure.errno == errno.ENOSPC and self._reserve_kept:
                        await self._release_reserve()
                        continue  # at once: the reserve is there for this write
            if failure is not None:
                await trio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            delay = RETRY_MIN
            if self.observer is not None:
                self.observer.written(seconds, messages_written - self._messages_written)
            self._messages_written = messages_written
            if journal.commit(position):
                self._write_error = None
                log.info("store.recovered_writes", action="persistent publishes accepted again")
                self._report_blocked()
            self.on_synced()
            self._trim_wanted = True
            self._trim_wakeup.unpark_all()
            self._index_wakeup.unpark_all()
            if journal.snapshot_stale:
                self._snapshot_wakeup.unpark_all()
            if obsolete:
                await self._compact(obsolete)

    async def _compact(self, obsolete: list[int]) -> None:
        """Delete segments made obsolete by records now on disk, after a
        new snapshot if they hold definition records it lacks. A failure
        (say, no room for the snapshot) is logged and retried later."""
        journal = self.journal
        try:
            if journal.needs_snapshot(obsolete):
                await self._write_snapshot()
            # Before they go: a segment the manifest names and that is not
            # there is a lost one.
            await self._write_manifest(obsolete)
            deleted = await trio.to_thread.run_sync(journal.delete_segments, obsolete)
        except OSError as error:
            log.warning("store.compaction_failed", error=str(error), errno=error.errno)
            return
        journal.forget(deleted)
        log.info("store.compacted", deleted_segments=len(deleted), segments=len(journal.log.segments))


def _timed(write: Callable[[list[tuple[int, bytes]]], None], pending: list[tuple[int, bytes]]) -> float:
    """Run ``write(pending)`` (in a worker thread); the seconds it took."""
    start = time.perf_counter()
    write(pending)
    return time.perf_counter() - start
