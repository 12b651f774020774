"""The disk journal: durable definitions and persistent messages in a
segment log, plus a definitions snapshot.

Record layouts are in :mod:`amqlite.store.records`.

A segment is deleted when nothing in it is live (no message body, queue
entry or held message still needed) and every older segment its records
point into is gone, so a removal never disappears before what it removes.
Definition records are made obsolete by the snapshot file, which is
rewritten before a segment holding newer definition records is deleted.
"""

from __future__ import annotations

import fcntl
import math
import os
import struct
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Collection

import attrs

from .. import defaults
from ..amqp.values import encode_longstr, encode_shortstr, encode_table
from ..core.delayed import name_key
from ..core.exchange import Exchange
from ..core.stream import WHOLE
from ..log import get_logger
from . import manifest as manifest_file
from .manifest import MANIFEST, Manifest, SegmentSummary
from .recovery import HeldProgress, Progress, ProgressLog, Recovered, RecoveryReport, recover, segment_summary
from .records import (
    COUNT,
    COUNT_RECORD,
    DEFINITION,
    DELIVERED,
    ENQUEUE,
    ENQUEUE_HEAD,
    ENTRIES_PER_RECORD,
    HOLD,
    HOLD_HEAD,
    ID,
    MOVE,
    MOVE_RECORD,
    NAMED,
    NAMED_RECORD,
    PUBLISH,
    PUBLISH_HEAD,
    RELEASE,
    REMOVE,
    RESCHEDULE,
    RETRY,
    RETRY_RECORD,
    SNAPSHOT,
    SPILL,
    TRUNCATE,
    TRUNCATE_RECORD,
    UNIT,
    GROUP,
    GROUP_FORGOTTEN,
    GROUP_HEAD,
    DEDUP,
    DEDUP_HEAD,
    REFUSED,
    BATCH,
    BATCH_HEAD,
    TXN,
    batch_of,
    content,
    encode_snapshot,
    message_of,
    stream_entry,
)
from . import segment_index
from .segments import HEAD_SIZE, FileSystem, SegmentLog

if TYPE_CHECKING:
    from ..core.broker import Broker
    from ..core.journal import Pageable
    from ..core.events import PublishOutcome
    from ..core.ready import PagedRef
    from ..core.message import Entry, Message
    from ..core.queue import Queue
    from ..core.stream import Batch, Stream
    from ..core.vhost import VirtualHost
    from ..kafka.mapping import StoredBatch

log = get_logger(__name__)

_NONE = math.nan
#: A file of zeros in the data directory, given up when the disk is full so
#: that acks, removals and compaction can still be written (see storage.py).
RESERVE = "reserve"


def _canonical(value: Any) -> Any:
    """Tables with their keys sorted, all the way down."""
    if isinstance(value, dict):
        return {key: _canonical(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_canonical(item) for item in value]
    return value


@attrs.frozen
class Snapshot:
    """A snapshot's table, the segment its definitions are current as of,
    and how many definition changes the journal had made by then."""

    table: dict[str, Any]
    segment: int
    changes: int

    @property
    def payload(self) -> bytes:
        """The file's bytes (encoded in a worker thread: thousands of
        definitions take a while)."""
        return encode_snapshot(self.table)


class StoreLocked(Exception):
    """Another broker holds the data directory."""


class DiskJournal:
    """Implements :class:`amqlite.core.journal.Journal` on a segment log."""

    def __init__(
        self,
        directory: Path,
        *,
        fs: FileSystem | None = None,
        segment_size: int | None = None,
        queue_budget: int = defaults.QUEUE_MEMORY_BUDGET,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.directory / "LOCK", "a")
        try:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise StoreLocked(f"data directory {self.directory} is in use by another amqlite") from None
        self.fs = fs or FileSystem()
        kwargs = {} if segment_size is None else {"segment_size": segment_size}
        self.log = SegmentLog(self.directory / "log", fs=self.fs, **kwargs)
        #: A write failed and was not yet retried with success.
        self._write_failing = False
        #: Free disk space is below the limit (set by the driver's monitor).
        self.disk_low = False
        #: Bytes that may still be appended before free space would fall
        #: below the limit (the driver's estimate; None: no limit).
        self.room: int | None = None
        self.queue_budget = self._normal_budget = queue_budget
        self.memory_pressure = False
        #: Queues over budget: marked since the last batch was taken, and
        #: marked before it (they page once it is written). Then queues
        #: asking for their paged messages back. The driver serves all.
        self._over_budget: dict[Pageable, None] = {}
        self._due_after_write: dict[Pageable, None] = {}
        self._page_requests: dict[Pageable, None] = {}
        #: Wakes the driver's page-in task.
        self.on_page_request: Callable[[], object] | None = None
        self._recovering = False
        self._next_msg = 1
        #: Message ids taken by held messages kept in memory only.
        self._unrecorded_ids = 0
        self._next_queue = 1
        #: Live things per segment: message bodies, queue entries, held messages.
        self._live: Counter[int] = Counter()
        #: Older segments each segment's records point into.
        self._refs: dict[int, set[int]] = {}
        #: Sealed segments with an index file, or whose index was tried.
        self._indexed: set[int] = set()
        #: The durable definitions, mirrored for snapshots: key -> record table.
        self._definitions: dict[tuple[str, ...], dict[str, Any]] = {}
        self._snapshot_segment = 0
        #: Segments holding definition records newer than the snapshot.
        self._definition_segments: set[int] = set()
        #: Each definition's newest record: (segment, bytes). The log keeps
        #: every definition as well as the snapshot, so that either can
        #: restore it (see _relocate_definitions): these records are live.
        self._definition_records: dict[tuple[str, ...], tuple[int, int]] = {}
        #: Live definition records per segment: how many, and their bytes.
        self._definition_live: Counter[int] = Counter()
        self._definition_bytes: Counter[int] = Counter()
        #: Deleted queues whose unacked messages are still out: the
        #: segment of the deletion record (live meanwhile) and how many.
        self._tombstones: dict[Queue, list[int]] = {}
        #: Definition changes made, and made as of the snapshot on disk.
        self._definition_changes = 0
        self._snapshot_changes = 0
        #: What each sealed segment held when it was sealed (see manifest),
        #: and whether the manifest on disk says otherwise.
        self._summaries: dict[int, SegmentSummary] = {}
        self.manifest_stale = False
        #: RELEASE records not yet appended, (msg id, HOLD segment), and the
        #: message being released (see _append_releases).
        self._releases: list[tuple[int, int]] = []
        self._releasing: Message | None = None
        #: Consumer groups' committed offsets not yet appended, and the
        #: segment of each group's newest GROUP record: (stream id, group).
        self._group_commits: dict[tuple[Stream, str], tuple[int, str]] = {}
        self._group_records: dict[tuple[int, str], int] = {}
        #: TXN records that end a transaction, appended after the group
        #: commits of their batch; the segment of each transactional id's
        #: newest TXN record, by (vhost, id): those records are live.
        self._txn_completions: list[tuple[str, str, bytes]] = []
        self._txn_records: dict[tuple[str, str], int] = {}
        #: Deliveries whose DELIVERED record waits for the next batch: most
        #: are acked before it is taken, and then need no record at all.
        self._deliveries: dict[Entry, tuple[Queue, int]] = {}
        #: Removals waiting for the next batch, (queue id, seq, segment of
        #: the entry's record): written there as a few REMOVE records of
        #: many entries each rather than one record per ack.
        self._removals: list[tuple[int, int, int]] = []
        #: Group commits made so far: a unit holds those made in it.
        self._group_moves = 0
        #: At the open unit's start: removals waiting, group commits made.
        self._unit_from: tuple[int, int] | None = None

    # -- helpers ------------------------------------------------------------

    def _wake_writer(self) -> None:
        """Something waits for the next batch that appended no record (yet):
        wake the writer, unless a record appended already did."""
        if not self.log.dirty and self.log.on_pending is not None:
            self.log.on_pending()

    def _append(self, kind: int, payload: bytes, about: Message | None = None) -> tuple[int, int]:
        if self._releases and about is not self._releasing:
            self._append_releases()
        return self.log.append(kind, payload)

    def _append_releases(self) -> None:
        """RELEASE records wait until the released message's new records
        (PUBLISH, ENQUEUE as it is routed) are appended: a batch cut short by
        a crash then leaves the message held, or held and queued (delivered
        twice), never neither."""
        releases, self._releases, self._releasing = self._releases, [], None
        for msg_id, hold_segment in releases:
            segment, _ = self.log.append(RELEASE, ID.pack(msg_id))
            self._ref(segment, hold_segment)
            self._live[hold_segment] -= 1

    def _ref(self, segment: int, target: int) -> None:
        if target != segment:
            self._refs.setdefault(segment, set()).add(target)

    def _define(self, key: tuple[str, ...], table: dict[str, Any] | None, deleted_id: int | None = None) -> int:
        """Returns the segment of the record."""
        if self._recovering:
            return 0  # replaying what is already on disk
        if table is None:
            self._definitions.pop(key, None)
        else:
            self._definitions[key] = table
        self._definition_changes += 1
        return self._write_definition(key, table, deleted_id)

    def _write_definition(self, key: tuple[str, ...], table: dict[str, Any] | None,
                          deleted_id: int | None = None) -> int:
        """A DEFINITION record setting or deleting ``key`` (a deleted queue's
        record names its store id too). The newest record of a definition
        is live; a deletion stays as long as the record it cancels (a
        reference), so the log alone never brings it back."""
        op: dict[str, Any] = {"op": "delete" if table is None else "set", "key": list(key)}
        if table is not None:
            op["value"] = table
        if deleted_id is not None:
            op["id"] = deleted_id
        payload = encode_table(op)
        segment, _ = self._append(DEFINITION, payload)
        self._definition_segments.add(segment)
        replaced = self._definition_records.pop(key, None)
        if replaced is not None:
            old_segment, old_size = replaced
            self._live[old_segment] -= 1
            self._definition_live[old_segment] -= 1
            self._definition_bytes[old_segment] -= old_size
            if not self._definition_live[old_segment]:
                del self._definition_live[old_segment], self._definition_bytes[old_segment]
            if table is None:
                self._ref(segment, old_segment)
        if table is not None:
            size = HEAD_SIZE + len(payload)
            self._definition_records[key] = (segment, size)
            self._live[segment] += 1
            self._definition_live[segment] += 1
            self._definition_bytes[segment] += size
        return segment

    def _relocate_definitions(self) -> None:
        """Write again the definitions of sealed segments where they are
        all that is still live and take less than half the bytes, so those
        segments can go while the log still holds every definition (a
        damaged or missing snapshot then loses nothing). Half: a copy
        always frees more than it writes, so copies are never copied on."""
        log_ = self.log
        movable = {segment for segment, count in self._definition_live.items()
                   if segment != log_.current and self._live[segment] == count
                   and 2 * self._definition_bytes[segment] < log_.size(segment)}
        if not movable:
            return
        for key, (segment, _) in list(self._definition_records.items()):
            if segment in movable:
                self._write_definition(key, self._definitions[key])

    # -- definitions (core hooks) -------------------------------------------

    def exchange_declared(self, exchange: Exchange) -> None:
        self._define(
            ("exchange", exchange.vhost.name, exchange.name),
            {"type": exchange.type, "auto_delete": exchange.auto_delete, "internal": exchange.internal,
             "arguments": exchange.arguments},
        )

    def exchange_deleted(self, exchange: Exchange) -> None:
        self._define(("exchange", exchange.vhost.name, exchange.name), None)
        # Its held messages go with it; without a RELEASE they would come back
        # in a durable delayed exchange redeclared under the same name.
        if self._releases:
            self._append_releases()
        self._releases.extend(exchange.held.records())
        if self._releases:
            self._wake_writer()

    @staticmethod
    def _binding_key(source: Exchange, destination: Any, routing_key: str, arguments: dict[str, Any]) -> tuple[str, ...]:
        from ..core.queue import Queue

        kind = "queue" if isinstance(destination, Queue) else "exchange"
        # Arguments in a canonical order: unbind may list them in another
        # order than bind did (the core matches them regardless of order).
        return ("binding", source.vhost.name, source.name, kind, destination.name, routing_key,
                encode_table(_canonical(arguments)).hex())

    def bound(self, source: Exchange, destination: Any, routing_key: str, arguments: dict[str, Any]) -> None:
        key = self._binding_key(source, destination, routing_key, arguments)
        self._define(key, {"arguments": arguments})

    def unbound(self, source: Exchange, destination: Any, routing_key: str, arguments: dict[str, Any]) -> None:
        self._define(self._binding_key(source, destination, routing_key, arguments), None)

    def queue_declared(self, queue: Queue) -> None:
        if self._recovering:
            return
        if queue.store_id is None:
            queue.store_id = self._next_queue
            self._next_queue += 1
        self._define(
            ("queue", queue.vhost.name, queue.name),
            {"id": queue.store_id, "auto_delete": queue.auto_delete, "arguments": queue.arguments},
        )

    def queue_deleted(self, queue: Queue) -> None:
        segment = self._define(("queue", queue.vhost.name, queue.name), None, queue.store_id)
        if queue.unacked and segment:
            # Its unacked messages leave later (acked, or given back to the
            # deleted queue). Until then the deletion is live: without it, a
            # restart would take their entries for those of a queue whose
            # declaration was lost, and bring them back in quarantine.
            self._live[segment] += 1
            self._tombstones[queue] = [segment, queue.unacked]
        for key in [key for key in self._group_records if key[0] == queue.store_id]:
            self._live[self._group_records.pop(key)] -= 1

    # -- messages (core hooks) ----------------------------------------------

    def enqueued(self, queue: Queue, entry: Entry) -> None:
        message = entry.message
        expires = _NONE if entry.expires_at is None else entry.expires_at
        if message.store_id is None:
            message.store_id = self._next_msg
            self._next_msg += 1
            head = PUBLISH_HEAD.pack(message.store_id, queue.store_id, entry.seq, expires,
                                     min(message.properties.priority or 0, 255), len(message.body))
            segment, entry.store_offset = self._append(PUBLISH, head + content(message), message)
            message.store_segment = segment
            self._live[segment] += 1  # the body
        else:
            segment, _ = self._append(ENQUEUE, ENQUEUE_HEAD.pack(message.store_id, queue.store_id, entry.seq, expires),
                                   message)
            self._ref(segment, message.store_segment)
        message.store_refs += 1
        entry.store_segment = segment
        self._live[segment] += 1  # the entry

    def removed(self, queue: Queue, entry: Entry) -> None:
        if self._deliveries:
            self._deliveries.pop(entry, None)  # delivered and gone within one batch
        if queue.deleted and queue in self._tombstones:
            tombstone = self._tombstones[queue]
            tombstone[1] -= 1
            if not tombstone[1]:
                self._live[tombstone[0]] -= 1
                del self._tombstones[queue]
        self._remove_later(queue.store_id, entry.seq, entry.store_segment)
        self._live[entry.store_segment] -= 1
        message = entry.message
        message.store_refs -= 1
        if not message.store_refs:
            self._live[message.store_segment] -= 1

    def delivered(self, queue: Queue, entry: Entry) -> None:
        # Recorded with the next batch (_append_deliveries), so that a
        # message acked before then costs a REMOVE only: the record exists
        # to mark a message redelivered after a crash, and the batch is
        # what a crash loses or keeps either way.
        if not self._deliveries:
            self._wake_writer()  # a delivery alone still needs a write
        self._deliveries[entry] = (queue, entry.seq)  # the seq it has now: a MOVE may renumber it

    def _append_deliveries(self) -> None:
        deliveries, self._deliveries = self._deliveries, {}
        self._append_entries(DELIVERED, [
            (queue.store_id, seq, entry.store_segment)
            for entry, (queue, seq) in deliveries.items()
            if not queue.deleted and queue.store_id is not None
        ])

    def _remove_later(self, queue_id: int | None, seq: int, segment: int) -> None:
        assert queue_id is not None
        if not self._removals:
            self._wake_writer()  # an ack alone still needs a write
        self._removals.append((queue_id, seq, segment))

    def _append_removals(self) -> None:
        removals, self._removals = self._removals, []
        self._append_entries(REMOVE, removals)

    def _append_entries(self, kind: int, entries: list[tuple[int, int, int]]) -> None:
        """REMOVE or DELIVERED records for (queue id, seq, segment of the
        entry's record) entries, up to ENTRIES_PER_RECORD in each: a record
        is its entries' (queue id, seq) pairs, one after the other."""
        for start in range(0, len(entries), ENTRIES_PER_RECORD):
            chunk = entries[start : start + ENTRIES_PER_RECORD]
            payload = struct.pack(f">{2 * len(chunk)}Q", *[value for queue_id, seq, _ in chunk
                                                            for value in (queue_id, seq)])
            segment, _ = self._append(kind, payload)
            for target in {target for _, _, target in chunk}:
                self._ref(segment, target)

    def _flush_delivery(self, entry: Entry) -> None:
        """A record about ``entry`` must follow its DELIVERED: append that now."""
        delivery = self._deliveries.pop(entry, None) if self._deliveries else None
        if delivery is not None:
            queue, seq = delivery
            assert queue.store_id is not None
            self._append_entries(DELIVERED, [(queue.store_id, seq, entry.store_segment)])

    def counted(self, queue: Queue, entry: Entry) -> None:
        self._flush_delivery(entry)
        segment, _ = self._append(COUNT, COUNT_RECORD.pack(queue.store_id, entry.seq, entry.delivery_count))
        self._ref(segment, entry.store_segment)

    def retrying(self, queue: Queue, entry: Entry, due: float) -> None:
        self._flush_delivery(entry)
        segment, _ = self._append(RETRY, RETRY_RECORD.pack(queue.store_id, entry.seq, due))
        self._ref(segment, entry.store_segment)

    def moved(self, queue: Queue, entry: Entry, old_seq: int) -> None:
        self._flush_delivery(entry)
        segment, _ = self._append(MOVE, MOVE_RECORD.pack(queue.store_id, old_seq, entry.seq))
        self._ref(segment, entry.store_segment)

    def held(self, exchange: Exchange, message: Message, due: float) -> tuple[int, int]:
        message.store_id = self._next_msg
        self._next_msg += 1
        payload = HOLD_HEAD.pack(message.store_id, due) + encode_shortstr(exchange.vhost.name) + encode_shortstr(
            exchange.name) + content(message)
        segment, offset = self._append(HOLD, payload)
        message.store_segment = segment
        self._live[segment] += 1
        if message.properties.message_id:
            named, _ = self._append(NAMED, NAMED_RECORD.pack(message.store_id, name_key(message.properties.message_id)))
            self._ref(named, segment)
        return segment, offset

    def new_message_id(self) -> int:
        self._next_msg += 1
        self._unrecorded_ids += 1
        return self._next_msg - 1

    def released(self, exchange: Exchange, message: Message) -> None:
        # Appended after the records of its routing (see _append_releases).
        if self._releases:
            self._append_releases()
        assert message.store_id is not None  # held by a durable exchange: it was journalled
        self._releases.append((message.store_id, message.store_segment))
        self._releasing = message
        self._wake_writer()  # routed nowhere durable, it still needs writing
        # Routed on, it is a new publication to whatever queues it reaches.
        message.store_id = None

    def cancelled(self, exchange: Exchange, msg_id: int, hold_segment: int) -> None:
        # A RELEASE, as when it is routed: recovery does not bring it back.
        # Appended now (nothing is routed after it), so a confirm can wait for it.
        segment, _ = self._append(RELEASE, ID.pack(msg_id))
        self._ref(segment, hold_segment)
        self._live[hold_segment] -= 1

    def rescheduled(self, exchange: Exchange, msg_id: int, due: float, hold_segment: int) -> None:
        segment, _ = self._append(RESCHEDULE, HOLD_HEAD.pack(msg_id, due))
        self._ref(segment, hold_segment)

    # -- streams (core hooks) ------------------------------------------------

    def stream_appended(self, stream: Stream, offset: int, message: Message, now: float) -> tuple[int, int]:
        # A PUBLISH record, so that recovery, segment indexes and reads back
        # serve streams unchanged: seq is the offset, and the expiry column
        # holds the time it was appended (a stream's messages never expire).
        head = PUBLISH_HEAD.pack(self._next_msg, stream.store_id, offset, now, 0, len(message.body))
        self._next_msg += 1
        segment, position = self._append(PUBLISH, head + content(message), message)
        self._live[segment] += 2  # its body and its entry, as a paged message counts
        return segment, position

    def stream_batch_appended(self, stream: Stream, offset: int, batch: Batch, now: float) -> tuple[int, int]:
        # Each offset counts as a message record would (two), so that
        # retention's per-offset counts (stream_truncated) and recovery's
        # add up the same for batches.
        segment, position = self._append(BATCH, BATCH_HEAD.pack(stream.store_id, offset, now) + batch.data)
        self._live[segment] += 2 * batch.record_count
        return segment, position

    def dedup_taken(self, owner: Queue | Exchange, value: Any, expires_at: float | None) -> int:
        segment = self._append_dedup(owner, value, _NONE if expires_at is None else expires_at)
        self._live[segment] += 1
        return segment

    def dedup_forgotten(self, segment: int) -> None:
        self._live[segment] -= 1

    def dedup_refused(self, owner: Queue | Exchange, value: Any, segment: int) -> None:
        # The id again, expired for ever: recovery keeps the newest record
        # of an id, so this one hides the first, which it keeps on disk
        # (a reference) for as long as it is there itself.
        withdrawn = self._append_dedup(owner, value, REFUSED)
        self._ref(withdrawn, segment)
        self._live[segment] -= 1

    def _append_dedup(self, owner: Queue | Exchange, value: Any, expires: float) -> int:
        if isinstance(owner, Exchange):
            head = DEDUP_HEAD.pack(0, expires) + encode_shortstr(owner.vhost.name) + encode_shortstr(owner.name)
        else:
            head = DEDUP_HEAD.pack(owner.store_id, expires) + b"\0\0"
        segment, _ = self._append(DEDUP, head + encode_table({"id": value}))
        return segment

    def group_committed(self, stream: Stream, group: str, committed: int, metadata: str = "") -> None:
        if not self._group_commits:
            self._wake_writer()  # an ack alone still needs a write
        self._group_commits[stream, group] = (committed, metadata)
        self._group_moves += 1

    def transaction_logged(self, vhost: VirtualHost, transactional_id: str, state: dict[str, Any], *,
                           completes: bool = False) -> None:
        payload = encode_table({"vhost": vhost.name, "id": transactional_id, **state})
        if completes:
            self._txn_completions.append((vhost.name, transactional_id, payload))
            self._wake_writer()
        else:
            self._append_txn(vhost.name, transactional_id, payload)

    def _append_txn(self, vhost: str, transactional_id: str, payload: bytes) -> None:
        segment, _ = self._append(TXN, payload)
        replaced = self._txn_records.get((vhost, transactional_id))
        if replaced is not None:
            self._live[replaced] -= 1
        self._txn_records[vhost, transactional_id] = segment
        self._live[segment] += 1

    def group_forgotten(self, stream: Stream, group: str) -> None:
        # The record stays live while it is the group's newest, so that no
        # older GROUP record outlives it and brings the offset back.
        self.group_committed(stream, group, GROUP_FORGOTTEN)

    def _append_group_commits(self) -> None:
        """One GROUP record per group that moved since the last batch; the
        newest record of each group is live, the one it replaces no more."""
        commits, self._group_commits = self._group_commits, {}
        for (stream, group), (committed, metadata) in commits.items():
            if stream.deleted:
                continue
            # The commit's metadata follows only when there is some (records
            # written before it was kept end at the name).
            tail = encode_longstr(metadata) if metadata else b""
            segment, _ = self._append(GROUP, GROUP_HEAD.pack(stream.store_id, committed) + encode_shortstr(group)
                                      + tail)
            key = (stream.store_id or 0, group)
            replaced = self._group_records.get(key)
            if replaced is not None:
                self._live[replaced] -= 1
            self._group_records[key] = segment
            self._live[segment] += 1

    def stream_truncated(self, stream: Stream, first: int, segments: Counter[int]) -> None:
        if self._recovering:
            return
        segment, _ = self._append(TRUNCATE, TRUNCATE_RECORD.pack(stream.store_id, first))
        for target, records_left in segments.items():
            self._live[target] -= 2 * records_left
            self._ref(segment, target)

    # -- atomic units (core hooks) --------------------------------------------

    def begin_unit(self) -> None:
        self.log.open_unit(UNIT)
        self._unit_from = (len(self._removals), self._group_moves)

    def end_unit(self) -> int:
        assert self._unit_from is not None, "no unit is open"
        removals, group_moves = self._unit_from
        self._unit_from = None
        # Acks and group commits wait for the batch's end (and share its
        # records); those of the unit go in it. Others' go along: an ack
        # lost with a unit is one a crash may lose anyway.
        if len(self._removals) > removals or self._group_moves > group_moves:
            self._append_group_commits()
            self._append_removals()
        return self.log.appended if self.log.close_unit() else 0

    # -- paging (core hooks) -------------------------------------------------

    def is_written(self, segment: int, offset: int) -> bool:
        return self.log.is_written(segment, offset)

    def over_budget(self, owner: Pageable) -> None:
        self._over_budget[owner] = None

    def wants_page_in(self, owner: Pageable) -> None:
        if owner not in self._page_requests:
            self._page_requests[owner] = None
            if self.on_page_request is not None:
                self.on_page_request()

    def removed_paged(self, queue: Queue, seq: int, segment: int) -> None:
        # A spill needs no REMOVE: recovery never reads it. On a durable
        # queue the ref may be a spill or a PUBLISH; a REMOVE of a spill is
        # one that recovery finds no entry for, and skips.
        if queue.store_id is not None:
            self._remove_later(queue.store_id, seq, segment)
        self._live[segment] -= 2  # the entry and its body, one PUBLISH or SPILL record

    def spilled(self, entry: Entry) -> None:
        entry.store_segment, entry.store_offset = self._append(SPILL, content(entry.message))
        entry.spilled = True
        self._live[entry.store_segment] += 2  # as a paged message counts, entry and body

    def unspilled(self, segment: int) -> None:
        self._live[segment] -= 2

    def set_memory_pressure(self, on: bool) -> None:
        """While memory is short, queues keep a smaller budget in memory
        and transient messages beyond it spill to disk (core/backing.py).
        The caller marks the queues now over budget (over_budget)."""
        self.memory_pressure = on
        self.queue_budget = min(self._normal_budget, defaults.PRESSURE_QUEUE_BUDGET) if on else self._normal_budget

    # -- paging (driver side) ---------------------------------------------------

    def page_out(self) -> int:
        """Page out queues over budget, now that their records are written
        (trio thread, after a sync). Returns how many messages went."""
        queues = self._due_after_write | self._over_budget
        self._due_after_write = {}
        paged = sum(queue.page_out() for queue in queues)
        # A queue marked during the write may page more after the next one
        # (its newest messages were not in this batch); keep it while over.
        self._over_budget = {queue: None for queue in self._over_budget if not queue.deleted and queue.over_budget}
        return paged

    def page_in_work(self) -> list[tuple[Pageable, int, list[PagedRef]]]:
        """Batches to read back: (owner, key, refs) (trio thread)."""
        requests, self._page_requests = self._page_requests, {}
        low_water, batch = max(1, self.queue_budget // 4), max(1, self.queue_budget // 2)
        return [
            (queue, priority, refs)
            for queue in requests
            for priority, refs in queue.page_in_requests(low_water, batch)
        ]

    def read_paged(self, refs: list[PagedRef]) -> list[Message]:
        """The messages of paged refs, read from disk (worker thread). A
        stream's WHOLE ref gets what the stream keeps there: a batch is
        not made into messages (core/stream.py, entries_from)."""
        messages: list[Any] = []
        # A batch's offsets share its record: read and decoded once.
        locations = list(dict.fromkeys((segment, offset) for segment, offset, _, _ in refs))
        read = dict(zip(locations, self.log.read_many(locations), strict=True))
        batches: dict[tuple[int, int], StoredBatch] = {}
        for segment, offset, seq, whole in refs:
            kind, payload = read[segment, offset]
            if whole == WHOLE:
                messages.append(stream_entry(kind, payload))
                continue
            if kind == BATCH:
                batch = batches.get((segment, offset))
                if batch is None:
                    batch = batches[segment, offset] = batch_of(payload)
                messages.append(batch.message(seq))
                continue
            message = message_of(kind, payload, segment, offset)
            if message.store_id is not None:  # not a spill
                message.store_refs = 1
            messages.append(message)
        return messages


    # -- the driver's side --------------------------------------------------

    @property
    def dirty(self) -> bool:
        """Records wait to be written."""
        return (self.log.dirty or bool(self._releases) or bool(self._group_commits) or bool(self._deliveries)
                or bool(self._removals) or bool(self._txn_completions))

    @property
    def settlements_only(self) -> bool:
        """What waits to be written is acks and deliveries only (their
        REMOVE and DELIVERED records are appended as the batch is taken),
        which no confirm or commit waits for."""
        return bool(self._removals or self._deliveries) and not (self.log.dirty or self._releases
                                                                  or self._group_commits)

    def take_batch(self) -> tuple[list[tuple[int, bytes]], int]:
        """Everything appended so far, for a writer, and the position it
        reaches (trio thread)."""
        if self._releases:
            self._append_releases()
        if self._group_commits:
            self._append_group_commits()
        completions, self._txn_completions = self._txn_completions, []
        for vhost, transactional_id, payload in completions:
            self._append_txn(vhost, transactional_id, payload)
        if self._deliveries:
            self._append_deliveries()
        if self._removals:
            self._append_removals()
        if self._definition_live:
            self._relocate_definitions()
        # Queues over budget so far can page what this batch writes.
        self._due_after_write.update(self._over_budget)
        self._over_budget = {}
        return self.log.take_pending()

    @property
    def messages_written(self) -> int:
        """Messages given a record of their own (PUBLISH, or HOLD for a
        delayed one) by this journal, recovered ones included: the store
        driver tells batches' sizes by it."""
        return self._next_msg - 1 - self._unrecorded_ids

    @property
    def position(self) -> int:
        """Position of the last record appended; a confirm waits for it."""
        return self.log.appended

    @property
    def synced(self) -> int:
        return self.log.synced

    def confirm_position(self, persistent: bool, outcome: PublishOutcome) -> int:
        """See :meth:`amqlite.core.journal.Journal.confirm_position`."""
        stored = outcome.routed or outcome.delayed  # a held message is on disk too
        if outcome.duplicate or outcome.cancel:
            return self.position
        return self.position if (persistent or outcome.streamed) and stored and not outcome.rejected else 0

    @property
    def accepting(self) -> bool:
        """False while writes fail or free disk space is below the limit:
        persistent publishes are refused then, so the space left stays for
        what must always be written (acks, removals, definitions)."""
        room = self.room
        return not (self._write_failing or self.disk_low or room is not None and self.log.pending_bytes >= room)

    def commit(self, position: int) -> bool:
        """The batch up to ``position`` is on disk (trio thread): confirms
        up to it may go, and what it wrote may leave memory. True if this
        ends a write outage."""
        self.log.synced = position
        recovered, self._write_failing = self._write_failing, False
        self.page_out()
        return recovered

    def write_failed(self, pending: list[tuple[int, bytes]]) -> bool:
        """The batch could not be written: it goes back, to be written
        whole later, and persistent publishes are refused meanwhile. True
        if this starts a write outage."""
        self.log.put_back(pending)
        started, self._write_failing = not self._write_failing, True
        return started

    def roll_if_drained(self) -> bool:
        """Start a new segment if nothing in the current one is live any
        more, so compaction may delete it: the way a drained broker gets its
        disk space back while it is low. True if it rolled."""
        log_, current = self.log, self.log.current
        # Definition records are copied on (see _relocate_definitions),
        # unless they are most of the segment: then it is not rolled either.
        definitions = self._definition_live[current]
        if (self._live[current] != definitions or log_.dirty
                or definitions and 2 * self._definition_bytes[current] >= log_.size(current)):
            return False
        before = log_.current
        log_.roll()
        return log_.current != before

    def free_bytes(self) -> int:
        return self.fs.free_bytes(self.directory)

    # -- the reserve: room to settle on a full disk ---------------------------

    def keep_reserve(self, size: int) -> bool:
        """Make sure ``RESERVE`` holds ``size`` bytes of the disk (worker
        thread); False if there is no room for it."""
        path = self.directory / RESERVE
        try:
            if path.exists() and path.stat().st_size >= size:
                return True
            with open(path, "wb") as file:
                self.fs.allocate(file, size)
                self.fs.fsync(file)
        except OSError:
            self.fs.remove(path)
            return False
        return True

    def release_reserve(self) -> int:
        """Give the reserve's space back, for the records that settle
        messages and for compaction (worker thread). Returns its bytes."""
        path = self.directory / RESERVE
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return 0
        self.fs.remove(path)
        return size

    def obsolete_segments(self) -> list[int]:
        """Segments that can go, oldest first (trio thread)."""
        deleted: set[int] = set()
        present = set(self.log.segments)
        for segment in self.log.segments:
            if segment == self.log.current or self._live[segment] > 0:
                continue
            if all(target in deleted or target not in present for target in self._refs.get(segment, ())):
                deleted.add(segment)
        return sorted(deleted)

    def needs_snapshot(self, segments: list[int]) -> bool:
        return any(segment in self._definition_segments for segment in segments)

    @property
    def snapshot_stale(self) -> bool:
        """Definitions changed since the snapshot on disk was taken: the
        driver writes a new one soon, so that the snapshot as well as the
        log holds every definition."""
        return self._definition_changes != self._snapshot_changes

    def snapshot_payload(self) -> Snapshot:
        """The current definitions and the segment they are current as of,
        for :meth:`write_snapshot` (trio thread)."""
        segment = self.log.current
        table = {
            "segment": segment,
            "next_msg": self._next_msg,
            "next_queue": self._next_queue,
            "definitions": [{"key": list(k), "value": v} for k, v in self._definitions.items()],
        }
        return Snapshot(table, segment, self._definition_changes)

    def write_snapshot(self, payload: bytes) -> None:
        """Atomically replace the snapshot file (worker thread)."""
        self._replace_file(SNAPSHOT, payload)

    def _replace_file(self, name: str, payload: bytes) -> None:
        path = self.directory / name
        temp = path.with_suffix(".tmp")
        with open(temp, "wb") as file:
            self.fs.write(file, payload)
            self.fs.fsync(file)
        os.replace(temp, path)
        self.fs.fsync_dir(self.directory)

    def snapshot_written(self, snapshot: Snapshot) -> None:
        """Definition records before its segment are now in the snapshot.
        (Those in the segment itself may be newer; replay keeps them.)"""
        segment = snapshot.segment
        self._snapshot_changes = max(self._snapshot_changes, snapshot.changes)
        self._snapshot_segment = segment
        self._definition_segments = {s for s in self._definition_segments if s >= segment}

    def delete_segments(self, segments: list[int]) -> list[int]:
        """Delete obsolete segment files, oldest first (worker thread); then
        :meth:`forget` those deleted. Stops at the first that fails, so a
        removal never outlives what it removes."""
        deleted = []
        for segment in segments:
            try:
                self.log.delete(segment)
            except OSError as error:
                log.warning("store.delete_failed", segment=segment, error=str(error))
                break
            deleted.append(segment)
        return deleted

    def forget(self, segments: list[int]) -> None:
        for segment in segments:
            self._summaries.pop(segment, None)
            self._live.pop(segment, None)
            self._refs.pop(segment, None)
            self._indexed.discard(segment)

    # -- index files (see segment_index) --------------------------------------

    def unindexed_segments(self) -> list[int]:
        """Sealed segments whose index file is still to be written (trio thread)."""
        return [segment for segment in self.log.sealed() if segment not in self._indexed]

    def index_segment(self, segment: int) -> SegmentSummary | None:
        """Write the index file of a sealed segment (worker thread) and
        return its summary for the manifest. A segment with damaged records
        gets neither: its replay reports them."""
        try:
            with self.log.mapped_segment(segment) as data:
                index = segment_index.build(segment, data)
                encoded = None if index is None else segment_index.encode(index, data)
                size = len(data)
        except FileNotFoundError:
            return None  # compacted away meanwhile
        if index is None or encoded is None:
            log.warning("store.index_skipped", segment=segment, reason="damaged records; replayed at start-up")
            return None
        self.log.write_index(segment, encoded)
        return segment_summary(index, size)

    def summarized(self, segment: int, summary: SegmentSummary) -> None:
        """A sealed segment's summary, for the next manifest (trio thread)."""
        if segment in self.log.segments:
            self._summaries[segment] = summary
            self.manifest_stale = True

    def manifest_payload(self, leaving: Collection[int] = ()) -> Manifest:
        """The manifest as it stands without the segments ``leaving`` (trio thread)."""
        summaries = {segment: summary for segment, summary in self._summaries.items() if segment not in leaving}
        self.manifest_stale = False
        return Manifest(self.log.current, summaries)

    def write_manifest(self, manifest: Manifest) -> None:
        """Atomically replace the manifest (worker thread)."""
        self._replace_file(MANIFEST, manifest_file.encode(manifest))

    def indexed(self, segment: int) -> None:
        """``segment`` was indexed, or failed to be: it is not tried again."""
        self._indexed.add(segment)

    # -- recovery -------------------------------------------------------------

    def recover(self, broker: Broker, now: float,
                progress: Callable[[Progress | HeldProgress], None] | None = None) -> RecoveryReport:
        """Rebuild ``broker``'s durable state from disk, then journal into it.
        ``progress`` is called as the replay advances; by default a line is
        logged every 2 s."""
        self._recovering = True
        broker.journal = self
        try:
            recovered = recover(self.log, self.directory, broker, now, queue_budget=self.queue_budget,
                                progress=progress or ProgressLog())
        finally:
            self._recovering = False
        self.apply(recovered)
        for vhost in broker.vhosts.values():
            if vhost.transactions is not None:
                # Transactions a crash left prepared are completed, ongoing ones aborted.
                log.info("store.kafka_transactions_recovered", vhost=vhost.name,
                         **vhost.transactions.recovered(now))
        return recovered.report

    def apply(self, recovered: Recovered) -> None:
        """Carry on from what recovery found on disk."""
        self._next_msg, self._next_queue = recovered.next_msg, recovered.next_queue
        self._definitions = dict(recovered.definitions)
        self._snapshot_segment = recovered.snapshot_segment
        self._definition_segments = set(recovered.definition_segments)
        self._live = recovered.live
        self._refs = recovered.refs
        self._indexed = set(recovered.indexed)
        self._group_records = dict(recovered.group_records)
        self._txn_records = dict(recovered.txn_records)
        self._definition_records = dict(recovered.definition_records)
        for segment, size in self._definition_records.values():
            self._definition_live[segment] += 1
            self._definition_bytes[segment] += size
        # The log holds every definition: one it lacks (damaged, from a
        # data directory older than that rule, or a quarantine queue) is
        # written again, and so is a snapshot that should be there.
        for key, table in self._definitions.items():
            if key not in self._definition_records:
                self._write_definition(key, table)
                self._definition_changes += 1
        if recovered.snapshot_lost:
            self._definition_changes += 1
        self._summaries = dict(recovered.summaries)
        self.manifest_stale = True  # as of now: segments may have gone, or it was missing

    def close(self) -> None:
        """Write what is still pending and release the data directory."""
        pending, position = self.take_batch()
        if pending:
            try:
                self.log.write_and_sync(pending)
                self.log.synced = position
            except OSError as error:
                log.error("store.close_write_failed", error=str(error))
        self.log.close()
        self._lock_file.close()
