"""The reference RabbitMQ that differential tests compare against."""

from __future__ import annotations

import functools
import uuid

import pika
import pika.exceptions

RABBITMQ = ("127.0.0.1", 5672)


@functools.cache
def rabbitmq_unusable() -> str | None:
    """Why the reference RabbitMQ can't serve as one, or None when it can.

    A reference that accepts connections but fails every declare (seen after a
    load test exhausted it: 541 INTERNAL_ERROR on each queue.declare) would fail
    every differential test for a reason that is not amqlite's, so it is
    probed once with a real declare, and the tests skip saying why.
    """
    params = pika.ConnectionParameters(*RABBITMQ, credentials=pika.PlainCredentials("guest", "guest"),
                                       socket_timeout=2, blocked_connection_timeout=5, connection_attempts=1)
    try:
        connection = pika.BlockingConnection(params)
    except pika.exceptions.AMQPError as error:
        return f"reference RabbitMQ is not reachable at {RABBITMQ[0]}:{RABBITMQ[1]} ({error!r})"
    try:
        channel = connection.channel()
        queue = f"reference-probe-{uuid.uuid4().hex[:12]}"
        channel.queue_declare(queue, arguments={"x-message-ttl": 1000})
        channel.queue_delete(queue)
    except pika.exceptions.AMQPError as error:
        return f"reference RabbitMQ at {RABBITMQ[0]}:{RABBITMQ[1]} is unhealthy: a queue.declare failed ({error!r})"
    finally:
        if connection.is_open:
            connection.close()
    return None


def rabbitmq_available() -> bool:
    return rabbitmq_unusable() is None
