"""Start-up: rebuild the broker's durable state from the journal without
holding the whole backlog in memory.

One pass over the log keeps, per queue, a compact index of its messages
(about 40 bytes each, in arrays, in publication order) and marks what later
records say about them (removed, delivered, counted, retrying, moved). A
sealed segment with a valid index file (see segment_index) is loaded from it
at C speed; any other is replayed record by record, to the same effect. Then
each queue gets its first messages back in memory, read from disk one by
one, and the rest as paged references, exactly as if they had been paged
out while the broker ran.

Recovery does not reach into the journal: it returns a :class:`Recovered`
result (counters, definitions, what each segment holds live and refers to)
that the journal takes over. Damaged records never reach it: the segment
log skips or cuts them and says so (see :meth:`SegmentLog.replay`).
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
import operator
import re
import struct
import time
from array import array
from collections import Counter
from itertools import compress, repeat
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import attrs

from .. import defaults
from ..amqp.values import decode_longstr, decode_name
from ..amqp.values import decode_table
from ..core.fieldtypes import freeze
from ..core.idempotence import ProducerIds
from ..core.stream import Stream
from ..core.transactions import State, Transaction, TransactionCoordinator
from ..log import get_logger
from ..kafka import records as kafka_records
from ..kafka.mapping import marker
from . import records, segment_index
from .manifest import MANIFEST, Manifest, SegmentSummary
from . import manifest as manifest_file
from .segments import HEAD_SIZE, RECORD_HEAD
from .segment_index import DELIVERED, MOVED, OUT, RECENT, REMOVED, Holds, Rows

if TYPE_CHECKING:
    from ..core.broker import Broker
    from ..core.exchange import Exchange
    from ..core.message import Message
    from ..core.queue import Queue
    from .segments import SegmentLog

log = get_logger(__name__)

#: A byte of a flags array that is not zero: where a run of plain entries ends.
_FLAGGED = re.compile(rb"[^\x00]")
#: Records between two progress calls within a segment.
_PROGRESS_RECORDS = 200_000


@attrs.frozen
class RecoveryReport:
    queues: int
    messages: int
    paged: int
    held: int
    segments: int
    seconds: float


@attrs.frozen
class Progress:
    """How far the replay of the log has got; ``percent`` counts bytes."""

    segments_done: int
    segments_total: int
    records: int
    messages: int
    percent: float


@attrs.frozen
class HeldProgress:
    """How far the restore of held delayed messages has got, once the log
    is replayed: ``restored`` of ``total`` filed in their buckets."""

    restored: int
    total: int


class ProgressLog:
    """The default progress callback: a ``store.recovering`` line (or
    ``store.restoring_held``, with the rate since the previous one) whenever
    ``interval`` seconds have passed since start-up or the last line, so a
    long start-up says what it does and a short one stays quiet."""

    def __init__(self, interval: float = defaults.RECOVERY_PROGRESS_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self.last = clock()
        #: When the held restore started, or its last line: (time, restored).
        self.held_since: tuple[float, int] | None = None

    def __call__(self, progress: Progress | HeldProgress) -> None:
        now = self.clock()
        if isinstance(progress, HeldProgress) and self.held_since is None:
            self.held_since = (now, progress.restored)
        if now - self.last < self.interval:
            return
        self.last = now
        if isinstance(progress, Progress):
            log.info("store.recovering", segments=f"{progress.segments_done}/{progress.segments_total}",
                     records=progress.records, messages=progress.messages, percent=progress.percent)
            return
        assert self.held_since is not None
        since, restored = self.held_since
        self.held_since = (now, progress.restored)
        log.info("store.restoring_held", restored=progress.restored, total=progress.total,
                 percent=round(100.0 * progress.restored / progress.total, 1),
                 per_second=round((progress.restored - restored) / (now - since)) if now > since else None)


@attrs.define(eq=False)
class Recovered:
    """What recovery found that the journal carries on with
    (:meth:`amqlite.store.journal.DiskJournal.apply`)."""

    report: RecoveryReport
    next_msg: int
    next_queue: int
    #: The durable definitions (key -> record table) and the segment the
    #: snapshot is current as of; segments with newer definition records.
    definitions: dict[tuple[str, ...], dict[str, Any]]
    snapshot_segment: int
    definition_segments: set[int]
    #: Live things per segment, and the older segments each one points into.
    live: Counter[int]
    refs: dict[int, set[int]]
    #: Sealed segments whose index file was used (see segment_index).
    indexed: set[int]
    #: The segment of each consumer group's newest GROUP record, by
    #: (stream id, group); those records are live.
    group_records: dict[tuple[int, str], int]
    #: The segment of each Kafka transactional id's newest TXN record, by
    #: (vhost, id); those records are live.
    txn_records: dict[tuple[str, str], int]
    #: The record holding each definition, (segment, bytes); those are live.
    #: A definition without one is written again.
    definition_records: dict[tuple[str, ...], tuple[int, int]]
    #: No sound snapshot was found where one should be: write one.
    snapshot_lost: bool
    #: What each sealed segment held when it was sealed (see manifest).
    summaries: dict[int, SegmentSummary]


class _QueueIndex(Rows):
    """The messages of one queue found in the log, in publication order."""

    __slots__ = ()

    def find(self, seq: int) -> int:
        """The live entry with ``seq``, or -1."""
        i = bisect.bisect_left(self.seqs, seq)
        while i < len(self.seqs) and self.seqs[i] == seq:
            if not self.flags[i] & REMOVED:
                return i
            i += 1
        return -1


class _Holds(Holds):
    """The HOLD records found (see segment_index.Holds), and the RELEASE
    records, by message id."""

    def __init__(self) -> None:
        super().__init__()
        self.released: dict[int, int] = {}  # msg id -> RELEASE's segment
        #: msg id -> due time and RESCHEDULE's segment of the last reschedule.
        self.rescheduled: dict[int, float] = {}
        self.rescheduled_in: dict[int, int] = {}
        #: NAMED records in log order: msg id, key of its message_id.
        self.named_ids: array[int] = array("Q")
        self.named_keys: array[int] = array("Q")

    def restore(self, broker: Broker, live: Counter[int], ref: Callable[[int, int], None], now: float,
                read: Callable[[int, int], Message], progress: Callable[[HeldProgress], None] | None = None) -> int:
        """Give each durable delayed exchange what it still holds: on disk
        only, but for what is due within a few seconds (or overdue), which
        is read back now. Returns how many. A RELEASE or RESCHEDULE points
        at its HOLD's segment. ``progress`` is called as they are filed."""
        ids, dues, segments = self.ids, self.dues, self.segments
        # Millions at start-up: C-speed passes over the columns, or, for a
        # few ids among millions, a bisection each; no call per held message.
        due_now = dict(self.rescheduled)
        due_now.update(dict.fromkeys(self.released, math.nan))  # released: not restored
        gone: list[int] | None = None  # where the released are, when found one by one
        if due_now:
            if len(due_now) * _FEW < len(ids):
                gone = []
                for msg_id, i in zip(due_now, map(bisect.bisect_left, repeat(ids), due_now)):
                    if i < len(ids) and ids[i] == msg_id:
                        dues[i] = due_now[msg_id]
                        if dues[i] != dues[i]:
                            gone.append(i)
                gone.sort()
            else:
                dues = array("d", map(due_now.get, ids, dues))
            # Each segment's HOLD records are a run of ids: [first, last + 1)
            # in bounds; an id inside one bisects to an odd position.
            bounds: list[int] = []
            held_in: list[int] = []
            start = 0
            for segment, count in _runs(segments, 0, len(ids)):
                bounds += (ids[start], ids[start + count - 1] + 1)
                held_in.append(segment)
                start += count
            for records_in in (self.rescheduled_in, self.released):
                for record_in, at in set(zip(records_in.values(), map(bisect.bisect_right, repeat(bounds),
                                                                      records_in))):
                    if at % 2:
                        ref(record_in, held_in[at // 2])
        owners = []
        for vhost_name, exchange_name in self.exchanges:
            vhost = broker.vhosts.get(vhost_name)
            exchange = vhost.exchanges.get(exchange_name) if vhost is not None else None
            owners.append(exchange if exchange is not None and exchange.delayed else None)
        columns = (dues, ids, segments, self.offsets)
        wanted = []  # (exchange, its columns: dues, ids, segments, offsets)
        for number, exchange in enumerate(owners):
            if exchange is None:
                continue
            if len(owners) == 1 and gone is not None:
                wanted.append((exchange, [_cut(column, gone) for column in columns]))
                continue
            kept = (list(map(operator.eq, dues, dues)) if len(owners) == 1  # False for NaN: released
                    else [owner == number and due == due for owner, due in zip(self.owners, dues)])
            wanted.append((exchange, [array(column.typecode, compress(column, kept)) for column in columns]))
        total = sum(len(picked[1]) for _, picked in wanted)
        if progress is not None and total:
            progress(HeldProgress(0, total))
        count = 0
        for exchange, (held_dues, held_ids, held_segments, held_offsets) in wanted:
            step = None if progress is None else functools.partial(_held_progress, progress, count, total)
            exchange.held.restore_all(held_dues, held_ids, held_segments, held_offsets, step)
            for segment, n in _runs(held_segments, 0, len(held_segments)):  # ids, and so segments, grow along the log
                live[segment] += n
            count += len(held_ids)
        for exchange in owners:
            if exchange is not None:
                exchange.held.restore_names(self.named_ids, self.named_keys)
                exchange.held.bring_back(now, read)
                exchange.schedule()
        return count


#: Released or rescheduled ids fewer than the held ones divided by this are
#: found by bisection, one by one; more, by passes over all the columns.
_FEW = 16


def _cut(column: array[Any], gone: list[int]) -> array[Any]:
    """``column`` without the positions ``gone`` (in order): a slice copied
    per run between them, not a pass over every item (10M held, 100,000
    released: compress took 2 s for the four columns)."""
    kept = array(column.typecode)
    for start, end in zip(itertools.chain((0,), map(operator.add, gone, repeat(1))),
                          itertools.chain(gone, (len(column),))):
        kept.extend(column[start:end])
    return kept


def _held_progress(progress: Callable[[HeldProgress], None], before: int, total: int, restored: int) -> None:
    """One exchange's restore step (``restored`` of its own) in all of them."""
    progress(HeldProgress(before + restored, total))


class _Replay:
    def __init__(self, log: SegmentLog | None, progress: Callable[[Progress], None] | None) -> None:
        self._log = log  # None: a scratch replay of records handed to it
        self.progress = progress
        self.queues: dict[int, _QueueIndex] = {}
        self.definitions: dict[tuple[str, ...], dict[str, Any]] = {}
        #: The snapshot's definitions (None: no sound snapshot), the segment
        #: it is current as of, and whether one should have been there.
        self.snapshot: dict[tuple[str, ...], dict[str, Any]] | None = None
        self.snapshot_segment = 0
        self.snapshot_lost = False
        #: DEFINITION records in log order: (segment, bytes, key, value or
        #: None, a deleted queue's id).
        self.definition_ops: list[tuple[int, int, tuple[str, ...], dict[str, Any] | None, int | None]] = []
        #: The record of each deleted queue's deletion, by its id.
        self.deletions: dict[int, int] = {}
        self.definition_segments: set[int] = set()
        #: The record holding each definition: (segment, bytes).
        self.definition_records: dict[tuple[str, ...], tuple[int, int]] = {}
        #: Ids of every queue a definition names, deleted ones included.
        self.known_queues: set[int] = set()
        self.next_msg = 1
        self.next_queue = 1
        self.live: Counter[int] = Counter()
        self.refs: dict[int, set[int]] = {}
        self.records = 0
        self.messages = 0
        #: (queue id, seq) -> what only a few entries have.
        self.counts: dict[tuple[int, int], int] = {}
        self.retries: dict[tuple[int, int], float] = {}
        self.moved: dict[tuple[int, int], int] = {}  # original key -> current seq
        self.aliases: dict[tuple[int, int], tuple[int, int]] = {}  # current key -> original key
        #: Entries made by ENQUEUE: original key -> (body segment, body offset).
        self.enqueued: dict[tuple[int, int], tuple[int, int]] = {}
        self.recent: dict[int, tuple[int, int]] = {}
        self.recent_floor = 0  # ids up to here are forgotten
        #: ENQUEUE records whose PUBLISH was not recent: msg id -> [(key, ENQUEUE segment)].
        self.unresolved: dict[int, list[tuple[tuple[int, int], int]]] = {}
        self.holds = _Holds()
        #: Streams' retention: queue id -> (first offset kept, TRUNCATE's segment).
        self.truncations: dict[int, tuple[int, int]] = {}
        #: Consumer groups' newest committed offsets: (queue id, group) ->
        #: (committed, GROUP's segment, the commit's metadata).
        self.groups: dict[tuple[int, str], tuple[int, int, str]] = {}
        #: Deduplication windows in log order: (queue id, vhost, exchange)
        #: -> [(message id, expires, DEDUP's segment)].
        self.dedup: dict[tuple[int, str, str], list[tuple[Any, float | None, int]]] = {}
        #: The owners of the DEDUP records the log ends with (see run).
        self.trailing_dedup: list[tuple[int, str, str]] = []
        #: Seqs of REMOVE records whose entry was not found, per queue.
        self.removed_elsewhere: dict[int, array[int]] = {}
        self.indexed: set[int] = set()
        #: What each range of damaged records skipped in a replayed segment
        #: seems to hold (see _damaged_records), by segment.
        self.damage: dict[int, list[tuple[list[tuple[int, bytes]], int]]] = {}
        #: Each segment's size as found, before any torn tail was cut.
        self.sizes: dict[int, int] = {}
        #: Idempotent producers' batches per stream, in log order:
        #: queue id -> [(producer id, epoch, first seq, last seq, first offset)].
        self.producers: dict[int, list[tuple[int, int, int, int, int]]] = {}
        #: Kafka batches per stream: queue id -> [(first offset, record
        #: count, newest record timestamp in ms)], for seeks by record time.
        self.batches: dict[int, list[tuple[int, int, int]]] = {}
        #: Streams whose rows are out of offset order (see _batch).
        self.unsorted: set[int] = set()
        #: Kafka transactions' batches per stream, in log order: queue id ->
        #: [(producer id, epoch, first offset, record count, None for records
        #: or whether the marker commits)].
        self.transactional: dict[int, list[tuple[int, int, int, int, bool | None]]] = {}
        #: Each transactional id's newest TXN record: (vhost, id) -> (its
        #: table, segment, place in log order); and the place of each
        #: group's newest GROUP record, (queue id, group) -> place.
        self.transactions: dict[tuple[str, str], tuple[dict[str, Any], int, int]] = {}
        self.group_order: dict[tuple[int, str], int] = {}
        self._order = 0

    @property
    def log(self) -> SegmentLog:
        assert self._log is not None, "a scratch replay reads no log"
        return self._log

    def ref(self, segment: int, target: int) -> None:
        if target != segment:
            self.refs.setdefault(segment, set()).add(target)

    def _index(self, queue_id: int) -> _QueueIndex:
        index = self.queues.get(queue_id)
        if index is None:
            index = self.queues[queue_id] = _QueueIndex()
        return index

    def _locate(self, queue_id: int, seq: int) -> tuple[_QueueIndex, int, tuple[int, int]] | None:
        key = self.aliases.get((queue_id, seq), (queue_id, seq))
        index = self.queues.get(key[0])
        if index is None:
            return None
        i = index.find(key[1])
        return None if i < 0 else (index, i, key)

    def read_snapshot(self, directory: Path) -> None:
        """The definitions snapshot, if there is a sound one. A damaged one
        is reported and set aside: the log holds every definition too."""
        path = directory / records.SNAPSHOT
        try:
            snapshot = records.decode_snapshot(path.read_bytes())
        except FileNotFoundError:
            self.snapshot_lost = bool(self.log.segments) and self.log.segments[0] > 1
            if self.snapshot_lost:
                # Compaction wrote one before it deleted the first segment.
                log.warning("store.snapshot_missing", file=path.name,
                            action="definitions restored from the log's records")
            return
        except (OSError, ValueError) as error:
            self.snapshot_lost = True
            log.warning("store.snapshot_damaged", file=path.name, error=str(error),
                        action="definitions restored from the log's records")
            return
        self.snapshot = snapshot["definitions"]
        self.snapshot_segment = int(snapshot["segment"])
        self.next_msg = int(snapshot["next_msg"])
        self.next_queue = int(snapshot["next_queue"])

    def finish_definitions(self) -> None:
        """The definitions as they stand: the snapshot's, with the log's
        newer records applied; or, without a sound snapshot, all the log's
        records. Then which record holds each definition (those are live),
        and the references that keep a deletion as long as what it deletes."""
        definitions = self.definitions = dict(self.snapshot or {})
        newest: dict[tuple[str, ...], tuple[int, int, dict[str, Any]]] = {}
        for segment, size, key, value, deleted_id in self.definition_ops:
            if self.snapshot is None or segment >= self.snapshot_segment:
                if value is None:
                    definitions.pop(key, None)
                else:
                    definitions[key] = value
                self.definition_segments.add(segment)
            replaced = newest.pop(key, None)
            if value is not None:
                newest[key] = (segment, size, value)
                if key[0] == "queue":
                    self.known_queues.add(int(value["id"]))
            else:
                if replaced is not None:
                    self.ref(segment, replaced[0])
                if deleted_id is not None:
                    self.known_queues.add(deleted_id)
                    self.deletions[deleted_id] = segment
        for value in definitions.values():
            if "id" in value:
                self.known_queues.add(int(value["id"]))
        # A record is the definition's only if it says what the definitions say.
        self.definition_records = {key: (segment, size) for key, (segment, size, value) in newest.items()
                                   if definitions.get(key) == value}
        for segment, _ in self.definition_records.values():
            self.live[segment] += 1
        self.next_queue = max([self.next_queue, *(queue_id + 1 for queue_id in self.known_queues),
                               *(queue_id + 1 for queue_id in self.queues)])

    def _report(self, done: int, total: int, bytes_done: int, bytes_total: int, held: int = 0) -> None:
        """``held``: HOLD records found in the segment replayed, not counted yet."""
        if self.progress is not None:
            percent = 100.0 * bytes_done / bytes_total if bytes_total else 100.0
            self.progress(Progress(done, total, self.records, self.messages + held, round(percent, 1)))

    def run(self) -> None:
        sizes = self.sizes = self.log.segment_sizes()
        total_bytes, done_bytes = sum(sizes.values()), 0
        for done, (segment, size) in enumerate(sizes.items()):
            index = segment_index.decode(self.log.read_index(segment), segment, size,
                                         lambda: self.log.checksum(segment), self._index, self.holds)
            if index is None:
                self._replay_segment(segment, self.log.read_segment(segment), done, len(sizes), done_bytes,
                                     total_bytes)
            else:
                self._load_index(index)
                self.indexed.add(segment)
            done_bytes += size
            self._report(done + 1, len(sizes), done_bytes, total_bytes)
        # A DEDUP record goes in just before the record of the message it
        # admits, in the same batch; a kill that tears the batch between
        # them would leave the id taken and the message gone, and the
        # publisher's retry (never confirmed) dropped as a duplicate. So
        # DEDUP records the log ends with do not count.
        for key in self.trailing_dedup:
            self.dedup[key].pop()
        if self.trailing_dedup:
            log.warning("store.recovery_dropped_dedup_ids", ids=len(self.trailing_dedup),
                        reason="the log ends before the messages they admitted")
        self._resolve()

    def _replay_segment(self, segment: int, data: bytes, done: int, total: int, done_bytes: int,
                        total_bytes: int) -> None:
        """Replay one segment record by record."""
        # Names bound to locals: this loop runs once per record.
        queues, recent, publish, entry = self.queues, self.recent, records.PUBLISH, segment_index.entry
        roles, an_entry, held = segment_index.ROLES.get, segment_index.ENTRY, segment_index.HELD
        seen, next_report = self.records, self.records + _PROGRESS_RECORDS
        trailing_dedup = self.trailing_dedup
        holds = array("I")  # offsets of HOLD records: read as columns once the segment is done
        hold = holds.append
        for _, offset, kind, payload in self.log.records(segment, data, unit=records.UNIT):
            seen += 1
            if trailing_dedup and kind != records.DEDUP:
                trailing_dedup.clear()
            if seen >= next_report:
                next_report += _PROGRESS_RECORDS
                self.records = seen
                self._report(done, total, done_bytes + offset, total_bytes, len(holds))
            role = roles(kind)
            if role == an_entry:
                msg_id, queue_id, seq, expires, priority, size, flags = entry(kind, payload, 0)
                index = queues.get(queue_id)
                if index is None:
                    index = self._index(queue_id)
                index.add(seq, msg_id, segment, offset, expires, priority, size, flags)
                self.messages += 1
                if kind != publish:
                    self._enqueued((queue_id, seq), msg_id, segment)
                    continue
                recent[msg_id] = (segment, offset)
                floor = msg_id - RECENT
                if floor == self.recent_floor + 1:  # the usual case, inline
                    recent.pop(floor, None)
                    self.recent_floor = floor
                else:
                    self._forget_before(floor)
                if msg_id >= self.next_msg:
                    self.next_msg = msg_id + 1
            elif role == held:
                hold(offset)
            elif role is None:  # APPLIED; a UNIT record is framing, honoured by records()
                self._record(segment, offset, kind, payload)
        self.records = seen
        for start, end in self.log.skipped.get(segment, ()):
            self.damage.setdefault(segment, []).append(_damaged_records(data, start, end))
        self.holds.add_all(data, holds, segment)
        if holds:
            self.next_msg = max(self.next_msg, self.holds.ids[-1] + 1)
            self.messages += len(holds)

    def _load_index(self, index: segment_index.SegmentIndex) -> None:
        """What replaying the indexed segment would do, at C speed: its
        entries were appended per queue at once as it was decoded (seqs
        only grow within a queue, so its other records find them all the
        same); its other records are applied in log order."""
        segment = index.segment
        self.messages += index.entries + index.held
        self.records += index.records
        if index.held:
            self.next_msg = max(self.next_msg, self.holds.ids[-1] + 1)
        for queue_id, seq, msg_id, body in index.copies:
            if body == segment_index.ELSEWHERE:
                self._enqueued((queue_id, seq), msg_id, segment)
            else:
                self.enqueued[(queue_id, seq)] = (segment, body)
        if index.max_msg_id:
            self.recent.update((msg_id, (segment, offset)) for msg_id, offset in index.recent)
            self._forget_before(index.max_msg_id - RECENT)
            self.next_msg = max(self.next_msg, index.max_msg_id + 1)
        for offset, kind, payload in index.others:
            self._record(segment, offset, kind, payload)
        # An index keeps records other than PUBLISH and ENQUEUE apart from
        # those: which came last is not known, and a sealed segment was
        # followed by more of the log anyway.
        self.trailing_dedup.clear()

    def _enqueued(self, key: tuple[int, int], msg_id: int, segment: int) -> None:
        """An ENQUEUE record in ``segment``: where its body is, if known yet."""
        body = self.recent.get(msg_id)
        if body is None:
            self.unresolved.setdefault(msg_id, []).append((key, segment))
        else:
            self.ref(segment, body[0])
            self.enqueued[key] = body

    def _batch(self, segment: int, offset: int, payload: bytes) -> None:
        """A stream's BATCH record: an entry per offset, all pointing at it,
        and its producer's sequences."""
        queue_id, first, appended = records.BATCH_HEAD.unpack_from(payload)
        batch = kafka_records.stored(payload[records.BATCH_HEAD.size:records.BATCH_PREFIX])
        count = batch.record_count
        index = self._index(queue_id)
        if index.seqs and index.seqs[-1] > first:
            # From a segment index, which gives a segment's PUBLISH rows
            # before its other records: this stream's rows need sorting.
            self.unsorted.add(queue_id)
        size = batch.size // count
        for i in range(first, first + count):
            index.add(i, 0, segment, offset, appended, 0, size, 0)
        self.messages += count
        self.batches.setdefault(queue_id, []).append((first, count, batch.max_timestamp))
        if batch.attributes & kafka_records.TRANSACTIONAL:
            marker = (kafka_records.marker_commits(payload[records.BATCH_HEAD.size:records.BATCH_KEPT])
                      if batch.attributes & kafka_records.CONTROL else None)
            self.transactional.setdefault(queue_id, []).append(
                (batch.producer_id, batch.producer_epoch, first, count, marker))
            if batch.attributes & kafka_records.CONTROL:
                return  # a marker carries no sequence
        if batch.producer_id >= 0:
            self.producers.setdefault(queue_id, []).append(
                (batch.producer_id, batch.producer_epoch, batch.base_sequence, batch.last_sequence, first))

    def _record(self, segment: int, offset: int, kind: int, payload: bytes) -> None:
        """A record applied in log order (segment_index.APPLIED): in a
        replay, or from an index file."""
        if kind == records.RELEASE:
            (msg_id,) = records.ID.unpack_from(payload)
            self.holds.released[msg_id] = segment
        elif kind == records.RESCHEDULE:
            msg_id, due = records.HOLD_HEAD.unpack_from(payload)
            self.holds.rescheduled[msg_id] = due
            self.holds.rescheduled_in[msg_id] = segment
        elif kind == records.NAMED:
            msg_id, key = records.NAMED_RECORD.unpack_from(payload)
            self.holds.named_ids.append(msg_id)
            self.holds.named_keys.append(key)
        elif kind == records.DEFINITION:
            op, _ = decode_table(payload)
            self.definition_ops.append((segment, HEAD_SIZE + len(payload), tuple(op["key"]),
                                        op["value"] if op["op"] == "set" else None, op.get("id")))
        elif kind == records.BATCH:
            self._batch(segment, offset, payload)
        elif kind == records.TRUNCATE:
            queue_id, first = records.TRUNCATE_RECORD.unpack_from(payload)
            if first >= self.truncations.get(queue_id, (0, 0))[0]:
                self.truncations[queue_id] = (first, segment)
        elif kind == records.GROUP:
            queue_id, committed = records.GROUP_HEAD.unpack_from(payload)
            group, end = decode_name(payload, records.GROUP_HEAD.size)
            metadata = decode_longstr(payload, end)[0].decode() if end < len(payload) else ""
            self.groups[queue_id, group] = (committed, segment, metadata)
            self._order += 1
            self.group_order[queue_id, group] = self._order
        elif kind == records.TXN:
            table, _ = decode_table(payload)
            self._order += 1
            self.transactions[table["vhost"], table["id"]] = (table, segment, self._order)
        elif kind == records.DEDUP:
            queue_id, expires = records.DEDUP_HEAD.unpack_from(payload)
            vhost, offset = decode_name(payload, records.DEDUP_HEAD.size)
            exchange, offset = decode_name(payload, offset)
            table, _ = decode_table(payload, offset)
            self.dedup.setdefault((queue_id, vhost, exchange), []).append(
                (table["id"], None if math.isnan(expires) else expires, segment))
            self.trailing_dedup.append((queue_id, vhost, exchange))
        elif kind == records.MOVE:
            queue_id, old_seq, new_seq = records.MOVE_RECORD.unpack_from(payload)
            found = self._locate(queue_id, old_seq)
            if found is not None:
                index, i, key = found
                self.ref(segment, index.segments[i])
                self.aliases.pop((queue_id, old_seq), None)
                self.aliases[(queue_id, new_seq)] = key
                self.moved[key] = new_seq
                index.flags[i] |= MOVED
                self.retries.pop(key, None)
        elif kind in (records.REMOVE, records.DELIVERED):
            flag = REMOVED if kind == records.REMOVE else DELIVERED | OUT
            for queue_id, seq in records.ENTRY.iter_unpack(payload):
                found = self._locate(queue_id, seq)
                if found is not None:
                    index, i, _ = found
                    self.ref(segment, index.segments[i])
                    index.flags[i] |= flag
                elif flag == REMOVED:
                    # Its entry's segment is gone: compacted, or lost (see _report_losses).
                    removed = self.removed_elsewhere.get(queue_id)
                    if removed is None:
                        removed = self.removed_elsewhere[queue_id] = array("Q")
                    removed.append(seq)
        elif kind in (records.COUNT, records.RETRY):
            queue_id, seq = records.ENTRY.unpack_from(payload)
            found = self._locate(queue_id, seq)
            if found is None:
                return
            index, i, key = found
            self.ref(segment, index.segments[i])
            if kind == records.COUNT:
                self.counts[key] = records.COUNT_RECORD.unpack_from(payload)[2]
                index.flags[i] = (index.flags[i] | DELIVERED) & ~OUT
            else:
                self.retries[key] = records.RETRY_RECORD.unpack_from(payload)[2]

    def _forget_before(self, floor: int) -> None:
        """Drop recent PUBLISH locations with ids up to ``floor``. Msg ids
        grow along the log, so the window is a range of ids: popping each id
        once is cheaper than emptying a dict from its front."""
        if floor - self.recent_floor > RECENT:
            for msg_id in [msg_id for msg_id in self.recent if msg_id <= floor]:
                del self.recent[msg_id]
        else:
            for msg_id in range(self.recent_floor + 1, floor + 1):
                self.recent.pop(msg_id, None)
        self.recent_floor = max(self.recent_floor, floor)

    def _resolve(self) -> None:
        """Find the PUBLISH of each ENQUEUE that the recent window missed:
        one pass over the indexes, only when there are any."""
        if not self.unresolved:
            return
        copies = {key for pending in self.unresolved.values() for key, _ in pending}
        found: dict[int, tuple[int, int]] = {}
        for queue_id, index in self.queues.items():
            for i, msg_id in enumerate(index.msg_ids):
                if msg_id in self.unresolved and (queue_id, index.seqs[i]) not in copies:
                    found[msg_id] = (index.segments[i], index.offsets[i])
        for msg_id, pending in self.unresolved.items():
            body = found.get(msg_id)
            for key, segment in pending:
                if body is not None:
                    self.ref(segment, body[0])
                    self.enqueued[key] = body
                    continue
                located = self._locate(*key)
                if located is not None:  # live, yet its body is gone
                    index, i, _ = located
                    index.flags[i] |= REMOVED
                    log.warning("store.enqueue_without_publish", msg_id=msg_id, queue=key[0], seq=key[1])

    def restore_definitions(self, broker: Broker, now: float) -> dict[int, Queue]:
        """Declare the durable exchanges, queues and bindings; the queues by store id."""
        ordered = sorted(self.definitions.items(), key=lambda item: ("exchange", "queue", "binding").index(item[0][0]))
        queues: dict[int, Queue] = {}
        for key, value in ordered:
            kind, vhost_name = key[0], key[1]
            vhost = broker.add_vhost(vhost_name)
            if kind == "exchange":
                if key[2] not in vhost.exchanges:
                    vhost.declare_exchange(key[2], value["type"], durable=True, auto_delete=value["auto_delete"],
                                           internal=value["internal"], arguments=value["arguments"])
            elif kind == "queue":
                queue = vhost.declare_queue(key[2], owner=None, now=now, durable=True,
                                            auto_delete=value["auto_delete"], arguments=value["arguments"])
                queue.store_id = int(value["id"])
                self.next_queue = max(self.next_queue, queue.store_id + 1)
                queues[queue.store_id] = queue
            else:
                _, _, source, dest_kind, dest_name, routing_key, _ = key
                exchange = vhost.exchanges.get(source)
                target = (vhost.queues if dest_kind == "queue" else vhost.exchanges).get(dest_name)
                if exchange is not None and target is not None:
                    exchange.bind(target, routing_key, dict(value["arguments"]))
        return queues


def _read_manifest(directory: Path, segment_log: SegmentLog) -> Manifest | None:
    path = directory / MANIFEST
    try:
        return manifest_file.decode(path.read_bytes())
    except FileNotFoundError:
        if len(segment_log.segments) > 1:
            log.warning("store.manifest_missing", file=path.name,
                        action="losses in sealed segments cannot be counted at this start; a new one is written")
    except (OSError, ValueError) as error:
        log.warning("store.manifest_damaged", file=path.name, error=str(error),
                    action="losses in sealed segments cannot be counted at this start; a new one is written")
    return None


def found_summaries(replay: _Replay, sizes: dict[int, int]) -> dict[int, SegmentSummary]:
    """What the replay found in each segment of ``sizes``, as manifest
    summaries: a queue's entries are in log order, so a run of one
    segment gives its count and its first and last seq."""
    queues: dict[int, list[tuple[int, int, int, int]]] = {}
    for queue_id, index in replay.queues.items():
        start = 0
        for segment, count in _runs(index.segments, 0, len(index.segments)):
            queues.setdefault(segment, []).append(
                (queue_id, count, index.seqs[start], index.seqs[start + count - 1]))
            start += count
    holds: dict[int, tuple[int, int, int]] = {}
    ids = replay.holds.ids
    start = 0
    for segment, count in _runs(replay.holds.segments, 0, len(ids)):
        holds[segment] = (count, ids[start], ids[start + count - 1])
        start += count
    return {segment: SegmentSummary(size, tuple(queues.get(segment, ())), holds.get(segment, (0, 0, 0)))
            for segment, size in sizes.items()}


def segment_summary(index: segment_index.SegmentIndex, size: int) -> SegmentSummary:
    """The manifest summary of a segment just indexed (the driver's index
    task): its records replayed into a scratch replay, so each kind means
    what it means at start-up."""
    scratch = _Replay(None, None)
    for queue_id, rows in index.queues.items():
        scratch._index(queue_id).extend(rows)
    for offset, kind, payload in index.others:
        scratch._record(index.segment, offset, kind, payload)
    ids = index.holds.ids
    return SegmentSummary(
        size, tuple((queue_id, len(rows.seqs), min(rows.seqs), max(rows.seqs))
                    for queue_id, rows in scratch.queues.items() if rows.seqs),
        (len(ids), min(ids), max(ids)) if ids else (0, 0, 0))


def _report_losses(replay: _Replay, manifest: Manifest, found: dict[int, SegmentSummary],
                   queues: dict[int, Queue], damaged: set[int]) -> int:
    """Compare each sealed segment's summary with what the replay found
    there: entries missing that no later record removed are lost. One
    ``store.messages_lost`` line per segment, naming the queues, how many
    and which seqs (a stream's offsets). Returns how many were lost."""
    removed = {queue_id: sorted(seqs) for queue_id, seqs in replay.removed_elsewhere.items()}
    released = sorted(replay.holds.released)
    total = 0
    for segment, expected in sorted(manifest.summaries.items()):
        got = found.get(segment)
        if got is not None and got.size == expected.size and segment not in damaged:
            continue
        reason = ("missing" if got is None else f"cut to {got.size} of {expected.size} bytes"
                  if got.size < expected.size else "damaged records")
        present = {queue_id: count for queue_id, count, _, _ in (got.queues if got is not None else ())}
        lost_queues: list[dict[str, Any]] = []
        for queue_id, count, first, last in expected.queues:
            queue = queues.get(queue_id)
            if queue is None:
                continue  # deleted since
            gone = bisect.bisect_right(removed.get(queue_id, ()), last) - bisect.bisect_left(
                removed.get(queue_id, ()), first)
            if isinstance(queue, Stream):
                retained = replay.truncations.get(queue_id, (0, 0))[0]
                if last < retained:
                    continue
                gone = max(gone, retained - first)  # retention removed what came before
            lost = count - present.get(queue_id, 0) - gone
            if lost > 0:
                lost_queues.append({"queue": queue.name, "vhost": queue.vhost.name, "messages": lost,
                                    "offsets" if isinstance(queue, Stream) else "seqs": [first, last]})
        count, first, last = expected.holds
        held = count - (got.holds[0] if got is not None else 0) - (
            bisect.bisect_right(released, last) - bisect.bisect_left(released, first)) if count else 0
        messages = sum(int(item["messages"]) for item in lost_queues)
        if messages or held > 0:
            total += messages
            log.warning("store.messages_lost", segment=f"{segment:010d}.seg", reason=reason, messages=messages,
                        queues=lost_queues, held_delayed=max(held, 0))
    newest = max(found, default=0)
    if manifest.current > newest:
        log.warning("store.segment_missing", segments=[f"{s:010d}.seg" for s in range(newest + 1, manifest.current + 1)],
                    reason="the newest segments are gone", messages="unknown: not summarised until sealed")
    return total


def _damaged_records(data: bytes, start: int, end: int) -> tuple[list[tuple[int, bytes]], int]:
    """What the records of a skipped range seem to be, read by their heads
    although their checksums fail: (kind, payload) of each, and how many
    bytes of the range that reading cannot account for. The range starts
    where an intact record ended, so at a record's head; one flipped byte
    makes it that one record. Where the lengths do not lead exactly to the
    range's end, only the first record is taken at its word, and the rest
    of the range (all of it after the head, if that record's own length
    overshoots) is not accounted for."""
    found: list[tuple[int, bytes]] = []
    at = start
    while end - at >= HEAD_SIZE:
        length, _, kind = RECORD_HEAD.unpack_from(data, at)
        stop = at + 8 + length if length else end
        found.append((kind, data[at + HEAD_SIZE : min(stop, end)]))
        if stop >= end:
            at = end if stop == end else at
            break
        at = stop
    if at == end:
        return found, 0
    if not found:
        return found, end - start
    first = start + 8 + RECORD_HEAD.unpack_from(data, start)[0]
    return found[:1], end - (first if start < first < end else start + HEAD_SIZE)


def _report_unsummarised(replay: _Replay, manifest: Manifest | None, queues: dict[int, Queue]) -> int:
    """Damaged records skipped in a segment the manifest does not summarise
    (the newest, not sealed yet; any, without a manifest), counted by what
    their own heads say: a PUBLISH or ENQUEUE of a queue whose entry is
    not there and that no later record removed, a HOLD that no later
    RELEASE let go. One ``store.messages_lost`` line per segment, as for a
    summarised one, with ``unreadable_bytes`` where the heads did not
    account for the whole range. Returns how many were lost."""
    total = 0
    for segment, ranges in sorted(replay.damage.items()):
        if manifest is not None and segment in manifest.summaries:
            continue  # counted against its summary (_report_losses)
        lost: dict[int, list[int]] = {}
        held = unreadable = 0
        for found, unaccounted in ranges:
            unreadable += unaccounted
            for kind, payload in found:
                if not records.DEFINITION <= kind <= records.UNIT:
                    unreadable += HEAD_SIZE + len(payload)  # no record's head
                    continue
                role = segment_index.ROLES.get(kind)
                try:
                    if role == segment_index.ENTRY:
                        _, queue_id, seq, *_ = segment_index.entry(kind, payload, 0)
                        index = replay.queues.get(queue_id)
                        queue = queues.get(queue_id)
                        if queue is None and queue_id not in replay.known_queues:
                            unreadable += HEAD_SIZE + len(payload)  # no queue ever had that id: a damaged head
                        elif (queue is not None and (index is None or index.find(seq) < 0)
                                and seq not in replay.removed_elsewhere.get(queue_id, ())
                                and seq >= replay.truncations.get(queue_id, (0, 0))[0]):
                            lost.setdefault(queue_id, []).append(seq)
                    elif role == segment_index.HELD:
                        held += records.HOLD_HEAD.unpack_from(payload)[0] not in replay.holds.released
                except struct.error:
                    unreadable += len(payload)  # too short for the head its kind says
        lost_queues = [{"queue": queues[queue_id].name, "vhost": queues[queue_id].vhost.name, "messages": len(seqs),
                        "offsets" if isinstance(queues[queue_id], Stream) else "seqs": [min(seqs), max(seqs)]}
                       for queue_id, seqs in lost.items()]
        messages = sum(len(seqs) for seqs in lost.values())
        if messages or held or unreadable:
            total += messages
            log.warning("store.messages_lost", segment=f"{segment:010d}.seg", reason="damaged records",
                        messages=messages, queues=lost_queues, held_delayed=held,
                        **({"unreadable_bytes": unreadable} if unreadable else {}))
    return total


#: Where the messages of a queue whose declaration is lost come back
#: (vhost "/", then the queue's store id): see docs/operations.md.
QUARANTINE = "amqlite.recovered."


def _quarantine(broker: Broker, queues: dict[int, Queue], replay: _Replay, now: float) -> set[int]:
    """Queues the log holds messages of but no definition names, not even
    a deleted one: their declaration was damaged or lost with the
    snapshot. Their messages come back in a durable queue of their own
    (no arguments, so none expires or is dropped), which is then defined
    like any other. Returns their ids."""
    quarantined = set()
    for queue_id, index in replay.queues.items():
        if queue_id in queues or queue_id in replay.known_queues:
            continue
        first = replay.truncations.get(queue_id, (0, 0))[0]  # a stream's retention
        alive = sum(1 for seq, flags in zip(index.seqs, index.flags) if not flags & REMOVED and seq >= first)
        if not alive:
            continue
        name = f"{QUARANTINE}{queue_id}"
        vhost = broker.add_vhost("/")
        queue = vhost.declare_queue(name, owner=None, now=now, durable=True, auto_delete=False, arguments={})
        queue.store_id = queue_id
        queues[queue_id] = queue
        replay.definitions[("queue", "/", name)] = {"id": queue_id, "auto_delete": False, "arguments": {}}
        quarantined.add(queue_id)
        log.warning("store.queue_quarantined", queue_id=queue_id, queue=name, vhost="/", messages=alive,
                    reason="no definition of the queue survived (damaged record, snapshot lost)",
                    action="its messages are in this queue; move them where they belong")
    return quarantined


def _runs(segments: array[int], start: int, end: int) -> Iterator[tuple[int, int]]:
    """(segment, count) of each run of one segment in ``segments[start:end]``:
    a queue's entries are in log order, so its segments never decrease and
    a run ends where bisect finds the next segment (a few calls, not a pass
    over millions of entries)."""
    while start < end:
        segment = segments[start]
        stop = bisect.bisect_right(segments, segment, start, end)
        yield segment, stop - start
        start = stop


def _restore_stream(stream: Stream, index: _QueueIndex, replay: _Replay) -> None:
    """A stream's records are PUBLISH records in offset order (seq is the
    offset, the expiry column the time appended); those before its last
    TRUNCATE are gone, and that record points at them until their
    segments are."""
    first, truncated_in = replay.truncations.get(stream.store_id or 0, (0, 0))
    if stream.store_id in replay.unsorted:
        order = sorted(range(len(index.seqs)), key=index.seqs.__getitem__)
        for column in (index.seqs, index.segments, index.offsets, index.sizes):
            column[:] = array(column.typecode, [column[i] for i in order])
        index.expires[:] = array("d", [index.expires[i] for i in order])
    seqs, segments = index.seqs, index.segments
    start = bisect.bisect_left(seqs, first)
    for segment, _ in _runs(segments, 0, start):
        replay.ref(truncated_in, segment)
    for segment, count in _runs(segments, start, len(seqs)):
        replay.live[segment] += 2 * count
    stream.restore_log(seqs[start:], segments[start:], index.offsets[start:], index.sizes[start:],
                       index.expires[start:], end=max(first, seqs[-1] + 1 if seqs else 0),
                       batches=sorted(replay.batches.get(stream.store_id or 0, ())))
    # A retry of a batch that reached the disk before a crash is still a
    # duplicate: its producer's last sequences come back with the log.
    for producer_id, epoch, first_seq, last_seq, offset in replay.producers.get(stream.store_id or 0, ()):
        stream.producers.appended(producer_id, epoch, first_seq, last_seq, offset)
    # Open and aborted transactions, and the epochs their markers fenced.
    for producer_id, epoch, offset, count, commits in replay.transactional.get(stream.store_id or 0, ()):
        if offset < first:
            continue
        if commits is None:
            stream.transactions.appended(producer_id, offset, count)
        else:
            stream.transactions.ended(producer_id, offset, commits)
            stream.producers.fence(producer_id, epoch)


def _restore_groups(queues: dict[int, Queue], replay: _Replay) -> dict[tuple[int, str], int]:
    """Consumer groups' committed offsets back on their streams; the
    segments of the GROUP records that stay live."""
    kept = {}
    for (queue_id, group), (committed, segment, metadata) in replay.groups.items():
        stream = queues.get(queue_id)
        if isinstance(stream, Stream):
            if committed != records.GROUP_FORGOTTEN:
                stream.restore_group(group, committed, metadata)
            replay.live[segment] += 1
            kept[queue_id, group] = segment
    return kept


def _restore_transactions(broker: Broker, queues: dict[int, Queue], replay: _Replay,
                          now: float) -> dict[tuple[str, str], int]:
    """Kafka's transactional ids as their newest TXN records left them
    (the coordinator finishes or aborts what was open once the journal
    runs: DiskJournal.recover); those records stay live. A prepared
    commit's group offsets are applied again unless a later GROUP record
    of that group on that stream says otherwise."""
    kept = {}
    for (vhost_name, transactional_id), (table, segment, order) in replay.transactions.items():
        replay.live[segment] += 1
        kept[vhost_name, transactional_id] = segment
        vhost = broker.vhosts.get(vhost_name)
        if vhost is None:
            continue
        if vhost.producer_ids is None:
            vhost.producer_ids = ProducerIds.from_clock(now)
        if vhost.transactions is None:
            vhost.transactions = TransactionCoordinator(vhost, vhost.producer_ids, marker)
        txn = Transaction(transactional_id, table["producer_id"], table["epoch"], table["timeout_ms"] / 1000,
                          State(table["state"]), started=table["started"], last_epoch=table.get("last_epoch", -1))
        for queue_id in table["partitions"]:
            stream = queues.get(queue_id)
            if isinstance(stream, Stream):
                txn.partitions[stream] = None
        for group, queue_id, offset, metadata in table["offsets"]:
            stream = queues.get(queue_id)
            if isinstance(stream, Stream) and replay.group_order.get((queue_id, group), 0) < order:
                txn.offsets[group, stream] = (offset, metadata)
        vhost.transactions.restore(txn)
        # Ids count up from the clock at start-up: one set back must not
        # hand a new producer a recovered id.
        vhost.producer_ids.next_id = max(vhost.producer_ids.next_id, txn.producer_id + 1)
    return kept


def _restore_dedup(broker: Broker, queues: dict[int, Queue], replay: _Replay, now: float) -> None:
    """Each deduplicating owner's window as it stood: the newest record of
    each id, unexpired, at most the window's size; those records stay live."""
    for (queue_id, vhost_name, exchange_name), taken in replay.dedup.items():
        if queue_id:
            owner: Queue | Exchange | None = queues.get(queue_id)
        else:
            vhost = broker.vhosts.get(vhost_name)
            owner = vhost.exchanges.get(exchange_name) if vhost is not None else None
        deduplicator = owner.deduplicator if owner is not None else None
        if deduplicator is None:
            continue
        window: dict[Any, tuple[Any, float | None, int]] = {}
        for value, expires, segment in taken:
            key = freeze(value)
            hidden = window.pop(key, None)
            if hidden is not None and expires == records.REFUSED:
                replay.ref(segment, hidden[2])  # handed back: outlives the record taking it
            window[key] = (value, expires, segment)
        kept = [item for item in window.values() if item[1] is None or item[1] > now]
        if deduplicator.size is not None:
            kept = kept[-deduplicator.size:]
        for value, expires, segment in kept:
            deduplicator.remember(value, expires, segment)
            replay.live[segment] += 1


def recover(
    segment_log: SegmentLog,
    directory: Path,
    broker: Broker,
    now: float,
    *,
    queue_budget: int,
    progress: Callable[[Progress | HeldProgress], None] | None = None,
) -> Recovered:
    """Rebuild ``broker``'s durable state from the snapshot in ``directory``
    and ``segment_log``. ``progress`` is called as the replay advances
    (after each segment, and every few hundred thousand records), then as
    held delayed messages are restored."""
    started = time.perf_counter()
    replay = _Replay(segment_log, progress)
    replay.read_snapshot(directory)
    manifest = _read_manifest(directory, segment_log)
    replay.run()
    replay.finish_definitions()
    queues = replay.restore_definitions(broker, now)
    quarantined = _quarantine(broker, queues, replay, now)
    contents = found_summaries(replay, replay.sizes)
    if manifest is not None:
        _report_losses(replay, manifest, contents, queues, segment_log.damaged)
    _report_unsummarised(replay, manifest, queues)
    # What each sealed segment held when sealed, damaged or not, so a
    # damaged one is reported at every start until compaction deletes it.
    summaries = {segment: manifest.summaries.get(segment, summary) if manifest is not None else summary
                 for segment, summary in contents.items() if segment != segment_log.current}
    live = replay.live
    restored = paged = 0
    messages: dict[int, Message] = {}  # those that several durable queues hold
    for queue_id, index in replay.queues.items():
        queue = queues.get(queue_id)
        if queue is None:
            # Deleted: the entries it left (out with consumers then) keep
            # the record of the deletion, so they are never taken for a
            # quarantined queue's.
            deletion = replay.deletions.get(queue_id)
            if deletion is not None:
                for segment, _ in _runs(index.segments, 0, len(index.segments)):
                    replay.ref(deletion, segment)
            continue
        if isinstance(queue, Stream):
            _restore_stream(queue, index, replay)
            continue
        lost_expiry = queue_id in quarantined  # a stream's column holds times appended, not expiries
        if lost_expiry:
            first = replay.truncations.get(queue_id, (0, 0))[0]
            for i in range(bisect.bisect_left(index.seqs, first)):
                index.flags[i] |= REMOVED
        # Never hand out a seq the log still holds, even for removed messages.
        queue.note_seq(max(index.seqs, default=0))
        full = queue.ready.in_memory >= queue_budget  # only restore() below changes it
        seqs, flags_, segments, offsets, sizes = index.seqs, index.flags, index.segments, index.offsets, index.sizes
        # Without priorities, a run of entries with no flag pages in one call.
        runs = _FLAGGED.search if queue.settings.max_priority is None else None
        flag_bytes = flags_.tobytes()
        i = single_until = 0  # entries before single_until go one by one (their run could not page)
        while i < len(seqs):
            flags = flags_[i]
            if not flags and full and runs is not None and i >= single_until:
                found = runs(flag_bytes, i)
                end = len(seqs) if found is None else found.start()
                if queue.restore_paged_run(segments[i:end], offsets[i:end], seqs[i:end], sizes[i:end]):
                    for segment, count in _runs(segments, i, end):
                        live[segment] += 2 * count  # the entry and its body, one record
                    paged += end - i
                    i = end
                    continue
                single_until = end
            j, i = i, i + 1
            if flags & REMOVED:
                continue
            segment, offset = segments[j], offsets[j]
            if not flags and full and queue.restore_paged(index.priorities[j], segment, offset, seqs[j],
                                                          sizes[j]):
                live[segment] += 2
                paged += 1
                continue
            key = (queue_id, seqs[j])
            expires = math.nan if lost_expiry else index.expires[j]
            body = replay.enqueued.get(key)
            body_segment, body_offset = body if body is not None else (segment, offset)
            message = messages.get(index.msg_ids[j]) if body is not None else None
            if message is None:
                message = records.load_message(segment_log, body_segment, body_offset)
                if body is not None:
                    messages[index.msg_ids[j]] = message
            entry = queue.restore(
                message, replay.moved.get(key, seqs[j]),
                expires_at=None if math.isnan(expires) else expires,
                delivery_count=replay.counts.get(key, 0) + bool(flags & OUT), redelivered=bool(flags & DELIVERED),
                retry_due=replay.retries.get(key), now=now,
            )
            full = queue.ready.in_memory >= queue_budget
            entry.store_segment = segment
            if body is None and key not in replay.moved:
                entry.store_offset = offset
            message.store_refs += 1
            live[segment] += 1
            if message.store_refs == 1:
                live[body_segment] += 1
            restored += 1
    group_records = _restore_groups(queues, replay)
    txn_records = _restore_transactions(broker, queues, replay, now)
    _restore_dedup(broker, queues, replay, now)
    held = replay.holds.restore(broker, live, replay.ref, now,
                                lambda segment, offset: records.load_message(segment_log, segment, offset), progress)
    report = RecoveryReport(len(queues), restored + paged, paged, held, len(segment_log.segments),
                            time.perf_counter() - started)
    log.info("store.recovered", queues=report.queues, messages=report.messages, paged=report.paged,
             held=report.held, segments=report.segments, seconds=round(report.seconds, 3))
    return Recovered(report, replay.next_msg, replay.next_queue, replay.definitions, replay.snapshot_segment,
                     replay.definition_segments, live, replay.refs, replay.indexed, group_records, txn_records,
                     replay.definition_records, replay.snapshot_lost, summaries)
