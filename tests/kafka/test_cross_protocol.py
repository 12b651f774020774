"""One stream, two protocols: written over AMQP and read over Kafka, and the
reverse, value, key, headers and timestamp kept byte for byte (the table in
docs/kafka.md); an AMQP publisher and a Kafka producer with the same key
feed the same partition."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pika
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from kafka_support import KafkaServerThread


def read_kafka(server: KafkaServerThread, topic: str, count: int, partitions: int = 1) -> list[Any]:
    consumer = Consumer({"bootstrap.servers": server.bootstrap, "group.id": f"x-{uuid.uuid4().hex[:6]}",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got: list[Any] = []
    deadline = time.monotonic() + 30
    while len(got) < count and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            got.append(message)
    consumer.close()
    assert len(got) == count
    return got


def read_amqp(channel: Any, stream: str, count: int) -> list[tuple[Any, bytes]]:
    channel.basic_qos(prefetch_count=100)
    got: list[tuple[Any, bytes]] = []

    def on_message(ch: Any, method: Any, properties: Any, body: bytes) -> None:
        got.append((properties, body))
        ch.basic_ack(method.delivery_tag)

    tag = channel.basic_consume(stream, on_message, arguments={"x-stream-offset": "first"})
    deadline = time.monotonic() + 30
    while len(got) < count and time.monotonic() < deadline:
        channel.connection.process_data_events(time_limit=0.1)
    channel.basic_cancel(tag)
    assert len(got) == count
    return got


def test_amqp_written_kafka_read_field_by_field(kafka_server: KafkaServerThread) -> None:
    connection = kafka_server.connect()
    channel = connection.channel()
    channel.queue_declare("events", durable=True, arguments={"x-queue-type": "stream"})
    channel.confirm_delivery()
    channel.basic_publish("", "events", b"first", pika.BasicProperties(
        headers={"x-kafka-key": b"\xffkey", "trace": "abc", "bin": b"\x00\x01", "n": 7}, timestamp=1_700_000_000))
    channel.basic_publish("", "events", b"second", pika.BasicProperties(
        headers={"x-kafka-timestamp": 1_700_000_000_123}))
    channel.basic_publish("", "events", b"", pika.BasicProperties(headers={"x-kafka-null-value": True}))
    first, second, tombstone = read_kafka(kafka_server, "events", 3)
    assert (first.offset(), first.value(), first.key()) == (0, b"first", b"\xffkey")
    assert first.headers() == [("trace", b"abc"), ("bin", b"\x00\x01"), ("n", b"7")]
    assert first.timestamp()[1] == 1_700_000_000_000
    assert (second.key(), second.headers(), second.timestamp()[1]) == (None, None, 1_700_000_000_123)
    assert (tombstone.offset(), tombstone.value()) == (2, None)
    # A seek by time goes by those timestamps (the third: when it was appended).
    consumer = Consumer({"bootstrap.servers": kafka_server.bootstrap, "group.id": "seek"})
    for target, expected in [(1_699_999_999_000, 0), (1_700_000_000_000, 0), (1_700_000_000_001, 1),
                             (1_700_000_000_124, 2), (int(time.time() * 1000) + 60_000, -1)]:
        [found] = consumer.offsets_for_times([TopicPartition("events", 0, target)], timeout=10)
        assert found.offset == expected, target
    consumer.close()
    connection.close()


def test_kafka_written_amqp_read_and_back_byte_for_byte(kafka_server: KafkaServerThread) -> None:
    producer = Producer({"bootstrap.servers": kafka_server.bootstrap})
    producer.produce("trail", value=b"payload", key=b"\xffkey", headers=[("a", b"1"), ("a", b"2"), ("nul", None)],
                     timestamp=1_700_000_000_123)
    producer.produce("trail", value=None, key=b"gone")  # a tombstone
    assert producer.flush(30) == 0
    connection = kafka_server.connect()
    channel = connection.channel()
    (properties, body), (tomb_properties, tomb_body) = read_amqp(channel, "trail", 2)
    headers = properties.headers
    assert body == b"payload"
    assert headers["x-kafka-key"] == b"\xffkey"
    assert headers["a"] == [b"1", b"2"] and headers["nul"] is None
    assert headers["x-kafka-timestamp"] == 1_700_000_000_123 and properties.timestamp == 1_700_000_000
    assert headers["x-stream-offset"] == 0 and properties.delivery_mode == 2
    assert (tomb_body, tomb_properties.headers["x-kafka-null-value"]) == (b"", True)
    # Published again over AMQP as delivered, read over Kafka: the same record.
    channel.confirm_delivery()
    for again in (properties, tomb_properties):
        channel.basic_publish("", "trail", body if again is properties else tomb_body, again)
    connection.close()
    original, tombstone, copy, tomb_copy = read_kafka(kafka_server, "trail", 4)
    for a, b in ((original, copy), (tombstone, tomb_copy)):
        assert (b.value(), b.key(), b.headers(), b.timestamp()) == (a.value(), a.key(), a.headers(), a.timestamp())
    assert copy.headers() == [("a", b"1"), ("a", b"2"), ("nul", None)]


def test_amqp_and_kafka_keys_land_in_the_same_partition(kafka_server: KafkaServerThread) -> None:
    from kafka import KafkaProducer

    admin = AdminClient({"bootstrap.servers": kafka_server.bootstrap})
    admin.create_topics([NewTopic("mixed", 3, 1)])["mixed"].result(10)
    keys = [f"user-{n}" for n in range(30)]
    connection = kafka_server.connect()
    channel = connection.channel()
    channel.confirm_delivery()
    for key in keys:
        channel.basic_publish("mixed", key, b"amqp")
    connection.close()
    producer = KafkaProducer(bootstrap_servers=kafka_server.bootstrap)  # murmur2, as Java's
    for key in keys:
        producer.send("mixed", value=b"kafka", key=key.encode())
    producer.flush(30)
    producer.close()
    partitions: dict[bytes, set[int]] = {}
    for message in read_kafka(kafka_server, "mixed", 2 * len(keys), partitions=3):
        partitions.setdefault(message.key(), set()).add(message.partition())
    assert sorted(partitions) == sorted(key.encode() for key in keys)
    assert all(len(found) == 1 for found in partitions.values()), partitions
    assert len(set().union(*partitions.values())) == 3  # spread over every partition
