"""Message groups with Celery (issue 25 part 1): a pool of workers runs
per-customer tasks in order, one at a time per customer, while different
customers' tasks run in parallel. The customer rides in a message header
(``apply_async(headers=...)``); the queue is declared by Celery itself with
``x-message-group-header``."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import time

import pytest

from test_celery_example import start_amqlite, stop, wait_for

pytest.importorskip("celery")

APP = pathlib.Path(__file__).resolve().parent / "celery_groups_app"
CUSTOMERS = ("acme", "globex", "initech")
STEPS = 4
SECONDS = 0.4


def test_a_worker_pool_keeps_each_customers_order_and_runs_customers_in_parallel(tmp_path: pathlib.Path) -> None:
    server, port = start_amqlite(tmp_path)
    steps = tmp_path / "steps.txt"
    steps.touch()
    env = {**os.environ, "CELERY_BROKER_URL": f"amqp://guest:guest@127.0.0.1:{port}//", "STEPS_FILE": str(steps),
           "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-P", "threads", "-c", "3", "-l", "INFO"],
            cwd=APP, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: " ready." in log.read_text(), 30, "the worker to be ready", log)
        # Published customer by customer: without groups, three threads would
        # take three of acme's steps at once.
        code = ("import tasks\n"
                f"for customer in {CUSTOMERS!r}:\n"
                f"    for step in range({STEPS}):\n"
                f"        tasks.process.apply_async((customer, step, {SECONDS}), headers={{'customer': customer}})\n")
        subprocess.run([sys.executable, "-c", code], cwd=APP, env=env, check=True, timeout=30)
        wait_for(lambda: len(steps.read_text().splitlines()) == len(CUSTOMERS) * STEPS, 60, "every step", log)
    finally:
        stop(worker)
        stop(server)
    done: dict[str, list[tuple[int, float, float]]] = {customer: [] for customer in CUSTOMERS}
    for line in steps.read_text().splitlines():
        customer, step, started, ended = line.split()
        done[customer].append((int(step), float(started), float(ended)))
    for customer, runs in done.items():
        runs.sort(key=lambda run: run[1])
        assert [step for step, _, _ in runs] == list(range(STEPS)), f"{customer} out of order: {runs}"
        for (_, _, ended), (_, started, _) in zip(runs, runs[1:]):
            assert started >= ended, f"{customer}: two steps at once: {runs}"
    # Customers ran side by side: the whole took about one customer's time, not three.
    first = min(started for runs in done.values() for _, started, _ in runs)
    last = max(ended for runs in done.values() for _, _, ended in runs)
    assert last - first < len(CUSTOMERS) * STEPS * SECONDS * 0.75
