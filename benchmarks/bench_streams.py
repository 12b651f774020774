"""Stream queues over AMQP 0-9-1, amqlite against RabbitMQ, in one run.

1. publish N messages with confirms (window W) into a stream, then consume
   them from `first` with prefetch 200, acking each; amqlite and RabbitMQ's
   stream queues, R runs each, medians;
2. a stream of BIG messages on each broker, then one reader catching up
   from offset 0, then READERS readers at different offsets reading at
   once, each in its own process; for amqlite, the server's peak RSS.

Each figure is printed next to RabbitMQ's (ratio column), with amqlite's
server CPU seconds per 100,000 messages (utime + stime of all its threads,
from /proc): the wall-clock rate moves with the load of a shared machine,
the CPU it takes far less.

The load generator is bench_amqp.py's raw-socket client (frames encoded once,
written in batches), so it is not the bottleneck.

Usage: python benchmarks/bench_streams.py [--messages N] [--runs R] [--big N]
       [--readers K] [--amqlite-only] [--quick]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import tempfile
import threading
import uuid
from typing import Callable

from bench_amqp import (Client, consume_acked, machine, publish_confirmed, rabbitmq_up, spec, start_amqlite,
                        thread_cpu)
from bench_paging import rss_mb

STREAM = {"x-queue-type": "stream"}


class PeakRss:
    """The peak RSS of a process, sampled every 0.2 s in a thread (none
    sampled for pid None: RabbitMQ's)."""

    def __init__(self, pid: int | None) -> None:
        self.pid, self.peak = pid, 0.0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while self.pid is not None and not self.stopped.wait(0.2):
            self.peak = max(self.peak, rss_mb(self.pid))

    def __enter__(self) -> PeakRss:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join()


def delete(port: int, queue: str) -> None:
    client = Client("127.0.0.1", port)
    client.send(1, spec.Queue.Delete(queue=queue))
    client.expect(spec.Queue.DeleteOk)
    client.close()


class CpuMeter:
    """amqlite's server CPU seconds (all threads) per figure; nothing for
    RabbitMQ (pid None)."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.seconds: dict[str, float] = {}

    def timed(self, figure: str, work: Callable[[], float]) -> float:
        if self.pid is None:
            return work()
        before = sum(thread_cpu(self.pid))
        rate = work()
        self.seconds[figure] = self.seconds.get(figure, 0.0) + sum(thread_cpu(self.pid)) - before
        return rate


def throughput(port: int, args: argparse.Namespace, cpu: CpuMeter) -> dict[str, list[float]]:
    pubs, cons = [], []
    for _ in range(args.runs):
        queue = f"bench-stream-{uuid.uuid4().hex[:8]}"
        pubs.append(cpu.timed("publish", lambda: publish_confirmed("127.0.0.1", port, queue, args.messages,
                                                                  args.window, True, STREAM)))
        cons.append(cpu.timed("consume", lambda: consume_acked("127.0.0.1", port, queue, args.messages, 200,
                                                              {"x-stream-offset": "first"})))
        delete(port, queue)
    return {"publish": pubs, "consume": cons}


def reader(port: int, queue: str, offset: int, count: int) -> float:
    return consume_acked("127.0.0.1", port, queue, count, 200, {"x-stream-offset": offset})


def readers_at_once(port: int, queue: str, args: argparse.Namespace) -> float:
    share = args.big // args.readers
    with multiprocessing.Pool(args.readers) as pool:
        return sum(pool.starmap(reader, [(port, queue, n * share, share) for n in range(args.readers)]))


def big_stream(port: int, args: argparse.Namespace, cpu: CpuMeter) -> dict[str, float]:
    """A stream of ``args.big`` messages, read back by one reader, then by
    ``args.readers`` at once; RSS peaks for amqlite (``cpu.pid``)."""
    queue = f"bench-big-stream-{uuid.uuid4().hex[:8]}"
    pid = cpu.pid
    try:
        with PeakRss(pid) as publishing:
            rate = cpu.timed("big publish", lambda: publish_confirmed("127.0.0.1", port, queue, args.big,
                                                                      args.window, True, STREAM))
        catch_up = cpu.timed("catch-up", lambda: reader(port, queue, 0, args.big))
        with PeakRss(pid) as reading:
            readers_rate = cpu.timed("readers", lambda: readers_at_once(port, queue, args))
    finally:
        delete(port, queue)  # RabbitMQ keeps it on disk otherwise
    return {"publish_rate": rate, "publish_peak_rss": publishing.peak, "catch_up": catch_up,
            "readers_rate": readers_rate, "readers_peak_rss": reading.peak,
            "rss_after": rss_mb(pid) if pid else 0.0}


def load() -> str:
    """The load averages (1, 5, 15 min): how shared the machine was."""
    return " ".join(f"{figure:.2f}" for figure in os.getloadavg())


def row(label: str, ours: float, theirs: float | None, cpu_seconds: float | None, messages: int,
        extra: str = "") -> str:
    ratio = f"{ours / theirs:>6.2f}" if theirs else f"{'-':>6}"
    reference = f"{theirs:>12,.0f}" if theirs else f"{'-':>12}"
    per = f"{1e5 * cpu_seconds / messages:>8.3f}" if cpu_seconds is not None else f"{'-':>8}"
    return f"  {label:30} {ours:>12,.0f} {reference} {ratio} {per}{extra}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--window", type=int, default=2000)
    parser.add_argument("--big", type=int, default=10_000_000)
    parser.add_argument("--readers", type=int, default=10)
    parser.add_argument("--amqlite-only", action="store_true")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.messages, args.runs, args.big, args.readers = 2000, 1, 5000, 2
    print(f"machine: {machine()}")
    print(f"workload: streams, {args.messages} x 100 B, {args.runs} runs, confirm window {args.window}, "
          f"prefetch 200; big stream {args.big:,} x 100 B, {args.readers} readers; load {load()}")
    with tempfile.TemporaryDirectory(prefix="amqlite-bench-") as data_dir:
        process, port, _ = start_amqlite(data_dir)
        cpu = CpuMeter(process.pid)
        try:
            ours = throughput(port, args, cpu)
            big = big_stream(port, args, cpu)
        finally:
            process.terminate()
            process.wait()
    theirs: dict[str, list[float]] = {}
    their_big: dict[str, float] = {}
    if not args.amqlite_only and rabbitmq_up():
        theirs = throughput(5672, args, CpuMeter(None))
        their_big = big_stream(5672, args, CpuMeter(None))
    print()
    print(f"  {'msgs/s (median, range)':30} {'amqlite':>12} {'RabbitMQ':>12} {'ratio':>6} {'CPU s/100k':>8}   (amqlite's server CPU)")
    total = args.messages * args.runs
    for figure, label in (("publish", "publish+confirm"), ("consume", "consume+ack from first")):
        rates = ours[figure]
        spread = f"   ({min(rates):,.0f}-{max(rates):,.0f}"
        if figure in theirs:
            spread += f"; RabbitMQ {min(theirs[figure]):,.0f}-{max(theirs[figure]):,.0f}"
        print(row(label, statistics.median(rates), statistics.median(theirs[figure]) if figure in theirs else None,
                  cpu.seconds.get(figure), total, spread + ")"))
    print()
    print(f"  a stream of {args.big:,} messages:")
    print(row("publish+confirm", big["publish_rate"], their_big.get("publish_rate"), cpu.seconds.get("big publish"),
              args.big, f"   peak RSS {big['publish_peak_rss']:,.0f} MiB"))
    print(row("catch-up from offset 0", big["catch_up"], their_big.get("catch_up"), cpu.seconds.get("catch-up"),
              args.big))
    print(row(f"{args.readers} readers at once (total)", big["readers_rate"], their_big.get("readers_rate"),
              cpu.seconds.get("readers"), args.big, f"   peak RSS {big['readers_peak_rss']:,.0f} MiB"))
    print(f"  RSS after {big['rss_after']:,.0f} MiB; load at the end {load()}")


if __name__ == "__main__":
    main()
