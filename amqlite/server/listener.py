"""The AMQP server's trio driver: a listener and one task pair per connection.

Thin by design: a reader feeds bytes to the sans-IO engine, a writer sends
what the engine has to say, and one task for all connections runs their
timers (heartbeats, handshake and close timeouts). Everything that decides
anything lives in ``amqlite.amqp.engine`` and ``amqlite.core``.
"""

from __future__ import annotations

import errno
import functools
import json
import math
import secrets
import ssl
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Protocol

import attrs
import trio

from .. import __version__
from ..accounts import Accounts
from ..amqp.engine import ServerConnection
from ..auth import Users, is_loopback
from ..config import Settings
from ..core.broker import Broker
from ..heap import Trimmer, trim_after_frees
from ..log import get_logger
from ..management import definitions
from ..management.metrics import StoreMetrics
from ..management.service import bind_http
from ..core.timers import Timers
from ..runtime import Clock, drive_timers
from ..store.journal import DiskJournal, StoreLocked
from ..storage import StoreDriver
from .admission import Budget, Gate, Summary, Ticket
from .descriptors import connection_limit, open_files_limit, raise_open_files_limit
from .kafka_listener import KafkaListeners
from .memory import watch_memory, watermark
from .rawsocket import RawSocket

log = get_logger(__name__)

_RECEIVE_SIZE = 256 * 1024
_VIRTUAL_FILESYSTEMS = (Path("/proc"), Path("/sys"), Path("/dev"))
#: Connection deadlines are rounded up to this grain, so that one wake-up of
#: the timer task serves every connection due in the same grain: heartbeats
#: and timeouts are seconds apart, and a trio wake-up per connection cost
#: 10,000 idle connections most of a core (docs/performance.md). No coarser:
#: connections opened together fall due together, and at 50 ms the
#: heartbeats of about fifty of them went out in one step, holding up every
#: delivery behind them (the fleet's p99 was 3.9 ms at 50 ms, 2.3 at 5).
_TIMER_GRAIN = 0.005


class StartupError(Exception):
    """The broker cannot start; the message is one line for the operator."""


def _bind_failure(host: str, port: int, error: OSError, setting: str) -> str:
    """What to tell the operator, naming the ``setting`` that chose the port."""
    if error.errno == errno.EADDRINUSE:
        return (f"{setting} {port} is already in use (another broker, such as RabbitMQ?); "
                f"choose another with --{setting.replace('_', '-')} or AMQLITE_{setting.upper()}")
    if error.errno == errno.EACCES:
        return f"not allowed to bind {setting} {port}"
    return f"cannot listen on {host}:{port} ({setting}): {error.strerror or error}"


@attrs.define(eq=False)
class Server:
    """A running AMQP server: the core broker, its users and its settings."""

    settings: Settings
    core: Broker
    users: Users
    clock: Clock = attrs.field(factory=Clock)
    connections: set[ServerConnection] = attrs.field(factory=set)
    #: Every connection's next deadline, in one task.
    connection_timers: Timers = attrs.field(factory=Timers)
    #: The memory alarm is on (server/memory.py).
    memory_alarm: bool = False
    #: Why the store refuses persistent publishes (the disk alarm), if it does.
    disk_alarm: str | None = None
    #: The sockets every listener together may hold: max_connections, or
    #: what the open-files limit leaves room for; and each address's share (admission.py).
    budget: Budget = attrs.field(default=attrs.Factory(
        lambda self: Budget(0, self.settings.max_unauthenticated_per_address), takes_self=True))
    #: Each listener's admission, by the setting that names its port.
    gates: dict[str, Gate] = attrs.field(factory=dict)
    #: Refusals and failed handshakes, one line per kind and interval.
    summary: Summary = attrs.field(factory=Summary)
    #: The TLS listener's context (None without tls_port); SIGHUP replaces it.
    tls: ssl.SSLContext | None = None
    addresses: list[tuple[str, int]] = attrs.field(factory=list)
    #: Where the TLS listener is bound, if tls_port is set.
    tls_addresses: list[tuple[str, int]] = attrs.field(factory=list)
    journal: DiskJournal | None = None
    accounts: Accounts = attrs.field(factory=lambda: Accounts(None))
    #: Bound HTTP ports by service ("management", "prometheus"), once serving.
    http_ports: dict[str, int] = attrs.field(factory=dict)
    #: Recovery time and the store driver's writes, for Prometheus.
    store_metrics: StoreMetrics = attrs.field(factory=StoreMetrics)
    #: The Kafka listeners and their connections (server/kafka_listener.py).
    kafka: KafkaListeners = attrs.field(factory=KafkaListeners)

    @classmethod
    def from_settings(cls, settings: Settings) -> Server:
        core = Broker(name_prefix=secrets.token_hex(4) + "-", max_message_size=settings.max_message_size,
                     consumer_timeout=settings.consumer_timeout / 1000 or None)
        for vhost, table in settings.vhosts.items():
            core.add_vhost(vhost).limits = dict(table.get("limits", {}))
        return cls(settings, core, Users.from_settings(settings))

    async def serve(self, *, task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED) -> None:
        """Recover, listen, serve until cancelled. ``task_status.started``
        gets this server once the port is bound, with :attr:`addresses`
        filled in. Start-up failures raise :class:`StartupError`.

        The port opens only after recovery, as in RabbitMQ: a client that
        connects is served at once instead of hanging in the handshake.
        """
        if self.settings.data_dir:
            self.journal = self._open_store()
        recovered = False
        try:
            if self.journal is not None:
                # In a thread, so that a signal can stop a long recovery; nothing
                # else touches the core until it is done.
                started = time.perf_counter()
                await trio.to_thread.run_sync(self.journal.recover, self.core, self.clock.now(),
                                              abandon_on_cancel=True)
                self.store_metrics.recovery_seconds = time.perf_counter() - started
            recovered = True
            self._load_accounts()
            self.tls = self._tls_context() if self.settings.tls_port else None
            # Port 0 picks a free port, except beside a TLS port, where it
            # turns the plain listener off (RabbitMQ: listeners.tcp = none).
            plain_off = self.settings.port == 0 and bool(self.settings.tls_port)
            listeners = [] if plain_off else await self._listen(self.settings.port, "port")
            self.addresses = [listener.socket.getsockname()[:2] for listener in listeners]
            tls_listeners = []
            if self.tls is not None:
                try:
                    tls_listeners = await self._listen(self.settings.tls_port, "tls_port")
                except StartupError:
                    for listener in listeners:
                        listener.socket.close()
                    raise
                self.tls_addresses = [listener.socket.getsockname()[:2] for listener in tls_listeners]
            try:
                await self.kafka.listen(self)
                http = bind_http(self)
            except (OSError, StartupError) as error:
                for listener in [*listeners, *tls_listeners, *self.kafka.listeners]:
                    listener.socket.close()
                if isinstance(error, StartupError):
                    raise
                raise StartupError(f"cannot serve HTTP: {error.strerror or error}") from None
            self.budget.limit = self._connection_limit()
            log.info("broker.listening", addresses=[f"{h}:{p}" for h, p in self.addresses], port=self.port,
                     tls_addresses=[f"{h}:{p}" for h, p in self.tls_addresses] or None,
                     data_dir=self.settings.data_dir, version=__version__, max_connections=self.budget.limit)
            async with trio.open_nursery() as nursery:
                trimmer = Trimmer()  # one for both tasks: each trim sets the next one's baseline
                nursery.start_soon(trim_after_frees, lambda: self.core.freed_bytes, trimmer.trim_now)
                if self.journal is not None:
                    driver = StoreDriver(self.journal, on_synced=self._synced, on_blocked=self._blocked,
                                         now=self.clock.now, on_paged_in=self._resume,
                                         disk_free_limit=self.settings.disk_free_limit,
                                         observer=self.store_metrics, trim_heap=trimmer)
                    nursery.start_soon(driver.run)
                nursery.start_soon(drive_timers, self.core.timers, self.clock)
                nursery.start_soon(drive_timers, self.connection_timers, self.clock)
                limit = watermark(self.settings)
                nursery.start_soon(watch_memory, limit, self._memory_alarm_changed)
                if self.journal is not None:
                    nursery.start_soon(functools.partial(
                        watch_memory, int(limit * self.settings.memory_paging_ratio), self._memory_pressure_changed,
                        event="memory.paging", actions=("queues page transient messages to disk",
                                                        "queues keep their full budget in memory")))
                nursery.start_soon(self.summary.run)
                for listener in listeners:
                    nursery.start_soon(self._accept, listener, nursery, self.gate("port"), False)
                for listener in tls_listeners:
                    nursery.start_soon(self._accept, listener, nursery, self.gate("tls_port"), True)
                self.kafka.start(self, nursery)
                if http:
                    from ..management.http import serve as serve_http  # Hypercorn: see bind_http

                for name, bound in http.items():
                    await nursery.start(serve_http, bound, self.gate(f"{name}_port"))
                self.http_ports = {name: bound.port for name, bound in http.items()}
                task_status.started(self)
        finally:
            # Stopped during recovery, the abandoned thread may still be reading
            # (or cutting a torn tail): leave the files and the lock to the
            # process's exit rather than closing them under it.
            if self.journal is not None and recovered:
                self.journal.close()  # writes what is still pending (acks, mostly)

    def _load_accounts(self) -> None:
        """Users and vhosts changed at run time (see accounts.py), then the
        definitions file, if any; a bad one stops start-up."""
        settings = self.settings
        self.accounts = Accounts.load(Path(settings.data_dir) if settings.data_dir else None)
        self.accounts.apply(self.users, self.core)
        if not settings.definitions:
            return
        try:
            loaded = json.loads(Path(settings.definitions).read_text())
            counts = definitions.load(loaded, self.core, self.users, self.accounts, now=self.clock.now())
        except OSError as error:
            raise StartupError(f"definitions {settings.definitions}: {error.strerror or error}") from None
        except (ValueError, definitions.DefinitionsError) as error:
            raise StartupError(f"definitions {settings.definitions}: {error}") from None
        self.accounts.save()
        log.info("broker.definitions_loaded", file=settings.definitions, **counts)

    def _open_store(self) -> DiskJournal:
        settings = self.settings
        path = Path(settings.data_dir).absolute()
        if any(path.is_relative_to(virtual) for virtual in _VIRTUAL_FILESYSTEMS):
            raise StartupError(f"data_dir {path} is on a virtual filesystem; choose a real directory")
        try:
            return DiskJournal(path, segment_size=settings.segment_size, queue_budget=settings.queue_memory_budget)
        except StoreLocked as error:
            raise StartupError(str(error)) from None
        except (FileExistsError, NotADirectoryError):
            raise StartupError(f"data_dir {path} is not a directory") from None
        except OSError as error:
            raise StartupError(f"data_dir {path} is not usable: {error.strerror}") from None

    def _synced(self) -> None:
        for conn in self.connections:
            conn.store_synced()
        self._resume()  # a queue waited on may have been purged or deleted meanwhile

    def _resume(self) -> None:
        now = self.clock.now()
        for conn in self.connections:
            conn.resume(now)
        self.kafka.storage_moved(now)

    def _blocked(self, reason: str | None) -> None:
        self.disk_alarm = reason
        for conn in self.connections:
            conn.set_blocked(reason)

    def _memory_pressure_changed(self, on: bool) -> None:
        journal = self.journal
        assert journal is not None
        journal.set_memory_pressure(on)
        if on:  # queues already over the smaller budget page out after the next write
            for vhost in self.core.vhosts.values():
                for queue in vhost.queues.values():
                    if queue.over_budget:
                        journal.over_budget(queue)

    def _memory_alarm_changed(self, on: bool) -> None:
        self.memory_alarm = on
        now = self.clock.now()
        for conn in self.connections:
            conn.set_memory_alarm(on, now)
        for kafka in self.kafka.connections:
            kafka.set_memory_alarm(on)

    def alarms(self) -> list[str]:
        """The resource alarms in effect, by RabbitMQ's resource names."""
        return [name for name, on in (("memory", self.memory_alarm), ("disk", self.disk_alarm)) if on]

    async def _listen(self, port: int, setting: str) -> list[trio.SocketListener]:
        host = self.settings.host
        try:
            if host not in ("", "0.0.0.0", "::"):
                return await trio.open_tcp_listeners(port, host=host)
            if port:
                return await trio.open_tcp_listeners(port)
            # An ephemeral port: the same one on IPv4 and, where possible, IPv6.
            listeners = await trio.open_tcp_listeners(0, host="0.0.0.0")
        except OSError as error:
            raise StartupError(_bind_failure(host, port, error, setting)) from None
        try:
            listeners += await trio.open_tcp_listeners(listeners[0].socket.getsockname()[1], host="::")
        except OSError as error:
            log.warning("broker.ipv6_not_listening", port=listeners[0].socket.getsockname()[1],
                        reason=error.strerror or str(error))
        return listeners

    def reload_tls(self) -> None:
        """Load the certificate, key and CA files again (SIGHUP), for new
        connections; open ones keep theirs. Files that do not load leave
        the current context in place, said in one line."""
        if self.tls is None:
            log.info("tls.reload_skipped", reason="no tls_port")
            return
        try:
            self.tls = self._tls_context()
        except StartupError as error:
            log.error("tls.reload_failed", reason=str(error), action="kept the certificate in use")
            return
        log.info("tls.reloaded", cert=self.settings.tls_cert, key=self.settings.tls_key,
                 ca=self.settings.tls_ca or None)

    def _tls_context(self) -> ssl.SSLContext:
        """The TLS listener's context, with RabbitMQ's ssl_options semantics:
        verify_peer checks a certificate the client sends, and
        fail_if_no_peer_cert refuses a client that sends none."""
        settings = self.settings
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            if not settings.tls_cert or not settings.tls_key:
                raise StartupError("tls_port needs tls_cert and tls_key")
            context.load_cert_chain(settings.tls_cert, settings.tls_key)
            if settings.tls_ca:
                context.load_verify_locations(settings.tls_ca)
        except (OSError, ssl.SSLError) as error:
            raise StartupError(f"TLS certificate or key: {getattr(error, 'strerror', None) or error}") from None
        if settings.tls_fail_if_no_peer_cert:
            context.verify_mode = ssl.CERT_REQUIRED
        elif settings.tls_verify_peer:
            context.verify_mode = ssl.CERT_OPTIONAL
        else:
            context.verify_mode = ssl.CERT_NONE
        if context.verify_mode != ssl.CERT_NONE and not settings.tls_ca:
            raise StartupError("tls_verify_peer and tls_fail_if_no_peer_cert need tls_ca")
        return context

    def _connection_limit(self) -> int:
        """max_connections, within what the open-files limit (raised as far
        as it may be) leaves room for; or that room."""
        configured = self.settings.max_connections
        open_files = raise_open_files_limit(configured) if configured else open_files_limit()
        limit = connection_limit(configured, open_files)
        if configured > limit:
            log.warning("broker.max_connections_lowered", configured=configured, max_connections=limit,
                        open_files=open_files, hint="raise the open-files limit (ulimit -n)")
        return limit

    def gate(self, listener: str) -> Gate:
        """The admission of the listener whose port ``listener`` names."""
        if listener not in self.gates:
            self.gates[listener] = Gate(listener, self.budget, self.settings.max_unauthenticated, self.summary)
        return self.gates[listener]

    @property
    def handshaking(self) -> int:
        """AMQP connections (either port) not yet through connection.open."""
        return sum(self.gates[name].unauthenticated for name in ("port", "tls_port") if name in self.gates)

    async def _accept(self, listener: trio.SocketListener, nursery: trio.Nursery, gate: Gate, secure: bool,
                      serve: ServeConnection | None = None) -> None:
        """Accept what ``gate`` admits, forever (it waits out a lack of
        descriptors). ``serve`` serves each connection (AMQP's by default);
        it gets the TLS context in force when the connection came."""
        async with listener:
            while True:
                stream, ticket = await gate.accept(listener)
                # The context as of now: a reload applies to connections from here on.
                nursery.start_soon(self._handle, stream, ticket, self.tls if secure else None, serve or self._serve)

    @property
    def port(self) -> int:
        """The plain AMQP port, or the TLS one when the plain listener is off."""
        return (self.addresses or self.tls_addresses)[0][1]

    async def _handle(self, stream: trio.SocketStream, ticket: Ticket, tls: ssl.SSLContext | None,
                      serve: ServeConnection) -> None:
        # What an unauthenticated peer holds is bounded: its gate's pool and
        # its address's share of it, the handshake timeout, and frames of
        # at most 4096 bytes until tune-ok.
        try:
            peer = stream.socket.getpeername()
            await serve(stream, tls, peer, f"{peer[0]}:{peer[1]}", ticket.logged_in)
        except OSError:  # gone before it was served
            await trio.aclose_forcefully(stream)
        finally:
            ticket.closed()

    async def _serve(self, stream: trio.SocketStream, tls: ssl.SSLContext | None, peer: tuple[str, int],
                     peer_text: str, authenticated: Callable[[], None]) -> None:
        settings = self.settings
        served: trio.abc.Stream = stream
        certificate_user = None
        if tls is not None:
            secure = await self.tls_handshake(stream, tls, peer_text)
            if secure is None:
                return
            served = secure
            certificate_user = _common_name(secure.getpeercert())
        clock = self.clock
        conn = ServerConnection(
            self.core,
            self.users,
            now=clock.now(),
            peer_loopback=is_loopback(peer[0]),
            peer=peer_text,
            heartbeat=settings.heartbeat,
            frame_max=settings.frame_max,
            channel_max=settings.channel_max,
            handshake_timeout=settings.handshake_timeout,
            max_content_in_flight=settings.max_content_in_flight,
            auth_mechanisms=settings.auth_mechanisms,
            certificate_user=certificate_user,
        )
        conn.on_open = authenticated
        self.connections.add(conn)
        if self.memory_alarm:
            conn.set_memory_alarm(True, clock.now())
        # Plain TCP is read and written as system calls (rawsocket.py); TLS through trio.
        transport: RawSocket | trio.abc.Stream = RawSocket(stream) if served is stream else served
        try:
            await _ConnectionDriver(conn, transport, clock, self.connection_timers).run()
        except Exception:
            # A bug met while serving one client must not take the listener, and so
            # every other client, down with it: drop this connection and say why.
            log.exception("connection.crashed", peer=peer_text)
            conn.close_reason = conn.close_reason or "internal error"
        finally:
            try:
                conn.connection_lost(clock.now())
            except Exception:
                log.exception("connection.crashed", peer=peer_text, during="release")
            self.connections.discard(conn)
            log.info("connection.closed", peer=peer_text, user=conn.user.name if conn.user else None,
                     vhost=conn.vhost or None, reason=conn.close_reason)
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(served)


    async def tls_handshake(self, stream: trio.SocketStream, tls: ssl.SSLContext, peer_text: str,
                            listener: str = "tls_port") -> trio.SSLStream[trio.SocketStream] | None:
        """The TLS stream, or None (and the socket closed) when the
        handshake fails: a plaintext client, a certificate refused, a peer
        that stalls. This connection only, never the listener; said in
        the summary, since a flood of them is one event."""
        secure = trio.SSLStream(stream, tls, server_side=True)
        try:
            with trio.fail_after(self.settings.handshake_timeout):
                await secure.do_handshake()
        except (trio.BrokenResourceError, trio.TooSlowError) as error:
            self.summary.note("warning", "connection.tls_failed", _tls_failure(error), listener=listener,
                              peer=peer_text)
            await trio.aclose_forcefully(stream)
            return None
        return secure


#: Serves one accepted connection: (stream, TLS context, peer, "host:port",
#: called once the client has authenticated).
ServeConnection = Callable[[trio.SocketStream, "ssl.SSLContext | None", tuple[str, int], str, Callable[[], None]],
                           Awaitable[None]]


class DrivenConnection(Protocol):
    """A sans-IO connection engine as _ConnectionDriver drives it (AMQP's, Kafka's)."""

    on_output: Callable[[], object] | None
    on_readable: Callable[[], object] | None
    close_reason: str | None

    @property
    def peer(self) -> str: ...
    @property
    def closed(self) -> bool: ...
    def wants_read(self) -> bool: ...
    def wants_write(self) -> bool: ...
    def receive_data(self, data: bytes, now: float) -> None: ...
    def data_to_send(self, now: float) -> bytes: ...
    def next_deadline(self) -> float | None: ...
    def tick(self, now: float) -> None: ...


def _common_name(certificate: dict[str, Any] | None) -> str | None:
    """The subject's common name of a verified client certificate (the
    ssl module gives one only when it verified it), or None."""
    for rdn in (certificate or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


def _tls_failure(error: Exception) -> str:
    if isinstance(error, trio.TooSlowError):
        return "TLS handshake timed out"
    cause = error.__cause__
    if isinstance(cause, ssl.SSLError):
        return cause.reason or str(cause)
    return str(cause or error) or "connection lost during the TLS handshake"


class _ConnectionDriver:
    def __init__(self, conn: DrivenConnection, stream: RawSocket | trio.abc.Stream, clock: Clock,
                 timers: Timers) -> None:
        self.conn = conn
        self.stream = stream
        self.clock = clock
        self.timers = timers
        self.output = trio.lowlevel.ParkingLot()
        #: Woken when output drains or the engine wants input again.
        self.readable = trio.lowlevel.ParkingLot()
        #: When ``timers`` will next call :meth:`on_timer` (None: not scheduled).
        self.timer_at: float | None = None
        self._scope: trio.CancelScope | None = None
        conn.on_output = self._on_output
        conn.on_readable = self.readable.unpark_all

    def _on_output(self) -> None:
        self.output.unpark_all()
        self._reschedule()

    def _reschedule(self) -> None:
        deadline = self.conn.next_deadline()
        if deadline is not None:
            # Rounded up, and never at or before now: a heartbeat the engine
            # queued is not "sent" until the writer takes it, so until then
            # the deadline that asked for it has not moved.
            grain = _TIMER_GRAIN
            self.timers.schedule(self, (math.floor(max(deadline, self.clock.now()) / grain) + 1) * grain)

    def on_timer(self, now: float) -> None:
        """The engine's deadline came (from the shared timer task)."""
        conn = self.conn
        if self._scope is None or self._scope.cancel_called:
            return  # the connection is over
        try:
            conn.tick(now)
        except Exception:
            # As in _handle: one connection's bug ends that connection only,
            # here the timer task that every connection shares.
            log.exception("connection.crashed", peer=conn.peer, during="timer")
            conn.close_reason = conn.close_reason or "internal error"
            self._scope.cancel()
            return
        if conn.closed:
            self.output.unpark_all()  # the writer ends the connection
        else:
            self._reschedule()

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            self._scope = nursery.cancel_scope
            nursery.start_soon(self._writer, nursery.cancel_scope)
            self._reschedule()
            await self._reader()
            if not self.conn.closed:
                nursery.cancel_scope.cancel()  # the peer went away
            # Otherwise the writer flushes the last words (close-ok) and ends it;
            # wake it, since closing (on the client's close-ok) may have nothing to send.
            self.output.unpark_all()
        self._scope.cancel()  # stale timer entries find the connection over

    async def _reader(self) -> None:
        conn, stream, clock = self.conn, self.stream, self.clock
        while not conn.closed:
            # Backpressure is the engine's call (replies the client does not
            # read, a get or commit waiting for the disk).
            while not conn.wants_read():
                if conn.closed:
                    return
                await self.readable.park()
            try:
                data = await stream.receive_some(_RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not data:
                return
            conn.receive_data(bytes(data), clock.now())
            self._reschedule()  # the handshake or a close may have moved it

    async def _writer(self, scope: trio.CancelScope) -> None:
        conn, stream, clock = self.conn, self.stream, self.clock
        try:
            while True:
                while not conn.wants_write():
                    if conn.closed:
                        scope.cancel()
                        return
                    await self.output.park()
                data = conn.data_to_send(clock.now())
                self.readable.unpark_all()
                if data:
                    await stream.send_all(data)
                if conn.wants_write():
                    # Round again without parking: yield, since a raw socket's
                    # send is not a checkpoint unless its buffer is full.
                    await trio.lowlevel.checkpoint()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            scope.cancel()

