"""Damage campaign: break a stopped data directory, restart, and check that
every confirmed message is back or reported lost, with counts that match.

Each round starts ``python -m amqlite.cli serve`` on a fresh data directory
(16 KiB segments, so there are many), publishes persistent messages with
publisher confirms to two durable queues (each body names its queue and
its number), acks the first fifth of each, waits until the manifest
summarises every sealed segment, and stops the broker. Then it does one
kind of damage to the stopped directory, chosen at random:

- ``flip``: flip a few random bytes in one random file (a sealed segment,
  an index file, the snapshot or the manifest);
- ``delete``: delete one random file (the same choice);
- ``cut``: cut a sealed segment at a random length;
- ``newest``: flip a few random bytes in the newest segment, before its
  last record (damage there is a torn tail, cut as a crash's would be and
  not counted; make crash covers crashes). The newest segment is not
  summarised until it is sealed: its losses are counted by the damaged
  records' own heads, and where a head is unreadable (``unreadable_bytes``)
  the count may fall short.

After the restart the round checks, from the server's log and by reading
every queue (``amqlite.recovered.*`` included):

- the broker started: no traceback, the port opened;
- no confirmed message that was not acked is missing unless reported:
  per queue, the number missing equals the sum of ``messages`` that
  ``store.messages_lost`` gave for it (is at least it, where one says
  ``unreadable_bytes``);
- nothing is reported lost that is there;
- no message is there that was never confirmed.

An acked message may come back (its REMOVE record was in the damage):
counted, not a failure, as after any lost ack.

    python tests/store/damage_harness.py --rounds 50     # part of make crash

The suite runs a short slice (tests/store/test_damage_campaign.py).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import attrs

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from amqlite.store import manifest as manifest_file  # noqa: E402

QUEUES = ("orders", "events")
SEGMENT_SIZE = 16 * 1024
MESSAGES = 300  # per queue
ACKED = MESSAGES // 5
DAMAGE = ("flip", "delete", "cut", "newest")


@attrs.define
class Results:
    rounds: int = 0
    confirmed: int = 0
    lost: int = 0
    reported: int = 0
    acked_back: int = 0
    damage: Counter[str] = attrs.Factory(Counter)
    problems: list[str] = attrs.Factory(list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(self.damage.items()))
        return (f"{self.rounds} rounds ({kinds}): {self.confirmed:,} confirmed, {self.lost:,} lost and"
                f" {self.reported:,} reported lost, {self.acked_back:,} acked came back,"
                f" {len(self.problems)} problems")


class Server:
    def __init__(self, data_dir: Path, log_dir: Path) -> None:
        self.data_dir, self.log_dir = data_dir, log_dir
        self.starts = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.log = log_dir / "none"

    def start(self) -> None:
        self.starts += 1
        self.log = self.log_dir / f"server-{self.starts}.log"
        env = dict(os.environ, AMQLITE_LOG_FORMAT="json", AMQLITE_SEGMENT_SIZE=str(SEGMENT_SIZE),
                   AMQLITE_HOST="127.0.0.1", PYTHONPATH=str(ROOT))
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "amqlite.cli", "serve", "--port", "0", "--management-port", "0",
                 "--prometheus-port", "0", "--kafka-port", "0", "--data-dir", str(self.data_dir)],
                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for event in self.events():
                if event.get("event") == "broker.listening":
                    self.port = int(event["port"])
                    return
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}")
            time.sleep(0.02)
        raise RuntimeError("the server did not start")

    def stop(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                events.append({"event": "unparsed", "line": line})
        return events


def connect(port: int) -> Any:
    import pika

    return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port, heartbeat=0))


def fill(port: int) -> tuple[set[bytes], set[bytes]]:
    """Publish with confirms, ack the first ones; (confirmed, acked) bodies."""
    import pika

    connection = connect(port)
    channel = connection.channel()
    channel.confirm_delivery()
    confirmed: set[bytes] = set()
    persistent = pika.BasicProperties(delivery_mode=2)
    for queue in QUEUES:
        channel.queue_declare(queue, durable=True)
    for n in range(MESSAGES):
        for queue in QUEUES:
            body = b"%s %05d " % (queue.encode(), n) + b"." * 200
            channel.basic_publish("", queue, body, persistent)  # raises unless confirmed
            confirmed.add(body)
    acked: set[bytes] = set()
    for queue in QUEUES:
        for _ in range(ACKED):
            method, _, body = channel.basic_get(queue)
            assert method is not None
            channel.basic_ack(method.delivery_tag)
            acked.add(body)
    connection.close()
    return confirmed, acked


def summarised(data_dir: Path) -> bool:
    """Whether the manifest summarises every sealed segment."""
    segments = sorted(int(path.stem) for path in (data_dir / "log").glob("*.seg"))
    try:
        manifest = manifest_file.decode((data_dir / manifest_file.MANIFEST).read_bytes())
    except (OSError, ValueError):
        return False
    return set(segments[:-1]) <= set(manifest.summaries)


def read_all(port: int) -> list[bytes]:
    """Every message in every queue, the quarantine ones included (got and
    requeued: the queues stay as they are)."""
    connection = connect(port)
    channel = connection.channel()
    names = list(QUEUES)
    bodies: list[bytes] = []
    for name in names:
        got: list[int] = []
        while True:
            method, _, body = channel.basic_get(name)
            if method is None:
                break
            bodies.append(body)
            got.append(method.delivery_tag)
        if got:
            channel.basic_nack(got[-1], multiple=True, requeue=True)
    connection.close()
    return bodies


def quarantined(port: int, events: list[dict[str, Any]]) -> list[bytes]:
    connection = connect(port)
    channel = connection.channel()
    bodies = []
    for event in events:
        if event.get("event") == "store.queue_quarantined":
            while True:
                method, _, body = channel.basic_get(event["queue"], auto_ack=True)
                if method is None:
                    break
                bodies.append(body)
    connection.close()
    return bodies


def damage(data_dir: Path, rng: random.Random) -> str:
    """Damage one file of the stopped directory; a description."""
    log_dir = data_dir / "log"
    segments = sorted(log_dir.glob("*.seg"))
    sealed = segments[:-1]
    others = sorted(log_dir.glob("*.idx")) + [path for path in (data_dir / "definitions.snapshot",
                                                                   data_dir / manifest_file.MANIFEST)
                                              if path.exists()]
    kind = rng.choice(DAMAGE)
    if kind == "newest":
        data = bytearray(segments[-1].read_bytes())
        last = last_record(data)
        if last:
            spots = sorted(rng.randrange(last) for _ in range(rng.randint(1, 4)))
            for spot in spots:
                data[spot] ^= rng.randrange(1, 256)
            segments[-1].write_bytes(bytes(data))
            return f"newest {segments[-1].name} flipped at {spots}"
        kind = "flip"  # a single record: nothing before its last
    if kind == "cut":
        victim = rng.choice(sealed)
        size = victim.stat().st_size
        keep = rng.randrange(size)
        victim.write_bytes(victim.read_bytes()[:keep])
        return f"cut {victim.name} to {keep} of {size} bytes"
    victim = rng.choice(sealed + others)
    if kind == "delete":
        victim.unlink()
        return f"delete {victim.name}"
    data = bytearray(victim.read_bytes())
    spots = sorted(rng.randrange(len(data)) for _ in range(rng.randint(1, 4)))
    for spot in spots:
        data[spot] ^= rng.randrange(1, 256)
    victim.write_bytes(bytes(data))
    return f"flip {victim.name} at {spots}"


def last_record(data: bytes) -> int:
    """Where the last record of an intact segment starts (each record: a
    4-byte big-endian length, then 4 bytes of CRC and the length's bytes)."""
    at = 0
    while (end := at + 8 + int.from_bytes(data[at : at + 4], "big")) < len(data):
        at = end
    return at


def one_round(workdir: Path, rng: random.Random, results: Results) -> None:
    data_dir = workdir / "data"
    server = Server(data_dir, workdir)
    server.start()
    confirmed, acked = fill(server.port)
    deadline = time.monotonic() + 30
    while not summarised(data_dir):
        if time.monotonic() > deadline:
            raise RuntimeError("the manifest did not summarise the sealed segments")
        time.sleep(0.05)
    server.stop()
    what = damage(data_dir, rng)
    results.damage[what.split()[0]] += 1
    try:
        server.start()
    except RuntimeError as error:
        results.problems.append(f"{what}: {error}; see {server.log}")
        return
    events = server.events()
    problems = [f"{what}: {event}" for event in events
                if event.get("event") == "unparsed" or event.get("level") in ("error", "critical")]
    back = read_all(server.port) + quarantined(server.port, events)
    server.stop()
    reported: Counter[str] = Counter()
    for event in events:
        if event.get("event") == "store.messages_lost":
            for item in event["queues"]:
                reported[item["queue"]] += int(item["messages"])
    present = Counter(body.split()[0].decode() for body in set(back))
    expected = confirmed - acked
    missing = Counter(body.split()[0].decode() for body in expected - set(back))
    results.confirmed += len(confirmed)
    results.lost += sum(missing.values())
    results.reported += sum(reported.values())
    results.acked_back += len(set(back) & acked)
    unreadable = any(event.get("unreadable_bytes") for event in events if event.get("event") == "store.messages_lost")
    for queue in QUEUES:
        if missing[queue] != reported[queue] and not (unreadable and missing[queue] > reported[queue]):
            problems.append(f"{what}: {queue}: {missing[queue]} missing, {reported[queue]} reported lost"
                            f" ({present[queue]} there); see {server.log}")
    if len(back) != len(set(back)):
        problems.append(f"{what}: {len(back) - len(set(back))} messages twice")
    if set(back) - confirmed:
        problems.append(f"{what}: {len(set(back) - confirmed)} messages never confirmed")
    results.problems.extend(problems)


def run_campaign(rounds: int, *, workdir: Path | None = None, seed: int | None = None,
                 verbose: bool = False) -> Results:
    seed = random.randrange(2**32) if seed is None else seed
    rng = random.Random(seed)
    results = Results()
    with tempfile.TemporaryDirectory(prefix="amqlite-damage-") as tmp:
        base = workdir or Path(tmp)
        for number in range(rounds):
            round_dir = base / f"round-{number:04d}"
            round_dir.mkdir(parents=True)
            one_round(round_dir, rng, results)
            results.rounds += 1
            if verbose:
                print(f"round {number}: {results.summary()}", flush=True)
    if verbose:
        print(f"seed {seed}")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("AMQLITE_CRASH_ROUNDS", "50")))
    parser.add_argument("--seed", type=int)
    parser.add_argument("--workdir", type=Path, help="keep each round's directory and logs here")
    args = parser.parse_args(argv)
    results = run_campaign(args.rounds, workdir=args.workdir, seed=args.seed, verbose=True)
    print(results.summary())
    for problem in results.problems:
        print("PROBLEM:", problem)
    return 0 if results.ok else 1


if __name__ == "__main__":
    sys.exit(main())
