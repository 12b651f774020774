"""Serve ASGI apps with Hypercorn's trio worker, in the caller's trio run."""

from __future__ import annotations

from typing import Any, cast

import attrs
import trio
from hypercorn.config import Config, Sockets
from hypercorn.trio.run import worker_serve
from hypercorn.utils import wrap_app
from starlette.types import ASGIApp


@attrs.frozen
class BoundApp:
    """An app with its listening socket, bound but not yet served."""

    app: ASGIApp
    config: Config
    sockets: Sockets

    @property
    def port(self) -> int:
        return int((self.sockets.secure_sockets or self.sockets.insecure_sockets)[0].getsockname()[1])


def bind(app: ASGIApp, host: str, port: int, *, certfile: str = "", keyfile: str = "") -> BoundApp:
    """Bind ``host:port`` (0 picks a free port), for HTTPS with ``certfile``
    and ``keyfile``. Raises OSError at once, before anything runs, so that
    the caller can report it plainly rather than out of Hypercorn's
    nurseries in exception groups."""
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    if certfile:
        config.certfile, config.keyfile = certfile, keyfile
    # amqlite logs through structlog; Hypercorn's access log would be a
    # second, unstructured stream.
    config.accesslog = None
    config.errorlog = None
    sockets = config.create_sockets()
    for sock in (*sockets.secure_sockets, *sockets.insecure_sockets):
        sock.listen(config.backlog)
    return BoundApp(app, config, sockets)


async def serve(bound: BoundApp, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve until cancelled; started (with Hypercorn's bind URLs) once it accepts."""
    # Starlette's and Hypercorn's ASGI type hints differ; the protocol is the same.
    app = cast(Any, bound.app)
    await worker_serve(wrap_app(app, bound.config.wsgi_max_body_size, None), bound.config,
                       sockets=bound.sockets, task_status=task_status)
