"""A real Prometheus server scrapes amqlite: the exposition parses for it
(a scrape it refuses leaves ``up`` at 0 and no samples), and queries see
what a client did."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from .conftest import ManagedServerThread

PROMETHEUS = Path("/usr/bin/prometheus")
#: Prometheus starts, scrapes every second and answers queries well within this.
PATIENCE = 60.0

pytestmark = pytest.mark.skipif(
    not PROMETHEUS.exists(), reason="no /usr/bin/prometheus (Debian's prometheus package; .ci/run installs it)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def prometheus(managed: ManagedServerThread, tmp_path: Path) -> Iterator[str]:
    """A Prometheus scraping ``managed``'s per-object endpoint every second; its base URL."""
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: amqlite\n    metrics_path: /metrics/per-object\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{managed.prometheus_port}']\n"
    )
    port = _free_port()
    log = open(tmp_path / "prometheus.log", "wb")
    process = subprocess.Popen(
        [str(PROMETHEUS), f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _answer(base: str, query: str, expected: dict[str, float]) -> tuple[dict[str, float], object]:
    """Query until the series labelled ``queue`` in ``expected`` have their
    values (Prometheus scrapes once a second) or PATIENCE runs out; those
    series as last seen, and the last answer (for the failure message)."""
    deadline = time.monotonic() + PATIENCE
    last: object = None
    seen: dict[str, float] = {}
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{base}/api/v1/query", params={"query": query}, timeout=5)
        except httpx.TransportError as error:  # not listening yet
            last = error
        else:
            if response.status_code != 200:  # 503 while starting
                last = f"{response.status_code} {response.text}"
            else:
                last = body = response.json()
                series = {r["metric"].get("queue", ""): float(r["value"][1]) for r in body["data"]["result"]}
                seen = {queue: series[queue] for queue in expected if queue in series}
                if seen == expected:
                    break
        time.sleep(0.2)
    return seen, last


def test_prometheus_scrapes_queue_depth_and_counters(
    managed: ManagedServerThread, prometheus: str, tmp_path: Path
) -> None:
    connection = managed.connect()
    channel = connection.channel()
    channel.queue_declare("deep")
    channel.queue_declare("shallow")
    for _ in range(3):
        channel.basic_publish("", "deep", b"x")
    channel.basic_publish("", "shallow", b"x")
    channel.queue_declare("deep", passive=True)  # a round trip: the publishes were handled
    log = tmp_path / "prometheus.log"
    for query, expected in (("up", {"": 1.0}),
                            ("rabbitmq_queue_messages_ready", {"deep": 3.0, "shallow": 1.0}),
                            ('rabbitmq_global_messages_received_total{protocol="amqp091"}', {"": 4.0})):
        seen, last = _answer(prometheus, query, expected)
        assert seen == expected, f"{query}: last answer {last}; prometheus said:\n{log.read_text()[-3000:]}"
    connection.close()
