"""Shared fixtures for the broker-core tests: a fresh pure broker per test."""

from __future__ import annotations

import pytest

from amqlite.core.broker import Broker
from amqlite.core.channel import Channel
from amqlite.core.connection import Connection


@pytest.fixture
def broker() -> Broker:
    return Broker()


@pytest.fixture
def conn(broker: Broker) -> Connection:
    return broker.connect()


@pytest.fixture
def ch(conn: Connection) -> Channel:
    return conn.open_channel()
