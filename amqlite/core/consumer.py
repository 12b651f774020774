"""A consumer: a subscription of one channel to one queue, with its credit."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from .channel import Channel
    from .queue import Queue


@attrs.define(slots=True, eq=False)
class Consumer:
    tag: str
    channel: Channel
    queue: Queue
    no_ack: bool = False
    exclusive: bool = False
    #: x-priority: higher-priority consumers with credit are served first.
    priority: int = 0
    #: basic.qos prefetch_count in force when the consumer started; 0 = unlimited.
    prefetch: int = 0
    arguments: dict[str, Any] = attrs.field(factory=dict)
    unacked: int = 0
    #: Seconds a delivery to it may stay unacked before its channel is
    #: closed (x-consumer-timeout); None: no limit.
    timeout: float | None = None

    def has_credit(self) -> bool:
        return self.credit() > 0

    def credit(self) -> int:
        """How many deliveries it may take now: each takes one of the
        channel's buffer and, with manual acks, one of its prefetch and of
        the channel's global prefetch."""
        channel = self.channel
        room = channel.buffer_limit - channel.buffered
        if self.no_ack or room <= 0:
            return max(room, 0)
        if self.prefetch:
            room = min(room, self.prefetch - self.unacked)
        limit = channel.global_prefetch
        if limit:
            room = min(room, limit - channel.consumer_unacked)
        return max(room, 0)
