"""What a partition shows readers of committed records only (Kafka's
``read_committed``): its last stable offset and its aborted transactions.

Kafka's rules (the broker's ``ProducerStateManager`` and transaction
index): a transaction's records are written to the partition as they come
(each batch flagged transactional, with its producer id), and its end is a
control batch, the commit or abort marker. So each partition keeps:

- the first offset of each producer's open transaction. The last stable
  offset (LSO) is the smallest of them, or the end when none is open: a
  ``read_committed`` reader is never served past it, because what follows
  may still be aborted.
- each aborted transaction: producer id, its first offset and its
  marker's offset. A Fetch hands the ones that overlap what it sends to
  the reader, which drops that producer's records from the first offset
  up to the marker (the client does the filtering, as with Kafka).
- the offsets of the aborted transactions' batches, for readers that
  filter here: AMQP consumers, which get messages rather than batches,
  skip them (core/stream.py).
- the transactions ended by a marker not yet on disk (first offset and
  marker's offset): a crash before the marker's write would have them
  aborted at start-up, so a reader bounded by what is on disk (Kafka's
  Fetch) must take them for open until the marker is written.

Pure and rebuilt at recovery from the batches' headers in log order, as
the idempotence state is (core/idempotence.py).
"""

from __future__ import annotations

import bisect
from typing import NamedTuple


#: Sorts after any end offset: bisects to the last range starting at or before an offset.
_AFTER_ANY = float("inf")


class Aborted(NamedTuple):
    producer_id: int
    first_offset: int
    #: The offset of its abort marker.
    last_offset: int


class Visibility:
    """One partition's open and aborted transactions."""

    __slots__ = ("open", "_batches", "_aborted", "_aborted_ends", "_aborted_ranges", "_ending")

    def __init__(self) -> None:
        #: Producer id -> first offset of its open transaction here.
        self.open: dict[int, int] = {}
        #: The batches of each open transaction: (first offset, end).
        self._batches: dict[int, list[tuple[int, int]]] = {}
        #: Aborted transactions in marker order, and their markers' offsets.
        self._aborted: list[Aborted] = []
        self._aborted_ends: list[int] = []
        #: The aborted transactions' batches, (first offset, end) in order.
        self._aborted_ranges: list[tuple[int, int]] = []
        #: Ended transactions whose marker may not be on disk yet, in
        #: marker order: (marker offset, first offset).
        self._ending: list[tuple[int, int]] = []

    def stable(self, end: int) -> int:
        """The last stable offset of a partition read up to ``end``: a
        transaction whose marker is at or after ``end`` is still open there."""
        ending = self._ending
        at = bisect.bisect_left(ending, (end, -1))
        return min(end, min(self.open.values(), default=end), min((first for _, first in ending[at:]), default=end))

    def written(self, end: int) -> None:
        """Everything before ``end`` is on disk: markers there are settled
        (``end`` only grows)."""
        at = bisect.bisect_left(self._ending, (end, -1))
        if at:
            del self._ending[:at]

    def appended(self, producer_id: int, offset: int, count: int) -> None:
        """A transactional batch of ``producer_id`` at ``offset`` of ``count``
        records: it opens the producer's transaction here unless one is open."""
        self.open.setdefault(producer_id, offset)
        self._batches.setdefault(producer_id, []).append((offset, offset + count))

    def ended(self, producer_id: int, marker_offset: int, committed: bool) -> bool:
        """A marker at ``marker_offset`` ends the producer's transaction here;
        False if none was open (a marker written again is harmless)."""
        first = self.open.pop(producer_id, None)
        batches = self._batches.pop(producer_id, [])
        if first is None:
            return False
        self._ending.append((marker_offset, first))
        if not committed:
            self._aborted.append(Aborted(producer_id, first, marker_offset))
            self._aborted_ends.append(marker_offset)
            for batch in batches:
                bisect.insort(self._aborted_ranges, batch)
        return True

    def aborted(self, offset: int) -> bool:
        """Whether the record at ``offset`` belongs to an aborted transaction."""
        ranges = self._aborted_ranges
        if not ranges:
            return False
        at = bisect.bisect_right(ranges, (offset, _AFTER_ANY)) - 1
        return at >= 0 and ranges[at][0] <= offset < ranges[at][1]

    def aborted_between(self, start: int, stop: int) -> list[Aborted]:
        """The aborted transactions with records in ``[start, stop)``."""
        at = bisect.bisect_left(self._aborted_ends, start)
        return [aborted for aborted in self._aborted[at:] if aborted.first_offset < stop]

    def truncated(self, first: int) -> None:
        """Retention removed everything before ``first``."""
        at = bisect.bisect_left(self._aborted_ends, first)
        if at:
            del self._aborted[:at]
            del self._aborted_ends[:at]
        ranges = self._aborted_ranges
        while ranges and ranges[0][1] <= first:
            del ranges[0]
        # An open transaction whose first records are gone holds the last
        # stable offset at the log start, as Kafka clamps its first
        # unstable offset: never below what a reader can fetch.
        for producer_id, offset in self.open.items():
            if offset < first:
                self.open[producer_id] = first
        self._ending = [(marker, max(offset, first)) for marker, offset in self._ending]
