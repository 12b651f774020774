"""Kafka transactions through real clients: what applications rely on.

The classic example of issue 24 with kafka-python, unchanged: a
transactional producer writes to two topics and commits, then aborts, then
commits; a read_committed consumer sees the first and third transactions,
a read_uncommitted one all three, and control records take offsets but
are no records to either. Zombie fencing: a second instance of the same
transactional.id fences the first.
"""

from __future__ import annotations

import uuid

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


def test_a_second_instance_of_a_transactional_id_fences_the_first(kafka_server: KafkaServerThread) -> None:
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    topic = topic_name()
    first = KafkaProducer(bootstrap_servers=kafka_server.bootstrap, transactional_id="zombie")
    first.init_transactions()
    first.begin_transaction()
    first.send(topic, b"from-the-zombie")
    first.flush()
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
