"""The messages a delayed-message exchange holds until they are due.

Millions may be held for days, so they cannot all stay in memory. The near
future is a heap of messages in memory; the far future is in buckets of one
minute of due times. A held message journalled in a HOLD record and already
written leaves memory once it is in a far bucket: the bucket keeps one
24-byte record for it (due time, message id, and where its HOLD record
is), packed in one bytearray per bucket. A bucket comes back PRELOAD
seconds before it starts: its messages are read back from disk (in a
worker thread, through the journal's page-in path) and join the heap, so
they fire on time.

Records due more than an hour or so ahead wait in later buckets of one
hour, split into far buckets an hour before they start. Held for up to 30
days, messages are then in about 720 later buckets rather than 43,200 far
ones, each with its own objects and a buffer that grows as its records
come (about 700 B of Python objects a bucket, however few it holds).

``horizon`` separates the two: a message due before it goes to the heap,
one due at or after it to a bucket. It starts at infinity (everything in
memory) and comes down when the heap outgrows its budget, to the first
bucket that would not come back at once. Time decides, not the heap's own
due times: a million messages all delayed by one hour share one or two
buckets, an hour away, and all belong on disk (they stayed in the heap,
1,090 B each).

Scheduled messages (docs/concepts.md): every journalled held message has an
id, its journal message id, and can be listed, cancelled or rescheduled.
The ids grow as messages are held, so they are kept in columns in id order
(20 B a message), found by bisection. A cancel or reschedule does not look
for the message's record in its bucket: the columns say the id's current
due time (NaN once gone), and a record whose due time differs from it is
stale and skipped when it reaches the heap. A reschedule files a new record.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import itertools
import math
import operator
import struct
import sys
from array import array
from itertools import islice, repeat
from typing import Callable, Iterator

from .message import Message
from .ready import PagedRef
from .sortedpairs import SortedPairs

#: Seconds of due times per far bucket.
BUCKET = 60.0
#: Seconds before its start that a far bucket is brought back.
PRELOAD = 5.0
#: Seconds of due times per later bucket, and how long before it starts it
#: is split into far buckets.
LATER = 3600.0
#: Records a timer step splits at most (a few ms). A later bucket of
#: 1,000,000 records took 0.8 s to split at once, the event loop stopped.
SPLIT_STEP = 5_000
#: A held message on disk only: due time, message id, HOLD record segment and offset.
_RECORD = struct.Struct("<dQII")
#: Records a start-up restore packs at a time: bounds the buffer it packs
#: them in (1.5 MB), not one per message but not 240 MB for 10M either.
RESTORE_STEP = 65_536

#: A held message in memory: (due, id, order held, message, HOLD record
#: segment, offset); segment 0 when not journalled (it never leaves
#: memory). Order tells apart copies of one message left by reschedules.
_InMemory = tuple[float, int, int, Message, int, int]


def name_key(message_id: str) -> int:
    """The 64-bit key of a held message's ``message_id`` in the index of
    names (and in its NAMED record): stable across restarts, as Python's
    own hash of a string is not."""
    return int.from_bytes(hashlib.blake2b(message_id.encode("utf-8", "surrogatepass"), digest_size=8).digest(),
                          "little")


def _pack(dues: array[float], ids: array[int], segments: array[int], offsets: array[int]) -> bytearray:
    """The columns as packed _RECORDs, one byte of each field at a time by
    strided slice assignment (C loops, no call per record)."""
    packed = bytearray(_RECORD.size * len(ids))
    at = 0
    for column in (dues, ids, segments, offsets):
        if sys.byteorder == "big":
            column = array(column.typecode, column)
            column.byteswap()
        data, width = column.tobytes(), column.itemsize
        for byte in range(width):
            packed[at + byte :: _RECORD.size] = data[byte::width]
        at += width
    return packed


def _dues(packed: bytes | bytearray) -> array[float]:
    """The due times of packed _RECORDs, by strided slices (no call per
    record: start-up splits an hour of a million at once)."""
    data = bytearray(8 * (len(packed) // _RECORD.size))
    for byte in range(8):
        data[byte::8] = packed[byte :: _RECORD.size]
    dues = array("d")
    dues.frombytes(data)
    if sys.byteorder == "big":
        dues.byteswap()
    return dues


class _Buckets:
    """Held messages in buckets of ``span`` seconds of due times: records of
    those on disk only, and those still in memory (HOLD not written yet, or
    not journalled), to page out after a write."""

    def __init__(self, span: float) -> None:
        self.span = span
        self.records: dict[int, bytearray] = {}
        self.unwritten: dict[int, list[_InMemory]] = {}
        #: Heap of the keys of both (and of some emptied since).
        self.keys: list[int] = []

    def add(self, item: _InMemory) -> None:
        key = math.floor(item[0] / self.span)
        unwritten = self.unwritten.get(key)
        if unwritten is None:
            if key not in self.records:
                heapq.heappush(self.keys, key)
            unwritten = self.unwritten[key] = []
        unwritten.append(item)

    def file(self, due: float, msg_id: int, segment: int, offset: int) -> None:
        self._records(math.floor(due / self.span)).extend(_RECORD.pack(due, msg_id, segment, offset))

    def file_packed(self, packed: bytes | bytearray, dues: array[float]) -> None:
        """:meth:`file` for each record of ``packed`` (``dues``: theirs),
        with no call per record: start-up files millions."""
        found, view, at, size = self.records.get, memoryview(packed), 0, _RECORD.size
        for key in map(math.floor, map(operator.truediv, dues, repeat(self.span))):
            records = found(key)
            if records is None:
                records = self._records(key)
            records += view[at : at + size]
            at += size

    def _records(self, key: int) -> bytearray:
        records = self.records.get(key)
        if records is None:
            if key not in self.unwritten:
                heapq.heappush(self.keys, key)
            records = self.records[key] = bytearray()
        return records

    def first(self) -> int | None:
        """The first key that still has messages."""
        keys = self.keys
        while keys and keys[0] not in self.records and keys[0] not in self.unwritten:
            heapq.heappop(keys)
        return keys[0] if keys else None

    def paged(self) -> int:
        return sum(len(records) for records in self.records.values()) // _RECORD.size

    def clear(self) -> None:
        self.records.clear()
        self.unwritten.clear()
        self.keys.clear()


class HeldMessages:
    def __init__(self, budget: int) -> None:
        #: Messages the heap keeps before the horizon comes down.
        self.budget = budget
        self.horizon = math.inf
        self._near: list[_InMemory] = []
        self._order = itertools.count()
        self._far = _Buckets(BUCKET)
        self._later = _Buckets(LATER)
        #: Messages due before this go to far buckets, the rest to later ones:
        #: the end of the last hour split, or of the next hour.
        self._split_until = -math.inf
        #: Far buckets brought back whose records are to be read from disk:
        #: key -> the read is under way.
        self._wanted: dict[int, bool] = {}
        self.count = 0
        #: Heap size at which to try lowering the horizon again.
        self._check_at = budget + 1
        #: Journalled held messages in id order: due time (NaN: fired or
        #: cancelled), HOLD record segment and offset.
        self._ids: array[int] = array("Q")
        self._dues: array[float] = array("d")
        self._segments: array[int] = array("I")
        self._offsets: array[int] = array("I")
        #: 1 where the message has a message_id (its id then; see lookup).
        self._named = bytearray()
        self._gone = 0
        #: Records left behind by a cancel or reschedule, not yet skipped.
        self._stale = 0
        #: Messages not journalled (no HOLD record to read back), by id.
        self._resident: dict[int, Message] = {}
        #: (name_key(message_id), id) of held messages with a message_id;
        #: pairs of ids no longer held are skipped, and swept out once
        #: they are half of them.
        self._names = SortedPairs("Q")
        self._names_gone = 0
        self._last_id = 0
        #: (due, id) of the held messages due in the hours (due // LATER)
        #: of ``_indexed``, for pages by due time. An hour is indexed when
        #: a page first reaches it, from wherever its messages are by
        #: then: until a page needs them, held messages cost nothing here
        #: (16 B each), and start-up stays a bulk restore.
        self._by_due = SortedPairs("d")
        self._indexed: set[int] = set()

    def __len__(self) -> int:
        return self.count

    @property
    def has_unpaged(self) -> bool:
        """Far or later buckets hold messages in memory that may page out."""
        return bool(self._far.unwritten or self._later.unwritten)

    @property
    def paged(self) -> int:
        return self._far.paged() + self._later.paged()

    def _buckets(self, due: float) -> _Buckets:
        return self._far if due < self._split_until else self._later

    def _split_soon(self, now: float) -> None:
        """Messages due in the hour that starts within LATER of ``now``, or
        before, go to far buckets from now on."""
        self._split_until = max(self._split_until, (math.floor(now / LATER) + 2) * LATER)

    # -- holding ----------------------------------------------------------

    def hold(self, message: Message, due: float, now: float, segment: int = 0, offset: int = 0,
             msg_id: int | None = None) -> bool:
        """Hold a message (``segment``/``offset``: its HOLD record, whose
        message id is its id). One not journalled gets ``msg_id`` (the
        journal's next, so that ids grow), or the next after the last
        without a journal. True if it may page out after the next write."""
        self.count += 1
        if segment and message.store_id is not None:
            msg_id = message.store_id
        elif msg_id is None:
            msg_id = max(self._last_id, self._ids[-1] if self._ids else 0) + 1
        if not segment:
            self._resident[msg_id] = message
        self._index(msg_id, due, segment, offset, message.properties.message_id)
        if math.floor(due / LATER) in self._indexed:
            self._by_due.add(due, msg_id)
        if due < self.horizon:
            heapq.heappush(self._near, (due, msg_id, next(self._order), message, segment, offset))
            return len(self._near) >= self._check_at and self._lower_horizon(now)
        self._buckets(due).add((due, msg_id, next(self._order), message, segment, offset))
        return segment != 0

    def _lower_horizon(self, now: float) -> bool:
        """The heap outgrew its budget: what is not due before the first
        bucket that can still wait (one starting after ``now + PRELOAD``)
        moves to far or later buckets, and pages out once written. True if
        some moved.

        Not half the budget, as it was: messages kept in the heap for hours
        live long among the messages that come and go, and pin the memory
        around them (with delays spread over 30 days, 20,000 held in the
        heap kept 80 MB of otherwise free pymalloc arenas resident)."""
        self._split_soon(now)
        horizon = min(self.horizon, (math.floor((now + PRELOAD) / BUCKET) + 1) * BUCKET)
        near = self._near
        keep = [item for item in near if item[0] < horizon]
        if len(keep) == len(near):
            # All due soon: nothing to gain. Look again once the heap has
            # grown by half, not at every budget // 2 holds.
            self._check_at = len(near) + max(1, self.budget // 2, len(near) // 2)
            return False
        for item in near:
            if item[0] >= horizon:
                self._buckets(item[0]).add(item)
        heapq.heapify(keep)
        self._near = keep
        self.horizon = horizon
        self._check_at = max(self.budget + 1, len(keep) + max(1, self.budget // 2))
        return True

    def restore(self, due: float, msg_id: int, segment: int, offset: int) -> None:
        """A held message recovered from the journal: on disk only."""
        self.restore_all(array("d", [due]), array("Q", [msg_id]), array("I", [segment]), array("I", [offset]))

    def restore_all(self, dues: array[float], ids: array[int], segments: array[int], offsets: array[int],
                    progress: Callable[[int], object] | None = None) -> None:
        """Held messages recovered from the journal, as columns in id order:
        on disk only. Start-up restores millions: the columns are extended
        and the records packed and filed by C-speed passes, not a Python
        call per message (1M took 1.4 s that way). ``progress`` is told how
        many are filed after each RESTORE_STEP (start-up's progress log)."""
        if not ids:
            return
        if (self._ids and ids[0] <= self._ids[-1]) or not all(map(operator.lt, ids, islice(ids, 1, None))):
            raise ValueError("held message ids must grow")
        self.count += len(ids)
        self._ids.extend(ids)
        self._named.extend(bytes(len(ids)))  # named by restore_names
        self._dues.extend(dues)
        self._segments.extend(segments)
        self._offsets.extend(offsets)
        first = math.inf
        for start in range(0, len(ids), RESTORE_STEP):
            step = slice(start, start + RESTORE_STEP)
            step_dues = dues[step]
            packed = _pack(step_dues, ids[step], segments[step], offsets[step])
            lowest = min(step_dues)
            first = min(first, lowest)
            if lowest >= self._split_until:
                self._later.file_packed(packed, step_dues)
            else:  # some to far buckets (not at start-up: nothing is split yet)
                for record in _RECORD.iter_unpack(packed):
                    self._buckets(record[0]).file(*record)
            if progress is not None:
                progress(min(start + RESTORE_STEP, len(ids)))
        self.horizon = min(self.horizon, math.floor(first / BUCKET) * BUCKET)

    # -- time ---------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When something is due: the heap's first message, or the time to
        bring the next far bucket back, or to split the next later one."""
        deadline = self._near[0][0] if self._near else math.inf
        if (key := self._far.first()) is not None:
            deadline = min(deadline, key * BUCKET - PRELOAD)
        if (key := self._later.first()) is not None:
            deadline = min(deadline, key * LATER - LATER)
        return None if deadline == math.inf else deadline

    def peek_due(self) -> tuple[float, Message] | None:
        near = self._near
        while near and self._stale and not self._current(near[0][1], near[0][0]):
            heapq.heappop(near)
            self._stale -= 1
        if not near:
            return None
        return near[0][0], near[0][3]

    def pop(self) -> Message:
        """The first message of the heap (after :meth:`peek_due`)."""
        self.count -= 1
        _, msg_id, _, message, _, _ = heapq.heappop(self._near)
        if (i := self._find(msg_id)) is not None:
            self._forget(i)
        return message

    def bring_back(self, now: float, read: Callable[[int, int], Message] | None = None) -> bool:
        """Later buckets starting within LATER of ``now`` split into far
        buckets; far buckets starting within PRELOAD of ``now`` come back:
        their messages in memory join the heap; True if some must be read
        from disk first (see :meth:`page_in_requests`). With ``read``
        (start-up, which may block) they are read at once instead."""
        self._split_soon(now)
        later = self._later
        splitting = math.inf  # the start of an hour not split to the end yet
        while (hour := later.first()) is not None and hour * LATER - LATER <= now:
            self._split_until = max(self._split_until, (hour + 1) * LATER)
            for item in later.unwritten.pop(hour, ()):
                self._far.add(item)
            records = later.records.get(hour)
            if records is not None:
                # A step at a time (at once at start-up), from the end (no
                # copy of the rest): the timer comes back at once for the
                # rest, long before the hour starts.
                cut = 0 if read is not None else max(0, len(records) - SPLIT_STEP * _RECORD.size)
                self._far.file_packed(records[cut:], _dues(records[cut:]))
                del records[cut:]
                if records:
                    splitting = hour * LATER
                    break
                del later.records[hour]
            heapq.heappop(later.keys)
        reads = False
        far = self._far
        while (key := far.first()) is not None and key * BUCKET - PRELOAD <= now and key * BUCKET < splitting:
            heapq.heappop(far.keys)
            for item in far.unwritten.pop(key, ()):
                heapq.heappush(self._near, item)
            self.horizon = max(self.horizon, (key + 1) * BUCKET)
            if key not in far.records:
                continue
            if read is not None:
                refs = self._refs(key)
                self.paged_in(key, refs, [read(segment, offset) for segment, offset, _, _ in refs])
            else:
                self._wanted[key] = False  # its records stay until read
                reads = True
        return reads

    # -- scheduled messages by id ------------------------------------------

    def _index(self, msg_id: int, due: float, segment: int, offset: int, name: str | None) -> None:
        if self._ids and msg_id <= self._ids[-1]:
            raise ValueError(f"held message ids must grow: {msg_id} after {self._ids[-1]}")
        self._last_id = msg_id
        self._ids.append(msg_id)
        self._dues.append(due)
        self._segments.append(segment)
        self._offsets.append(offset)
        self._named.append(bool(name))
        if name:
            self._names.add(name_key(name), msg_id)

    def restore_names(self, ids: array[int], keys: array[int]) -> None:
        """The NAMED records recovered (message id, name_key of its
        message_id), in log order: those of messages still held here."""
        for msg_id, key in zip(ids, keys):
            if (i := self._find(msg_id)) is not None:
                self._named[i] = 1
                self._names.add(key, msg_id)

    def lookup(self, text: str) -> list[int]:
        """The ids of the held messages a user's id names: those whose
        message_id it is (all of them: message_ids need not be unique), or
        else, given as digits, the one of that number that has no
        message_id. Names are found by a 64-bit hash: a message whose
        message_id shares another's hash is found by both."""
        ids = [msg_id for msg_id in self._names.values_of(name_key(text)) if self._find(msg_id) is not None]
        if ids or not (text.isascii() and text.isdigit()):
            return ids
        i = self._find(int(text))
        return [] if i is None or self._named[i] else [self._ids[i]]

    def named(self, msg_id: int) -> bool:
        """Whether a held message has a message_id (which is its id then)."""
        i = self._find(msg_id)
        return i is not None and bool(self._named[i])

    def resident(self, msg_id: int) -> Message | None:
        """A held message that is not journalled (memory only)."""
        return self._resident.get(msg_id)

    def _find(self, msg_id: int) -> int | None:
        """Where a held message is in the columns, if still held."""
        ids = self._ids
        i = bisect.bisect_left(ids, msg_id)
        if i < len(ids) and ids[i] == msg_id and not math.isnan(self._dues[i]):
            return i
        return None

    def _current(self, msg_id: int, due: float) -> bool:
        """Whether a heap item is not left behind by a cancel or reschedule."""
        i = self._find(msg_id)
        return i is not None and self._dues[i] == due

    def _forget(self, i: int) -> None:
        """The message at ``i`` of the columns is held no more; the columns
        (and the names) shed what is gone once it is half of them
        (amortised O(1))."""
        self._by_due.remove(self._dues[i], self._ids[i])
        self._dues[i] = math.nan
        self._gone += 1
        self._resident.pop(self._ids[i], None)
        if self._named[i]:
            self._names_gone += 1
            if self._names_gone > 1024 and self._names_gone * 2 > len(self._names):
                names, self._names = self._names, SortedPairs("Q")
                for key, msg_id in names.from_(0):
                    if self._find(msg_id) is not None:
                        self._names.add(key, msg_id)
                self._names_gone = 0
        if self._gone > 1024 and self._gone * 2 > len(self._ids):
            keep = [j for j, due in enumerate(self._dues) if not math.isnan(due)]
            self._ids = array("Q", [self._ids[j] for j in keep])
            self._dues = array("d", [self._dues[j] for j in keep])
            self._segments = array("I", [self._segments[j] for j in keep])
            self._offsets = array("I", [self._offsets[j] for j in keep])
            self._named = bytearray(self._named[j] for j in keep)
            self._gone = 0

    def due_of(self, msg_id: int) -> float | None:
        i = self._find(msg_id)
        return None if i is None else self._dues[i]

    def location(self, msg_id: int) -> tuple[int, int] | None:
        """(segment, offset) of a held message's HOLD record."""
        i = self._find(msg_id)
        return None if i is None else (self._segments[i], self._offsets[i])

    def segment_of(self, msg_id: int) -> int | None:
        """The segment of a held message's HOLD record."""
        i = self._find(msg_id)
        return None if i is None else self._segments[i]

    def scheduled(self, after: int = 0, limit: int = 100, due_from: float = -math.inf,
                  due_to: float = math.inf) -> list[tuple[int, float]]:
        """A page of (id, due) of journalled held messages in id (holding)
        order, ids greater than ``after``, due in [``due_from``, ``due_to``)."""
        page: list[tuple[int, float]] = []
        ids, dues = self._ids, self._dues
        for i in range(bisect.bisect_right(ids, after), len(ids)):
            due = dues[i]
            if due_from <= due < due_to:  # False for NaN
                page.append((ids[i], due))
                if len(page) == limit:
                    break
        return page

    def scheduled_by_due(self, due_from: float = -math.inf, due_to: float = math.inf,
                         after: tuple[float, int] | None = None, limit: int = 100) -> list[tuple[int, float]]:
        """A page of (id, due) of held messages due in [``due_from``,
        ``due_to``), in due order (then id), after the (due, id) ``after``:
        a bisection of the index by due time, O(log n) and the page (and a
        look over the hour buckets for those not indexed yet)."""
        cursor = (due_from, -1) if after is None else max(after, (due_from, -1))
        first = math.floor(cursor[0] / LATER) if cursor[0] > -math.inf else -math.inf
        unindexed = sorted(hour for hour in self._hours() if hour >= first and hour not in self._indexed)
        page: list[tuple[int, float]] = []
        while True:
            bound = unindexed[0] * LATER if unindexed else math.inf
            for due, found in self._by_due.from_(cursor[0], cursor[1] + 1):
                if due >= due_to or due >= bound:
                    break
                cursor = (due, int(found))
                page.append((cursor[1], due))
                if len(page) == limit:
                    return page
            if bound >= due_to:
                return page
            self._index_hour(unindexed.pop(0))

    def _hours(self) -> set[int]:
        """The hours (due // LATER) of every held message, and maybe more."""
        minutes = int(LATER // BUCKET)
        hours = {*self._later.records, *self._later.unwritten}
        hours.update(key // minutes for key in (*self._far.records, *self._far.unwritten))
        hours.update(math.floor(item[0] / LATER) for item in self._near)
        return hours

    def _index_hour(self, hour: int) -> None:
        """The held messages due in ``hour`` join the index by due time,
        from wherever they are: its later bucket, the far buckets split
        from it, the heap (each still current, once)."""
        self._indexed.add(hour)
        minutes = int(LATER // BUCKET)
        far = range(hour * minutes, (hour + 1) * minutes)
        found = [(due, msg_id) for records in (self._later.records.get(hour, b""), *(
                     self._far.records.get(key, b"") for key in far))
                 for due, msg_id, _, _ in _RECORD.iter_unpack(records)]
        for items in (self._near, self._later.unwritten.get(hour, ()), *(self._far.unwritten.get(key, ()) for key in far)):
            found += [(due, msg_id) for due, msg_id, *_ in items if math.floor(due / LATER) == hour]
        for due, msg_id in sorted(found):
            if self._current(msg_id, due) and (due, msg_id) not in self._by_due:
                self._by_due.add(due, msg_id)

    def cancel(self, msg_id: int) -> bool:
        """Hold a message no more; False if it is not held (fired, cancelled
        or never held)."""
        i = self._find(msg_id)
        if i is None:
            return False
        self._forget(i)
        self.count -= 1
        self._stale += 1
        return True

    def reschedule(self, msg_id: int, due: float) -> bool:
        """Make a held message due at ``due`` (now, to fire it now); False
        if it is not held. Its old record becomes stale; a new one, on
        disk only, is filed, and read back when its bucket comes back."""
        i = self._find(msg_id)
        if i is None:
            return False
        if self._dues[i] == due:
            return True
        self._by_due.remove(self._dues[i], msg_id)
        if math.floor(due / LATER) in self._indexed:
            self._by_due.add(due, msg_id)
        self._dues[i] = due
        self._stale += 1
        message = self._resident.get(msg_id)
        if message is None:
            self._buckets(due).file(due, msg_id, self._segments[i], self._offsets[i])
        elif due < self.horizon:
            heapq.heappush(self._near, (due, msg_id, next(self._order), message, 0, 0))
        else:
            self._buckets(due).add((due, msg_id, next(self._order), message, 0, 0))
        return True

    # -- paging -------------------------------------------------------------

    def page_out(self, is_written: Callable[[int, int], bool]) -> int:
        """Messages in far and later buckets whose HOLD record is on disk
        leave memory."""
        paged = 0
        for buckets in (self._far, self._later):
            for key, unwritten in list(buckets.unwritten.items()):
                kept = []
                for item in unwritten:
                    due, msg_id, _, _, segment, offset = item
                    if segment and is_written(segment, offset):
                        self._buckets(due).file(due, msg_id, segment, offset)
                        paged += 1
                    else:
                        kept.append(item)
                if kept:
                    buckets.unwritten[key] = kept
                else:
                    del buckets.unwritten[key]
        return paged

    def _refs(self, key: int) -> list[PagedRef]:
        """Where the records of a far bucket's messages are; a ref's third
        field is the message's index in its bucket."""
        return [(segment, offset, i, 0)
                for i, (_, _, segment, offset) in enumerate(_RECORD.iter_unpack(self._far.records[key]))]

    def page_in_requests(self) -> list[tuple[int, list[PagedRef]]]:
        """(bucket key, refs) of every far bucket being brought back."""
        requests = []
        for key, reading in self._wanted.items():
            if not reading:
                self._wanted[key] = True
                requests.append((key, self._refs(key)))
        return requests

    def paged_in(self, key: int, refs: list[PagedRef], messages: list[Message]) -> None:
        records = self._far.records.pop(key, None)
        self._wanted.pop(key, None)
        if records is None:
            return
        held = [(due, msg_id) for due, msg_id, _, _ in _RECORD.iter_unpack(records)]
        for (segment, offset, i, _), message in zip(refs, messages):
            heapq.heappush(self._near, (*held[i], next(self._order), message, segment, offset))

    def page_in_failed(self, key: int) -> None:
        """The read is tried again when the timer next fires."""
        if self._wanted.pop(key, None) is not None:
            heapq.heappush(self._far.keys, key)

    def _unwritten(self) -> Iterator[_InMemory]:
        for buckets in (self._far, self._later):
            for unwritten in buckets.unwritten.values():
                yield from unwritten

    def in_memory(self) -> dict[int, Message]:
        """The messages held in memory (all of them without a journal), by id."""
        return {msg_id: message for due, msg_id, _, message, _, _ in (*self._near, *self._unwritten())
                if self._current(msg_id, due)}

    def records(self) -> Iterator[tuple[int, int]]:
        """(message id, HOLD segment) of every journalled message held."""
        for msg_id, due, segment in zip(self._ids, self._dues, self._segments):
            if segment and not math.isnan(due):
                yield msg_id, segment

    def drop_all(self) -> list[Message | None]:
        """Everything held, gone: the messages (None for those on disk only)."""
        dropped: list[Message | None] = list(self.in_memory().values())
        dropped.extend([None] * (self.count - len(dropped)))
        self._near.clear()
        self._far.clear()
        self._later.clear()
        self._wanted.clear()
        self.count = 0
        self._ids, self._dues = array("Q"), array("d")
        self._segments, self._offsets = array("I"), array("I")
        self._named = bytearray()
        self._resident.clear()
        self._names.clear()
        self._by_due.clear()
        self._indexed.clear()
        self._gone = self._stale = self._names_gone = 0
        return dropped
