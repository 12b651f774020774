"""Message groups: per-key order with competing consumers (an amqlite
extension; SQS FIFO's MessageGroupId, ActiveMQ's JMSXGroupID).

A classic queue declared with ``x-message-group-header: NAME`` puts each
message whose header NAME holds a string or a number into the group of that
value. At most ``x-message-group-in-flight`` (default 1) messages of a group
are out at once (unacked, or waiting out a retry delay), and a group's
messages go out in publish order; different groups go to any free consumer
in parallel. Messages without the header form no group and flow freely.

The queue keeps every ready message in its ready list as always, so counts,
TTL, priorities, paging and durability work unchanged. When the ready list
hands over a message whose group may not have it yet (full, or an earlier
member still waiting somewhere: behind on disk, or at a lower priority),
it is *parked* here, out of the ready list, until it is its group's turn.
Each group knows the seqs of its members that wait (ready or parked) and
of those out, so whether a message may go is one comparison: it is the
oldest that waits and the group has room. A requeued message goes back to
its original position, so it is again the head of its group.
"""

from __future__ import annotations

import heapq
from typing import Any, Hashable

from .message import DELAYED, Entry

HEADER_ARGUMENT = "x-message-group-header"
IN_FLIGHT_ARGUMENT = "x-message-group-in-flight"

#: Messages parked at most; beyond it the queue stops taking more from its
#: ready list until a group moves (parked messages cannot page to disk).
PARK_LIMIT = 10_000


class MessageGroup:
    __slots__ = ("key", "waiting", "_order", "out", "parked", "since")

    def __init__(self, key: Hashable, since: float) -> None:
        self.key = key
        #: Seqs of the members that wait: in the ready list (maybe on disk) or parked.
        self.waiting: set[int] = set()
        #: The same as a heap, with seqs that stopped waiting left behind
        #: until they reach the top.
        self._order: list[int] = []
        #: Seqs of the members out: delivered and unacked, or in a retry delay.
        self.out: set[int] = set()
        #: Members taken out of the ready list before their turn, by seq.
        self.parked: dict[int, Entry] = {}
        #: When the group got its first member (since it last had none).
        self.since = since

    @property
    def empty(self) -> bool:
        return not self.waiting and not self.out

    def wait(self, seq: int) -> None:
        self.waiting.add(seq)
        heapq.heappush(self._order, seq)
        if len(self._order) > 2 * len(self.waiting) + 64:
            self._order = sorted(self.waiting)

    def head(self) -> int | None:
        """The oldest member that waits."""
        order, waiting = self._order, self.waiting
        while order and order[0] not in waiting:
            heapq.heappop(order)
        return order[0] if order else None

    def go(self, seq: int) -> None:
        """A waiting member goes out."""
        self.waiting.discard(seq)
        self.out.add(seq)


class MessageGroups:
    """The groups of one queue."""

    def __init__(self, header: str, in_flight: int) -> None:
        self.header = header
        self.in_flight = in_flight
        self.groups: dict[Hashable, MessageGroup] = {}
        #: Groups whose parked head may go now, in the order they became so.
        self._runnable: dict[Hashable, None] = {}
        self.parked = 0
        self.parked_bytes = 0

    def key(self, entry: Entry) -> Hashable | None:
        """The entry's group, or None: no header, or a value that is not a
        string or a number (a table, a list: no group, as if absent)."""
        headers = entry.message.properties.headers
        if not headers:
            return None
        value: Any = headers.get(self.header)
        if isinstance(value, bytes):
            return value.decode("utf-8", "replace")
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return value
        return None

    def _group(self, entry: Entry) -> MessageGroup | None:
        key = self.key(entry)
        return None if key is None else self.groups.get(key)

    # -- membership -------------------------------------------------------

    def joined(self, entry: Entry, now: float) -> None:
        """A message entered the queue (published, restored, redriven in).
        A restored one waiting out a retry delay is out already."""
        key = self.key(entry)
        if key is None:
            return
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = MessageGroup(key, now)
        if entry.state == DELAYED:
            group.out.add(entry.seq)
        else:
            group.wait(entry.seq)

    def left(self, entry: Entry) -> None:
        """The message left the queue for good (acked, dead-lettered, expired, dropped)."""
        group = self._group(entry)
        if group is None:
            return
        seq = entry.seq
        if seq in group.out:
            group.out.discard(seq)
        elif seq in group.waiting:
            group.waiting.discard(seq)
            self._unpark(group, seq)
        if group.empty:
            del self.groups[group.key]
            self._runnable.pop(group.key, None)
        else:
            self._runnable[group.key] = None

    def returned(self, entry: Entry) -> None:
        """A message out came back to wait at its original position (a
        requeue, a channel closed, a retry delay over)."""
        group = self._group(entry)
        if group is None or entry.seq not in group.out:
            return
        group.out.discard(entry.seq)
        group.wait(entry.seq)
        self._runnable[group.key] = None

    # -- taking -------------------------------------------------------------

    def take(self, entry: Entry) -> bool:
        """The ready list handed over ``entry``: True if it may go out now
        (then it counts as out), False if it must wait (then it is parked)."""
        group = self._group(entry)
        if group is None:
            return True
        if len(group.out) < self.in_flight and group.head() == entry.seq:
            group.go(entry.seq)
            if len(group.out) < self.in_flight and group.parked:
                self._runnable[group.key] = None
            return True
        group.parked[entry.seq] = entry
        self.parked += 1
        self.parked_bytes += entry.size
        return False

    def next_parked(self) -> Entry | None:
        """A parked message whose turn has come, now out; or None."""
        runnable = self._runnable
        while runnable:
            key = next(iter(runnable))
            group = self.groups.get(key)
            if group is None or not group.parked or len(group.out) >= self.in_flight:
                del runnable[key]
                continue
            seq = group.head()
            entry = group.parked.get(seq) if seq is not None else None
            if seq is None or entry is None:
                del runnable[key]  # its oldest is still in the ready list
                continue
            self._unpark(group, seq)
            group.go(seq)
            if len(group.out) >= self.in_flight or not group.parked:
                del runnable[key]
            return entry
        return None

    def is_parked(self, entry: Entry) -> bool:
        group = self._group(entry)
        return group is not None and entry.seq in group.parked

    def _unpark(self, group: MessageGroup, seq: int) -> None:
        entry = group.parked.pop(seq, None)
        if entry is not None:
            self.parked -= 1
            self.parked_bytes -= entry.size

    def drain_parked(self) -> list[Entry]:
        """Every parked message (a purge); they stay members until they leave."""
        out = [entry for group in self.groups.values() for entry in group.parked.values()]
        for group in self.groups.values():
            group.parked.clear()
        self.parked = self.parked_bytes = 0
        return out

    # -- what the management API shows ---------------------------------------

    def oldest_since(self) -> float | None:
        """When the oldest group got its first member; None with no groups."""
        return min((group.since for group in self.groups.values()), default=None)
