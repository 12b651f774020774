"""Exactly once across AMQP and Kafka, under kill -9 of the broker (issue
24, "Across protocols"). Two pipelines run while the broker is killed:

1. AMQP to Kafka: a pika worker consumes ids from the durable queue
   ``in1`` and, in one AMQP transaction per 1 to 5 ids, acks them and
   publishes each into the stream ``mid1``; a confluent-kafka application
   reads ``mid1`` as a topic (``read_committed``, group ``ctp1``) and writes
   each id into the topic ``out1`` in a Kafka transaction that also holds
   the group's offset (``send_offsets_to_transaction``).
2. Kafka to AMQP: a confluent-kafka transactional producer writes ids into
   the topic ``in2``, 1 to 5 per transaction; on a start it fences its
   previous instance and goes on after the last id committed there. A pika
   member of the stream group ``fwd2`` on ``in2`` acks 1 to 5 of them and
   publishes each into the durable queue ``out2`` in one AMQP transaction,
   so the group's offset moves with its output.

Each worker is a process of its own (this file, run as a script); a round
feeds both inputs, lets the workers commit, kills the broker with SIGKILL
at a random moment and restarts it on the same data directory; the
workers are killed with it, or every other round a moment after the
restart, so that Kafka clients retry what they had in flight against the
new broker (a commit it has already, or is fenced from). Then,
before any worker is back: in pipeline 1 every id is in ``in1`` or in
``mid1``, never both nor twice, and ``out1`` is ``mid1`` up to ``ctp1``'s
committed offset; in pipeline 2 ``in2`` holds the ids in order, each once,
and ``out2`` is ``in2`` up to ``fwd2``'s committed offset. At the end every
input is in the final output exactly once. ``AMQLITE_CROSS_CRASH_ROUNDS``
sets the rounds (``make test`` runs one, ``make crash`` many).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pika

if TYPE_CHECKING:  # the workers run this file without the test's imports
    from kafka_support import BrokerProcess

ROOT = Path(__file__).resolve().parents[2]

ROUNDS = int(os.environ.get("AMQLITE_CROSS_CRASH_ROUNDS", "1"))
#: New ids each round gives each pipeline's input, so that no stage has run
#: out of work when the broker is killed (a round passes fewer through).
FEED = 200
IDS = FEED * ROUNDS
PERSISTENT = pika.BasicProperties(delivery_mode=2)
#: The Kafka workers start first (librdkafka's start is the slow one), so
#: that the AMQP ones have not drained their input before the kill.
KAFKA_WORKERS, AMQP_WORKERS = ("kafka-transform", "kafka-source"), ("amqp-to-stream", "group-to-queue")


# The workers. Each prints a line per commit (the test waits for one before
# it kills), and ends when the broker goes away or its work is done; the
# Kafka ones say when they are ready.

def amqp_forward(amqp_port: int, rng: random.Random, source: str, target: str,
                 arguments: dict[str, str] | None = None) -> None:
    """``source`` -> ``target``, acks and publishes in one transaction per 1 to 5 ids."""
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", amqp_port))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=20)
    channel.tx_select()
    batch, size = 0, rng.randint(1, 5)
    for method, _, body in channel.consume(source, inactivity_timeout=0.05, arguments=arguments):
        if method is None:
            if batch:  # nothing more came: commit what there is
                channel.tx_commit()
                print("commit", flush=True)
                batch = 0
            continue
        channel.basic_publish("", target, body, PERSISTENT)
        channel.basic_ack(method.delivery_tag)
        batch += 1
        if batch == size:
            channel.tx_commit()
            print("commit", flush=True)
            batch, size = 0, rng.randint(1, 5)


def kafka_transform(bootstrap: str, rng: random.Random) -> None:
    """Consume-transform-produce: mid1 -> out1, the offsets in the transaction."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": "transform-1", "linger.ms": 0})
    producer.init_transactions(30)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "ctp1", "enable.auto.commit": False,
                         "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
    consumer.assign([TopicPartition("mid1", 0)])  # from the group's committed offset
    print("ready", flush=True)
    while True:
        batch = [message for message in consumer.consume(rng.randint(1, 5), timeout=0.2) if not message.error()]
        if not batch:
            continue
        producer.begin_transaction()
        for message in batch:
            producer.produce("out1", message.value())
        producer.send_offsets_to_transaction([TopicPartition("mid1", 0, batch[-1].offset() + 1)],
                                             consumer.consumer_group_metadata(), 30)
        producer.commit_transaction(30)
        print("commit", flush=True)


def kafka_source(bootstrap: str, rng: random.Random, ids: int) -> None:
    """Ids into in2 in transactions, on from the last one committed, up to ``ids``."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": "source-2", "linger.ms": 0})
    producer.init_transactions(30)  # aborts what the previous instance left open
    n = len(committed_records(bootstrap, "in2"))
    print("ready", flush=True)
    while n < ids:
        producer.begin_transaction()
        for _ in range(min(rng.randint(1, 5), ids - n)):
            producer.produce("in2", b"%d" % n)
            n += 1
        producer.commit_transaction(30)
        print("commit", flush=True)


# What the broker holds, read with no worker running.

def committed_records(bootstrap: str, topic: str) -> list[tuple[int, int]]:
    """(offset, id) of each record a read_committed reader gets, to the end:
    after a restart no transaction is open, so the last stable offset is the
    end of the partition."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "checker", "enable.auto.commit": False,
                         "isolation.level": "read_committed", "enable.partition.eof": True})
    consumer.assign([TopicPartition(topic, 0, 0)])
    records: list[tuple[int, int]] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None:
            continue
        if message.error():
            assert message.error().code() == -191, message.error()  # _PARTITION_EOF
            break
        records.append((message.offset(), int(message.value())))
    else:
        raise AssertionError(f"{topic} was not read to its end")
    consumer.close()
    return records


def group_offset(bootstrap: str, group: str, topic: str) -> int:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    [partition] = consumer.committed([TopicPartition(topic, 0)], timeout=30)
    consumer.close()
    return max(partition.offset, 0)  # -1001: nothing committed yet


def queue_ids(channel: Any, queue: str) -> list[int]:
    """The ids in a queue, left there: got without acks, then the channel closes."""
    ids = []
    while (got := channel.basic_get(queue))[0] is not None:
        ids.append(int(got[2]))
    return ids


def queue_length(broker: BrokerProcess, queue: str) -> int:
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.amqp_port))
    length = int(connection.channel().queue_declare(queue, passive=True).method.message_count)
    connection.close()
    return length


def check(broker: BrokerProcess, fed: int) -> dict[str, list[int]]:
    """All or nothing at each step, each id once, when ``fed`` ids were
    published into in1; what each place holds."""
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.amqp_port))
    channel = connection.channel()
    waiting, out2 = queue_ids(channel, "in1"), queue_ids(channel, "out2")
    connection.close()
    mid1 = [n for _, n in committed_records(broker.bootstrap, "mid1")]
    out1 = [n for _, n in committed_records(broker.bootstrap, "out1")]
    in2 = committed_records(broker.bootstrap, "in2")
    # Pipeline 1: an id's ack and its publish into the stream together, and
    # the Kafka application's output with its group's offset.
    assert sorted(waiting + mid1) == list(range(fed)), "pipeline 1: an id lost or twice between in1 and mid1"
    assert out1 == mid1[:group_offset(broker.bootstrap, "ctp1", "mid1")], "pipeline 1: out1 and ctp1's offset apart"
    # Pipeline 2: the source's transactions whole, and the AMQP worker's
    # output with its group's offset.
    assert [n for _, n in in2] == list(range(len(in2))), "pipeline 2: in2 holds an id twice or lost one"
    done = group_offset(broker.bootstrap, "fwd2", "in2")
    assert out2 == [n for offset, n in in2 if offset < done], "pipeline 2: out2 and fwd2's offset apart"
    return {"in1": waiting, "mid1": mid1, "out1": out1, "in2": [n for _, n in in2], "out2": out2}


class Workers:
    """The four workers as processes, each printing into a file of its own."""

    def __init__(self, broker: BrokerProcess, log_dir: Path, rng: random.Random, ids: int) -> None:
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}
        try:
            for roles in (KAFKA_WORKERS, AMQP_WORKERS):
                for role in roles:
                    self.logs[role] = log_dir / f"{role}-{broker.starts}.log"
                    with open(self.logs[role], "wb") as out:
                        self.processes[role] = subprocess.Popen(
                            [sys.executable, __file__, role, str(broker.amqp_port), broker.bootstrap,
                             str(rng.random()), str(ids)],
                            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
                if roles == KAFKA_WORKERS:
                    self.wait_for("ready")
        except BaseException:
            self.kill()  # none left behind to write into the next test
            raise

    def said(self, role: str, word: str) -> int:
        return self.logs[role].read_text(errors="replace").count(word + "\n")

    def wait_for(self, word: str) -> None:
        """Until each worker started said ``word`` once, or ended its work:
        the kill must find every pipeline under way however slow a start was."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if all(self.said(role, word) or process.poll() == 0 for role, process in self.processes.items()):
                return
            if any(process.poll() not in (None, 0) for process in self.processes.values()):
                break
            time.sleep(0.05)
        raise AssertionError({role: log.read_text(errors="replace")[-2000:] for role, log in self.logs.items()})

    def kill(self) -> dict[str, int]:
        """Kill them; how many commits each had made."""
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
            process.wait()
        return {role: self.said(role, "commit") for role in self.logs}


def feed(broker: BrokerProcess, ids: range) -> None:
    """Publish ``ids`` into in1, confirmed."""
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.amqp_port))
    channel = connection.channel()
    channel.confirm_delivery()
    for n in ids:
        channel.basic_publish("", "in1", b"%d" % n, PERSISTENT)
    connection.close()


def test_two_pipelines_across_amqp_and_kafka_are_exactly_once_across_kill_9(tmp_path: Path) -> None:
    from kafka_support import BrokerProcess

    rng = random.Random(ROUNDS)
    broker = BrokerProcess(tmp_path / "data", tmp_path, segment_size=64 * 1024)
    broker.start()
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.amqp_port))
    channel = connection.channel()
    for name in ("in1", "out2"):
        channel.queue_declare(name, durable=True)
    for name in ("mid1", "out1", "in2"):
        channel.queue_declare(name, durable=True, arguments={"x-queue-type": "stream"})
    connection.close()
    progress = []
    workers: Workers | None = None
    try:
        for round_ in range(ROUNDS):
            fed = FEED * (round_ + 1)
            feed(broker, range(fed - FEED, fed))
            workers = Workers(broker, tmp_path, rng, fed)
            workers.wait_for("commit")
            time.sleep(rng.random() * 0.5)
            broker.kill()  # while both pipelines commit
            if round_ % 2:
                # The workers meet the restarted broker: the Kafka clients
                # retry what was in flight and carry on, or hear they are
                # fenced (an open transaction was aborted at start-up).
                broker.start()
                time.sleep(1 + rng.random())
                commits = workers.kill()
            else:
                commits = workers.kill()
                broker.start()
            held = check(broker, fed)
            progress.append({place: len(ids) for place, ids in held.items()} | commits)
            print(progress[-1], flush=True)
        # Then the pipelines run to the end.
        workers = Workers(broker, tmp_path, rng, IDS)
        deadline = time.monotonic() + 120 + ROUNDS
        while time.monotonic() < deadline:
            time.sleep(0.5)
            if (group_offset(broker.bootstrap, "ctp1", "mid1") == IDS
                    and queue_length(broker, "out2") == IDS):
                break
        workers.kill()
        held = check(broker, IDS)
    finally:
        if workers is not None:
            workers.kill()
        if broker.process is not None and broker.process.poll() is None:
            broker.kill()
    assert held["in1"] == [] and held["out1"] == held["mid1"], progress
    assert sorted(held["out1"]) == list(range(IDS)), progress  # each input once in the final output
    assert held["out2"] == held["in2"] == list(range(IDS)), progress
    # Each kill came after both pipelines had passed ids through, and found
    # work in the middle of one.
    assert all(round_["out1"] and round_["out2"] for round_ in progress), progress
    assert any(round_["out1"] < round_["mid1"] or round_["out2"] < round_["in2"] for round_ in progress), progress


if __name__ == "__main__":
    role, port, servers, seed, ids = sys.argv[1:6]
    run = {"amqp-to-stream": lambda: amqp_forward(int(port), random.Random(seed), "in1", "mid1"),
           "kafka-transform": lambda: kafka_transform(servers, random.Random(seed)),
           "kafka-source": lambda: kafka_source(servers, random.Random(seed), int(ids)),
           "group-to-queue": lambda: amqp_forward(int(port), random.Random(seed), "in2", "out2",
                                                  {"x-stream-group": "fwd2", "x-stream-offset": "first"})}[role]
    run()
