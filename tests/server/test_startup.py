"""Start-up: the port opens only after recovery, and a stop signal during a
long recovery ends the broker cleanly."""

from __future__ import annotations

import errno
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
    server = Server.from_settings(Settings(host="127.0.0.1", port=port, data_dir=str(tmp_path), management_port=0, prometheus_port=0,
                                           kafka_port=0))
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
    settings = Settings(host="127.0.0.1", port=0, data_dir=str(tmp_path), kafka_port=0)
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


class _ExhaustedListener:
    """accept() fails with EMFILE a number of times, then waits forever."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts = 0

    async def accept(self) -> Any:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise OSError(errno.EMFILE, "Too many open files")
        await trio.sleep_forever()

    async def __aenter__(self) -> _ExhaustedListener:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass


async def test_running_out_of_descriptors_logs_a_line_per_interval_not_per_attempt(autojump_clock: Any) -> None:
    server = Server.from_settings(Settings(data_dir=""))
    listener = _ExhaustedListener(failures=1000)  # 100 s of retries
    with structlog.testing.capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.summary.run)
            nursery.start_soon(server._accept, listener, nursery, server.gate("port"), False)
            await trio.sleep(200)
            nursery.cancel_scope.cancel()
    assert listener.attempts == 1001  # it kept retrying, and accepts again afterwards
    lines = [entry for entry in logs if entry["event"] == "broker.accept_failed"]
    assert 5 <= len(lines) <= 12
    assert sum(line["count"] for line in lines) == 1000 and lines[0]["reason"] == "Too many open files"
    assert lines[0]["listener"] == "port" and "ulimit -n" in lines[0]["hint"]


async def test_any_accept_failure_is_retried_never_ending_the_broker(autojump_clock: Any) -> None:
    class Failing(_ExhaustedListener):
        async def accept(self) -> Any:
            self.attempts += 1
            if self.attempts <= self.failures:
                raise OSError(errno.EPROTO, "Protocol error")
            await trio.sleep_forever()

    server = Server.from_settings(Settings(data_dir=""))
    listener = Failing(failures=5)
    with structlog.testing.capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server._accept, listener, nursery, server.gate("port"), False)
            await trio.sleep(5)
            nursery.cancel_scope.cancel()
    assert listener.attempts == 6
    assert [entry["reason"] for entry in logs if entry["event"] == "broker.accept_failed"] == ["Protocol error"]


async def test_an_ipv6_bind_failure_is_logged(monkeypatch: pytest.MonkeyPatch) -> None:
    real = trio.open_tcp_listeners

    async def no_ipv6(port: int, *, host: str | None = None, **kwargs: Any) -> Any:
        if host == "::":
            raise OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")
        return await real(port, host=host, **kwargs)

    monkeypatch.setattr(trio, "open_tcp_listeners", no_ipv6)
    server = Server.from_settings(Settings(host="0.0.0.0", port=0, data_dir=""))
    with structlog.testing.capture_logs() as logs:
        listeners = await server._listen(0, "port")
    for listener in listeners:
        await listener.aclose()
    warning = [entry for entry in logs if entry["event"] == "broker.ipv6_not_listening"]
    assert len(listeners) == 1 and warning and warning[0]["reason"] == "Cannot assign requested address"
