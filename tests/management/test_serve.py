"""`amqlite serve` wiring: the management API and Prometheus in the broker's
own trio run, on the ports the settings give, and a clear start-up error."""

from __future__ import annotations

import socket

import httpx
import pytest

from amqlite.config import Settings
from amqlite.server.listener import Server, StartupError
from server.conftest import start_amqlite


def test_server_serves_api_and_metrics_on_configured_ports() -> None:
    server = start_amqlite(management_port=_free_port(), prometheus_port=_free_port())
    try:
        assert server.server is not None
        ports = server.server.http_ports
        assert ports["management"] == server.settings.management_port
        overview = httpx.get(f"http://127.0.0.1:{ports['management']}/api/overview", auth=("guest", "guest")).json()
        assert overview["listeners"][0]["port"] == server.port
        metrics = httpx.get(f"http://127.0.0.1:{ports['prometheus']}/metrics").text
        assert "rabbitmq_queues 0.0" in metrics
    finally:
        server.stop()


def test_zero_disables_http() -> None:
    server = start_amqlite()  # the test default: both ports 0
    try:
        assert server.server is not None and server.server.http_ports == {}
    finally:
        server.stop()


async def test_busy_management_port_is_a_startup_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = Settings(host="127.0.0.1", port=0, data_dir="", management_port=taken.getsockname()[1],
                            kafka_port=0)
        with pytest.raises(StartupError, match="management port .*in use"):
            await Server.from_settings(settings).serve()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
