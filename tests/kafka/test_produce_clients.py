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


def test_confluent_kafka_seeks_by_offset_and_time_and_reads_from_latest(kafka_server: KafkaServerThread) -> None:
    topic = topic_name()
    produce_confluent(kafka_server.bootstrap, topic, 20)
    got = consume_confluent(kafka_server.bootstrap, topic, 5, assign=[TopicPartition(topic, 0, 12)])
    assert [m.offset() for m in got] == [12, 13, 14, 15, 16]
    consumer = Consumer({"bootstrap.servers": kafka_server.bootstrap, "group.id": "seek"})
    # By time: the records' own timestamps (1_700_000_000_000 + i), not when they were appended.
    produce_confluent(kafka_server.bootstrap, topic, 5)
    [found] = consumer.offsets_for_times([TopicPartition(topic, 0, 1_700_000_000_000 + 13)], timeout=10)
    assert found.offset == 13
    [past] = consumer.offsets_for_times([TopicPartition(topic, 0, int(time.time() * 1000))], timeout=10)
    assert past.offset == -1  # nothing stamped at or after it
    low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    assert (low, high) == (0, 25)
    consumer.close()


HOUR_AGO = int(time.time() * 1000) - 3_600_000


def test_confluent_kafka_offsets_for_times_uses_the_records_timestamps(kafka_server: KafkaServerThread) -> None:
    """Records stamped an hour before they were appended, a second apart, in
    batches of several: a seek by time finds the first record stamped at or
    after it, inside a batch too, not the first one appended after it."""
    topic = topic_name()
    producer = Producer({"bootstrap.servers": kafka_server.bootstrap, "linger.ms": 50, "acks": "all"})
    for i in range(30):
        producer.produce(topic, value=b"%d" % i, timestamp=HOUR_AGO + 1000 * i)
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": kafka_server.bootstrap, "group.id": "seek"})
    for target, expected in [(HOUR_AGO - 5, 0), (HOUR_AGO, 0), (HOUR_AGO + 1, 1), (HOUR_AGO + 17_000, 17),
                             (HOUR_AGO + 16_500, 17), (HOUR_AGO + 29_000, 29), (HOUR_AGO + 29_001, -1),
                             (int(time.time() * 1000), -1)]:
        [found] = consumer.offsets_for_times([TopicPartition(topic, 0, target)], timeout=10)
        assert found.offset == expected, (target - HOUR_AGO, found)
    consumer.close()


def test_kafka_python_offsets_for_times_uses_the_records_timestamps(kafka_server: KafkaServerThread) -> None:
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.structs import TopicPartition as KPTopicPartition

    topic = topic_name()
    producer = KafkaProducer(bootstrap_servers=kafka_server.bootstrap, acks="all", linger_ms=50)
    futures = [producer.send(topic, value=b"%d" % i, timestamp_ms=HOUR_AGO + 1000 * i) for i in range(30)]
    producer.flush(30)
    assert [f.get(10).offset for f in futures] == list(range(30))
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=kafka_server.bootstrap)
    partition = KPTopicPartition(topic, 0)
    for target, expected in [(HOUR_AGO - 5, 0), (HOUR_AGO + 1, 1), (HOUR_AGO + 16_500, 17), (HOUR_AGO + 29_000, 29)]:
        found = consumer.offsets_for_times({partition: target})[partition]
        assert found is not None and (found.offset, found.timestamp) == (expected, HOUR_AGO + 1000 * expected)
    assert consumer.offsets_for_times({partition: HOUR_AGO + 29_001})[partition] is None
    consumer.close()


def test_offsets_for_times_uses_the_records_timestamps_after_kill_9(tmp_path) -> None:
    """Start-up rebuilds the records' times from the batches in the journal."""
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.structs import TopicPartition as KPTopicPartition

    from kafka_support import BrokerProcess

    broker = BrokerProcess(tmp_path / "data", tmp_path)
    broker.start()
    try:
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
        for i in range(10):  # one batch each
            producer.send("stamped", value=b"%d" % i, timestamp_ms=HOUR_AGO + 1000 * i).get(10)
        producer.close()
        broker.kill()
        broker.start()
        consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap)
        partition = KPTopicPartition("stamped", 0)
        found = consumer.offsets_for_times({partition: HOUR_AGO + 6_500})[partition]
        assert found is not None and found.offset == 7
        assert consumer.offsets_for_times({partition: HOUR_AGO + 9_001})[partition] is None
        consumer.close()
    finally:
        broker.kill()


def test_kafka_python_produce_consume_seek(kafka_server: KafkaServerThread) -> None:
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.structs import TopicPartition as KPTopicPartition

    topic = topic_name()
    producer = KafkaProducer(bootstrap_servers=kafka_server.bootstrap, acks="all")  # idempotent by default
    futures = [producer.send(topic, value=b"v%d" % i, key=b"k%d" % (i % 3), headers=[("i", b"%d" % i)],
                             timestamp_ms=1_600_000_000_000 + i) for i in range(N)]
    producer.flush(30)
    assert [f.get(10).offset for f in futures] == list(range(N))
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=kafka_server.bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=10_000)
    partition = KPTopicPartition(topic, 0)
    consumer.assign([partition])
    consumer.seek_to_beginning(partition)
    got = [next(consumer) for _ in range(N)]
    assert [(m.offset, m.key, m.value, m.headers, m.timestamp) for m in got] == [
        (i, b"k%d" % (i % 3), b"v%d" % i, [("i", b"%d" % i)], 1_600_000_000_000 + i) for i in range(N)]
    consumer.seek(partition, 40)
    assert next(consumer).offset == 40
    # From latest: only what comes after the consumer is placed.
    consumer.seek_to_end(partition)
    assert consumer.position(partition) == N
    producer = KafkaProducer(bootstrap_servers=kafka_server.bootstrap, acks="all")
    producer.send(topic, value=b"late").get(10)
    producer.close()
    late = next(consumer)
    assert (late.offset, late.value) == (N, b"late")
    assert consumer.end_offsets([partition]) == {partition: N + 1}
    assert consumer.beginning_offsets([partition]) == {partition: 0}
    found = consumer.offsets_for_times({partition: 0})[partition]
    assert found is not None and found.offset == 0
    consumer.close()


def test_aiokafka_produce_consume_seek() -> None:
    from kafka_support import start_kafka

    server = start_kafka()
    try:
        asyncio.run(_aiokafka(server.bootstrap))
    finally:
        server.stop()


async def _aiokafka(bootstrap: str) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.structs import TopicPartition as AIOTopicPartition

    topic = topic_name()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all")
    await producer.start()
    try:
        sent = [await producer.send_and_wait(topic, value=b"a%d" % i, key=b"k", headers=[("h", b"x")])
                for i in range(10)]
        batch = producer.create_batch()
        for i in range(10, 20):
            batch.append(key=None, value=b"a%d" % i, timestamp=None)
        await producer.send_batch(batch, topic, partition=0)
    finally:
        await producer.stop()
    assert [m.offset for m in sent] == list(range(10))
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        partition = AIOTopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        got = []
        while len(got) < 20:
            for records in (await consumer.getmany(timeout_ms=2000)).values():
                got.extend(records)
        assert [(m.offset, m.value) for m in got] == [(i, b"a%d" % i) for i in range(20)]
        assert got[0].key == b"k" and list(got[0].headers) == [("h", b"x")]
        consumer.seek(partition, 15)
        [first, *_] = (await consumer.getmany(partition, timeout_ms=5000))[partition]
        assert first.offset == 15
        times = await consumer.offsets_for_times({partition: 0})
        assert times[partition] is not None and times[partition].offset == 0
        assert await consumer.end_offsets([partition]) == {partition: 20}
    finally:
        await consumer.stop()


def test_fetch_behind_the_memory_window_reads_batches_and_messages_back_from_disk() -> None:
    from kafka_support import start_kafka

    server = start_kafka(queue_memory_budget=50)
    try:
        topic = topic_name()
        produce_confluent(server.bootstrap, topic, 400, **{"batch.num.messages": 30})
        connection = server.connect()
        channel = connection.channel()
        channel.confirm_delivery()
        for n in range(300):
            channel.basic_publish("", topic, b"amqp-%d" % n)
        connection.close()
        produce_confluent(server.bootstrap, topic, 400, **{"batch.num.messages": 30})
        time.sleep(0.2)  # the last write's page-out
        stream = server.call(lambda: server.server.core.vhosts["/"].queues[topic])  # type: ignore[union-attr]
        assert server.call(lambda: stream._memory_first) > 900  # the rest is on disk only
        got = consume_confluent(server.bootstrap, topic, 1100, assign=[TopicPartition(topic, 0, 0)])
        assert [m.offset() for m in got] == list(range(1100))
        values = [m.value() for m in got]
        assert values[:400] == [b"value-%d" % i for i in range(400)]
        assert values[400:700] == [b"amqp-%d" % n for n in range(300)]
        assert values[700:] == [b"value-%d" % i for i in range(400)]
        assert got[450].key() is None and got[0].headers() == [("n", b"0"), ("empty", None), ("n", b"again")]
    finally:
        server.stop()
