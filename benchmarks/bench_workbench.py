"""The dead-letter workbench on a large, mostly paged dead-letter queue:
how long a browse takes at the head, the middle and the end, a filtered
browse through 20,000 positions, and a redrive job's speed (scan and move)
with no rate limit; and that browsing leaves the queue's memory as it was.

In process (the embedded broker with a data directory, the server's
default queue memory budget), so the figures are the workbench's own, not
HTTP's. Medians of ``--runs``.

    python benchmarks/bench_workbench.py [--messages N] [--runs R]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import structlog
import trio

ROOT = Path.cwd()
sys.path[:0] = [str(ROOT)]

import amqlite  # noqa: E402
from amqlite.core.browse import Filter  # noqa: E402
from amqlite.core.message import Properties  # noqa: E402

BODY = b"x" * 100


def tagged(n: int) -> Properties:
    # One message in ten carries the header a filter looks for.
    return Properties(delivery_mode=2, headers={"tenant": "acme" if n % 10 == 0 else "other"})


async def timed(runs: int, operation: object) -> float:
    """Median milliseconds of ``await operation()``."""
    took = []
    for _ in range(runs):
        start = time.perf_counter()
        await operation()  # type: ignore[operator]
        took.append((time.perf_counter() - start) * 1000)
    return statistics.median(took)


async def main(messages: int, runs: int) -> None:
    with tempfile.TemporaryDirectory() as data_dir:
        async with amqlite.open_broker(data_dir=data_dir) as broker:
            ch = await broker.channel()
            await ch.queue_declare("dlq", durable=True)
            await ch.queue_declare("fixed", durable=True)
            for n in range(messages):
                await ch.publish(BODY, routing_key="dlq", properties=tagged(n))
            # One confirmed publish after them: all are on disk, and paged out.
            await ch.confirm_select()
            await ch.publish(b"sync", routing_key="fixed", properties=Properties(delivery_mode=2))
            await ch.get("fixed", no_ack=True)
            await trio.sleep(0.5)
            queue = broker.core.vhosts["/"].queues["dlq"]
            paged, in_memory = queue.paged_count, queue.ready.in_memory
            print(f"{messages:,} messages of {len(BODY)} B in a durable queue, {paged:,} paged out, "
                  f"{in_memory:,} in memory")
            for name, offset in (("head", 0), ("middle", messages // 2), ("end", messages - 50)):
                ms = await timed(runs, lambda offset=offset: ch.queue_browse("dlq", offset=offset, limit=50))
                print(f"browse 50 at the {name:6} (position {offset:>9,}): {ms:8.1f} ms")
            acme = Filter(headers={"tenant": "acme"})
            ms = await timed(runs, lambda: ch.queue_browse("dlq", limit=1000, filter=acme))
            print(f"filtered browse, 1,000 of 1 in 10 (10,000 positions): {ms:8.1f} ms")
            assert (queue.paged_count, queue.ready.in_memory) == (paged, in_memory), "a browse paged something in"
            print("browsing left the paged and in-memory counts as they were")
            start = time.perf_counter()
            dry = await ch.queue_redrive_matching("dlq", acme, to="fixed", dry_run=True)
            took = time.perf_counter() - start
            print(f"dry run: {dry.matched:,} of {dry.scanned:,} match, {dry.scanned / took:,.0f} messages/s scanned")
            start = time.perf_counter()
            job = await ch.queue_redrive_matching("dlq", acme, to="fixed")
            took = time.perf_counter() - start
            print(f"redrive: {job.done:,} moved of {job.scanned:,} scanned in {took:.2f} s, "
                  f"{job.scanned / took:,.0f} messages/s scanned, {job.done / took:,.0f}/s moved")
            assert job.done == messages // 10 + (1 if messages % 10 else 0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    logging.disable(logging.INFO)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    trio.run(main, args.messages, args.runs)
