"""Prometheus metrics with RabbitMQ's names (rabbitmq_prometheus), so that
RabbitMQ's Grafana dashboards work, plus amqlite's own (``amqlite_*``).

``/metrics`` aggregates over all queues, as RabbitMQ's does by default;
``/metrics/per-object`` has one sample per queue with ``vhost`` and
``queue`` labels. Each scrape reads the core once, like the API does.
"""

from __future__ import annotations

from typing import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..core.broker import Broker
from ..core.queue import Queue

#: (metric name, help, value of a queue) for the queue gauges.
_QUEUE_GAUGES = (
    ("rabbitmq_queue_messages_ready", "Messages ready to be delivered to consumers", lambda q: q.message_count),
    ("rabbitmq_queue_messages_unacked", "Messages delivered to consumers but not yet acknowledged", lambda q: q.unacked),
    ("rabbitmq_queue_messages", "Sum of ready and unacknowledged messages", lambda q: q.message_count + q.unacked),
    ("rabbitmq_queue_consumers", "Consumers on a queue", lambda q: q.consumer_count),
    ("amqlite_queue_messages_paged", "Ready messages kept on disk only", lambda q: q.ready.paged),
    ("amqlite_queue_messages_delayed", "Messages waiting for a delayed retry", lambda q: q.delayed_count),
)


class BrokerCollector(Collector):
    def __init__(self, broker: Broker, *, per_object: bool) -> None:
        self.broker = broker
        self.per_object = per_object

    def collect(self) -> Iterator[Metric]:
        broker = self.broker
        queues: list[Queue] = [q for vhost in broker.vhosts.values() for q in vhost.queues.values()]
        yield GaugeMetricFamily("rabbitmq_queues", "Queues available", len(queues))
        yield GaugeMetricFamily("rabbitmq_connections", "Connections currently open", len(broker.connections))
        yield GaugeMetricFamily("rabbitmq_channels", "Channels currently open",
                                sum(len(c.channels) for c in broker.connections))
        yield GaugeMetricFamily("rabbitmq_consumers", "Consumers currently connected",
                                sum(q.consumer_count for q in queues))
        for name, help_text, value in _QUEUE_GAUGES:
            if self.per_object:
                family = GaugeMetricFamily(name, help_text, labels=["vhost", "queue"])
                for queue in queues:
                    family.add_metric([queue.vhost.name, queue.name], value(queue))
            else:
                family = GaugeMetricFamily(name, help_text, sum(value(q) for q in queues))
            yield family
        dropped = CounterMetricFamily("amqlite_messages_dropped", "Messages dropped, by reason", labels=["reason"])
        for reason, count in sorted(broker.drops.items()):
            dropped.add_metric([reason], count)
        yield dropped


def create_metrics_app(broker: Broker) -> Starlette:
    registries = {}
    for per_object in (False, True):
        registry = CollectorRegistry(auto_describe=False)
        registry.register(BrokerCollector(broker, per_object=per_object))
        registries[per_object] = registry

    def endpoint(per_object: bool):  # type: ignore[no-untyped-def]
        async def scrape(request: Request) -> Response:
            return Response(generate_latest(registries[per_object]), media_type=CONTENT_TYPE_LATEST)
        return scrape

    return Starlette(routes=[Route("/metrics", endpoint(False)), Route("/metrics/per-object", endpoint(True))])
