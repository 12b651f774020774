"""Restarting an amqlite server on one data directory, for the
``test_durability_*`` files; and a "crash" for a server in a thread: its
disk stops taking writes, so whatever was not yet synced is lost, as after
kill -9 (the subprocess crash harness, tests/store/crash_harness.py, does
the real thing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from amqlite.server import listener
from amqlite.store.journal import DiskJournal
from faultyfs import FaultyFS

from .conftest import ServerThread, start_amqlite


class Durable:
    """One data directory, and the server currently running on it."""

    def __init__(self, data_dir: Path, monkeypatch: pytest.MonkeyPatch, **settings: Any) -> None:
        self.data_dir = data_dir
        self.settings = settings
        self.fs = FaultyFS()
        monkeypatch.setattr(listener, "DiskJournal", self._journal)
        self.server: ServerThread | None = None
        self.connections: list[pika.BlockingConnection] = []

    def _journal(self, path: Path, **kwargs: Any) -> DiskJournal:
        return DiskJournal(path, fs=self.fs, **kwargs)

    def start(self) -> Durable:
        self.fs = FaultyFS()
        self.server = start_amqlite(data_dir=str(self.data_dir), **self.settings)
        return self

    def stop(self) -> None:
        for connection in self.connections:
            if connection.is_open:
                try:
                    connection.close()
                except Exception:
                    pass
        self.connections.clear()
        if self.server is not None:
            self.server.stop()
            self.server = None

    def restart(self) -> Durable:
        """A clean stop (connections closed, their unacked messages requeued) and a start."""
        self.stop()
        return self.start()

    def crash_and_restart(self) -> Durable:
        """Nothing more reaches the disk; the server stops without closing
        its clients' connections; a new one starts on the same data."""
        self.fs.dead = True
        self.connections.clear()  # abandoned: the old server drops them as it stops
        assert self.server is not None
        self.server.stop()
        self.server = None
        return self.start()

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port

    def connect(self) -> pika.BlockingConnection:
        connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", self.port))
        self.connections.append(connection)
        return connection

    def channel(self, confirm: bool = False) -> BlockingChannel:
        channel = self.connect().channel()
        if confirm:
            channel.confirm_delivery()
        return channel


def persistent(**kwargs: Any) -> pika.BasicProperties:
    return pika.BasicProperties(delivery_mode=2, **kwargs)


def bodies(channel: BlockingChannel, queue: str) -> list[bytes]:
    """Take everything ready in ``queue`` (auto-ack), in order."""
    out = []
    while (item := channel.basic_get(queue, auto_ack=True))[0] is not None:
        out.append(item[2])
    return out


@pytest.fixture
def durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    store = Durable(tmp_path / "data", monkeypatch)
    store.start()
    yield store
    store.stop()


