"""The AMQP engine alone: microseconds of CPU per message, publish+confirm
and consume+ack, with no sockets and no scheduler.

The network figures (bench_amqp.py) swing by 20% between runs on this
two-core VM, too much to tell one commit from the next; the sans-IO engine
driven in-process swings by a few percent, so this is the script for
locating a regression and for measuring a micro-optimisation. Run it from a
git worktree of another commit to compare (`python benchmarks/bench_engine.py`
uses the amqlite of the current directory). The cyclic GC runs with the
thresholds `amqlite serve` sets.

`--queue durable` publishes persistent messages to a durable queue and
`--queue stream` to a stream queue (consumed from `first`), both over a
disk journal written the way the store driver writes it: a batch every
2,000 messages (the confirm window), paged reads done at once. These time
CPU (process time), so that waiting for fsync does not count.

    python benchmarks/bench_engine.py [--messages N] [--runs R] [--queue transient|durable|stream]
"""

from __future__ import annotations

import argparse
import gc
import logging
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

import structlog

ROOT = Path.cwd()
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "amqp")]

from amqlite.amqp import spec  # noqa: E402
from amqlite.amqp.frames import encode_content, encode_method_frame  # noqa: E402
from amqlite import cli  # noqa: E402
from amqlite.core.message import Properties  # noqa: E402
from amqlite.store.journal import DiskJournal  # noqa: E402
from test_engine import on_disk, opened, write_all  # noqa: E402

BODY = b"x" * 100
BATCH = 100
ACK = struct.Struct(">BHI4sQBB")
DELIVER = b"\x00\x3c\x00\x3c"
#: Messages between two journal writes (bench_amqp.py's confirm window).
WRITE_EVERY = 2000
QUEUES = {
    "transient": ({}, Properties(), {}),
    "durable": ({"durable": True}, Properties(delivery_mode=2), {}),
    "stream": ({"durable": True, "arguments": {"x-queue-type": "stream"}}, Properties(delivery_mode=2),
               {"x-stream-offset": "first"}),
}


class Store:
    """What the store driver does between the engine's calls, done at once."""

    def __init__(self, journal: DiskJournal | None) -> None:
        self.journal = journal

    def run(self) -> None:
        journal = self.journal
        if journal is None:
            return
        if journal.dirty:
            write_all(journal)
        for queue, key, refs in journal.page_in_work():
            queue.paged_in(key, refs, journal.read_paged(refs), 0.0)


def one_run(count: int, kind: str, directory: str | None) -> tuple[float, float]:
    """Seconds per message: publishing ``count`` with confirms, then
    consuming and acking them (prefetch 200)."""
    declare, properties, consume_arguments = QUEUES[kind]
    if directory is None:
        peer, store = opened(), Store(None)
    else:
        broker, journal = on_disk(directory)
        peer, store = opened(broker=broker), Store(journal)
    conn = peer.conn
    clock = time.perf_counter if directory is None else time.process_time
    peer.send_method(1, spec.Queue.Declare(queue="q", **declare))
    peer.frames()
    peer.send_method(1, spec.Confirm.Select())
    peer.frames()
    one = encode_method_frame(1, spec.Basic.Publish("", "q")) + encode_content(1, 60, properties, BODY, 131072)
    chunk = one * BATCH
    started = clock()
    for n in range(count // BATCH):
        conn.receive_data(chunk, 0.0)
        if (n + 1) * BATCH % WRITE_EVERY == 0:
            store.run()
            conn.store_synced()
        conn.data_to_send(0.0)
    store.run()
    published = clock()
    peer.send_method(1, spec.Basic.Qos(0, 200, False))
    peer.frames()
    peer.send_method(1, spec.Basic.Consume(queue="q", consumer_tag="c", arguments=consume_arguments))
    received, pending = 0, b""
    while received < count:
        store.run()
        data = pending + conn.data_to_send(0.0)
        acks, at = [], 0
        while at + 7 <= len(data):
            kind, _, size = struct.unpack_from(">BHI", data, at)
            if at + 8 + size > len(data):
                break
            payload = data[at + 7 : at + 7 + size]
            if kind == 1 and payload[:4] == DELIVER:
                tag = struct.unpack_from(">Q", payload, 5 + payload[4])[0]
                acks.append(ACK.pack(1, 1, 13, b"\x00\x3c\x00\x50", tag, 0, 0xCE))
                received += 1
            at += 8 + size
        pending = data[at:]
        if acks:
            conn.receive_data(b"".join(acks), 0.0)
    consumed = clock()
    if store.journal is not None:
        store.journal.close()
    return (published - started) / count, (consumed - published) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--queue", choices=sorted(QUEUES), default="transient")
    args = parser.parse_args()
    # Older commits (compared from a worktree) predate the setting: the
    # same thresholds for all, so that the code is what differs.
    gc.set_threshold(*getattr(cli, "GC_THRESHOLDS", (50_000, 50, 100)))
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    runs = []
    for _ in range(args.runs):
        if args.queue == "transient":
            runs.append(one_run(args.messages, args.queue, None))
            continue
        with tempfile.TemporaryDirectory(prefix="amqlite-bench-") as directory:
            runs.append(one_run(args.messages, args.queue, directory))
    publish = statistics.median(run[0] for run in runs) * 1e6
    consume = statistics.median(run[1] for run in runs) * 1e6
    clock = "wall clock" if args.queue == "transient" else "process CPU time"
    print(f"engine at {ROOT}: {args.queue} queue, {args.messages} x {len(BODY)} B, median of {args.runs}, {clock}")
    print(f"publish+confirm {publish:.2f} us/msg   consume+ack {consume:.2f} us/msg")


if __name__ == "__main__":
    main()
