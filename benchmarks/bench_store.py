"""Durable store figures for a backlog of N persistent 100-byte messages on
one durable queue: bytes on disk per message, memory (RSS) of the broker
holding the backlog, start-up (recovery) time and memory after start-up.

The backlog is written through the pure core and the disk journal directly
(no network), paging out beyond the queue's memory budget after each write
as the server's store driver does; then a fresh process recovers it, so the
recovery figures are what `amqlite serve` pays at start-up. Sealed segments
get their index files as the store driver's index task writes them. Each phase runs
in a child process of its own, so RSS figures are not mixed up. The writer
ends with kill -9 (SIGKILL) after its last fsync, as a crashed broker does,
unless --clean asks for a clean close.

Usage: python benchmarks/bench_store.py [--messages N] [--budget B] [--clean]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
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


def fill(directory: Path, count: int, budget: int, clean: bool) -> dict[str, float]:
    before = rss_bytes()
    broker = Broker()
    journal = DiskJournal(directory, queue_budget=budget)
    journal.recover(broker, now=time.time())
    channel = broker.connect().open_channel()
    channel.declare_queue("backlog", durable=True, now=time.time())
    started = time.perf_counter()
    batch = 10_000
    for start in range(0, count, batch):
        now = time.time()
        for i in range(start, min(count, start + batch)):
            channel.publish(b"%099d" % i + b"\n", routing_key="backlog", properties=PERSISTENT, now=now)
        pending, position = journal.take_batch()
        journal.log.write_and_sync(pending)
        journal.log.synced = position
        journal.page_out()
        for segment in journal.unindexed_segments():  # the store driver's index task
            journal.index_segment(segment)
            journal.indexed(segment)
    elapsed = time.perf_counter() - started
    queue = broker.vhosts["/"].queues["backlog"]
    rss = rss_bytes() - before
    in_memory, paged = queue.ready.in_memory, queue.ready.paged
    if clean:
        journal.close()
    size = sum(p.stat().st_size for p in (directory / "log").iterdir())
    return {"write_rate": count / elapsed, "bytes_on_disk": size, "rss_delta": rss,
            "in_memory": in_memory, "paged": paged}


def recover(directory: Path, budget: int) -> dict[str, float]:
    before = rss_bytes()
    broker = Broker()
    journal = DiskJournal(directory, queue_budget=budget)
    started = time.perf_counter()
    report = journal.recover(broker, now=time.time())
    elapsed = time.perf_counter() - started
    rss = rss_bytes() - before
    return {"messages": report.messages, "paged": report.paged, "seconds": elapsed, "rss_delta": rss,
            "drain_rate": drain(broker, journal, report.messages)}


def drain(broker: Broker, journal: DiskJournal, count: int) -> float:
    """Consume and ack the whole backlog, reading paged messages back as the
    store driver does (here in this thread), with a write after each batch."""
    from amqlite.core.events import Deliver

    channel = broker.connect().open_channel()
    channel.qos(1000, now=time.time())
    channel.consume("backlog", now=time.time())
    received = 0
    started = time.perf_counter()
    while received < count:
        events = [e for e in channel.outbox if isinstance(e, Deliver)]
        channel.outbox.clear()
        if events:
            now = time.time()
            channel.delivered(len(events), now=now)
            channel.ack(events[-1].delivery_tag, multiple=True, now=now)
            received += len(events)
            continue
        pending, position = journal.take_batch()
        journal.log.write_and_sync(pending)
        journal.log.synced = position
        for queue, priority, refs in journal.page_in_work():
            queue.paged_in(priority, refs, journal.read_paged(refs), time.time())
    return count / (time.perf_counter() - started)


def child(*args: str, script: str = __file__) -> dict[str, float]:
    """Run a phase of ``script`` in a process of its own: its last line of
    output, JSON. A phase may end with kill -9, as a crash would."""
    result = subprocess.run(
        [sys.executable, script, *args], capture_output=True, text=True,
        env={**os.environ, "AMQLITE_LOG_LEVEL": "warning"},
    )
    if result.returncode not in (0, -signal.SIGKILL):
        raise SystemExit(f"phase {args} failed ({result.returncode}):\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--budget", type=int, default=20_000, help="the queue's memory budget, messages")
    parser.add_argument("--clean", action="store_true", help="close the writer cleanly instead of kill -9")
    parser.add_argument("--phase", nargs=2, metavar=("PHASE", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        phase, directory = args.phase
        if phase == "fill":
            print(json.dumps(fill(Path(directory), args.messages, args.budget, args.clean)), flush=True)
            if not args.clean:
                os.kill(os.getpid(), signal.SIGKILL)  # a crash right after the last fsync
        else:
            print(json.dumps(recover(Path(directory), args.budget)))
        return
    n = args.messages
    with tempfile.TemporaryDirectory(prefix="amqlite-store-bench-") as tmp:
        common = ["--messages", str(n), "--budget", str(args.budget)] + (["--clean"] if args.clean else [])
        written = child(*common, "--phase", "fill", tmp)
        recovered = child(*common, "--phase", "recover", tmp)
    print(f"persistent 100-byte messages on one durable queue: {n:,}; memory budget {args.budget:,}")
    print(f"written through core + journal: {written['write_rate']:,.0f} msgs/s (fsync every 10,000)")
    print(f"bytes on disk per message: {written['bytes_on_disk'] / n:.0f} B")
    print(f"broker RSS holding the backlog: {written['rss_delta'] / 2**20:,.0f} MiB "
          f"({written['rss_delta'] / n:.0f} B per message; {written['in_memory']:,} in memory,"
          f" {written['paged']:,} on disk only)")
    stop = "a clean close" if args.clean else "kill -9"
    print(f"recovery (start-up) time after {stop}: {recovered['seconds']:.2f} s for {recovered['messages']:,} messages"
          f" ({recovered['paged']:,} left on disk)")
    print(f"RSS after recovery: {recovered['rss_delta'] / 2**20:,.0f} MiB ({recovered['rss_delta'] / n:.0f} B per message)")
    print(f"draining the backlog (consume + ack, paging back in): {recovered['drain_rate']:,.0f} msgs/s")


if __name__ == "__main__":
    main()
