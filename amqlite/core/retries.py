"""A queue's messages waiting out a retry delay (``x-delayed-retry-*``).

They are scheduled messages too (docs/concepts.md): each has an id, its
``message_id`` property or else its number in the queue (its seq), and
can be listed, cancelled, rescheduled and fired now. So they are kept by
due time (a heap, for the timer) and by seq (sorted, for pages and
lookups), and by message_id. A reschedule or cancel leaves its heap item
behind; an item whose due time is not its entry's any more is skipped.
They are few next to held delayed messages (at most what consumers held
unacked), and all in memory.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Iterator

from .message import Entry
from .sortedpairs import SortedPairs


class Retries:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, int, Entry]] = []
        self._order = itertools.count()  # tells apart items of one rescheduled entry
        #: seq -> (due, entry); and the seqs in order, for pages.
        self._by_seq: dict[int, tuple[float, Entry]] = {}
        self._seqs = SortedPairs("Q")
        self._names: dict[str, set[int]] = {}

    def __len__(self) -> int:
        return len(self._by_seq)

    def add(self, entry: Entry, due: float) -> None:
        if entry.seq not in self._by_seq:
            self._seqs.add(entry.seq, 0)
        self._by_seq[entry.seq] = (due, entry)
        heapq.heappush(self._heap, (due, entry.seq, next(self._order), entry))
        name = entry.message.properties.message_id
        if name:
            self._names.setdefault(name, set()).add(entry.seq)

    def _current(self, due: float, seq: int, entry: Entry) -> bool:
        found = self._by_seq.get(seq)
        return found is not None and found[0] == due and found[1] is entry

    def next_due(self) -> float | None:
        heap = self._heap
        while heap and not self._current(heap[0][0], heap[0][1], heap[0][3]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def pop_due(self, now: float) -> Iterator[Entry]:
        """The entries due by ``now``, no longer waiting."""
        while (due := self.next_due()) is not None and due <= now:
            entry = heapq.heappop(self._heap)[3]
            self.take(entry.seq)
            yield entry

    def take(self, seq: int) -> Entry | None:
        """The entry of ``seq``, no longer waiting (None if none is)."""
        found = self._by_seq.pop(seq, None)
        if found is None:
            return None
        self._seqs.remove(seq, 0)
        entry = found[1]
        name = entry.message.properties.message_id
        if name:
            seqs = self._names[name]
            seqs.discard(seq)
            if not seqs:
                del self._names[name]
        return entry

    def reschedule(self, seq: int, due: float) -> Entry | None:
        """The entry of ``seq``, due at ``due`` from now on."""
        found = self._by_seq.get(seq)
        if found is None:
            return None
        entry = found[1]
        self._by_seq[seq] = (due, entry)
        heapq.heappush(self._heap, (due, seq, next(self._order), entry))
        return entry

    def lookup(self, text: str) -> list[int]:
        """The seqs a user's id names: the entries whose message_id it is,
        or else, given as digits, the entry of that number if it has no
        message_id (as for held delayed messages, core/delayed.py)."""
        named = self._names.get(text)
        if named:
            return sorted(named)
        if not (text.isascii() and text.isdigit()):
            return []
        found = self._by_seq.get(int(text))
        return [] if found is None or found[1].message.properties.message_id else [int(text)]

    def due_of(self, seq: int) -> float | None:
        found = self._by_seq.get(seq)
        return None if found is None else found[0]

    def page(self, after: int = 0, limit: int = 100, due_from: float = float("-inf"),
             due_to: float = float("inf")) -> list[tuple[int, float, Entry]]:
        """(seq, due, entry) of entries with seqs above ``after``, due in
        [``due_from``, ``due_to``), in seq order."""
        page = []
        by_seq = self._by_seq
        for seq, _ in self._seqs.from_(after + 1):
            due, entry = by_seq[int(seq)]
            if due_from <= due < due_to:
                page.append((int(seq), due, entry))
                if len(page) == limit:
                    break
        return page

    def entries(self) -> Iterator[Entry]:
        for _, entry in self._by_seq.values():
            yield entry

    def clear(self) -> list[Entry]:
        """Every entry waiting, none waiting any more."""
        entries = list(self.entries())
        self._heap.clear()
        self._by_seq.clear()
        self._seqs.clear()
        self._names.clear()
        return entries
