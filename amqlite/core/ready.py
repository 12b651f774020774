"""The ready messages of one queue, in delivery order.

Order is priority descending, then publication order. Each priority level is
a FIFO deque of fresh messages plus a heap of requeued ones: anything
requeued was published before everything still in the deque, so popping the
heap first puts a requeued message back at its original position, as
RabbitMQ's classic queues do.

Removal from the middle (a message expiring while others wait ahead of it)
is lazy: the entry's state changes and it stays behind as a tombstone until
it reaches the front or the level is compacted.

A level can also page: beyond a memory budget, its middle lives only on
disk as a :class:`PagedRun` of record locations. Then a level is, in order,
``fresh`` (in memory, oldest), the paged run (on disk), and ``tail`` (in
memory, newest, not yet paged out). Storage reads paged records back when
``fresh`` runs low; until they arrive, the level has nothing to pop and
lower priorities wait, so order holds.
"""

from __future__ import annotations

import heapq
from array import array
from bisect import bisect_left, bisect_right
from collections import deque
from itertools import chain, islice
from typing import Callable, Iterator

from .message import READY, Entry

# Rebuild a level once it holds more tombstones than this and than live entries.
_COMPACT_MIN = 1024

#: A paged message: (segment, offset of its record, seq, body size).
PagedRef = tuple[int, int, int, int]

#: Body bytes one page-in brings back at most: a batch is counted in
#: messages (half the budget), and 10,000 messages of 10 KB read back at
#: once made memory jump by 100 MB (enough to raise the alarm).
PAGE_IN_MAX_BYTES = 16 * 2**20


class PagedRun:
    """Locations of on-disk messages, oldest first, in compact arrays
    (24 bytes a message, against about 400 for one in memory)."""

    __slots__ = ("segments", "offsets", "seqs", "sizes", "head", "bytes")

    def __init__(self) -> None:
        self.segments = array("I")
        self.offsets = array("Q")
        self.seqs = array("Q")
        self.sizes = array("I")
        self.head = 0
        self.bytes = 0

    def __len__(self) -> int:
        return len(self.seqs) - self.head

    def push(self, segment: int, offset: int, seq: int, size: int) -> None:
        self.segments.append(segment)
        self.offsets.append(offset)
        self.seqs.append(seq)
        self.sizes.append(size)
        self.bytes += size

    def extend(self, segments: array[int], offsets: array[int], seqs: array[int], sizes: array[int]) -> None:
        """Push a run of refs at once (start-up: one call, not one per
        message). Takes the arrays over when the run has never held any:
        start-up hands over millions of refs, and need not copy them again."""
        if not self.seqs:
            self.segments, self.offsets, self.seqs, self.sizes, self.head = segments, offsets, seqs, sizes, 0
        else:
            self.segments.extend(segments)
            self.offsets.extend(offsets)
            self.seqs.extend(seqs)
            self.sizes.extend(sizes)
        self.bytes += sum(sizes)

    def put_back(self, refs: list[PagedRef]) -> None:
        """Undo the :meth:`take` that returned ``refs`` (a failed read)."""
        if len(refs) <= self.head:  # still there, just before the head
            self.head -= len(refs)
        else:  # take() compacted them away
            for column, values in zip((self.segments, self.offsets, self.seqs, self.sizes), zip(*refs, strict=True),
                                      strict=True):
                column[self.head:self.head] = array(column.typecode, values)
        self.bytes += sum(ref[3] for ref in refs)

    def start_after(self, seq: int) -> int:
        """Where the refs with a seq above ``seq`` begin (seqs ascend)."""
        return bisect_right(self.seqs, seq, self.head)

    def refs(self, start: int) -> Iterator[PagedRef]:
        """The refs from index ``start`` (:meth:`start_after`) on, oldest first."""
        for at in range(start, len(self.seqs)):
            yield self.segments[at], self.offsets[at], self.seqs[at], self.sizes[at]

    def find(self, seq: int) -> int | None:
        """Where the run holds ``seq`` (seqs ascend), or None."""
        at = bisect_left(self.seqs, seq, self.head)
        return at if at < len(self.seqs) and self.seqs[at] == seq else None

    def remove(self, seqs: list[int]) -> list[PagedRef]:
        """Take the refs of ``seqs`` out of the run, wherever they are;
        those it holds. One pass over the columns for them all: deleting
        one at a time moved a million-entry run's tail once per message."""
        found = sorted(at for at in map(self.find, seqs) if at is not None)
        if not found:
            return []
        refs = [(self.segments[at], self.offsets[at], self.seqs[at], self.sizes[at]) for at in found]
        bounds = [self.head, *found, len(self.seqs)]
        for name in ("segments", "offsets", "seqs", "sizes"):
            column: array[int] = getattr(self, name)
            kept = array(column.typecode, column[bounds[0]:bounds[1]])
            for start, end in zip(bounds[1:-1], bounds[2:], strict=True):
                kept.extend(column[start + 1:end])
            setattr(self, name, kept)
        self.head = 0
        self.bytes -= sum(ref[3] for ref in refs)
        return refs

    def take(self, count: int, max_bytes: int | None = None) -> list[PagedRef]:
        """The oldest ``count`` refs, fewer if their bodies would pass
        ``max_bytes`` (but at least one)."""
        start, end = self.head, min(self.head + count, len(self.seqs))
        if max_bytes is not None:
            sizes, total = self.sizes, 0
            for at in range(start, end):
                total += sizes[at]
                if total > max_bytes and at > start:
                    end = at
                    break
        refs = list(zip(self.segments[start:end], self.offsets[start:end], self.seqs[start:end], self.sizes[start:end], strict=True))
        self.head = end
        self.bytes -= sum(ref[3] for ref in refs)
        if self.head > 4096 and self.head * 2 > len(self.seqs):
            for column in (self.segments, self.offsets, self.seqs, self.sizes):
                del column[: self.head]
            self.head = 0
        return refs


def _ready_after(entries: deque[Entry], seq: int) -> Iterator[Entry]:
    """The ready entries of a seq-ordered deque with a seq above ``seq``."""
    start = bisect_right(entries, seq, key=lambda entry: entry.seq) if seq >= 0 else 0
    # islice skips in C; indexing a deque in a loop would cost O(n) a step.
    for entry in islice(entries, start, None):
        if entry.state == READY:
            yield entry


class _Level:
    __slots__ = ("fresh", "requeued", "live", "dead", "tail", "paged", "inflight")

    def __init__(self) -> None:
        self.fresh: deque[Entry] = deque()
        self.requeued: list[tuple[int, Entry]] = []
        self.live = 0
        self.dead = 0
        #: Only while the level pages: in memory, newer than the paged run.
        self.tail: deque[Entry] = deque()
        self.paged = PagedRun()
        #: Refs being read back from disk right now.
        self.inflight: list[PagedRef] = []

    @property
    def paging(self) -> bool:
        # Read once per published message (append): no call to PagedRun.__len__.
        paged = self.paged
        return bool(self.inflight) or paged.head < len(paged.seqs)

    def pop(self) -> Entry | None:
        requeued, fresh = self.requeued, self.fresh
        while requeued:
            entry = heapq.heappop(requeued)[1]
            if entry.state == READY:
                self.live -= 1
                return entry
            self.dead -= 1
        while True:
            while fresh:
                entry = fresh.popleft()
                if entry.state == READY:
                    self.live -= 1
                    return entry
                self.dead -= 1
            if not self.tail or self.paging:
                return None
            fresh = self.fresh = self.tail  # nothing on disk in between any more
            self.tail = deque()

    def compact(self) -> None:
        self.fresh = deque(e for e in self.fresh if e.state == READY)
        self.tail = deque(e for e in self.tail if e.state == READY)
        self.requeued = [item for item in self.requeued if item[1].state == READY]
        heapq.heapify(self.requeued)
        self.dead = 0


class ReadyList:
    __slots__ = ("_levels", "_order", "count", "bytes", "paged")

    def __init__(self) -> None:
        self._levels: dict[int, _Level] = {}
        #: Priorities with a level, highest first.
        self._order: list[int] = []
        self.count = 0
        self.bytes = 0
        #: How many of ``count`` are on disk only (paged or being read back).
        self.paged = 0

    @property
    def in_memory(self) -> int:
        return self.count - self.paged

    def _level(self, priority: int) -> _Level:
        level = self._levels.get(priority)
        if level is None:
            level = self._levels[priority] = _Level()
            self._order.append(priority)
            self._order.sort(reverse=True)
        return level

    def append(self, entry: Entry) -> None:
        level = self._levels.get(entry.priority) or self._level(entry.priority)
        (level.tail if level.paging else level.fresh).append(entry)
        level.live += 1
        self.count += 1
        self.bytes += len(entry.message.body)

    def requeue(self, entry: Entry) -> None:
        level = self._level(entry.priority)
        heapq.heappush(level.requeued, (entry.seq, entry))
        level.live += 1
        self.count += 1
        self.bytes += len(entry.message.body)

    def pop(self) -> Entry | None:
        """The next entry in delivery order; None when there is none in
        memory yet (it may be on its way back from disk)."""
        if not self.count:
            return None
        for priority in self._order:
            level = self._levels[priority]
            if level.live or level.paging:
                entry = level.pop()
                if entry is not None:
                    self.count -= 1
                    self.bytes -= len(entry.message.body)
                    return entry
                if level.paging:
                    return None  # lower priorities wait for this level's page-in
        return None

    def walk(self, after: tuple[int, int] | None = None, skip: int = 0) -> Iterator[Entry | tuple[int, PagedRef]]:
        """Every ready message in delivery order, taking none: an entry in
        memory, or (priority, ref) for one on disk (see core/browse.py).
        With ``after`` (priority, seq), only those after that point, found
        by bisection: each part of a level is in seq order. ``skip`` leaves
        out that many first; a paged run is skipped over, not walked."""
        for priority in self._order:
            seq = -1
            if after is not None:
                if priority > after[0]:
                    continue
                if priority == after[0]:
                    seq = after[1]
            level = self._levels[priority]
            for _, entry in sorted(level.requeued):
                if entry.state == READY and entry.seq > seq:
                    if skip:
                        skip -= 1
                    else:
                        yield entry
            reading: Iterator[Entry | tuple[int, PagedRef]] = ((priority, ref) for ref in level.inflight
                                                                if ref[2] > seq)
            for item in chain(_ready_after(level.fresh, seq), reading):
                if skip:
                    skip -= 1
                else:
                    yield item
            paged = level.paged
            start = paged.start_after(seq)
            skipped = min(skip, len(paged.seqs) - start)
            skip -= skipped
            yield from ((priority, ref) for ref in paged.refs(start + skipped))
            for entry in _ready_after(level.tail, seq):
                if skip:
                    skip -= 1
                else:
                    yield entry

    def holds_paged(self, priority: int, seq: int) -> bool:
        """Whether the message ``seq`` is on disk only now (not being read back)."""
        level = self._levels.get(priority)
        return level is not None and level.paged.find(seq) is not None

    def remove_paged(self, priority: int, seqs: list[int]) -> list[PagedRef]:
        """Forget the paged messages ``seqs`` (they left from the middle of
        the queue); the refs of those that were on disk only."""
        level = self._levels.get(priority)
        refs = [] if level is None else level.paged.remove(seqs)
        self.count -= len(refs)
        self.bytes -= sum(ref[3] for ref in refs)
        self.paged -= len(refs)
        return refs

    def discard(self, entry: Entry) -> None:
        """Account for ``entry`` having left while still indexed here.

        The caller has already moved it out of the READY state.
        """
        level = self._levels[entry.priority]
        level.live -= 1
        level.dead += 1
        self.count -= 1
        self.bytes -= len(entry.message.body)
        if level.dead > _COMPACT_MIN and level.dead > level.live:
            level.compact()

    def drain(self) -> list[Entry]:
        """Remove and return every ready entry in memory. Paged ones stay;
        :meth:`drop_paged` takes those."""
        out = []
        for level in self._levels.values():
            while (entry := level.pop()) is not None:
                out.append(entry)
            while level.tail:
                entry = level.tail.popleft()
                if entry.state == READY:
                    level.live -= 1
                    out.append(entry)
            level.dead = 0
        self.count -= len(out)
        self.bytes -= sum(len(entry.message.body) for entry in out)
        return out

    # -- paging -----------------------------------------------------------

    def page_out(self, budget: int, pageable: Callable[[Entry], bool],
                 unwritten: Callable[[Entry], bool]) -> list[Entry]:
        """Move entries beyond ``budget`` in memory to their levels' paged
        runs. Returns the entries paged; the caller records where they are.

        Only written entries can go, and under pipelined publishing the
        newest ones never are (they arrived during the last write), so a
        run starts after the ``unwritten`` newest entries and reaches back
        towards the oldest; those newer ones stay behind it as the tail. Once a level
        pages, the oldest of its tail joins the end of the run, stopping at
        the first entry that cannot go (order must hold)."""
        moved: list[Entry] = []
        for priority in reversed(self._order):  # lowest priorities wait longest
            if self.in_memory - len(moved) <= budget:
                break
            level = self._levels[priority]
            if level.paging:
                source = level.tail
                while source and self.in_memory - len(moved) > budget and pageable(source[0]):
                    moved.append(source.popleft())
                    level.live -= 1
            else:
                moved.extend(self._start_paging(level, self.in_memory - len(moved) - budget, pageable, unwritten))
        for entry in moved:
            self._levels[entry.priority].paged.push(entry.store_segment, entry.store_offset, entry.seq, entry.size)
        self.paged += len(moved)
        return moved

    @staticmethod
    def _start_paging(level: _Level, excess: int, pageable: Callable[[Entry], bool],
                      unwritten: Callable[[Entry], bool]) -> list[Entry]:
        """Split ``fresh`` into fresh (oldest), a run of up to ``excess``
        pageable entries, and tail (newest); returns the run. Walks from
        the newest end and stops at the first entry that cannot go, so a
        level with nothing to page (transient messages) costs one look,
        not a copy of the whole level after every write."""
        tail: list[Entry] = []
        run: list[Entry] = []
        for entry in reversed(level.fresh):
            if not run and unwritten(entry):
                tail.append(entry)
            elif len(run) < excess and pageable(entry):
                run.append(entry)
            else:
                break
        if not run:
            return []
        fresh = level.fresh
        for _ in range(len(tail) + len(run)):
            fresh.pop()
        tail.reverse()
        run.reverse()
        level.tail = deque(tail)
        level.live -= len(run)
        return run

    def page_in_requests(self, low_water: int, batch: int) -> list[tuple[int, list[PagedRef]]]:
        """Batches to read back, per priority, for levels running low."""
        requests = []
        for priority, level in self._levels.items():
            if len(level.paged) and not level.inflight and len(level.fresh) < low_water:
                level.inflight = level.paged.take(batch, PAGE_IN_MAX_BYTES)
                requests.append((priority, level.inflight))
        return requests

    def paged_in(self, priority: int, refs: list[PagedRef], entries: list[Entry]) -> bool:
        """Entries read back from disk for the level's in-flight ``refs``.
        False if those were dropped meanwhile (purge, delete)."""
        level = self._levels[priority]
        if level.inflight is not refs:
            return False
        level.fresh.extend(entries)
        level.live += len(entries)
        self.paged -= len(level.inflight)
        level.inflight = []
        if not len(level.paged):
            level.fresh.extend(level.tail)
            level.tail = deque()
        return True

    def _restorable(self, level: _Level, seq: int) -> bool:
        """Whether a recovered message can be paged after everything so far:
        not if newer messages are already in memory (order)."""
        return not (level.tail or (not level.paging and level.fresh and level.fresh[-1].seq > seq))

    def page_in_failed(self, priority: int, refs: list[PagedRef]) -> bool:
        """The read of the level's in-flight ``refs`` failed: they go back
        to the front of its run, to be asked for again. False if they were
        dropped meanwhile."""
        level = self._levels[priority]
        if level.inflight is not refs:
            return False
        level.paged.put_back(refs)
        level.inflight = []
        return True

    def restore_paged(self, priority: int, ref: PagedRef) -> bool:
        """Add a message recovered from disk as paged, after everything so
        far. False if newer messages are already in memory (order)."""
        level = self._level(priority)
        if not self._restorable(level, ref[2]):
            return False
        level.paged.push(*ref)
        self.count += 1
        self.bytes += ref[3]
        self.paged += 1
        return True

    def restore_paged_run(self, priority: int, segments: array[int], offsets: array[int], seqs: array[int],
                          sizes: array[int]) -> bool:
        """:meth:`restore_paged` for a run of messages in seq order, at once."""
        level = self._level(priority)
        if not seqs or not self._restorable(level, seqs[0]):
            return False
        before = level.paged.bytes
        level.paged.extend(segments, offsets, seqs, sizes)
        self.count += len(seqs)
        self.bytes += level.paged.bytes - before
        self.paged += len(seqs)
        return True

    def drop_paged(self) -> list[PagedRef]:
        """Forget every paged message (purge, delete); returns their refs."""
        refs: list[PagedRef] = []
        for level in self._levels.values():
            refs.extend(level.inflight)
            refs.extend(level.paged.take(len(level.paged)))
            level.inflight = []
            level.paged = PagedRun()
            level.fresh.extend(level.tail)
            level.tail = deque()
        self.count -= len(refs)
        self.bytes -= sum(ref[3] for ref in refs)
        self.paged -= len(refs)
        return refs

    def __len__(self) -> int:
        return self.count
