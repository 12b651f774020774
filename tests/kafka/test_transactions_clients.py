"""Kafka transactions through real clients: what applications rely on.

The classic example of issue 24 with kafka-python, unchanged: a
transactional producer writes to two topics and commits, then aborts, then
commits; a read_committed consumer sees the first and third transactions,
a read_uncommitted one all three, and control records take offsets but
are no records to either. Zombie fencing: a second instance of the same
transactional.id fences the first.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from kafka_support import KafkaServerThread


def topic_name() -> str:
    return f"txn-{uuid.uuid4().hex[:8]}"


def consume_all(bootstrap: str, topic: str, isolation: str, expected: int) -> list[bytes]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             isolation_level=isolation, consumer_timeout_ms=3000, enable_auto_commit=False)
    values: list[bytes] = []
    for record in consumer:
        values.append(record.value)
        if len(values) == expected:
            break
    consumer.close()
    return values


def test_kafka_python_commit_abort_commit_read_committed_and_uncommitted(kafka_server: KafkaServerThread) -> None:
    from kafka import KafkaProducer

    payments, audit = topic_name(), topic_name()
    producer = KafkaProducer(bootstrap_servers=kafka_server.bootstrap, enable_idempotence=True,
                             transactional_id="payment-producer-1")
    producer.init_transactions()
    for n, commit in ((1, True), (2, False), (3, True)):
        producer.begin_transaction()
        producer.send(payments, b"payment-%d" % n)
        producer.send(audit, b"audit-%d" % n)
        producer.flush()
        if commit:
            producer.commit_transaction()
        else:
            producer.abort_transaction()
    producer.close()

    for topic, kind in ((payments, b"payment"), (audit, b"audit")):
        assert consume_all(kafka_server.bootstrap, topic, "read_committed", 2) == [kind + b"-1", kind + b"-3"]
        assert consume_all(kafka_server.bootstrap, topic, "read_uncommitted", 3) == [
            kind + b"-1", kind + b"-2", kind + b"-3"]


def open_transaction(bootstrap: str, transactional_id: str, topic: str, value: bytes) -> Any:
    """A kafka-python producer with a transaction open, ``value`` sent in it."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, transactional_id=transactional_id)
    producer.init_transactions()
    producer.begin_transaction()
    producer.send(topic, value)
    producer.flush()
    return producer


def test_a_second_instance_of_a_transactional_id_fences_the_first(kafka_server: KafkaServerThread) -> None:
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    topic = topic_name()
    first = open_transaction(kafka_server.bootstrap, "zombie", topic, b"from-the-zombie")
    second = KafkaProducer(bootstrap_servers=kafka_server.bootstrap, transactional_id="zombie")
    second.init_transactions()  # aborts what the first left open, and fences it
    with pytest.raises(KafkaError):
        first.commit_transaction()
    first.close(timeout=1)
    second.begin_transaction()
    second.send(topic, b"from-the-new-instance")
    second.commit_transaction()
    second.close()
    assert consume_all(kafka_server.bootstrap, topic, "read_committed", 1) == [b"from-the-new-instance"]
    assert consume_all(kafka_server.bootstrap, topic, "read_uncommitted", 2) == [
        b"from-the-zombie", b"from-the-new-instance"]


def test_aiokafka_consume_transform_produce_with_an_abort_in_the_middle(kafka_server: KafkaServerThread) -> None:
    """send_offsets_to_transaction: each batch read from the input, its
    transformed records and the group's offset in one transaction; one
    transaction aborted and its batch read again from the committed
    offset. Each input once in the output, the offset at the input's end."""
    asyncio.run(_consume_transform_produce(kafka_server.bootstrap))


async def _consume_transform_produce(bootstrap: str) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.structs import TopicPartition

    source, sink, group, count = topic_name(), topic_name(), "transformer", 30
    plain = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await plain.start()
    for n in range(count):
        await plain.send_and_wait(source, b"%d" % n)
    await plain.stop()

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id="transformer-1")
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                                auto_offset_reset="earliest", isolation_level="read_committed", max_poll_records=7)
    await producer.start()
    await consumer.start()
    partition = TopicPartition(source, 0)
    consumer.assign([partition])
    aborted = False
    try:
        while (await consumer.committed(partition) or 0) < count:
            batch = (await consumer.getmany(partition, timeout_ms=2000)).get(partition, [])
            if not batch:
                continue
            await producer.begin_transaction()
            for record in batch:
                await producer.send(sink, b"out-" + record.value)
            await producer.send_offsets_to_transaction({partition: batch[-1].offset + 1}, group)
            if not aborted and batch[0].offset > 0:
                aborted = True
                await producer.abort_transaction()
                consumer.seek(partition, await consumer.committed(partition))  # read the batch again
                continue
            await producer.commit_transaction()
    finally:
        await consumer.stop()
        await producer.stop()
    assert aborted
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                              isolation_level="read_committed")
    await reader.start()
    try:
        out = TopicPartition(sink, 0)
        reader.assign([out])
        values: list[bytes] = []
        while True:
            got = (await reader.getmany(out, timeout_ms=2000)).get(out, [])
            if not got:
                break
            values.extend(record.value for record in got)
    finally:
        await reader.stop()
    assert values == [b"out-%d" % n for n in range(count)]


def test_confluent_kafka_transactional_api_and_fencing(kafka_server: KafkaServerThread) -> None:
    """librdkafka: init_transactions, send_offsets_to_transaction with the
    consumer's group metadata, commit and abort; a second instance fences
    the first (its commit fails fatally)."""
    from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

    source, sink, group = topic_name(), topic_name(), "librdkafka-transformer"
    plain = Producer({"bootstrap.servers": kafka_server.bootstrap})
    for n in range(5):
        plain.produce(source, b"%d" % n)
    plain.flush(10)
    config = {"bootstrap.servers": kafka_server.bootstrap, "transactional.id": "rdkafka-1"}
    producer = Producer(config)
    producer.init_transactions(10)
    consumer = Consumer({"bootstrap.servers": kafka_server.bootstrap, "group.id": group,
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "isolation.level": "read_committed"})
    consumer.assign([TopicPartition(source, 0)])
    batch = []
    while len(batch) < 5:
        batch.extend(message for message in consumer.consume(5, timeout=2) if not message.error())
    for commit in (False, True):
        producer.begin_transaction()
        for message in batch:
            producer.produce(sink, b"out-" + message.value())
        producer.send_offsets_to_transaction([TopicPartition(source, 0, 5)], consumer.consumer_group_metadata(), 10)
        if commit:
            producer.commit_transaction(10)
        else:
            producer.abort_transaction(10)
    assert [p.offset for p in consumer.committed([TopicPartition(source, 0)], timeout=10)] == [5]
    consumer.close()

    producer.begin_transaction()
    producer.produce(sink, b"zombie")
    producer.flush(10)
    newer = Producer(config)
    newer.init_transactions(10)  # fences the first instance and aborts its transaction
    with pytest.raises(KafkaException):
        producer.commit_transaction(10)
    assert consume_all(kafka_server.bootstrap, sink, "read_committed", 5) == [b"out-%d" % n for n in range(5)]


def test_kafka_python_admin_describes_and_lists_transactions(kafka_server: KafkaServerThread) -> None:
    from kafka import KafkaAdminClient
    from kafka.structs import TopicPartition

    topic = topic_name()
    producer = open_transaction(kafka_server.bootstrap, "described", topic, b"x")
    admin = KafkaAdminClient(bootstrap_servers=kafka_server.bootstrap)
    try:
        described = admin.describe_transactions(["described"])["described"]
        assert (described.state.value, described.topic_partitions) == ("Ongoing", {TopicPartition(topic, 0)})
        assert described.transaction_timeout_ms == 60_000  # kafka-python's default
        [listed] = [t for ts in admin.list_transactions(state_filters=["Ongoing"]).values() for t in ts]
        assert (listed.transactional_id, listed.producer_id) == ("described", described.producer_id)
        assert not [t for ts in admin.list_transactions(duration_filter_ms=3_600_000).values() for t in ts]
        producer.commit_transaction()
        assert admin.describe_transactions(["described"])["described"].state.value == "CompleteCommit"
        assert not [t for ts in admin.list_transactions(state_filters=["Ongoing"]).values() for t in ts]
    finally:
        admin.close()
        producer.close()
