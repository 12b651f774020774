"""Exchanges and their routing tables.

A binding is (source, destination, routing key, arguments); the destination
is a queue or, for exchange-to-exchange bindings, another exchange. Each
exchange type keeps the index that makes its routing cheap: a dict for
direct, a set for fanout, a trie for topic, a list for headers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Hashable, Iterable, Protocol

from .. import defaults
from .dedup import deduplicator_for
from .delayed import HeldMessages
from .fieldtypes import freeze
from .hashing import (CONSISTENT_HASH, MODULUS_HASH, MURMUR2_HASH, ConsistentHashRouter, ModulusHashRouter,
                      Murmur2HashRouter)
from .headers import headers_match, validate_x_match
from .message import Message
from .ready import PagedRef
from .topic import TopicMatcher

if TYPE_CHECKING:
    from .journal import Journal
    from .vhost import VirtualHost

DIRECT = "direct"
FANOUT = "fanout"
TOPIC = "topic"
HEADERS = "headers"
DELAYED = "x-delayed-message"
ROUTING_TYPES = (DIRECT, FANOUT, TOPIC, HEADERS, CONSISTENT_HASH, MODULUS_HASH, MURMUR2_HASH)
#: Seconds before a due durable delayed message is tried again while the
#: journal refuses writes (see :meth:`Exchange.on_timer`).
HOLD_WHILE_STORE_FAILS = 1.0


class Router(Protocol):
    """The routing index of one exchange type. ``route`` gets the message
    too: the headers exchange matches its headers, the hashing exchanges
    may hash a header or a property (core/hashing.py)."""

    def add(self, destination: Any, routing_key: str, arguments: dict[str, Any]) -> None: ...

    def remove(self, destination: Any, routing_key: str, arguments: dict[str, Any]) -> None: ...

    def route(self, routing_key: str, message: Message) -> Iterable[Any]: ...


class DirectRouter:
    def __init__(self) -> None:
        self._table: dict[str, dict[Any, None]] = {}

    def add(self, destination: Any, routing_key: str, arguments: dict[str, Any]) -> None:
        self._table.setdefault(routing_key, {})[destination] = None

    def remove(self, destination: Any, routing_key: str, arguments: dict[str, Any]) -> None:
        dests = self._table.get(routing_key)
        if dests is not None:
            dests.pop(destination, None)
            if not dests:
                del self._table[routing_key]

    def route(self, routing_key: str, message: Message) -> Iterable[Any]:
        return self._table.get(routing_key, ())


class FanoutRouter:
    def __init__(self) -> None:
        # A destination bound with several keys still gets one copy; count them.
        self._dests: dict[Any, int] = {}

    def add(self, destination: Any, routing_key: str, arguments: dict[str, Any]) -> None:
        self._dests[destination] = self._dests.get(destination, 0) + 1

    def remove(self, destination: Any, routing_key: str, arguments: dict[str, Any]) -> None:
        left = self._dests.get(destination, 0) - 1
        if left > 0:
            self._dests[destination] = left
        else:
            self._dests.pop(destination, None)

    def route(self, routing_key: str, message: Message) -> Iterable[Any]:
        return self._dests


class TopicRouter:
    def __init__(self) -> None:
        self._matcher = TopicMatcher()

    def add(self, destination: Any, routing_key: str, arguments: dict[str, Any]) -> None:
        self._matcher.bind(routing_key, destination)

    def remove(self, destination: Any, routing_key: str, arguments: dict[str, Any]) -> None:
        self._matcher.unbind(routing_key, destination)

    def route(self, routing_key: str, message: Message) -> Iterable[Any]:
        return self._matcher.match(routing_key)


class HeadersRouter:
    def __init__(self) -> None:
        self._bindings: dict[tuple[Any, Hashable], dict[str, Any]] = {}

    def add(self, destination: Any, routing_key: str, arguments: dict[str, Any]) -> None:
        validate_x_match(arguments)
        self._bindings[(destination, freeze(arguments))] = arguments

    def remove(self, destination: Any, routing_key: str, arguments: dict[str, Any]) -> None:
        self._bindings.pop((destination, freeze(arguments)), None)

    def route(self, routing_key: str, message: Message) -> Iterable[Any]:
        headers = message.properties.headers
        return {dest for (dest, _), args in self._bindings.items() if headers_match(args, headers)}


ROUTERS: dict[str, Callable[[dict[str, Any]], Router]] = {
    DIRECT: lambda arguments: DirectRouter(),
    FANOUT: lambda arguments: FanoutRouter(),
    TOPIC: lambda arguments: TopicRouter(),
    HEADERS: lambda arguments: HeadersRouter(),
    CONSISTENT_HASH: ConsistentHashRouter,
    MODULUS_HASH: ModulusHashRouter,
    MURMUR2_HASH: Murmur2HashRouter,
}


class Exchange:
    def __init__(
        self,
        vhost: VirtualHost,
        name: str,
        type: str,
        *,
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: dict[str, Any] | None = None,
    ) -> None:
        self.vhost = vhost
        self.name = name
        self.type = type
        self.durable = durable
        self.auto_delete = auto_delete
        self.internal = internal
        self.arguments = dict(arguments or {})
        alternate = self.arguments.get("alternate-exchange")
        self.alternate: str | None = alternate if isinstance(alternate, str) else None
        self.routing_type = self.arguments.get("x-delayed-type", type) if type == DELAYED else type
        self.router = ROUTERS[self.routing_type](self.arguments)
        #: Outgoing bindings: (destination, routing key, args key) -> arguments.
        self.bindings: dict[tuple[Any, str, Hashable], dict[str, Any]] = {}
        #: Bindings that lead here (this exchange as a destination).
        self.incoming: set[tuple[Exchange, str, Hashable]] = set()
        #: How many outgoing bindings lead to exchanges; routing takes a
        #: shortcut when there are none.
        self.exchange_destinations = 0
        self.deleted = False
        # Delayed-message exchanges hold messages here until due.
        self.timer_at: float | None = None
        journal = vhost.broker.journal
        self.held = HeldMessages(journal.queue_budget if journal is not None else defaults.QUEUE_MEMORY_BUDGET)
        #: x-message-deduplication (core/dedup.py): duplicates are not routed.
        self.deduplicator = deduplicator_for(self.arguments, f"exchange '{name}' in vhost '{vhost.name}'")
        journal = vhost.broker.journal if durable else None
        if self.deduplicator is not None and journal is not None:
            self.deduplicator.on_taken = lambda value, expires_at: journal.dedup_taken(self, value, expires_at)
            self.deduplicator.on_forgotten = journal.dedup_forgotten
            self.deduplicator.on_refused = lambda value, segment: journal.dedup_refused(self, value, segment)

    @property
    def delayed(self) -> bool:
        return self.type == DELAYED

    def bind(self, destination: Any, routing_key: str, arguments: dict[str, Any]) -> bool:
        key = (destination, routing_key, freeze(arguments))
        if key in self.bindings:
            return False
        self.router.add(destination, routing_key, arguments)
        self.bindings[key] = arguments
        destination.incoming.add((self, routing_key, key[2]))
        if isinstance(destination, Exchange):
            self.exchange_destinations += 1
        journal = self._journal_for(destination)
        if journal is not None:
            journal.bound(self, destination, routing_key, arguments)
        return True

    def unbind(self, destination: Any, routing_key: str, arguments: dict[str, Any]) -> bool:
        key = (destination, routing_key, freeze(arguments))
        if self.bindings.pop(key, None) is None:
            return False
        self.router.remove(destination, routing_key, arguments)
        destination.incoming.discard((self, routing_key, key[2]))
        if isinstance(destination, Exchange):
            self.exchange_destinations -= 1
        journal = self._journal_for(destination)
        if journal is not None:
            journal.unbound(self, destination, routing_key, arguments)
        return True

    def _journal_for(self, destination: Any) -> Journal | None:
        """The journal, if this binding is durable: both ends durable, as in RabbitMQ."""
        journal = self.vhost.broker.journal
        if journal is None or not self.durable or not self.name:
            return None
        if isinstance(destination, Exchange):
            return journal if destination.durable else None
        return destination.journal

    def route(self, routing_key: str, message: Message) -> Iterable[Any]:
        return self.router.route(routing_key, message)

    # -- delayed delivery -----------------------------------------------

    @property
    def pending_count(self) -> int:
        return len(self.held)

    def hold(self, message: Message, due: float, now: float) -> None:
        journal = self.vhost.broker.journal
        segment = offset = 0
        msg_id = None
        if journal is not None and self.durable and message.persistent:
            segment, offset = journal.held(self, message, due)
        elif journal is not None:
            msg_id = journal.new_message_id()  # ids grow among journalled ones too
        if self.held.hold(message, due, now, segment, offset, msg_id) and journal is not None:
            journal.over_budget(self)  # pages out after the next write
        self.schedule()

    def schedule(self) -> None:
        """Set the timer for what is held next (after a hold or a restore)."""
        deadline = self.held.next_deadline()
        if deadline is not None:
            self.vhost.broker.timers.schedule(self, deadline)

    def on_timer(self, now: float) -> None:
        held = self.held
        journal = self.vhost.broker.journal
        while (first := held.peek_due()) is not None and first[0] <= now:
            message = first[1]
            if journal is not None and not journal.accepting and message.store_id is not None:
                # Its durable queues would refuse it while the disk fails, and it
                # would be lost: it stays held (on disk) until writes work again.
                self.vhost.broker.timers.schedule(self, now + HOLD_WHILE_STORE_FAILS)
                return
            held.pop()
            if journal is not None and message.store_id is not None:
                journal.released(self, message)
            self.vhost.release_delayed(self, message, now)
        if held.bring_back(now) and journal is not None:
            journal.wants_page_in(self)
        self.schedule()

    # -- scheduled messages: held messages by id ---------------------------

    def find_scheduled(self, text: str) -> list[int]:
        """The held messages a user's id names (see HeldMessages.lookup)."""
        return self.held.lookup(text)

    def cancel_scheduled(self, msg_id: int) -> bool:
        """Cancel a held message; False if nothing is held under that id."""
        segment = self.held.segment_of(msg_id)
        if segment is None or not self.held.cancel(msg_id):
            return False
        journal = self.vhost.broker.journal
        if journal is not None and segment:
            journal.cancelled(self, msg_id, segment)
        self.vhost.broker.stats.scheduled_changes["cancelled", "held"] += 1
        return True

    def reschedule(self, msg_id: int, due: float) -> bool:
        """Make a held message due at ``due`` (now: fire it now); False if
        nothing is held under that id."""
        segment = self.held.segment_of(msg_id)
        if segment is None or not self.held.reschedule(msg_id, due):
            return False
        journal = self.vhost.broker.journal
        if journal is not None and segment:
            journal.rescheduled(self, msg_id, due, segment)
        self.vhost.broker.stats.scheduled_changes["rescheduled", "held"] += 1
        self.schedule()
        return True

    def drop_pending(self) -> list[Message | None]:
        self.timer_at = None
        return self.held.drop_all()

    # -- paging of held messages (core/delayed.py), as the journal drives it

    @property
    def over_budget(self) -> bool:
        return self.held.has_unpaged

    def page_out(self) -> int:
        journal = self.vhost.broker.journal
        return 0 if journal is None or self.deleted else self.held.page_out(journal.is_written)

    def page_in_requests(self, low_water: int, batch: int) -> list[tuple[int, list[PagedRef]]]:
        return [] if self.deleted else self.held.page_in_requests()

    def paged_in(self, key: int, refs: list[PagedRef], messages: list[Message], now: float) -> None:
        self.held.paged_in(key, refs, messages)
        self.on_timer(now)

    def page_in_failed(self, key: int, refs: list[PagedRef], error: str) -> None:
        self.held.page_in_failed(key)
        self.schedule()


def delay_of(message: Message) -> float:
    """The x-delay header in seconds; zero or negative means route now."""
    headers = message.properties.headers
    if not headers:
        return 0.0
    delay = headers.get("x-delay")
    if isinstance(delay, bool) or not isinstance(delay, int | float):
        return 0.0
    return delay / 1000


def cancel_of(message: Message) -> str | None:
    """The id in an ``x-delay-cancel`` header, as text (a message_id, or a
    broker-assigned number given as a number or its digits; "" for a
    value that can be no id), or None without the header."""
    headers = message.properties.headers
    if not headers or "x-delay-cancel" not in headers:
        return None
    value = headers["x-delay-cancel"]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value
    return str(value) if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else ""
