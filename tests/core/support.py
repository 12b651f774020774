"""Small helpers for driving the pure core in tests."""

from __future__ import annotations

from typing import Any

from amqlite.core.channel import Channel
from amqlite.core.events import ConsumerCancelled, Deliver
from amqlite.core.message import Properties


def deliveries(ch: Channel, *, now: float = 0.0) -> list[Deliver]:
    """Take every Deliver event from ``ch``'s outbox, as a driver would."""
    events = [e for e in ch.outbox if isinstance(e, Deliver)]
    ch.outbox = type(ch.outbox)(e for e in ch.outbox if not isinstance(e, Deliver))
    if events:
        ch.delivered(len(events), now=now)
    return events


def cancellations(ch: Channel) -> list[str]:
    return [e.consumer_tag for e in ch.outbox if isinstance(e, ConsumerCancelled)]


def bodies(events: list[Any]) -> list[bytes]:
    return [e.message.body for e in events]


def drain_get(ch: Channel, queue: str, *, now: float = 0.0) -> list[bytes]:
    """basic.get with no_ack until the queue is empty; the bodies in order."""
    out = []
    while (result := ch.get(queue, now=now, no_ack=True)) is not None:
        out.append(result.message.body)
    return out


def props(**kwargs: Any) -> Properties:
    return Properties(**kwargs)


def headers_of(message: Any) -> dict[str, Any]:
    return message.properties.headers or {}
