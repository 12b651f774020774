"""Consume-transform-produce over AMQP transactions is exactly once under
kill -9. Two pipelines of pika workers run while the broker is killed:

1. workers take ids from a durable queue and, in one transaction per few
   ids, ack them and publish each into a stream and into a second queue;
2. a member of a consumer group (``x-stream-group``) on that stream, in one
   transaction per id, acks it and publishes it into a final queue, so the
   group's committed offset moves in the transaction.

After each restart, before any worker is back: every id is in the input or
in both outputs (never one of them), no output holds an id twice, and the
final queue is exactly the stream's first ids in order (the group offset
and the final queue moved together). At the end every id is in each output
exactly once. ``AMQLITE_CRASH_TEST_ROUNDS`` sets the rounds (``make crash``
runs many)."""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

import pika

from .test_dedup_crash import Broker

#: Ids to pass through: enough that the kills of every round land while
#: transactions commit.
IDS = 200 * int(os.environ.get("AMQLITE_CRASH_TEST_ROUNDS", "1"))
PERSISTENT = pika.BasicProperties(delivery_mode=2)


def transform(port: int, stop: threading.Event, rng: random.Random) -> None:
    """Stage 1: input -> stream ``produced`` and queue ``copies``, one
    transaction per 1 to 5 ids, until the broker dies or ``stop``."""
    try:
        connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
        channel = connection.channel()
        channel.basic_qos(prefetch_count=20)
        channel.tx_select()
        batch, size = 0, rng.randint(1, 5)
        for method, _, body in channel.consume("input", inactivity_timeout=0.05):
            if stop.is_set():
                break
            if method is None:
                if batch:  # nothing more came: commit what there is
                    channel.tx_commit()
                    batch = 0
                continue
            channel.basic_publish("", "produced", body, PERSISTENT)
            channel.basic_publish("", "copies", body, PERSISTENT)
            channel.basic_ack(method.delivery_tag)
            batch += 1
            if batch == size:
                channel.tx_commit()
                batch, size = 0, rng.randint(1, 5)
        connection.close()
    except (pika.exceptions.AMQPError, OSError):
        pass  # the broker went away


def forward(port: int, stop: threading.Event, commits: list[int] | None = None) -> None:
    """Stage 2: group ``forwarder`` on ``produced`` -> queue ``final``, one
    transaction per id, counted in ``commits[0]``."""
    try:
        connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
        channel = connection.channel()
        channel.basic_qos(prefetch_count=20)
        channel.tx_select()
        arguments = {"x-stream-group": "forwarder", "x-stream-offset": "first"}
        for method, _, body in channel.consume("produced", inactivity_timeout=0.05, arguments=arguments):
            if stop.is_set():
                break
            if method is None:
                continue
            channel.basic_publish("", "final", body, PERSISTENT)
            channel.basic_ack(method.delivery_tag)
            channel.tx_commit()
            if commits is not None:
                commits[0] += 1
        connection.close()
    except (pika.exceptions.AMQPError, OSError):
        pass


def queue_ids(channel: pika.adapters.blocking_connection.BlockingChannel, queue: str) -> list[int]:
    """The ids in a queue, left there: got without acks, then the channel closes."""
    ids = []
    while (got := channel.basic_get(queue))[0] is not None:
        ids.append(int(got[2]))
    return ids


def stream_ids(connection: pika.BlockingConnection) -> list[int]:
    channel = connection.channel()
    count = channel.queue_declare("produced", passive=True).method.message_count
    ids: list[int] = []
    channel.basic_qos(prefetch_count=500)
    channel.basic_consume("produced", lambda ch, method, props, body: (
        ids.append(int(body)), ch.basic_ack(method.delivery_tag)), arguments={"x-stream-offset": "first"})
    deadline = time.monotonic() + 30
    while len(ids) < count and time.monotonic() < deadline:
        connection.process_data_events(time_limit=0.05)
    channel.close()
    assert len(ids) == count
    return ids


def check(port: int) -> tuple[list[int], list[int], list[int], list[int]]:
    """All or nothing, each id once: (input, stream, copies, final)."""
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    channel = connection.channel()
    waiting, copies, final = (queue_ids(channel, name) for name in ("input", "copies", "final"))
    channel.close()
    produced = stream_ids(connection)
    connection.close()
    assert len(set(produced)) == len(produced) and len(set(copies)) == len(copies)
    assert set(produced) == set(copies)  # both outputs of a transaction, or neither
    assert sorted(waiting + copies) == list(range(IDS))  # its ack with them
    assert final == produced[: len(final)]  # the group's offset with the final queue
    return waiting, produced, copies, final


def test_consume_transform_produce_in_transactions_is_exactly_once_across_kill_9(tmp_path: Path) -> None:
    rounds = int(os.environ.get("AMQLITE_CRASH_TEST_ROUNDS", "1"))
    rng = random.Random(rounds)
    broker = Broker(tmp_path / "data", tmp_path)
    broker.start()
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.port))
    channel = connection.channel()
    for name in ("input", "copies", "final"):
        channel.queue_declare(name, durable=True)
    channel.queue_declare("produced", durable=True, arguments={"x-queue-type": "stream"})
    channel.confirm_delivery()
    for n in range(IDS):
        channel.basic_publish("", "input", b"%d" % n, PERSISTENT)
    connection.close()
    progress = []
    for _ in range(rounds):
        stop = threading.Event()
        commits = [0]
        workers = [threading.Thread(target=transform, args=(broker.port, stop, random.Random(rng.random())))
                   for _ in range(2)] + [threading.Thread(target=forward, args=(broker.port, stop, commits))]
        for worker in workers:
            worker.start()
        # The kill waits for work, not for time: a quiet machine passes all
        # 200 ids of a round in less than the 0.2 s a fixed wait gave.
        forwarded = progress[-1][2] if progress else 0
        target = rng.randint(1, max(1, min(150, IDS - forwarded - 2)))
        deadline = time.monotonic() + 30
        while commits[0] < target and time.monotonic() < deadline:
            time.sleep(0.002)
        broker.kill()  # while transactions commit
        stop.set()
        for worker in workers:
            worker.join()
        broker.start()
        waiting, produced, _, final = check(broker.port)
        progress.append((len(waiting), len(produced), len(final)))
    # Then the pipelines run to the end.
    stop = threading.Event()
    workers = [threading.Thread(target=transform, args=(broker.port, stop, rng)),
               threading.Thread(target=forward, args=(broker.port, stop))]
    for worker in workers:
        worker.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.2)
        connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.port))
        channel = connection.channel()
        done = channel.queue_declare("final", passive=True).method.message_count == IDS
        connection.close()
        if done:
            break
    stop.set()
    for worker in workers:
        worker.join()
    waiting, produced, copies, final = check(broker.port)
    broker.kill()
    assert waiting == [] and sorted(produced) == sorted(copies) == sorted(final) == list(range(IDS)), progress
    assert final == produced
    # The kills landed while work was being done.
    assert any(0 < forwarded < IDS for _, _, forwarded in progress), progress
    print(f"{rounds} kills, {IDS} ids; after each restart (waiting, in the stream, forwarded): {progress}")
