"""Dead-letter redrive: move messages out of a dead-letter queue, back to
the queue each one died in, in one step.

RabbitMQ has no such operation (rabbitmq-server #10937): users shovel the
messages back by hand or with a script, and lose or duplicate some when the
script dies half-way. Here it is one synchronous core operation, so every
message is moved exactly once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .arguments import message_ttl
from .message import Entry, Message

if TYPE_CHECKING:
    from .queue import Queue
    from .vhost import VirtualHost


def origin(message: Message) -> tuple[str, str, str] | None:
    """(queue, exchange, routing key) the message had when it last died."""
    deaths = message.headers.get("x-death")
    if not deaths or not isinstance(deaths[0], dict):
        return None
    death = deaths[0]
    keys = death.get("routing-keys") or [message.routing_key]
    queue, exchange = death.get("queue"), death.get("exchange")
    if not isinstance(queue, str) or not isinstance(exchange, str):
        return None
    return queue, exchange, keys[0] if isinstance(keys[0], str) else message.routing_key


def redrive(vhost: VirtualHost, source: Queue, now: float, *, to: str | None = None, limit: int | None = None) -> int:
    """Move up to ``limit`` ready messages from ``source`` into the queue
    they died in (or into ``to``), in order. Returns how many moved.

    A moved message gets its original exchange and routing key back and a
    fresh delivery count; its ``x-death`` history stays, so a message that
    fails again shows every round. Messages with no known origin, or whose
    queue is gone or refuses them (x-overflow), stay where they were.
    """
    moved = 0
    kept = []
    while limit is None or moved < limit:
        entry = source.fetch(now)
        if not isinstance(entry, Entry):
            break  # empty, or the rest is on disk (a later redrive moves it)
        found = origin(entry.message)
        name = to if to is not None else found[0] if found is not None else None
        destination = vhost.queues.get(name) if name is not None else None
        if destination is None or destination is source:
            kept.append(entry)
            continue
        message = entry.message
        if found is not None:
            _, exchange, routing_key = found
            message = Message(exchange, routing_key, message.properties, message.body)
        if destination.enqueue(message, message_ttl(message.properties.expiration), now):
            source.settle(entry)
            moved += 1
        else:
            kept.append(entry)
    for entry in kept:
        source.put_back(entry, now)
    return moved
