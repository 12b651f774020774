"""Which new connections a listener takes, and what it says about the rest.

Every listener (AMQP, AMQPS, the management API, Prometheus) takes its
sockets through a :class:`Gate`. Three bounds, checked at accept, so that
no peer that has not logged in can stop the broker or lock others out:

- the **descriptor budget**, shared by every listener: what the open-files
  limit leaves room for (descriptors.py). HTTP sockets count as AMQP ones
  do: 300 idle sockets on the management port under ``ulimit -n 256`` took
  the descriptors the memory watch needed, and the broker exited.
- the listener's own **pool** of connections not yet through login
  (``max_unauthenticated``). A shared pool let 1,000 stalled TLS handshakes
  refuse new clients on the plain port as well. An HTTP connection logs in
  per request, so it holds its place for as long as it is open.
- a **share per source address** of the connections not yet logged in,
  on all listeners together (``max_unauthenticated_per_address``, and never
  more than half the budget), so that a flood from one address leaves room
  for clients from others. A share per listener let one address hold 100
  sockets on each of five ports: under ``ulimit -n 256`` (a budget of 140)
  that spent the budget, and everyone was refused.

A flood makes thousands of refusals a second; :class:`Summary` says them
as one line per interval with a count, rather than one line each (the
1,000 stalled handshakes made 4,000 warning lines).
"""

from __future__ import annotations

import errno
import math
from typing import Any

import attrs
import trio

from ..log import get_logger

log = get_logger(__name__)

# accept() errors that mean "out of descriptors or memory": transient, so
# the gate waits and retries (as trio's serve_listeners does).
_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
_ACCEPT_RETRY = 0.1
#: Seconds between two lines about the same kind of refusal.
SUMMARY_INTERVAL = 10.0


@attrs.define(eq=False)
class Summary:
    """Warnings that repeat, said at most once per interval each: the first
    at once, the others counted and said by :meth:`run` at the end of the
    interval, as one line with their ``count`` and the last one's fields."""

    interval: float = SUMMARY_INTERVAL
    #: Per kind (event, reason and listener): when it was last said, and what is unsaid.
    _said: dict[tuple[str, str, str], float] = attrs.field(factory=dict)
    _unsaid: dict[tuple[str, str, str], tuple[int, str, dict[str, Any]]] = attrs.field(factory=dict)

    def note(self, level: str, event: str, reason: str, **fields: Any) -> None:
        key = (event, reason, str(fields.get("listener")))
        now = trio.current_time()
        if now - self._said.get(key, -math.inf) >= self.interval and key not in self._unsaid:
            self._said[key] = now
            getattr(log, level)(event, reason=reason, count=1, **fields)
            return
        count = self._unsaid[key][0] if key in self._unsaid else 0
        self._unsaid[key] = (count + 1, level, fields)

    def flush(self) -> None:
        """Say what was counted; kinds quiet for an interval are forgotten."""
        now = trio.current_time()
        for key, (count, level, fields) in self._unsaid.items():
            event, reason, _ = key
            getattr(log, level)(event, reason=reason, count=count, seconds=self.interval, **fields)
            self._said[key] = now
        self._unsaid.clear()
        self._said = {key: said for key, said in self._said.items() if now - said < self.interval}

    async def run(self) -> None:
        while True:
            await trio.sleep(self.interval)
            self.flush()


@attrs.define(eq=False)
class Budget:
    """What every listener shares: the sockets they may hold open together,
    and each source address's connections not yet logged in."""

    limit: int
    #: max_unauthenticated_per_address.
    per_address: int
    taken: int = 0
    #: Connections not yet logged in (HTTP ones: not closed), by source address, on every listener.
    by_address: dict[str, int] = attrs.field(factory=dict)

    @property
    def address_share(self) -> int:
        """The most connections one address may hold before login: its
        setting, but at most half the budget, so that others find room."""
        return max(1, min(self.per_address, self.limit // 2))


@attrs.define(eq=False)
class Gate:
    """One listener's admission: the shared budget and address shares, and
    its own pool of connections not yet logged in."""

    #: The setting that names the listener (port, tls_port, management_port, ...).
    listener: str
    budget: Budget
    pool: int
    summary: Summary
    #: Connections admitted and not yet logged in (or, for HTTP, not closed).
    unauthenticated: int = 0

    def refusal(self, address: str) -> str | None:
        """Why a connection from ``address`` cannot be taken now, if it cannot."""
        budget = self.budget
        if budget.taken >= budget.limit:
            return f"max_connections ({budget.limit}) reached"
        if self.unauthenticated >= self.pool:
            return f"max_unauthenticated ({self.pool}) connections not yet logged in"
        share = budget.address_share
        if budget.by_address.get(address, 0) >= share:
            bound = (f"max_unauthenticated_per_address ({share})" if share == budget.per_address
                     else f"half of max_connections ({share})")
            return f"{bound} connections from this address not yet logged in on any listener"
        return None

    def admit(self, address: str) -> Ticket | None:
        """A ticket for a connection from ``address``, or None (said in the summary)."""
        reason = self.refusal(address)
        if reason is not None:
            self.summary.note("warning", "connection.refused", reason, listener=self.listener, peer=address)
            return None
        budget = self.budget
        budget.taken += 1
        self.unauthenticated += 1
        budget.by_address[address] = budget.by_address.get(address, 0) + 1
        return Ticket(self, address)

    async def accept(self, listener: trio.SocketListener) -> tuple[trio.SocketStream, Ticket]:
        """The next connection this gate admits; the others are closed at
        once. Out of descriptors (or memory), or any other failure to
        accept, wait and retry: a listener never ends the broker."""
        while True:
            try:
                stream = await listener.accept()
            except OSError as error:
                hint = {"hint": "raise the open-files limit (ulimit -n) or lower max_connections"
                        } if error.errno in _CAPACITY_ERRNOS else {}
                self.summary.note("error", "broker.accept_failed", error.strerror or str(error),
                                  listener=self.listener, **hint)
                await trio.sleep(_ACCEPT_RETRY)
                continue
            try:
                address = stream.socket.getpeername()[0]
            except OSError:  # gone already
                await trio.aclose_forcefully(stream)
                continue
            ticket = self.admit(address)
            if ticket is None:
                await trio.aclose_forcefully(stream)
                continue
            return stream, ticket

    def listen(self, listener: trio.SocketListener) -> GatedListener:
        """``listener`` as a trio Listener that yields only admitted
        streams, each giving its place back when closed (for Hypercorn)."""
        return GatedListener(self, listener)


@attrs.define(eq=False)
class Ticket:
    """A connection's place: in its pool until it logs in, in the budget until it closes."""

    gate: Gate
    address: str
    _logged_in: bool = False
    _closed: bool = False

    def logged_in(self) -> None:
        """Through login: the pool and the address's share have room again."""
        if self._logged_in:
            return
        self._logged_in = True
        self.gate.unauthenticated -= 1
        by_address = self.gate.budget.by_address
        left = by_address[self.address] - 1
        if left:
            by_address[self.address] = left
        else:
            del by_address[self.address]

    def closed(self) -> None:
        if self._closed:
            return
        self.logged_in()
        self._closed = True
        self.gate.budget.taken -= 1


class GatedListener(trio.abc.Listener[trio.abc.Stream]):
    def __init__(self, gate: Gate, listener: trio.SocketListener) -> None:
        self.gate = gate
        self.listener = listener

    async def accept(self) -> GatedStream:
        stream, ticket = await self.gate.accept(self.listener)
        return GatedStream(stream, ticket)

    async def aclose(self) -> None:
        await self.listener.aclose()


class GatedStream(trio.abc.HalfCloseableStream):
    """A socket stream that gives its ticket back when closed. Hypercorn
    reads ``.socket`` from it for the peer's and its own address."""

    def __init__(self, stream: trio.SocketStream, ticket: Ticket) -> None:
        self.stream = stream
        self.socket = stream.socket
        self.ticket = ticket

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.stream.receive_some(max_bytes)

    async def send_eof(self) -> None:
        await self.stream.send_eof()

    async def aclose(self) -> None:
        self.ticket.closed()
        await self.stream.aclose()
