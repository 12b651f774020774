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
        channel = self.channel
        if channel.buffered >= channel.buffer_limit:
            return False
        if self.no_ack:
            return True
        if self.prefetch and self.unacked >= self.prefetch:
            return False
        limit = channel.global_prefetch
        return not limit or channel.consumer_unacked < limit
