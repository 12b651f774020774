"""server/rawsocket.py: a plain connection read and written with system
calls, trio waiting only when the socket would block."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from amqlite.server.rawsocket import RawSocket


def pair() -> tuple[RawSocket, trio.SocketStream]:
    ours, theirs = trio.socket.socketpair()
    return RawSocket(trio.SocketStream(ours)), trio.SocketStream(theirs)


async def test_reads_what_the_peer_wrote_and_empty_bytes_at_its_end() -> None:
    raw, peer = pair()
    await peer.send_all(b"hello")
    assert await raw.receive_some(100) == b"hello"
    await peer.aclose()
    assert await raw.receive_some(100) == b""


async def test_a_receive_waits_for_data_instead_of_returning_nothing() -> None:
    raw, peer = pair()
    got: list[bytes] = []

    async def receive() -> None:
        got.append(await raw.receive_some(100))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []  # parked in trio, not spinning on BlockingIOError
        await peer.send_all(b"late")
    assert got == [b"late"]


async def test_a_write_larger_than_the_socket_buffers_arrives_whole_and_in_order() -> None:
    raw, peer = pair()
    data = bytes(range(256)) * (32 * 1024)  # 8 MiB: the writer must wait for the reader
    received = bytearray()

    async def read_slowly() -> None:
        while len(received) < len(data):
            received.extend(await peer.receive_some(64 * 1024))
            await trio.sleep(0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_slowly)
        await raw.send_all(data)
    assert bytes(received) == data


async def test_writing_to_a_peer_that_went_away_is_a_broken_stream() -> None:
    raw, peer = pair()
    await peer.aclose()
    with pytest.raises(trio.BrokenResourceError):
        for _ in range(100):  # the first writes may still be buffered
            await raw.send_all(b"x" * 65536)
