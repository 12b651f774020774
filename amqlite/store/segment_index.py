"""Index files of sealed segments: what replaying a segment would find,
stored so that start-up loads it in a few C-speed calls instead of a pass of
Python per record.

Once a segment is sealed (complete on disk, never appended to again), a
background task reads it back and writes ``<segment>.idx`` beside it:

- per queue, the entries its PUBLISH and ENQUEUE records make, as packed
  columns (seq, msg id, offset, expiry, priority, size, flags) that load
  with ``array.frombytes``;
- the ENQUEUE records (queue, seq, msg id) and where in the segment their
  PUBLISH lies, when it lies there;
- the last PUBLISH locations, for ENQUEUE records in later segments;
- every other record verbatim, in log order.

An index is a cache and never the only copy of anything. Start-up uses it
only if its own checksum holds and it names the segment, the segment's size
and the CRC-32 of the segment's bytes as they are now, so a stale, torn,
foreign-endian or damaged index, or a segment changed since, falls back to
replaying the segment record by record. A segment with damaged records gets
no index at all, so every start-up reports the damage.
"""

from __future__ import annotations

import bisect
import mmap
import operator
import struct
import sys
import zlib
from array import array
from itertools import repeat
from typing import Callable

import attrs

from ..amqp.values import decode_name, encode_shortstr
from . import records
from .segments import HEAD_SIZE, RECORD_HEAD, UNIT_SPAN

#: Entry flags, as recovery keeps them per entry: removed; delivered at some
#: point (redelivered after a restart); out with a consumer when the broker
#: stopped; a copy whose body another queue's PUBLISH holds (ENQUEUE); moved
#: to a new seq; with an expiry. An entry with no flag can come back paged.
REMOVED, DELIVERED, OUT, COPY, MOVED, EXPIRES = 1, 2, 4, 8, 16, 32
#: What each kind of record is to start-up (records.py has the layouts),
#: in one place for the replay, the index build and the index load:
#: ENTRY makes a queue entry (:func:`entry` reads it; an index keeps these
#: as columns); HELD is a held delayed message (:meth:`Holds.add`; columns
#: too); SKIPPED is never recovered; every other kind is APPLIED in log
#: order by recovery's ``_Replay._record``, and an index keeps the record
#: verbatim, or the first KEPT[kind] bytes of its payload. A new kind that
#: is applied in order needs its branch in ``_record`` and nothing here.
#: UNIT opens an atomic unit, the records in the next bytes it names: the
#: replay takes them only if all are intact (``SegmentLog.records``), an
#: index only a segment whose units are all whole, and neither keeps the
#: record itself.
ENTRY, HELD, SKIPPED, APPLIED, UNIT = range(5)
ROLES = {records.PUBLISH: ENTRY, records.ENQUEUE: ENTRY, records.HOLD: HELD, records.SPILL: SKIPPED,
         records.UNIT: UNIT}
KEPT = {records.BATCH: records.BATCH_KEPT}


def entry(kind: int, data: bytes | mmap.mmap, at: int) -> tuple[int, int, int, float, int, int, int]:
    """The queue entry of the PUBLISH or ENQUEUE record whose payload starts
    at ``at``: (msg id, queue id, seq, expiry (NaN: none), priority, body
    size, flags). An ENQUEUE is a COPY: its body is its PUBLISH's."""
    if kind == records.PUBLISH:
        return (*records.PUBLISH_HEAD.unpack_from(data, at), 0)
    return (*records.ENQUEUE_HEAD.unpack_from(data, at), 0, 0, COPY)


#: How many recent PUBLISH locations (by msg id) replay remembers for the
#: ENQUEUE records that follow them.
RECENT = 4096

_MAGIC = b"AMQLIDX2"
_HEADER = struct.Struct(">8sBQQII")  # magic, little-endian?, segment, segment size, segment CRC, body CRC
_COUNTS = struct.Struct(">QQIIIII")  # records, highest msg id, queues, copies, recent, held, their exchanges
_QUEUE = struct.Struct(">QI")  # queue id, rows
_OTHER = struct.Struct(">QBI")  # offset, kind, payload length
_LITTLE = sys.byteorder == "little"
#: ENQUEUE whose PUBLISH is in an earlier segment.
ELSEWHERE = 2**64 - 1


class Rows:
    """Queue entries as columns, in publication order, with the segment of
    each (an index file leaves that column out: it is the file's segment)."""

    __slots__ = ("segments", "seqs", "msg_ids", "offsets", "expires", "priorities", "sizes", "flags")

    def __init__(self) -> None:
        self.segments: array[int] = array("I")
        self.seqs: array[int] = array("Q")
        self.msg_ids: array[int] = array("Q")
        self.offsets: array[int] = array("Q")
        self.expires: array[float] = array("d")
        self.priorities: array[int] = array("B")
        self.sizes: array[int] = array("I")
        self.flags: array[int] = array("B")

    def add(self, seq: int, msg_id: int, segment: int, offset: int, expires: float, priority: int, size: int,
            flags: int) -> None:
        self.seqs.append(seq)
        self.msg_ids.append(msg_id)
        self.segments.append(segment)
        self.offsets.append(offset)
        self.expires.append(expires)
        self.priorities.append(priority)
        self.sizes.append(size)
        self.flags.append(flags if expires != expires else flags | EXPIRES)  # NaN: no expiry

    def extend(self, other: Rows) -> None:
        self.segments.extend(other.segments)
        for mine, theirs in zip(self.columns(), other.columns()):
            mine.extend(theirs)  # type: ignore[arg-type]

    def columns(self) -> list[array[int] | array[float]]:
        """The columns an index file holds, in its order."""
        return [self.seqs, self.msg_ids, self.offsets, self.expires, self.priorities, self.sizes, self.flags]


class Holds:
    """HOLD records as columns: millions may be held, and no message is
    read (message id, due time, where the record is, which exchange)."""

    def __init__(self) -> None:
        self.ids: array[int] = array("Q")
        self.dues: array[float] = array("d")
        self.segments: array[int] = array("I")
        self.offsets: array[int] = array("I")
        #: Index of each record's exchange in ``exchanges``: (vhost, name).
        self.owners: array[int] = array("I")
        self.exchanges: dict[tuple[str, str], int] = {}
        self._owners: dict[bytes, int] = {}  # encoded names -> index in exchanges

    def add_all(self, data: bytes | mmap.mmap, offsets: array[int], segment: int) -> None:
        """The HOLD records at ``offsets`` (in log order) of ``segment``,
        whose bytes are ``data``. A segment holds hundreds of thousands:
        their heads are unpacked by one C-speed map, and their exchange,
        usually the same for all, is checked by another (one Python pass
        per record cost the replay 1.4 us each)."""
        if not offsets:
            return
        heads = list(map(records.HOLD_HEAD.unpack_from, repeat(data), map(operator.add, offsets, repeat(HEAD_SIZE))))
        self.ids.extend(map(operator.itemgetter(0), heads))
        self.dues.extend(map(operator.itemgetter(1), heads))
        self.segments.extend(array("I", [segment]) * len(offsets))
        self.offsets.extend(offsets)
        # The names as they are on disk: decoded once per exchange, not per record.
        names = array("Q", map(operator.add, offsets, repeat(HEAD_SIZE + records.HOLD_HEAD.size)))
        first = self._names(data, names[0])
        if all(map(operator.eq, map(data.find, repeat(first), names, map(operator.add, names, repeat(len(first)))),
                   names)):
            self.owners.extend(array("I", [self._owner(first)]) * len(offsets))
        else:
            self.owners.extend(self._owner(self._names(data, at)) for at in names)

    @staticmethod
    def _names(data: bytes | mmap.mmap, at: int) -> bytes:
        """The encoded vhost and exchange names at ``at``."""
        end = at + 1 + data[at]
        return data[at : end + 1 + data[end]]

    def _owner(self, names: bytes) -> int:
        owner = self._owners.get(names)
        if owner is None:
            vhost, at = decode_name(names, 0)
            exchange, _ = decode_name(names, at)
            owner = self._owners[names] = self.exchanges.setdefault((vhost, exchange), len(self.exchanges))
        return owner


@attrs.define
class SegmentIndex:
    segment: int
    records: int = 0
    max_msg_id: int = 0
    #: The entries per queue id (built), or how many there were (decoded).
    queues: dict[int, Rows] = attrs.Factory(dict)
    entries: int = 0
    #: ENQUEUE records in log order: (queue id, seq, msg id, offset of the
    #: PUBLISH in this segment or ELSEWHERE).
    copies: list[tuple[int, int, int, int]] = attrs.Factory(list)
    #: The last RECENT PUBLISH records: (msg id, offset).
    recent: list[tuple[int, int]] = attrs.Factory(list)
    #: The HOLD records (built); how many were appended (decoded).
    holds: Holds = attrs.Factory(Holds)
    held: int = 0
    #: Every other record but spills: (offset, kind, payload).
    others: list[tuple[int, int, bytes]] = attrs.Factory(list)


def build(segment: int, data: bytes | mmap.mmap) -> SegmentIndex | None:
    """The index of a sealed segment's bytes; None if any record is damaged.
    (A background task's work, but a pass of Python per record all the
    same: names are bound to locals, and no payload is copied.)"""
    index = SegmentIndex(segment)
    # PUBLISH records in log order; their msg ids only grow, so an ENQUEUE
    # finds its PUBLISH in this segment by bisection.
    ids, offsets = array("Q"), array("Q")
    holds = array("I")  # offsets of HOLD records
    roles, publish = ROLES.get, records.PUBLISH
    unpack_head, crc32, view, size = RECORD_HEAD.unpack_from, zlib.crc32, memoryview(data), len(data)
    rows, rows_of = None, -1
    offset = count = unit_stop = 0
    while offset < size:
        if size - offset < HEAD_SIZE:
            return None
        length, crc, kind = unpack_head(data, offset)
        end = offset + 8 + length
        if not length or end > size or crc32(view[offset + 8 : end]) != crc or offset < unit_stop < end:
            return None
        role = roles(kind, APPLIED)
        if role == ENTRY:
            msg_id, queue_id, seq, expires, priority, body_size, flags = entry(kind, data, offset + HEAD_SIZE)
            if queue_id != rows_of:
                rows, rows_of = _rows(index, queue_id), queue_id
            assert rows is not None
            rows.add(seq, msg_id, segment, offset, expires, priority, body_size, flags)
            if kind == publish:
                ids.append(msg_id)
                offsets.append(offset)
            else:
                at = bisect.bisect_left(ids, msg_id)
                body = offsets[at] if at < len(ids) and ids[at] == msg_id else ELSEWHERE
                index.copies.append((queue_id, seq, msg_id, body))
        elif role == HELD:
            holds.append(offset)
        elif role == APPLIED:
            kept = KEPT.get(kind)
            index.others.append((offset, kind, data[offset + HEAD_SIZE : end if kept is None
                                                    else offset + HEAD_SIZE + kept]))
        elif role == UNIT:
            unit_stop = end + UNIT_SPAN.unpack_from(data, offset + HEAD_SIZE)[0]
        count += 1
        offset = end
    if unit_stop > size:
        return None  # a unit not whole: only a replay leaves it out
    index.holds.add_all(data, holds, segment)
    index.records = count
    index.max_msg_id = max(ids, default=0)
    index.recent = list(zip(ids[-RECENT:], offsets[-RECENT:]))
    return index


def _rows(index: SegmentIndex, queue_id: int) -> Rows:
    rows = index.queues.get(queue_id)
    if rows is None:
        rows = index.queues[queue_id] = Rows()
    return rows


def encode(index: SegmentIndex, data: bytes | mmap.mmap) -> bytes:
    """The index file for ``index``, bound to the segment bytes ``data``."""
    holds = index.holds
    parts = [_COUNTS.pack(index.records, index.max_msg_id, len(index.queues), len(index.copies), len(index.recent),
                          len(holds.ids), len(holds.exchanges))]
    for queue_id, rows in index.queues.items():
        parts.append(_QUEUE.pack(queue_id, len(rows.seqs)))
        parts.extend(column.tobytes() for column in rows.columns())
    parts.extend(array("Q", column).tobytes() for column in zip(*index.copies))
    parts.extend(array("Q", column).tobytes() for column in zip(*index.recent))
    parts.extend(encode_shortstr(vhost) + encode_shortstr(exchange) for vhost, exchange in holds.exchanges)
    parts.extend(column.tobytes() for column in (holds.ids, holds.dues, holds.offsets, holds.owners))
    for offset, kind, payload in index.others:
        parts.append(_OTHER.pack(offset, kind, len(payload)))
        parts.append(payload)
    body = b"".join(parts)
    return _HEADER.pack(_MAGIC, _LITTLE, index.segment, len(data), zlib.crc32(data), zlib.crc32(body)) + body


def decode(blob: bytes | None, segment: int, size: int, checksum: Callable[[], int],
           rows: Callable[[int], Rows], holds: Holds) -> SegmentIndex | None:
    """The index in ``blob`` if it is intact and describes ``segment`` as it
    is now, ``size`` bytes whose CRC-32 ``checksum()`` computes (last: it
    reads the whole segment); None otherwise. The entries are appended
    straight to ``rows(queue id)`` (no copy in between: start-up loads
    millions), and the index returned counts them in ``entries``."""
    if blob is None or len(blob) < _HEADER.size:
        return None
    magic, little, indexed, indexed_size, data_crc, body_crc = _HEADER.unpack_from(blob)
    body = memoryview(blob)[_HEADER.size :]
    if (magic != _MAGIC or little != _LITTLE or indexed != segment or indexed_size != size
            or zlib.crc32(body) != body_crc or checksum() != data_crc):
        return None
    count, max_msg_id, queues, copies, recent, held, exchanges = _COUNTS.unpack_from(body)
    index = SegmentIndex(segment, count, max_msg_id)
    at = _COUNTS.size
    for _ in range(queues):
        queue_id, length = _QUEUE.unpack_from(body, at)
        at += _QUEUE.size
        destination = rows(queue_id)
        destination.segments.extend(array("I", [segment]) * length)
        for column in destination.columns():
            end = at + length * column.itemsize
            column.frombytes(body[at:end])
            at = end
        index.entries += length

    def numbers(length: int) -> array[int]:
        nonlocal at
        values = array("Q")
        values.frombytes(body[at : at + 8 * length])
        at += 8 * length
        return values

    if copies:
        index.copies = list(zip(*[numbers(copies) for _ in range(4)]))
    if recent:
        index.recent = list(zip(numbers(recent), numbers(recent)))
    if held:
        # Appended straight to ``holds`` as the queues' rows are; each
        # exchange named here by its number there.
        owners = []
        for _ in range(exchanges):
            vhost, at = decode_name(body, at)
            exchange, at = decode_name(body, at)
            owners.append(holds.exchanges.setdefault((vhost, exchange), len(holds.exchanges)))
        for column in (holds.ids, holds.dues, holds.offsets):
            column.frombytes(body[at : at + held * column.itemsize])
            at += held * column.itemsize
        holds.segments.extend(array("I", [segment]) * held)
        local = array("I")
        local.frombytes(body[at : at + held * local.itemsize])
        at += held * local.itemsize
        if len(owners) == 1:
            holds.owners.extend(array("I", owners) * held)
        else:
            holds.owners.extend(array("I", [owners[owner] for owner in local]))
        index.held = held
    while at < len(body):
        offset, kind, length = _OTHER.unpack_from(body, at)
        at += _OTHER.size
        index.others.append((offset, kind, bytes(body[at : at + length])))
        at += length
    return index
