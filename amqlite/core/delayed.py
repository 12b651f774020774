"""The messages a delayed-message exchange holds until they are due.

Millions may be held for days, so they cannot all stay in memory. The near
future is a heap of messages in memory; the far future is in buckets of one
minute of due times. A held message journalled in a HOLD record and already
written leaves memory once it is in a far bucket: the bucket keeps 24 bytes
for it (due time, message id, and where its record is). A bucket comes back
PRELOAD seconds before it starts: its messages are read back from disk (in
a worker thread, through the journal's page-in path) and join the heap, so
they fire on time.

``horizon`` separates the two: a message due before it goes to the heap,
one due at or after it to a bucket. It starts at infinity (everything in
memory) and comes down when the heap outgrows its budget.
"""

from __future__ import annotations

import heapq
import itertools
import math
from array import array
from typing import Callable, Iterator

import attrs

from .message import Message
from .ready import PagedRef

#: Seconds of due times per far bucket.
BUCKET = 60.0
#: Seconds before its start that a far bucket is brought back.
PRELOAD = 5.0


@attrs.define(slots=True, eq=False)
class _Bucket:
    """Held messages due within one BUCKET."""

    #: Still in memory: (due, message, record segment, record offset);
    #: segment 0 when not journalled (it never leaves memory).
    messages: list[tuple[float, Message, int, int]] = attrs.field(factory=list)
    #: On disk only, one column each: due, message id, record segment and offset.
    dues: array[float] = attrs.field(factory=lambda: array("d"))
    ids: array[int] = attrs.field(factory=lambda: array("Q"))
    segments: array[int] = attrs.field(factory=lambda: array("I"))
    offsets: array[int] = attrs.field(factory=lambda: array("I"))
    #: Brought back, its paged messages to be read from disk; then the
    #: read under way.
    wanted: bool = False
    reading: bool = False

    def __len__(self) -> int:
        return len(self.messages) + len(self.dues)


class HeldMessages:
    def __init__(self, budget: int) -> None:
        #: Messages the heap keeps before the horizon comes down.
        self.budget = budget
        self.horizon = math.inf
        self._near: list[tuple[float, int, Message, int, int]] = []
        self._order = itertools.count()
        self._far: dict[int, _Bucket] = {}
        self._far_keys: list[int] = []  # heap of the keys of _far
        #: Buckets with messages still in memory, to page out after a write.
        self._unpaged: set[int] = set()
        self.count = 0
        #: Heap size at which to try lowering the horizon again.
        self._check_at = budget + 1

    def __len__(self) -> int:
        return self.count

    @property
    def has_unpaged(self) -> bool:
        """Far buckets hold messages in memory that may page out."""
        return bool(self._unpaged)

    @property
    def paged(self) -> int:
        return sum(len(bucket.dues) for bucket in self._far.values())

    # -- holding ----------------------------------------------------------

    def hold(self, message: Message, due: float, segment: int = 0, offset: int = 0) -> bool:
        """Hold a message (``segment``/``offset``: its HOLD record). True if
        the heap outgrew its budget: page out after the next write."""
        self.count += 1
        if due < self.horizon:
            heapq.heappush(self._near, (due, next(self._order), message, segment, offset))
            if len(self._near) >= self._check_at:
                self._lower_horizon()
                return True
            return False
        self._bucket(due).messages.append((due, message, segment, offset))
        self._unpaged.add(_key(due))
        return segment != 0

    def _bucket(self, due: float) -> _Bucket:
        key = _key(due)
        bucket = self._far.get(key)
        if bucket is None:
            bucket = self._far[key] = _Bucket()
            heapq.heappush(self._far_keys, key)
        return bucket

    def _lower_horizon(self) -> None:
        """Keep about half the budget in the heap: the rest, from a bucket
        boundary on, moves to far buckets (and pages out once written)."""
        dues = sorted(item[0] for item in self._near)
        horizon = _key(dues[self.budget // 2]) * BUCKET
        # Not before a sort's worth of holds from now, whatever happens.
        self._check_at = len(self._near) + max(1, self.budget // 2)
        if horizon <= dues[0] + PRELOAD + BUCKET:
            return  # everything here is due soon: nothing to gain
        keep = []
        for item in self._near:
            due, _, message, segment, offset = item
            if due < horizon:
                keep.append(item)
            else:
                self._bucket(due).messages.append((due, message, segment, offset))
                self._unpaged.add(_key(due))
        heapq.heapify(keep)
        self._near = keep
        self.horizon = horizon
        self._check_at = max(self.budget + 1, len(keep) + max(1, self.budget // 2))

    def restore(self, due: float, msg_id: int, segment: int, offset: int) -> None:
        """A held message recovered from the journal: on disk only."""
        self.count += 1
        bucket = self._bucket(due)
        bucket.dues.append(due)
        bucket.ids.append(msg_id)
        bucket.segments.append(segment)
        bucket.offsets.append(offset)
        self.horizon = min(self.horizon, _key(due) * BUCKET)

    # -- time ---------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When something is due: the heap's first message, or the time to
        bring the next far bucket back."""
        near = self._near[0][0] if self._near else math.inf
        while self._far_keys and self._far_keys[0] not in self._far:
            heapq.heappop(self._far_keys)
        far = self._far_keys[0] * BUCKET - PRELOAD if self._far_keys else math.inf
        deadline = min(near, far)
        return None if deadline == math.inf else deadline

    def peek_due(self) -> tuple[float, Message] | None:
        if not self._near:
            return None
        due, _, message, _, _ = self._near[0]
        return due, message

    def pop(self) -> Message:
        self.count -= 1
        return heapq.heappop(self._near)[2]

    def bring_back(self, now: float, read: Callable[[int, int], Message] | None = None) -> bool:
        """Far buckets starting within PRELOAD of ``now`` come back: their
        messages in memory join the heap; True if some must be read from
        disk first (see :meth:`page_in_requests`). With ``read`` (start-up,
        which may block) they are read at once instead."""
        reads = False
        keys = self._far_keys
        while keys and keys[0] * BUCKET - PRELOAD <= now:
            key = keys[0]
            bucket = self._far.get(key)
            if bucket is None:
                heapq.heappop(keys)
                continue
            for due, message, segment, offset in bucket.messages:
                heapq.heappush(self._near, (due, next(self._order), message, segment, offset))
            bucket.messages.clear()
            self._unpaged.discard(key)
            self.horizon = max(self.horizon, (key + 1) * BUCKET)
            if bucket.dues and read is not None:
                refs = [(bucket.segments[i], bucket.offsets[i], i, 0) for i in range(len(bucket.dues))]
                self.paged_in(key, refs, [read(segment, offset) for segment, offset, _, _ in refs])
                heapq.heappop(keys)
                continue
            if bucket.dues:
                bucket.wanted = True
                reads = True
                heapq.heappop(keys)  # stays in _far until read
                continue
            del self._far[key]
            heapq.heappop(keys)
        return reads

    # -- paging -------------------------------------------------------------

    def page_out(self, is_written: Callable[[int, int], bool]) -> int:
        """Messages in far buckets whose HOLD record is on disk leave memory."""
        paged = 0
        for key in list(self._unpaged):
            bucket = self._far.get(key)
            if bucket is None:
                self._unpaged.discard(key)
                continue
            kept = []
            for item in bucket.messages:
                due, message, segment, offset = item
                if segment and message.store_id is not None and is_written(segment, offset):
                    bucket.dues.append(due)
                    bucket.ids.append(message.store_id)
                    bucket.segments.append(segment)
                    bucket.offsets.append(offset)
                    paged += 1
                else:
                    kept.append(item)
            bucket.messages = kept
            if not kept:
                self._unpaged.discard(key)
        return paged

    def page_in_requests(self) -> list[tuple[int, list[PagedRef]]]:
        """(bucket key, refs) of every bucket being brought back; a ref's
        third field is the message's index in its bucket."""
        requests = []
        for key, bucket in self._far.items():
            if bucket.wanted and not bucket.reading:
                bucket.reading = True
                requests.append((key, [(bucket.segments[i], bucket.offsets[i], i, 0) for i in range(len(bucket.dues))]))
        return requests

    def paged_in(self, key: int, refs: list[PagedRef], messages: list[Message]) -> None:
        bucket = self._far.pop(key, None)
        if bucket is None:
            return
        for (segment, offset, i, _), message in zip(refs, messages):
            heapq.heappush(self._near, (bucket.dues[i], next(self._order), message, segment, offset))

    def page_in_failed(self, key: int) -> None:
        """The read is tried again when the timer next fires."""
        bucket = self._far.get(key)
        if bucket is not None:
            bucket.wanted = bucket.reading = False
            heapq.heappush(self._far_keys, key)

    def in_memory(self) -> Iterator[tuple[float, Message]]:
        """(due, message) of every message held in memory (all of them
        without a journal)."""
        for due, _, message, _, _ in self._near:
            yield due, message
        for bucket in self._far.values():
            for due, message, _, _ in bucket.messages:
                yield due, message

    def records(self) -> Iterator[tuple[int, int]]:
        """(message id, HOLD segment) of every journalled message held."""
        for _, _, message, segment, _ in self._near:
            if segment and message.store_id is not None:
                yield message.store_id, segment
        for bucket in self._far.values():
            for _, message, segment, _ in bucket.messages:
                if segment and message.store_id is not None:
                    yield message.store_id, segment
            yield from zip(bucket.ids, bucket.segments)

    def drop_all(self) -> list[Message | None]:
        """Everything held, gone: the messages (None for those on disk only)."""
        dropped: list[Message | None] = [item[2] for item in self._near]
        for bucket in self._far.values():
            dropped.extend(message for _, message, _, _ in bucket.messages)
            dropped.extend([None] * len(bucket.dues))
        self._near.clear()
        self._far.clear()
        self._far_keys.clear()
        self._unpaged.clear()
        self.count = 0
        return dropped


def _key(due: float) -> int:
    return math.floor(due / BUCKET)
