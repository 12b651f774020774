"""For Kafka tests: a server with a Kafka listener on a free port (in a
thread, or a process of its own that a test can kill -9); Kafka requests
and responses as bytes, for tests that speak the wire themselves; the
engine on a core broker with no network."""

from __future__ import annotations

import io
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kio.serial import entity_reader, entity_writer

import trio

from amqlite.auth import Users
from amqlite.config import Settings
from amqlite.core.broker import Broker
from amqlite.kafka.apis import Api
from amqlite.kafka.engine import KafkaConnection
from amqlite.kafka.protocol import request_type, response_type
from amqlite.kafka.registry import APIS
from amqlite.kafka.session import KafkaSettings, Session
from management.conftest import ManagedServerThread
from server.conftest import ServerThread, start_amqlite


def request_frame(body: Any, correlation_id: int = 1, client_id: str | None = "test",
                  api_key: int | None = None, api_version: int | None = None) -> bytes:
    """A whole request: size, header (v1, or v2 for a flexible body), body."""
    key = body.__api_key__ if api_key is None else api_key
    version = body.__version__ if api_version is None else api_version
    out = io.BytesIO()
    out.write(struct.pack(">hhi", key, version, correlation_id))
    if client_id is None:
        out.write(struct.pack(">h", -1))
    else:
        out.write(struct.pack(">h", len(client_id)) + client_id.encode())
    if body.__flexible__:
        out.write(b"\0")
    entity_writer(type(body))(out, body)
    data = out.getvalue()
    return struct.pack(">i", len(data)) + data


def raw_frame(api_key: int, api_version: int, correlation_id: int, rest: bytes = b"\xff\xff") -> bytes:
    """A request with any key and version, and ``rest`` after the fixed
    header (by default a null client id and no body)."""
    data = struct.pack(">hhi", api_key, api_version, correlation_id) + rest
    return struct.pack(">i", len(data)) + data


def split_responses(data: bytes) -> list[bytes]:
    frames = []
    while data:
        (size,) = struct.unpack_from(">i", data)
        frames.append(data[4:4 + size])
        data = data[4 + size:]
    return frames


def decode_response(frame: bytes, api_key: int, api_version: int) -> tuple[int, Any]:
    """(correlation id, kio response entity) of one response frame."""
    cls = response_type(api_key, api_version)
    assert cls is not None
    (correlation_id,) = struct.unpack_from(">i", frame)
    offset = 5 if cls.__flexible__ and api_key != 18 else 4
    body, size = entity_reader(cls)(frame, offset)
    assert offset + size == len(frame), "the whole frame is the response"
    return correlation_id, body


def request(api_key: int, api_version: int, **fields: Any) -> Any:
    cls = request_type(api_key, api_version)
    assert cls is not None
    return cls(**fields)


def engine(broker: Broker | None = None, *, apis: dict[int, Api] | None = None, anonymous_user: str = "guest",
           now: float = 0.0, auto_create: bool = True) -> KafkaConnection:
    """A Kafka connection engine over ``broker`` (a fresh one by default)."""
    broker = broker or Broker()
    session = Session(broker, Users.from_settings(Settings()),
                      KafkaSettings(advertised_host="127.0.0.1", advertised_port=9092,
                                    anonymous_user=anonymous_user, auto_create_topics=auto_create),
                      APIS if apis is None else apis, peer="127.0.0.1:40000", peer_loopback=True)
    return KafkaConnection(session, now=now, handshake_timeout=10.0)


class KafkaServerThread(ServerThread):
    """Serves Kafka on a free port, which settings cannot ask for (0
    there disables the listener): ``kafka_port``, ``bootstrap``."""

    kafka_port = 0

    async def _serving(self, nursery: trio.Nursery) -> None:
        assert self.server is not None
        self.kafka_port = await nursery.start(self.server.kafka.serve, self.server, 0)

    @property
    def bootstrap(self) -> str:
        """What clients take as bootstrap.servers."""
        return f"127.0.0.1:{self.kafka_port}"


class ManagedKafkaServerThread(KafkaServerThread, ManagedServerThread):
    """Kafka and the management API (``http()``), on ephemeral ports."""

    async def _serving(self, nursery: trio.Nursery) -> None:
        await KafkaServerThread._serving(self, nursery)  # bound first, so the API reports it
        await ManagedServerThread._serving(self, nursery)


def start_managed_kafka(**overrides: object) -> ManagedKafkaServerThread:
    """start_kafka with the management API too."""
    server = start_amqlite(ManagedKafkaServerThread, **overrides)
    assert isinstance(server, ManagedKafkaServerThread)
    return server


def start_kafka(**overrides: object) -> KafkaServerThread:
    """start_amqlite with a Kafka listener; the same overrides."""
    server = start_amqlite(KafkaServerThread, **overrides)
    assert isinstance(server, KafkaServerThread)
    return server


ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class BrokerProcess:
    """``amqlite serve`` in a process of its own, on the same AMQP and Kafka
    ports and data directory at every start, for tests that kill it
    (``segment_size``: small segments, so that kills land near rolls)."""

    def __init__(self, data_dir: Path, log_dir: Path, segment_size: int | None = None) -> None:
        self.data_dir, self.log_dir, self.starts = data_dir, log_dir, 0
        self.kafka_port, self.amqp_port = free_port(), free_port()
        self.segment_size = segment_size
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    def start(self) -> None:
        self.starts += 1
        log = self.log_dir / f"server-{self.starts}.log"
        env = dict(os.environ, AMQLITE_LOG_FORMAT="json", PYTHONPATH=str(ROOT))
        if self.segment_size is not None:
            env["AMQLITE_SEGMENT_SIZE"] = str(self.segment_size)
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "amqlite.cli", "serve", "--host", "127.0.0.1", "--port", str(self.amqp_port),
                 "--management-port", "0", "--prometheus-port", "0", "--kafka-port", str(self.kafka_port),
                 "--data-dir", str(self.data_dir)], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                for port in (self.kafka_port, self.amqp_port):
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return
            except OSError:
                assert self.process.poll() is None, log.read_text()
                time.sleep(0.05)
        raise AssertionError("the broker did not start")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
