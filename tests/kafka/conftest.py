"""An amqlite server with a Kafka listener on an ephemeral port."""

from __future__ import annotations

from typing import Iterator

import pytest

from kafka_support import KafkaServerThread, start_kafka


@pytest.fixture
def kafka_server() -> Iterator[KafkaServerThread]:
    server = start_kafka()
    yield server
    server.stop()
