"""Stream queues over AMQP 0-9-1, amqlite against RabbitMQ, in one run; then
a big stream read by many readers at once, for speed and memory.

1. publish N messages with confirms (window W) into a stream, then consume
   them from `first` with prefetch 200, acking each; amqlite and RabbitMQ's
   stream queues, alternating, R runs each, medians;
2. amqlite only: a stream of BIG messages (10M by default), then one
   reader catching up from offset 0 (its speed), then READERS readers at
   different offsets reading at once, each in its own process, while the
   server's RSS is sampled (its peak).

The load generator is bench_amqp.py's raw-socket client (frames encoded once,
written in batches), so it is not the bottleneck.

Usage: python benchmarks/bench_streams.py [--messages N] [--runs R] [--big N]
       [--readers K] [--amqlite-only] [--quick]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import threading
import time
import uuid

from bench_amqp import Client, consume_acked, machine, publish_confirmed, rabbitmq_up, start_amqlite, spec
from bench_paging import rss_mb

STREAM = {"x-queue-type": "stream"}


class PeakRss:
    """The peak RSS of a process, sampled every 0.2 s in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak = pid, 0.0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stopped.wait(0.2):
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


def throughput(label: str, port: int, args: argparse.Namespace) -> dict[str, object]:
    pubs, cons = [], []
    for _ in range(args.runs):
        queue = f"bench-stream-{uuid.uuid4().hex[:8]}"
        pubs.append(publish_confirmed("127.0.0.1", port, queue, args.messages, args.window, True, STREAM))
        cons.append(consume_acked("127.0.0.1", port, queue, args.messages, 200, {"x-stream-offset": "first"}))
        delete(port, queue)
    return {"broker": label, "publish": pubs, "consume": cons}


def reader(port: int, queue: str, offset: int, count: int) -> float:
    return consume_acked("127.0.0.1", port, queue, count, 200, {"x-stream-offset": offset})


def big_stream(process_pid: int, port: int, args: argparse.Namespace) -> dict[str, float]:
    queue = "bench-big-stream"
    started = time.perf_counter()
    with PeakRss(process_pid) as publishing:
        publish_confirmed("127.0.0.1", port, queue, args.big, args.window, True, STREAM)
    published = time.perf_counter() - started
    catch_up = reader(port, queue, 0, args.big)
    share = args.big // args.readers
    with PeakRss(process_pid) as reading, multiprocessing.Pool(args.readers) as pool:
        rates = pool.starmap(reader, [(port, queue, n * share, share) for n in range(args.readers)])
    idle = rss_mb(process_pid)
    return {"publish_rate": args.big / published, "publish_peak_rss": publishing.peak, "catch_up": catch_up,
            "readers_rate": sum(rates), "readers_peak_rss": reading.peak, "rss_after": idle}


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
          f"prefetch 200; big stream {args.big:,} x 100 B, {args.readers} readers")
    results = []
    with tempfile.TemporaryDirectory(prefix="amqlite-bench-") as data_dir:
        process, port, _ = start_amqlite(data_dir)
        try:
            results.append(throughput("amqlite", port, args))
            big = big_stream(process.pid, port, args)
        finally:
            process.terminate()
            process.wait()
    if not args.amqlite_only and rabbitmq_up():
        results.append(throughput("RabbitMQ", 5672, args))
    print()
    print(f"{'broker':10} {'publish+confirm msgs/s':>24} {'consume+ack msgs/s':>20}")
    for r in results:
        pub, con = r["publish"], r["consume"]
        assert isinstance(pub, list) and isinstance(con, list)
        print(f"{r['broker']:10} {statistics.median(pub):>14,.0f} ({min(pub):,.0f}-{max(pub):,.0f})"
              f" {statistics.median(con):>10,.0f} ({min(con):,.0f}-{max(con):,.0f})")
    if len(results) == 2:
        a, b = results
        print(f"ratio amqlite/RabbitMQ: publish {statistics.median(a['publish']) / statistics.median(b['publish']):.2f},"  # type: ignore[arg-type]
              f" consume {statistics.median(a['consume']) / statistics.median(b['consume']):.2f}")  # type: ignore[arg-type]
    print()
    print(f"amqlite, a stream of {args.big:,} messages:")
    print(f"  publish+confirm           {big['publish_rate']:>12,.0f} msgs/s   peak RSS {big['publish_peak_rss']:,.0f} MiB")
    print(f"  catch-up from offset 0    {big['catch_up']:>12,.0f} msgs/s")
    print(f"  {args.readers} readers at once      {big['readers_rate']:>12,.0f} msgs/s   peak RSS {big['readers_peak_rss']:,.0f} MiB")
    print(f"  RSS after                 {big['rss_after']:>12,.0f} MiB")


if __name__ == "__main__":
    main()
