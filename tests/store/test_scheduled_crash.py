"""Scheduled messages survive kill -9: cancels (over HTTP and over AMQP
with x-delay-cancel), a reschedule and a fire-now, each journalled before
the broker process is killed with SIGKILL, hold after it restarts."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pika

ROOT = Path(__file__).resolve().parents[2]
SCHEDULED = "/api/exchanges/%2F/later/scheduled"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    def __init__(self, data_dir: Path, log_dir: Path) -> None:
        self.data_dir, self.log_dir = data_dir, log_dir
        self.starts = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.port = self.management_port = 0

    def start(self) -> None:
        self.starts += 1
        log = self.log_dir / f"server-{self.starts}.log"
        self.management_port, self.port = _free_port(), 0
        env = dict(os.environ, AMQLITE_LOG_FORMAT="json", PYTHONPATH=str(ROOT))
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "amqlite.cli", "serve", "--host", "127.0.0.1", "--port", "0",
                 "--management-port", str(self.management_port), "--prometheus-port", "0", "--kafka-port", "0",
                 "--data-dir", str(self.data_dir)], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for line in log.read_text(errors="replace").splitlines():
                if '"broker.listening"' in line:
                    self.port = int(json.loads(line)["port"])
            if self.port and self._http_up():
                return
            assert self.process.poll() is None, log.read_text()
            time.sleep(0.05)
        self.kill()  # not left running after the test
        raise AssertionError("the broker did not start: " + log.read_text())

    def _http_up(self) -> bool:
        try:
            return self.http().get("/api/overview").status_code == 200
        except httpx.TransportError:
            return False

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=f"http://127.0.0.1:{self.management_port}", auth=("guest", "guest"), timeout=10)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()


def test_cancel_reschedule_and_fire_survive_kill_9(tmp_path: Path) -> None:
    server = Server(tmp_path / "data", tmp_path)
    try:
        server.start()
        connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", server.port))
        ch = connection.channel()
        ch.exchange_declare("later", "x-delayed-message", durable=True, arguments={"x-delayed-type": "direct"})
        ch.queue_declare("due", durable=True)
        ch.queue_bind("due", "later", "k")
        ch.confirm_delivery()
        for n in range(20):
            ch.basic_publish("later", "k", b"m%d" % n, pika.BasicProperties(
                delivery_mode=2, headers={"x-delay": 3_600_000}))
        http = server.http()
        ids = [m["id"] for m in http.get(SCHEDULED, params={"limit": 100}).json()["messages"]]
        assert len(ids) == 20
        # Confirmed once on disk.
        ch.basic_publish("later", "k", b"", pika.BasicProperties(headers={"x-delay-cancel": ids[2]}))
        assert http.post(f"{SCHEDULED}/{ids[3]}/fire").status_code == 200
        deadline = time.monotonic() + 10
        while ch.queue_declare("due", passive=True).method.message_count != 1:
            assert time.monotonic() < deadline, "the fired message never arrived"
            time.sleep(0.02)
        # Each HTTP change is answered once on disk: the kill follows at once.
        assert http.delete(f"{SCHEDULED}/{ids[0]}").status_code == 200
        assert http.post(f"{SCHEDULED}/{ids[1]}/reschedule", json={"delay": 7_200_000}).status_code == 200
        server.kill()

        server.start()
        http = server.http()
        left = http.get(SCHEDULED, params={"limit": 100}).json()
        shown = {m["id"]: m for m in left["messages"]}
        assert left["held"] == 17 and sorted(shown) == sorted(ids[4:] + [ids[1]])
        assert shown[ids[1]]["due_in_ms"] > 7_000_000 and shown[ids[4]]["due_in_ms"] < 3_600_000
        connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", server.port))
        got = connection.channel().basic_get("due", auto_ack=True)
        assert got[2] == b"m3"
        connection.close()
    finally:
        if server.process is not None and server.process.poll() is None:
            server.kill()
