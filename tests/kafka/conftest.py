"""An amqlite server with a Kafka listener on an ephemeral port."""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from kafka_support import KafkaServerThread, start_kafka


@pytest.fixture
def kafka_server() -> Iterator[KafkaServerThread]:
    server = start_kafka()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mock() -> Iterator[dict[str, Any]]:
    """librdkafka's mock cluster (confluent-kafka's ``test.mock.num.brokers``),
    the Kafka reference that runs here: its client settings."""
    from confluent_kafka import Producer

    # The mock lives as long as the client that made it.
    keeper = Producer({"test.mock.num.brokers": 1})
    brokers = keeper.list_topics(timeout=10).brokers
    [(host, port)] = [(b.host, b.port) for b in brokers.values()]
    yield {"bootstrap.servers": f"{host}:{port}"}
    keeper.flush(10)
    keeper.close()  # the mock's threads end here, not at interpreter exit
