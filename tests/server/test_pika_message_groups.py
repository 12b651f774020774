"""Message groups through pika (issue 25 part 1): per-key order with
competing consumers. amqlite only: RabbitMQ has no x-message-group-header."""

from __future__ import annotations

import pika

from .conftest import ServerThread
from .pika_support import Collector


def test_groups_through_pika(amqlite_server: ServerThread) -> None:
    connection = amqlite_server.connect()
    publisher = connection.channel()
    publisher.queue_declare("orders", arguments={"x-message-group-header": "order-id"})
    for body, order in [(b"a-created", "a"), (b"a-paid", "a"), (b"b-created", "b"), (b"a-shipped", "a"),
                        (b"b-paid", "b"), (b"audit", None)]:
        headers = {"order-id": order} if order is not None else None
        publisher.basic_publish("", "orders", body, pika.BasicProperties(headers=headers))
    workers = []
    for _ in range(2):
        channel = amqlite_server.connect().channel()
        channel.basic_qos(prefetch_count=5)
        worker = Collector(channel)
        worker.consume("orders")
        workers.append(worker)

    def out() -> list[bytes]:
        for worker in workers:
            worker.pump(0.05)
        return sorted(body for worker in workers for body in worker.bodies)

    def settle(body: bytes, requeue: bool | None = None) -> None:
        for worker in workers:
            for i, (_, method, _, got) in enumerate(worker.deliveries):
                if got == body:
                    del worker.deliveries[i]
                    if requeue is None:
                        worker.channel.basic_ack(method.delivery_tag)
                    else:
                        worker.channel.basic_nack(method.delivery_tag, requeue=requeue)
                    return
        raise AssertionError(f"{body!r} is not out")

    # One of each group at once, and the message without a group.
    assert out() == [b"a-created", b"audit", b"b-created"]
    settle(b"a-created", requeue=True)  # a failure: back to the head of group a
    assert out() == [b"a-created", b"audit", b"b-created"]
    settle(b"b-created")
    assert out() == [b"a-created", b"audit", b"b-paid"]  # b moved on while a was stuck
    settle(b"a-created")
    assert out() == [b"a-paid", b"audit", b"b-paid"]
    settle(b"a-paid")
    assert out() == [b"a-shipped", b"audit", b"b-paid"]
    # A worker dies holding a-shipped: it goes to the other one.
    holder = next(w for w in workers if b"a-shipped" in w.bodies)
    other = next(w for w in workers if w is not holder)
    holder.channel.connection.close()
    workers.remove(holder)
    other.deliveries = [d for d in other.deliveries if d[3] != b"a-shipped"]
    for _ in range(20):
        other.pump(0.05)
        if b"a-shipped" in other.bodies:
            break
    assert b"a-shipped" in other.bodies
    connection.close()
