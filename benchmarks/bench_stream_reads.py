"""Reading a stream held in memory (no data dir): the cost of one read by
offset, at the start, the middle and the end of streams of growing length.

Each message of a stream without storage stays in memory; a reader asks
for its next offset (``Stream._message_for``), so a read must not grow with
the stream's length (issue 22, item 9: a deque indexed by position cost
22 us a read at 1M messages, 473 us at 4M).

Usage: python benchmarks/bench_stream_reads.py [--sizes 1000000 4000000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_amqp import machine  # noqa: E402

from amqlite.core.broker import Broker  # noqa: E402
from amqlite.core.message import Message, Properties  # noqa: E402
from amqlite.core.stream import Stream, _Reader  # noqa: E402

READS = 20_000


def per_read_us(stream: Stream, start: int) -> float:
    """Median of 5 runs of READS reads from ``start`` on, in us a read."""
    runs = []
    for _ in range(5):
        began = time.perf_counter()
        for offset in range(start, start + READS):
            stream._message_for(_Reader(0, offset))
        runs.append((time.perf_counter() - began) / READS * 1e6)
    return sorted(runs)[2]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 4_000_000])
    args = parser.parse_args()
    print(f"machine: {machine()}")
    message = Message("", "s", Properties(), b"x" * 100)
    for size in args.sizes:
        channel = Broker().connect().open_channel()
        stream = channel.declare_queue("s", durable=True, arguments={"x-queue-type": "stream"}, now=0.0)
        assert isinstance(stream, Stream)
        for _ in range(size):
            stream.enqueue(message, None, 0.0)
        costs = [per_read_us(stream, start) for start in (0, size // 2 - READS // 2, size - READS)]
        print(f"{size:>11,} messages in memory: us a read at the start {costs[0]:.2f}, "
              f"middle {costs[1]:.2f}, end {costs[2]:.2f}")


if __name__ == "__main__":
    main()
