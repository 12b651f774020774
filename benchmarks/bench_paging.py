"""Memory of a durable queue under pipelined publishing (issue 10, defect 10).

Starts ``amqlite serve`` on a fresh data directory, declares a durable queue
and pipelines persistent messages into it as fast as the socket takes them
(pika for the handshake, then pre-encoded basic.publish frames on its
socket: no confirms, no waiting, the shape that used to keep paging from
ever starting). Reports
the server's RSS with the queue full, and after a purge once freed memory
has had time to go back to the OS.

    .venv/bin/python benchmarks/bench_paging.py [--messages 60000] [--size 10240] [--budget 20000]
"""

from __future__ import annotations

import argparse
import struct
import json
import os
import subprocess
import sys
import tempfile
import time

from amqlite.amqp import spec
from amqlite.amqp.frames import encode_method_frame
from amqlite.amqp.properties import BASIC_CLASS_ID, BasicProperties, encode_content_header


def frame(kind: int, channel: int, payload: bytes) -> bytes:
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + b"\xce"


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=60_000)
    parser.add_argument("--size", type=int, default=10_240)
    parser.add_argument("--budget", type=int, default=20_000)
    args = parser.parse_args()
    import pika  # the handshake and declarations; the publishing is raw

    data = tempfile.mkdtemp(prefix="bench-paging-")
    server = subprocess.Popen(
        [sys.executable, "-m", "amqlite", "serve", "--port", "0", "--data-dir", data, "--log-format", "json"],
        stderr=subprocess.PIPE, text=True,
        env={**os.environ, "AMQLITE_QUEUE_MEMORY_BUDGET": str(args.budget)})
    try:
        assert server.stderr is not None
        port = 0
        for line in server.stderr:
            event = json.loads(line)
            if event.get("event") == "broker.listening":
                port = event["port"]
                break
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
        ch = conn.channel()
        ch.queue_declare("big", durable=True)
        one = (encode_method_frame(ch.channel_number, spec.Basic.Publish(exchange="", routing_key="big"))
               + frame(2, ch.channel_number, encode_content_header(BASIC_CLASS_ID, args.size,
                                                                   BasicProperties(delivery_mode=2)))
               + frame(3, ch.channel_number, b"x" * args.size))
        sock = conn._impl._transport._sock  # pika's own socket, past the handshake
        sock.setblocking(True)
        started = time.perf_counter()
        for sent in range(0, args.messages, 100):
            sock.sendall(one * min(100, args.messages - sent))
        sock.setblocking(False)  # pika's own loop expects it
        while ch.queue_declare("big", passive=True).method.message_count < args.messages:
            time.sleep(0.2)
        elapsed = time.perf_counter() - started
        time.sleep(12)  # the last writes and page-outs; trims are at most 10 s apart
        full = rss_mb(server.pid)
        ch.queue_purge("big")
        time.sleep(12)
        drained = rss_mb(server.pid)
        conn.close()
        print(f"{args.messages} x {args.size} B persistent, pipelined, budget {args.budget}: "
              f"published in {elapsed:.1f} s; RSS {full:.0f} MB queued, {drained:.0f} MB after purge")
    finally:
        server.terminate()
        _, errors = server.communicate()
        for line in errors.splitlines():
            if '"error"' in line or '"warning"' in line:
                print(line, file=sys.stderr)


if __name__ == "__main__":
    main()
