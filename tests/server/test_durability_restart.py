"""Durable state survives a restart of the server on the same data directory."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pika

from .conftest import start_amqlite


def test_definitions_and_persistent_messages_survive_restart() -> None:
    data = tempfile.mkdtemp(prefix="amqlite-restart-")
    server = start_amqlite(data_dir=data)
    ch = server.connect().channel()
    ch.exchange_declare("orders", "topic", durable=True)
    ch.queue_declare("eu", durable=True, arguments={"x-max-priority": 5})
    ch.queue_bind("eu", "orders", "order.eu.*")
    ch.queue_declare("scratch")  # transient: gone after the restart
    ch.exchange_declare("temp", "fanout")  # transient too
    ch.confirm_delivery()
    for i in range(6):
        ch.basic_publish("orders", "order.eu.created", b"p%d" % i,
                         pika.BasicProperties(delivery_mode=2, priority=i % 2))
    ch.basic_publish("orders", "order.eu.created", b"transient")  # delivery_mode 1
    method, _, body = ch.basic_get("eu")
    assert body == b"p1"  # priority 1 first
    ch.basic_ack(method.delivery_tag)
    method, _, body = ch.basic_get("eu")  # delivered, not acked: comes back redelivered
    assert body == b"p3"
    ch.connection.close()
    server.stop()

    server = start_amqlite(data_dir=data)
    try:
        ch = server.connect().channel()
        assert ch.queue_declare("eu", passive=True).method.message_count == 5
        got = []
        while (item := ch.basic_get("eu", auto_ack=True))[0] is not None:
            got.append((item[2], item[0].redelivered))
        assert got == [(b"p3", True), (b"p5", False), (b"p0", False), (b"p2", False), (b"p4", False)]
        ch.basic_publish("orders", "order.eu.x", b"after")  # binding survived
        assert ch.basic_get("eu", auto_ack=True)[2] == b"after"
        for missing in ("scratch",):
            try:
                ch.queue_declare(missing, passive=True)
                raise AssertionError("transient queue survived")
            except pika.exceptions.ChannelClosedByBroker as error:
                assert error.reply_code == 404
        ch = server.connect().channel()
        try:
            ch.exchange_declare("temp", passive=True)
            raise AssertionError("transient exchange survived")
        except pika.exceptions.ChannelClosedByBroker as error:
            assert error.reply_code == 404
    finally:
        server.stop()
    assert (Path(data) / "log").is_dir()
