"""The per-connection trio driver in server/listener.py over an in-memory
stream and trio's autojump clock: its timer task sleeps until the engine's
next deadline instead of polling."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from amqlite.amqp import spec
from amqlite.amqp.engine import ServerConnection, State
from amqlite.amqp.frames import PROTOCOL_HEADER
from amqlite.auth import Users
from amqlite.config import Settings
from amqlite.core.broker import Broker
from amqlite.runtime import Clock
from amqlite.server.listener import _ConnectionDriver
from wire import method, plain


class CountingConnection(ServerConnection):
    ticks = 0

    def tick(self, now: float) -> None:
        self.ticks += 1
        super().tick(now)


def connection(clock: Clock, **limits: Any) -> CountingConnection:
    return CountingConnection(Broker(), Users.from_settings(Settings()), now=clock.now(), peer_loopback=True,
                              **limits)


async def test_the_timer_sleeps_until_the_handshake_timeout_instead_of_polling(autojump_clock: Any) -> None:
    clock = Clock()
    conn = connection(clock, handshake_timeout=600.0)
    client, server = trio.testing.memory_stream_pair()
    began = trio.current_time()
    async with client:
        await _ConnectionDriver(conn, server, clock).run()  # the client never speaks
    assert conn.state is State.CLOSED and conn.close_reason == "handshake timeout"
    assert 600 <= trio.current_time() - began < 601
    assert conn.ticks == 1  # one wake-up, at the deadline


async def test_an_open_connection_without_heartbeats_is_never_woken(autojump_clock: Any) -> None:
    clock = Clock()
    conn = connection(clock, heartbeat=0)
    client, server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_ConnectionDriver(conn, server, clock).run)
        await client.send_all(PROTOCOL_HEADER + method(0, plain())
                              + method(0, spec.Connection.TuneOk(2047, 131072, 0))
                              + method(0, spec.Connection.Open("/")))
        await trio.sleep(3600)
        assert conn.state is State.OPEN
        assert conn.ticks <= 1  # at most once, when the handshake deadline went away
        await client.send_all(method(0, spec.Connection.Close(200, "bye", 0, 0)))
    assert conn.state is State.CLOSED
