"""AMQP transactions through pika across restarts: what a commit did is
there after a clean restart and what a rollback undid is not; commit-ok
means the whole transaction is on disk, its acks and the consumer group's
offset they move included, so a crash right after it keeps all of it."""

from __future__ import annotations

import time

import pika
from pika.adapters.blocking_connection import BlockingChannel

from .durability_support import Durable, bodies, durable, persistent  # noqa: F401


def declare(ch: BlockingChannel) -> None:
    for name in ("in", "out"):
        ch.queue_declare(name, durable=True)
    ch.queue_declare("s", durable=True, arguments={"x-queue-type": "stream"})


def stream_bodies(durable: Durable, stream: str, **arguments: object) -> list[bytes]:
    """What a consumer of ``stream`` gets within half a second (acked)."""
    ch = durable.channel()
    ch.basic_qos(prefetch_count=100)
    got: list[bytes] = []
    ch.basic_consume(stream, lambda c, m, p, b: (got.append(b), c.basic_ack(m.delivery_tag)),
                     arguments=dict(arguments))
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        ch.connection.process_data_events(time_limit=0.05)
    ch.close()
    return got


def test_a_commit_survives_a_restart_and_a_rollback_leaves_nothing(durable: Durable) -> None:
    ch = durable.channel(confirm=True)
    declare(ch)
    for n in range(4):
        ch.basic_publish("", "in", b"in%d" % n, persistent())
    worker = durable.channel()
    tags = [worker.basic_get("in")[0].delivery_tag for _ in range(4)]
    worker.tx_select()
    worker.basic_publish("", "out", b"committed", persistent())
    worker.basic_publish("", "s", b"committed", persistent())
    worker.basic_ack(tags[0])
    worker.basic_ack(tags[1])
    worker.tx_commit()
    worker.basic_publish("", "out", b"rolled back", persistent())
    worker.basic_publish("", "s", b"rolled back", persistent())
    worker.basic_ack(tags[2])
    worker.basic_ack(tags[3])
    worker.tx_rollback()
    durable.restart()  # the worker's connection closes: its unacked come back
    ch = durable.channel()
    assert bodies(ch, "in") == [b"in2", b"in3"]
    assert bodies(ch, "out") == [b"committed"]
    assert stream_bodies(durable, "s", **{"x-stream-offset": "first"}) == [b"committed"]


def test_commit_ok_means_the_acks_and_the_group_offset_are_on_disk(durable: Durable) -> None:
    ch = durable.channel(confirm=True)
    declare(ch)
    for n in range(3):
        ch.basic_publish("", "in", b"in%d" % n, persistent())
        ch.basic_publish("", "s", b"s%d" % n, persistent())
    worker = durable.channel()
    worker.basic_qos(prefetch_count=10)
    got: list[int] = []
    worker.basic_consume("s", lambda c, m, p, b: got.append(m.delivery_tag),
                         arguments={"x-stream-group": "g", "x-stream-offset": "first"})
    while len(got) < 3:
        worker.connection.process_data_events(time_limit=0.05)
    method, _, _ = worker.basic_get("in")
    worker.tx_select()
    worker.basic_ack(got[1], multiple=True)  # the group's offset moves to 2
    worker.basic_ack(method.delivery_tag)
    worker.tx_commit()  # acks only: before units, commit-ok waited for nothing
    durable.crash_and_restart()  # nothing written after commit-ok
    assert bodies(durable.channel(), "in") == [b"in1", b"in2"]
    assert stream_bodies(durable, "s", **{"x-stream-group": "g"}) == [b"s2"]


def test_a_transaction_of_transient_messages_to_a_queue_commits_at_once(durable: Durable) -> None:
    ch = durable.channel()
    ch.queue_declare("q", durable=True)
    ch.tx_select()
    ch.basic_publish("", "q", b"transient", pika.BasicProperties(delivery_mode=1))
    durable.fs.dead = True  # a commit that waited for the disk would never end
    ch.tx_commit()
    assert ch.basic_get("q", auto_ack=True)[2] == b"transient"
