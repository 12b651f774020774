"""Messages as the broker sees them: immutable content shared by every queue
it is routed to, and the per-queue entry that carries its mutable state."""

from __future__ import annotations

from typing import Any, NamedTuple

import attrs


class Properties(NamedTuple):
    """The AMQP ``basic`` content properties. Absent means ``None``.

    A NamedTuple rather than an attrs class: the codec builds one per
    published message, and tuple construction is the cheapest there is.
    """

    content_type: str | None = None
    content_encoding: str | None = None
    headers: dict[str, Any] | None = None
    delivery_mode: int | None = None
    priority: int | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    expiration: str | None = None
    message_id: str | None = None
    #: Seconds since the epoch, as on the wire.
    timestamp: int | None = None
    type: str | None = None
    user_id: str | None = None
    app_id: str | None = None
    cluster_id: str | None = None


#: Shared by every message published without properties, so they cost nothing.
EMPTY_PROPERTIES = Properties()

PERSISTENT = 2


@attrs.define(slots=True, eq=False, weakref_slot=False)
class Message:
    """What was published. Never mutated once routed: a copy routed to many
    queues is one object, and dead-lettering makes a new one."""

    exchange: str
    routing_key: str
    properties: Properties
    body: bytes
    #: Opaque cache for the protocol layer (the encoded content header), so a
    #: message delivered many times is encoded once. The core never reads it.
    wire_header: bytes | None = None
    #: BCC keys taken out of the headers before delivery. RabbitMQ keeps them
    #: among the message's routing keys, so dead-lettering still routes by them.
    bcc: tuple[str, ...] = ()
    # Opaque to the core, like wire_header: where durable storage keeps the
    # message (its id, its segment) and how many durable queues hold it.
    store_id: int | None = None
    store_segment: int = 0
    store_refs: int = 0

    @property
    def persistent(self) -> bool:
        return self.properties.delivery_mode == PERSISTENT

    @property
    def headers(self) -> dict[str, Any]:
        return self.properties.headers or {}


# Entry states. An entry is in exactly one of them.
READY = 0  # in its queue's ready list, deliverable
UNACKED = 1  # delivered, awaiting ack/nack/reject
DELAYED = 2  # requeued for a later retry (x-delayed-retry-*)
GONE = 3  # acked, dead-lettered or dropped; a tombstone if still indexed


@attrs.define(slots=True, eq=False, weakref_slot=False)
class Entry:
    """One message in one queue."""

    message: Message
    #: Publication order within the queue; requeued entries go back by it.
    seq: int
    priority: int = 0
    expires_at: float | None = None
    #: How often the message came back unsettled (RabbitMQ's x-delivery-count).
    delivery_count: int = 0
    redelivered: bool = False
    state: int = READY
    #: Segment and offset of durable storage holding this entry's record;
    #: segment 0 if not durable.
    store_segment: int = 0
    store_offset: int = -1
    #: The record at store_segment/store_offset is a spill: a transient
    #: message written only so that it can page out under memory pressure
    #: (never recovered, never removed by a record; see core/backing.py).
    spilled: bool = False

    @property
    def size(self) -> int:
        return len(self.message.body)
