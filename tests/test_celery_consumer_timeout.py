"""Long Celery tasks and the consumer timeout (celery #6760).

RabbitMQ 3.8.15 started closing a channel whose delivery stayed unacked for
30 minutes, and Celery workers running late-acked long tasks stopped with
"Unrecoverable error: PreconditionFailed". amqlite's default is no timeout:
the same worker runs the same task to the end and acks it. Scaled down: a 3-second
task, against a broker whose timeout is off (the default) and against one
with a 1-second timeout, which does to the worker what RabbitMQ's default
does to a task longer than 30 minutes.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
import time

import pika
import pytest

from test_celery_example import APP, CeleryRun, start_amqlite, stop

pytest.importorskip("celery")


def send_slow_add(celery: CeleryRun, seconds: float) -> subprocess.Popen[bytes]:
    """A client process that sends slow_add(1, 2) and prints its result as JSON."""
    code = ("import json, tasks; "
            f"print(json.dumps(tasks.slow_add.delay(1, 2, seconds={seconds}).get(timeout=60)))")
    process = subprocess.Popen([sys.executable, "-c", code], cwd=APP, env=celery.env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    celery.clients.append(process)
    return process


def received(log: pathlib.Path) -> int:
    return log.read_text().count("] received")


def test_a_long_task_is_not_killed_under_the_default(tmp_path: pathlib.Path) -> None:
    server, port = start_amqlite(tmp_path)
    celery = CeleryRun(f"amqp://guest:guest@127.0.0.1:{port}//", "celery", tmp_path)
    try:
        _, log = celery.worker()
        started = time.monotonic()
        sent = send_slow_add(celery, 3)
        assert celery.result(sent, timeout=30) == 3
        assert time.monotonic() - started >= 3
        assert received(log) == 1
        assert "PRECONDITION_FAILED" not in log.read_text()
    finally:
        celery.close()
        stop(server)


def test_a_timeout_shorter_than_the_task_stops_the_worker(tmp_path: pathlib.Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMQLITE_CONSUMER_TIMEOUT", "1000")
    server, port = start_amqlite(tmp_path)
    celery = CeleryRun(f"amqp://guest:guest@127.0.0.1:{port}//", "celery", tmp_path)
    try:
        worker, log = celery.worker()
        send_slow_add(celery, 3)
        # The solo pool reads the close once the task is done; its ack is then
        # too late, and the worker stops, as in celery #6760.
        worker.wait(30)
        text = log.read_text()
        assert "Unrecoverable error: PreconditionFailed(406, 'PRECONDITION_FAILED - delivery acknowledgement" in text
        # The message went back to the queue: the task would run again.
        connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
        assert connection.channel().queue_declare("celery", passive=True).method.message_count == 1
        connection.close()
    finally:
        celery.close()
        stop(server)
