"""A plain TCP connection's reads and writes as system calls, with trio
waiting only when the socket would block.

trio's ``SocketStream`` makes every ``send_all`` and ``receive_some`` a
checkpoint: a receive first tries the socket (on a connection that reads
everything each time, that mostly fails, a system call and an exception),
then waits, reads, and yields to the scheduler; a send yields once more
after writing. A consumer's delivery out and its ack in paid about 10 µs
of that, against 2 µs for the two system calls (docs/performance.md).
Here a receive waits for readability first and then reads, and a send
writes and waits only while the socket's buffer is full. The connection
driver keeps the scheduler fair: its reader waits before every read, and
its writer yields whenever it goes round again without parking.

TLS connections keep ``trio.SSLStream``.
"""

from __future__ import annotations

import os

import trio


class RawSocket:
    """The socket of a ``trio.SocketStream``, for one reader and one writer
    task. Errors come out as trio's stream errors, so the driver handles
    both kinds of connection alike."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._socket = stream.socket

    async def receive_some(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes``, once the socket is readable; b"" at EOF.
        Always a checkpoint."""
        sock = self._socket
        while True:
            await trio.lowlevel.wait_readable(sock)
            try:
                return os.read(sock.fileno(), max_bytes)
            except BlockingIOError:
                continue  # readable, then not: another wait
            except OSError as error:
                raise trio.BrokenResourceError(str(error)) from error

    async def send_all(self, data: bytes) -> None:
        """Write ``data`` whole. Not a checkpoint unless the socket's buffer
        is full: the caller yields."""
        sock = self._socket
        view = memoryview(data)
        while view:
            try:
                sent = os.write(sock.fileno(), view)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(sock)
                continue
            except OSError as error:
                raise trio.BrokenResourceError(str(error)) from error
            view = view[sent:]
