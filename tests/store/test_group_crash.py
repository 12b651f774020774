"""A consumer group's committed offset across kill -9: after each restart a
new member resumes at or before the first offset the group had not acked
(never past it: nothing is skipped), and at most a write's worth of acks
before it (at least once)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import threading
import time
from pathlib import Path

import pika

from .test_dedup_crash import Broker, publish

STREAM = "events"
COUNT = 10_000
# "first" counts only for a group new to the stream; after that it resumes.
GROUP = {"x-stream-group": "billing", "x-stream-offset": "first"}


def member_reads(port: int, acked: set[int], stop_after: float, rng: random.Random) -> int:
    """Join the group, ack what arrives (some out of order, a few never)
    until the broker dies or ``stop_after`` seconds pass; returns the first
    offset delivered (COUNT if none was: the group had finished)."""
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=50)
    first: list[int] = []
    held: list[tuple[int, int]] = []

    def on_message(ch: object, method: pika.spec.Basic.Deliver, props: pika.BasicProperties, body: bytes) -> None:
        offset = props.headers["x-stream-offset"]
        first[:1] = first[:1] or [offset]
        held.append((offset, method.delivery_tag))
        if len(held) >= 5:
            rng.shuffle(held)
            for offset_, tag in held[:4]:
                channel.basic_ack(tag)
                acked.add(offset_)  # recorded once the ack is handed to the socket
            del held[:4]

    channel.basic_consume(STREAM, on_message, arguments=GROUP)
    deadline = time.monotonic() + stop_after
    try:
        while time.monotonic() < deadline:
            connection.process_data_events(time_limit=0.02)
    except pika.exceptions.AMQPError:
        pass  # the broker went away
    return first[0] if first else COUNT


def test_a_group_resumes_at_or_before_its_first_unacked_offset_after_kill_9(tmp_path: Path) -> None:
    rounds = int(os.environ.get("AMQLITE_CRASH_TEST_ROUNDS", "3"))
    rng = random.Random(rounds)
    broker = Broker(tmp_path / "data", tmp_path)
    broker.start()
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.port))
    connection.channel().queue_declare(STREAM, durable=True, arguments={"x-queue-type": "stream"})
    connection.close()
    # Confirmed with 200 in flight, not one round trip (and fsync) each.
    (tmp_path / "pending.json").write_text(json.dumps(list(range(COUNT))))
    asyncio.run(publish(broker.port, STREAM, str(tmp_path / "pending.json"), str(tmp_path / "confirmed.txt")))
    acked: set[int] = set()
    resumed = []
    for _ in range(rounds):
        # The member reads for a while; the broker dies under it.
        killer = threading.Timer(0.3 + rng.random() * 0.5, broker.kill)
        killer.start()
        start = member_reads(broker.port, acked, 2.0, rng)
        killer.join()
        broker.start()
        resumed.append(start)
        if len(resumed) > 1:
            # Nothing skipped: everything before where it resumed was acked.
            assert all(offset in acked for offset in range(start)), start
    # One more member after the last restart.
    start = member_reads(broker.port, acked, 0.3, rng)
    broker.kill()
    assert all(offset in acked for offset in range(start))
    first_unacked = min(set(range(COUNT)) - acked, default=COUNT)
    assert start <= first_unacked  # never past a message the group had not acked
    assert start > 0  # and the committed offset did survive
