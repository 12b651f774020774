"""The server answers a real client end to end (scenarios live beside this)."""

from __future__ import annotations

import pika

from .conftest import BrokerUnderTest


def test_pika_publish_get_consume(broker: BrokerUnderTest) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        channel = connection.channel()
        queue = broker.name("smoke")
        channel.queue_declare(queue, exclusive=True)
        channel.confirm_delivery()
        for i in range(3):
            channel.basic_publish("", queue, b"m%d" % i)
        method, _, body = channel.basic_get(queue, auto_ack=True)
        assert body == b"m0" and method.message_count == 2
        bodies = []
        for method, _, body in channel.consume(queue, inactivity_timeout=1):
            if method is None:
                break
            bodies.append(body)
            channel.basic_ack(method.delivery_tag)
        assert bodies == [b"m1", b"m2"]
    finally:
        connection.close()
