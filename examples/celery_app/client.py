"""Send the demo tasks to a worker and print what comes back, as JSON.

Start a worker first (``celery -A tasks worker -P solo -l INFO`` in this
folder), then ``python client.py``. ``python client.py crash`` sends a task
that kills its worker; start the worker again and the task completes.
``CELERY_BROKER_URL`` picks the broker for both.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from tasks import QUEUE, add, app, boom, crash_once, flaky, slow_add

TIMEOUT = 15.0


def queue_depth(queue: str = QUEUE) -> tuple[int, int]:
    """(ready messages, consumers) of ``queue``, by a passive declare."""
    with app.connection_for_write() as connection:
        _, ready, consumers = connection.default_channel.queue_declare(queue=queue, passive=True)
    return ready, consumers


def late_acks() -> dict[str, Any]:
    """A slow task and a quick one behind it.

    The worker may hold one unacknowledged message, and acknowledges the
    slow task only when it has finished: until then the quick task waits,
    ready, in the broker.
    """
    slow = slow_add.delay(1, 2, seconds=1.5)
    quick = add.delay(3, 4)
    deadline = time.monotonic() + TIMEOUT
    ready, consumers = queue_depth()
    while not (consumers and ready <= 1) and time.monotonic() < deadline:
        time.sleep(0.05)  # until the worker has taken the slow task
        ready, consumers = queue_depth()
    time.sleep(0.3)
    waiting_while_slow_runs, _ = queue_depth()
    return {
        "slow": slow.get(timeout=TIMEOUT),
        "quick": quick.get(timeout=TIMEOUT),
        "waiting_while_slow_runs": waiting_while_slow_runs,
    }


def retry() -> dict[str, Any]:
    """A task that fails twice and is retried a second later each time."""
    started = time.monotonic()
    result = flaky.delay(21).get(timeout=TIMEOUT)
    return {**result, "seconds": round(time.monotonic() - started, 2)}


def countdown() -> dict[str, Any]:
    """A task due in 3 s must not hold up the task queued behind it.

    While the worker holds the countdown task it raises its prefetch with
    basic.qos; the quick task then runs at once.
    """
    later = add.apply_async((20, 1), countdown=3)
    started = time.monotonic()
    now_value = add.delay(1, 1).get(timeout=TIMEOUT)
    quick_seconds = round(time.monotonic() - started, 2)
    return {"quick": now_value, "quick_seconds": quick_seconds, "later": later.get(timeout=TIMEOUT)}


def rpc() -> dict[str, Any]:
    """Results, several in flight at once and an exception, over rpc://."""
    pending = [add.delay(i, i) for i in range(5)]
    sums = [result.get(timeout=TIMEOUT) for result in pending]
    failed = boom.delay("no luck")
    try:
        failed.get(timeout=TIMEOUT)
    except ValueError as error:
        error_text = str(error)
    else:  # pragma: no cover - the task always raises
        error_text = ""
    return {"sums": sums, "error": error_text, "state": failed.state}


def crash(timeout: float = 120.0) -> dict[str, Any]:
    """A task whose first worker dies under it; waits for a worker to finish it."""
    return crash_once.delay(7).get(timeout=timeout)


def main(argv: list[str]) -> dict[str, Any]:
    if argv[1:] == ["crash"]:
        return {"crash": crash()}
    return {"late_acks": late_acks(), "retry": retry(), "countdown": countdown(), "rpc": rpc()}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv)))
