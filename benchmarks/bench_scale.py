"""Load at scale, amqlite against RabbitMQ, in one run.

Workloads (each against amqlite, then against the RabbitMQ at 127.0.0.1:5672):

  fleet    N connections, each with a channel, its own queue and a consumer
           (prefetch 10) and a heartbeat; server RSS per idle connection and
           idle server CPU with heartbeats only; then 1 producer publishes
           R msgs/s to a fanout exchange bound to F of those queues for D
           seconds: p50/p99 publish-to-deliver latency and the deliveries
           that arrived.
  idle     M connections with heartbeats and nothing else, held for D
           seconds: how many stayed up, the longest silence from the server.
  fanout   one fanout exchange bound to 1,000 queues: messages routed per
           second (publish with confirms) and server memory.
  topic    a topic exchange with 100,000 random bindings: binding time,
           server memory, messages routed per second.

The connections live in several load-generator processes (asyncio, raw
frames, one Protocol per connection, one heartbeat task per process), so
the generator is not one Python thread against the broker. Latency is taken
with CLOCK_MONOTONIC, which all processes on the machine share.

Usage: python benchmarks/bench_scale.py [--quick] [--amqlite-only]
       [--workloads fleet,idle,fanout,topic] [--connections N] ...
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import resource
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from multiprocessing.connection import Connection as Pipe
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_amqp import Client, machine, rabbitmq_up, start_amqlite  # noqa: E402

from amqlite.amqp import spec  # noqa: E402
from amqlite.amqp.frames import HEARTBEAT_FRAME, PROTOCOL_HEADER, encode_content, encode_method_frame  # noqa: E402
from amqlite.core.message import Properties  # noqa: E402

HEAD = struct.Struct(">BHI")
TAG = struct.Struct(">Q")
STAMP = struct.Struct(">d")
ACK = struct.Struct(">BHI4sQBB")
PAD = b"x" * 92
BUCKET_US = 10  # latency histogram resolution

START, TUNE, OPEN_OK, CHANNEL_OPEN_OK = b"\x00\x0a\x00\x0a", b"\x00\x0a\x00\x1e", b"\x00\x0a\x00\x29", b"\x00\x14\x00\x0b"
CLOSE, DECLARE_OK, QOS_OK, CONSUME_OK = b"\x00\x0a\x00\x32", b"\x00\x32\x00\x0b", b"\x00\x3c\x00\x0b", b"\x00\x3c\x00\x15"
DELIVER = b"\x00\x3c\x00\x3c"


# -- the load generator: many connections in one asyncio process ---------------


class Peer(asyncio.Protocol):
    """One connection: handshake, channel, optionally a queue and a consumer,
    then acks every delivery and records its latency."""

    def __init__(self, worker: Worker, queue: str | None) -> None:
        self.worker, self.queue = worker, queue
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.last_rx = 0.0
        self.longest_silence = 0.0
        self.closed = False
        self.body_due = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.last_rx = time.monotonic()
        transport.write(PROTOCOL_HEADER)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed during set-up: {exc}"))

    def send(self, channel: int, method: spec.Method) -> None:
        assert self.transport is not None
        self.transport.write(encode_method_frame(channel, method))

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        if self.worker.watching:
            self.longest_silence = max(self.longest_silence, now - self.last_rx)
        self.last_rx = now
        buf = self.buf
        buf += data
        pos, acks = 0, []
        while len(buf) - pos >= 7:
            kind, _, size = HEAD.unpack_from(buf, pos)
            if len(buf) - pos < size + 8:
                break
            start = pos + 7
            pos += size + 8
            if kind == 1:
                method_id = bytes(buf[start:start + 4])
                if method_id == DELIVER:
                    n = buf[start + 4]
                    acks.append(ACK.pack(1, 1, 13, b"\x00\x3c\x00\x50", TAG.unpack_from(buf, start + 5 + n)[0], 0, 0xCE))
                    self.body_due = True
                else:
                    self.on_method(method_id, bytes(buf[start:start + size]))
            elif kind == 3 and self.body_due:
                self.body_due = False
                latency = now - STAMP.unpack_from(buf, start)[0]
                self.worker.histogram[int(latency * 1e6) // BUCKET_US] += 1
        del buf[:pos]
        if acks and self.transport is not None:
            self.transport.write(b"".join(acks))

    def on_method(self, method_id: bytes, payload: bytes) -> None:
        worker = self.worker
        if method_id == START:
            self.send(0, spec.Connection.StartOk({"product": "bench-scale"}, "PLAIN", b"\x00guest\x00guest", "en_US"))
        elif method_id == TUNE:
            tune = spec.decode_method(payload)
            assert isinstance(tune, spec.Connection.Tune)
            self.send(0, spec.Connection.TuneOk(tune.channel_max, tune.frame_max, worker.heartbeat))
            self.send(0, spec.Connection.Open("/"))
        elif method_id == OPEN_OK:
            self.send(1, spec.Channel.Open())
        elif method_id == CHANNEL_OPEN_OK:
            if self.queue is None:
                self.ready.set_result(None)
            else:
                self.send(1, spec.Queue.Declare(queue=self.queue, auto_delete=True))
        elif method_id == DECLARE_OK:
            self.send(1, spec.Basic.Qos(0, worker.prefetch, False))
        elif method_id == QOS_OK:
            self.send(1, spec.Basic.Consume(queue=self.queue or "", consumer_tag="c"))
        elif method_id == CONSUME_OK:
            self.ready.set_result(None)
        elif method_id == CLOSE:
            worker.close_reasons[repr(spec.decode_method(payload))] += 1
            self.send(0, spec.Connection.CloseOk())


class Worker:
    def __init__(self, host: str, port: int, heartbeat: int, prefetch: int) -> None:
        self.host, self.port, self.heartbeat, self.prefetch = host, port, heartbeat, prefetch
        self.peers: list[Peer] = []
        self.histogram: Counter[int] = Counter()
        self.close_reasons: Counter[str] = Counter()
        self.watching = False

    async def open(self, queues: list[str | None]) -> tuple[list[str | None], list[str]]:
        """Open a connection per queue; the queues whose connection came
        up, and why the others did not (a broker at its connection limit
        refuses some, and the workload goes on with the rest)."""
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(50)  # handshakes in flight, as a client pool would

        async def one(queue: str | None) -> str | None:
            async with gate:
                _, peer = await loop.create_connection(lambda: Peer(self, queue), self.host, self.port)
                self.peers.append(peer)
                await asyncio.wait_for(peer.ready, 60)
                return queue

        outcomes = await asyncio.gather(*(one(q) for q in queues), return_exceptions=True)
        up = [o for o in outcomes if not isinstance(o, BaseException)]
        return up, [repr(o) for o in outcomes if isinstance(o, BaseException)]

    async def heartbeats(self) -> None:
        """A heartbeat on every connection each half interval, as clients
        send them, spread over the interval: each client's timer starts
        when it connects, so a real fleet's heartbeats do not arrive as one
        burst of every connection at once."""
        if not self.heartbeat:
            return
        slices = 50
        while True:
            for k in range(slices):
                await asyncio.sleep(self.heartbeat / 2 / slices)
                for peer in self.peers[k::slices]:
                    if peer.transport is not None and not peer.closed:
                        peer.transport.write(HEARTBEAT_FRAME)


def worker_main(pipe: Pipe, host: str, port: int, queues: list[str | None], heartbeat: int, prefetch: int) -> None:
    async def run() -> None:
        worker = Worker(host, port, heartbeat, prefetch)
        beating = asyncio.ensure_future(worker.heartbeats())
        pipe.send(await worker.open(queues))
        loop = asyncio.get_running_loop()
        while True:
            command = await loop.run_in_executor(None, pipe.recv)
            if command == "watch":
                now = time.monotonic()
                for peer in worker.peers:
                    peer.last_rx, peer.longest_silence = now, 0.0
                worker.histogram.clear()
                worker.watching = True
                pipe.send(("watching", None))
            elif command == "report":
                pipe.send(("report", {
                    "histogram": dict(worker.histogram),
                    "longest_silence": max((p.longest_silence for p in worker.peers), default=0.0),
                    "up": sum(not p.closed for p in worker.peers),
                    "close_reasons": dict(worker.close_reasons),
                }))
            elif command == "stop":
                break
        beating.cancel()
        for peer in worker.peers:
            if peer.transport is not None:
                peer.transport.close()

    asyncio.run(run())


class Fleet:
    """The load-generator processes for one workload."""

    def __init__(self, host: str, port: int, queues: list[str | None], processes: int, heartbeat: int,
                 prefetch: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipes: list[Pipe] = []
        self.procs = []
        for i in range(processes):
            parent, child = context.Pipe()
            share = queues[i::processes]
            proc = context.Process(target=worker_main, args=(child, host, port, share, heartbeat, prefetch),
                                   daemon=True)
            proc.start()
            self.pipes.append(parent)
            self.procs.append(proc)

    def wait_ready(self) -> tuple[list[str | None], Counter[str]]:
        """The queues whose connections are up, and why the others failed."""
        up: list[str | None] = []
        failures: Counter[str] = Counter()
        for pipe in self.pipes:
            ready, failed = pipe.recv()
            up += ready
            failures.update(failed)
        return up, failures

    def command(self, command: str) -> None:
        for pipe in self.pipes:
            pipe.send(command)

    def watch(self) -> None:
        """Reset the latency samples and silence clocks, on every process
        before returning."""
        self.command("watch")
        for pipe in self.pipes:
            pipe.recv()

    def report(self) -> dict[str, object]:
        self.command("report")
        histogram: Counter[int] = Counter()
        silence, up, reasons = 0.0, 0, Counter[str]()
        for pipe in self.pipes:
            _, part = pipe.recv()
            histogram.update({int(k): v for k, v in part["histogram"].items()})
            silence = max(silence, part["longest_silence"])
            up += part["up"]
            reasons.update(part["close_reasons"])
        return {"histogram": histogram, "longest_silence": silence, "up": up, "close_reasons": reasons}

    def stop(self) -> None:
        self.command("stop")
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()


def percentile(histogram: Counter[int], fraction: float) -> float:
    """Milliseconds at ``fraction`` of the samples."""
    total = sum(histogram.values())
    if not total:
        return float("nan")
    seen, target = 0, fraction * total
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen >= target:
            return (bucket + 1) * BUCKET_US / 1000
    raise AssertionError("unreachable")


# -- measuring the server -------------------------------------------------------


class Server:
    """The broker process under test: its RSS and CPU time from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.ticks = os.sysconf("SC_CLK_TCK")

    def rss(self) -> int:
        with open(f"/proc/{self.pid}/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def cpu(self) -> float:
        with open(f"/proc/{self.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self.ticks

    def cpu_share(self, seconds: float) -> float:
        """Fraction of one core used over ``seconds`` of wall time."""
        before, started = self.cpu(), time.monotonic()
        time.sleep(seconds)
        return (self.cpu() - before) / (time.monotonic() - started)


def rabbitmq_server() -> Server:
    pid = subprocess.run(["pgrep", "-o", "-f", "beam.smp"], capture_output=True, text=True).stdout.split()
    return Server(int(pid[0]))


# -- the workloads ---------------------------------------------------------------


def fleet(host: str, port: int, server: Server, args: argparse.Namespace) -> dict[str, object]:
    tag = uuid.uuid4().hex[:6]
    queues: list[str | None] = [f"scale-{tag}-{i}" for i in range(args.connections)]
    time.sleep(1)
    rss_before = server.rss()
    started = time.monotonic()
    generators = Fleet(host, port, queues, args.processes, args.heartbeat, 10)
    queues, failures = generators.wait_ready()
    connect_seconds = time.monotonic() - started
    result: dict[str, object] = {"connect_s": connect_seconds, "failures": dict(failures)}
    try:
        time.sleep(2)
        result["rss_per_conn"] = (server.rss() - rss_before) / max(1, len(queues))
        result["idle_cpu"] = server.cpu_share(args.idle_seconds)
        producer = Client(host, port)
        exchange = f"scale-fanout-{tag}"
        producer.send(1, spec.Exchange.Declare(exchange=exchange, type="fanout", auto_delete=True))
        producer.expect(spec.Exchange.DeclareOk)
        for queue in queues[: args.fanout]:
            producer.send(1, spec.Queue.Bind(queue=queue or "", exchange=exchange))
            producer.expect(spec.Queue.BindOk)
        generators.watch()
        head = encode_method_frame(1, spec.Basic.Publish(exchange, ""))
        interval, sent = 1 / args.rate, 0
        generator_processes = [Server(proc.pid) for proc in generators.procs if proc.pid is not None]

        def generator_cpu() -> float:  # the consumers' processes and this one, the producer
            return sum(process.cpu() for process in generator_processes) + time.process_time()

        cpu_before, generator_cpu_before = server.cpu(), generator_cpu()
        start = time.monotonic()
        total = int(args.rate * args.seconds)
        while sent < total:
            now = time.monotonic()
            due = int((now - start) / interval) + 1
            if due > sent:
                n = min(due, total) - sent
                producer.sock.sendall(b"".join(
                    head + encode_content(1, 60, Properties(), STAMP.pack(time.monotonic()) + PAD, 131072)
                    for _ in range(n)))
                sent += n
            for _ in producer.frames(block=False):
                pass
            time.sleep(max(0.0, start + sent * interval - time.monotonic()))
        elapsed = time.monotonic() - start
        busy = (server.cpu() - cpu_before) / elapsed
        generator_busy = (generator_cpu() - generator_cpu_before) / elapsed
        time.sleep(2)
        report = generators.report()
        histogram = report["histogram"]
        assert isinstance(histogram, Counter)
        result.update({
            "published": sent, "delivered": sum(histogram.values()), "expected": sent * args.fanout,
            "p50": percentile(histogram, 0.5), "p90": percentile(histogram, 0.9),
            "p99": percentile(histogram, 0.99), "p999": percentile(histogram, 0.999), "busy_cpu": busy,
            "generator_cpu": generator_busy,
            "up": report["up"], "close_reasons": dict(report["close_reasons"]),  # type: ignore[call-overload]
        })
        producer.close()
    finally:
        generators.stop()
    return result


def idle(host: str, port: int, server: Server, args: argparse.Namespace) -> dict[str, object]:
    time.sleep(1)
    rss_before = server.rss()
    started = time.monotonic()
    generators = Fleet(host, port, [None] * args.idle_connections, args.processes, args.heartbeat, 10)
    up, failures = generators.wait_ready()
    result: dict[str, object] = {"connect_s": time.monotonic() - started, "failures": dict(failures)}
    try:
        generators.watch()
        result["rss_per_conn"] = (server.rss() - rss_before) / max(1, len(up))
        result["idle_cpu"] = server.cpu_share(args.seconds)
        report = generators.report()
        result.update({"up": report["up"], "longest_silence": report["longest_silence"],
                       "close_reasons": dict(report["close_reasons"])})  # type: ignore[call-overload]
    finally:
        generators.stop()
    return result


def publish_confirmed(client: Client, frames: list[bytes], window: int = 500) -> float:
    """Publish every frame with confirms on; messages per second."""
    client.send(1, spec.Confirm.Select())
    client.expect(spec.Confirm.SelectOk)
    sent = confirmed = 0
    started = time.perf_counter()
    while confirmed < len(frames):
        if sent < len(frames) and sent - confirmed < window:
            batch = frames[sent:sent + min(50, window - (sent - confirmed))]
            client.sock.sendall(b"".join(batch))
            sent += len(batch)
        for kind, _, payload in client.frames(block=sent - confirmed >= window or sent == len(frames)):
            if kind == 1 and payload[:4] == b"\x00\x3c\x00\x50":
                tag, multiple = struct.unpack_from(">QB", payload, 4)
                confirmed = tag if multiple else max(confirmed, tag)
    return len(frames) / (time.perf_counter() - started)


def fanout(host: str, port: int, server: Server, args: argparse.Namespace) -> dict[str, object]:
    tag = uuid.uuid4().hex[:6]
    client = Client(host, port)
    exchange = f"scale-fan-{tag}"
    rss_before = server.rss()
    client.send(1, spec.Exchange.Declare(exchange=exchange, type="fanout"))
    client.expect(spec.Exchange.DeclareOk)
    queues = [f"scale-fan-{tag}-{i}" for i in range(args.fanout_queues)]
    for queue in queues:
        client.send(1, spec.Queue.Declare(queue=queue, arguments={"x-max-length": 1000}))
        client.send(1, spec.Queue.Bind(queue=queue, exchange=exchange))
    client.send(1, spec.Basic.Qos(0, 1, False))  # a synchronous marker: everything before it is done
    client.expect(spec.Basic.QosOk)
    one = encode_method_frame(1, spec.Basic.Publish(exchange, "")) + encode_content(1, 60, Properties(), PAD, 131072)
    rate = publish_confirmed(client, [one] * args.fanout_messages, window=100)
    rss = server.rss() - rss_before
    for queue in queues:
        client.send(1, spec.Queue.Delete(queue=queue, nowait=True))
    client.send(1, spec.Exchange.Delete(exchange=exchange))
    client.expect(spec.Exchange.DeleteOk)
    client.close()
    return {"msgs_per_s": rate, "deliveries_per_s": rate * args.fanout_queues, "rss_mb": rss / 2**20}


def topic_words(rng: random.Random, pattern: bool) -> str:
    words = []
    for _ in range(rng.randint(2, 4)):
        draw = rng.random()
        if pattern and draw < 0.15:
            words.append("*")
        elif pattern and draw < 0.20:
            words.append("#")
        else:
            words.append(f"w{rng.randrange(1000)}")
    if pattern and all(w in "*#" for w in words):
        words[0] = f"w{rng.randrange(1000)}"
    return ".".join(words)


def topic(host: str, port: int, server: Server, args: argparse.Namespace) -> dict[str, object]:
    tag = uuid.uuid4().hex[:6]
    rng = random.Random(7)
    client = Client(host, port)
    exchange = f"scale-topic-{tag}"
    rss_before = server.rss()
    client.send(1, spec.Exchange.Declare(exchange=exchange, type="topic"))
    client.expect(spec.Exchange.DeclareOk)
    queues = [f"scale-topic-{tag}-{i}" for i in range(100)]
    for queue in queues:
        client.send(1, spec.Queue.Declare(queue=queue, arguments={"x-max-length": 1000}))
    started = time.perf_counter()
    bindings = [encode_method_frame(1, spec.Queue.Bind(queue=rng.choice(queues), exchange=exchange,
                                                        routing_key=topic_words(rng, True), nowait=True))
                for _ in range(args.bindings)]
    for i in range(0, len(bindings), 1000):
        client.sock.sendall(b"".join(bindings[i:i + 1000]))
        client.send(1, spec.Basic.Qos(0, 1, False))
        client.expect(spec.Basic.QosOk)
    bind_seconds = time.perf_counter() - started
    rss = server.rss() - rss_before
    frames = [encode_method_frame(1, spec.Basic.Publish(exchange, topic_words(rng, False)))
              + encode_content(1, 60, Properties(), PAD, 131072) for _ in range(args.topic_messages)]
    rate = publish_confirmed(client, frames)
    for queue in queues:
        client.send(1, spec.Queue.Delete(queue=queue, nowait=True))
    client.send(1, spec.Exchange.Delete(exchange=exchange))
    client.expect(spec.Exchange.DeleteOk)
    client.close()
    return {"bind_s": bind_seconds, "rss_mb": rss / 2**20, "msgs_per_s": rate}


WORKLOADS = {"fleet": fleet, "idle": idle, "fanout": fanout, "topic": topic}


def show(workload: str, broker: str, result: dict[str, object]) -> None:
    def f(key: str, fmt: str) -> str:
        value = result.get(key)
        return format(value, fmt) if isinstance(value, int | float) else str(value)

    if workload == "fleet":
        print(f"  {broker:9} connect {f('connect_s', '.1f')} s, RSS/conn {f('rss_per_conn', ',.0f')} B,"
              f" idle CPU {f('idle_cpu', '.1%')}, busy CPU {f('busy_cpu', '.0%')}"
              f" (load generator {f('generator_cpu', '.0%')}); published {result.get('published')},"
              f" delivered {result.get('delivered')}/{result.get('expected')}, p50 {f('p50', '.2f')} ms,"
              f" p90 {f('p90', '.2f')} ms, p99 {f('p99', '.2f')} ms, p99.9 {f('p999', '.2f')} ms,"
              f" up {result.get('up')}")
    elif workload == "idle":
        print(f"  {broker:9} connect {f('connect_s', '.1f')} s, RSS/conn {f('rss_per_conn', ',.0f')} B,"
              f" idle CPU {f('idle_cpu', '.1%')}, up {result.get('up')},"
              f" longest server silence {f('longest_silence', '.1f')} s")
    elif workload == "fanout":
        print(f"  {broker:9} {f('msgs_per_s', ',.0f')} msgs/s = {f('deliveries_per_s', ',.0f')} enqueues/s,"
              f" RSS +{f('rss_mb', '.0f')} MiB")
    else:
        print(f"  {broker:9} bind {f('bind_s', '.1f')} s, RSS +{f('rss_mb', '.0f')} MiB,"
              f" {f('msgs_per_s', ',.0f')} msgs/s")
    for key in ("failures", "close_reasons"):
        if result.get(key):
            print(f"  {'':9} {key}: {result[key]}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workloads", default="fleet,idle,fanout,topic")
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--idle-connections", type=int, default=10_000)
    parser.add_argument("--processes", type=int, default=4, help="load-generator processes")
    parser.add_argument("--heartbeat", type=int, default=10)
    parser.add_argument("--rate", type=int, default=1000, help="fleet producer, msgs/s")
    parser.add_argument("--fanout", type=int, default=100, help="fleet queues the producer reaches")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--fanout-queues", type=int, default=1000)
    parser.add_argument("--fanout-messages", type=int, default=2000)
    parser.add_argument("--bindings", type=int, default=100_000)
    parser.add_argument("--topic-messages", type=int, default=20_000)
    parser.add_argument("--amqlite-only", action="store_true")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.connections, args.idle_connections, args.processes, args.fanout = 20, 40, 2, 5
        args.rate, args.seconds, args.idle_seconds, args.heartbeat = 200, 1.0, 0.5, 2
        args.fanout_queues, args.fanout_messages, args.bindings, args.topic_messages = 20, 100, 500, 200
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the amqlite child inherits it
    print(f"machine: {machine()}; descriptor limit {hard} (was {soft})")
    rabbitmq = None
    if not args.amqlite_only and rabbitmq_up():
        rabbitmq = rabbitmq_server()
        limits = Path(f"/proc/{rabbitmq.pid}/limits").read_text()
        print("RabbitMQ: " + " ".join(next(line for line in limits.splitlines()
                                            if line.startswith("Max open files")).split()))
    for workload in args.workloads.split(","):
        print(f"\n{workload}:", flush=True)
        # A fresh amqlite for each workload, so that memory freed by the last
        # one does not hide what this one costs.
        with tempfile.TemporaryDirectory(prefix="amqlite-scale-") as data_dir:
            process, port, _ = start_amqlite(data_dir)
            targets = [("amqlite", port, Server(process.pid))]
            if rabbitmq is not None:
                targets.append(("RabbitMQ", 5672, rabbitmq))
            try:
                for broker, port_, server in targets:
                    try:
                        result = WORKLOADS[workload]("127.0.0.1", port_, server, args)
                    except Exception as error:  # one broker failing a workload still lets the rest run
                        result = {"failures": [repr(error)]}
                    show(workload, broker, result)
                    sys.stdout.flush()
            finally:
                process.terminate()
                process.wait()

if __name__ == "__main__":
    main()
