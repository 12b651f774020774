"""Metadata through real clients: streams declared over AMQP are topics
(a partitioned stream is one topic of N partitions), unknown topics are
auto-created as streams, and the broker is advertised where it was reached."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
import shutil
import subprocess
from typing import Iterator

import pytest
from aiokafka import AIOKafkaConsumer
from confluent_kafka.admin import AdminClient
from kafka import KafkaConsumer

from amqlite.core.stream import Stream

from kafka_support import KafkaServerThread, start_kafka, start_managed_kafka


def declare_streams(server: KafkaServerThread) -> None:
    """A stream "events" and a partitioned stream "orders" of 3, over AMQP."""
    connection = server.connect()
    channel = connection.channel()
    channel.queue_declare("events", durable=True, arguments={"x-queue-type": "stream"})
    channel.exchange_declare("orders", "x-consistent-hash", durable=True)
    for n in range(3):
        channel.queue_declare(f"orders-{n}", durable=True, arguments={"x-queue-type": "stream"})
        channel.queue_bind(f"orders-{n}", "orders", "1")
    channel.queue_declare("work", durable=True)  # a classic queue is no topic
    connection.close()


@pytest.fixture
def streams(kafka_server: KafkaServerThread) -> KafkaServerThread:
    declare_streams(kafka_server)
    return kafka_server


def test_kafka_python_lists_streams_as_topics(streams: KafkaServerThread) -> None:
    consumer = KafkaConsumer(bootstrap_servers=streams.bootstrap)
    try:
        assert consumer.topics() == {"events", "orders"}
        assert consumer.partitions_for_topic("orders") == {0, 1, 2}
        assert consumer.partitions_for_topic("events") == {0}
    finally:
        consumer.close()


def test_confluent_admin_sees_the_broker_where_it_was_reached(streams: KafkaServerThread) -> None:
    metadata = AdminClient({"bootstrap.servers": streams.bootstrap}).list_topics(timeout=10)
    (broker,) = metadata.brokers.values()
    assert (broker.id, broker.host, broker.port) == (0, "127.0.0.1", streams.kafka_port)
    assert {name: len(topic.partitions) for name, topic in metadata.topics.items()} == {"events": 1, "orders": 3}
    assert all(p.leader == 0 and p.replicas == [0] for p in metadata.topics["orders"].partitions.values())


def test_aiokafka_lists_topics(streams: KafkaServerThread) -> None:
    async def topics() -> set[str]:
        consumer = AIOKafkaConsumer(bootstrap_servers=streams.bootstrap)
        await consumer.start()
        try:
            return set(await consumer.topics())
        finally:
            await consumer.stop()

    assert asyncio.run(topics()) == {"events", "orders"}


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed (Debian's kcat; .ci/run installs it)")
def test_kcat_lists_topics_and_auto_creates_one(streams: KafkaServerThread) -> None:
    listing = subprocess.run(["kcat", "-b", streams.bootstrap, "-L", "-m", "10"], capture_output=True, text=True,
                             timeout=30, check=True).stdout
    assert 'topic "events" with 1 partitions' in listing and 'topic "orders" with 3 partitions' in listing
    assert "work" not in listing
    asked = subprocess.run(["kcat", "-b", streams.bootstrap, "-L", "-t", "fresh", "-m", "10"], capture_output=True,
                           text=True, timeout=30, check=True).stdout
    assert 'topic "fresh" with 1 partitions' in asked
    created = streams.call(lambda: streams.server.core.vhosts["/"].queues.get("fresh"))  # type: ignore[union-attr]
    assert isinstance(created, Stream) and created.durable


@pytest.fixture
def no_auto_create() -> Iterator[KafkaServerThread]:
    server = start_kafka(kafka_auto_create_topics=False)
    yield server
    server.stop()


def test_without_auto_create_an_unknown_topic_stays_unknown(no_auto_create: KafkaServerThread) -> None:
    admin = AdminClient({"bootstrap.servers": no_auto_create.bootstrap})
    metadata = admin.list_topics(topic="missing", timeout=10)
    assert metadata.topics["missing"].error is not None
    assert metadata.topics["missing"].error.code() == 3  # UNKNOWN_TOPIC_OR_PARTITION
    assert no_auto_create.call(lambda: "missing" in no_auto_create.server.core.vhosts["/"].queues) is False  # type: ignore[union-attr]


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed (Debian's kcat; .ci/run installs it)")
def test_kcat_produces_and_consumes_with_keys_and_headers(kafka_server: KafkaServerThread) -> None:
    produced = subprocess.run(["kcat", "-P", "-b", kafka_server.bootstrap, "-t", "kc", "-K", ":", "-H", "h1=v1"],
                              input="k1:hello\nk2:world\n", capture_output=True, text=True, timeout=30)
    assert produced.returncode == 0, produced.stderr
    consumed = subprocess.run(["kcat", "-C", "-b", kafka_server.bootstrap, "-t", "kc", "-e", "-o", "beginning",
                               "-f", "%k=%s %h %o\n"], capture_output=True, text=True, timeout=30, check=True)
    assert consumed.stdout == "k1=hello h1=v1 0\nk2=world h1=v1 1\n"
    stream = kafka_server.call(lambda: kafka_server.server.core.vhosts["/"].queues["kc"])  # type: ignore[union-attr]
    assert isinstance(stream, Stream) and stream.end == 2


def test_metadata_lists_only_what_the_user_may_use_and_auto_create_needs_configure() -> None:
    users = {"narrow": {"password": "pw", "permissions": {"/": {"configure": "^$", "write": "^$", "read": "^seen"}}}}
    server = start_kafka(users=users, kafka_allow_anonymous=False)
    try:
        declare_streams(server)
        server.call(lambda: server.server.core.vhosts["/"].declare_queue(  # type: ignore[union-attr]
            "seen-events", owner=None, now=0.0, durable=True, arguments={"x-queue-type": "stream"}))
        admin = AdminClient({"bootstrap.servers": server.bootstrap, "security.protocol": "SASL_PLAINTEXT",
                             "sasl.mechanism": "PLAIN", "sasl.username": "narrow", "sasl.password": "pw"})
        assert set(admin.list_topics(timeout=10).topics) == {"seen-events"}
        hidden = admin.list_topics(topic="events", timeout=10).topics["events"]
        assert hidden.error is not None and hidden.error.code() == 29  # TOPIC_AUTHORIZATION_FAILED
        refused = admin.list_topics(topic="seen-new", timeout=10).topics["seen-new"]
        assert refused.error is not None and refused.error.code() == 29  # may read it, not create it
        assert server.call(lambda: "seen-new" in server.server.core.vhosts["/"].queues) is False  # type: ignore[union-attr]
    finally:
        server.stop()


def test_topics_live_in_kafka_vhost_and_the_advertised_host_is_the_setting() -> None:
    server = start_kafka(vhosts=["/", "kafka"], kafka_vhost="kafka", kafka_advertised_host="localhost")
    try:
        declare_streams(server)  # in "/": not topics here
        server.call(lambda: server.server.core.vhosts["kafka"].declare_queue(  # type: ignore[union-attr]
            "there", owner=None, now=0.0, durable=True, arguments={"x-queue-type": "stream"}))
        metadata = AdminClient({"bootstrap.servers": server.bootstrap}).list_topics(timeout=10)
        assert set(metadata.topics) == {"there"}
        assert [(b.host, b.port) for b in metadata.brokers.values()] == [("localhost", server.kafka_port)]
    finally:
        server.stop()


def test_a_kafka_vhost_that_does_not_exist_stops_start_up(tmp_path: Path) -> None:
    # Checked before binding: port 1 is never tried.
    result = subprocess.run([sys.executable, "-m", "amqlite", "serve", "--port", "0", "--kafka-port", "1",
                             "--data-dir", str(tmp_path)], env={**os.environ, "AMQLITE_KAFKA_VHOST": "nope"},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "kafka_vhost 'nope' is not a vhost (vhosts: /)" in result.stderr


def test_the_management_overview_lists_the_kafka_listener() -> None:
    server = start_managed_kafka()
    try:
        with server.http() as http:
            listeners = http.get("/api/overview").json()["listeners"]
        assert {"protocol": "kafka", "port": server.kafka_port} in [
            {"protocol": entry["protocol"], "port": entry["port"]} for entry in listeners]
    finally:
        server.stop()
