"""AMQP throughput and latency, amqlite against RabbitMQ, in one run.

The load generator must not be the bottleneck (aio-pika manages ~5k msgs/s
here), so it works like RabbitMQ's PerfTest: frames are encoded once up
front and written in large batches over a raw socket, and only what must be
parsed on the way back (acks, delivery tags) is parsed.

Workload, 100-byte messages, one connection each:
  1. publish N messages with publisher confirms, window of W unconfirmed;
  2. consume them with manual ack (one ack per message) at prefetch 200;
  3. latency: publish at a steady 1,000 msgs/s while a consumer acks,
     p50/p99 of publish-to-deliver time.

With --tx, transactions instead (durable queues, persistent messages), C
connections at once, each with queues of its own:
  1. publish: tx.commit after every B publishes;
  2. consume-transform-produce: per B deliveries, B publishes to a second
     queue, one ack (multiple) and tx.commit.
Each reports transactions committed per second, all connections together.

Usage: python benchmarks/bench_amqp.py [--messages N] [--runs R] [--quick]
       [--amqlite-only] [--durable] [--poll-management SECONDS]
       [--tx [--tx-size B] [--tx-clients C]]
amqlite is started as a subprocess (`amqlite serve --port 0`), so it does not
share a GIL with the generator. RabbitMQ is expected at 127.0.0.1:5672.
"""

from __future__ import annotations

import argparse
import base64
import os
import platform
import select
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from amqlite.amqp import spec  # noqa: E402
from amqlite.amqp.frames import PROTOCOL_HEADER, encode_content, encode_method_frame  # noqa: E402
from amqlite.core.message import Properties  # noqa: E402

HEAD = struct.Struct(">BHI")
BODY = b"x" * 100


class Client:
    """A minimal AMQP client over a raw socket: handshake, then bytes."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.sock.sendall(PROTOCOL_HEADER)
        self.expect(spec.Connection.Start)
        self.send(0, spec.Connection.StartOk({"product": "bench"}, "PLAIN", b"\x00guest\x00guest", "en_US"))
        tune = self.expect(spec.Connection.Tune)
        self.send(0, spec.Connection.TuneOk(tune.channel_max, tune.frame_max, 0))
        self.send(0, spec.Connection.Open("/"))
        self.expect(spec.Connection.OpenOk)
        self.send(1, spec.Channel.Open())
        self.expect(spec.Channel.OpenOk)

    def send(self, channel: int, method: spec.Method) -> None:
        self.sock.sendall(encode_method_frame(channel, method))

    def frames(self, block: bool = True):  # type: ignore[no-untyped-def]
        """Read what is available and yield (type, channel, payload) frames."""
        if block or select.select([self.sock], [], [], 0)[0]:
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("server closed the connection")
            self.buf += data
        buf = self.buf
        pos = 0
        while len(buf) - pos >= 7:
            kind, channel, size = HEAD.unpack_from(buf, pos)
            if len(buf) - pos < size + 8:
                break
            yield kind, channel, bytes(buf[pos + 7 : pos + 7 + size])
            pos += size + 8
        del buf[:pos]

    def expect(self, cls: type[spec.Method]) -> spec.Method:
        while True:
            for kind, _, payload in self.frames():
                if kind == 1:
                    method = spec.decode_method(payload)
                    if isinstance(method, spec.Connection.Close | spec.Channel.Close):
                        raise RuntimeError(f"broker closed: {method}")
                    if isinstance(method, cls):
                        return method

    def close(self) -> None:
        self.sock.close()


def publish_confirmed(host: str, port: int, queue: str, count: int, window: int, durable: bool,
                      arguments: dict[str, object] | None = None) -> float:
    client = Client(host, port)
    client.send(1, spec.Queue.Declare(queue=queue, durable=durable, arguments=arguments or {}))
    client.expect(spec.Queue.DeclareOk)
    client.send(1, spec.Confirm.Select())
    client.expect(spec.Confirm.SelectOk)
    props = Properties(delivery_mode=2 if durable else 1)
    one = encode_method_frame(1, spec.Basic.Publish("", queue)) + encode_content(1, 60, props, BODY, 131072)
    batch = 100
    chunk = one * batch
    sent = confirmed = 0
    started = time.perf_counter()
    while confirmed < count:
        while sent < count and sent - confirmed < window:
            n = min(batch, count - sent)
            client.sock.sendall(chunk if n == batch else one * n)
            sent += n
        for kind, _, payload in client.frames():
            if kind == 1 and payload[:4] == b"\x00\x3c\x00\x50":  # basic.ack
                tag, multiple = struct.unpack_from(">QB", payload, 4)
                confirmed = tag if multiple else max(confirmed, tag)
            elif kind == 1 and payload[:4] == b"\x00\x3c\x00\x78":  # basic.nack
                raise RuntimeError("publish nacked")
    elapsed = time.perf_counter() - started
    client.close()
    return count / elapsed


def consume_acked(host: str, port: int, queue: str, count: int, prefetch: int,
                  arguments: dict[str, object] | None = None) -> float:
    client = Client(host, port)
    client.send(1, spec.Basic.Qos(0, prefetch, False))
    client.expect(spec.Basic.QosOk)
    started = time.perf_counter()
    client.send(1, spec.Basic.Consume(queue=queue, consumer_tag="bench", arguments=arguments or {}))
    received = 0
    ack = struct.Struct(">BHI4sQBB")
    while received < count:
        acks = []
        for kind, _, payload in client.frames():
            if kind == 1 and payload[:4] == b"\x00\x3c\x00\x3c":  # basic.deliver
                n = payload[4]
                tag = struct.unpack_from(">Q", payload, 5 + n)[0]
                acks.append(ack.pack(1, 1, 13, b"\x00\x3c\x00\x50", tag, 0, 0xCE))
                received += 1
        if acks:
            client.sock.sendall(b"".join(acks))
    elapsed = time.perf_counter() - started
    client.close()
    return count / elapsed


def latency(host: str, port: int, queue: str, rate: int, seconds: float) -> tuple[float, float]:
    consumer = Client(host, port)
    consumer.send(1, spec.Queue.Declare(queue=queue, auto_delete=True))
    consumer.expect(spec.Queue.DeclareOk)
    consumer.send(1, spec.Basic.Qos(0, 200, False))
    consumer.expect(spec.Basic.QosOk)
    consumer.send(1, spec.Basic.Consume(queue=queue, consumer_tag="lat"))
    consumer.expect(spec.Basic.ConsumeOk)
    publisher = Client(host, port)
    head = encode_method_frame(1, spec.Basic.Publish("", queue))
    samples: list[float] = []
    total = int(rate * seconds)
    interval = 1 / rate
    start = time.perf_counter()
    sent = 0
    pending_body = False
    while len(samples) < total:
        now = time.perf_counter()
        if sent < total and now >= start + sent * interval:
            body = struct.pack(">d", now) + BODY[8:]
            publisher.sock.sendall(head + encode_content(1, 60, Properties(), body, 131072))
            sent += 1
        acks = []
        for kind, _, payload in consumer.frames(block=False):
            if kind == 1 and payload[:4] == b"\x00\x3c\x00\x3c":
                n = payload[4]
                tag = struct.unpack_from(">Q", payload, 5 + n)[0]
                acks.append(encode_method_frame(1, spec.Basic.Ack(tag, False)))
                pending_body = True
            elif kind == 3 and pending_body:
                samples.append(time.perf_counter() - struct.unpack_from(">d", payload)[0])
                pending_body = False
        if acks:
            consumer.sock.sendall(b"".join(acks))
        wait = start + sent * interval - time.perf_counter()
        select.select([consumer.sock], [], [], max(0.0, min(wait, 0.001)))
    consumer.close()
    publisher.close()
    samples.sort()
    return samples[len(samples) // 2] * 1000, samples[int(len(samples) * 0.99)] * 1000


COMMIT_OK = b"\x00\x5a\x00\x15"  # tx.commit-ok: class 90, method 21
DELIVER = b"\x00\x3c\x00\x3c"


def tx_channel(host: str, port: int, queues: list[str]) -> Client:
    client = Client(host, port)
    for queue in queues:
        client.send(1, spec.Queue.Declare(queue=queue, durable=True))
        client.expect(spec.Queue.DeclareOk)
    client.send(1, spec.Tx.Select())
    client.expect(spec.Tx.SelectOk)
    return client


def persistent_publish(queue: str) -> bytes:
    return (encode_method_frame(1, spec.Basic.Publish("", queue))
            + encode_content(1, 60, Properties(delivery_mode=2), BODY, 131072))


def tx_publish(host: str, port: int, queue: str, count: int, size: int) -> int:
    """Publish ``count`` messages in transactions of ``size``; returns the commits."""
    client = tx_channel(host, port, [queue])
    one = persistent_publish(queue) * size + encode_method_frame(1, spec.Tx.Commit())
    for _ in range(count // size):
        client.sock.sendall(one)
        client.expect(spec.Tx.CommitOk)
    client.close()
    return count // size


def tx_transform(host: str, port: int, source: str, target: str, count: int, size: int) -> int:
    """Consume ``count`` messages of ``source``; per ``size`` of them, publish
    as many to ``target``, ack them (multiple) and commit. Returns the commits."""
    client = tx_channel(host, port, [source, target])
    client.send(1, spec.Basic.Qos(0, 2 * size, False))
    client.expect(spec.Basic.QosOk)
    client.send(1, spec.Basic.Consume(queue=source, consumer_tag="bench"))
    publishes = persistent_publish(target) * size
    commit = encode_method_frame(1, spec.Tx.Commit())
    tags: list[int] = []
    done = commits = 0
    committing = False
    while done < count:
        for kind, _, payload in client.frames():
            if kind != 1:
                continue
            if payload[:4] == DELIVER:
                tags.append(struct.unpack_from(">Q", payload, 5 + payload[4])[0])
            elif payload[:4] == COMMIT_OK:
                committing = False
        if not committing and len(tags) >= size:
            ack = encode_method_frame(1, spec.Basic.Ack(tags[size - 1], True))
            client.sock.sendall(publishes + ack + commit)
            del tags[:size]
            done += size
            commits += 1
            committing = True
    client.expect(spec.Tx.CommitOk)
    client.close()
    return commits


def together(clients: int, work: Callable[[int], int]) -> float:
    """Run ``work(client number)`` on ``clients`` connections at once; the
    sum of what they return per second of wall time."""
    results = [0] * clients

    def one(i: int) -> None:
        results[i] = work(i)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(results) / (time.perf_counter() - started)


def run_tx(label: str, host: str, port: int, args: argparse.Namespace, pid: int | None = None) -> dict[str, Any]:
    """Transactions committed per second: publishing, and consume-transform-produce.
    ``pid``: the server's, to report its CPU per commit (amqlite's)."""
    publish, transform = [], []
    cpu = {"publish": 0.0, "transform": 0.0}
    share = args.messages // args.tx_clients

    def timed(phase: str, work: Callable[[int], int]) -> float:
        before = sum(thread_cpu(pid)) if pid else 0.0
        rate = together(args.tx_clients, work)
        if pid:
            cpu[phase] += sum(thread_cpu(pid)) - before
        return rate

    for _ in range(args.runs):
        run_id = uuid.uuid4().hex[:8]
        names = [f"tx-{run_id}-{i}" for i in range(args.tx_clients)]
        publish.append(timed("publish", lambda i: tx_publish(host, port, names[i], share, args.tx_size)))
        transform.append(timed("transform", lambda i: tx_transform(host, port, names[i], names[i] + "-out",
                                                                    share, args.tx_size)))
        cleanup = Client(host, port)
        for name in names:
            for queue in (name, name + "-out"):
                cleanup.send(1, spec.Queue.Delete(queue=queue))
                cleanup.expect(spec.Queue.DeleteOk)
        cleanup.close()
    commits = args.runs * args.tx_clients * (share // args.tx_size)
    return {"broker": label, "publish": publish, "transform": transform,
            "cpu": {phase: 1e6 * seconds / commits for phase, seconds in cpu.items()} if pid else None}


def report_tx(results: list[dict[str, Any]]) -> None:
    print(f"{'broker':10} {'tx publish commits/s':>26} {'tx consume-transform-produce commits/s':>40}")
    for r in results:
        pub, tra = r["publish"], r["transform"]
        print(f"{r['broker']:10} {statistics.median(pub):>14,.0f} ({min(pub):,.0f}-{max(pub):,.0f})"
              f" {statistics.median(tra):>26,.0f} ({min(tra):,.0f}-{max(tra):,.0f})")
    cpu = results[0]["cpu"]
    if cpu:
        print(f"amqlite server CPU per commit (all threads): publish {cpu['publish']:.0f} us,"
              f" consume-transform-produce {cpu['transform']:.0f} us")
    if len(results) == 2:
        a, b = results
        print(f"ratio amqlite/RabbitMQ: tx publish "
              f"{statistics.median(a['publish']) / statistics.median(b['publish']):.2f},"
              f" tx consume-transform-produce "
              f"{statistics.median(a['transform']) / statistics.median(b['transform']):.2f}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_amqlite(data_dir: str, *, kafka_port: int = 0,
                  timeout: float = 20.0) -> tuple[subprocess.Popen[bytes], int, int]:
    """amqlite with its management API and metrics on (their default), on
    free ports: 15672 may be RabbitMQ's, 9092 another broker's; its Kafka
    listener on ``kafka_port`` (0: off); given ``timeout`` seconds to open
    its ports. Returns (process, AMQP port, API port)."""
    port, management, prometheus = free_port(), free_port(), free_port()
    log = tempfile.NamedTemporaryFile(prefix="amqlite-bench-", suffix=".log", delete=False)
    process = subprocess.Popen(
        [sys.executable, "-m", "amqlite.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--kafka-port", str(kafka_port), "--data-dir", data_dir, "--management-port", str(management),
         "--prometheus-port", str(prometheus)],
        stderr=log,
        env={**os.environ, "AMQLITE_LOG_LEVEL": "warning"},
    )
    log.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            for listening in (port, kafka_port) if kafka_port else (port,):
                socket.create_connection(("127.0.0.1", listening), timeout=0.2).close()
            return process, port, management
        except OSError:
            time.sleep(0.05)
    process.kill()
    with open(log.name, errors="replace") as said:
        raise RuntimeError(f"amqlite did not start (its output in {log.name}): {said.read()[-2000:]}")


class Poller:
    """What an open dashboard costs the broker: the overview and the queue
    list fetched every ``interval`` seconds, in a thread of the benchmark."""

    def __init__(self, api_port: int, interval: float) -> None:
        self.url, self.interval = f"http://127.0.0.1:{api_port}", interval
        self.auth = "Basic " + base64.b64encode(b"guest:guest").decode()
        self.polls = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            for path in ("/api/overview", "/api/queues"):
                request = urllib.request.Request(self.url + path, headers={"Authorization": self.auth})
                with urllib.request.urlopen(request, timeout=10) as response:
                    response.read()
            self.polls += 1

    def __enter__(self) -> Poller:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join()


def rabbitmq_up() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=0.5).close()
        return True
    except OSError:
        return False


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def thread_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds so far of a process's main thread (amqlite's trio
    thread) and of its other threads (the store's workers), from /proc."""
    main = other = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # a worker thread that just ended
        seconds = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        if task.name == str(pid):
            main += seconds
        else:
            other += seconds
    return main, other


def run(label: str, host: str, port: int, args: argparse.Namespace, pid: int | None = None) -> dict[str, object]:
    """``pid``: the server's, to report where its CPU went (amqlite's)."""
    pubs, cons = [], []
    cpu = {"publish": [0.0, 0.0, 0.0], "consume": [0.0, 0.0, 0.0]}  # trio thread, workers, seconds

    def timed(phase: str, work: Callable[[], float]) -> float:
        before, started = thread_cpu(pid) if pid else (0.0, 0.0), time.perf_counter()
        rate = work()
        if pid:
            after, totals = thread_cpu(pid), cpu[phase]
            totals[0] += after[0] - before[0]
            totals[1] += after[1] - before[1]
            totals[2] += time.perf_counter() - started
        return rate

    for _ in range(args.runs):
        queue = f"bench-{uuid.uuid4().hex[:8]}"
        pubs.append(timed("publish", lambda: publish_confirmed(host, port, queue, args.messages, args.window,
                                                                args.durable)))
        cons.append(timed("consume", lambda: consume_acked(host, port, queue, args.messages, 200)))
        cleanup = Client(host, port)
        cleanup.send(1, spec.Queue.Delete(queue=queue))
        cleanup.expect(spec.Queue.DeleteOk)
        cleanup.close()
    p50, p99 = latency(host, port, f"lat-{uuid.uuid4().hex[:8]}", 1000, args.latency_seconds)
    return {"broker": label, "publish": pubs, "consume": cons, "p50": p50, "p99": p99, "cpu": cpu if pid else None}


def polled(args: argparse.Namespace, api_port: int, work: Callable[[], dict[str, object]]) -> dict[str, object]:
    if not args.poll_management:
        return work()
    with Poller(api_port, args.poll_management) as poller:
        result = work()
    print(f"{result['broker']}: management API polled {poller.polls} times during the runs")
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--window", type=int, default=2000, help="unconfirmed publishes in flight")
    parser.add_argument("--latency-seconds", type=float, default=5.0)
    parser.add_argument("--durable", action="store_true", help="durable queue, persistent messages")
    parser.add_argument("--amqlite-only", action="store_true")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke run")
    parser.add_argument("--poll-management", type=float, default=0.0, metavar="SECONDS",
                        help="fetch /api/overview and /api/queues this often during the runs, as an open "
                             "dashboard does (RabbitMQ's on 15672 too)")
    parser.add_argument("--tx", action="store_true", help="transactions: tx.commit rates (see above)")
    parser.add_argument("--tx-size", type=int, default=10, help="messages per transaction")
    parser.add_argument("--tx-clients", type=int, default=4, help="connections committing at once")
    args = parser.parse_args()
    if args.quick:
        args.messages, args.runs, args.latency_seconds = 2000, 1, 0.5
    print(f"machine: {machine()}")
    if args.tx:
        main_tx(args)
        return
    print(f"workload: {args.messages} x 100 B, {args.runs} runs, confirm window {args.window}, prefetch 200,"
          f" {'durable/persistent' if args.durable else 'transient'}"
          + (f", management API polled every {args.poll_management:g} s" if args.poll_management else ""))
    results = []
    with tempfile.TemporaryDirectory(prefix="amqlite-bench-") as data_dir:
        process, port, api_port = start_amqlite(data_dir)
        try:
            results.append(polled(args, api_port, lambda: run("amqlite", "127.0.0.1", port, args, process.pid)))
        finally:
            process.terminate()
            process.wait()
    if not args.amqlite_only and rabbitmq_up():
        results.append(polled(args, 15672, lambda: run("RabbitMQ", "127.0.0.1", 5672, args)))
    print()
    print(f"{'broker':10} {'publish+confirm msgs/s':>24} {'consume+ack msgs/s':>20} {'p50 ms':>8} {'p99 ms':>8}")
    for r in results:
        pub, con = r["publish"], r["consume"]
        print(f"{r['broker']:10} {statistics.median(pub):>14,.0f} ({min(pub):,.0f}-{max(pub):,.0f})"
              f" {statistics.median(con):>10,.0f} ({min(con):,.0f}-{max(con):,.0f})"
              f" {r['p50']:>8.2f} {r['p99']:>8.2f}")
    cpu = results[0]["cpu"]
    if isinstance(cpu, dict):
        total = args.messages * args.runs
        print("amqlite server CPU per message: " + ", ".join(
            f"{phase} {1e6 * (main + workers) / total:.1f} us (trio thread busy {100 * main / seconds:.0f}%,"
            f" worker threads {100 * workers / seconds:.0f}% of the time)"
            for phase, (main, workers, seconds) in cpu.items()))
    if len(results) == 2:
        a, b = results
        print(f"ratio amqlite/RabbitMQ: publish {statistics.median(a['publish']) / statistics.median(b['publish']):.2f},"
              f" consume {statistics.median(a['consume']) / statistics.median(b['consume']):.2f}")


def main_tx(args: argparse.Namespace) -> None:
    print(f"workload: transactions of {args.tx_size} x 100 B persistent to durable queues, {args.messages} messages"
          f" per run over {args.tx_clients} connections, {args.runs} runs")
    results = []
    with tempfile.TemporaryDirectory(prefix="amqlite-bench-") as data_dir:
        process, port, _ = start_amqlite(data_dir)
        try:
            results.append(run_tx("amqlite", "127.0.0.1", port, args, process.pid))
        finally:
            process.terminate()
            process.wait()
    if not args.amqlite_only and rabbitmq_up():
        results.append(run_tx("RabbitMQ", "127.0.0.1", 5672, args))
    print()
    report_tx(results)


if __name__ == "__main__":
    main()
