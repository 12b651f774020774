"""Visible long tasks and message groups (issue 25 parts 4 and 1) in the
management API, Prometheus, ``amqlite ctl list consumers`` and the
dashboard. A delivery's age is made old by moving its delivery time back
inside the server (waiting ten minutes is not a test)."""

from __future__ import annotations

import httpx
import pika
from pika.adapters.blocking_connection import BlockingChannel
from prometheus_client.parser import text_string_to_metric_families

from .conftest import ManagedServerThread
from .test_ctl import run


def age_deliveries(server: ManagedServerThread, seconds: float) -> None:
    """Every unacked delivery went out ``seconds`` earlier than it did."""
    def shift() -> None:
        assert server.server is not None
        for connection in server.server.core.connections:
            for channel in connection.channels.values():
                for tag, (entry, queue, consumer, at) in list(channel.unacked.items()):
                    channel.unacked[tag] = (entry, queue, consumer, at - seconds)
    server.call(shift)


def metrics(server: ManagedServerThread, path: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(f"http://127.0.0.1:{server.prometheus_port}{path}", timeout=10)
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples}


def hold_one(server: ManagedServerThread, queue: str) -> tuple[BlockingChannel, list[int]]:
    """A consumer that takes one delivery of ``queue`` and does not ack it."""
    connection = server.connect()
    channel = connection.channel()
    channel.basic_qos(prefetch_count=1)
    tags: list[int] = []
    channel.basic_consume(queue, lambda ch, method, props, body: tags.append(method.delivery_tag),
                          consumer_tag="worker-1")
    while not tags:
        connection.process_data_events(time_limit=0.05)
    return channel, tags


def test_oldest_unacked_age_in_the_api_prometheus_and_ctl(managed: ManagedServerThread) -> None:
    connection = managed.connect()
    channel = connection.channel()
    channel.queue_declare("reports")
    channel.queue_declare("idle")
    channel.basic_publish("", "reports", b"long task")
    worker, tags = hold_one(managed, "reports")
    age_deliveries(managed, 600)
    http = managed.http()
    queue = http.get("/api/queues/%2F/reports").json()
    assert 600 <= queue["oldest_unacked_seconds"] < 660
    assert http.get("/api/queues/%2F/idle").json()["oldest_unacked_seconds"] is None
    [consumer] = http.get("/api/consumers").json()
    assert consumer["consumer_tag"] == "worker-1" and consumer["messages_unacknowledged"] == 1
    assert 600 <= consumer["oldest_unacked_seconds"] < 660

    per_queue = metrics(managed, "/metrics/per-object")
    assert 600 <= per_queue[("amqlite_queue_oldest_unacked_seconds", (("queue", "reports"), ("vhost", "/")))] < 660
    assert per_queue[("amqlite_queue_oldest_unacked_seconds", (("queue", "idle"), ("vhost", "/")))] == 0
    [(labels, held)] = [(labels, value) for (name, labels), value in per_queue.items()
                        if name == "amqlite_consumer_oldest_unacked_seconds"]
    assert dict(labels)["consumer_tag"] == "worker-1" and dict(labels)["queue"] == "reports" and 600 <= held < 660
    total = metrics(managed, "/metrics")
    assert 600 <= total[("amqlite_queue_oldest_unacked_seconds", ())] < 660
    assert 600 <= total[("amqlite_consumer_oldest_unacked_seconds", ())] < 660

    lines = run(managed, "list", "consumers").splitlines()
    assert lines[0].split() == ["consumer_tag", "queue", "ack_required", "prefetch_count", "messages_unacknowledged",
                                "oldest_unacked_seconds"]
    row = lines[1].split()
    assert row[:5] == ["worker-1", "reports", "True", "1", "1"] and 600 <= float(row[5]) < 660

    worker.basic_ack(tags[0])
    worker.connection.process_data_events(time_limit=0.2)
    assert http.get("/api/queues/%2F/reports").json()["oldest_unacked_seconds"] is None
    assert http.get("/api/consumers").json()[0]["oldest_unacked_seconds"] is None
    worker.connection.close()
    connection.close()


def test_message_groups_in_the_api_and_prometheus(managed: ManagedServerThread) -> None:
    connection = managed.connect()
    channel = connection.channel()
    channel.queue_declare("orders", arguments={"x-message-group-header": "customer", "x-delayed-retry-min": 60_000})
    for customer in ("alice", "alice", "bob", "carol"):
        channel.basic_publish("", "orders", b"order", pika.BasicProperties(headers={"customer": customer}))
    channel.basic_publish("", "orders", b"no group")
    got = []
    for _ in range(4):  # alice's first, bob's, carol's and the one without a group
        method, _, body = channel.basic_get("orders")
        got.append((method.delivery_tag, body))
    assert channel.basic_get("orders") == (None, None, None)  # alice's second waits for her first
    channel.basic_nack(got[0][0], requeue=True)  # alice's first waits out a minute's backoff
    queue = managed.http().get("/api/queues/%2F/orders").json()
    groups = queue["message_groups"]
    assert (groups["groups"], groups["in_backoff"]) == (3, 1)
    assert groups["oldest_group_seconds"] >= 0
    per_queue = metrics(managed, "/metrics/per-object")
    labels = (("queue", "orders"), ("vhost", "/"))
    assert per_queue[("amqlite_queue_message_groups", labels)] == 3
    assert per_queue[("amqlite_queue_message_groups_in_backoff", labels)] == 1
    assert ("amqlite_queue_oldest_message_group_seconds", labels) in per_queue
    connection.close()

