"""Start-up: the port opens only after recovery, and a stop signal during a
long recovery ends the broker cleanly."""

from __future__ import annotations

import os
import signal
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
import structlog
import trio

from amqlite import cli
from amqlite.config import Settings
from amqlite.core.broker import Broker
from amqlite.server import Server
from amqlite.store.journal import DiskJournal


@pytest.fixture
def stalled_recovery(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Recovery that runs until released, like a long log replay."""
    started, release = threading.Event(), threading.Event()

    def recover(self: DiskJournal, broker: Broker, now: float, *args: Any, **kwargs: Any) -> None:
        broker.journal = self
        started.set()
        release.wait(30)

    monkeypatch.setattr(DiskJournal, "recover", recover)
    yield started, release
    release.set()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_the_port_opens_only_after_recovery(tmp_path: Path, stalled_recovery: Any) -> None:
    started, release = stalled_recovery
    port = _free_port()
    server = Server.from_settings(Settings(host="127.0.0.1", port=port, data_dir=str(tmp_path)))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.serve)
        await trio.to_thread.run_sync(started.wait)
        with pytest.raises(OSError):
            await trio.open_tcp_stream("127.0.0.1", port)
        assert server.addresses == []
        release.set()
        with trio.fail_after(10):
            while not server.addresses:
                await trio.sleep(0.01)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.aclose()
        nursery.cancel_scope.cancel()


async def test_sigterm_during_recovery_stops_cleanly_with_a_log_line(tmp_path: Path, stalled_recovery: Any) -> None:
    started, _ = stalled_recovery
    settings = Settings(host="127.0.0.1", port=0, data_dir=str(tmp_path))
    status: list[int] = []
    with structlog.testing.capture_logs() as logs:
        async with trio.open_nursery() as nursery:

            async def serve() -> None:
                status.append(await cli._serve(settings))

            nursery.start_soon(serve)
            await trio.to_thread.run_sync(started.wait)
            os.kill(os.getpid(), signal.SIGTERM)
            with trio.fail_after(10):
                while not status:
                    await trio.sleep(0.01)
    assert status == [0]
    stopping = [entry for entry in logs if entry["event"] == "broker.stopping"]
    assert stopping and stopping[0]["during"] == "recovery" and stopping[0]["signal"] == "SIGTERM"
    assert not any(entry["event"] == "broker.listening" for entry in logs)
