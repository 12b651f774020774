"""Small helpers for driving the pure core in tests."""

from __future__ import annotations

from typing import Any

from amqlite.core.broker import Broker
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


def dead_letter_broker(dlq_arguments: dict[str, Any] | None = None) -> tuple[Broker, Channel]:
    """Queues "a" and "b" (bound to the direct exchange "work" by their
    names) dead-letter through the fanout exchange "dlx" into "dlq"."""
    broker = Broker()
    ch = broker.connect().open_channel()
    ch.declare_exchange("dlx", "fanout")
    ch.declare_queue("dlq", now=0, arguments=dlq_arguments)
    ch.bind_queue("dlq", "dlx")
    ch.declare_exchange("work", "direct")
    for name in ("a", "b"):
        ch.declare_queue(name, now=0, arguments={"x-dead-letter-exchange": "dlx"})
        ch.bind_queue(name, "work", name)
    return broker, ch


def reject_all(ch: Channel, queue: str, now: float = 0) -> None:
    """Get and reject (without requeue) every message of ``queue``."""
    while (got := ch.get(queue, now=now)) is not None:
        ch.reject(got.delivery_tag, requeue=False, now=now)
