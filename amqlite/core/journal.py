"""What the core tells durable storage, and nothing more.

The core calls these methods synchronously, as things happen to durable
definitions and to persistent messages on durable queues. An implementation
only records them in memory; a driver writes them to disk later (and tells
publishers when their confirms may go). So the core stays free of I/O, and
tests run it with no journal at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Counter, Protocol

if TYPE_CHECKING:
    from .events import PublishOutcome
    from .exchange import Exchange
    from .message import Entry, Message
    from .queue import Queue
    from .ready import PagedRef
    from .stream import Batch, Stream
    from .vhost import VirtualHost


class Pageable(Protocol):
    """What keeps messages that page to disk and back, driven by the
    journal: a queue (ready messages), a stream (readers' batches), a
    delayed exchange (far-future held messages). ``key`` tells apart what
    one owner reads back at once: a priority level, a reader, a bucket."""

    name: str
    deleted: bool

    @property
    def vhost(self) -> VirtualHost: ...

    @property
    def over_budget(self) -> bool: ...

    def page_out(self) -> int: ...

    def page_in_requests(self, low_water: int, batch: int) -> list[tuple[int, list[PagedRef]]]: ...

    def paged_in(self, key: int, refs: list[PagedRef], messages: list[Message], now: float) -> None: ...

    def page_in_failed(self, key: int, refs: list[PagedRef], error: str) -> None: ...


class Journal(Protocol):
    @property
    def accepting(self) -> bool:
        """False while the disk refuses writes or has too little space left;
        durable queues then refuse persistent messages (the publisher gets a
        nack) instead of accepting what cannot be made durable."""
        ...

    #: Ready messages a queue keeps in memory; beyond it they page out to
    #: disk (see core/ready.py). Lower while memory is short.
    queue_budget: int

    #: Memory is short (the server's memory watch says so): transient
    #: messages beyond the budget are spilled to disk to page out too.
    memory_pressure: bool

    # What the drivers rely on. Positions only grow: every record appended
    # gets one, and the driver's commit step moves ``synced`` up to the end
    # of each batch it wrote.

    @property
    def position(self) -> int:
        """Position of the last record appended."""
        ...

    @property
    def synced(self) -> int:
        """Position up to which records are on disk."""
        ...

    def confirm_position(self, persistent: bool, outcome: PublishOutcome) -> int:
        """The one confirm rule: the position ``synced`` must reach before
        a publisher confirm for this publish may go (0: at once). Called
        right after the publish. A persistent message is confirmed once its
        record is on disk, and so is any message a stream took; a
        duplicate waits for everything appended before it (the original
        among it); a transient, unrouted or refused one (a nack) waits for
        nothing."""
        ...

    def exchange_declared(self, exchange: Exchange) -> None: ...

    def exchange_deleted(self, exchange: Exchange) -> None: ...

    def bound(self, source: Exchange, destination: Any, routing_key: str, arguments: dict[str, Any]) -> None: ...

    def unbound(self, source: Exchange, destination: Any, routing_key: str, arguments: dict[str, Any]) -> None: ...

    def queue_declared(self, queue: Queue) -> None: ...

    def queue_deleted(self, queue: Queue) -> None: ...

    def enqueued(self, queue: Queue, entry: Entry) -> None: ...

    def removed(self, queue: Queue, entry: Entry) -> None: ...

    def delivered(self, queue: Queue, entry: Entry) -> None: ...

    def counted(self, queue: Queue, entry: Entry) -> None: ...

    def retrying(self, queue: Queue, entry: Entry, due: float) -> None: ...

    def moved(self, queue: Queue, entry: Entry, old_seq: int) -> None: ...

    def held(self, exchange: Exchange, message: Message, due: float) -> tuple[int, int]:
        """Record a message a delayed exchange holds; returns where: (segment, offset)."""
        ...

    def new_message_id(self) -> int:
        """A message id no record has: a held message kept in memory only
        takes one, so that held messages' ids grow whether journalled or not."""
        ...

    def cancelled(self, exchange: Exchange, msg_id: int, hold_segment: int) -> None:
        """A held message was cancelled (core/delayed.py: scheduled messages)."""
        ...

    def rescheduled(self, exchange: Exchange, msg_id: int, due: float, hold_segment: int) -> None:
        """A held message is due at ``due`` from now on."""
        ...

    def begin_unit(self) -> None:
        """The records from here to :meth:`end_unit` form one atomic unit
        (a transaction's commit): after a crash, recovery finds all of them
        or none. Units do not nest."""
        ...

    def end_unit(self) -> int:
        """End the unit; returns the position ``synced`` must reach for it
        to be on disk (0: it recorded nothing)."""
        ...

    # Paging: the core asks, the driver acts later (after a write, in a thread).

    def is_written(self, segment: int, offset: int) -> bool:
        """Whether the record at ``offset`` of ``segment`` is on disk."""
        ...

    def over_budget(self, owner: Pageable) -> None: ...

    def wants_page_in(self, owner: Pageable) -> None: ...

    def removed_paged(self, queue: Queue, seq: int, segment: int) -> None: ...

    def read_paged(self, refs: list[PagedRef]) -> list[Message]:
        """The messages of paged refs, read from disk (a driver's worker
        thread: page-in, and browsing with core/browse.py)."""
        ...

    def spilled(self, entry: Entry) -> None:
        """Write a transient entry's message, only so that it can page out
        (core/backing.py); sets the entry's store fields. Never recovered."""
        ...

    def unspilled(self, segment: int) -> None:
        """A spill record in ``segment`` is no longer needed."""
        ...

    def released(self, exchange: Exchange, message: Message) -> None: ...

    # Streams (core/stream.py): every message is recorded, whatever its
    # delivery mode, and stays until retention truncates the stream.

    def stream_appended(self, stream: Stream, offset: int, message: Message, now: float) -> tuple[int, int]:
        """Record a message at ``offset``; returns where: (segment, offset)."""
        ...

    def stream_batch_appended(self, stream: Stream, offset: int, batch: Batch, now: float) -> tuple[int, int]:
        """Record a batch whose first message is at ``offset``: one record
        for all of its messages; returns where: (segment, offset)."""
        ...

    def stream_truncated(self, stream: Stream, first: int, segments: Counter[int]) -> None:
        """Messages before offset ``first`` are gone; ``segments`` counts
        the records they leave behind, per segment."""
        ...

    def dedup_taken(self, owner: Queue | Exchange, value: Any, expires_at: float | None) -> int:
        """A deduplicating durable queue or exchange took a message id
        (core/dedup.py); returns the segment recording it."""
        ...

    def dedup_forgotten(self, segment: int) -> None:
        """An id recorded in ``segment`` left the window."""
        ...

    def dedup_refused(self, owner: Queue | Exchange, value: Any, segment: int) -> None:
        """The id recorded in ``segment`` is handed back: its message was
        refused, and a restart must not remember it either."""
        ...

    def group_committed(self, stream: Stream, group: str, committed: int, metadata: str = "") -> None:
        """A consumer group's committed offset on ``stream`` moved (with the
        metadata string of the commit that moved it); the latest one is
        written with the next batch."""
        ...

    def transaction_logged(self, vhost: VirtualHost, transactional_id: str, state: dict[str, Any], *,
                           completes: bool = False) -> None:
        """A Kafka transactional id's state changed (core/transactions.py);
        the newest record of an id is what recovery restores. ``completes``:
        the record ending a transaction goes after the group offsets the
        transaction set (they wait for the next write), so a write cut
        short that keeps it keeps them too."""
        ...

    def group_forgotten(self, stream: Stream, group: str) -> None:
        """A group's offset on ``stream`` was deleted (Kafka's DeleteGroups
        or OffsetDelete): recovery must not bring it back."""
        ...
