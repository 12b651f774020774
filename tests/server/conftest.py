"""Fixtures for tests that talk to a broker over the network.

``broker`` is parametrised: every scenario runs against amqlite (started in
a background thread on an ephemeral port) and, when it answers, against the
reference RabbitMQ at 127.0.0.1:5672 (differential mode). A scenario where
amqlite differs on purpose checks ``broker.kind`` and says why.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import uuid
from typing import Any, Iterator

import attrs
import pika
import pytest
import trio

from amqlite.config import Settings
from amqlite.server import Server
from reference import RABBITMQ, rabbitmq_unusable

from .pika_support import Client



class ServerThread:
    """An amqlite server running ``trio.run`` in a thread of its own."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.server: Server | None = None
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._cancel: trio.CancelScope | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        #: A data directory made for this server alone, removed when it stops.
        self.owned_dir: str | None = None

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as error:  # surfaced to the test thread
            self._error = error
            self._ready.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as self._cancel:
            async with trio.open_nursery() as nursery:
                self.server = Server.from_settings(self.settings)
                await nursery.start(self.server.serve)
                await self._serving(nursery)
                self._ready.set()

    async def _serving(self, nursery: trio.Nursery) -> None:
        """Runs once the server listens, before the test goes on; for subclasses."""

    def start(self) -> ServerThread:
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        return self

    def call(self, fn, *args):  # type: ignore[no-untyped-def]
        """Run ``fn(*args)`` on the server's trio thread (the core is not thread-safe)."""
        assert self._token is not None
        return trio.from_thread.run_sync(fn, *args, trio_token=self._token)

    def stop(self) -> None:
        if self._token is not None and self._cancel is not None:
            try:
                trio.from_thread.run_sync(self._cancel.cancel, trio_token=self._token)
            except trio.RunFinishedError:
                pass
        self._thread.join(10)
        if self.owned_dir is not None:
            shutil.rmtree(self.owned_dir, ignore_errors=True)

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port

    def connect(self, **parameters: Any) -> pika.BlockingConnection:
        """A pika client of this server: the one way tests open one."""
        return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", self.port, **parameters))


def start_amqlite(thread: type[ServerThread] = ServerThread, **overrides: object) -> ServerThread:
    """An amqlite server on an ephemeral port, with a fresh data directory
    unless ``data_dir`` is given (pass the same one again to restart)."""
    owned = None
    if "data_dir" not in overrides:
        owned = overrides["data_dir"] = tempfile.mkdtemp(prefix="amqlite-test-")
    # No HTTP or Kafka by default: fixed ports would clash between test servers.
    settings = Settings(**{"host": "127.0.0.1", "port": 0, "management_port": 0, "prometheus_port": 0,  # type: ignore[arg-type]
                           "kafka_port": 0, **overrides})
    server = thread(settings)
    server.owned_dir = owned
    return server.start()


@pytest.fixture
def amqlite_server() -> Iterator[ServerThread]:
    server = start_amqlite()
    yield server
    server.stop()


@attrs.frozen
class BrokerUnderTest:
    kind: str  # "amqlite" or "rabbitmq"
    host: str
    port: int
    #: The amqlite server thread, for looking inside; None for RabbitMQ.
    server: ServerThread | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{self.host}:{self.port}/"

    def name(self, prefix: str = "t") -> str:
        """A unique name, so scenarios never collide on the shared RabbitMQ."""
        return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["amqlite", "rabbitmq"])
def broker(request: pytest.FixtureRequest) -> Iterator[BrokerUnderTest]:
    if request.param == "rabbitmq":
        # Without a working reference there is nothing to compare against; the
        # reason (unreachable, or failing declares) is the skip's text.
        if (unusable := rabbitmq_unusable()) is not None:
            pytest.skip(unusable)
        yield BrokerUnderTest("rabbitmq", *RABBITMQ)
        return
    server = start_amqlite()
    try:
        yield BrokerUnderTest("amqlite", "127.0.0.1", server.port, server)
    finally:
        server.stop()


@pytest.fixture
def client(broker: BrokerUnderTest) -> Iterator[Client]:
    """pika connections to ``broker``; what the scenario declared is deleted after."""
    c = Client(broker)
    try:
        yield c
    finally:
        c.close()
