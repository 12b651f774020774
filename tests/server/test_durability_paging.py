"""A backlog larger than a queue's memory budget, through a real client."""

from __future__ import annotations

import pika

from .conftest import start_amqlite


def test_a_paged_backlog_is_delivered_whole_and_in_order() -> None:
    server = start_amqlite(queue_memory_budget=20)
    try:
        connection = server.connect()
        ch = connection.channel()
        ch.queue_declare("backlog", durable=True)
        ch.confirm_delivery()  # each confirm means the record is on disk
        for i in range(500):
            ch.basic_publish("", "backlog", b"%04d" % i, pika.BasicProperties(delivery_mode=2))
        connection.process_data_events(time_limit=0.2)  # let the driver page out what is written

        def paged() -> tuple[int, int]:
            ready = server.server.core.vhosts["/"].queues["backlog"].ready
            return ready.paged, ready.in_memory

        on_disk, in_memory = server.call(paged)
        assert on_disk >= 450 and in_memory <= 50
        assert ch.queue_declare("backlog", passive=True).method.message_count == 500
        ch.basic_qos(prefetch_count=50)
        bodies = []
        for method, _, body in ch.consume("backlog", inactivity_timeout=5):
            assert method is not None, f"stalled after {len(bodies)} messages"
            bodies.append(body)
            ch.basic_ack(method.delivery_tag)
            if len(bodies) == 500:
                break
        assert bodies == [b"%04d" % i for i in range(500)]
        connection.close()
    finally:
        server.stop()


def test_basic_get_waits_for_paged_messages_instead_of_answering_empty() -> None:
    """A drain-by-get loop (common in scripts) must see every message, even
    when the next ones are still being read back from disk."""
    server = start_amqlite(queue_memory_budget=10)
    try:
        connection = server.connect()
        ch = connection.channel()
        ch.queue_declare("drain", durable=True)
        ch.confirm_delivery()
        for i in range(300):
            ch.basic_publish("", "drain", b"%04d" % i, pika.BasicProperties(delivery_mode=2))
        connection.process_data_events(time_limit=0.2)
        bodies = []
        while (got := ch.basic_get("drain", auto_ack=True))[0] is not None:
            bodies.append(got[2])
        assert bodies == [b"%04d" % i for i in range(300)]
        connection.close()
    finally:
        server.stop()
