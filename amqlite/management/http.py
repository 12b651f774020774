"""Serve ASGI apps with Hypercorn's trio worker, in the caller's trio run."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any, cast

import attrs
import trio
from hypercorn.config import Config, Sockets
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import wrap_app
from starlette.types import ASGIApp

from ..defaults import HANDSHAKE_TIMEOUT
from ..log import get_logger

if TYPE_CHECKING:
    from ..server.admission import Gate

log = get_logger(__name__)


@attrs.frozen
class BoundApp:
    """An app with its listening socket, bound but not yet served."""

    app: ASGIApp
    config: Config
    sockets: Sockets

    @property
    def port(self) -> int:
        return int((self.sockets.secure_sockets or self.sockets.insecure_sockets)[0].getsockname()[1])


def bind(app: ASGIApp, host: str, port: int, *, certfile: str = "", keyfile: str = "",
         handshake_timeout: float = HANDSHAKE_TIMEOUT) -> BoundApp:
    """Bind ``host:port`` (0 picks a free port), for HTTPS with ``certfile``
    and ``keyfile``, whose TLS handshake must end within
    ``handshake_timeout`` seconds. Raises OSError at once, before anything
    runs, so that the caller can report it plainly rather than out of
    Hypercorn's nurseries in exception groups."""
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    if certfile:
        config.certfile, config.keyfile = certfile, keyfile
        # Hypercorn's own is 60 s: a stalled handshake held its socket (and
        # its place in the gate) six times as long as on the AMQPS port.
        config.ssl_handshake_timeout = handshake_timeout
    # amqlite logs through structlog; Hypercorn's access log would be a
    # second, unstructured stream.
    config.accesslog = None
    config.errorlog = None
    sockets = config.create_sockets()
    for sock in (*sockets.secure_sockets, *sockets.insecure_sockets):
        sock.listen(config.backlog)
    return BoundApp(app, config, sockets)


async def serve(bound: BoundApp, gate: Gate | None = None, *,
                task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve until cancelled; started once it accepts. With a ``gate``,
    only the connections it admits are served, each holding its place
    until closed (server/admission.py): an HTTP socket is a descriptor
    and a peer that has not logged in, as an AMQP one is.

    Hypercorn's worker_serve, less what amqlite does not use (the ASGI
    lifespan: the apps have no start-up or shutdown handlers), so that the
    listeners can be gated."""
    config = bound.config
    # Starlette's and Hypercorn's ASGI type hints differ; the protocol is the same.
    app = wrap_app(cast(Any, bound.app), config.wsgi_max_body_size, None)
    worker, state = WorkerContext(None), ConnectionState({})

    async def handler(stream: trio.abc.Stream) -> None:
        try:
            await TCPServer(app, config, worker, state, cast(Any, stream))
        except Exception:
            # As for AMQP: one connection's failure ends that connection, not
            # the listener and with it the broker.
            log.exception("http.connection_crashed")
        finally:
            await trio.aclose_forcefully(stream)  # and its place in the gate given back

    def listener(sock: socket.socket) -> trio.abc.Listener[Any]:
        plain = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
        return plain if gate is None else gate.listen(plain)

    listeners = [listener(sock) for sock in bound.sockets.insecure_sockets]
    if bound.sockets.secure_sockets:
        tls = config.create_ssl_context()
        assert tls is not None  # bind() set the certificate and key
        listeners += [trio.SSLListener(listener(sock), tls, https_compatible=True)
                      for sock in bound.sockets.secure_sockets]
    await trio.serve_listeners(handler, listeners, task_status=task_status)
