"""Dead-lettering: the ``x-death`` bookkeeping RabbitMQ writes, and its cycle rule."""

from __future__ import annotations

import datetime
from typing import Any

from .fieldtypes import Long
from .message import Message

REJECTED = "rejected"
EXPIRED = "expired"
MAXLEN = "maxlen"
DELIVERY_LIMIT = "delivery_limit"


def routing_keys(message: Message) -> list[str]:
    """The routing key plus sender-selected CC and BCC keys (also those
    already taken out of the headers)."""
    keys = [message.routing_key]
    headers = message.properties.headers
    if headers:
        for name in ("CC", "BCC"):
            extra = headers.get(name)
            if isinstance(extra, list):
                keys.extend(k for k in extra if isinstance(k, str))
    keys.extend(message.bcc)
    return keys


def dead_letter(message: Message, queue: str, reason: str, now: float, exchange: str, routing_key: str | None) -> Message:
    """The message as re-published to the dead-letter exchange.

    One ``x-death`` entry per (queue, reason), newest first; a repeat death
    increments its entry's count and moves it to the front. The per-message
    ``expiration`` is removed (kept as ``original-expiration``) so the copy
    does not expire again in the dead-letter queue. As in RabbitMQ, the copy
    keeps routing by the original keys, CC and BCC included, unless
    ``routing_key`` overrides them: then the ``CC`` header is removed too.
    """
    props = message.properties
    headers = dict(props.headers or {})
    keys = [message.routing_key]
    cc = headers.get("CC")
    if isinstance(cc, list):
        keys.extend(k for k in cc if isinstance(k, str))
    headers.pop("BCC", None)
    deaths: list[dict[str, Any]] = [_long_count(d) for d in headers.get("x-death") or [] if isinstance(d, dict)]
    previous = next((d for d in deaths if d.get("queue") == queue and d.get("reason") == reason), None)
    entry: dict[str, Any] = {
        "count": Long(1),
        "reason": reason,
        "queue": queue,
        "time": datetime.datetime.fromtimestamp(int(now), tz=datetime.timezone.utc),
        "exchange": message.exchange,
        "routing-keys": keys,
    }
    if props.expiration is not None:
        entry["original-expiration"] = props.expiration
    if previous is not None:
        # RabbitMQ keeps the time of the first such death and bumps the count.
        deaths.remove(previous)
        entry["count"] = Long(int(previous.get("count", 1)) + 1)
        entry["time"] = previous.get("time", entry["time"])
    deaths.insert(0, entry)
    headers["x-death"] = deaths
    if "x-first-death-queue" not in headers:
        headers["x-first-death-queue"] = queue
        headers["x-first-death-reason"] = reason
        headers["x-first-death-exchange"] = message.exchange
    headers["x-last-death-queue"] = queue
    headers["x-last-death-reason"] = reason
    headers["x-last-death-exchange"] = message.exchange
    if routing_key is not None:
        headers.pop("CC", None)
    return Message(
        exchange=exchange,
        routing_key=message.routing_key if routing_key is None else routing_key,
        properties=props._replace(headers=headers, expiration=None),
        body=message.body,
        bcc=message.bcc if routing_key is None else (),
    )


def _long_count(death: dict[str, Any]) -> dict[str, Any]:
    # Counts travel as 64-bit longs, as RabbitMQ writes them; decoding gave plain ints.
    count = death.get("count")
    return {**death, "count": Long(count)} if type(count) is int else death


def is_cycle(message: Message, target_queue: str) -> bool:
    """RabbitMQ's rule: a message reaching a queue it already died in is
    dropped, unless a consumer rejected it somewhere along that cycle (then a
    human or program is in the loop, as in retry-through-a-DLX patterns).

    ``message`` already carries its newest death, as in RabbitMQ.
    """
    deaths = message.headers.get("x-death")
    if not deaths:
        return False
    for death in deaths:
        if death.get("reason") == REJECTED:
            return False
        if death.get("queue") == target_queue:
            return True
    return False
