"""Celery Flower's broker tab against amqlite: Flower itself, run as its
users run it (``celery flower --broker_api=...``), asks the management API
for ``/api/queues/`` (trailing slash and all) and shows each queue's depth."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from typing import Iterator

import httpx
import pytest

from .conftest import ManagedServerThread

pytest.importorskip("flower")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def flower(managed: ManagedServerThread, tmp_path: object) -> Iterator[str]:
    """Flower on a free port, for managed's broker and API; its base URL."""
    port = free_port()
    log = open(os.path.join(str(tmp_path), "flower.log"), "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "--broker", f"amqp://guest:guest@127.0.0.1:{managed.port}//", "flower",
         "--address=127.0.0.1", f"--port={port}",
         f"--broker_api=http://guest:guest@127.0.0.1:{managed.management_port}/api/"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "FLOWER_UNAUTHENTICATED_API": "true"})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/healthcheck", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, open(log.name).read()[-3000:]
            time.sleep(0.2)
        else:
            raise AssertionError("Flower did not start: " + open(log.name).read()[-3000:])
        yield base
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def test_flowers_broker_tab_shows_the_depth_of_celerys_queue(managed: ManagedServerThread, flower: str) -> None:
    client = managed.connect()
    channel = client.channel()
    channel.queue_declare("celery", durable=True)
    for _ in range(7):
        channel.basic_publish("", "celery", b"{}")
    client.close()

    lengths = httpx.get(f"{flower}/api/queues/length", timeout=10).json()
    assert [q["messages"] for q in lengths["active_queues"] if q["name"] == "celery"] == [7]

    page = httpx.get(f"{flower}/broker", timeout=10).text
    row = re.search(r"<tr[^>]*>\s*<td[^>]*>\s*celery\s*</td>(.*?)</tr>", page, re.S)
    assert row is not None, page[-3000:]
    assert re.findall(r"<td[^>]*>\s*([^<]*?)\s*</td>", row.group(1))[0] == "7"
