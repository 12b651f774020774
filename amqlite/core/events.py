"""What the core pushes to a channel on its own initiative.

Synchronous results (a declare's counts, a publish's outcome) are return
values; these events are the asynchronous pushes a driver must carry to the
client: deliveries, and consumers cancelled by the server.
"""

from __future__ import annotations

import attrs

from .errors import PreconditionFailed
from .message import Message


@attrs.define(slots=True)
class Deliver:
    """A message for a consumer. Mutable, as AMQP methods are (amqp/spec.py):
    frozen construction costs three times as much, and there is one per
    delivery. Treat it as a value all the same."""

    consumer_tag: str
    delivery_tag: int
    redelivered: bool
    message: Message
    #: Carried for the embedded API and x-delivery-count; 0 on first delivery.
    delivery_count: int
    #: A stream's delivery: the message's offset, which the delivery carries
    #: as its x-stream-offset header, as RabbitMQ's do. None from a queue.
    stream_offset: int | None = None


@attrs.frozen(slots=True)
class ConsumerCancelled:
    """The server cancelled a consumer, e.g. because its queue was deleted."""

    consumer_tag: str


@attrs.frozen(slots=True)
class AckTimedOut:
    """A delivery stayed unacked past its consumer timeout: the core has
    closed the channel and requeued what it held; the driver tells the
    client with ``error`` (channel.close 406, as RabbitMQ 3.12+)."""

    error: PreconditionFailed
    #: The delivery that timed out, for the log line: its consumer's tag
    #: (None for basic.get), its queue and its delivery tag.
    consumer_tag: str | None
    queue: str
    delivery_tag: int


@attrs.frozen(slots=True)
class PublishOutcome:
    """What happened to one publish.

    ``routed`` counts the queues that took the message. ``returned`` is set
    for a mandatory message that reached no queue (the client gets
    basic.return 312). ``rejected`` is set when a queue refused it
    (x-overflow reject-publish): a publisher in confirm mode gets a nack.
    ``streamed`` is set when a stream took it: it is on its way to disk
    whatever its delivery mode, and its confirm waits for that.
    """

    routed: int
    returned: bool = False
    rejected: bool = False
    delayed: bool = False
    streamed: bool = False
    #: An exchange or queue with deduplication knew its id and dropped it:
    #: still an ack for the publisher, which may then move on.
    duplicate: bool = False
    #: It carried ``x-delay-cancel`` to a delayed exchange: it cancelled a
    #: held message (or found none: then returned, if mandatory) and is
    #: acked once the cancel is on disk.
    cancel: bool = False


@attrs.frozen(slots=True)
class WaitForDisk:
    """A fetch's answer when the next ready message is on disk only (paged)
    and on its way back: ask again once storage has read it. Not empty:
    basic.get-empty would be wrong, as RabbitMQ answers once it has it."""


#: The one instance.
WAIT_FOR_DISK = WaitForDisk()


@attrs.frozen(slots=True)
class GetResult:
    delivery_tag: int
    redelivered: bool
    message: Message
    message_count: int
    delivery_count: int
