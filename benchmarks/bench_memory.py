"""Memory handed back, and memory counted (issue 22, items 7 and 8).

1. drain: `amqlite serve` (a data directory, default watermark), N
   transient 10 KB messages pipelined into a queue with no consumer (with
   confirms, 500 at most unconfirmed), then consumed and acked to the last;
   the server's RSS at the peak and 15 s after the drain. Then N again,
   purged, and RSS 15 s after the purge. Nothing is written to disk, so
   only a trim after messages leave the queues can hand the memory back.
2. accounting (in this process): 300 MB of 10 KB bodies freed and trimmed,
   then 3M small tuples held; at each step the anonymous RSS, what the
   alarm used to count (RSS less mallinfo2's free bytes) and what it counts
   now (amqlite.server.memory.memory_in_use: RSS after a trim).

Usage: python benchmarks/bench_memory.py [--messages N]
"""

from __future__ import annotations

import argparse
import signal
import struct
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_amqp import Client, machine, start_amqlite  # noqa: E402
from bench_paging import rss_mb  # noqa: E402

from amqlite import heap  # noqa: E402
from amqlite.amqp import spec  # noqa: E402
from amqlite.amqp.frames import encode_content, encode_method_frame  # noqa: E402
from amqlite.core.message import Properties  # noqa: E402
from amqlite.heap import resident  # noqa: E402
from amqlite.server.memory import memory_in_use  # noqa: E402

QUEUE = "transient"
BODY = b"m" * 10_240
SETTLE = 15.0


def publish(client: Client, count: int, tags_before: int = 0) -> None:
    """Transient messages with confirms (the channel's delivery tags go on
    from ``tags_before``), until the last is confirmed."""
    one = encode_method_frame(1, spec.Basic.Publish("", QUEUE)) + encode_content(1, 60, Properties(), BODY, 131072)
    sent, confirmed = 0, 0
    while confirmed < count:
        if sent < count and sent - confirmed < 500:
            n = min(50, count - sent)
            client.sock.sendall(one * n)
            sent += n
        for kind, _, payload in client.frames(block=sent - confirmed >= 500 or sent == count):
            if kind == 1 and payload[:4] == b"\x00\x3c\x00\x50":  # basic.ack
                tag, multiple = struct.unpack_from(">QB", payload, 4)
                confirmed = max(confirmed, tag - tags_before)


def drain(client: Client, count: int) -> None:
    client.send(1, spec.Basic.Qos(0, 1000, False))
    client.expect(spec.Basic.QosOk)
    client.send(1, spec.Basic.Consume(queue=QUEUE, consumer_tag="drain"))
    client.expect(spec.Basic.ConsumeOk)
    received = 0
    while received < count:
        for kind, _, payload in client.frames():
            if kind == 1 and payload[:4] == b"\x00\x3c\x00\x3c":  # basic.deliver
                received += 1
                tag = struct.unpack_from(">Q", payload, 4 + 1 + payload[4])[0]
                if received % 100 == 0 or received == count:
                    client.send(1, spec.Basic.Ack(tag, True))
    client.send(1, spec.Basic.Cancel("drain"))
    client.expect(spec.Basic.CancelOk)


def after(pid: int) -> float:
    time.sleep(SETTLE)
    return rss_mb(pid)


def drain_and_purge(count: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="amqlite-memory-bench-") as tmp:
        process, port, _ = start_amqlite(tmp)
        try:
            client = Client("127.0.0.1", port)
            client.send(1, spec.Queue.Declare(queue=QUEUE))
            client.expect(spec.Queue.DeclareOk)
            client.send(1, spec.Confirm.Select())
            client.expect(spec.Confirm.SelectOk)
            figures = {"idle": rss_mb(process.pid)}
            publish(client, count)
            figures["full"] = rss_mb(process.pid)
            drain(client, count)
            figures["drained"] = after(process.pid)
            publish(client, count, tags_before=count)
            figures["full_again"] = rss_mb(process.pid)
            client.send(1, spec.Queue.Purge(queue=QUEUE))
            client.expect(spec.Queue.PurgeOk)
            figures["purged"] = after(process.pid)
            client.close()
        finally:
            process.send_signal(signal.SIGINT)
            process.wait()
    return figures


def accounting() -> list[tuple[str, float, float, float]]:
    """(step, anonymous RSS, RSS less free bytes, memory_in_use), in MiB."""
    mib = 2**20

    def step(name: str) -> tuple[str, float, float, float]:
        rss = resident()
        return name, rss / mib, (rss - (heap.free_bytes() or 0)) / mib, memory_in_use() / mib

    rows = [step("start")]
    bodies, pins = [], []
    for i in range(30_000):
        bodies.append(bytes(10_240))
        if i % 50 == 0:
            pins.append(bytes(900))  # small live allocations in between: the heap cannot shrink by itself
    del bodies
    heap.trim()
    rows.append(step("300 MB of 10 KB bodies freed, trimmed"))
    held = [(i,) for i in range(3_000_000)]
    rows.append(step("then 3M small tuples held"))
    del held, pins
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=150_000)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    for name, rss, old, new in accounting():
        print(f"{name}: anonymous RSS {rss:,.0f} MiB; RSS less free bytes (before) {old:,.0f} MiB;"
              f" memory_in_use (now) {new:,.0f} MiB")
    figures = drain_and_purge(args.messages)
    print(f"{args.messages:,} transient x 10 KB, no consumer: RSS idle {figures['idle']:,.0f} MiB, full"
          f" {figures['full']:,.0f}, {SETTLE:g} s after the drain {figures['drained']:,.0f}; full again"
          f" {figures['full_again']:,.0f}, {SETTLE:g} s after a purge {figures['purged']:,.0f}")


if __name__ == "__main__":
    main()
