"""A stream: an append-only log of messages that consuming does not remove.

RabbitMQ's stream queue as AMQP 0-9-1 clients see it. Each message gets an
offset (0, 1, 2 ...) and keeps it. A consumer starts where its
``x-stream-offset`` says and moves on with a cursor of its own, so any
number of consumers read everything, each at its own pace; an ack only
returns credit. Retention removes whole segments from the head: a reader
left behind moves to the new first offset, as in RabbitMQ.

Memory. With durable storage, a stream keeps its newest messages in memory
(the journal's queue budget) and, for every other message, where its
record lies (8 bytes). A reader behind that window reads batches back from
disk through the journal, as a paged queue does, and holds one batch at a
time, so memory grows neither with the backlog nor with the readers.
Without storage (the embedded broker with no data directory) every
retained message stays in memory.

Chunks. RabbitMQ writes a stream in chunks and seeks by them: ``last`` is
the first message of the last chunk, a timestamp finds the first chunk
stamped at or after it. Here too a chunk is what one write of the journal
carries (without a journal: what was appended at one instant).

Record times. A seek by record time (Kafka's ListOffsets, ``CreateTime``)
wants the first offset whose own timestamp is at or after the time asked
for, which append times do not give when producers stamp records
themselves. The stream keeps where the running maximum of the records'
timestamps rises (offset and new maximum, both increasing): the first
entry there at or above the time asked for is the first entry holding a
record that recent, found by bisection. Entries are batches (their
header's max timestamp) or messages; in order timestamps cost 16 bytes per
distinct millisecond or per batch, whichever is rarer. After a restart a
batch counts by its header again, a message by the time it was appended.
"""

from __future__ import annotations

import bisect
from array import array
from collections import Counter, deque
from datetime import datetime
from itertools import repeat
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from .arguments import QueueSettings, StreamSettings, parse_age, stream_settings
from .consumer import Consumer
from .errors import NotImplemented_, PreconditionFailed, ResourceLocked
from .groups import GROUP_ARGUMENT, ConsumerGroup, GroupOffset
from .idempotence import ProducerStates
from .message import GONE, UNACKED, Entry, Message, Properties
from .queue import Queue
from .ready import PagedRef
from .visibility import Visibility

if TYPE_CHECKING:
    from .vhost import VirtualHost

FIRST, LAST, NEXT = "first", "last", "next"
OFFSET_HEADER = "x-stream-offset"
#: A message's Kafka record timestamp (ms) when it has one (docs/kafka.md).
RECORD_TIME_HEADER = "x-kafka-timestamp"
#: Messages a reader behind the memory window reads back from disk at once.
#: Each read is a trip to a worker thread and back (about 100 us of CPU
#: here under load): 256 a read cost a stream consume a third more CPU.
READ_BATCH = 1024
#: A read from disk for a reader that takes batches: at most this many
#: offsets, or BATCH_READ_RECORDS records (batches can be large), whichever
#: comes first.
BATCH_READ_OFFSETS = 4096
BATCH_READ_RECORDS = 256
#: The fourth field of a PagedRef asking storage for what the stream keeps
#: there, whole (a batch, or a message), rather than the message at it.
#: Negative: a queue's refs hold the message's size there, and a body of
#: one byte was read as a stream's whole entry.
WHOLE = -1
#: After a restart, messages appended within this many seconds share a chunk.
RECOVERED_CHUNK = 0.001
#: What a batch answers for an offset that holds no message: a Kafka
#: transaction marker (a control record). AMQP readers skip it, as they
#: skip the records of aborted transactions, and read no further than the
#: last stable offset (core/visibility.py); offsets are Kafka's on both
#: sides.
NO_MESSAGE = Message("", "", Properties(), b"")


class Batch(Protocol):
    """Messages appended at once and kept as they arrived: a Kafka record
    batch (amqlite/kafka/mapping.py). The stream stores its bytes whole,
    gives it an offset per message, hands it whole to readers that take
    batches, and asks it for messages only for AMQP readers."""

    @property
    def data(self) -> bytes: ...

    @property
    def record_count(self) -> int: ...

    @property
    def base_offset(self) -> int: ...

    @property
    def max_timestamp(self) -> int:
        """Its newest record's timestamp, ms since the epoch."""

    def message(self, offset: int) -> Message:
        """The message at ``offset``, or NO_MESSAGE for a control record."""


def record_time(properties: Properties, appended_ms: int) -> int:
    """A message's timestamp as a Kafka record (ms): its header, else its
    ``timestamp`` property, else when the stream appended it."""
    timestamp = (properties.headers or {}).get(RECORD_TIME_HEADER)
    if isinstance(timestamp, int) and not isinstance(timestamp, bool):
        return timestamp
    return properties.timestamp * 1000 if properties.timestamp is not None else appended_ms


def with_offset(properties: Properties, offset: int) -> Properties:
    """A stream delivery's properties: the message's offset in the
    ``x-stream-offset`` header, in place of any the publisher sent, as
    RabbitMQ delivers it. By position: NamedTuple._replace costs three
    times as much."""
    headers = dict(properties.headers or {})
    headers[OFFSET_HEADER] = offset
    return Properties(properties[0], properties[1], headers, *properties[3:])


#: Dropped slots at the front of a _Window before its list sheds them.
_SHED = 4096


class _Window:
    """The newest messages of a stream, by position from the oldest kept.

    A list read from ``head`` on: a deque indexes in O(n) (22 us a read at
    1M messages, 473 us at 4M), a list in O(1). Dropping from the front
    clears the slots at once (their messages can go) and moves ``head``;
    the list sheds the cleared slots in chunks, once they are half of it,
    so each drop costs O(1) amortized."""

    __slots__ = ("_items", "_head")

    def __init__(self) -> None:
        self._items: list[Message | Batch | None] = []
        self._head = 0

    def __len__(self) -> int:
        return len(self._items) - self._head

    def __getitem__(self, position: int) -> Message | Batch:
        message = self._items[self._head + position]
        assert message is not None  # only the dropped slots, before head, are None
        return message

    def append(self, message: Message) -> None:
        self._items.append(message)

    def extend(self, batch: Batch, count: int) -> None:
        """A batch, at each of its ``count`` positions."""
        self._items.extend(repeat(batch, count))

    def drop(self, count: int) -> None:
        """The ``count`` oldest messages, gone."""
        items, head = self._items, self._head
        end = min(head + count, len(items))
        items[head:end] = [None] * (end - head)
        if end >= _SHED and 2 * end >= len(items):
            del items[:end]
            end = 0
        self._head = end

    def clear(self) -> None:
        self._items.clear()
        self._head = 0


@attrs.define(slots=True, eq=False)
class _Segment:
    """A retention unit: retention removes whole segments, never the last."""

    first: int
    bytes: int = 0
    #: When its newest message was appended.
    last_time: float = 0.0


@attrs.define(slots=True, eq=False)
class _BatchRead:
    """A read from disk for a reader that takes batches (a Kafka Fetch)."""

    offset: int
    #: What was read, with the first offset of each; None until it came.
    entries: list[tuple[int, Message | Batch]] | None = None
    #: Asked for, not yet handed to storage.
    asked: bool = True


@attrs.define(slots=True, eq=False)
class _Reader:
    """A consumer's place in the stream."""

    #: Identifies the reader in storage's read requests.
    key: int
    #: The offset it gets next.
    next: int
    #: Messages read back from disk, from offset ``buffer_first`` on.
    buffer: deque[Message] = attrs.field(factory=deque)
    buffer_first: int = 0
    #: A read from disk is asked for or under way.
    reading: bool = False


class Stream(Queue):
    is_stream = True

    def __init__(self, vhost: VirtualHost, name: str, settings: StreamSettings, *,
                 arguments: dict[str, Any] | None = None, now: float = 0.0) -> None:
        super().__init__(vhost, name, QueueSettings(), durable=True, arguments=arguments, now=now)
        self.stream_settings = settings
        #: Offsets of the first retained message and of the next one appended.
        self.first = 0
        self.end = 0
        #: The newest messages, from offset ``_memory_first`` to ``end``.
        self._memory = _Window()
        self._memory_first = 0
        #: Where each retained message's record is (durable storage only):
        #: journal segment and offset, from offset ``first`` on.
        self._record_segments = array("I")
        self._record_offsets = array("I")
        #: Chunks: first offset and time of each (see the module's docstring).
        self._chunk_offsets = array("q")
        self._chunk_times = array("d")
        #: Where the records' running maximum timestamp (ms) rises: the
        #: entry's first offset and that maximum (module docstring).
        self._rise_offsets = array("q")
        self._rise_times = array("q")
        self._segments: deque[_Segment] = deque([_Segment(0)])
        self.bytes = 0
        self._readers: dict[Consumer, _Reader] = {}
        self._next_reader = 0
        #: Consumer groups' progress here (core/groups.py), and which group
        #: each delivery still unacked went to.
        self.group_offsets: dict[str, GroupOffset] = {}
        self._group_of: dict[Consumer, ConsumerGroup] = {}
        self._pending: dict[Entry, GroupOffset] = {}
        #: Idempotent Kafka producers' last batches here.
        self.producers = ProducerStates()
        #: Kafka transactions open and aborted here (read_committed readers).
        self.transactions = Visibility()
        #: Reads from disk for readers that take batches, by ticket (< 0,
        #: apart from the readers' keys).
        self._batch_reads: dict[int, _BatchRead] = {}
        self._next_ticket = 0

    # -- counts ---------------------------------------------------------

    @property
    def message_count(self) -> int:
        """Messages retained, as RabbitMQ's declare-ok reports them (it
        catches up a moment after a publish; this is exact at once)."""
        return self.end - self.first

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    # -- appending ------------------------------------------------------

    def enqueue(self, message: Message, message_ttl: float | None, now: float) -> bool:
        journal = self.journal
        if journal is not None and not journal.accepting:
            self.vhost.broker.dropped(self.name, message, "store-unavailable")
            return False
        offset = self.end
        if journal is None:
            new_chunk = not self._chunk_times or now > self._chunk_times[-1]
        else:
            # A chunk is what one write of the journal carries, as in RabbitMQ.
            new_chunk = offset == self.first or journal.is_written(self._record_segments[-1],
                                                                    self._record_offsets[-1])
            segment, position = journal.stream_appended(self, offset, message, now)
            self._record_segments.append(segment)
            self._record_offsets.append(position)
        self._memory.append(message)
        self.end = offset + 1
        self._note(offset, len(message.body), now, new_chunk)
        self._stamped(offset, record_time(message.properties, int(now * 1000)))
        self.stats.publish += 1
        if journal is not None and len(self._memory) > journal.queue_budget:
            journal.over_budget(self)
        if self.consumers:
            self.dispatch(now)
        return True

    def append_batch(self, batch: Batch, now: float, *, transaction: int | None = None,
                     marker: bool = False) -> int | None:
        """Append a batch whose first message is at offset ``end``; returns
        that offset, or None if storage refuses writes (as enqueue drops).
        ``transaction``: the batch belongs to that producer's open
        transaction, and readers of committed messages wait for its end.
        ``marker``: it ends a transaction (core/transactions.py), and is
        appended even while storage refuses new messages, as acks are: a
        transaction decided must reach every partition, or a restart
        would take it for an open one."""
        journal = self.journal
        if journal is not None and not journal.accepting and not marker:
            return None
        offset, count = self.end, batch.record_count
        if journal is None:
            new_chunk = not self._chunk_times or now > self._chunk_times[-1]
        else:
            new_chunk = offset == self.first or journal.is_written(self._record_segments[-1],
                                                                    self._record_offsets[-1])
            segment, position = journal.stream_batch_appended(self, offset, batch, now)
            self._record_segments.extend(repeat(segment, count))
            self._record_offsets.extend(repeat(position, count))
        self._memory.extend(batch, count)
        if transaction is not None:
            self.transactions.appended(transaction, offset, count)
        if marker:
            self.written_end()  # settles the markers already on disk
        self.end = offset + count
        self._note(offset, len(batch.data), now, new_chunk)
        self._stamped(offset, batch.max_timestamp)
        self.stats.publish += count
        if journal is not None and len(self._memory) > journal.queue_budget:
            journal.over_budget(self)
        if self.consumers:
            self.dispatch(now)
        return offset

    def _note(self, offset: int, size: int, now: float, new_chunk: bool, *, retain: bool = True) -> None:
        """Chunk, segment and (unless recovering) retention bookkeeping of
        one appended message."""
        if new_chunk:
            self._chunk_offsets.append(offset)
            self._chunk_times.append(now)
        segment = self._segments[-1]
        if segment.bytes >= self.stream_settings.max_segment_size:
            segment = _Segment(offset)
            self._segments.append(segment)
            if retain:
                self._retain(now)
        segment.bytes += size
        segment.last_time = now
        self.bytes += size

    def _stamped(self, offset: int, timestamp: int) -> None:
        times = self._rise_times
        if not times or timestamp > times[-1]:
            self._rise_offsets.append(offset)
            times.append(timestamp)

    def _retain(self, now: float) -> None:
        """Remove the oldest segments that retention no longer keeps; done
        when a segment rolls over, as RabbitMQ does, never the last one."""
        settings, segments = self.stream_settings, self._segments
        total, drop = self.bytes, 0
        while len(segments) - drop > 1:
            head = segments[drop]
            too_big = settings.max_length_bytes is not None and total > settings.max_length_bytes
            too_old = settings.max_age is not None and head.last_time < now - settings.max_age
            if not (too_big or too_old):
                break
            total -= head.bytes
            drop += 1
        if drop:
            for _ in range(drop):
                segments.popleft()
            self.bytes = total
            self._truncate(segments[0].first)

    def _truncate(self, first: int) -> None:
        gone = first - self.first
        journal = self.journal
        if journal is not None:
            journal.stream_truncated(self, first, Counter(self._record_segments[:gone]))
            del self._record_segments[:gone]
            del self._record_offsets[:gone]
        self._memory.drop(max(0, first - self._memory_first))
        self._memory_first = max(self._memory_first, first)
        chunk = bisect.bisect_right(self._chunk_offsets, first) - 1
        del self._chunk_offsets[:chunk]
        del self._chunk_times[:chunk]
        self._chunk_offsets[0] = first
        # The entry a rise names may begin before ``first``: keep its rise.
        rise = bisect.bisect_right(self._rise_offsets, first) - 1
        if rise > 0:
            del self._rise_offsets[:rise]
            del self._rise_times[:rise]
        self.first = first
        self.transactions.truncated(first)
        for reader in self._readers.values():
            if reader.next < first:
                reader.next = first
                reader.buffer.clear()
        for offset in self.group_offsets.values():
            if offset.committed < first:
                offset.truncated(first)
                self._committed(offset)

    def _committed(self, offset: GroupOffset) -> None:
        if self.journal is not None:
            self.journal.group_committed(self, offset.group, offset.committed, offset.metadata)

    def reconfigure(self, arguments: dict[str, Any]) -> None:
        """Take new arguments (retention: Kafka's AlterConfigs), checked as a
        declaration's are (PreconditionFailed) and kept in the stream's
        journalled definition. Retention applies them when the next segment
        rolls over, as it does declared ones."""
        settings = stream_settings(arguments, self.name, self.vhost.name, durable=True, exclusive=False,
                                   auto_delete=False)
        self.arguments = dict(arguments)
        self.stream_settings = settings
        if self.journal is not None:
            self.journal.queue_declared(self)

    # -- reading --------------------------------------------------------

    def start_offset(self, spec: Any, now: float) -> int:
        """Where a consumer with ``x-stream-offset: spec`` starts."""
        if spec is None or spec == NEXT:
            return self.end
        if spec == FIRST:
            return self.first
        if spec == LAST:
            return self._chunk_offsets[-1] if self.end > self.first else self.end
        if isinstance(spec, datetime):
            return self._offset_at(spec.timestamp())
        if isinstance(spec, int) and not isinstance(spec, bool):
            return min(max(spec, self.first), self.end)
        if isinstance(spec, str) and (age := parse_age(spec)) is not None:
            return self._offset_at(now - age)
        # RabbitMQ's channel crashes here (541); a client error is clearer.
        raise PreconditionFailed(
            f"invalid x-stream-offset {spec!r}: expected first, last, next, an offset, a timestamp "
            "or an interval such as 30m, 1h or 7D")

    def appended_at(self, offset: int) -> float:
        """When ``offset`` was appended, as its chunk says (a retained offset)."""
        chunk = bisect.bisect_right(self._chunk_offsets, offset) - 1
        return self._chunk_times[max(chunk, 0)] if self._chunk_times else 0.0

    def entry_stamped_from(self, timestamp: int) -> tuple[int, int]:
        """The first offset of the first entry (batch or message) holding a
        record stamped at or after ``timestamp`` (ms), with that entry's
        newest timestamp; ``(end, -1)`` if none. Within a batch the record
        may come later."""
        rise = bisect.bisect_left(self._rise_times, timestamp)
        if rise == len(self._rise_times):
            return self.end, -1
        return max(self._rise_offsets[rise], self.first), self._rise_times[rise]

    def _offset_at(self, when: float) -> int:
        """The first chunk appended at or after ``when``."""
        chunk = bisect.bisect_left(self._chunk_times, when)
        return self._chunk_offsets[chunk] if chunk < len(self._chunk_offsets) else self.end

    def add_consumer(self, consumer: Consumer, now: float) -> None:
        if consumer.no_ack:
            raise NotImplemented_(f"automatic acknowledgement not supported by stream queues {self._where}")
        if not consumer.prefetch:
            raise PreconditionFailed(f"consumer prefetch count is not set for '{self._where}'")
        start = self.start_offset(consumer.arguments.get(OFFSET_HEADER), now)
        group_name = consumer.arguments.get(GROUP_ARGUMENT)
        if group_name is not None and not isinstance(group_name, str):
            raise PreconditionFailed(f"invalid {GROUP_ARGUMENT} {group_name!r}: expected a string")
        coordinator = self.vhost.coordinator
        if group_name is not None and coordinator is not None and coordinator.has_members(group_name):
            # One group, members of one protocol at a time: two would each
            # read the stream from the same committed offset.
            raise ResourceLocked(f"consumer group '{group_name}' has Kafka members; "
                                 f"it can be joined over AMQP once they have left")
        self._next_reader += 1
        self._readers[consumer] = _Reader(self._next_reader, start)
        self.consumers.append(consumer)
        if group_name is None:
            self.dispatch(now)
            return
        # Where a group new to this stream starts; a known one resumes.
        self.group_offsets.setdefault(group_name, GroupOffset(group_name, start))
        group = self.vhost.groups.get(group_name)
        if group is None:
            group = self.vhost.groups[group_name] = ConsumerGroup(group_name)
        self._group_of[consumer] = group
        group.join(self, consumer)
        group.rebalance(now)

    def remove_consumer(self, consumer: Consumer, now: float) -> None:
        if self._readers.pop(consumer, None) is None:
            return
        self.consumers.remove(consumer)
        group = self._group_of.pop(consumer, None)
        if group is not None:
            offset = self.group_offsets[group.name]
            if offset.active is consumer:
                offset.restart(None, self.first)
            group.leave(self, consumer)
            if group.empty:
                del self.vhost.groups[group.name]
            else:
                group.rebalance(now)

    def activate(self, group_name: str, consumer: Consumer, now: float) -> None:
        """Make ``consumer`` the one that delivers to its group here; it
        starts at the group's committed offset."""
        offset = self.group_offsets[group_name]
        if offset.active is consumer:
            return
        offset.restart(consumer, self.first)
        reader = self._readers[consumer]
        reader.next = offset.committed
        reader.buffer.clear()
        self.dispatch(now)

    def _delivers(self, consumer: Consumer) -> GroupOffset | None | bool:
        """False if the consumer waits (a group member not active here);
        else its group's offset, or None outside a group."""
        group = self._group_of.get(consumer)
        if group is None:
            return None
        offset = self.group_offsets[group.name]
        return offset if offset.active is consumer else False

    @property
    def _where(self) -> str:
        return f"queue '{self.name}' in vhost '{self.vhost.name}'"

    def dispatch(self, now: float) -> None:
        if self._dispatching or self.deleted:
            return
        self._dispatching = True
        try:
            stable = self.transactions.stable(self.end)
            for consumer in list(self.consumers):
                group = self._delivers(consumer)
                if group is False:
                    continue
                reader = self._readers.get(consumer)
                deliver = consumer.channel.deliver
                # What its credit allows, tested once a round, not once a message.
                while reader is not None and (count := min(consumer.credit(), stable - reader.next)) > 0:
                    for _ in range(count):
                        message = self._message_for(reader)
                        if message is None:
                            reader = None  # on its way back from disk
                            break
                        if message is NO_MESSAGE or self.transactions.aborted(reader.next):
                            self._skip(reader, group)
                            continue
                        entry = Entry(message, reader.next)
                        if isinstance(group, GroupOffset):
                            group.delivered(reader.next)
                            self._pending[entry] = group
                        reader.next += 1
                        deliver(consumer, self, entry, now)
                        reader = self._readers.get(consumer)  # a delivery may end it (embedded cancel)
                        if reader is None:
                            break
        finally:
            self._dispatching = False

    def _skip(self, reader: _Reader, group: GroupOffset | None | bool) -> None:
        """Pass an offset that holds no message; a group's committed offset
        moves past it as past an acked one."""
        if isinstance(group, GroupOffset):
            group.delivered(reader.next)
            if group.acked(reader.next):
                self._committed(group)
        reader.next += 1

    def _message_for(self, reader: _Reader) -> Message | None:
        offset = reader.next
        if offset >= self._memory_first:
            reader.buffer.clear()
            kept = self._memory[offset - self._memory_first]
            return kept if isinstance(kept, Message) else kept.message(offset)
        buffer = reader.buffer
        if buffer and reader.buffer_first != offset:
            buffer.clear()  # moved on by retention
        if not buffer:
            reader.buffer_first = offset
        if len(buffer) < READ_BATCH // 2 and reader.buffer_first + len(buffer) < self._memory_first:
            self._ask_read(reader)  # the next batch, while this one is delivered
        if not buffer:
            return None
        reader.buffer_first += 1
        return buffer.popleft()

    def _ask_read(self, reader: _Reader) -> None:
        if not reader.reading and self.journal is not None:
            reader.reading = True
            self.journal.wants_page_in(self)

    # -- readers that take batches (Kafka Fetch) ----------------------

    def entries_from(self, offset: int, max_bytes: int) -> list[tuple[int, Message | Batch]] | None:
        """What the stream keeps from ``offset`` on, from memory: each batch
        whole (one that begins before ``offset`` too) and each message,
        with its first offset, up to ``max_bytes`` (the first entry
        whatever its size). None if ``offset`` is before the memory
        window: ask storage with :meth:`ask_entries`."""
        if offset < self._memory_first:
            return None
        memory, size = self._memory, 0
        entries: list[tuple[int, Message | Batch]] = []
        position, stop = offset - self._memory_first, self.end - self._memory_first
        while position < stop and (size < max_bytes or not entries):
            kept = memory[position]
            if isinstance(kept, Message):
                entries.append((self._memory_first + position, kept))
                size += len(kept.body) + 32
                position += 1
            else:
                base = kept.base_offset
                entries.append((base, kept))
                size += len(kept.data)
                position = base + kept.record_count - self._memory_first
        return entries

    def ask_entries(self, offset: int) -> int:
        """Ask storage for what the stream keeps from ``offset`` on (before
        the memory window); returns the ticket to take it with."""
        self._next_ticket -= 1
        self._batch_reads[self._next_ticket] = _BatchRead(offset)
        if self.journal is not None:
            self.journal.wants_page_in(self)
        return self._next_ticket

    def take_entries(self, ticket: int) -> list[tuple[int, Message | Batch]] | None:
        """What the read of ``ticket`` gave, once it came (then forgotten)."""
        read = self._batch_reads.get(ticket)
        if read is None or read.entries is None:
            return None
        del self._batch_reads[ticket]
        return read.entries

    def forget_entries(self, ticket: int) -> None:
        self._batch_reads.pop(ticket, None)

    def _batch_read_refs(self, read: _BatchRead) -> list[PagedRef]:
        """One ref per record from ``read.offset`` on, up to
        BATCH_READ_RECORDS records or BATCH_READ_OFFSETS offsets, before the
        memory window."""
        base, segments, positions = self.first, self._record_segments, self._record_offsets
        start = max(read.offset, base)
        stop = min(start + BATCH_READ_OFFSETS, self._memory_first)
        refs: list[PagedRef] = []
        last = (-1, -1)
        for i in range(start, stop):
            where = (segments[i - base], positions[i - base])
            if where != last:
                if len(refs) == BATCH_READ_RECORDS:
                    break
                refs.append((where[0], where[1], i, WHOLE))
                last = where
        return refs

    # -- storage: reads and the memory window --------------------------

    def page_in_requests(self, low_water: int, batch: int) -> list[tuple[int, list[PagedRef]]]:
        """What readers behind the memory window need from disk: one batch
        each, keyed by reader."""
        requests = []
        for ticket, read in self._batch_reads.items():
            if read.asked:
                read.asked = False
                requests.append((ticket, self._batch_read_refs(read)))
        for reader in self._readers.values():
            if not reader.reading:
                continue
            start = max(reader.buffer_first + len(reader.buffer), self.first)
            stop = min(start + READ_BATCH, self._memory_first)
            if start >= stop:
                reader.reading = False
                continue
            base = self.first
            requests.append((reader.key, [
                (self._record_segments[i - base], self._record_offsets[i - base], i, 0) for i in range(start, stop)
            ]))
        return requests

    def paged_in(self, priority: int, refs: list[PagedRef], messages: list[Message], now: float) -> None:
        read = self._batch_reads.get(priority)
        if read is not None:
            # WHOLE refs: each entry as kept, at the first offset of its ref.
            entries: list[tuple[int, Message | Batch]] = [(ref[2], entry) for ref, entry in zip(refs, messages)]
            read.entries = [(entry.base_offset if not isinstance(entry, Message) else offset, entry)
                            for offset, entry in entries]
            return
        reader = self._reader(priority)
        if reader is None:
            return
        reader.reading = False
        if refs and refs[0][2] == reader.buffer_first + len(reader.buffer):
            reader.buffer.extend(messages)
        self.dispatch(now)

    def page_in_failed(self, priority: int, refs: list[PagedRef], error: str) -> None:
        """A reader's batch could not be read: its consumer is cancelled
        (the client hears basic.cancel), the stream stays as it is. A read
        for a reader that takes batches comes back empty."""
        read = self._batch_reads.get(priority)
        if read is not None:
            read.entries = []
            return
        for consumer, reader in list(self._readers.items()):
            if reader.key == priority:
                self.remove_consumer(consumer, 0.0)
                consumer.channel.server_cancel(consumer)

    def _reader(self, key: int) -> _Reader | None:
        return next((reader for reader in self._readers.values() if reader.key == key), None)

    @property
    def over_budget(self) -> bool:
        journal = self.journal
        return journal is not None and len(self._memory) > journal.queue_budget

    def written_end(self) -> int:
        """The offset after the last message whose record is on disk (the
        end, without storage): Kafka's high watermark. Kafka readers are
        served no further, so that a crash never takes back a record one
        was sent, which would leave its position past the end."""
        journal = self.journal
        if journal is None:
            self.transactions.written(self.end)  # nothing waits for a disk
            return self.end
        # Records are written in offset order, and what left memory is on disk.
        base, segments, positions = self._memory_first - self.first, self._record_segments, self._record_offsets
        written = self._memory_first + bisect.bisect_left(
            range(self.end - self._memory_first), True,
            key=lambda n: not journal.is_written(segments[base + n], positions[base + n]))
        self.transactions.written(written)
        return written

    def page_out(self) -> int:
        """Let the oldest messages in memory go once their records are on
        disk; readers read them back from there."""
        journal = self.journal
        if journal is None:
            return 0
        memory = self._memory
        over = len(memory) - journal.queue_budget
        if over <= 0:
            return 0
        # Records are written in offset order: bisect for the first of the
        # ``over`` oldest whose record is not written yet (one test per
        # message was 4% of a stream publish).
        base, segments, positions = self._memory_first - self.first, self._record_segments, self._record_offsets
        gone = bisect.bisect_left(range(over), True, key=lambda n: not journal.is_written(segments[base + n],
                                                                                          positions[base + n]))
        if gone:
            kept = memory[gone - 1]
            if not isinstance(kept, Message):  # a batch goes whole: its offsets share one record
                gone = kept.base_offset + kept.record_count - self._memory_first
        memory.drop(gone)
        self._memory_first += gone
        return gone

    def commit_group(self, name: str, committed: int, metadata: str = "") -> int:
        """A group's offset set from outside (Kafka's OffsetCommit, with its
        metadata string), while no member of it consumes here over AMQP; an
        offset outside the stream is kept as the nearest one it holds, where
        the group's next reader starts. Returns the offset kept."""
        committed = min(max(committed, self.first), self.end)
        offset = self.group_offsets.get(name)
        if offset is None:
            offset = self.group_offsets[name] = GroupOffset(name, committed)
        offset.committed = committed
        offset.metadata = metadata
        offset.restart(None, self.first)
        self._committed(offset)
        return committed

    def forget_group(self, name: str) -> bool:
        """Delete a group's offset here (Kafka's DeleteGroups, OffsetDelete)
        while none of its members consumes here; False if it had none."""
        if self.group_offsets.pop(name, None) is None:
            return False
        if self.journal is not None:
            self.journal.group_forgotten(self, name)
        return True

    def restore_group(self, name: str, committed: int, metadata: str = "") -> None:
        """A group's committed offset (and its commit's metadata), recovered
        from the journal."""
        self.group_offsets[name] = GroupOffset(name, max(committed, self.first), metadata=metadata)

    def restore_log(self, offsets: array[int], segments: array[int], positions: array[int], sizes: array[int],
                    times: array[float], end: int, batches: Sequence[tuple[int, int, int]] = ()) -> None:
        """Recovered from the journal: the retained messages (offset order),
        all on disk; ``end`` is the next offset to hand out. ``batches``:
        the Kafka batches among them, (first offset, record count, newest
        record timestamp in ms) in offset order; a message counts by the
        time it was appended."""
        self.end = max(end, offsets[-1] + 1 if offsets else 0)
        self.first = offsets[0] if offsets else self.end
        self._memory_first = self.end
        self._record_segments = array("I", segments)
        self._record_offsets = array("I", positions)
        self._segments = deque([_Segment(self.first)])
        chunk_times, batch = self._chunk_times, 0
        for offset, size, when in zip(offsets, sizes, times):
            # Which write carried each message is not recorded: after a
            # restart, a chunk is what was appended within a millisecond.
            self._note(offset, size, when, not chunk_times or when >= chunk_times[-1] + RECOVERED_CHUNK, retain=False)
            while batch < len(batches) and batches[batch][0] + batches[batch][1] <= offset:
                batch += 1
            if batch == len(batches) or offset < batches[batch][0]:
                self._stamped(offset, int(when * 1000))
            elif offset == batches[batch][0] or offset == self.first:
                self._stamped(batches[batch][0], batches[batch][2])

    # -- what streams refuse or ignore ---------------------------------

    def fetch(self, now: float) -> Entry | None:
        raise NotImplemented_(f"basic.get not supported by stream queues {self._where}")

    def purge(self) -> int:
        raise NotImplemented_(f"queue.purge not supported by stream queues {self._where}")

    def lend(self, entry: Entry) -> None:
        entry.state = UNACKED
        self.unacked += 1

    def settle(self, entry: Entry) -> None:
        """An ack returns credit (the message stays in the stream) and
        moves a group's committed offset on."""
        self._release(entry)
        offset = self._pending.pop(entry, None)
        if offset is not None and offset.acked(entry.seq):
            offset.metadata = ""
            self._committed(offset)

    def _release(self, entry: Entry) -> None:
        if entry.state == UNACKED:
            self.unacked -= 1
        entry.state = GONE

    def give_back(self, entry: Entry, requeue: bool, now: float, *, failed: bool = True) -> None:
        """A closed channel's unacked delivery: nothing to requeue, and for
        a group not done, so its committed offset stays before it."""
        self._release(entry)
        self._pending.pop(entry, None)

    def unlend(self, entry: Entry, now: float) -> None:
        self.give_back(entry, True, now)

    def close(self) -> int:
        self.deleted = True
        self.timer_at = None
        if self.journal is not None:
            self.journal.stream_truncated(self, self.end, Counter(self._record_segments))
        for group in set(self._group_of.values()):
            group.drop_stream(self)
            if group.empty:
                self.vhost.groups.pop(group.name, None)
            else:
                group.rebalance(self._last_used)
        if self.deduplicator is not None:
            self.deduplicator.forget_all()
        self._memory.clear()
        self._readers.clear()
        self._group_of.clear()
        self._pending.clear()
        return 0

