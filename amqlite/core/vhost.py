"""A virtual host: its exchanges, queues and bindings, and message routing."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from . import deadletter
from .arguments import EQUIVALENCE_KEYS, check_equivalent, message_ttl, queue_settings, stream_settings
from .errors import AccessRefused, NotFound, PreconditionFailed, ResourceLocked
from .events import PublishOutcome
from .exchange import DELAYED, ROUTING_TYPES, Exchange, cancel_of, delay_of
from .groups import ConsumerGroup
from .hashing import CONSISTENT_HASH, validate_consistent_hash_arguments
from .message import Message
from .queue import Queue
from .stream import Stream

if TYPE_CHECKING:
    from .broker import Broker
    from .coordinator import Coordinator
    from .idempotence import ProducerIds
    from .transactions import TransactionCoordinator
    from .connection import Connection

#: Exchanges every vhost has, as in RabbitMQ: (name, type).
PREDECLARED = (
    ("", "direct"),
    ("amq.direct", "direct"),
    ("amq.fanout", "fanout"),
    ("amq.topic", "topic"),
    ("amq.headers", "headers"),
    ("amq.match", "headers"),
)

# Outcomes are immutable: share the common ones instead of building each.
ROUTED_TO_ONE = PublishOutcome(routed=1)
STREAMED_TO_ONE = PublishOutcome(routed=1, streamed=True)
#: A duplicate (core/dedup.py): not stored, yet confirmed, once what came
#: before it is on disk.
DUPLICATE = PublishOutcome(routed=0, duplicate=True)
REJECTED = PublishOutcome(routed=0, rejected=True)
UNROUTED = PublishOutcome(routed=0)
RETURNED = PublishOutcome(routed=0, returned=True)


def _reserved(kind: str, name: str) -> AccessRefused:
    return AccessRefused(f"{kind} name '{name}' contains reserved prefix 'amq.*'")


class VirtualHost:
    def __init__(self, broker: Broker, name: str) -> None:
        self.broker = broker
        self.name = name
        self.exchanges: dict[str, Exchange] = {}
        self.queues: dict[str, Queue] = {}
        #: RabbitMQ's vhost limits ("max-connections", "max-queues"); a
        #: negative value, like an absent one, means no limit.
        self.limits: dict[str, int] = {}
        #: Consumer groups on this vhost's streams (core/groups.py).
        self.groups: dict[str, ConsumerGroup] = {}
        #: Kafka's groups, when Kafka clients use this vhost (core/coordinator.py).
        self.coordinator: Coordinator | None = None
        #: Idempotent Kafka producers' ids (core/idempotence.py), made on first use.
        self.producer_ids: ProducerIds | None = None
        #: Kafka's transactional ids, once one is used (core/transactions.py).
        self.transactions: TransactionCoordinator | None = None
        for ex_name, ex_type in PREDECLARED:
            self.exchanges[ex_name] = Exchange(self, ex_name, ex_type, durable=True)

    def _where(self, kind: str, name: str) -> str:
        return f"{kind} '{name}' in vhost '{self.name}'"

    # -- exchanges ------------------------------------------------------

    def get_exchange(self, name: str) -> Exchange:
        exchange = self.exchanges.get(name)
        if exchange is None:
            raise NotFound(f"no {self._where('exchange', name)}")
        return exchange

    def declare_exchange(
        self,
        name: str,
        type: str,
        *,
        passive: bool = False,
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: dict[str, Any] | None = None,
    ) -> Exchange:
        if name == "":  # passive too, as in RabbitMQ
            raise AccessRefused("operation not permitted on the default exchange")
        if passive:
            return self.get_exchange(name)
        arguments = dict(arguments or {})
        if type != DELAYED and type not in ROUTING_TYPES:
            # A channel error, as since RabbitMQ 3.12 (rabbitmq-server #11214):
            # one typo must not close every other channel of the connection.
            raise PreconditionFailed(f"unknown exchange type '{type}'")
        if type == DELAYED and arguments.get("x-delayed-type") not in ROUTING_TYPES:
            raise PreconditionFailed("Invalid argument, 'x-delayed-type' must be an existing exchange type")
        if CONSISTENT_HASH in (type, arguments.get("x-delayed-type")):
            validate_consistent_hash_arguments(arguments)
        existing = self.exchanges.get(name)
        if existing is None:
            if name.startswith("amq."):
                raise _reserved("exchange", name)
            exchange = Exchange(
                self, name, type, durable=durable, auto_delete=auto_delete, internal=internal, arguments=arguments
            )
            self.exchanges[name] = exchange
            if durable and self.broker.journal is not None:
                self.broker.journal.exchange_declared(exchange)
            return exchange
        where = self._where("exchange", name)
        for field, mine, theirs in (
            ("type", existing.type, type),
            ("durable", existing.durable, durable),
            ("auto_delete", existing.auto_delete, auto_delete),
            ("internal", existing.internal, internal),
        ):
            if mine != theirs:
                raise PreconditionFailed(
                    f"inequivalent arg '{field}' for {where}: received '{str(theirs).lower()}' "
                    f"but current is '{str(mine).lower()}'"
                )
        check_equivalent("exchange", name, self.name, existing.arguments, arguments, ("alternate-exchange",))
        return existing

    def delete_exchange(self, name: str, *, if_unused: bool = False) -> None:
        if name == "":
            raise AccessRefused("operation not permitted on the default exchange")
        if name.startswith("amq."):  # checked first, as RabbitMQ: existing or not
            raise AccessRefused(f"deletion of system {self._where('exchange', name)} not allowed")
        exchange = self.exchanges.get(name)
        if exchange is None:
            return  # idempotent, as in RabbitMQ
        if if_unused and exchange.bindings:
            raise PreconditionFailed(f"{self._where('exchange', name)} in use")
        self._remove_exchange(exchange)

    def _remove_exchange(self, exchange: Exchange) -> None:
        del self.exchanges[exchange.name]
        if exchange.durable and self.broker.journal is not None:
            self.broker.journal.exchange_deleted(exchange)
        exchange.deleted = True
        if exchange.deduplicator is not None:
            exchange.deduplicator.forget_all()
        for message in exchange.drop_pending():
            self.broker.dropped(exchange.name, message, "exchange-deleted")
        for (destination, routing_key, _), arguments in list(exchange.bindings.items()):
            exchange.unbind(destination, routing_key, arguments)
        for source, routing_key, args_key in list(exchange.incoming):
            self._unbind_key(source, exchange, routing_key, args_key)

    def _unbind_key(self, source: Exchange, destination: Any, routing_key: str, args_key: Any) -> None:
        arguments = source.bindings[(destination, routing_key, args_key)]
        source.unbind(destination, routing_key, arguments)
        self._maybe_auto_delete(source)

    def _maybe_auto_delete(self, exchange: Exchange) -> None:
        if exchange.auto_delete and not exchange.bindings and not exchange.deleted:
            self._remove_exchange(exchange)

    def bind_exchange(self, destination: str, source: str, routing_key: str, arguments: dict[str, Any] | None) -> None:
        dest, src = self._bindable(destination, source)
        src.bind(dest, routing_key, dict(arguments or {}))

    def unbind_exchange(self, destination: str, source: str, routing_key: str, arguments: dict[str, Any] | None) -> None:
        if "" in (destination, source):
            raise AccessRefused("operation not permitted on the default exchange")
        dest, src = self.exchanges.get(destination), self.exchanges.get(source)
        if dest is None or src is None:
            return  # idempotent, as in RabbitMQ
        if src.unbind(dest, routing_key, dict(arguments or {})):
            self._maybe_auto_delete(src)

    def _bindable(self, destination: str, source: str) -> tuple[Exchange, Exchange]:
        if "" in (destination, source):
            raise AccessRefused("operation not permitted on the default exchange")
        return self.get_exchange(destination), self.get_exchange(source)

    # -- queues ---------------------------------------------------------

    def get_queue(self, name: str, owner: Connection | None = None) -> Queue:
        queue = self.queues.get(name)
        if queue is None:
            raise NotFound(f"no {self._where('queue', name)}")
        if queue.exclusive_owner is not None and queue.exclusive_owner is not owner:
            raise self._locked(name)
        return queue

    def _locked(self, name: str) -> ResourceLocked:
        return ResourceLocked(
            f"cannot obtain exclusive access to locked {self._where('queue', name)}. It could be "
            "originally declared on another connection or the exclusive property value does not "
            "match that of the original declaration."
        )

    def declare_queue(
        self,
        name: str,
        *,
        owner: Connection | None,
        now: float,
        passive: bool = False,
        durable: bool = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: dict[str, Any] | None = None,
        server_named: bool = False,
    ) -> Queue:
        """``server_named``: ``name`` is one the caller had the broker make
        up (``Broker.new_name``), so its ``amq.`` prefix is no reservation."""
        if passive:
            found = self.get_queue(name, owner)
            found.touch(now)
            return found
        if name == "":
            name = self.broker.new_name("amq.gen-", self.queues)
        elif name.startswith("amq.") and not server_named:
            # Even an existing (server-named) queue: RabbitMQ checks the name before
            # looking it up, so only a passive declare reaches an amq.* queue.
            raise _reserved("queue", name)
        existing = self.queues.get(name)
        limit = self.limits.get("max-queues", -1)
        if existing is None and 0 <= limit <= len(self.queues):
            raise PreconditionFailed(f"cannot declare queue '{name}': queue limit in vhost '{self.name}' ({limit}) "
                                     "is reached")
        arguments = dict(arguments or {})
        if existing is not None:
            self.get_queue(name, owner)  # exclusivity check
            if (existing.exclusive_owner is not None) != exclusive:
                raise self._locked(name)  # RabbitMQ says 405 here, not 406
            where = self._where("queue", name)
            for field, mine, theirs in (
                ("durable", existing.durable, durable),
                ("auto_delete", existing.auto_delete, auto_delete),
            ):
                if mine != theirs:
                    raise PreconditionFailed(
                        f"inequivalent arg '{field}' for {where}: received '{str(theirs).lower()}' "
                        f"but current is '{str(mine).lower()}'"
                    )
            check_equivalent("queue", name, self.name, existing.arguments, arguments, EQUIVALENCE_KEYS)
            existing.touch(now)
            return existing
        queue: Queue
        if arguments.get("x-queue-type") == "stream":
            settings = stream_settings(arguments, name, self.name, durable=durable, exclusive=exclusive,
                                       auto_delete=auto_delete)
            queue = Stream(self, name, settings, arguments=arguments, now=now)
        else:
            queue = Queue(
                self,
                name,
                queue_settings(arguments, name, self.name),
                durable=durable,
                exclusive_owner=owner if exclusive else None,
                auto_delete=auto_delete,
                arguments=arguments,
                now=now,
            )
        self.queues[name] = queue
        if queue.journal is not None:
            queue.journal.queue_declared(queue)
        if exclusive and owner is not None:
            owner.exclusive_queues.add(queue)
        # Every queue is bound to the default exchange by its name.
        self.exchanges[""].router.add(queue, name, {})
        return queue

    def delete_queue(self, queue: Queue, now: float, *, if_unused: bool = False, if_empty: bool = False) -> int:
        where = self._where("queue", queue.name)
        if if_unused and queue.consumers:
            raise PreconditionFailed(f"{where} in use")
        if if_empty and queue.message_count:
            raise PreconditionFailed(f"{where} not empty")
        if self.queues.get(queue.name) is not queue:
            return 0
        del self.queues[queue.name]
        if queue.journal is not None:
            queue.journal.queue_deleted(queue)
        self.exchanges[""].router.remove(queue, queue.name, {})
        for source, routing_key, args_key in list(queue.incoming):
            self._unbind_key(source, queue, routing_key, args_key)
        for consumer in list(queue.consumers):
            consumer.channel.server_cancel(consumer)
        queue.consumers.clear()
        if queue.exclusive_owner is not None:
            queue.exclusive_owner.exclusive_queues.discard(queue)
        return queue.close()

    def bind_queue(self, queue: str, exchange: str, routing_key: str, arguments: dict[str, Any] | None, owner: Connection | None) -> None:
        if exchange == "":
            raise AccessRefused("operation not permitted on the default exchange")
        target = self.get_queue(queue, owner)
        self.get_exchange(exchange).bind(target, routing_key, dict(arguments or {}))

    def unbind_queue(self, queue: str, exchange: str, routing_key: str, arguments: dict[str, Any] | None, owner: Connection | None) -> None:
        if exchange == "":
            raise AccessRefused("operation not permitted on the default exchange")
        if queue not in self.queues:
            return  # idempotent, as in RabbitMQ
        target = self.get_queue(queue, owner)
        source = self.exchanges.get(exchange)
        if source is not None and source.unbind(target, routing_key, dict(arguments or {})):
            self._maybe_auto_delete(source)

    # -- routing --------------------------------------------------------

    def publish(self, exchange_name: str, message: Message, mandatory: bool, now: float) -> PublishOutcome:
        exchange = self.exchanges.get(exchange_name)
        if exchange is None:
            raise NotFound(f"no {self._where('exchange', exchange_name)}")
        if exchange.internal:
            raise AccessRefused(f"cannot publish to internal {self._where('exchange', exchange_name)}")
        ttl = message_ttl(message.properties.expiration)
        deduplicator = exchange.deduplicator
        if deduplicator is not None and deduplicator.duplicate(message, now):
            self.broker.dropped(exchange_name, message, "duplicate")
            return DUPLICATE
        outcome = self._route_and_enqueue(exchange, message, ttl, mandatory, now)
        if deduplicator is not None and outcome.rejected:
            deduplicator.refused(message)  # nacked: the retry must get through
        return outcome

    def _route_and_enqueue(self, exchange: Exchange, message: Message, ttl: float | None, mandatory: bool,
                           now: float) -> PublishOutcome:
        exchange_name = exchange.name
        if exchange.delayed:
            cancel = cancel_of(message)
            if cancel is not None:
                found = sum(map(exchange.cancel_scheduled, exchange.find_scheduled(cancel)))
                return PublishOutcome(routed=0, returned=mandatory and not found, cancel=True)
            delay = delay_of(message)
            if delay > 0:
                exchange.hold(message, now + delay, now)
                return PublishOutcome(routed=0, delayed=True)
        delayers: list[Exchange] = []
        queues = self.route(exchange, message, None, delayers)
        if delayers:
            # Reached through exchange-to-exchange bindings, a delayed
            # exchange still delays (as the plugin does). Each holds a copy,
            # since storage tracks a held message apart from queued ones.
            due = now + delay_of(message)
            for delayer in delayers:
                delayer.hold(attrs.evolve(message, store_id=None, store_segment=0, store_refs=0), due, now)
            if not queues:
                return PublishOutcome(routed=0, delayed=True)
            return attrs.evolve(self._enqueue(queues, message, ttl, False, now, exchange_name), delayed=True)
        return self._enqueue(queues, message, ttl, mandatory, now, exchange_name)

    def release_delayed(self, exchange: Exchange, message: Message, now: float) -> None:
        ttl = message_ttl(message.properties.expiration)
        self._enqueue(self.route(exchange, message, None), message, ttl, False, now, exchange.name)

    def _enqueue(
        self, queues: list[Queue], message: Message, ttl: float | None, mandatory: bool, now: float, exchange: str
    ) -> PublishOutcome:
        stats = self.broker.stats
        if not queues:
            self.broker.dropped(exchange, message, "unroutable")
            if mandatory:
                stats.unroutable_returned += 1
                return RETURNED
            stats.unroutable_dropped += 1
            return UNROUTED
        stats.routed += 1
        headers = message.properties.headers
        if headers and "BCC" in headers:
            # BCC routes but is never delivered, as in RabbitMQ.
            bcc = headers["BCC"]
            headers = {k: v for k, v in headers.items() if k != "BCC"}
            message = Message(
                message.exchange, message.routing_key, message.properties._replace(headers=headers), message.body,
                bcc=tuple(k for k in bcc if isinstance(k, str)) if isinstance(bcc, list) else (),
            )
        if len(queues) == 1:
            queue = queues[0]
            if queue.deduplicator is not None and queue.deduplicator.duplicate(message, now):
                self.broker.dropped(queue.name, message, "duplicate")
                return DUPLICATE
            if not queue.enqueue(message, ttl, now):
                if queue.deduplicator is not None:
                    queue.deduplicator.refused(message)
                return REJECTED
            return STREAMED_TO_ONE if queue.is_stream else ROUTED_TO_ONE
        routed = 0
        streamed = duplicate = refused = False
        for queue in queues:
            if queue.deduplicator is not None and queue.deduplicator.duplicate(message, now):
                self.broker.dropped(queue.name, message, "duplicate")
                duplicate = True
                continue
            taken = queue.enqueue(message, ttl, now)
            if not taken and queue.deduplicator is not None:
                queue.deduplicator.refused(message)
            routed += taken
            refused |= not taken
            streamed |= taken and queue.is_stream
        return PublishOutcome(routed=routed, rejected=refused, streamed=streamed, duplicate=duplicate)

    def route(
        self, exchange: Exchange, message: Message, keys: list[str] | None, delayers: list[Exchange] | None = None
    ) -> list[Queue]:
        """Every queue the message reaches, each once, following
        exchange-to-exchange bindings and alternate exchanges. Delayed
        exchanges met on the way go into ``delayers`` instead, when given
        and the message asks for a delay."""
        headers = message.properties.headers
        if keys is None:
            if headers and ("CC" in headers or "BCC" in headers):
                keys = deadletter.routing_keys(message)
            elif not exchange.exchange_destinations and exchange.alternate is None:
                # The common case: one key, straight to queues.
                return list(exchange.route(message.routing_key, message))
        queues: dict[Queue, None] = {}
        seen = {exchange}
        pending = [exchange]
        while pending:
            source = pending.pop()
            if keys is None:
                destinations = source.route(message.routing_key, message)
            else:
                destinations = {d for key in keys for d in source.route(key, message)}
            if not destinations and source.alternate is not None:
                alternate = self.exchanges.get(source.alternate)
                if alternate is not None and alternate not in seen:
                    seen.add(alternate)
                    pending.append(alternate)
                continue
            for dest in destinations:
                if isinstance(dest, Queue):
                    queues[dest] = None
                elif dest not in seen:
                    seen.add(dest)
                    if delayers is not None and dest.delayed and delay_of(message) > 0:
                        delayers.append(dest)
                    else:
                        pending.append(dest)
        return list(queues)

    def dead_letter(self, queue: Queue, message: Message, reason: str, now: float) -> None:
        settings = queue.settings
        dlx_name = settings.dead_letter_exchange
        assert dlx_name is not None
        dlx = self.exchanges.get(dlx_name)
        if dlx is None:
            self.broker.dropped(queue.name, message, f"{reason}:no-dead-letter-exchange")
            return
        routing_key = settings.dead_letter_routing_key
        keys = [routing_key] if routing_key is not None else deadletter.routing_keys(message)
        letter = deadletter.dead_letter(message, queue.name, reason, now, dlx_name, routing_key)
        targets = self.route(dlx, letter, keys)
        if reason != deadletter.REJECTED:
            targets = [q for q in targets if not deadletter.is_cycle(letter, q.name)]
        if not targets:
            self.broker.dropped(queue.name, letter, f"{reason}:dead-letter-unroutable")
            return
        ttl = message_ttl(letter.properties.expiration)
        for target in targets:
            # A target that refuses the letter reports the drop itself.
            target.enqueue(letter, ttl, now)
