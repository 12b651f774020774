"""Durable store figures: bytes on disk per message, start-up (recovery) time
and memory for a backlog of N persistent 100-byte messages.

The backlog is written through the pure core and the disk journal directly
(no network), then a fresh process recovers it, so the recovery figures are
what `amqlite serve` pays at start-up.

Usage: python benchmarks/bench_store.py [--messages N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from amqlite.core.broker import Broker  # noqa: E402
from amqlite.core.message import Properties  # noqa: E402
from amqlite.store.journal import DiskJournal  # noqa: E402

PERSISTENT = Properties(delivery_mode=2)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def fill(directory: Path, count: int) -> dict[str, float]:
    broker = Broker()
    journal = DiskJournal(directory)
    journal.recover(broker, now=time.time())
    channel = broker.connect().open_channel()
    channel.declare_queue("backlog", durable=True, now=time.time())
    started = time.perf_counter()
    batch = 10_000
    for start in range(0, count, batch):
        now = time.time()
        for i in range(start, min(count, start + batch)):
            channel.publish(b"%099d" % i + b"\n", routing_key="backlog", properties=PERSISTENT, now=now)
        pending, position = journal.log.take_pending()
        journal.log.write_and_sync(pending)
        journal.log.synced = position
    elapsed = time.perf_counter() - started
    journal.close()
    size = sum(p.stat().st_size for p in (directory / "log").iterdir())
    return {"write_rate": count / elapsed, "bytes_on_disk": size}


def recover(directory: Path) -> dict[str, float]:
    before = rss_bytes()
    broker = Broker()
    journal = DiskJournal(directory)
    started = time.perf_counter()
    report = journal.recover(broker, now=time.time())
    elapsed = time.perf_counter() - started
    return {"messages": report.messages, "seconds": elapsed, "rss_delta": rss_bytes() - before}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--recover-only", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.recover_only:
        print(json.dumps(recover(Path(args.recover_only))))
        return
    with tempfile.TemporaryDirectory(prefix="amqlite-store-bench-") as tmp:
        directory = Path(tmp)
        written = fill(directory, args.messages)
        # A fresh process, as at start-up: nothing of the backlog in memory yet.
        result = subprocess.run(
            [sys.executable, __file__, "--recover-only", str(directory)],
            capture_output=True, text=True, check=True,
            env={**os.environ, "AMQLITE_LOG_LEVEL": "warning"},
        )
        recovered = json.loads(result.stdout.strip().splitlines()[-1])
    n = args.messages
    print(f"persistent 100-byte messages: {n:,}")
    print(f"written through core + journal: {written['write_rate']:,.0f} msgs/s (fsync every 10,000)")
    print(f"bytes on disk per message: {written['bytes_on_disk'] / n:.0f} B")
    print(f"recovery (start-up) time: {recovered['seconds']:.2f} s for {recovered['messages']:,} messages")
    print(f"RSS after recovery: {recovered['rss_delta'] / n:.0f} B per message "
          f"({recovered['rss_delta'] / 2**20:.0f} MiB in all)")


if __name__ == "__main__":
    main()
