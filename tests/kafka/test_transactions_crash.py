"""Kafka transactions across kill -9: each transaction wholly committed or
wholly aborted once the broker is back.

A kafka-python transactional producer writes transaction i as record
``i`` to two topics and commits, over and over, while the broker is killed
at a random moment (before, during or after an EndTxn) and restarted on
the same port and data directory. Then a read_committed reader of each
topic must see the same transactions in both, every one whose commit the
producer saw answered among them, each once, and reach the end of each
partition (a transaction left open would hold the last stable offset
back for ever). ``make test`` runs one round (AMQLITE_TXN_CRASH_ROUNDS),
``make crash`` a hundred.
"""

from __future__ import annotations

import os
import random
import threading
from pathlib import Path

from kafka_support import BrokerProcess

ROUNDS = int(os.environ.get("AMQLITE_TXN_CRASH_ROUNDS", "1"))
TOPICS = ("payments", "audit-log")


def produce_until_killed(broker: BrokerProcess, first: int, transactional_id: str) -> tuple[list[int], int]:
    """Transactions from ``first`` on until the broker is killed: (the ones
    whose commit was answered, the next number). kafka-python retries a
    commit for ever, so the producer runs in a thread that is left behind
    once the broker is gone (a restarted broker fences it, its epoch bumped)."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaTimeoutError

    committed: list[int] = []
    state = {"next": first}
    stop, started = threading.Event(), threading.Event()
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id=transactional_id,
                             max_block_ms=3000, request_timeout_ms=2000, linger_ms=0)

    def run() -> None:
        try:
            producer.init_transactions()
            while not stop.is_set():
                n = state["next"]
                state["next"] = n + 1
                producer.begin_transaction()
                for topic in TOPICS:
                    producer.send(topic, b"%d" % n)
                producer.commit_transaction()
                committed.append(n)
                started.set()
        except Exception:  # the broker went away: what was answered is what counts
            pass

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    assert started.wait(30), "no transaction committed"
    stop.wait(random.uniform(0.0, 0.5))  # then the kill lands anywhere in the next transactions
    broker.kill()
    stop.set()
    worker.join(timeout=3)
    answered = list(committed)  # a commit answered later would be by the next broker
    try:
        producer.close(timeout=0)
    except KafkaTimeoutError:
        pass  # its records wait for a broker that is gone
    return answered, state["next"] + 1


def fence_zombies(broker: BrokerProcess, transactional_id: str) -> None:
    """A new instance of the id: a producer left behind by an earlier
    round may have reached the restarted broker and opened a transaction;
    this aborts it and fences that producer, as a restarted application's
    init_transactions does."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id=transactional_id)
    producer.init_transactions()
    producer.close()


def read_committed(broker: BrokerProcess, topic: str) -> list[int]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, isolation_level="read_committed",
                             enable_auto_commit=False, consumer_timeout_ms=2000)
    partition = TopicPartition(topic, 0)
    consumer.assign([partition])
    consumer.seek_to_beginning(partition)
    end = consumer.end_offsets([partition])[partition]  # read_committed: the last stable offset
    values = [int(record.value) for record in consumer]
    assert consumer.position(partition) >= end
    high = KafkaConsumer(bootstrap_servers=broker.bootstrap, isolation_level="read_uncommitted")
    assert end == high.end_offsets([partition])[partition], "a transaction is still open after the restart"
    high.close()
    consumer.close()
    return values


def test_transactions_are_all_or_nothing_across_kill_9(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path / "data", tmp_path)
    broker.start()
    answered: list[int] = []
    n = 0
    try:
        for round_ in range(ROUNDS):
            committed, n = produce_until_killed(broker, n, "crash-producer")
            answered += committed
            broker.start()
        fence_zombies(broker, "crash-producer")
        seen = {topic: read_committed(broker, topic) for topic in TOPICS}
    finally:
        if broker.process is not None and broker.process.poll() is None:
            broker.kill()
    payments, audit = seen[TOPICS[0]], seen[TOPICS[1]]
    assert payments == audit, "a transaction is in one topic and not the other"
    assert len(set(payments)) == len(payments), "a transaction's record is there twice"
    assert set(answered) <= set(payments), "a transaction whose commit was answered is gone"
