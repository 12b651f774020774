"""A queue's backing store: where its ready messages live, memory or disk,
and the journal's record of what happens to them (RabbitMQ's backing queue).

The queue decides (delivery order, TTL, limits, consumers, retries); it
reaches storage only through here. So the journal's guards are written once
(a transient queue has no journal; only a message with a record is
journaled), and paging (out after writes, back in as the queue runs low,
failing reads) is one concern apart from delivery.

Transient messages page too, but only under memory pressure: while the
journal says memory is short, a transient message joining a queue that
already holds its budget in memory is written as a *spill* record, and
pages out once that is on disk, like a persistent one. A spill is never
recovered (a restart forgets transient messages anyway) and needs no
record to remove it: its record is let go of as the message leaves the
ready list (delivered, dropped) or comes back from disk.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import NotFound
from .message import READY, Entry, Message
from .ready import PagedRef, ReadyList

if TYPE_CHECKING:
    from .journal import Journal
    from .queue import Queue


class Backing:
    def __init__(self, queue: Queue, journal: Journal | None, pager: Journal | None) -> None:
        self.queue = queue
        #: Where persistent messages are recorded; None for transient queues.
        self.journal = journal
        #: Where ready messages page to: the broker's journal, whatever the
        #: queue's durability; None for a broker without one.
        self.pager = pager
        self.ready = ReadyList()
        #: Why the paged messages cannot be read back, once storage gave up
        #: retrying; cleared by the next read that works.
        self.page_in_error: str | None = None

    # -- the journal's record -------------------------------------------

    def accepts(self, message: Message) -> bool:
        """False while a persistent message cannot be made durable (the
        disk refuses writes): the publisher gets a nack instead."""
        return self.journal is None or not message.persistent or self.journal.accepting

    def append(self, entry: Entry) -> None:
        """A new message joins the end of the queue."""
        journal, pager = self.journal, self.pager
        if journal is not None and entry.message.persistent:
            journal.enqueued(self.queue, entry)
        elif (pager is not None and pager.memory_pressure and entry.expires_at is None
              and self.ready.in_memory >= pager.queue_budget):
            pager.spilled(entry)
        self.ready.append(entry)
        # Only a recorded entry can page: a queue of transient messages in
        # memory is no business of the pager's.
        if entry.store_offset >= 0 and self.over_budget:
            assert pager is not None
            pager.over_budget(self.queue)

    def removed(self, entry: Entry) -> None:
        """The entry left the queue for good (acked, dead-lettered, dropped)."""
        if entry.spilled:
            self._unspill(entry)
        elif entry.store_segment and self.journal is not None:
            self.journal.removed(self.queue, entry)
            entry.store_segment = 0

    def _unspill(self, entry: Entry) -> None:
        assert self.pager is not None
        self.pager.unspilled(entry.store_segment)
        entry.spilled, entry.store_segment, entry.store_offset = False, 0, -1

    def delivered(self, entry: Entry) -> None:
        if entry.spilled:
            self._unspill(entry)  # it never pages again (redelivered), so its copy on disk is no use
        elif entry.store_segment and self.journal is not None:
            self.journal.delivered(self.queue, entry)

    def counted(self, entry: Entry) -> None:
        if entry.store_segment and self.journal is not None:
            self.journal.counted(self.queue, entry)

    def retrying(self, entry: Entry, due: float) -> None:
        if entry.store_segment and self.journal is not None:
            self.journal.retrying(self.queue, entry, due)

    def moved_to_tail(self, entry: Entry, old_seq: int) -> None:
        """The entry, renumbered, goes to the end (after a retry delay)."""
        if entry.store_segment and self.journal is not None:
            self.journal.moved(self.queue, entry, old_seq)
        self.ready.append(entry)

    def drop_paged(self) -> int:
        """Forget every paged message (purge, delete); returns how many."""
        paged = self.ready.drop_paged()
        if paged:
            assert self.pager is not None
            for segment, _, seq, _ in paged:
                self.pager.removed_paged(self.queue, seq, segment)
        return len(paged)

    def remove_paged(self, priority: int, seqs: list[int]) -> None:
        """The paged messages ``seqs`` left from the middle of the queue
        (redriven, deleted)."""
        refs = self.ready.remove_paged(priority, seqs)
        if refs:
            assert self.pager is not None
            for segment, _, seq, _ in refs:
                self.pager.removed_paged(self.queue, seq, segment)

    # -- paging -----------------------------------------------------------

    def want_page_in(self) -> None:
        if self.pager is not None and not self.queue.deleted:
            self.pager.wants_page_in(self.queue)

    def check_readable(self) -> None:
        """Refuse to wait for messages storage cannot read back: the client
        hears why, as RabbitMQ answers 404 for a queue that is down. Asks
        for another try first."""
        if self.page_in_error is not None and self.ready.paged:
            self.want_page_in()
            queue = self.queue
            raise NotFound(f"queue '{queue.name}' in vhost '{queue.vhost.name}' cannot read its messages "
                           f"from disk: {self.page_in_error}")

    def _pageable(self, entry: Entry) -> bool:
        """Can this ready entry live on disk only? Its record must hold it
        whole (a spill, or a PUBLISH this queue owns), already written, and
        nothing about it may live only in memory (a TTL to enforce, a
        delivery count)."""
        if (entry.state != READY or entry.expires_at is not None or entry.delivery_count or entry.redelivered
                or entry.store_offset < 0):
            return False
        message = entry.message
        if not entry.spilled and (message.store_refs != 1 or entry.store_segment != message.store_segment):
            return False
        assert self.pager is not None
        return self.pager.is_written(entry.store_segment, entry.store_offset)

    def _unwritten(self, entry: Entry) -> bool:
        """Recorded, but not on disk yet: pageable after a later write."""
        return (entry.store_offset >= 0 and self.pager is not None
                and not self.pager.is_written(entry.store_segment, entry.store_offset))

    @property
    def over_budget(self) -> bool:
        return self.pager is not None and self.ready.in_memory > self.pager.queue_budget

    def page_out(self) -> int:
        """Move ready messages beyond the memory budget to disk only."""
        if self.pager is None or self.queue.deleted:
            return 0
        return len(self.ready.page_out(self.pager.queue_budget, self._pageable, self._unwritten))

    def page_in_requests(self, low_water: int, batch: int) -> list[tuple[int, list[PagedRef]]]:
        return [] if self.queue.deleted else self.ready.page_in_requests(low_water, batch)

    def paged_in(self, priority: int, refs: list[PagedRef], messages: list[Message]) -> bool:
        """Messages read back from disk for ``refs`` (page_in_requests).
        False if they are no longer wanted (purged, deleted)."""
        if self.queue.deleted:
            return False
        # A spill (no store id) is in memory again as a plain transient entry.
        # Arguments by position: a page-in makes thousands, and by keyword
        # the constructor took twice as long.
        entries = [
            Entry(message, seq, priority) if message.store_id is None
            else Entry(message, seq, priority, None, 0, False, READY, segment, offset)
            for (segment, offset, seq, _), message in zip(refs, messages, strict=True)
        ]
        if not self.ready.paged_in(priority, refs, entries):
            return False
        assert self.pager is not None
        for (segment, _, _, _), message in zip(refs, messages, strict=True):
            if message.store_id is None:
                self.pager.unspilled(segment)
        self.page_in_error = None
        return True

    def page_in_failed(self, priority: int, refs: list[PagedRef], error: str) -> bool:
        """Storage gave up reading ``refs`` back: they stay on disk and in
        the queue, and the queue reports ``error`` until a read works.
        False if they are no longer wanted."""
        if self.queue.deleted or not self.ready.page_in_failed(priority, refs):
            return False
        self.page_in_error = error
        return True
