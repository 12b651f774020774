"""The management API's write side: declare, delete, purge and redrive a
queue through HTTP, seen by an AMQP client."""

from __future__ import annotations

import time
from pathlib import Path

import pika
import pytest

from amqlite.config import Settings

from .conftest import ManagedServerThread, dead_letter_setup


def test_put_declares_then_delete_removes_a_queue(managed: ManagedServerThread) -> None:
    http = managed.http()
    response = http.put("/api/queues/%2F/orders", json={"durable": True, "arguments": {"x-max-length": 5}})
    assert response.status_code == 201
    assert http.put("/api/queues/%2F/orders", json={"durable": True, "arguments": {"x-max-length": 5}}).status_code == 204
    connection = managed.connect()
    channel = connection.channel()
    assert channel.queue_declare("orders", passive=True).method.message_count == 0
    assert http.get("/api/queues/%2F/orders").json()["arguments"] == {"x-max-length": 5}

    clash = http.put("/api/queues/%2F/orders", json={"durable": True, "arguments": {"x-max-length": 6}})
    assert clash.status_code == 400
    assert clash.json()["error"] == "bad_request"
    assert "x-max-length" in clash.json()["reason"]

    assert http.delete("/api/queues/%2F/orders").status_code == 204
    assert http.get("/api/queues/%2F/orders").status_code == 404
    assert http.delete("/api/queues/%2F/orders").status_code == 404
    connection.close()


def test_bad_body_is_400_and_the_broker_carries_on(managed: ManagedServerThread) -> None:
    http = managed.http()
    response = http.put("/api/queues/%2F/q", content=b"[not json", headers={"content-type": "application/json"})
    assert (response.status_code, response.json()["error"]) == (400, "bad_request")
    assert http.put("/api/queues/%2F/q", json={}).status_code == 201


def test_monitoring_user_cannot_reach_a_vhost_it_may_not_open(managed: ManagedServerThread) -> None:
    assert managed.http("limited", "pw").put("/api/queues/%2F/q", json={}).status_code == 401
    assert managed.http().get("/api/queues/%2F/q").status_code == 404


def test_delete_contents_purges(managed: ManagedServerThread) -> None:
    connection = managed.connect()
    channel = connection.channel()
    channel.queue_declare("jobs")
    for _ in range(4):
        channel.basic_publish("", "jobs", b"x")
    http = managed.http()
    assert http.delete("/api/queues/%2F/jobs/contents").status_code == 204
    assert channel.queue_declare("jobs", passive=True).method.message_count == 0
    connection.close()


def test_redrive_moves_dead_letters_back_where_they_died(managed: ManagedServerThread) -> None:
    connection = managed.connect()
    channel = connection.channel()
    channel.queue_declare("dlq")
    channel.queue_declare("work", arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dlq"})
    for n in range(3):
        channel.basic_publish("", "work", f"m{n}".encode(),
                              pika.BasicProperties(headers={"k": n}))
    for _ in range(3):
        method, _, _ = channel.basic_get("work")
        channel.basic_reject(method.delivery_tag, requeue=False)
    http = managed.http()
    assert http.get("/api/queues/%2F/dlq").json()["messages_ready"] == 3

    response = http.post("/api/queues/%2F/dlq/redrive", json={"limit": 2})
    assert (response.status_code, response.json()) == (200, {"moved": 2})
    assert http.get("/api/queues/%2F/work").json()["messages_ready"] == 2
    assert http.get("/api/queues/%2F/dlq").json()["messages_ready"] == 1
    method, properties, body = channel.basic_get("work", auto_ack=True)
    assert (body, properties.headers["k"]) == (b"m0", 0)

    assert http.post("/api/queues/%2F/dlq/redrive", json={"to": "nope"}).status_code == 404
    assert http.post("/api/queues/%2F/dlq/redrive", json={"limit": -1}).status_code == 400
    connection.close()


def test_get_that_rejects_without_requeue_dead_letters(managed: ManagedServerThread) -> None:
    http = managed.http()
    connection = managed.connect()
    channel = connection.channel()
    dead_letter_setup(channel, "work", "dead")
    for n in range(3):
        channel.basic_publish("", "work", b"m%d" % n)
    got = http.post("/api/queues/%2F/work/get", json={"count": 2, "ackmode": "reject_requeue_false",
                                                      "encoding": "auto"})
    assert [m["payload"] for m in got.json()] == ["m0", "m1"]
    assert channel.queue_declare("work", passive=True).method.message_count == 1
    assert channel.queue_declare("dead", passive=True).method.message_count == 2
    assert http.post("/api/queues/%2F/work/get", json={"count": 0, "ackmode": "ack_requeue_true"}).status_code == 400
    assert http.post("/api/queues/%2F/nowhere/get", json={"count": 1, "ackmode": "ack_requeue_true"}).status_code == 404
    connection.close()


def test_delete_connection_closes_it_with_the_reason(managed: ManagedServerThread) -> None:
    http = managed.http()
    victim = managed.connect()
    bystander = managed.connect()
    names = [c["name"] for c in http.get("/api/connections").json()]
    assert len(names) == 2
    port = victim._impl._transport._sock.getsockname()[1]
    victim_name = next(n for n in names if n.endswith(f":{port}"))
    response = http.delete(f"/api/connections/{victim_name}", headers={"X-Reason": "maintenance"})
    assert response.status_code == 204
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
        victim.channel().queue_declare("x")
        victim.process_data_events(time_limit=2)
    assert (closed.value.reply_code, closed.value.reply_text) == (320, "CONNECTION_FORCED - maintenance")
    assert bystander.channel().queue_declare("still-here").method.queue == "still-here"
    assert http.delete(f"/api/connections/{victim_name}").status_code == 404
    bystander.close()


def test_rabbitmq_move_messages_shovel_moves_them_and_disappears(managed: ManagedServerThread) -> None:
    # What RabbitMQ's management UI sends for "Move messages".
    http = managed.http()
    connection = managed.connect()
    channel = connection.channel()
    channel.queue_declare("from-q")
    channel.queue_declare("to-q")
    for n in range(5):
        channel.basic_publish("", "from-q", b"m%d" % n, pika.BasicProperties(headers={"n": n}))
    value = {"src-uri": "amqp:///%2F", "src-queue": "from-q", "src-protocol": "amqp091", "src-prefetch-count": 1000,
             "src-delete-after": "queue-length", "dest-protocol": "amqp091", "dest-uri": "amqp:///%2F",
             "dest-add-forward-headers": False, "ack-mode": "on-confirm", "dest-queue": "to-q"}
    body = {"component": "shovel", "vhost": "/", "name": "Move from from-q", "value": value}
    assert http.put("/api/parameters/shovel/%2F/Move%20from%20from-q", json=body).status_code == 201
    assert http.get("/api/parameters/shovel").json() == []
    assert channel.queue_declare("from-q", passive=True).method.message_count == 0
    moved = [channel.basic_get("to-q", auto_ack=True) for _ in range(5)]
    assert [(b, p.headers) for _, p, b in moved] == [(b"m%d" % n, {"n": n}) for n in range(5)]
    elsewhere = {**body, "value": {**value, "dest-uri": "amqp://other-host/%2F"}}
    assert http.put("/api/parameters/shovel/%2F/away", json=elsewhere).status_code == 400
    forever = {**body, "value": {**value, "src-delete-after": "never"}}
    assert http.put("/api/parameters/shovel/%2F/forever", json=forever).status_code == 400
    connection.close()


def test_redrive_moves_messages_paged_out_to_disk_too(tmp_path: Path) -> None:
    settings = Settings(host="127.0.0.1", port=0, data_dir=str(tmp_path), queue_memory_budget=5,
                        management_port=0, prometheus_port=0, kafka_port=0)
    server = ManagedServerThread(settings)
    server.start()
    try:
        connection = server.connect()
        channel = connection.channel()
        channel.confirm_delivery()
        channel.queue_declare("big", durable=True)
        channel.queue_declare("dest", durable=True)
        for n in range(60):
            channel.basic_publish("", "big", b"m%02d" % n, pika.BasicProperties(delivery_mode=2))
        http = server.http()
        deadline = time.monotonic() + 10
        while http.get("/api/queues/%2F/big").json()["messages_paged"] == 0:
            assert time.monotonic() < deadline, "nothing was paged out"
            time.sleep(0.05)
        assert http.post("/api/queues/%2F/big/redrive", json={"to": "dest"}).json() == {"moved": 60}
        bodies = [channel.basic_get("dest", auto_ack=True)[2] for _ in range(60)]
        assert bodies == [b"m%02d" % n for n in range(60)]
        connection.close()
    finally:
        server.stop()
