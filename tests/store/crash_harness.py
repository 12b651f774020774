"""Crash harness: kill -9 the broker under load, restart it, check the queue.

Each round starts ``python -m amqlite.cli serve --port 0 --data-dir D`` on
one data directory (small segments, so compaction runs all the time), runs
publisher processes (pika, publisher confirms, persistent messages with
unique ids, each confirmed id appended to a file as its confirm arrives) and
a consumer process (acks most deliveries at once and holds some back for a
while, each acked id appended to a file once the ack was handed to the
socket; ``d*`` publishers go through a durable delayed exchange) and an
admin process that keeps declaring and deleting durable exchanges, queues
and bindings, then sends SIGKILL to the server at a random moment: under load,
just after a compaction, or shortly after a restart (during recovery).
After every restart it browses the queue and checks:

- no confirmed message is lost: each is in the queue or was acked (or
  its ack was being sent as the server died: in doubt, counted apart);
- no message is in the queue twice;
- each publisher's messages are in the queue in publication order (not
  checked for delayed ones: they are released by due time);
- definitions made in the first round, and never touched since, are there
  and route, while the definitions around them churn.

Acks are at-least-once: an ack not yet synced when the server dies brings
its message back. Those are counted (``acked_returned``), not failures.

    python tests/store/crash_harness.py --rounds 50     # or: make crash
    AMQLITE_CRASH_ROUNDS=200 make crash

The suite runs a short slice (tests/store/test_crash.py).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import attrs

QUEUE = "crash"
#: Delayed publishers go through a durable x-delayed-message exchange to this
#: queue; release order follows due times, so only loss and duplicates count.
DELAYED_QUEUE = "crash-delayed"
DELAYED_EXCHANGE = "crash.delay"
MAX_DELAY_MS = 300
#: Definitions made once and never touched: they must survive every crash,
#: while other definitions churn around them (so snapshots get rewritten).
PROBE_QUEUE = "crash-probe"
FIXED = (("crash.fixed.topic", "topic", "probe.#", None),
         ("crash.fixed.headers", "headers", "", {"x-match": "all", "probe": "yes", "n": 7}))
#: Small segments: segments fill, roll over and get deleted within a round.
SEGMENT_SIZE = 16 * 1024
#: A stream with retention: it truncates itself within a round. Its
#: publisher sends transient messages: a stream confirms them once on disk.
STREAM = "crash-stream"
STREAM_ARGUMENTS = {"x-queue-type": "stream", "x-max-length-bytes": 64 * 1024,
                    "x-stream-max-segment-size-bytes": 8 * 1024}
#: Publisher names: "p*" publish straight to QUEUE (order checked), "d*"
#: through the delayed exchange, "s*" to the stream.
PUBLISHERS = ("p0", "p1", "d0", "s0")
ROOT = Path(__file__).resolve().parents[2]


# -- the client processes ------------------------------------------------------


def _connect(port: int) -> Any:
    import pika

    return pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", port, heartbeat=0, blocked_connection_timeout=None, connection_attempts=1))


def declare(ch: Any) -> None:
    ch.queue_declare(QUEUE, durable=True)
    ch.queue_declare(DELAYED_QUEUE, durable=True)
    ch.exchange_declare(DELAYED_EXCHANGE, "x-delayed-message", durable=True,
                        arguments={"x-delayed-type": "direct"})
    ch.queue_bind(DELAYED_QUEUE, DELAYED_EXCHANGE, "d")
    ch.queue_declare(STREAM, durable=True, arguments=STREAM_ARGUMENTS)


def publisher(port: int, name: str, first: int, confirmed_file: str, body_size: int) -> None:
    """Publish persistent messages ``name:first``, ``name:first+1``, ...
    until the connection dies; record each confirmed id. Publishers named
    ``d*`` publish through the delayed exchange, with delays up to
    MAX_DELAY_MS."""
    import pika
    import pika.exceptions

    delayed = name.startswith("d")
    rng = random.Random(first)
    try:
        ch = _connect(port).channel()
        declare(ch)
        ch.confirm_delivery()
    except Exception:
        return
    padding = b"." * body_size
    with open(confirmed_file, "a") as out:
        n = first
        while True:
            ident = f"{name}:{n}"
            try:
                if name.startswith("s"):
                    ch.basic_publish("", STREAM, ident.encode() + b" " + padding,
                                     pika.BasicProperties(message_id=ident))
                elif delayed:
                    ch.basic_publish(DELAYED_EXCHANGE, "d", ident.encode() + b" " + padding, pika.BasicProperties(
                        delivery_mode=2, message_id=ident, headers={"x-delay": rng.randint(0, MAX_DELAY_MS)}))
                else:
                    ch.basic_publish("", QUEUE, ident.encode() + b" " + padding,
                                     pika.BasicProperties(delivery_mode=2, message_id=ident))
            except pika.exceptions.NackError:
                pass  # refused: not confirmed, may not be anywhere
            except Exception:
                return  # the server went away
            else:
                out.write(ident + "\n")
                out.flush()
            n += 1


def consumer(port: int, acked_file: str, seed: int) -> None:
    """Consume; ack most deliveries at once, hold others back a while
    (they are delivered-but-unacked when the server dies)."""
    rng = random.Random(seed)
    try:
        connection = _connect(port)
        ch = connection.channel()
        declare(ch)
        ch.basic_qos(prefetch_count=40)
    except Exception:
        return
    held: list[tuple[int, str]] = []
    out = open(acked_file, "a")
    # An ack that raises (the server died) may still have reached the server
    # before it died: recorded as being sent first, as acked once sent.
    sending = open(acked_file + ".sending", "a")

    def ack(tag: int, ident: str) -> None:
        sending.write(ident + "\n")
        sending.flush()
        ch.basic_ack(tag)
        out.write(ident + "\n")
        out.flush()

    def on_message(channel: Any, method: Any, properties: Any, body: bytes) -> None:
        ident = properties.message_id
        if rng.random() < 0.6:
            ack(method.delivery_tag, ident)
        else:
            held.append((method.delivery_tag, ident))
            if len(held) > 15:
                ack(*held.pop(0))

    try:
        ch.basic_consume(QUEUE, on_message)
        ch.basic_consume(DELAYED_QUEUE, on_message)
        while True:
            connection.process_data_events(time_limit=0.05)
            if rng.random() < 0.02:
                time.sleep(rng.random() * 0.2)  # a slow consumer now and then
    except Exception:
        return
    finally:
        out.close()


def admin(port: int, seed: int) -> None:
    """Declare, bind, unbind and delete durable exchanges and queues at
    random until the connection dies: definition records in every segment."""
    rng = random.Random(seed)
    try:
        ch = _connect(port).channel()
        while True:
            i = rng.randrange(20)
            action = rng.random()
            if action < 0.4:
                ch.exchange_declare(f"churn.x{i}", rng.choice(["direct", "fanout", "topic"]), durable=True)
                ch.queue_declare(f"churn.q{i % 5}", durable=True, arguments={"x-max-priority": 3})
                ch.queue_bind(f"churn.q{i % 5}", f"churn.x{i}", f"k{rng.randrange(3)}")
            elif action < 0.6:
                ch.exchange_delete(f"churn.x{i}")
            elif action < 0.7:
                ch.queue_delete(f"churn.q{i % 5}")
            else:
                ch.queue_unbind(f"churn.q{i % 5}", f"churn.x{i}", f"k{rng.randrange(3)}")
            time.sleep(rng.random() * 0.01)
    except Exception:
        return


# -- the harness ---------------------------------------------------------------------


@attrs.define
class Results:
    rounds: int = 0
    kills: int = 0
    recovery_kills: int = 0
    compaction_kills: int = 0
    confirmed: int = 0
    acked: int = 0
    lost: int = 0
    duplicates: int = 0
    order_violations: int = 0
    #: Acked ids found back in the queue (the ack had not reached the disk).
    acked_returned: int = 0
    #: Gone though never recorded as acked: the consumer's ack was being sent
    #: when the server died (at most one per kill), so it may have arrived.
    acks_in_doubt: int = 0
    #: Published but never confirmed, yet present after a restart (allowed).
    unconfirmed_present: int = 0
    torn_tails: int = 0
    compactions: int = 0
    server_errors: int = 0
    problems: list[str] = attrs.field(factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicates or self.order_violations or self.server_errors or self.problems)

    def summary(self) -> str:
        ratio = f"{self.acked_returned / self.acked:.3%}" if self.acked else "n/a"
        return (
            f"rounds={self.rounds} kills={self.kills} (during recovery {self.recovery_kills}, "
            f"right after a compaction {self.compaction_kills}) confirmed={self.confirmed} "
            f"acked={self.acked} lost={self.lost} duplicates={self.duplicates} "
            f"order_violations={self.order_violations} acked_returned={self.acked_returned} ({ratio} of acks) "
            f"acks_in_doubt={self.acks_in_doubt} "
            f"unconfirmed_present={self.unconfirmed_present} torn_tails={self.torn_tails} "
            f"compactions={self.compactions} server_errors={self.server_errors}"
        )


class Harness:
    def __init__(self, workdir: Path, *, seed: int, segment_size: int = SEGMENT_SIZE, body_size: int = 200,
                 verbose: bool = False) -> None:
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.rng = random.Random(seed)
        self.seed = seed
        self.segment_size = segment_size
        self.body_size = body_size
        self.verbose = verbose
        self.results = Results()
        self.server: subprocess.Popen[bytes] | None = None
        self.server_log: Path | None = None
        self.port = 0
        self.starts = 0
        self.confirmed_files = [workdir / f"confirmed-{name}.txt" for name in PUBLISHERS]
        self.acked_file = workdir / "acked.txt"
        self.returned: set[str] = set()  # acked ids seen back, counted once
        self.lost: set[str] = set()
        self.duplicates: set[str] = set()
        self.in_doubt: set[str] = set()
        #: How long the last start-up took (recovery included): kills meant to land in one aim within it.
        self.startup_seconds = 0.0

    def say(self, text: str) -> None:
        if self.verbose:
            print(text, flush=True)

    # -- the server --------------------------------------------------------

    def spawn(self) -> None:
        self.starts += 1
        self.server_log = self.workdir / f"server-{self.starts:04d}.log"
        env = dict(os.environ, AMQLITE_SEGMENT_SIZE=str(self.segment_size), AMQLITE_LOG_FORMAT="json",
                   AMQLITE_HOST="127.0.0.1", PYTHONPATH=str(ROOT))
        with open(self.server_log, "wb") as log:
            self.server = subprocess.Popen(
                # No HTTP: RabbitMQ's management and Prometheus ports may be taken.
                [sys.executable, "-m", "amqlite.cli", "serve", "--port", "0", "--management-port", "0",
                 "--prometheus-port", "0", "--kafka-port", "0", "--data-dir", str(self.data_dir)],
                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)

    def wait_listening(self, timeout: float = 30.0) -> None:
        """Until the server accepts connections (recovery done)."""
        assert self.server is not None and self.server_log is not None
        started = time.monotonic()
        deadline = started + timeout
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise RuntimeError(f"server exited with {self.server.returncode}; see {self.server_log}")
            for event in self._events(self.server_log):
                if event.get("event") == "broker.listening":
                    # The port opens after recovery, so start-up covers all of it.
                    self.port = int(event["port"])
                    self.startup_seconds = time.monotonic() - started
                    return
            time.sleep(0.01)
        raise RuntimeError(f"server did not start in {timeout} s; see {self.server_log}")

    def kill(self) -> None:
        assert self.server is not None
        self.server.send_signal(signal.SIGKILL)
        self.server.wait()
        self.server = None
        self.results.kills += 1
        self._read_log()

    @staticmethod
    def _events(path: Path) -> list[dict[str, Any]]:
        events = []
        for line in path.read_text(errors="replace").splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                events.append({"event": "unparsed", "line": line})
        return events

    def _read_log(self) -> None:
        assert self.server_log is not None
        for event in self._events(self.server_log):
            name = event.get("event")
            if name == "store.corrupt_tail" or name == "store.corrupt_segment":
                self.results.torn_tails += 1
            elif name == "store.compacted":
                self.results.compactions += 1
            if event.get("level") in ("error", "critical") or name == "unparsed" or "exception" in event:
                if name not in ("connection.closed",):
                    self.results.server_errors += 1
                    self.results.problems.append(f"{self.server_log.name}: {event}")

    def compactions_so_far(self) -> int:
        assert self.server_log is not None
        return sum(1 for e in self._events(self.server_log) if e.get("event") == "store.compacted")

    # -- the checks ------------------------------------------------------------

    def browse(self) -> list[tuple[str, bool]]:
        """Every message in the queues, in order: (id, redelivered). They are
        taken unacked and requeued (to their places) when the channel closes."""
        connection = _connect(self.port)
        ch = connection.channel()
        declare(ch)
        found = []
        for queue in (QUEUE, DELAYED_QUEUE):
            while True:
                method, properties, _ = ch.basic_get(queue)
                if method is None:
                    break
                found.append((properties.message_id, method.redelivered))
        connection.close()
        return found

    def read_stream(self) -> list[tuple[int, str]]:
        """(offset, id) of everything the stream retains, read from its first offset."""
        connection = _connect(self.port)
        ch = connection.channel()
        declare(ch)
        count = ch.queue_declare(STREAM, passive=True, durable=True,
                                 arguments=STREAM_ARGUMENTS).method.message_count
        ch.basic_qos(prefetch_count=500)
        found: list[tuple[int, str]] = []
        ch.basic_consume(STREAM, lambda ch_, method, properties, body: (
            found.append((properties.headers["x-stream-offset"], properties.message_id)),
            ch_.basic_ack(method.delivery_tag)), arguments={"x-stream-offset": "first"})
        deadline = time.monotonic() + 30
        while len(found) < count and time.monotonic() < deadline:
            connection.process_data_events(time_limit=0.05)
        connection.close()
        return found

    def check_stream(self, label: str) -> None:
        """Offsets run without a gap; no id twice; every confirmed id newer
        than the first one retained is there, in publication order."""
        found = self.read_stream()
        problems = self.results.problems
        offsets = [offset for offset, _ in found]
        if offsets != list(range(offsets[0], offsets[0] + len(offsets))) if offsets else False:
            problems.append(f"{label}: stream offsets with gaps or repeats")
        ids = [ident for _, ident in found]
        numbers = [int(ident.split(":")[1]) for ident in ids]
        if numbers != sorted(set(numbers)):
            problems.append(f"{label}: stream ids repeated or out of order")
        confirmed = {int(ident.split(":")[1]) for path in self.confirmed_files for ident in self._ids(path)
                     if ident.startswith("s")}
        lost = {n for n in confirmed if numbers and n > numbers[0]} - set(numbers)
        if lost:
            problems.append(f"{label}: stream lost confirmed {sorted(lost)[:10]} ({len(lost)})")
        self.say(f"{label}: stream={len(found)} from offset {offsets[0] if offsets else '-'}")

    def declare_fixed(self) -> None:
        connection = _connect(self.port)
        ch = connection.channel()
        ch.queue_declare(PROBE_QUEUE, durable=True)
        for name, kind, key, arguments in FIXED:
            ch.exchange_declare(name, kind, durable=True)
            ch.queue_bind(PROBE_QUEUE, name, key, arguments)
        connection.close()

    def check_fixed(self, label: str) -> None:
        """The untouched definitions are there, and route."""
        import pika

        connection = _connect(self.port)
        ch = connection.channel()
        ch.confirm_delivery()
        ch.queue_declare(PROBE_QUEUE, passive=True)
        for name, kind, key, arguments in FIXED:
            ch.exchange_declare(name, kind, passive=True)
            ch.basic_publish(name, key.replace("#", "x"), name.encode(), pika.BasicProperties(headers=arguments))
        got = []
        while (item := ch.basic_get(PROBE_QUEUE, auto_ack=True))[0] is not None:
            got.append(item[2].decode())
        connection.close()
        if got != [name for name, *_ in FIXED]:
            self.results.problems.append(f"{label}: fixed definitions route to {got}")

    @staticmethod
    def _ids(path: Path) -> list[str]:
        if not path.exists():
            return []
        # A line cut short by a kill of the writer is not an id it recorded.
        return [line for line in path.read_text().split("\n")[:-1] if line]

    def check(self, label: str) -> None:
        # Held messages overdue at the restart are released at once; ones
        # published just before the kill fall due within MAX_DELAY_MS.
        time.sleep(MAX_DELAY_MS / 1000 + 0.05)
        self.check_fixed(label)
        found = self.browse()
        confirmed: set[str] = set()
        for path in self.confirmed_files:
            confirmed.update(ident for ident in self._ids(path) if not ident.startswith("s"))
        self.check_stream(label)
        acked = set(self._ids(self.acked_file))
        sending = set(self._ids(Path(f"{self.acked_file}.sending")))
        ids = [ident for ident, _ in found]
        present = set(ids)
        results = self.results
        results.confirmed, results.acked = len(confirmed), len(acked)
        missing = confirmed - acked - present
        # Gone after an ack that was being sent when the server died: it may
        # well have arrived (and been synced), so not a loss.
        self.in_doubt |= missing & sending
        results.acks_in_doubt = len(self.in_doubt)
        lost = missing - sending
        if lost - self.lost:
            results.problems.append(f"{label}: lost {sorted(lost - self.lost)[:10]} ({len(lost - self.lost)})")
        self.lost |= lost
        results.lost = len(self.lost)
        duplicates = {ident for ident, count in Counter(ids).items() if count > 1}
        if duplicates - self.duplicates:
            results.problems.append(f"{label}: duplicates {sorted(duplicates - self.duplicates)[:10]}")
        self.duplicates |= duplicates
        results.duplicates = len(self.duplicates)
        last: dict[str, int] = {}
        for ident in ids:
            name, n = ident.split(":")
            if name.startswith("p") and int(n) < last.get(name, -1):
                results.order_violations += 1
                results.problems.append(f"{label}: {ident} after {name}:{last[name]}")
            last[name] = int(n)
        back = (present & acked) - self.returned
        self.returned |= back
        results.acked_returned = len(self.returned)
        results.unconfirmed_present = len(present - confirmed)
        self.say(f"{label}: queue={len(ids)} confirmed={len(confirmed)} acked={len(acked)} "
                 f"acked_back={len(back)} lost={len(self.lost)} dups={len(self.duplicates)} "
                 f"in_doubt={len(self.in_doubt)}")

    # -- a round -------------------------------------------------------------------

    def clients(self, round_no: int) -> list[subprocess.Popen[bytes]]:
        script = str(Path(__file__).resolve())
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        procs = []
        for name, confirmed_file in zip(PUBLISHERS, self.confirmed_files):
            first = round_no * 10_000_000
            procs.append(subprocess.Popen(
                [sys.executable, script, "publisher", str(self.port), name, str(first),
                 str(confirmed_file), str(self.body_size)], env=env, cwd=ROOT))
        procs.append(subprocess.Popen(
            [sys.executable, script, "consumer", str(self.port), str(self.acked_file), str(self.seed + round_no)],
            env=env, cwd=ROOT))
        procs.append(subprocess.Popen(
            [sys.executable, script, "admin", str(self.port), str(self.seed + round_no)], env=env, cwd=ROOT))
        return procs

    def round(self, round_no: int, mode: str) -> None:
        self.spawn()
        self.wait_listening()
        if round_no == 0:
            self.declare_fixed()
        self.check(f"round {round_no} start")
        procs = self.clients(round_no)
        started = time.monotonic()
        if mode == "compaction":
            # Kill as soon as a compaction is logged: the next one is often under way.
            target = self.compactions_so_far() + self.rng.randint(1, 3)
            while self.compactions_so_far() < target and time.monotonic() - started < 5:
                time.sleep(0.005)
            time.sleep(self.rng.random() * 0.02)
            self.results.compaction_kills += 1
        else:
            time.sleep(0.3 + self.rng.random() * 1.2)
        self.kill()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if mode == "recovery":
            # Restart and kill again, at a random point of the start-up (which
            # recovers before it listens), so often while still recovering.
            self.spawn()
            assert self.server_log is not None
            time.sleep(self.rng.random() * max(self.startup_seconds, 0.002))
            recovered = any(e.get("event") == "store.recovered" for e in self._events(self.server_log))
            self.kill()
            self.results.recovery_kills += not recovered
        self.results.rounds += 1

    def finish(self) -> None:
        """Restart once more, check, ack everything left, stop cleanly
        (SIGTERM), and check that nothing comes back after that."""
        self.spawn()
        self.wait_listening()
        self.check("final")
        connection = _connect(self.port)
        ch = connection.channel()
        for queue in (QUEUE, DELAYED_QUEUE):
            while True:
                method, properties, _ = ch.basic_get(queue)
                if method is None:
                    break
                ch.basic_ack(method.delivery_tag)
                with open(self.acked_file, "a") as out:
                    out.write(properties.message_id + "\n")
        connection.close()
        assert self.server is not None
        self.server.send_signal(signal.SIGTERM)
        if self.server.wait(30) != 0:
            self.results.problems.append(f"clean stop exited with {self.server.returncode}")
        self._read_log()
        self.spawn()
        self.wait_listening()
        left = self.browse()
        if left:
            self.results.problems.append(f"after a clean stop, acked messages came back: {left[:10]}")
        self.server.send_signal(signal.SIGTERM)
        self.server.wait(30)
        self._read_log()

    def run(self, rounds: int) -> Results:
        modes = ["load", "compaction", "recovery"]
        try:
            for round_no in range(rounds):
                mode = modes[round_no % 3] if round_no < 3 else self.rng.choice(modes)
                self.round(round_no, mode)
            self.finish()
        finally:
            if self.server is not None and self.server.poll() is None:
                self.server.kill()
                self.server.wait()
        return self.results


def run_campaign(rounds: int, *, workdir: Path | None = None, seed: int | None = None,
                 segment_size: int = SEGMENT_SIZE, verbose: bool = False) -> Results:
    """Run ``rounds`` kill/restart rounds in ``workdir`` (a temporary
    directory, removed when all went well, when not given)."""
    seed = random.randrange(1 << 30) if seed is None else seed
    temp = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="amqlite-crash-")) if workdir is None else workdir
    workdir.mkdir(parents=True, exist_ok=True)
    harness = Harness(workdir, seed=seed, segment_size=segment_size, verbose=verbose)
    harness.say(f"seed={seed} workdir={workdir}")
    results = harness.run(rounds)
    if temp and results.ok:
        shutil.rmtree(workdir, ignore_errors=True)
    elif not results.ok:
        results.problems.append(f"(seed {seed}; data and logs kept in {workdir})")
    return results


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "publisher":
        port, name, first, confirmed_file, body_size = argv[1:6]
        publisher(int(port), name, int(first), confirmed_file, int(body_size))
        return 0
    if argv and argv[0] == "admin":
        admin(int(argv[1]), int(argv[2]))
        return 0
    if argv and argv[0] == "consumer":
        port, acked_file, seed = argv[1:4]
        consumer(int(port), acked_file, int(seed))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("AMQLITE_CRASH_ROUNDS", "30")))
    parser.add_argument("--seed", type=int)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--segment-size", type=int, default=SEGMENT_SIZE)
    args = parser.parse_args(argv)
    results = run_campaign(args.rounds, workdir=args.workdir, seed=args.seed, segment_size=args.segment_size,
                           verbose=True)
    print(results.summary())
    for problem in results.problems[:50]:
        print("PROBLEM:", problem)
    return 0 if results.ok else 1


if __name__ == "__main__":
    sys.exit(main())
