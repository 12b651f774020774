"""A Celery app whose task queue has message groups: one group per
customer (``x-message-group-header: customer``), for
tests/test_celery_message_groups.py. Each task appends when it started and
ended to a file, so the test can see order and overlap."""

from __future__ import annotations

import os
import time

from celery import Celery
from kombu import Queue

app = Celery("celery_groups_app", broker=os.environ["CELERY_BROKER_URL"])
app.conf.update(
    task_acks_late=True,  # a customer's next task goes out once this one is acked
    worker_prefetch_multiplier=1,
    task_queues=[Queue("orders", queue_arguments={"x-message-group-header": "customer"})],
    task_default_queue="orders",
    task_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
)


@app.task(name="groups.process")
def process(customer: str, step: int, seconds: float) -> None:
    started = time.time()
    time.sleep(seconds)
    with open(os.environ["STEPS_FILE"], "a") as steps:
        steps.write(f"{customer} {step} {started} {time.time()}\n")
