"""The trio driver of the disk journal: group commit, off the event loop.

One task writes and fsyncs whatever the journal has gathered, in a worker
thread, while the broker keeps running; publishes that arrive meanwhile
ride the next sync. After each sync, connections release the confirms that
were waiting for it. A failing disk blocks publishers (nack, and
connection.blocked) until a write succeeds again.
"""

from __future__ import annotations

from typing import Callable

import trio

from ..log import get_logger
from ..store.journal import DiskJournal

log = get_logger(__name__)

#: Wait before retrying after a failed write, doubling up to the maximum.
RETRY_MIN = 0.1
RETRY_MAX = 5.0


class StoreDriver:
    def __init__(
        self,
        journal: DiskJournal,
        *,
        on_synced: Callable[[], None],
        on_blocked: Callable[[str | None], None],
    ) -> None:
        self.journal = journal
        self.on_synced = on_synced
        self.on_blocked = on_blocked
        self._wakeup = trio.lowlevel.ParkingLot()
        journal.log.on_pending = self._wakeup.unpark_all

    async def run(self) -> None:
        journal, log_ = self.journal, self.journal.log
        delay = RETRY_MIN
        while True:
            while not log_.dirty:
                await self._wakeup.park()
            pending, position = log_.take_pending()
            try:
                await trio.to_thread.run_sync(log_.write_and_sync, pending)
            except OSError as error:
                await trio.to_thread.run_sync(log_.recover_after_failure, pending)
                log_.put_back(pending)
                if journal.accepting:
                    journal.accepting = False
                    log.error("store.write_failed", error=str(error), errno=error.errno,
                              action="persistent publishes refused until the disk accepts writes")
                    self.on_blocked(f"disk write failed: {error.strerror or error}")
                await trio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            delay = RETRY_MIN
            log_.synced = position
            if not journal.accepting:
                journal.accepting = True
                log.info("store.recovered_writes", action="persistent publishes accepted again")
                self.on_blocked(None)
            self.on_synced()
            await self._compact()

    async def _compact(self) -> None:
        journal = self.journal
        obsolete = journal.obsolete_segments()
        if not obsolete:
            return
        if journal.needs_snapshot(obsolete):
            payload, segment = journal.snapshot_payload()
            await trio.to_thread.run_sync(journal.write_snapshot, payload)
            journal.snapshot_written(segment)
        await trio.to_thread.run_sync(journal.delete_segments, obsolete)
        journal.forget(obsolete)
        log.info("store.compacted", deleted_segments=len(obsolete), segments=len(journal.log.segments))
