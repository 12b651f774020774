"""Produce and consume through the three Python clients: keys, headers,
timestamps, from earliest and latest, seeks by offset and by time."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from kafka_support import KafkaServerThread

N = 50


def topic_name() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


def produce_confluent(bootstrap: str, topic: str, count: int, **config: object) -> list[tuple[int, int]]:
    """(partition, offset) of each record, in order."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                         "linger.ms": 5, **config})
    placed: list[tuple[int, int]] = []
    errors: list[KafkaError] = []

    def report(error: KafkaError | None, message: object) -> None:
        if error is not None:
            errors.append(error)
        else:
            placed.append((message.partition(), message.offset()))  # type: ignore[attr-defined]

    for i in range(count):
        producer.produce(topic, value=b"value-%d" % i, key=b"key-%d" % (i % 7),
                         headers=[("n", b"%d" % i), ("empty", None), ("n", b"again")],
                         timestamp=1_700_000_000_000 + i, on_delivery=report)
    assert producer.flush(30) == 0
    assert not errors, errors
    return placed


def consume_confluent(bootstrap: str, topic: str, count: int, reset: str = "earliest",
                      assign: list[TopicPartition] | None = None) -> list:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{uuid.uuid4().hex[:6]}",
                         "auto.offset.reset": reset, "enable.auto.commit": False})
    if assign is not None:
        consumer.assign(assign)
    else:
        consumer.subscribe([topic])
    got = []
    deadline = time.monotonic() + 30
    while len(got) < count and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None:
            continue
        assert message.error() is None, message.error()
        got.append(message)
    consumer.close()
    return got


def test_confluent_kafka_round_trip(kafka_server: KafkaServerThread) -> None:
    topic = topic_name()
    placed = produce_confluent(kafka_server.bootstrap, topic, N)
    assert [offset for _, offset in placed] == list(range(N))
    got = consume_confluent(kafka_server.bootstrap, topic, N)
    assert [m.offset() for m in got] == list(range(N))
    for i, message in enumerate(got):
        assert message.value() == b"value-%d" % i
        assert message.key() == b"key-%d" % (i % 7)
        assert message.headers() == [("n", b"%d" % i), ("empty", None), ("n", b"again")]
        assert message.timestamp()[1] == 1_700_000_000_000 + i
