"""Prometheus metrics: RabbitMQ's names, aggregated and per queue, parsed
with prometheus_client's own parser."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from .conftest import ManagedServerThread


def scrape(server: ManagedServerThread, path: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(f"http://127.0.0.1:{server.prometheus_port}{path}", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples}


def test_metrics_follow_the_broker(managed: ManagedServerThread) -> None:
    connection = managed.connect()
    channel = connection.channel()
    channel.queue_declare("a")
    channel.queue_declare("b", arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    for _ in range(3):
        channel.basic_publish("", "a", b"x")
    channel.basic_get("a")  # one unacked
    channel.basic_consume("b", lambda *args: None)

    total = scrape(managed, "/metrics")
    assert total[("rabbitmq_queues", ())] == 2
    assert total[("rabbitmq_connections", ())] == 1
    assert total[("rabbitmq_channels", ())] == 1
    assert total[("rabbitmq_consumers", ())] == 1
    assert total[("rabbitmq_queue_messages_ready", ())] == 2
    assert total[("rabbitmq_queue_messages_unacked", ())] == 1
    assert total[("amqlite_queue_messages_paged", ())] == 0

    per_queue = scrape(managed, "/metrics/per-object")
    a = (("queue", "a"), ("vhost", "/"))
    b = (("queue", "b"), ("vhost", "/"))
    assert per_queue[("rabbitmq_queue_messages_ready", a)] == 2
    assert per_queue[("rabbitmq_queue_messages_unacked", a)] == 1
    assert per_queue[("rabbitmq_queue_consumers", b)] == 1
    assert per_queue[("rabbitmq_queue_consumers", a)] == 0
    connection.close()


def test_dropped_messages_are_counted_by_reason(managed: ManagedServerThread) -> None:
    connection = managed.connect()
    channel = connection.channel()
    channel.basic_publish("amq.direct", "nowhere", b"x")  # unroutable
    channel.queue_declare("a")  # a round trip, so the publish has been handled
    samples = scrape(managed, "/metrics")
    assert samples[("amqlite_messages_dropped_total", (("reason", "unroutable"),))] == 1
    connection.close()
