"""The AMQP engine alone: microseconds of CPU per message, publish+confirm
and consume+ack, with no sockets and no scheduler.

The network figures (bench_amqp.py) swing by 20% between runs on this
two-core VM, too much to tell one commit from the next; the sans-IO engine
driven in-process swings by a few percent, so this is the script for
locating a regression and for measuring a micro-optimisation. Run it from a
git worktree of another commit to compare (`python benchmarks/bench_engine.py`
uses the amqlite of the current directory). The cyclic GC runs with the
thresholds `amqlite serve` sets.

    python benchmarks/bench_engine.py [--messages N] [--runs R]
"""

from __future__ import annotations

import argparse
import gc
import logging
import statistics
import struct
import sys
import time
from pathlib import Path

import structlog

ROOT = Path.cwd()
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "amqp")]

from amqlite.amqp import spec  # noqa: E402
from amqlite.amqp.frames import encode_content, encode_method_frame  # noqa: E402
from amqlite import cli  # noqa: E402
from amqlite.core.message import Properties  # noqa: E402
from test_engine import opened  # noqa: E402

BODY = b"x" * 100
BATCH = 100
ACK = struct.Struct(">BHI4sQBB")
DELIVER = b"\x00\x3c\x00\x3c"


def one_run(count: int) -> tuple[float, float]:
    """Seconds per message: publishing ``count`` with confirms, then
    consuming and acking them (prefetch 200)."""
    peer = opened()
    conn = peer.conn
    peer.send_method(1, spec.Queue.Declare(queue="q"))
    peer.frames()
    peer.send_method(1, spec.Confirm.Select())
    peer.frames()
    one = encode_method_frame(1, spec.Basic.Publish("", "q")) + encode_content(1, 60, Properties(), BODY, 131072)
    chunk = one * BATCH
    started = time.perf_counter()
    for _ in range(count // BATCH):
        conn.receive_data(chunk, 0.0)
        conn.data_to_send(0.0)
    published = time.perf_counter()
    peer.send_method(1, spec.Basic.Qos(0, 200, False))
    peer.frames()
    peer.send_method(1, spec.Basic.Consume(queue="q", consumer_tag="c"))
    received, pending = 0, b""
    while received < count:
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
    consumed = time.perf_counter()
    return (published - started) / count, (consumed - published) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    # Older commits (compared from a worktree) predate the setting: the
    # same thresholds for all, so that the code is what differs.
    gc.set_threshold(*getattr(cli, "GC_THRESHOLDS", (50_000, 50, 100)))
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    runs = [one_run(args.messages) for _ in range(args.runs)]
    publish = statistics.median(run[0] for run in runs) * 1e6
    consume = statistics.median(run[1] for run in runs) * 1e6
    print(f"engine at {ROOT}: {args.messages} x {len(BODY)} B, median of {args.runs}")
    print(f"publish+confirm {publish:.2f} us/msg   consume+ack {consume:.2f} us/msg")


if __name__ == "__main__":
    main()
