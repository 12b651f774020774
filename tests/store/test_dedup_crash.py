"""Deduplication where it matters: a publisher with many messages in flight
loses the broker to kill -9, and after each restart retries everything it
has no confirm for; the consumer side then sees each id exactly once, on a
durable queue and on a stream. Without the window, the retries of messages
that were stored but not yet confirmed would be duplicates.

Run as a script, this file is the publisher (aio-pika, up to 200 publishes
in flight, each confirmed id appended to a file)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pika
import pytest

ROOT = Path(__file__).resolve().parents[2]
IDS = 3000
TARGETS = {
    "queue": {"x-message-deduplication": True},
    "stream": {"x-queue-type": "stream", "x-message-deduplication": True},
}


async def publish(port: int, target: str, pending_file: str, confirmed_file: str) -> None:
    import aio_pika

    ids = json.loads(Path(pending_file).read_text())
    connection = await aio_pika.connect(f"amqp://guest:guest@127.0.0.1:{port}/")
    channel = await connection.channel(publisher_confirms=True)
    in_flight = asyncio.Semaphore(200)
    with open(confirmed_file, "a") as out:
        async def one(ident: int) -> None:
            async with in_flight:
                message = aio_pika.Message(b"%d" % ident, delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                                           headers={"x-deduplication-header": ident})
                await channel.default_exchange.publish(message, routing_key=target)
                out.write(f"{ident}\n")
                out.flush()

        await asyncio.gather(*(one(ident) for ident in ids))
    await connection.close()


class Broker:
    def __init__(self, data_dir: Path, log_dir: Path) -> None:
        self.data_dir, self.log_dir = data_dir, log_dir
        self.starts = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> None:
        self.starts += 1
        log = self.log_dir / f"server-{self.starts}.log"
        env = dict(os.environ, AMQLITE_LOG_FORMAT="json", AMQLITE_SEGMENT_SIZE=str(64 * 1024), PYTHONPATH=str(ROOT))
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "amqlite.cli", "serve", "--host", "127.0.0.1", "--port", "0",
                 "--management-port", "0", "--prometheus-port", "0", "--kafka-port", "0", "--data-dir", str(self.data_dir)],
                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for line in log.read_text(errors="replace").splitlines():
                if '"broker.listening"' in line:
                    self.port = int(json.loads(line)["port"])
                    return
            assert self.process.poll() is None, log.read_text()
            time.sleep(0.02)
        raise AssertionError("the broker did not start")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()


def run_publisher(port: int, target: str, pending: list[int], workdir: Path) -> subprocess.Popen[bytes]:
    pending_file = workdir / "pending.json"
    pending_file.write_text(json.dumps(pending))
    return subprocess.Popen([sys.executable, __file__, str(port), target, str(pending_file),
                             str(workdir / "confirmed.txt")], cwd=ROOT, stderr=subprocess.DEVNULL)


def confirmed(workdir: Path) -> set[int]:
    path = workdir / "confirmed.txt"
    # A line cut short by the kill of the writer is not an id it recorded.
    return {int(line) for line in path.read_text().split("\n")[:-1] if line} if path.exists() else set()


def received(port: int, target: str) -> list[int]:
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    channel = connection.channel()
    ids: list[int] = []
    # Everything there, duplicates included: consumed 500 in flight, not a basic.get round trip each.
    count = channel.queue_declare(target, passive=True).method.message_count
    channel.basic_qos(prefetch_count=500)
    channel.basic_consume(target, lambda ch, method, props, body: (
        ids.append(int(body)), ch.basic_ack(method.delivery_tag)),
        arguments={"x-stream-offset": "first"} if target == "stream" else None)
    deadline = time.monotonic() + 30
    while len(ids) < count and time.monotonic() < deadline:
        connection.process_data_events(time_limit=0.05)
    connection.close()
    return ids


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_retrying_everything_unconfirmed_after_kill_9_stores_each_id_once(tmp_path: Path, target: str) -> None:
    rounds = int(os.environ.get("AMQLITE_CRASH_TEST_ROUNDS", "3"))
    rng = random.Random(rounds)
    broker = Broker(tmp_path / "data", tmp_path)
    broker.start()
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.port))
    connection.channel().queue_declare(target, durable=True, arguments=TARGETS[target])
    connection.close()
    retried = 0
    for _ in range(rounds):
        pending = sorted(set(range(IDS)) - confirmed(tmp_path))
        retried += len(pending) < IDS
        publisher = run_publisher(broker.port, target, pending, tmp_path)
        # The kill must find publishes in flight: on a loaded machine the
        # publisher can take longer than the random pause just to start.
        started_with = len(confirmed(tmp_path))
        deadline = time.monotonic() + 30
        while len(confirmed(tmp_path)) == started_with and publisher.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.random() * 0.7)
        broker.kill()
        publisher.wait(30)
        broker.start()
    pending = sorted(set(range(IDS)) - confirmed(tmp_path))
    assert run_publisher(broker.port, target, pending, tmp_path).wait(60) == 0
    assert confirmed(tmp_path) == set(range(IDS))
    ids = received(broker.port, target)
    broker.kill()
    assert retried and sorted(ids) == list(range(IDS))  # each once: nothing lost, nothing twice


if __name__ == "__main__":
    port, target, pending_file, confirmed_file = sys.argv[1:5]
    try:
        asyncio.run(publish(int(port), target, pending_file, confirmed_file))
    except Exception:
        sys.exit(1)  # the broker went away
