"""Settings every test shares."""

import os
from pathlib import Path

import pytest

# Brokers started as processes (`amqlite serve`) serve no HTTP unless a test
# asks: RabbitMQ's fixed management and Prometheus ports would clash between
# test servers, and with a reference RabbitMQ that has its plugins enabled.
os.environ.setdefault("AMQLITE_MANAGEMENT_PORT", "0")
os.environ.setdefault("AMQLITE_PROMETHEUS_PORT", "0")
# Nor Kafka (9092 by default), for the same reason; tests/kafka starts its own on a free port.
os.environ.setdefault("AMQLITE_KAFKA_PORT", "0")


@pytest.fixture(autouse=True)
def _own_data_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A broker a test starts without --data-dir keeps its files in a
    directory of its own, never the working directory's ./amqlite-data,
    which `make run` in the checkout holds (issue 21)."""
    path = tmp_path_factory.mktemp("data")
    monkeypatch.setenv("AMQLITE_DATA_DIR", str(path))
    return path
