"""Kafka transactions against librdkafka's mock cluster (confluent-kafka's
``test.mock.num.brokers``): the same transactional producer (commit, abort,
commit) and the same consumers on both. They agree on what the mock
implements: the records and their offsets, a marker taking an offset after
each transaction, the high watermark, and read_uncommitted seeing every
record. The mock falls short on visibility (../shared/notes/kafka-facts.md):
its read_committed reader sees the aborted records too; amqlite's does not,
as Kafka's does not."""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from kafka_support import KafkaServerThread


def produce(bootstrap: dict[str, Any], topic: str) -> None:
    producer = Producer({**bootstrap, "transactional.id": f"diff-{topic}"})
    producer.init_transactions(10)
    for n, commit in ((1, True), (2, False), (3, True)):
        producer.begin_transaction()
        for i in range(3):
            producer.produce(topic, b"t%d-%d" % (n, i), partition=0)
        producer.flush(10)
        if commit:
            producer.commit_transaction(10)
        else:
            producer.abort_transaction(10)


def read(bootstrap: dict[str, Any], topic: str, isolation: str, expected: int) -> tuple[list[tuple[int, bytes]], int]:
    """What a consumer reads from the start: ``expected`` records, and
    whatever else comes within a last half second."""
    consumer = Consumer({**bootstrap, "group.id": "diff", "enable.auto.commit": False,
                         "isolation.level": isolation})
    consumer.assign([TopicPartition(topic, 0, 0)])
    got = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None and len(got) >= expected:
            break
        if message is not None and message.error() is None:
            got.append((message.offset(), message.value()))
    _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    consumer.close()
    return got, high



def test_transactions_as_librdkafkas_mock_where_it_implements_them(kafka_server: KafkaServerThread,
                                                                   mock: Any) -> None:
    ours, reference = {"bootstrap.servers": kafka_server.bootstrap}, mock
    for side in (ours, reference):
        produce(side, "diff-txn")
    everything = [(offset, b"t%d-%d" % (n, i)) for n, base in ((1, 0), (2, 4), (3, 8))
                  for i, offset in enumerate(range(base, base + 3))]
    assert read(ours, "diff-txn", "read_uncommitted", 9) == read(reference, "diff-txn", "read_uncommitted", 9) == (
        everything, 12)  # three records and a marker per transaction
    committed = [record for record in everything if not record[1].startswith(b"t2")]
    assert read(ours, "diff-txn", "read_committed", 6) == (committed, 12)
    assert read(reference, "diff-txn", "read_committed", 6) == (everything, 12)  # the mock's shortfall
