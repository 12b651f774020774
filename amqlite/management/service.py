"""The management API and the Prometheus endpoint beside the AMQP
listener, served in the server's nursery (so in the broker's trio run)."""

from __future__ import annotations

import errno
import ssl
from typing import TYPE_CHECKING, Any, Callable

from . import snapshot

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from ..server.listener import Server
    from .http import BoundApp


def management_app(server: Server) -> ASGIApp:
    """The management API over a running server's broker, users and client connections."""
    from .app import create_app
    listeners = [{"protocol": "amqp", "ip_address": address, "port": port} for address, port in server.addresses]
    # Kafka's as RabbitMQ names its plugins' listeners ("mqtt", "stream", "stream/ssl").
    listeners += [{"protocol": "kafka", "ip_address": address, "port": port}
                  for address, port in server.kafka.addresses]
    listeners += [{"protocol": "kafka/ssl", "ip_address": address, "port": port}
                  for address, port in server.kafka.tls_addresses]

    def close(name: str, reason: str) -> bool:
        for conn in server.connections:
            if conn.core is not None and conn.core.name == name:
                conn.force_close(reason, server.clock.now())
                return True
        for kafka in server.kafka.connections:
            if kafka.session.user is not None and not kafka.closed and kafka.session.peer == name:
                kafka.force_close(reason)
                return True
        return False

    def kafka_connections() -> list[dict[str, Any]]:
        # Logged in only, as an AMQP connection is listed once opened.
        return [snapshot.kafka_connection_info(conn) for conn in server.kafka.connections
                if conn.session.user is not None and not conn.closed]

    return create_app(server.core, server.users, server.clock.now, listeners=listeners, close=close,
                      accounts=server.accounts, alarms=server.alarms, other_connections=kafka_connections)


def bind_http(server: Server) -> dict[str, BoundApp]:
    """Bind what the settings enable, by service name (``management``,
    ``prometheus``); call once the AMQP listeners are bound, since the API
    reports them. Raises OSError for a port that cannot be bound.

    Starlette and Hypercorn are imported only for a port that is set:
    start-up without HTTP ports does without them (docs/performance.md)."""
    from .metrics import create_metrics_app

    settings = server.settings
    # Hypercorn binds one address; "all interfaces" means IPv4's here.
    host = settings.host if settings.host not in ("", "::") else "0.0.0.0"
    store = server.store_metrics if server.journal is not None else None
    wanted: dict[str, tuple[int, Callable[[], ASGIApp], bool]] = {
        "management": (settings.management_port, lambda: management_app(server), False),
        # HTTPS with the AMQP listener's certificate (RabbitMQ's management.ssl.port).
        "management_tls": (settings.management_tls_port, lambda: management_app(server), True),
        "prometheus": (settings.prometheus_port,
                       lambda: create_metrics_app(server.core, server.clock.now, store, server.alarms), False),
    }
    if settings.management_tls_port:
        if not settings.tls_cert or not settings.tls_key:
            raise OSError(errno.EINVAL, "management_tls_port needs tls_cert and tls_key")
        # Hypercorn loads them only once serving; an unusable pair is said here, at start-up.
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(settings.tls_cert, settings.tls_key)
    bound: dict[str, BoundApp] = {}
    try:
        for name, (port, make_app, secure) in wanted.items():
            if port:
                from .http import bind

                try:
                    bound[name] = bind(make_app(), host, port, certfile=settings.tls_cert if secure else "",
                                       keyfile=settings.tls_key if secure else "",
                                       handshake_timeout=settings.handshake_timeout)
                except OSError as error:
                    raise OSError(error.errno, f"{name} port {host}:{port}: {error.strerror or error}") from None
    except OSError:
        for done in bound.values():
            for sock in done.sockets.insecure_sockets:
                sock.close()
        raise
    return bound
