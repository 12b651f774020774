"""Idempotent produce across kill -9: a batch acknowledged (acks=all: on
disk) and then sent again after the broker was killed and restarted is a
duplicate, answered with the offset it got the first time and not stored
twice; the producer's next batch follows; a gap is OUT_OF_ORDER_SEQUENCE_NUMBER
and an older epoch INVALID_PRODUCER_EPOCH. Wire-level, so that the retry is
exactly the same batch, as a client's is."""

from __future__ import annotations

import datetime
import socket
import struct
import time
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from kio.schema.metadata.v4.request import MetadataRequest, MetadataRequestTopic
from kio.schema.produce.v7.request import PartitionProduceData, ProduceRequest, TopicProduceData

from amqlite.kafka import records
from amqlite.kafka.records import Record
from kafka_support import BrokerProcess, decode_response, request_frame, split_responses

PRODUCER, EPOCH = 123_456, 0


class Client:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.correlation = 0

    def call(self, body: object) -> object:
        self.correlation += 1
        self.sock.sendall(request_frame(body, self.correlation))
        head = self._read(4)
        frame = self._read(struct.unpack(">i", head)[0])
        [frame] = split_responses(head + frame)
        correlation, response = decode_response(frame, body.__api_key__, body.__version__)  # type: ignore[attr-defined]
        assert correlation == self.correlation
        return response

    def _read(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            assert chunk, "the broker closed the connection"
            data += chunk
        return data

    def close(self) -> None:
        self.sock.close()


def batch(sequence: int, count: int, epoch: int = EPOCH) -> bytes:
    rows = [Record(i, 1_700_000_000_000, b"k", b"record-%d" % (sequence + i)) for i in range(count)]
    return records.encode(0, rows, producer_id=PRODUCER, producer_epoch=epoch, base_sequence=sequence)


def produce(client: Client, data: bytes) -> tuple[int, int]:
    request = ProduceRequest(transactional_id=None, acks=-1, timeout=datetime.timedelta(seconds=10), topic_data=(
        TopicProduceData(name="orders", partition_data=(PartitionProduceData(index=0, records=data),)),))
    response = client.call(request)
    [topic] = response.responses  # type: ignore[attr-defined]
    [partition] = topic.partition_responses
    return int(partition.error_code.value), int(partition.base_offset)


def test_a_retry_after_kill_9_is_a_duplicate_with_its_first_offset(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path / "data", tmp_path)
    broker.start()
    try:
        client = Client(broker.kafka_port)
        client.call(MetadataRequest(topics=(MetadataRequestTopic(name="orders"),), allow_auto_topic_creation=True))
        assert produce(client, batch(0, 10)) == (0, 0)
        assert produce(client, batch(10, 10)) == (0, 10)
        assert produce(client, batch(10, 10)) == (0, 10)  # a retry, broker up
        client.close()
        broker.kill()
        broker.start()
        client = Client(broker.kafka_port)
        assert produce(client, batch(10, 10)) == (0, 10)  # the retry after the crash: a duplicate
        assert produce(client, batch(0, 10)) == (0, 0)
        assert produce(client, batch(20, 5)) == (0, 20)  # the next one follows
        assert produce(client, batch(40, 5)) == (45, -1)  # OUT_OF_ORDER_SEQUENCE_NUMBER
        assert produce(client, batch(0, 5, epoch=1)) == (0, 25)  # a new epoch starts at 0 ...
        assert produce(client, batch(25, 5, epoch=0)) == (47, -1)  # ... and fences the old one
        client.close()
        broker.kill()
        broker.start()
        client = Client(broker.kafka_port)
        assert produce(client, batch(0, 5, epoch=1)) == (0, 25)
        assert produce(client, batch(25, 5, epoch=0)) == (47, -1)
        client.close()
        # Stored once each: 30 records, in the order first acknowledged.
        consumer = Consumer({"bootstrap.servers": f"127.0.0.1:{broker.kafka_port}", "group.id": "check",
                             "enable.auto.commit": False})
        consumer.assign([TopicPartition("orders", 0, 0)])
        got: list[tuple[int, bytes]] = []
        deadline = time.monotonic() + 30
        while len(got) < 30 and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                got.append((message.offset(), message.value()))
        low, high = consumer.get_watermark_offsets(TopicPartition("orders", 0), timeout=10)
        consumer.close()
        assert (low, high) == (0, 30)
        assert got == [(i, b"record-%d" % i) for i in range(25)] + [(25 + i, b"record-%d" % i) for i in range(5)]
    finally:
        broker.kill()


def test_an_idempotent_client_producing_through_kill_9_stores_each_record_once(tmp_path: Path) -> None:
    """librdkafka (enable.idempotence) resends what was in flight when the
    broker died, with the same sequence numbers, once it is back on the
    same port: what reached the disk is a duplicate, the rest is stored;
    every record once, in order."""
    import threading

    from confluent_kafka import Producer

    broker = BrokerProcess(tmp_path / "data", tmp_path)
    broker.start()
    bootstrap = f"127.0.0.1:{broker.kafka_port}"
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                         "linger.ms": 2, "batch.num.messages": 20, "message.timeout.ms": 120_000,
                         "reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 200})
    failed: list[object] = []
    delivered = [0]
    total = 3000

    def report(error: object, message: object) -> None:
        if error is not None:
            failed.append(error)
        else:
            delivered[0] += 1

    def produce_all() -> None:
        for n in range(total):
            producer.produce("trail", b"r-%d" % n, on_delivery=report)
            if n % 20 == 0:
                producer.poll(0)
                time.sleep(0.004)

    try:
        producer.produce("trail", b"first", on_delivery=report)  # the topic made
        assert producer.flush(30) == 0
        sender = threading.Thread(target=produce_all)
        sender.start()
        time.sleep(0.4)
        broker.kill()
        assert 1 < delivered[0] < total  # killed mid-stream
        time.sleep(0.3)
        broker.start()
        sender.join(60)
        assert producer.flush(90) == 0 and not failed, failed[:3]
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "check", "enable.auto.commit": False})
        consumer.assign([TopicPartition("trail", 0, 0)])
        values: list[bytes] = []
        deadline = time.monotonic() + 60
        while len(values) < total + 1 and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                values.append(message.value())
        _, high = consumer.get_watermark_offsets(TopicPartition("trail", 0), timeout=10)
        consumer.close()
        assert high == total + 1
        assert values == [b"first"] + [b"r-%d" % n for n in range(total)]
    finally:
        broker.kill()


def stored_values(bootstrap: str, topic: str, count: int) -> tuple[list[bytes], int]:
    """The values of ``topic``'s partition 0 from offset 0, and its high watermark."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "check", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    values: list[bytes] = []
    deadline = time.monotonic() + 30
    while len(values) < count and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            values.append(message.value())
    _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    consumer.close()
    return values, high


def test_kafka_python_idempotent_producer_through_kill_9_stores_each_record_once(tmp_path: Path) -> None:
    """kafka-python (enable_idempotence) resends its in-flight batches with
    their sequence numbers once the broker is back on the same port."""
    import threading

    from kafka import KafkaProducer

    broker = BrokerProcess(tmp_path / "data", tmp_path)
    broker.start()
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=True, acks="all", linger_ms=2,
                             batch_size=400, retries=1_000_000, delivery_timeout_ms=120_000,
                             request_timeout_ms=5_000, reconnect_backoff_ms=50, reconnect_backoff_max_ms=200,
                             retry_backoff_ms=50)
    total = 2000
    futures: list[object] = []

    def produce_all() -> None:
        for n in range(total):
            futures.append(producer.send("trail", b"r-%d" % n))
            if n % 20 == 0:
                time.sleep(0.004)

    try:
        producer.send("trail", b"first").get(30)  # the topic made
        sender = threading.Thread(target=produce_all)
        sender.start()
        time.sleep(0.4)
        broker.kill()
        acknowledged = sum(1 for future in futures if future.is_done and future.succeeded())  # type: ignore[attr-defined]
        assert 1 < acknowledged < total  # killed mid-stream
        time.sleep(0.3)
        broker.start()
        sender.join(60)
        producer.flush(90)
        failed = [future.exception for future in futures if future.failed()]  # type: ignore[attr-defined]
        assert not failed, failed[:3]
        producer.close()
        values, high = stored_values(broker.bootstrap, "trail", total + 1)
        assert high == total + 1
        assert values == [b"first"] + [b"r-%d" % n for n in range(total)]
    finally:
        broker.kill()


def test_aiokafka_idempotent_producer_through_kill_9_stores_each_record_once(tmp_path: Path) -> None:
    """aiokafka (enable_idempotence) likewise."""
    import asyncio

    from aiokafka import AIOKafkaProducer

    broker = BrokerProcess(tmp_path / "data", tmp_path)
    broker.start()
    total = 2000

    async def run() -> list[BaseException]:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=True, acks="all",
                                    linger_ms=2, max_batch_size=400, request_timeout_ms=5_000,
                                    retry_backoff_ms=50)
        await producer.start()
        try:
            await producer.send_and_wait("trail", b"first")  # the topic made
            futures = []
            for n in range(total):
                futures.append(await producer.send("trail", b"r-%d" % n))
                if n % 20 == 0:
                    await asyncio.sleep(0.004)
                if n == total // 4:
                    acknowledged = sum(1 for future in futures if future.done() and not future.exception())
                    broker.kill()
                    assert 1 < acknowledged < total  # killed mid-stream
                    await asyncio.sleep(0.3)
                    await asyncio.to_thread(broker.start)
            outcomes = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 90)
            return [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        finally:
            await producer.stop()

    try:
        failed = asyncio.run(run())
        assert not failed, failed[:3]
        values, high = stored_values(broker.bootstrap, "trail", total + 1)
        assert high == total + 1
        assert values == [b"first"] + [b"r-%d" % n for n in range(total)]
    finally:
        broker.kill()
