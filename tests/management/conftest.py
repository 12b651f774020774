"""A server thread that also serves the management API on an ephemeral port."""

from __future__ import annotations

import shutil
import tempfile
from typing import Any, Iterator

import httpx
import pytest
import trio

from amqlite.auth import hash_password
from amqlite.config import Settings
from amqlite.management.http import bind, serve
from amqlite.management.metrics import create_metrics_app
from amqlite.management.service import management_app
from server.conftest import ServerThread

#: Users with each kind of tag: the API admits all but "plain".
USERS = {
    "admin": {"password": "pw", "tags": ["administrator"]},
    "monitor": {"password": "pw", "tags": ["monitoring"]},
    "plain": {"password": "pw", "tags": []},
    "limited": {"password_hash": hash_password("pw"), "tags": ["management"], "vhosts": ["other"]},
}


class ManagedServerThread(ServerThread):
    """Serves the API and metrics on ephemeral ports, which settings can't
    ask for (0 there disables HTTP)."""

    management_port = 0
    prometheus_port = 0

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.ports: list[int] = []

    async def _serving(self, nursery: trio.Nursery) -> None:
        assert self.server is not None
        app = management_app(self.server)
        metrics = create_metrics_app(self.server.core, self.server.clock.now, self.server.store_metrics,
                                     self.server.alarms)
        for bound in (bind(app, "127.0.0.1", 0), bind(metrics, "127.0.0.1", 0)):
            await nursery.start(serve, bound)
            self.ports.append(bound.port)
        self.management_port, self.prometheus_port = self.ports

    def http(self, user: str = "guest", password: str = "guest") -> httpx.Client:
        return httpx.Client(base_url=f"http://127.0.0.1:{self.management_port}", auth=(user, password), timeout=10)


@pytest.fixture
def managed() -> Iterator[ManagedServerThread]:
    data_dir = tempfile.mkdtemp(prefix="amqlite-test-")
    settings = Settings(host="127.0.0.1", port=0, data_dir=data_dir, users=USERS,
                        vhosts={"/": {}, "other": {}}, management_port=0, prometheus_port=0, kafka_port=0)
    server = ManagedServerThread(settings)
    server.owned_dir = data_dir
    server.start()
    yield server
    server.stop()
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def unconfigured() -> Iterator[ManagedServerThread]:
    """A managed server with the default settings: guest only, vhost / only."""
    data_dir = tempfile.mkdtemp(prefix="amqlite-test-")
    server = ManagedServerThread(Settings(host="127.0.0.1", port=0, data_dir=data_dir, management_port=0,
                                          prometheus_port=0, kafka_port=0))
    server.owned_dir = data_dir
    server.start()
    yield server
    server.stop()


def dead_letter_setup(channel: Any, work: str, dead: str) -> None:
    """``work`` dead-letters through the fanout exchange "dlx" into ``dead``."""
    channel.exchange_declare("dlx", "fanout")
    channel.queue_declare(dead)
    channel.queue_bind(dead, "dlx")
    channel.queue_declare(work, arguments={"x-dead-letter-exchange": "dlx"})
