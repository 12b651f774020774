"""Differential check against librdkafka's mock cluster (confluent-kafka's
``test.mock.num.brokers``), the Kafka reference that runs here: the same
producer (idempotent, each compression codec) and the same consumer see
the same records, offsets and watermarks from both. Where the mock falls
short (ListOffsets by time, CreateTopics: ../shared/notes/kafka-facts.md)
the client tests check amqlite alone."""

from __future__ import annotations

import time
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from kafka_support import KafkaServerThread

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


def run(bootstrap: dict[str, Any], topic: str, codec: str) -> tuple[list[tuple[Any, ...]], tuple[int, int]]:
    producer = Producer({**bootstrap, "enable.idempotence": True, "acks": "all", "compression.type": codec,
                         "linger.ms": 20})
    for i in range(200):
        producer.produce(topic, value=(b"value-%d " % i) * (i % 5 + 1), key=None if i % 4 == 0 else b"k%d" % (i % 7),
                         headers=[("i", b"%d" % i)] if i % 3 else None, timestamp=1_700_000_000_000 + i, partition=0)
    assert producer.flush(30) == 0
    consumer = Consumer({**bootstrap, "group.id": "diff", "enable.auto.commit": False, "fetch.max.bytes": 5000, "message.max.bytes": 4000,
                         "max.partition.fetch.bytes": 3000})
    consumer.assign([TopicPartition(topic, 0, 0)])
    got = []
    deadline = time.monotonic() + 30
    while len(got) < 200 and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            got.append((message.offset(), message.key(), message.value(), message.headers(), message.timestamp()))
    marks = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    consumer.close()
    return got, marks



@pytest.mark.parametrize("codec", CODECS)
def test_same_records_and_watermarks_as_librdkafkas_mock(kafka_server: KafkaServerThread, mock: Any,
                                                          codec: str) -> None:
    topic = f"diff-{codec}"
    ours = run({"bootstrap.servers": kafka_server.bootstrap}, topic, codec)
    reference = run(mock, topic, codec)
    assert len(ours[0]) == 200
    assert ours == reference
