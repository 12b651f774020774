"""The Kafka listeners' trio side: bind, accept, drive each connection.

Thin, as the AMQP driver is: connections are accepted by the server's own
loop (the descriptor budget, max_connections, is shared with AMQP; each
Kafka port has its own handshake pool, as each AMQP one does, and a Kafka
client counts as handshaking until it has authenticated), read and
written by the same connection driver, and everything that decides
anything lives in ``amqlite.kafka``.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Callable

import attrs
import trio

from ..auth import FailedLogins, is_loopback
from ..log import get_logger
from .rawsocket import RawSocket

if TYPE_CHECKING:
    from ..kafka.engine import KafkaConnection
    from ..kafka.session import KafkaSettings
    from .listener import Server

log = get_logger(__name__)


@attrs.define(eq=False)
class KafkaListeners:
    """What the server holds for Kafka: bound sockets, open connections."""

    listeners: list[trio.SocketListener] = attrs.field(factory=list)
    #: (listener, TLS or not), bound by :meth:`listen` or :meth:`serve`.
    _secure: dict[trio.SocketListener, bool] = attrs.field(factory=dict)
    connections: set[KafkaConnection] = attrs.field(factory=set)
    failed_logins: FailedLogins = attrs.field(factory=FailedLogins)

    # amqlite.kafka is imported only where a Kafka port is bound: kio imports
    # hypothesis when it is installed (a second of start-up, and a .hypothesis
    # directory in the working directory, in a development environment).

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [listener.socket.getsockname()[:2] for listener in self.listeners if not self._secure[listener]]

    @property
    def tls_addresses(self) -> list[tuple[str, int]]:
        return [listener.socket.getsockname()[:2] for listener in self.listeners if self._secure[listener]]

    @property
    def port(self) -> int:
        """The plain Kafka port (or the TLS one when there is no plain one)."""
        return (self.addresses or self.tls_addresses)[0][1]

    async def listen(self, server: Server) -> None:
        """Bind kafka_port and kafka_tls_port, as the settings ask (0: not)."""
        settings = server.settings
        if (settings.kafka_port or settings.kafka_tls_port) and settings.kafka_vhost not in server.core.vhosts:
            from .listener import StartupError

            raise StartupError(f"kafka_vhost {settings.kafka_vhost!r} is not a vhost (vhosts: "
                               f"{', '.join(sorted(server.core.vhosts))})")
        if settings.kafka_port:
            await self._bind(server, settings.kafka_port, secure=False)
        if settings.kafka_tls_port:
            if server.tls is None:
                server.tls = server._tls_context()
            await self._bind(server, settings.kafka_tls_port, secure=True)
        if self.listeners:
            log.info("kafka.listening", addresses=[f"{h}:{p}" for h, p in self.addresses] or None,
                     tls_addresses=[f"{h}:{p}" for h, p in self.tls_addresses] or None,
                     vhost=settings.kafka_vhost)

    async def _bind(self, server: Server, port: int, *, secure: bool) -> list[trio.SocketListener]:
        from ..kafka import registry  # noqa: F401 (loaded now, not when the first client comes)

        bound = await server._listen(port, "kafka_tls_port" if secure else "kafka_port")
        for listener in bound:
            self._secure[listener] = secure
        self.listeners += bound
        return bound

    def start(self, server: Server, nursery: trio.Nursery, listeners: list[trio.SocketListener] | None = None) -> None:
        for listener in self.listeners if listeners is None else listeners:
            secure = self._secure[listener]
            gate = server.gate("kafka_tls_port" if secure else "kafka_port")
            nursery.start_soon(server._accept, listener, nursery, gate, secure,
                               lambda *args: serve_connection(server, *args))

    async def serve(self, server: Server, port: int = 0, *,
                    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on ``port`` (0: a free one) beside what the settings ask,
        until cancelled; ``task_status`` gets the port. For tests, which
        cannot ask for an ephemeral port in settings, where 0 is "off"."""
        bound = await self._bind(server, port, secure=False)
        async with trio.open_nursery() as nursery:
            self.start(server, nursery, bound)
            task_status.started(bound[0].socket.getsockname()[1])

    def storage_moved(self, now: float) -> None:
        for conn in self.connections:
            conn.storage_moved(now)


def kafka_settings(server: Server, stream: trio.SocketStream) -> KafkaSettings:
    from ..kafka.session import KafkaSettings

    settings = server.settings
    host, port = stream.socket.getsockname()[:2]
    return KafkaSettings(
        vhost=settings.kafka_vhost,
        advertised_host=settings.kafka_advertised_host or host,
        advertised_port=port,
        auto_create_topics=settings.kafka_auto_create_topics,
        anonymous_user=settings.default_user if settings.kafka_allow_anonymous else "",
        group_initial_rebalance_delay=settings.kafka_group_initial_rebalance_delay,
    )


async def serve_connection(server: Server, stream: trio.SocketStream, tls: ssl.SSLContext | None,
                           peer: tuple[str, int], peer_text: str, authenticated: Callable[[], None]) -> None:
    """One Kafka client, from the TLS handshake (if any) to the close."""
    from ..kafka.engine import KafkaConnection
    from ..kafka.registry import APIS
    from ..kafka.session import Session
    # The driver AMQP connections use; imported here, as listener.py imports this module.
    from .listener import _ConnectionDriver

    served: trio.abc.Stream = stream
    if tls is not None:
        secure = await server.tls_handshake(stream, tls, peer_text, "kafka_tls_port")
        if secure is None:
            return
        served = secure
    clock = server.clock
    session = Session(server.core, server.users, kafka_settings(server, stream), APIS, peer=peer_text,
                      peer_loopback=is_loopback(peer[0]), peer_address=peer[0],
                      failed_logins=server.kafka.failed_logins)
    conn = KafkaConnection(session, now=clock.now(), handshake_timeout=server.settings.handshake_timeout)
    conn.on_authenticated = authenticated
    if server.memory_alarm:
        conn.set_memory_alarm(True)
    kafka = server.kafka
    kafka.connections.add(conn)
    transport: RawSocket | trio.abc.Stream = RawSocket(stream) if served is stream else served
    try:
        await _ConnectionDriver(conn, transport, clock, server.connection_timers).run()
    except Exception:
        log.exception("kafka.connection_crashed", peer=peer_text)
        conn.close_reason = conn.close_reason or "internal error"
    finally:
        conn.connection_lost()
        kafka.connections.discard(conn)
        log.info("kafka.connection_closed", peer=peer_text, user=session.user_name,
                 client_id=session.client_id, requests=conn.requests, refused=conn.refused,
                 reason=conn.close_reason)
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(served)
