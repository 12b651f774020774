"""Kafka producers and the disk alarm (disk_free_limit): Produce is
answered KAFKA_STORAGE_ERROR, what a Kafka broker answers when a log
directory cannot take writes, a retriable error: clients keep retrying
and deliver once the space is back, nothing lost and nothing twice."""

from __future__ import annotations

import functools
import time
from typing import Any, Iterator

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from kafka import KafkaProducer
from structlog.testing import capture_logs

from amqlite import storage
from amqlite.server import listener
from faultyfs import FaultyFS
from kafka_support import KafkaServerThread, start_kafka

LIMIT = 50_000_000


@pytest.fixture
def fs(monkeypatch: pytest.MonkeyPatch) -> FaultyFS:
    fs = FaultyFS()
    monkeypatch.setattr(listener, "DiskJournal", functools.partial(listener.DiskJournal, fs=fs))
    monkeypatch.setattr(storage, "DISK_CHECK_INTERVAL", 0.01)
    monkeypatch.setattr(storage, "DISK_CHECK_INTERVAL_LOW", 0.01)
    return fs


@pytest.fixture
def server(fs: FaultyFS) -> Iterator[KafkaServerThread]:
    server = start_kafka(disk_free_limit=LIMIT)
    yield server
    server.stop()


def _accepting(server: KafkaServerThread) -> bool:
    assert server.server is not None and server.server.journal is not None
    return bool(server.call(lambda: server.server.journal.accepting))  # type: ignore[union-attr]


def _until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def _values(server: KafkaServerThread, topic: str, count: int) -> list[bytes]:
    consumer = Consumer({"bootstrap.servers": server.bootstrap, "group.id": "check", "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    consumer.subscribe([topic])
    values: list[bytes] = []
    deadline = time.monotonic() + 20
    try:
        while len(values) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                values.append(message.value())
        extra = consumer.poll(0.5)
        assert extra is None or extra.error() is not None, "nothing more than was produced"
    finally:
        consumer.close()
    return values


@pytest.mark.parametrize("idempotent", [True, False])
def test_confluent_producers_retry_through_the_disk_alarm(server: KafkaServerThread, fs: FaultyFS,
                                                          idempotent: bool) -> None:
    reports: list[tuple[Any, bytes]] = []
    producer = Producer({"bootstrap.servers": server.bootstrap, "enable.idempotence": idempotent,
                         "linger.ms": 5, "message.timeout.ms": 60000})
    for n in range(50):
        producer.produce("spaced", b"%03d" % n, on_delivery=lambda error, message: reports.append(
            (error, message.value())))
    assert producer.flush(10) == 0 and all(error is None for error, _ in reports)

    fs.free = LIMIT - 1
    _until(lambda: not _accepting(server))
    reports.clear()
    for n in range(50, 100):
        producer.produce("spaced", b"%03d" % n, on_delivery=lambda error, message: reports.append(
            (error, message.value())))
    with capture_logs() as logs:
        end = time.monotonic() + 2
        while time.monotonic() < end:
            producer.poll(0.1)
    assert reports == []  # neither delivered nor failed: retried
    refused = [entry for entry in logs if entry["event"] == "kafka.produce_refused"]
    assert refused and {entry["error"] for entry in refused} == {"kafka_storage_error"}

    fs.free = None
    _until(lambda: _accepting(server))
    assert producer.flush(30) == 0
    assert [value for error, value in reports if error is None] == [b"%03d" % n for n in range(50, 100)]
    assert _values(server, "spaced", 100) == [b"%03d" % n for n in range(100)]


def test_kafka_python_retries_through_the_disk_alarm(server: KafkaServerThread, fs: FaultyFS) -> None:
    producer = KafkaProducer(bootstrap_servers=server.bootstrap)  # idempotent, acks=all, retried until 120 s
    try:
        producer.send("spaced-py", b"before").get(timeout=10)
        fs.free = LIMIT - 1
        _until(lambda: not _accepting(server))
        waiting = [producer.send("spaced-py", b"%03d" % n) for n in range(20)]
        time.sleep(2)
        assert not any(future.is_done for future in waiting)
        fs.free = None
        offsets = [future.get(timeout=30).offset for future in waiting]
    finally:
        producer.close()
    assert offsets == list(range(1, 21))
    assert _values(server, "spaced-py", 21) == [b"before"] + [b"%03d" % n for n in range(20)]
