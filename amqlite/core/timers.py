"""One deadline index for the whole broker.

Queues and delayed exchanges each keep their own ordered pending work and put
only their *earliest* deadline here. Entries are never removed: a target that
was rescheduled leaves a stale entry behind, recognised by its time no longer
matching the target's ``timer_at``. Insert and pop are O(log n).
"""

from __future__ import annotations

import heapq
import itertools
from typing import Callable, Protocol


class TimerTarget(Protocol):
    timer_at: float | None

    def on_timer(self, now: float) -> None: ...


class Timers:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, TimerTarget]] = []
        self._order = itertools.count()
        #: Called when the earliest deadline moves earlier, so a driver
        #: sleeping until the old one can wake up.
        self.on_earlier: Callable[[], object] | None = None

    def schedule(self, target: TimerTarget, when: float | None) -> None:
        """Make sure ``target.on_timer`` runs no later than ``when``."""
        if when is None:
            return
        if target.timer_at is not None and target.timer_at <= when:
            return
        target.timer_at = when
        head = self.next_deadline()
        heapq.heappush(self._heap, (when, next(self._order), target))
        if (head is None or when < head) and self.on_earlier is not None:
            self.on_earlier()

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and heap[0][2].timer_at != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def pop_due(self, now: float) -> list[TimerTarget]:
        due = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            when, _, target = heapq.heappop(heap)
            if target.timer_at == when:
                target.timer_at = None
                due.append(target)
        return due

    def __len__(self) -> int:
        return len(self._heap)
