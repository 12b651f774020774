"""Fetch (key 1, v4-v11): record batches from each partition's stream.

A batch a producer sent over Kafka is served as it is stored: its bytes,
not re-encoded (a batch that begins before the offset asked for is sent
whole; clients skip the records before their position, as they do with
Kafka's). Messages published over AMQP are encoded as a batch per run
(mapping.py says how a message becomes a record). Readers in the memory
window are served at once; behind it, the stream reads whole records back
from disk in a worker thread (``Stream.ask_entries``) and the response
waits for them.

Limits as Kafka's (KIP-74): ``partition_max_bytes`` per partition and
``max_bytes`` in all, except that the first batch goes whatever its size,
so a consumer never sticks behind a large one. Long poll: with less than
``min_bytes`` to send, the response waits until there is, or
``max_wait`` has passed (the Pending's deadline), and looks again
whenever storage moves on (a write synced: new records; a read came back).

High watermark: readers are served only what is on disk
(``Stream.written_end``), as Kafka serves only what its replicas have:
a record sent to a reader and then taken back by a crash would leave the
reader's position past the partition's end, and the client would reset
(``auto.offset.reset``) or, once new records pass it, skip them.

Isolation: a ``read_committed`` Fetch (isolation level 1) is served up
to the partition's last stable offset and no further (core/visibility.py),
with the aborted transactions among what it sends, which the client
drops; ``read_uncommitted`` is served to the end. Both hear the last
stable offset.

Fetch sessions (KIP-227) are not kept: the response's session id is 0, so
clients send full requests, as they do with a broker that has none.
"""

from __future__ import annotations

import struct
from typing import Any

import attrs

from ..core.message import Message
from ..core.stream import Batch, Stream
from . import records, topics
from .apis import Api, Pending
from .mapping import message_record
from .protocol import ErrorCode, Request
from .session import Session

FETCH = 1
#: Messages published over AMQP encoded into one batch at most.
RUN = 500

_PARTITION_HEAD = struct.Struct(">ihqqq")  # index, error, high watermark, last stable, log start
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_ABORTED = struct.Struct(">qq")  # producer id, first offset
READ_COMMITTED = 1


@attrs.define(slots=True, eq=False)
class _Partition:
    topic: str
    index: int
    offset: int
    max_bytes: int
    stream: Stream | None = None
    error: int = 0
    #: The read from disk under way (Stream.ask_entries).
    ticket: int | None = None
    #: What it sends; from memory, looked at again on each poll.
    data: list[bytes] = attrs.Factory(list)
    size: int = 0
    from_disk: bool = False
    #: Where what it sends ends (the offset after its last entry).
    upper: int = 0


class _Fetch:
    """One Fetch request: what each partition has for it, looked at again
    until it is enough or time is up."""

    def __init__(self, version: int, partitions: list[_Partition], max_bytes: int, min_bytes: int,
                 committed: bool) -> None:
        self.version = version
        self.committed = committed
        self.partitions = partitions
        self.max_bytes = max_bytes
        self.min_bytes = min_bytes

    @property
    def size(self) -> int:
        return sum(partition.size for partition in self.partitions)

    @property
    def reading(self) -> bool:
        return any(partition.ticket is not None for partition in self.partitions)

    @property
    def failed(self) -> bool:
        """A partition has an error: Kafka answers at once."""
        return any(partition.error for partition in self.partitions)

    def gather(self) -> None:
        """Fill the partitions, those served from memory again (more may
        have come since the last look)."""
        for partition in self.partitions:
            if not partition.from_disk:
                partition.data.clear()
                partition.size = 0
        left = self.max_bytes - self.size
        for partition in self.partitions:
            stream = partition.stream
            if stream is None or partition.error or partition.from_disk:
                continue
            if not stream.first <= partition.offset <= stream.end:
                partition.error = ErrorCode.offset_out_of_range.value
                continue
            bound = self._bound(stream)
            if partition.offset >= bound or (left <= 0 and self.size):
                continue
            limit = min(partition.max_bytes, left)
            if partition.ticket is not None:
                entries = stream.take_entries(partition.ticket)
                if entries is None:
                    continue  # still on its way
                partition.ticket = None
                partition.from_disk = True
            else:
                entries = stream.entries_from(partition.offset, limit)
                if entries is None:
                    partition.ticket = stream.ask_entries(partition.offset)
                    continue
            _fill(partition, stream, entries, limit, bound)
            left -= partition.size

    def _bound(self, stream: Stream) -> int:
        """Where reading stops: the high watermark (what is on disk), and
        the last stable offset below it for read_committed."""
        written = stream.written_end()
        return stream.transactions.stable(written) if self.committed else written

    def cancel(self) -> None:
        for partition in self.partitions:
            if partition.ticket is not None and partition.stream is not None:
                partition.stream.forget_entries(partition.ticket)
                partition.ticket = None

    def encode(self) -> bytes:
        """The response body, v4-v11, by hand: the batches' bytes go in as
        they are (kio's writer would copy each field through Python)."""
        version = self.version
        out = [_I32.pack(0)]  # throttle time
        if version >= 7:
            out.append(struct.pack(">hi", 0, 0))  # error, session id 0: no session
        by_topic: dict[str, list[_Partition]] = {}
        for partition in self.partitions:
            by_topic.setdefault(partition.topic, []).append(partition)
        out.append(_I32.pack(len(by_topic)))
        for name, partitions in by_topic.items():
            encoded = name.encode()
            out.append(_I16.pack(len(encoded)) + encoded + _I32.pack(len(partitions)))
            for partition in partitions:
                stream = partition.stream
                end, stable, first = -1, -1, -1
                aborted = []
                if stream is not None:
                    end = stream.written_end()
                    stable, first = stream.transactions.stable(end), stream.first
                    if self.committed and partition.size:
                        aborted = stream.transactions.aborted_between(partition.offset, partition.upper)
                head = _PARTITION_HEAD.pack(partition.index, partition.error, end, stable, first)
                out.append(head if version >= 5 else head[:-8])
                out.append(_I32.pack(len(aborted)))
                out.extend(_ABORTED.pack(producer_id, first_offset) for producer_id, first_offset, _ in aborted)
                if version >= 11:
                    out.append(_I32.pack(-1))  # preferred read replica: this one
                out.append(_I32.pack(partition.size))
                out.extend(partition.data)
        return b"".join(out)


def _fill(partition: _Partition, stream: Stream, entries: list[tuple[int, Message | Batch]], limit: int,
          bound: int) -> None:
    """Encode ``entries`` that begin before ``bound`` into ``partition``
    up to ``limit`` bytes, the first batch whatever its size."""
    run: list[tuple[int, Message]] = []

    def add(data: bytes, upper: int) -> bool:
        if partition.size and partition.size + len(data) > limit:
            return False
        partition.data.append(data)
        partition.size += len(data)
        partition.upper = upper
        return True

    def flush() -> bool:
        if not run:
            return True
        data = records.encode(run[0][0], [message_record(offset, message, _appended_ms(stream, offset))
                                          for offset, message in run])
        upper = run[-1][0] + 1
        run.clear()
        return add(data, upper)

    for offset, entry in entries:
        if offset >= bound:
            break
        after = offset + (1 if isinstance(entry, Message) else entry.record_count)
        if after <= partition.offset:
            continue  # read back from before the offset asked for
        if isinstance(entry, Message):
            run.append((offset, entry))
            if len(run) < RUN:
                continue
            if not flush():
                return
            continue
        if not flush() or not add(entry.data, after):
            return
    flush()


def _appended_ms(stream: Stream, offset: int) -> int:
    """When the stream appended ``offset`` (its chunk's time), in ms: the
    timestamp of a message that carries none."""
    return int(stream.appended_at(offset) * 1000)


def fetch(session: Session, request: Request, now: float) -> Any:
    body = request.body
    vhost = session.vhost
    partitions = []
    for wanted in body.topics:
        name = wanted.topic
        topic = topics.find(vhost, name)
        allowed = topic is not None and session.allowed("read", name)
        for asked in wanted.partitions:
            partition = _Partition(name, asked.partition, asked.fetch_offset, asked.partition_max_bytes)
            if topic is None or not 0 <= asked.partition < len(topic.partitions):
                partition.error = ErrorCode.unknown_topic_or_partition.value
            elif not allowed:
                partition.error = ErrorCode.topic_authorization_failed.value
            else:
                partition.stream = topic.partitions[asked.partition]
            partitions.append(partition)
    state = _Fetch(request.api_version, partitions, body.max_bytes, body.min_bytes,
                   body.isolation_level == READ_COMMITTED)
    state.gather()
    wait = body.max_wait.total_seconds()
    if state.failed or not state.reading and (state.size >= state.min_bytes or wait <= 0):
        state.cancel()
        return state.encode()
    pending = Pending(deadline=now + wait)

    def poll(now: float) -> None:
        state.gather()
        if state.failed or not state.reading and state.size >= state.min_bytes:
            state.cancel()
            pending.complete(state.encode())

    def timed_out(now: float) -> bytes:
        state.gather()
        state.cancel()
        return state.encode()

    pending.poll = poll
    pending.on_deadline = timed_out
    pending.on_cancel = state.cancel
    return pending


APIS = [Api(FETCH, 4, 11, fetch)]
