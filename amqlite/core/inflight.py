"""How long deliveries have been out: the visible side of long tasks
(issue 25 part 4). Read when the management API or Prometheus asks, never
on the hot path: a channel's unacked deliveries are in delivery order, each
with its delivery time, so the oldest of a queue or a consumer on a channel
is the first record that names it."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .broker import Broker
    from .consumer import Consumer
    from .queue import Queue


def consumer_oldest(consumer: Consumer) -> float | None:
    """When the consumer's oldest unacked delivery went out; None if none."""
    if not consumer.unacked:
        return None
    for _, _, holder, delivered_at in consumer.channel.unacked.values():
        if holder is consumer:
            return delivered_at
    return None


def queue_oldest(broker: Broker, queue: Queue) -> float | None:
    """When the queue's oldest unacked delivery (consumed or got) went out.

    Usually every unacked delivery is held by one of the queue's consumers,
    and their oldest are found at the front of their channels; only when
    some are not (basic.get, a cancelled consumer's) are all channels read."""
    if not queue.unacked:
        return None
    oldest = None
    held = 0
    for consumer in queue.consumers:
        held += consumer.unacked
        at = consumer_oldest(consumer)
        if at is not None and (oldest is None or at < oldest):
            oldest = at
    if held == queue.unacked:
        return oldest
    for connection in broker.connections:
        for channel in connection.channels.values():
            for _, source, _, delivered_at in channel.unacked.values():
                if source is queue:
                    if oldest is None or delivered_at < oldest:
                        oldest = delivered_at
                    break
    return oldest


def age(since: float | None, now: float) -> float | None:
    """Seconds from ``since`` to ``now``, rounded to milliseconds; None stays None."""
    return None if since is None else round(max(0.0, now - since), 3)
