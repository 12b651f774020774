"""Message groups across a real kill -9 of `amqlite serve`: a publisher
with confirms and two consumers (prefetch > 1) work a durable grouped queue
when SIGKILL lands with groups in flight. After the restart every
confirmed message that was not acked is there exactly once, each group's
messages come out in publish order, and no group ever has two out at once,
before the kill or after it."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

import pika

from .test_dedup_crash import Broker

QUEUE = "orders"
GROUPS = 8
PER_GROUP = 1000  # more than get published before the kill
BACKLOG = 200
ARGUMENTS = {"x-message-group-header": "customer"}


def publish(port: int, confirmed: list[tuple[int, int]], attempted: list[tuple[int, int]]) -> None:
    """Publish each group's messages in order, round robin across groups,
    noting each once its confirm is back; stops when the broker dies."""
    try:
        connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
        channel = connection.channel()
        channel.confirm_delivery()
        for seq in range(PER_GROUP):
            for group in range(GROUPS):
                attempted.append((group, seq))
                channel.basic_publish("", QUEUE, b"%d:%d" % (group, seq), pika.BasicProperties(
                    delivery_mode=2, headers={"customer": f"c{group}"}))
                confirmed.append((group, seq))
    except pika.exceptions.AMQPError:
        pass  # the broker went away


class Consumers:
    """Two channels of one connection consuming the queue, each with
    prefetch 20; records every delivery and checks one in flight per group."""

    def __init__(self, port: int) -> None:
        self.connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
        self.out: dict[int, tuple[Any, int, int]] = {}  # group -> (channel, tag, seq)
        self.delivered: dict[int, list[int]] = {group: [] for group in range(GROUPS)}
        self.acked: set[tuple[int, int]] = set()
        self.overlaps: list[tuple[int, int, int]] = []
        self.channels = []
        for _ in range(2):
            channel = self.connection.channel()
            channel.basic_qos(prefetch_count=20)
            channel.basic_consume(QUEUE, self.on_message)
            self.channels.append(channel)

    def on_message(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        group, seq = map(int, body.split(b":"))
        if group in self.out:
            self.overlaps.append((group, self.out[group][2], seq))
        self.out[group] = (channel, method.delivery_tag, seq)
        self.delivered[group].append(seq)

    def ack_one(self, rng: random.Random) -> None:
        """Ack one delivery of a random group: a slow worker, so that other
        groups wait with deliveries out."""
        if self.out:
            group = rng.choice(sorted(self.out))
            channel, tag, seq = self.out.pop(group)
            channel.basic_ack(tag)
            self.acked.add((group, seq))

    def run(self, seconds: float, rng: random.Random, pause: float) -> None:
        """Take deliveries for ``seconds``, acking one every ``pause``."""
        now = time.monotonic()
        deadline, next_ack = now + seconds, now
        while (now := time.monotonic()) < deadline:
            self.connection.process_data_events(time_limit=0.002)
            if now >= next_ack:
                self.ack_one(rng)
                next_ack = now + pause

    def hold(self, groups: int) -> None:
        """Take deliveries without acking until ``groups`` groups are out."""
        deadline = time.monotonic() + 5
        while len(self.out) < groups and time.monotonic() < deadline:
            self.connection.process_data_events(time_limit=0.01)

    def settle(self) -> None:
        """A synchronous round trip on each channel: the broker has handled
        every ack sent before it."""
        for channel in self.channels:
            channel.basic_qos(prefetch_count=20)


def test_groups_keep_order_and_one_in_flight_across_kill_9(tmp_path: Path) -> None:
    rng = random.Random(25)
    broker = Broker(tmp_path / "data", tmp_path)
    broker.start()
    setup = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.port))
    setup.channel().queue_declare(QUEUE, durable=True, arguments=ARGUMENTS)
    setup.close()

    confirmed: list[tuple[int, int]] = []
    attempted: list[tuple[int, int]] = []
    publisher = threading.Thread(target=publish, args=(broker.port, confirmed, attempted))
    publisher.start()
    # A backlog first, so that groups have messages waiting behind the one out.
    while len(confirmed) < BACKLOG and publisher.is_alive():
        time.sleep(0.01)
    before = Consumers(broker.port)
    before.run(0.1 + rng.random() * 0.3, rng, pause=0.01)
    before.hold(3)
    before.settle()
    assert before.out, "the kill must find groups in flight"
    in_flight_at_kill = {group: seq for group, (_, _, seq) in before.out.items()}
    broker.kill()
    publisher.join(30)
    assert len(confirmed) < GROUPS * PER_GROUP, "the kill must land while publishing"
    assert not before.overlaps

    broker.start()
    after = Consumers(broker.port)
    expected = set(confirmed) - before.acked
    maybe = set(attempted) - set(confirmed)  # published, its confirm lost to the kill
    assert len(expected) > GROUPS * 10  # a backlog behind the groups in flight
    deadline = time.monotonic() + 30
    while sum(map(len, after.delivered.values())) < len(expected) and time.monotonic() < deadline:
        after.run(0.05, rng, pause=0)
    after.run(0.2, rng, pause=0.01)  # anything more would be a duplicate or a lost ack
    after.connection.close()
    broker.kill()

    got = [(group, seq) for group, seqs in after.delivered.items() for seq in seqs]
    assert not after.overlaps  # one in flight per group
    assert len(got) == len(set(got))  # nothing twice
    # Nothing lost. Acks are written without waiting for the disk, so a
    # message acked just before the kill may come back (at-least-once).
    assert expected <= set(got) <= expected | maybe | before.acked
    for group, seqs in after.delivered.items():
        assert seqs == sorted(seqs), group  # publish order within each group
    assert set(in_flight_at_kill.items()) <= set(got)
