"""Prometheus metrics with RabbitMQ's names (rabbitmq_prometheus), so that
RabbitMQ's Grafana dashboards work, plus amqlite's own (``amqlite_*``).

``/metrics`` aggregates over all queues, as RabbitMQ's does by default;
``/metrics/per-object`` has one sample per queue with ``vhost`` and
``queue`` labels. Each scrape reads the core once, like the API does. The
global message counters are the core's (core/stats.py), with RabbitMQ's
labels; the store's write latency and batch sizes come from the store
driver through :class:`StoreMetrics`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Collection, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, Histogram, generate_latest
from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..core.broker import Broker
from ..core.inflight import age, consumer_oldest, queue_oldest
from ..core.queue import Queue
from ..core.stream import Stream
from ..core.redrive import COUNT, DELETE, REDRIVE
from ..core.stats import AT_MOST_ONCE, DISABLED, REASONS, Stats
from ..workbench import Jobs, jobs_of

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request

#: (metric name, help, value of a queue) for the queue gauges.
_QUEUE_GAUGES = (
    ("rabbitmq_queue_messages_ready", "Messages ready to be delivered to consumers", lambda q: q.message_count),
    ("rabbitmq_queue_messages_unacked", "Messages delivered to consumers but not yet acknowledged", lambda q: q.unacked),
    ("rabbitmq_queue_messages", "Sum of ready and unacknowledged messages", lambda q: q.message_count + q.unacked),
    ("rabbitmq_queue_consumers", "Consumers on a queue", lambda q: q.consumer_count),
    ("amqlite_queue_messages_paged", "Ready messages kept on disk only", lambda q: q.ready.paged),
    ("amqlite_queue_messages_delayed", "Messages waiting for a delayed retry", lambda q: q.delayed_count),
)

_GLOBAL = "rabbitmq_global_messages_"
#: RabbitMQ's labels: amqlite speaks AMQP 0-9-1 and has classic queues only.
_PROTOCOL = {"protocol": "amqp091"}
_PROTOCOL_QUEUE_TYPE = {"protocol": "amqp091", "queue_type": "rabbit_classic_queue"}

#: (counter in core/stats.py, RabbitMQ's help) labelled by protocol.
_PROTOCOL_COUNTERS = (
    ("received", "Total number of messages received from publishers"),
    ("received_confirm", "Total number of messages received from publishers expecting confirmations"),
    ("routed", "Total number of messages routed to queues or streams"),
    ("unroutable_dropped",
     "Total number of messages published as non-mandatory into an exchange and dropped as unroutable"),
    ("unroutable_returned",
     "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable"),
    ("confirmed", "Total number of messages confirmed to publishers"),
)
#: ... and those labelled by protocol and queue type.
_QUEUE_TYPE_COUNTERS = (
    ("delivered", "Total number of messages delivered to consumers"),
    ("delivered_consume_manual_ack",
     "Total number of messages delivered to consumers using basic.consume with manual acknowledgment"),
    ("delivered_consume_auto_ack",
     "Total number of messages delivered to consumers using basic.consume with automatic acknowledgment"),
    ("delivered_get_manual_ack",
     "Total number of messages delivered to consumers using basic.get with manual acknowledgment"),
    ("delivered_get_auto_ack",
     "Total number of messages delivered to consumers using basic.get with automatic acknowledgment"),
    ("get_empty", "Total number of times basic.get operations fetched no message"),
    ("redelivered", "Total number of messages redelivered to consumers"),
    ("acknowledged", "Total number of messages acknowledged by consumers"),
)
_DEAD_LETTER_HELP = {
    "expired": "Total number of messages dead-lettered due to message TTL exceeded",
    "rejected": "Total number of messages dead-lettered due to basic.reject or basic.nack",
    "maxlen": "Total number of messages dead-lettered due to overflow drop-head or reject-publish-dlx",
    "delivery_limit": "Total number of messages dead-lettered due to delivery-limit exceeded",
}

#: Seconds; an fsync takes from tens of microseconds (cache) to seconds (a busy disk).
_FSYNC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: Messages; a batch of acks alone writes none.
_BATCH_BUCKETS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


def _global_counters(stats: Stats) -> Iterator[Metric]:
    for name, help_text in _PROTOCOL_COUNTERS:
        family = CounterMetricFamily(_GLOBAL + name, help_text, labels=list(_PROTOCOL))
        family.add_metric(list(_PROTOCOL.values()), getattr(stats, name))
        yield family
    for name, help_text in _QUEUE_TYPE_COUNTERS:
        family = CounterMetricFamily(_GLOBAL + name, help_text, labels=list(_PROTOCOL_QUEUE_TYPE))
        family.add_metric(list(_PROTOCOL_QUEUE_TYPE.values()), getattr(stats, name))
        yield family
    for reason in REASONS:
        family = CounterMetricFamily(f"{_GLOBAL}dead_lettered_{reason}", _DEAD_LETTER_HELP[reason],
                                     labels=["queue_type", "dead_letter_strategy"])
        for strategy in (DISABLED, AT_MOST_ONCE):
            family.add_metric(["rabbit_classic_queue", strategy], stats.dead_lettered[reason, strategy])
        yield family


def _workbench(jobs: Jobs) -> Iterator[Metric]:
    """The dead-letter workbench's jobs (workbench.py), by action."""
    done = CounterMetricFamily("amqlite_workbench_messages",
                               "Messages redriven or deleted by dead-letter workbench jobs", labels=["action"])
    skipped = CounterMetricFamily("amqlite_workbench_messages_skipped",
                                  "Messages a workbench job matched but left in place (unreadable, or no queue to "
                                  "redrive to)", labels=["action"])
    for action in (REDRIVE, DELETE):
        done.add_metric([action], jobs.done[action])
        skipped.add_metric([action], jobs.skipped[action])
    running = GaugeMetricFamily("amqlite_workbench_jobs_running", "Dead-letter workbench jobs running",
                                labels=["action"])
    for action in (REDRIVE, DELETE, COUNT):
        running.add_metric([action], sum(job.running and job.action == action for job in jobs.jobs.values()))
    yield from (done, skipped, running)


class StoreMetrics(Collector):
    """The disk store's figures: each batch the store driver writes (it
    calls :meth:`written`, see storage.WriteObserver) and how long start-up
    recovery took. One per server, registered with its metrics app."""

    def __init__(self) -> None:
        self.fsync_seconds = Histogram(
            "amqlite_journal_fsync_seconds", "Time to write and fsync one batch of journal records (group commit)",
            buckets=_FSYNC_BUCKETS, registry=None)
        self.messages_per_fsync = Histogram(
            "amqlite_journal_messages_per_fsync", "Messages written to the journal by one fsync",
            buckets=_BATCH_BUCKETS, registry=None)
        #: Set once recovery is done.
        self.recovery_seconds: float | None = None

    def written(self, seconds: float, messages: int) -> None:
        self.fsync_seconds.observe(seconds)
        self.messages_per_fsync.observe(messages)

    def collect(self) -> Iterator[Metric]:
        yield from self.fsync_seconds.collect()
        yield from self.messages_per_fsync.collect()
        if self.recovery_seconds is not None:
            yield GaugeMetricFamily("amqlite_recovery_seconds", "Time start-up took to recover the data directory",
                                    self.recovery_seconds)


class BrokerCollector(Collector):
    def __init__(self, broker: Broker, now: Callable[[], float], *, per_object: bool) -> None:
        self.broker = broker
        self.now = now
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
        yield from self._ages(queues)
        yield GaugeMetricFamily("amqlite_messages_delayed", "Messages held by delayed-message exchanges",
                                sum(exchange.pending_count for vhost in broker.vhosts.values()
                                    for exchange in vhost.exchanges.values()))
        lag = GaugeMetricFamily("amqlite_stream_group_lag",
                                "Messages in a stream after a consumer group's committed offset (AMQP x-stream-group "
                                "or Kafka)", labels=["vhost", "stream", "group"])
        for queue in queues:
            if isinstance(queue, Stream):
                for name, offset in sorted(queue.group_offsets.items()):
                    lag.add_metric([queue.vhost.name, queue.name, name], queue.end - offset.committed)
        yield lag
        yield from _global_counters(broker.stats)
        changes = CounterMetricFamily("amqlite_scheduled_changes", "Scheduled messages cancelled or rescheduled (fire "
                                      "now included), held by a delayed exchange or a queue's retries",
                                      labels=["action", "kind"])
        for (action, kind), count in broker.stats.scheduled_changes.items():
            changes.add_metric([action, kind], count)
        yield changes
        dropped = CounterMetricFamily("amqlite_messages_dropped", "Messages dropped, by reason", labels=["reason"])
        for reason, count in sorted(broker.drops.items()):
            dropped.add_metric([reason], count)
        yield dropped
        yield from _workbench(jobs_of(broker, self.now))


    def _ages(self, queues: list[Queue]) -> Iterator[Metric]:
        """Long tasks and message groups: how long the oldest unacked
        delivery of each queue and consumer has been out (0: none), and
        each grouped queue's groups. Without per-object labels, the
        oldest over all (the figure an alert wants)."""
        now, per_object = self.now(), self.per_object
        broker = self.broker
        labels = ["vhost", "queue"] if per_object else []
        queue_age = GaugeMetricFamily("amqlite_queue_oldest_unacked_seconds",
                                      "Seconds the queue's oldest unacked delivery has been out", labels=labels)
        consumer_age = GaugeMetricFamily(
            "amqlite_consumer_oldest_unacked_seconds", "Seconds the consumer's oldest unacked delivery has been out",
            labels=["vhost", "queue", "channel", "consumer_tag"] if per_object else [])
        groups = GaugeMetricFamily("amqlite_queue_message_groups", "Message groups with messages", labels=labels)
        backoff = GaugeMetricFamily("amqlite_queue_message_groups_in_backoff",
                                    "Message groups whose message out waits out a retry delay", labels=labels)
        group_age = GaugeMetricFamily("amqlite_queue_oldest_message_group_seconds",
                                      "Seconds since the oldest message group got its first message", labels=labels)
        oldest = {"queue": 0.0, "consumer": 0.0, "groups": 0.0, "backoff": 0.0, "group": 0.0}
        for queue in queues:
            name = [queue.vhost.name, queue.name]
            seconds = age(queue_oldest(broker, queue), now) or 0.0
            if per_object:
                queue_age.add_metric(name, seconds)
            oldest["queue"] = max(oldest["queue"], seconds)
            for consumer in queue.consumers:
                held = age(consumer_oldest(consumer), now) or 0.0
                if per_object:
                    channel = consumer.channel
                    consumer_age.add_metric(
                        [*name, f"{channel.connection.name} ({channel.number})", consumer.tag], held)
                oldest["consumer"] = max(oldest["consumer"], held)
            counts = queue.group_counts()
            if counts is not None:
                since = age(counts[2], now) or 0.0
                if per_object:
                    groups.add_metric(name, counts[0])
                    backoff.add_metric(name, counts[1])
                    group_age.add_metric(name, since)
                oldest["groups"] += counts[0]
                oldest["backoff"] += counts[1]
                oldest["group"] = max(oldest["group"], since)
        if not per_object:
            for family, key in ((queue_age, "queue"), (consumer_age, "consumer"), (groups, "groups"),
                                (backoff, "backoff"), (group_age, "group")):
                family.add_metric([], oldest[key])
        yield from (queue_age, consumer_age, groups, backoff, group_age)


class AlarmsCollector(Collector):
    """RabbitMQ's alarm gauges: 1 while the alarm is in effect."""

    def __init__(self, alarms: Callable[[], Collection[str]]) -> None:
        self.alarms = alarms

    def collect(self) -> Iterator[Metric]:
        now_in_effect = self.alarms()
        yield GaugeMetricFamily("rabbitmq_alarms_memory_used_watermark",
                                "is 1 if VM memory watermark threshold has been reached",
                                int("memory" in now_in_effect))
        yield GaugeMetricFamily("rabbitmq_alarms_free_disk_space_watermark",
                                "is 1 if free disk space watermark threshold has been reached",
                                int("disk" in now_in_effect))


def create_metrics_app(broker: Broker, now: Callable[[], float], store: StoreMetrics | None = None,
                       alarms: Callable[[], Collection[str]] | None = None) -> Starlette:
    """The Prometheus endpoints, reading the broker's clock ``now``;
    ``store`` when the broker has a data directory, ``alarms`` (which
    resource alarms are on) when it serves."""
    # Here, not at import: the server always has StoreMetrics, and without
    # HTTP ports it starts without Starlette.
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    registries = {}
    for per_object in (False, True):
        registry = CollectorRegistry(auto_describe=False)
        registry.register(BrokerCollector(broker, now, per_object=per_object))
        if store is not None:
            registry.register(store)
        if alarms is not None:
            registry.register(AlarmsCollector(alarms))
        registries[per_object] = registry

    def endpoint(per_object: bool):  # type: ignore[no-untyped-def]
        async def scrape(request: Request) -> Response:
            return Response(generate_latest(registries[per_object]), media_type=CONTENT_TYPE_LATEST)
        return scrape

    return Starlette(routes=[Route("/metrics", endpoint(False)), Route("/metrics/per-object", endpoint(True))])
