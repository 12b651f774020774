"""The ready messages of one queue, in delivery order.

Order is priority descending, then publication order. Each priority level is
a FIFO deque of fresh messages plus a heap of requeued ones: anything
requeued was published before everything still in the deque, so popping the
heap first puts a requeued message back at its original position, as
RabbitMQ's classic queues do.

Removal from the middle (a message expiring while others wait ahead of it)
is lazy: the entry's state changes and it stays behind as a tombstone until
it reaches the front or the level is compacted.
"""

from __future__ import annotations

import heapq
from collections import deque

from .message import READY, Entry

# Rebuild a level once it holds more tombstones than this and than live entries.
_COMPACT_MIN = 1024


class _Level:
    __slots__ = ("fresh", "requeued", "live", "dead")

    def __init__(self) -> None:
        self.fresh: deque[Entry] = deque()
        self.requeued: list[tuple[int, Entry]] = []
        self.live = 0
        self.dead = 0

    def pop(self) -> Entry | None:
        requeued, fresh = self.requeued, self.fresh
        while requeued:
            entry = heapq.heappop(requeued)[1]
            if entry.state == READY:
                self.live -= 1
                return entry
            self.dead -= 1
        while fresh:
            entry = fresh.popleft()
            if entry.state == READY:
                self.live -= 1
                return entry
            self.dead -= 1
        return None

    def peek(self) -> Entry | None:
        requeued, fresh = self.requeued, self.fresh
        while requeued and requeued[0][1].state != READY:
            heapq.heappop(requeued)
            self.dead -= 1
        if requeued:
            return requeued[0][1]
        while fresh and fresh[0].state != READY:
            fresh.popleft()
            self.dead -= 1
        return fresh[0] if fresh else None

    def compact(self) -> None:
        self.fresh = deque(e for e in self.fresh if e.state == READY)
        self.requeued = [item for item in self.requeued if item[1].state == READY]
        heapq.heapify(self.requeued)
        self.dead = 0


class ReadyList:
    __slots__ = ("_levels", "_order", "count", "bytes")

    def __init__(self) -> None:
        self._levels: dict[int, _Level] = {}
        #: Priorities with a level, highest first.
        self._order: list[int] = []
        self.count = 0
        self.bytes = 0

    def _level(self, priority: int) -> _Level:
        level = self._levels.get(priority)
        if level is None:
            level = self._levels[priority] = _Level()
            self._order.append(priority)
            self._order.sort(reverse=True)
        return level

    def append(self, entry: Entry) -> None:
        level = self._level(entry.priority)
        level.fresh.append(entry)
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
        if not self.count:
            return None
        for priority in self._order:
            level = self._levels[priority]
            if level.live:
                entry = level.pop()
                if entry is not None:
                    self.count -= 1
                    self.bytes -= len(entry.message.body)
                    return entry
        return None

    def peek(self) -> Entry | None:
        for priority in self._order:
            level = self._levels[priority]
            if level.live:
                return level.peek()
        return None

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
        """Remove and return every ready entry, in delivery order."""
        out = []
        while (entry := self.pop()) is not None:
            out.append(entry)
        return out

    def __len__(self) -> int:
        return self.count
