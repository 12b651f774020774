"""Consumer groups on streams, with offsets the broker stores (an amqlite
extension: over AMQP 0-9-1 RabbitMQ leaves offset tracking to the
application, Kafka stores it for the group).

A consumer joins group NAME with the argument ``x-stream-group: NAME`` on
a stream. A group's *member* is a connection: one worker process, however
many partition streams it consumes. On each stream one member is active,
as with single-active-consumer, so the stream's order holds within the
group; the others wait and hear nothing until they take over. When a
group spans several streams (the partitions of a partitioned stream), its
members share them: partition *i*, in name order, goes to member *i* mod
*n*, in joining order, and the broker rebalances whenever a member joins
or leaves.

The committed offset of a group on a stream is the first offset it has not
finished: everything before it was acked. It advances as the active member
acks, is kept durably (one record per group per journal write), and is
where a member that becomes active starts. So delivery is at least once:
whatever the previous active member had not acked (its unacked tail, and
anything it acked past a message it never acked) comes again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from .connection import Connection
    from .consumer import Consumer
    from .stream import Stream

GROUP_ARGUMENT = "x-stream-group"


@attrs.define(slots=True, eq=False)
class GroupOffset:
    """A group's progress on one stream."""

    group: str
    #: The first offset not yet finished: everything before it was acked.
    committed: int
    #: The consumer delivering to the group now, if any.
    active: Consumer | None = None
    #: Offsets delivered to the active consumer and not acked, in order.
    in_flight: dict[int, None] = attrs.field(factory=dict)
    #: The next offset to deliver to the active consumer.
    delivered_to: int = 0
    #: The metadata string of the commit that set ``committed`` (Kafka's
    #: OffsetCommit carries one; an AMQP ack moving the offset clears it).
    metadata: str = ""

    def restart(self, active: Consumer | None, first: int) -> None:
        """A new active consumer (or none) starts over at the committed offset."""
        self.committed = max(self.committed, first)
        self.active = active
        self.in_flight.clear()
        self.delivered_to = self.committed

    def delivered(self, offset: int) -> None:
        self.in_flight[offset] = None
        self.delivered_to = offset + 1

    def acked(self, offset: int) -> bool:
        """True if the committed offset moved."""
        if offset not in self.in_flight:
            return False  # delivered before a takeover: it comes again anyway
        del self.in_flight[offset]
        committed = next(iter(self.in_flight), self.delivered_to)
        if committed <= self.committed:
            return False
        self.committed = committed
        return True

    def truncated(self, first: int) -> None:
        """Retention removed everything before ``first``."""
        if self.committed < first:
            self.committed = first
            self.in_flight = {offset: None for offset in self.in_flight if offset >= first}
            self.delivered_to = max(self.delivered_to, first)


class ConsumerGroup:
    """One group's members and which of them is active on each stream."""

    def __init__(self, name: str) -> None:
        self.name = name
        #: Members in joining order.
        self.members: dict[Connection, None] = {}
        #: The group's consumers on each stream, in joining order.
        self.consumers: dict[Stream, list[Consumer]] = {}

    def join(self, stream: Stream, consumer: Consumer) -> None:
        self.members.setdefault(consumer.channel.connection)
        self.consumers.setdefault(stream, []).append(consumer)

    def leave(self, stream: Stream, consumer: Consumer) -> None:
        consumers = self.consumers.get(stream, [])
        if consumer in consumers:
            consumers.remove(consumer)
        if not consumers:
            self.consumers.pop(stream, None)
        member = consumer.channel.connection
        if not any(c.channel.connection is member for cs in self.consumers.values() for c in cs):
            self.members.pop(member, None)

    def drop_stream(self, stream: Stream) -> None:
        for consumer in list(self.consumers.get(stream, [])):
            self.leave(stream, consumer)

    @property
    def empty(self) -> bool:
        return not self.consumers

    def rebalance(self, now: float) -> None:
        """Make one consumer active on each stream, sharing the streams
        out among members; streams whose active consumer stays are left
        alone."""
        members = list(self.members)
        for i, stream in enumerate(sorted(self.consumers, key=lambda s: s.name)):
            candidates = self.consumers[stream]
            preferred = members[i % len(members)]
            chosen = next((c for c in candidates if c.channel.connection is preferred), candidates[0])
            stream.activate(self.name, chosen, now)
