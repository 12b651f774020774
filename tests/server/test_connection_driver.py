"""The per-connection trio driver in server/listener.py: over an in-memory
stream and trio's autojump clock, the shared timer task wakes a connection
at the engine's next deadline instead of polling; over a raw socket, the
writer stays fair to the other tasks."""

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
from amqlite.core.timers import Timers
from amqlite.runtime import Clock, drive_timers
from amqlite.server.listener import _ConnectionDriver
from amqlite.server.rawsocket import RawSocket
from wire import method, plain, publish


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
    timers = Timers()
    async with client, trio.open_nursery() as nursery:
        nursery.start_soon(drive_timers, timers, clock)
        await _ConnectionDriver(conn, server, clock, timers).run()  # the client never speaks
        nursery.cancel_scope.cancel()
    assert conn.state is State.CLOSED and conn.close_reason == "handshake timeout"
    assert 600 <= trio.current_time() - began < 601
    assert conn.ticks == 1  # one wake-up, at the deadline


async def test_an_open_connection_without_heartbeats_is_never_woken(autojump_clock: Any) -> None:
    clock = Clock()
    conn = connection(clock, heartbeat=0)
    client, server = trio.testing.memory_stream_pair()
    timers = Timers()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(drive_timers, timers, clock)
        nursery.start_soon(_ConnectionDriver(conn, server, clock, timers).run)
        await client.send_all(PROTOCOL_HEADER + method(0, plain())
                              + method(0, spec.Connection.TuneOk(2047, 131072, 0))
                              + method(0, spec.Connection.Open("/")))
        await trio.sleep(3600)
        assert conn.state is State.OPEN
        assert conn.ticks <= 1  # at most once, when the handshake deadline went away
        await client.send_all(method(0, spec.Connection.Close(200, "bye", 0, 0)))
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert conn.state is State.CLOSED


class BrokenTimerConnection(CountingConnection):
    def tick(self, now: float) -> None:
        super().tick(now)
        if self.state is State.OPEN:
            raise RuntimeError("bug in tick")


async def open_connection(client: trio.testing.MemoryStream, heartbeat: int) -> None:
    await client.send_all(PROTOCOL_HEADER + method(0, plain())
                          + method(0, spec.Connection.TuneOk(2047, 131072, heartbeat))
                          + method(0, spec.Connection.Open("/")))


async def test_connections_share_one_timer_task_and_a_bug_in_one_ends_only_that_one(autojump_clock: Any) -> None:
    clock = Clock()
    timers = Timers()
    healthy, broken = connection(clock), BrokenTimerConnection(
        Broker(), Users.from_settings(Settings()), now=clock.now(), peer_loopback=True)
    healthy_client, healthy_server = trio.testing.memory_stream_pair()
    broken_client, broken_server = trio.testing.memory_stream_pair()
    received = bytearray()

    async def read_forever() -> None:
        while data := await healthy_client.receive_some():
            received.extend(data)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drive_timers, timers, clock)
        nursery.start_soon(_ConnectionDriver(healthy, healthy_server, clock, timers).run)
        nursery.start_soon(read_forever)
        await open_connection(healthy_client, 4)
        async with trio.open_nursery() as doomed:
            doomed.start_soon(_ConnectionDriver(broken, broken_server, clock, timers).run)
            await open_connection(broken_client, 4)
        # The broken one's driver returned (its first heartbeat tick raised)...
        assert broken.close_reason == "internal error"
        # ...while the healthy one goes on being served heartbeats: 4 s
        # heartbeats are sent every 2 s of silence, and the client's own
        # traffic keeps it from timing out.
        received.clear()
        for _ in range(10):
            await healthy_client.send_all(b"\x08\x00\x00\x00\x00\x00\x00\xce")
            await trio.sleep(2.01)
        assert received.count(b"\x08\x00\x00\x00\x00\x00\x00\xce") >= 9
        assert healthy.state is State.OPEN
        nursery.cancel_scope.cancel()


class NeverFullRawSocket(RawSocket):
    """Reads from its socket; takes every write at once, as a socket whose
    buffer never fills would, noting how often another task had run by then."""

    def __init__(self, stream: trio.SocketStream, turns: list[int]) -> None:
        super().__init__(stream)
        self.turns = turns
        self.sent_at_turn: list[int] = []
        self.delivered = 0
        self.all_delivered = trio.Event()
        self.expected = 0

    async def send_all(self, data: bytes) -> None:
        self.sent_at_turn.append(self.turns[0])
        self.delivered += data.count(b"\x00\x3c\x00\x3c")
        if self.expected and self.delivered >= self.expected:
            self.all_delivered.set()


async def test_a_writer_that_always_has_more_to_send_still_lets_other_tasks_run() -> None:
    # A raw socket's send is not a checkpoint, so the writer must yield when it
    # goes round again without parking: a no-ack consumer of a long queue, on a
    # client that reads as fast as it comes, would otherwise keep the scheduler
    # for the whole queue, every other connection waiting meanwhile.
    clock = Clock()
    conn = connection(clock, heartbeat=0)
    ours, theirs = trio.socket.socketpair()
    turns = [0]
    raw = NeverFullRawSocket(trio.SocketStream(ours), turns)
    client = trio.SocketStream(theirs)
    count = 3000

    async def other_task() -> None:
        while True:
            turns[0] += 1
            await trio.sleep(0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(_ConnectionDriver(conn, raw, clock, Timers()).run)
        await client.send_all(PROTOCOL_HEADER + method(0, plain())
                              + method(0, spec.Connection.TuneOk(2047, 131072, 0))
                              + method(0, spec.Connection.Open("/")) + method(1, spec.Channel.Open())
                              + method(1, spec.Queue.Declare(queue="q"))
                              + b"".join(publish(1, "q", b"x" * 2000) for _ in range(count)))
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(other_task)
        raw.sent_at_turn.clear()
        raw.expected = raw.delivered + count
        await client.send_all(method(1, spec.Basic.Consume(queue="q", no_ack=True)))
        await raw.all_delivered.wait()
        nursery.cancel_scope.cancel()
    sends = raw.sent_at_turn
    assert len(sends) > 10  # the drain took many writes
    # trio runs the tasks of one batch in either order, so two sends may see the
    # same count; never three.
    assert all(sends[i] < sends[i + 2] for i in range(len(sends) - 2)), sends
