"""Kafka over amqlite's streams against RabbitMQ 3.10's stream queues over
AMQP 0-9-1, and amqlite's own AMQP stream path, in one run.

1. Kafka (confluent-kafka, so librdkafka in C is not the limit): N records
   of 100 B produced with acks=all and idempotence on, timed until the
   last delivery report; then fetched from the start by one consumer
   (assigned, no group), timed until the last record. R runs, medians.
2. The same N messages of 100 B over AMQP 0-9-1 into a stream (publisher
   confirms, window 2,000) and consumed from `first` (prefetch 200, an ack
   each), with bench_amqp.py's raw-socket client: amqlite and RabbitMQ.
3. Kafka transactions (amqlite only): T records of 100 B produced by a
   transactional confluent-kafka producer in transactions of 10 and of
   1,000 records, each committed (EndTxn answered once on disk); committed
   records per second, against (1)'s idempotent producing in the same run.
4. amqlite only: a topic of BIG records (10M), then READERS consumers at
   offsets 0, BIG/READERS ... reading BIG/READERS each at once, each in its
   own process, with the server's peak RSS.

Usage: python benchmarks/bench_kafka.py [--records N] [--runs R] [--big N]
       [--readers K] [--txn-records T] [--amqlite-only] [--skip-big] [--quick]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition

from bench_amqp import consume_acked, free_port, machine, publish_confirmed, rabbitmq_up, start_amqlite
from bench_paging import rss_mb
from bench_streams import STREAM, PeakRss, delete

VALUE = b"x" * 100


def produce(bootstrap: str, topic: str, count: int) -> float:
    """Records per second, acks=all with idempotence, until the last one is
    acknowledged. The client's cost kept low, so that the broker is what is
    measured: records handed over 10,000 at a time (produce_batch), and
    delivery reports for failures only."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                         "linger.ms": 5, "queue.buffering.max.messages": 2_000_000,
                         "delivery.report.only.error": True})
    failed = []

    def report(error: object, message: object) -> None:
        failed.append(error)

    producer.produce(topic, VALUE, on_delivery=report)  # the topic made, metadata known
    producer.flush(30)
    chunk = [{"value": VALUE}] * 10_000
    started = time.perf_counter()
    sent = 0
    while sent < count:
        queued = producer.produce_batch(topic, chunk[:count - sent], on_delivery=report)
        sent += queued
        # Acknowledged records leave the client's queue once polled; a
        # full queue (fewer queued than handed over) waits for some.
        producer.poll(0 if queued == min(len(chunk), count - sent + queued) else 0.01)
    assert producer.flush(120) == 0 and not failed, failed[:3]
    return count / (time.perf_counter() - started)


def transactional(bootstrap: str, topic: str, count: int, size: int) -> float:
    """Committed records per second: transactions of ``size`` records,
    each committed before the next begins."""
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"bench-{uuid.uuid4().hex[:8]}",
                         "linger.ms": 5, "delivery.report.only.error": True})
    producer.init_transactions(30)
    chunk = [{"value": VALUE}] * size
    started = time.perf_counter()
    for _ in range(count // size):
        producer.begin_transaction()
        assert producer.produce_batch(topic, chunk) == size
        producer.commit_transaction(60)
    return count // size * size / (time.perf_counter() - started)


def fetch(bootstrap: str, topic: str, offset: int, count: int) -> float:
    """Records per second read from ``offset`` by one assigned consumer."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex[:6]}",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 100})
    consumer.assign([TopicPartition(topic, 0, offset)])
    got = 0
    started = time.perf_counter()
    while got < count:
        for message in consumer.consume(10_000, 1.0):
            if message.error() is None:
                got += 1
    rate = got / (time.perf_counter() - started)
    consumer.close()
    return rate


def kafka_runs(bootstrap: str, args: argparse.Namespace) -> tuple[list[float], list[float]]:
    produced, fetched = [], []
    for _ in range(args.runs):
        topic = f"bench-kafka-{uuid.uuid4().hex[:8]}"
        produced.append(produce(bootstrap, topic, args.records))
        fetched.append(fetch(bootstrap, topic, 0, args.records))
    return produced, fetched


def amqp_runs(port: int, args: argparse.Namespace) -> tuple[list[float], list[float]]:
    published, consumed = [], []
    for _ in range(args.runs):
        queue = f"bench-stream-{uuid.uuid4().hex[:8]}"
        published.append(publish_confirmed("127.0.0.1", port, queue, args.records, 2000, True, STREAM))
        consumed.append(consume_acked("127.0.0.1", port, queue, args.records, 200, {"x-stream-offset": "first"}))
        delete(port, queue)
    return published, consumed


def big_topic(pid: int, bootstrap: str, args: argparse.Namespace) -> dict[str, float]:
    topic = "bench-kafka-big"
    with PeakRss(pid) as producing:
        rate = produce(bootstrap, topic, args.big)
    share = args.big // args.readers
    with PeakRss(pid) as reading, multiprocessing.Pool(args.readers) as pool:
        rates = pool.starmap(fetch, [(bootstrap, topic, n * share, share) for n in range(args.readers)])
    return {"produce": rate, "produce_rss": producing.peak, "readers": sum(rates), "readers_rss": reading.peak,
            "rss_after": rss_mb(pid)}


def line(label: str, rates: list[float]) -> str:
    return f"{statistics.median(rates):>10,.0f} ({min(rates):,.0f}-{max(rates):,.0f})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--big", type=int, default=10_000_000)
    parser.add_argument("--readers", type=int, default=10)
    parser.add_argument("--txn-records", type=int, default=100_000)
    parser.add_argument("--amqlite-only", action="store_true", help="no RabbitMQ")
    parser.add_argument("--skip-big", action="store_true")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.records, args.runs, args.big, args.readers, args.txn_records = 3000, 1, 6000, 2, 2000
    print(f"machine: {machine()}")
    print(f"workload: {args.records:,} x 100 B, {args.runs} runs; Kafka: confluent-kafka, acks=all, idempotence, "
          f"linger.ms 5; AMQP: confirms (window 2,000), prefetch 200; big topic {args.big:,}, {args.readers} readers")
    rows: list[tuple[str, list[float], list[float]]] = []
    with tempfile.TemporaryDirectory(prefix="amqlite-bench-") as data_dir:
        kafka = free_port()
        process, port, _ = start_amqlite(data_dir, kafka_port=kafka)
        bootstrap = f"127.0.0.1:{kafka}"
        try:
            rows.append(("amqlite Kafka", *kafka_runs(bootstrap, args)))
            rows.append(("amqlite AMQP", *amqp_runs(port, args)))
            txns = {size: [transactional(bootstrap, f"bench-txn-{uuid.uuid4().hex[:8]}", args.txn_records, size)
                           for _ in range(args.runs)] for size in (10, 1000)}
            big = None if args.skip_big else big_topic(process.pid, bootstrap, args)
        finally:
            process.terminate()
            process.wait()
    if not args.amqlite_only and rabbitmq_up():
        rows.append(("RabbitMQ AMQP", *amqp_runs(5672, args)))
    print()
    print(f"{'':16} {'produce/publish records/s':>30} {'fetch/consume records/s':>30}")
    for label, written, read in rows:
        print(f"{label:16} {line(label, written):>30} {line(label, read):>30}")
    base = {label: (statistics.median(w), statistics.median(r)) for label, w, r in rows}
    kafka_rates = base["amqlite Kafka"]
    for other in ("RabbitMQ AMQP", "amqlite AMQP"):
        if other in base:
            print(f"ratio amqlite Kafka / {other}: produce {kafka_rates[0] / base[other][0]:.2f}, "
                  f"fetch {kafka_rates[1] / base[other][1]:.2f}")
    print()
    print(f"amqlite Kafka transactions, {args.txn_records:,} records each run, committed records/s:")
    for size, rates in txns.items():
        print(f"  transactions of {size:>5,}  {line('', rates):>30}   "
              f"ratio to idempotent produce {statistics.median(rates) / kafka_rates[0]:.3f}")
    if big is not None:
        print()
        print(f"amqlite, a topic of {args.big:,} records:")
        print(f"  produce                   {big['produce']:>12,.0f} records/s   peak RSS {big['produce_rss']:,.0f} MiB")
        print(f"  {args.readers} readers at once      {big['readers']:>12,.0f} records/s   "
              f"peak RSS {big['readers_rss']:,.0f} MiB")
        print(f"  RSS after                 {big['rss_after']:>12,.0f} MiB")


if __name__ == "__main__":
    main()
