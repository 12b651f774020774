"""amqlite throughput, delayed-message and memory benchmarks.

Run with ``make bench`` (full size, a few minutes) or
``.venv/bin/python benchmarks/bench_core.py --quick`` (small sizes, seconds).
``--profile`` runs the embedded direct workload under pyinstrument instead
and prints where the time goes.

Everything is printed as one table. Throughput rows are the median of
``--repeats`` runs (default 5) with min and max; each run builds a fresh
broker and times only the message loop, not the declares.

Workloads, all with 100-byte bodies:

* embedded: ``amqlite.open_broker()`` inside ``trio.run``; one producer task
  (``await ch.publish``) and one consumer task per queue (``async for d in
  consumer: d.ack()``) on separate channels, prefetch 500. The "batched"
  variant publishes with ``publish_nowait`` 100 at a time between
  checkpoints and drains the consumer with ``receive_nowait``.
* core: the same direct workload driven straight through ``amqlite.core``
  (publish, pop the consuming channel's outbox, ``delivered``, ``ack``),
  with no trio, to show what the trio layer costs.
* kombu ``memory://`` (SimpleQueue put/get/ack, and Producer/Consumer with
  ``drain_events``), and a bare ``trio.open_memory_channel`` hand-off.
* delayed: 1M messages to an ``x-delayed-message`` exchange with random
  ``x-delay``; released by advancing the core's clock with ``Broker.tick``.
* memory: bytes per queued message at 1M ready messages, each in a child
  process (tracemalloc, and RSS delta as a cross-check).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

import trio

import amqlite
from amqlite.core.broker import Broker as CoreBroker
from amqlite.core.message import Properties

BODY = b"x" * 100
PREFETCH = 500
BATCH = 100
TOPIC_KEY = "rk.alpha.beta.gamma"
TOPIC_MATCH = "rk.*.beta.#"
HEADERS = {"format": "pdf", "type": "report", "region": "eu", "level": 3}


#: The timer for every timed region: wall clock by default; --cpu-time
#: switches to this process's CPU time, which other load on a shared machine
#: disturbs much less (every workload here is CPU-bound and single-threaded).
clock_: Callable[[], float] = time.perf_counter


class Sizes:
    def __init__(self, quick: bool) -> None:
        self.messages = 3_000 if quick else 100_000  # per embedded/core run
        self.fanout_messages = 1_000 if quick else 40_000  # publishes; x4 deliveries
        self.kombu_messages = 1_000 if quick else 30_000
        self.topic_bindings = 1_000 if quick else 10_000
        self.header_bindings = 8
        self.delayed = 10_000 if quick else 1_000_000
        self.delayed_ticks = 100 if quick else 3_600
        self.pending_probe = 3_000 if quick else 100_000
        self.memory = 10_000 if quick else 1_000_000


# --------------------------------------------------------------------------
# Embedded (trio) workloads
# --------------------------------------------------------------------------


async def _consume_all(consumer: amqlite.Consumer, n: int, counts: list[int]) -> None:
    got = 0
    async for delivery in consumer:
        delivery.ack()
        got += 1
        if got == n:
            break
    counts.append(got)


async def _consume_batched(consumer: amqlite.Consumer, n: int, counts: list[int]) -> None:
    got = 0
    while got < n:
        delivery = await consumer.__anext__()
        delivery.ack()
        got += 1
        while got < n:
            try:
                delivery = consumer.receive_nowait()
            except trio.WouldBlock:
                break
            delivery.ack()
            got += 1
    counts.append(got)


async def _produce(channel: amqlite.Channel, n: int, exchange: str, key: str, props: Properties) -> None:
    publish = channel.publish
    for _ in range(n):
        await publish(BODY, exchange=exchange, routing_key=key, properties=props)


async def _produce_batched(channel: amqlite.Channel, n: int, exchange: str, key: str, props: Properties) -> None:
    publish = channel.publish_nowait
    checkpoint = trio.lowlevel.checkpoint
    sent = 0
    while sent < n:
        for _ in range(min(BATCH, n - sent)):
            publish(BODY, exchange=exchange, routing_key=key, properties=props)
        sent += BATCH
        await checkpoint()


async def _setup(kind: str, sizes: Sizes, broker: amqlite.Broker) -> tuple[str, str, list[str], Properties]:
    """Declare the topology; returns (exchange, routing key, consumed queues, properties)."""
    ch = await broker.channel()
    props = amqlite.Properties()
    if kind == "direct":
        await ch.queue_declare("q")
        return "", "q", ["q"], props
    if kind == "fanout":
        await ch.exchange_declare("fan", "fanout")
        queues = [f"fq{i}" for i in range(4)]
        for q in queues:
            await ch.queue_declare(q)
            await ch.queue_bind(q, "fan")
        return "fan", "", queues, props
    if kind == "topic":
        await ch.exchange_declare("top", "topic")
        await ch.queue_declare("tq")
        await ch.queue_declare("sink")
        rng = random.Random(42)
        for pattern in _random_topic_patterns(rng, sizes.topic_bindings):
            await ch.queue_bind("sink", "top", pattern)
        await ch.queue_bind("tq", "top", TOPIC_MATCH)
        return "top", TOPIC_KEY, ["tq"], props
    if kind == "headers":
        await ch.exchange_declare("hdr", "headers")
        await ch.queue_declare("hq")
        await ch.queue_declare("sink")
        for args in _header_bindings(sizes.header_bindings - 1):
            await ch.queue_bind("sink", "hdr", "", args)
        await ch.queue_bind("hq", "hdr", "", {"x-match": "all", "format": "pdf", "type": "report"})
        return "hdr", "", ["hq"], amqlite.Properties(headers=dict(HEADERS))
    raise ValueError(kind)


def _random_topic_patterns(rng: random.Random, count: int) -> list[str]:
    """Random patterns over words w0..w999 with some '*' and '#'; each has
    at least one literal word, and no routing-key word is in the vocabulary,
    so none of them matches TOPIC_KEY."""
    patterns = set()
    while len(patterns) < count:
        words = []
        for _ in range(rng.randint(2, 5)):
            r = rng.random()
            words.append("*" if r < 0.15 else "#" if r < 0.2 else f"w{rng.randrange(1000)}")
        if all(w in ("*", "#") for w in words):
            continue
        patterns.add(".".join(words))
    return sorted(patterns)


def _header_bindings(count: int) -> list[dict[str, Any]]:
    """x-match all bindings that share some keys with HEADERS but never match."""
    out = []
    for i in range(count):
        args: dict[str, Any] = {"x-match": "all", "format": "pdf" if i % 2 else "csv", "type": f"t{i}"}
        if i % 3 == 0:
            args["region"] = "us"
        out.append(args)
    return out


def embedded_run(kind: str, sizes: Sizes, batched: bool = False) -> tuple[float, int]:
    """One timed run; returns (seconds, deliveries)."""
    n = sizes.fanout_messages if kind == "fanout" else sizes.messages
    result: list[Any] = []

    async def main() -> None:
        async with amqlite.open_broker() as broker:
            exchange, key, queues, props = await _setup(kind, sizes, broker)
            producer_ch = await broker.channel()
            consumers = []
            for q in queues:
                consumer_ch = await broker.channel()
                consumers.append(await consumer_ch.consume(q, prefetch=PREFETCH))
            counts: list[int] = []
            gc.collect()
            start = clock_()
            async with trio.open_nursery() as nursery:
                for consumer in consumers:
                    nursery.start_soon(_consume_batched if batched else _consume_all, consumer, n, counts)
                nursery.start_soon(_produce_batched if batched else _produce, producer_ch, n, exchange, key, props)
            result.append(clock_() - start)
            assert counts == [n] * len(queues), (kind, counts)

    trio.run(main)
    return result[0], n


# --------------------------------------------------------------------------
# Pure core, no trio
# --------------------------------------------------------------------------


def core_direct(broker: CoreBroker, n: int, clock: Callable[[], float] = time.monotonic,
                arguments: dict[str, Any] | None = None, groups: int = 0) -> float:
    """Publish to the default exchange, deliver to one consumer with prefetch,
    ack; one message at a time, as a driver would. Returns seconds. With
    ``groups``, each message carries header ``order`` with one of that
    many values, in turn."""
    conn = broker.connect()
    producer = conn.open_channel()
    consumer = conn.open_channel()
    producer.declare_queue("q-core", now=clock(), arguments=arguments)
    properties = [Properties(headers={"order": f"order-{g}"}) for g in range(groups)] or [Properties()]
    consumer.qos(PREFETCH, now=clock())
    consumer.consume("q-core", now=clock())
    publish, outbox, delivered, ack = producer.publish, consumer.outbox, consumer.delivered, consumer.ack
    popleft = outbox.popleft
    got = 0
    gc.collect()
    start = clock_()
    for i in range(n):
        publish(BODY, now=clock(), routing_key="q-core", properties=properties[i % len(properties)])
        while outbox:
            event = popleft()
            now = clock()
            delivered(1, now=now)
            ack(event.delivery_tag, now=now)
            got += 1
    seconds = clock_() - start
    assert got == n
    conn.close(now=clock())
    return seconds


def core_direct_run(sizes: Sizes) -> tuple[float, int]:
    return core_direct(CoreBroker(), sizes.messages), sizes.messages


#: Distinct values of the group header in the --groups runs.
GROUPS = 100


def groups_cost(sizes: Sizes, repeats: int) -> None:
    """The hot-path cost of message groups: the core direct workload on a
    queue with ``x-message-group-header: order`` and on one without, the
    same messages (header ``order``, GROUPS values in turn) in both,
    alternating runs in one process; medians and their ratio."""
    runs: dict[str, list[float]] = {"without": [], "with": []}
    for _ in range(repeats):
        for kind, arguments in (("without", None), ("with", {"x-message-group-header": "order"})):
            runs[kind].append(sizes.messages / core_direct(CoreBroker(), sizes.messages, arguments=arguments,
                                                           groups=GROUPS))
    print(*machine(), sep="\n")
    print(f"core direct publish -> deliver -> ack, {sizes.messages:,} msgs/run, {repeats} runs each, alternating;"
          f" header order with {GROUPS} values; load average {os.getloadavg()[0]:.2f}")
    for kind, rates_ in runs.items():
        print(f"{kind} x-message-group-header: median {statistics.median(rates_):,.0f} msgs/s"
              f" (min {min(rates_):,.0f}, max {max(rates_):,.0f})")
    print(f"ratio with / without: {statistics.median(runs['with']) / statistics.median(runs['without']):.2f}x")


# --------------------------------------------------------------------------
# Comparisons: kombu memory transport, bare trio memory channel
# --------------------------------------------------------------------------

_kombu_names = iter(range(1, 1 << 30))


def kombu_simple_run(sizes: Sizes) -> tuple[float, int]:
    import kombu

    n = sizes.kombu_messages
    with kombu.Connection("memory://") as conn:
        queue = conn.SimpleQueue(f"bench-simple-{next(_kombu_names)}")
        put, get = queue.put, queue.get
        gc.collect()
        start = clock_()
        for _ in range(n):
            put(BODY)
            get(block=False).ack()
        seconds = clock_() - start
        queue.close()
    return seconds, n


def kombu_consumer_run(sizes: Sizes) -> tuple[float, int]:
    import kombu

    n = sizes.kombu_messages
    name = f"bench-pc-{next(_kombu_names)}"
    with kombu.Connection("memory://") as conn:
        producer_ch, consumer_ch = conn.channel(), conn.channel()
        queue = kombu.Queue(name, kombu.Exchange("", type="direct"), routing_key=name)
        queue(producer_ch).declare()
        producer = kombu.Producer(producer_ch)
        got = [0]

        def on_message(body: bytes, message: Any) -> None:
            message.ack()
            got[0] += 1

        consumer = kombu.Consumer(consumer_ch, [queue], callbacks=[on_message], accept=None)
        consumer.qos(prefetch_count=PREFETCH)
        consumer.consume()
        publish, drain = producer.publish, conn.drain_events
        gc.collect()
        start = clock_()
        for i in range(1, n + 1):
            publish(BODY, exchange="", routing_key=name)
            while got[0] < i:
                try:
                    drain(timeout=0)
                except socket.timeout:
                    pass
        seconds = clock_() - start
        consumer.cancel()
    return seconds, n


def trio_channel_run(sizes: Sizes) -> tuple[float, int]:
    n = sizes.messages
    result: list[float] = []

    async def main() -> None:
        send, receive = trio.open_memory_channel[bytes](PREFETCH)

        async def produce() -> None:
            async with send:
                for _ in range(n):
                    await send.send(BODY)

        async def consume() -> None:
            got = 0
            async with receive:
                async for _ in receive:
                    got += 1
            assert got == n

        gc.collect()
        start = clock_()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            nursery.start_soon(produce)
        result.append(clock_() - start)

    trio.run(main)
    return result[0], n


# --------------------------------------------------------------------------
# Delayed messages
# --------------------------------------------------------------------------


def delayed_run(sizes: Sizes, rng: random.Random) -> dict[str, float]:
    """Schedule and release ``sizes.delayed`` delayed messages on the core,
    timing an ordinary direct batch before scheduling and while they pend."""
    n = sizes.delayed
    max_delay_ms = 3_600_000  # up to an hour
    # Per-message properties are built outside the timed loop: the figure is
    # the broker's, not the cost of building a headers dict.
    props = [Properties(headers={"x-delay": rng.randint(1, max_delay_ms)}) for _ in range(n)]
    broker = CoreBroker()
    t0 = 1_000_000.0
    fake_now = [t0]

    def clock() -> float:
        return fake_now[0]

    conn = broker.connect()
    ch = conn.open_channel()
    ch.declare_exchange("delayed", "x-delayed-message", arguments={"x-delayed-type": "direct"})
    queue = ch.declare_queue("dq", now=t0)
    ch.bind_queue("dq", "delayed", "dq")
    out: dict[str, float] = {}

    out["baseline"] = sizes.pending_probe / core_direct(broker, sizes.pending_probe, clock)

    publish = ch.publish
    gc.collect()
    start = clock_()
    for p in props:
        publish(BODY, now=t0, exchange="delayed", routing_key="dq", properties=p)
    out["schedule"] = n / (clock_() - start)
    del props
    exchange = broker.vhosts["/"].exchanges["delayed"]
    assert exchange.pending_count == n and queue.message_count == 0

    out["pending"] = sizes.pending_probe / core_direct(broker, sizes.pending_probe, clock)
    assert exchange.pending_count == n

    step = max_delay_ms / 1000 / sizes.delayed_ticks
    gc.collect()
    start = clock_()
    for i in range(1, sizes.delayed_ticks + 1):
        fake_now[0] = t0 + i * step
        broker.tick(fake_now[0])
    out["release"] = n / (clock_() - start)
    assert exchange.pending_count == 0 and queue.message_count == n, (exchange.pending_count, queue.message_count)
    return out


# --------------------------------------------------------------------------
# Memory per queued message (in a child process)
# --------------------------------------------------------------------------


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_child(method: str, n: int) -> None:
    """Queue ``n`` distinct 100-byte messages in one queue with no consumer
    and print the bytes per message as JSON."""
    import tracemalloc

    broker = CoreBroker()
    conn = broker.connect()
    ch = conn.open_channel()
    queue = ch.declare_queue("mem", now=0.0)
    base = b"m" * 92
    publish = ch.publish
    gc.collect()
    if method == "tracemalloc":
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
    else:
        before = _rss_bytes()
    for i in range(n):
        # A fresh bytes object per message, as bodies read off a socket are.
        publish(base + i.to_bytes(8, "little"), now=0.0, routing_key="mem")
    gc.collect()
    after = tracemalloc.get_traced_memory()[0] if method == "tracemalloc" else _rss_bytes()
    assert queue.message_count == n
    print(json.dumps({"per_message": (after - before) / n}))


def memory_measure(method: str, n: int) -> float:
    proc = subprocess.run(
        [sys.executable, __file__, "--memory-child", method, str(n)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])["per_message"]


# --------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------


def machine() -> list[str]:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    try:
        import kombu

        kombu_version = kombu.__version__
    except ImportError:
        kombu_version = "not installed"
    return [
        f"amqlite at {_git_revision()}",
        f"machine: CPU {model}; {os.cpu_count()} cores ({usable} usable); {platform.machine()}",
        f"python {platform.python_version()} ({platform.python_implementation()}); trio {trio.__version__}; "
        f"kombu {kombu_version}; amqlite {amqlite.__version__}",
    ]


def _git_revision() -> str:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(
            ["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", root, "status", "--porcelain", "--untracked-files=no", "--", "amqlite"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown revision"
    return f"git {head}" + (" with uncommitted changes under amqlite/" if dirty else "")


class Table:
    HEADER = f"{'benchmark':<52} {'median':>12} {'min':>12} {'max':>12}  unit"

    def __init__(self) -> None:
        self.rows: list[str] = []
        self.medians: dict[str, float] = {}

    def section(self, title: str) -> None:
        self.rows.append(f"-- {title}")

    def add(self, name: str, values: list[float], unit: str, key: str | None = None) -> float:
        med = statistics.median(values)
        lo, hi = min(values), max(values)
        if len(values) == 1:
            self.rows.append(f"{name:<52} {_fmt(med):>12} {'':>12} {'':>12}  {unit}")
        else:
            self.rows.append(f"{name:<52} {_fmt(med):>12} {_fmt(lo):>12} {_fmt(hi):>12}  {unit}")
        if key:
            self.medians[key] = med
        return med

    def ratio(self, name: str, value: float) -> None:
        self.rows.append(f"{name:<52} {value:>11.2f}x {'':>12} {'':>12}  ratio of medians")

    def print(self, header_lines: list[str]) -> None:
        rule = "=" * len(self.HEADER)
        for line in header_lines:
            print(line)
        print(rule)
        print(self.HEADER)
        print(rule)
        for row in self.rows:
            print(row)
        print(rule)


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.2f}"


def rates(run: Callable[[], tuple[float, int]], repeats: int, per: int = 1) -> list[float]:
    """Run ``repeats`` times; msgs/s (times ``per`` deliveries per publish)."""
    out = []
    for _ in range(repeats):
        seconds, n = run()
        out.append(n * per / seconds)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a CI smoke run")
    parser.add_argument("--repeats", type=int, default=5, help="runs per throughput figure (default 5)")
    parser.add_argument("--profile", action="store_true", help="profile the embedded direct workload with pyinstrument")
    parser.add_argument("--memory-child", nargs=2, metavar=("METHOD", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--cpu-time", action="store_true", help="time with process CPU time instead of wall clock")
    parser.add_argument("--groups", action="store_true",
                        help="only the cost of x-message-group-header: core direct with and without it")
    args = parser.parse_args()
    global clock_
    if args.cpu_time:
        clock_ = time.process_time

    if args.memory_child:
        memory_child(args.memory_child[0], int(args.memory_child[1]))
        return
    sizes = Sizes(args.quick)
    if args.profile:
        profile(sizes)
        return
    if args.groups:
        groups_cost(sizes, max(1, args.repeats))
        return

    repeats = max(1, args.repeats)
    load_before = os.getloadavg()[0]
    header = [
        "amqlite benchmark: bench_core.py" + (" --quick" if args.quick else ""),
        *machine(),
        f"{repeats} runs per throughput figure; 100-byte bodies; prefetch {PREFETCH}; "
        f"{sizes.messages:,} msgs/run ({sizes.fanout_messages:,} fanout publishes, {sizes.kombu_messages:,} kombu)",
        f"timer: {'process CPU time (--cpu-time)' if args.cpu_time else 'wall clock (perf_counter)'}",
    ]
    table = Table()
    started = time.perf_counter()

    table.section("publish -> route -> deliver -> ack, in process")
    table.add("embedded direct (await publish / async for)", rates(lambda: embedded_run("direct", sizes), repeats), "msgs/s", "direct")
    table.add("embedded direct, batched (publish_nowait x100)", rates(lambda: embedded_run("direct", sizes, batched=True), repeats), "msgs/s", "direct_batched")
    fanout = rates(lambda: embedded_run("fanout", sizes), repeats)
    table.add("embedded fanout to 4 queues (publishes)", fanout, "msgs/s", "fanout")
    table.add("embedded fanout to 4 queues (deliveries)", [r * 4 for r in fanout], "deliveries/s")
    table.add(f"embedded topic, {sizes.topic_bindings:,} bindings, 1 matching", rates(lambda: embedded_run("topic", sizes), repeats), "msgs/s", "topic")
    table.add(f"embedded headers x-match all, {sizes.header_bindings} bindings", rates(lambda: embedded_run("headers", sizes), repeats), "msgs/s", "headers")
    table.add("core direct, no trio (pure core driver loop)", rates(lambda: core_direct_run(sizes), repeats), "msgs/s", "core")

    table.section("comparison, same direct workload")
    table.add("kombu memory:// SimpleQueue put/get/ack", rates(lambda: kombu_simple_run(sizes), repeats), "msgs/s", "kombu_simple")
    table.add("kombu memory:// Producer/Consumer + drain_events", rates(lambda: kombu_consumer_run(sizes), repeats), "msgs/s", "kombu_consumer")
    table.add("bare trio memory channel send/receive", rates(lambda: trio_channel_run(sizes), repeats), "msgs/s", "trio_channel")
    m = table.medians
    kombu_best = max(m["kombu_simple"], m["kombu_consumer"])
    table.ratio("ratio embedded direct / kombu (faster variant)", m["direct"] / kombu_best)
    table.ratio("ratio embedded direct batched / kombu", m["direct_batched"] / kombu_best)
    table.ratio("ratio core direct / kombu", m["core"] / kombu_best)
    table.ratio("ratio embedded direct / core direct (trio layer)", m["direct"] / m["core"])
    table.ratio("ratio embedded direct / bare trio channel", m["direct"] / m["trio_channel"])

    table.section(f"delayed messages (x-delayed-message, random x-delay 1 ms..1 h), {sizes.delayed:,} per run, core")
    rng = random.Random(7)
    delayed = [delayed_run(sizes, rng) for _ in range(repeats)]
    gc.collect()
    table.add(f"schedule {sizes.delayed:,} delayed messages", [d["schedule"] for d in delayed], "msgs/s")
    table.add(f"release via Broker.tick ({sizes.delayed_ticks:,} ticks)", [d["release"] for d in delayed], "msgs/s")
    table.add("core direct, nothing pending", [d["baseline"] for d in delayed], "msgs/s", "pend_base")
    table.add(f"core direct, {sizes.delayed:,} delayed pending", [d["pending"] for d in delayed], "msgs/s", "pend_full")
    table.ratio("ratio direct with pending / without", m["pend_full"] / m["pend_base"])

    table.section(f"memory per queued 100-byte message, {sizes.memory:,} ready in one queue (child process)")
    traced = memory_measure("tracemalloc", sizes.memory)
    rss = memory_measure("rss", sizes.memory)
    table.add("tracemalloc: bytes per message", [traced], "B")
    table.add("tracemalloc: overhead per message (minus 100 B body)", [traced - 100], "B (goal < 300)")
    table.add("RSS delta: bytes per message", [rss], "B")
    table.add("RSS delta: overhead per message (minus 100 B body)", [rss - 100], "B")

    load_after = os.getloadavg()[0]
    cores = os.cpu_count() or 1
    header.append(f"load average (1 min): {load_before:.2f} at start, {load_after:.2f} at end, on {cores} cores")
    if max(load_before, load_after) > cores - 0.5 and not args.cpu_time:
        header.append("WARNING: other processes compete for the CPU; wall-clock figures are noisy (try --cpu-time)")
    table.print(header)
    print(f"total time {time.perf_counter() - started:.1f} s")


def profile(sizes: Sizes) -> None:
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0002)
    profiler.start()
    seconds, n = embedded_run("direct", sizes)
    profiler.stop()
    print(f"embedded direct under the profiler: {n / seconds:,.0f} msgs/s (profiler overhead included)")
    print(profiler.output_text(unicode=False, color=False, show_all=False))


if __name__ == "__main__":
    main()
