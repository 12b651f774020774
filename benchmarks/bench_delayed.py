"""Millions of durable delayed messages: memory, start-up, and how late due
messages fire while they are held.

1. fill: N persistent 100-byte messages into a durable x-delayed-message
   exchange, delays uniformly random from 1 minute to 30 days, through the
   pure core and the disk journal directly (no network), paging out after
   each write as the server's store driver does; the writer ends with
   kill -9 after its last fsync. RSS of the process holding them.
2. serve: `amqlite serve` on that data directory: start-up time (recovery,
   until the port opens) and RSS; then, through a raw-socket client, R
   messages a second for S seconds with a 1 s delay, and how late each
   reaches a consumer after its due time (p50, p99, max), while the N are
   held; RSS at the end.
   Between the two, in the writer with the N held: scheduled-message
   operations (docs/concepts.md) on ids picked at random, each followed by
   the write and fsync of their records: cancel, then reschedule (to a
   random new due time), fire now, cancel by message_id (one held message
   in NAMED_EVERY has one), OPERATIONS of each (or N / 10); and the time
   to list a page of 100 due in a random hour.
3. held (--held N): memory per held message on a running `amqlite serve`
   fed over AMQP: N persistent 100-byte messages published with confirms
   to a durable x-delayed-message exchange, once all with x-delay of one
   hour (the common "retry in an hour"), once with delays spread from 1
   minute to 30 days, each on a fresh data directory. Once the last is
   confirmed, the server's RSS is read every second until it has not
   moved for HELD_SETTLE seconds; RSS per held message is its growth from
   just before the first publish, divided by N. Then the server is killed
   (kill -9) with the N held and started again on its data directory:
   start-up is the time until a client's handshake completes, and the
   RSS of the restarted server is read then.

Usage: python benchmarks/bench_delayed.py [--messages N] [--rate R] [--seconds S] [--held N]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_amqp import Client, free_port, machine, start_amqlite  # noqa: E402
from bench_paging import rss_mb  # noqa: E402
from bench_store import child, rss_bytes  # noqa: E402

from amqlite.amqp import spec  # noqa: E402
from amqlite.amqp.frames import encode_content, encode_method_frame  # noqa: E402
from amqlite.core.broker import Broker  # noqa: E402
from amqlite.core.message import Properties  # noqa: E402
from amqlite.store.journal import DiskJournal  # noqa: E402

EXCHANGE, QUEUE = "later", "due"
DELAYED = {"x-delayed-type": "direct"}
BODY = b"x" * 100
#: Cancels, reschedules, fire-nows and cancels by message_id the fill phase times.
OPERATIONS = 100_000
#: Every this many held messages has a message_id (order-N), so that
#: cancels by message_id can be timed.
NAMED_EVERY = 10


def declare(channel: object) -> None:
    channel.declare_exchange(EXCHANGE, "x-delayed-message", durable=True, arguments=DELAYED)  # type: ignore[attr-defined]
    channel.declare_queue(QUEUE, durable=True, now=time.time())  # type: ignore[attr-defined]
    channel.bind_queue(QUEUE, EXCHANGE, "k")  # type: ignore[attr-defined]


def fill(directory: Path, count: int) -> dict[str, float]:
    before = rss_bytes()
    broker = Broker()
    journal = DiskJournal(directory)
    journal.recover(broker, now=time.time())
    channel = broker.connect().open_channel()
    declare(channel)
    rng = random.Random(1)
    started = time.perf_counter()
    batch = 10_000
    for start in range(0, count, batch):
        now = time.time()
        for n in range(start, min(count, start + batch)):
            delay = rng.randint(60_000, 30 * 86_400_000)
            channel.publish(BODY, exchange=EXCHANGE, routing_key="k", now=now, properties=Properties(
                delivery_mode=2, message_id=f"order-{n}" if n % NAMED_EVERY == 0 else None,
                headers={"x-delay": delay}))
        pending, position = journal.take_batch()
        journal.log.write_and_sync(pending)
        journal.commit(position)  # pages out what this write brought to disk
        for segment in journal.unindexed_segments():  # the store driver's index task
            journal.index_segment(segment)
            journal.indexed(segment)
    write_rate = count / (time.perf_counter() - started)
    rss_delta = rss_bytes() - before
    exchange = broker.vhosts["/"].exchanges[EXCHANGE]
    held = exchange.held
    paged = held.paged
    operations = min(OPERATIONS, count // 10)
    # Held ids, at random (found by bisection from a random point: ids are
    # journal message ids, 1 to count here).
    picked = {page[0][0] for _ in range(4 * operations) if (page := held.scheduled(rng.randint(0, count - 1), 1))}
    chosen = list(picked)[: 3 * operations]
    rng.shuffle(chosen)
    names = [f"order-{n}" for n in rng.sample(range(0, count, NAMED_EVERY), min(operations, count // NAMED_EVERY))]
    rates = {}
    for name, ids in (("cancel", chosen[:operations]), ("reschedule", chosen[operations: 2 * operations]),
                      ("fire now", chosen[2 * operations:]), ("cancel by message_id", names)):
        now = time.time()
        started = time.perf_counter()
        for msg_id in ids:
            if name == "cancel":
                exchange.cancel_scheduled(msg_id)
            elif name == "reschedule":
                exchange.reschedule(msg_id, now + rng.randint(60_000, 30 * 86_400_000) / 1000)
            elif name == "fire now":
                exchange.reschedule(msg_id, now)
            else:
                for found in exchange.find_scheduled(msg_id):
                    exchange.cancel_scheduled(found)
        pending, position = journal.take_batch()
        journal.log.write_and_sync(pending)
        journal.commit(position)
        rates[name] = len(ids) / (time.perf_counter() - started)
        if name == "reschedule":
            held_after = len(held)  # the cancels' count, before the cancels by message_id
    # A page of 100 due in a random hour, in due order (the index by due
    # time; the first page of an hour restored at start-up indexes it).
    listings = []
    for _ in range(20):
        due_from = time.time() + rng.randint(60, 30 * 86_400)
        started = time.perf_counter()
        held.scheduled_by_due(due_from, due_from + 3600, None, 100)
        listings.append(time.perf_counter() - started)
    return {"write_rate": write_rate, "rss_delta": rss_delta, "held": count, "paged": paged,
            "bytes_on_disk": sum(p.stat().st_size for p in (directory / "log").iterdir()),
            "operations": operations, "cancel_rate": rates["cancel"], "reschedule_rate": rates["reschedule"],
            "fire_rate": rates["fire now"], "cancel_by_name_rate": rates["cancel by message_id"],
            "due_page_ms": sorted(listings)[len(listings) // 2] * 1000,
            "held_after": held_after}


def serve(directory: Path, rate: int, seconds: float) -> dict[str, float]:
    port = free_port()
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "amqlite.cli", "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir",
         str(directory), "--management-port", "0", "--prometheus-port", "0", "--kafka-port", "0"],
        stderr=subprocess.DEVNULL, env={**os.environ, "AMQLITE_LOG_LEVEL": "warning"})
    try:
        while True:
            try:
                consumer = Client("127.0.0.1", port)
                break
            except OSError:
                if process.poll() is not None or time.perf_counter() - started > 600:
                    raise RuntimeError("amqlite did not start") from None
                time.sleep(0.05)
        startup = time.perf_counter() - started
        cpu_started = cpu_seconds(process.pid)
        rss_started = rss_mb(process.pid)
        lateness = late_by(consumer, Client("127.0.0.1", port), rate, seconds)
        rss_end = rss_mb(process.pid)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait()
    lateness.sort()
    return {"startup": startup, "cpu_started": cpu_started, "rss_started": rss_started, "rss_end": rss_end, "p50": lateness[len(lateness) // 2],
            "p99": lateness[int(len(lateness) * 0.99)], "max": lateness[-1], "samples": len(lateness)}


def cpu_seconds(pid: int) -> float:
    """CPU time a process has used so far (user and system, all threads):
    on a shared machine, start-up's wall clock says more about the load."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def late_by(consumer: Client, publisher: Client, rate: int, seconds: float) -> list[float]:
    """Publish ``rate`` messages a second with x-delay 1000 for ``seconds``;
    how late after its due time each reaches the consumer, in ms."""
    consumer.send(1, spec.Queue.Declare(queue="lateness", auto_delete=True))
    consumer.expect(spec.Queue.DeclareOk)
    consumer.send(1, spec.Queue.Bind(queue="lateness", exchange=EXCHANGE, routing_key="lateness"))
    consumer.expect(spec.Queue.BindOk)
    consumer.send(1, spec.Basic.Qos(0, 500, False))
    consumer.expect(spec.Basic.QosOk)
    consumer.send(1, spec.Basic.Consume(queue="lateness", consumer_tag="late", no_ack=True))
    consumer.expect(spec.Basic.ConsumeOk)
    head = encode_method_frame(1, spec.Basic.Publish(EXCHANGE, "lateness"))
    properties = Properties(headers={"x-delay": 1000})
    total, interval = int(rate * seconds), 1 / rate
    samples: list[float] = []
    start = time.time()
    sent = 0
    deliver = False
    while len(samples) < total:
        now = time.time()
        if sent < total and now >= start + sent * interval:
            publisher.sock.sendall(head + encode_content(1, 60, properties, struct.pack(">d", now) + BODY, 131072))
            sent += 1
        for kind, _, payload in consumer.frames(block=False):
            if kind == 1 and payload[:4] == b"\x00\x3c\x00\x3c":
                deliver = True
            elif kind == 3 and deliver:
                sent_at = struct.unpack_from(">d", payload)[0]
                samples.append((time.time() - (sent_at + 1.0)) * 1000)
                deliver = False
        select.select([consumer.sock], [], [], 0.0005)
        if time.time() > start + seconds + 30:
            raise RuntimeError(f"only {len(samples)} of {total} delayed messages arrived")
    return samples


#: Seconds the server's RSS must stay put (within 1 MiB) before it is read as
#: settled (--settle): the store driver trims freed memory at most every 10 s.
HELD_SETTLE = 15.0
HOUR_MS = 3_600_000


def held_memory(count: int, spread: bool, settle: float) -> dict[str, float]:
    """RSS per held message of ``count`` published over AMQP (see the docstring)."""
    with tempfile.TemporaryDirectory(prefix="amqlite-held-bench-") as tmp:
        process, port, _ = start_amqlite(tmp)
        try:
            client = Client("127.0.0.1", port)
            client.send(1, spec.Exchange.Declare(exchange=EXCHANGE, type="x-delayed-message", durable=True,
                                                 arguments=DELAYED))
            client.expect(spec.Exchange.DeclareOk)
            client.send(1, spec.Queue.Declare(queue=QUEUE, durable=True))
            client.expect(spec.Queue.DeclareOk)
            client.send(1, spec.Queue.Bind(queue=QUEUE, exchange=EXCHANGE, routing_key="k"))
            client.expect(spec.Queue.BindOk)
            client.send(1, spec.Confirm.Select())
            client.expect(spec.Confirm.SelectOk)
            time.sleep(2)
            before = rss_mb(process.pid)
            started = time.perf_counter()
            publish_delayed(client, count, spread)
            rate = count / (time.perf_counter() - started)
            peak = settled = rss_mb(process.pid)
            still_since = time.monotonic()
            while time.monotonic() - still_since < settle:
                time.sleep(1)
                now = rss_mb(process.pid)
                peak = max(peak, now)
                if abs(now - settled) > 1:
                    settled, still_since = now, time.monotonic()
            client.close()
            process.kill()  # kill -9 with the N held
            process.wait()
            started = time.perf_counter()
            process, port, _ = start_amqlite(tmp, timeout=600)  # a loaded machine: minutes
            Client("127.0.0.1", port).close()
            startup = time.perf_counter() - started
            cpu = cpu_seconds(process.pid)
            restarted = rss_mb(process.pid)
        finally:
            process.send_signal(signal.SIGINT)
            process.wait()
    return {"rate": rate, "before": before, "peak": peak, "settled": settled,
            "per_message": (settled - before) * 2**20 / count, "startup": startup, "cpu": cpu, "restarted": restarted}


def publish_delayed(client: Client, count: int, spread: bool) -> None:
    """Persistent messages with confirms, 2,000 at most unconfirmed."""
    head = encode_method_frame(1, spec.Basic.Publish(EXCHANGE, "k"))
    rng = random.Random(1)
    shared = head + encode_content(1, 60, Properties(delivery_mode=2, headers={"x-delay": HOUR_MS}), BODY, 131072)
    sent = confirmed = 0
    while confirmed < count:
        if sent < count and sent - confirmed < 2000:
            n = min(100, count - sent, 2000 - (sent - confirmed))
            if spread:
                frames = b"".join(head + encode_content(
                    1, 60, Properties(delivery_mode=2, headers={"x-delay": rng.randint(60_000, 30 * 86_400_000)}),
                    BODY, 131072) for _ in range(n))
            else:
                frames = shared * n
            client.sock.sendall(frames)
            sent += n
        for kind, _, payload in client.frames(block=sent - confirmed >= 2000 or sent == count):
            if kind == 1 and payload[:4] == b"\x00\x3c\x00\x50":  # basic.ack
                tag, multiple = struct.unpack_from(">QB", payload, 4)
                confirmed = tag if multiple else max(confirmed, tag)
            elif kind == 1 and payload[:4] == b"\x00\x3c\x00\x78":  # basic.nack
                raise RuntimeError("publish nacked")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=10_000_000)
    parser.add_argument("--rate", type=int, default=200, help="delayed messages a second during the lateness run")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--held", type=int, metavar="N",
                        help="only the memory per held message over AMQP, with N messages per distribution")
    parser.add_argument("--settle", type=float, default=HELD_SETTLE, help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke run")
    parser.add_argument("--phase", nargs=2, metavar=("PHASE", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.messages, args.rate, args.seconds = 20_000, 100, 2.0
    if args.phase:
        phase, directory = args.phase
        if phase == "fill":
            print(json.dumps(fill(Path(directory), args.messages)), flush=True)
            os.kill(os.getpid(), signal.SIGKILL)  # a crash right after the last fsync
        print(json.dumps(serve(Path(directory), args.rate, args.seconds)))
        return
    if args.held:
        print(f"machine: {machine()}")
        for spread in (False, True):
            held = held_memory(args.held, spread, args.settle)
            print(f"held over AMQP: {args.held:,} x 100 B persistent, x-delay "
                  f"{'1 min to 30 days' if spread else 'all 1 hour'}: published {held['rate']:,.0f} msgs/s; RSS"
                  f" {held['before']:,.0f} MiB before, peak {held['peak']:,.0f}, settled {held['settled']:,.0f}:"
                  f" {held['per_message']:,.0f} B per held message; after kill -9, serving again in"
                  f" {held['startup']:.2f} s (server CPU {held['cpu']:.2f} s) with RSS {held['restarted']:,.0f} MiB")
        return
    n = args.messages
    with tempfile.TemporaryDirectory(prefix="amqlite-delayed-bench-") as tmp:
        common = ["--messages", str(n), "--rate", str(args.rate), "--seconds", str(args.seconds)]
        written = child(*common, "--phase", "fill", tmp, script=__file__)
        served = child(*common, "--phase", "serve", tmp, script=__file__)
    mib = 2**20
    print(f"machine: {machine()}")
    print(f"durable delayed messages held: {n:,} x 100 B persistent, delays 1 min to 30 days")
    print(f"held through core + journal: {written['write_rate']:,.0f} msgs/s; {written['bytes_on_disk'] / n:.0f} B"
          f" on disk each; RSS {written['rss_delta'] / mib:,.0f} MiB ({written['paged']:,} of"
          f" {written['held']:,} on disk only)")
    print(f"with {n:,} held: {written['operations']:,} cancels {written['cancel_rate']:,.0f}/s, then"
          f" {written['operations']:,} reschedules {written['reschedule_rate']:,.0f}/s (ids at random, records"
          f" written and synced; {written['held_after']:,} held after); {written['operations']:,} fire-nows"
          f" {written['fire_rate']:,.0f}/s; cancels by message_id {written['cancel_by_name_rate']:,.0f}/s (one held"
          f" in {NAMED_EVERY} has one); a page of 100 due in a random hour {written['due_page_ms']:,.0f} ms (median)")
    print(f"amqlite serve after kill -9: start-up {served['startup']:.1f} s (server CPU {served['cpu_started']:.2f} s),"
          f" RSS {served['rss_started']:,.0f} MiB")
    print(f"{args.rate}/s delayed by 1 s for {args.seconds:g} s while they are held: late by p50"
          f" {served['p50']:.2f} ms, p99 {served['p99']:.2f} ms, max {served['max']:.2f} ms"
          f" ({served['samples']:,} messages); RSS then {served['rss_end']:,.0f} MiB")


if __name__ == "__main__":
    main()
