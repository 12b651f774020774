"""Broker-wide message counters, RabbitMQ's global counters
(``rabbit_global_counters``): what Prometheus exposes as
``rabbitmq_global_messages_*_total``.

Plain integers, bumped where the event happens (``stats.received += 1``),
since most are on the AMQP hot path; never decremented, so each is a
Prometheus counter. The driver reads them per scrape.
"""

from __future__ import annotations

import attrs

from . import deadletter

#: Where a dead-lettered message went, RabbitMQ's ``dead_letter_strategy``
#: label: nowhere (the queue has no dead-letter exchange) or republished
#: once to it (classic queues' only strategy).
DISABLED = "disabled"
AT_MOST_ONCE = "at_most_once"

REASONS = (deadletter.EXPIRED, deadletter.REJECTED, deadletter.MAXLEN, deadletter.DELIVERY_LIMIT)


def _dead_letter_counts() -> dict[tuple[str, str], int]:
    return {(reason, strategy): 0 for reason in REASONS for strategy in (DISABLED, AT_MOST_ONCE)}


@attrs.define(eq=False)
class Stats:
    #: Publishes accepted for routing (basic.publish, the embedded publish).
    received: int = 0
    #: ... of them on a channel in confirm mode.
    received_confirm: int = 0
    #: Messages that reached at least one queue (counted once, not per queue).
    routed: int = 0
    #: Unroutable messages dropped (not mandatory) or returned (mandatory).
    unroutable_dropped: int = 0
    unroutable_returned: int = 0
    #: Publisher confirms (basic.ack) sent, per message.
    confirmed: int = 0
    #: Deliveries by how they went out; their sum is RabbitMQ's ``delivered``.
    delivered_consume_auto_ack: int = 0
    delivered_consume_manual_ack: int = 0
    delivered_get_auto_ack: int = 0
    delivered_get_manual_ack: int = 0
    #: Deliveries (consume or get) of a message delivered before.
    redelivered: int = 0
    #: basic.get that found the queue empty.
    get_empty: int = 0
    #: Messages acknowledged by clients (auto-ack deliveries are not).
    acknowledged: int = 0
    #: Messages dead-lettered, by (reason, strategy): a message that expires
    #: in a queue without a dead-letter exchange counts as ``disabled``.
    dead_lettered: dict[tuple[str, str], int] = attrs.field(factory=_dead_letter_counts)
    #: Scheduled messages changed (docs/concepts.md), by (action, kind):
    #: cancelled or rescheduled (fire now included), held by a delayed
    #: exchange or a queue's retry.
    scheduled_changes: dict[tuple[str, str], int] = attrs.field(
        factory=lambda: {(action, kind): 0 for action in ("cancelled", "rescheduled") for kind in ("held", "retry")})

    @property
    def delivered(self) -> int:
        return (self.delivered_consume_auto_ack + self.delivered_consume_manual_ack
                + self.delivered_get_auto_ack + self.delivered_get_manual_ack)


@attrs.define(eq=False)
class QueueStats:
    """One queue's share of the counters, for its ``message_stats`` in the
    management API: messages it took, handed out (consume or get), handed
    out again, and had acknowledged."""

    publish: int = 0
    deliver_get: int = 0
    redeliver: int = 0
    ack: int = 0
