"""A small Celery app that runs against amqlite, or RabbitMQ, unchanged.

``CELERY_BROKER_URL`` picks the broker (default: one on this machine's port
5672) and ``CELERY_QUEUE`` the task queue (default ``celery``). The app shows
what Celery asks of an AMQP broker:

* late acks: ``task_acks_late`` with a prefetch of one message, so a task's
  message is acknowledged only once the task has finished, and a worker
  that dies mid-task gets its message back from the broker, redelivered;
* retry with a countdown: ``flaky`` fails twice and calls
  ``self.retry(countdown=1)``; Celery republishes it with an ETA and the
  worker holds it until then;
* the rpc result backend: results travel back as messages to a reply queue
  of the caller's own, matched by correlation id.

Run a worker from this folder: ``celery -A tasks worker -P solo -l INFO``.
"""

from __future__ import annotations

import os
import time

from celery import Celery

BROKER_URL = os.environ.get("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
QUEUE = os.environ.get("CELERY_QUEUE", "celery")

app = Celery("celery_app", broker=BROKER_URL)
app.conf.update(
    result_backend="rpc://",
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    worker_concurrency=1,  # prefetch = concurrency x multiplier = 1 message
    task_track_started=True,  # the worker reports STARTED, over rpc too
    task_default_queue=QUEUE,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
)

#: How many times ``flaky`` fails before it succeeds.
FLAKY_FAILURES = 2


@app.task(name="celery_app.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="celery_app.slow_add")
def slow_add(x: int, y: int, seconds: float = 1.5) -> int:
    """Takes a while, so a client can look at the queue while it runs."""
    time.sleep(seconds)
    return x + y


@app.task(name="celery_app.flaky", bind=True, max_retries=5)
def flaky(self, x: int) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Fails ``FLAKY_FAILURES`` times, each time retried a second later."""
    attempt = self.request.retries + 1
    if attempt <= FLAKY_FAILURES:
        raise self.retry(exc=RuntimeError(f"attempt {attempt} failed"), countdown=1)
    return {"value": x * 2, "attempts": attempt}


@app.task(name="celery_app.crash_once", bind=True)
def crash_once(self, x: int) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """Kills its worker on first delivery, as an OOM kill or a power cut would.

    The message was not acknowledged (late acks), so when the worker's
    connection drops the broker puts it back; a worker started afterwards
    receives it again, flagged redelivered, and this time it succeeds.
    """
    if not self.request.delivery_info.get("redelivered"):
        os._exit(1)
    return {"value": x, "redelivered": True}


@app.task(name="celery_app.boom")
def boom(message: str) -> None:
    """Always raises; the rpc backend carries the exception to the caller."""
    raise ValueError(message)
