"""examples/celery_app end to end: amqlite serve, a Celery worker, the client.

Everything runs as it would for a user: ``amqlite serve --port 0`` as a
subprocess, a solo-pool Celery worker subprocess on the real amqp transport,
and ``python client.py`` for the scenarios (late acks, retry with countdown,
rpc results, a worker dying mid-task). The same scenarios run against the
reference RabbitMQ at 127.0.0.1:5672 when it answers, on a queue of their own.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import uuid
from typing import Iterator

import pytest
from reference import rabbitmq_unusable

pytest.importorskip("celery")

APP = pathlib.Path(__file__).resolve().parent.parent / "examples" / "celery_app"


def wait_for(predicate, timeout: float, what: str, log: pathlib.Path):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; log:\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_amqlite(tmp_path: pathlib.Path) -> tuple[subprocess.Popen[bytes], int]:
    log = tmp_path / "amqlite.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "amqlite.cli", "serve", "--host", "127.0.0.1", "--port", "0",
             "--data-dir", str(tmp_path / "data")],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )

    def port() -> int | None:
        if server.poll() is not None:
            raise AssertionError(f"amqlite exited with {server.returncode}:\n{log.read_text()}")
        for line in log.read_text().splitlines():
            if line.startswith("{") and '"port"' in line:
                return int(json.loads(line)["port"])
        return None

    try:
        return server, wait_for(port, 10, "amqlite to listen", log)
    except BaseException:
        stop(server)
        raise


class CeleryRun:
    """Workers and clients of the example app, all on one broker URL and queue."""

    def __init__(self, url: str, queue: str, tmp_path: pathlib.Path) -> None:
        self.env = {**os.environ, "CELERY_BROKER_URL": url, "CELERY_QUEUE": queue, "PYTHONUNBUFFERED": "1"}
        self.tmp_path = tmp_path
        self.workers: list[subprocess.Popen[bytes]] = []
        self.clients: list[subprocess.Popen[bytes]] = []

    def worker(self) -> tuple[subprocess.Popen[bytes], pathlib.Path]:
        n = len(self.workers)
        log = self.tmp_path / f"worker{n}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-P", "solo", "-l", "INFO",
                 "-n", f"w{n}-{uuid.uuid4().hex[:8]}@%h"],
                cwd=APP, env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )
        self.workers.append(process)

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"worker exited with {process.returncode}:\n{log.read_text()}")
            return " ready." in log.read_text()

        wait_for(ready, 20, "the worker to be ready", log)
        return process, log

    def client(self, *args: str) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [sys.executable, "client.py", *args],
            cwd=APP, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self.clients.append(process)
        return process

    @staticmethod
    def result(client: subprocess.Popen[bytes], timeout: float) -> dict:  # type: ignore[type-arg]
        try:
            out, err = client.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            client.kill()
            out, err = client.communicate()
        assert client.returncode == 0, err.decode()[-3000:]
        return json.loads(out)

    def close(self) -> None:
        for process in self.clients:
            if process.poll() is None:
                process.kill()
                process.communicate()
        for process in self.workers:
            stop(process)  # warm shutdown: up to 2 s, the worker's drain timeout


@pytest.fixture(params=["amqlite", "rabbitmq"])
def celery(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[CeleryRun]:
    if request.param == "rabbitmq":
        # Without a working reference there is nothing to compare against; the
        # reason (unreachable, or failing declares) is the skip's text.
        if (unusable := rabbitmq_unusable()) is not None:
            pytest.skip(unusable)
        queue = f"celery-example-{uuid.uuid4().hex[:12]}"  # the RabbitMQ is shared
        app = CeleryRun("amqp://guest:guest@127.0.0.1:5672//", queue, tmp_path)
        try:
            yield app
        finally:
            app.close()
            delete_queue_and_exchange(queue)
        return
    server, port = start_amqlite(tmp_path)
    app = CeleryRun(f"amqp://guest:guest@127.0.0.1:{port}//", "celery", tmp_path)
    try:
        yield app
    finally:
        app.close()
        stop(server)


def delete_queue_and_exchange(name: str) -> None:
    """Celery declares a durable queue and an exchange named after it."""
    import kombu

    with kombu.Connection("amqp://guest:guest@127.0.0.1:5672//") as connection:
        channel = connection.default_channel
        channel.queue_delete(name)
        channel.exchange_delete(name)


def test_celery_example(celery: CeleryRun) -> None:
    worker, log = celery.worker()

    # Late acks, retry with countdown, rpc results: python client.py.
    result = celery.result(celery.client(), timeout=40)
    assert result["late_acks"] == {"slow": 3, "quick": 7, "waiting_while_slow_runs": 1}
    retried = result["retry"]
    assert (retried["value"], retried["attempts"]) == (42, 3)
    assert 1.9 <= retried["seconds"] < 10  # two countdowns of a second each
    assert result["rpc"] == {"sums": [0, 2, 4, 6, 8], "error": "no luck", "state": "FAILURE"}
    # The quick task overtakes the one waiting out its countdown (basic.qos
    # reaches the running consumer: docs/concepts.md, Consumers and credit).
    assert result["countdown"]["quick"] == 2 and result["countdown"]["later"] == 21
    assert result["countdown"]["quick_seconds"] < 2
    text = log.read_text()
    assert text.count("celery_app.flaky[") >= 6  # received 3 times, retried twice, succeeded
    assert "Retry in 1s: RuntimeError('attempt 2 failed')" in text

    # Late acks again: the worker dies mid-task, the broker redelivers the
    # unacknowledged message to the next worker.
    client = celery.client("crash")
    assert worker.wait(20) != 0  # os._exit(1) in the task
    celery.worker()
    assert celery.result(client, timeout=30) == {"crash": {"value": 7, "redelivered": True}}
