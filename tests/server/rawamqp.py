"""A raw-socket AMQP 0-9-1 client for protocol tests: scripted bytes out,
decoded frames back, built on amqlite's own codec.

It speaks exactly what a test tells it to, so it can send what no client
library would: oversized frames, bad frame ends, methods out of order.
"""

from __future__ import annotations

import socket
import ssl
import time
from typing import Any

from amqlite.amqp import spec
from amqlite.amqp.frames import (
    PROTOCOL_HEADER,
    FrameDecoder,
    HeartbeatFrame,
    MethodFrame,
)
from wire import HEARTBEAT, amqplain, body, frame, header, method, plain, publish

__all__ = ["HEARTBEAT", "Closed", "RawClient", "amqplain", "body", "frame", "header", "method", "plain", "publish"]


class Closed(Exception):
    """The server closed the TCP connection."""


class RawClient:
    def __init__(self, host: str, port: int, *, timeout: float = 5.0, rcvbuf: int | None = None,
                 source: str | None = None, tls: ssl.SSLContext | None = None) -> None:
        """``source``: the local address to connect from (127.0.0.2: another
        host, as far as the server can tell); ``tls``: AMQPS."""
        if rcvbuf is None and source is None:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            if rcvbuf is not None:  # a small receive window has to be set before connecting
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            if source is not None:
                self.sock.bind((source, 0))
            self.sock.settimeout(timeout)
            self.sock.connect((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock, server_hostname=host)
        self.timeout = timeout
        self.decoder = FrameDecoder(0)
        self.raw = b""  # bytes seen before the decoder took over (protocol header replies)
        self.eof = False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_method(self, channel: int, m: spec.Method) -> None:
        self.send(method(channel, m))

    def send_until_stalled(self, batch: bytes, limit: int, stall: float = 1.0) -> tuple[int, bytes]:
        """Send ``batch`` over and over until the server has taken nothing
        for ``stall`` seconds (it stopped reading) or ``limit`` bytes went.
        Returns the bytes sent and the unsent rest of the last batch."""
        self.sock.setblocking(False)
        sent, stalled_since = 0, None
        view = memoryview(b"")
        try:
            while sent < limit:
                if not view:
                    view = memoryview(batch)
                try:
                    n = self.sock.send(view)
                except BlockingIOError:
                    stalled_since = stalled_since or time.monotonic()
                    if time.monotonic() - stalled_since > stall:
                        break
                    time.sleep(0.01)
                    continue
                stalled_since = None
                sent += n
                view = view[n:]
        finally:
            self.sock.settimeout(self.timeout)
        return sent, bytes(view)

    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no frame from the server in time")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("no frame from the server in time") from None
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            raise Closed()
        self.decoder.feed(data)

    def read_frame(self, timeout: float | None = None) -> Any:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while (f := self.decoder.next_frame()) is None:
            self._fill(deadline)
        return f

    def read_raw(self, size: int, timeout: float | None = None) -> bytes:
        """Exactly ``size`` bytes (or fewer if the server closes), undecoded."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        out = b""
        while len(out) < size:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(size - len(out))
            except ConnectionResetError:
                data = b""
            if not data:
                self.eof = True
                break
            out += data
        return out

    def read_method(self, timeout: float | None = None, *, skip_heartbeats: bool = True) -> MethodFrame:
        """The next method frame; content frames after it are left for read_frame."""
        while True:
            f = self.read_frame(timeout)
            if isinstance(f, HeartbeatFrame) and skip_heartbeats:
                continue
            assert isinstance(f, MethodFrame), f"expected a method frame, got {f!r}"
            return f

    def expect(self, kind: type[spec.Method], channel: int | None = None, timeout: float | None = None) -> Any:
        f = self.read_method(timeout)
        assert isinstance(f.method, kind), f"expected {kind.name}, got {f.method!r} on channel {f.channel}"
        if channel is not None:
            assert f.channel == channel, f"{kind.name} on channel {f.channel}, expected {channel}"
        return f.method

    def expect_connection_close(self, timeout: float | None = None) -> spec.Connection.Close:
        """connection.close from the server; answers close-ok."""
        close = self.expect(spec.Connection.Close, 0, timeout)
        try:
            self.send_method(0, spec.Connection.CloseOk())
        except OSError:
            pass
        return close

    def wait_closed(self, timeout: float = 5.0) -> bool:
        """True once the server closes the socket (frames read meanwhile are dropped)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.read_frame(deadline - time.monotonic())
            except Closed:
                return True
            except TimeoutError:
                return False
        return False

    # -- handshake ----------------------------------------------------

    def start(self) -> spec.Connection.Start:
        self.send(PROTOCOL_HEADER)
        return self.expect(spec.Connection.Start, 0)

    def handshake(
        self,
        *,
        start_ok: spec.Connection.StartOk | None = None,
        heartbeat: int = 0,
        frame_max: int = 131072,
        channel_max: int = 2047,
        vhost: str = "/",
    ) -> spec.Connection.Tune:
        self.start()
        self.send_method(0, start_ok or plain())
        tune = self.expect(spec.Connection.Tune, 0)
        self.send_method(0, spec.Connection.TuneOk(channel_max, frame_max, heartbeat))
        self.send_method(0, spec.Connection.Open(vhost))
        self.expect(spec.Connection.OpenOk, 0)
        return tune

    def open_channel(self, number: int = 1) -> None:
        self.send_method(number, spec.Channel.Open())
        self.expect(spec.Channel.OpenOk, number)

    def call(self, channel: int, m: spec.Method, reply: type[spec.Method]) -> Any:
        self.send_method(channel, m)
        return self.expect(reply, channel)
