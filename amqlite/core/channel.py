"""A channel: the unit of work of a client.

It owns delivery tags, unacknowledged deliveries, prefetch, publisher
confirm numbering and transactions. Each method maps onto one AMQP method,
so the protocol layer and the embedded API share one model.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Any, Callable, Iterable

from .arguments import amqp_type
from .consumer import Consumer
from .errors import ChannelStateError, NotAllowed, NotImplemented_, NotFound, PreconditionFailed
from .events import AckTimedOut, ConsumerCancelled, Deliver, GetResult, PublishOutcome, WaitForDisk
from .exchange import Exchange
from .fieldtypes import MAX_NESTING, nesting
from .message import EMPTY_PROPERTIES, Entry, Message, Properties
from .settlement import Settlement
from .queue import Queue
from .redrive import redrive

if TYPE_CHECKING:
    from .connection import Connection

#: Deliveries handed to a channel but not yet taken by its driver. This bounds
#: what a slow reader (or a no-ack consumer) can make the broker buffer.
DEFAULT_BUFFER_LIMIT = 1000

#: An unacked delivery: the entry, its queue, its consumer (None for
#: basic.get) and when it was delivered (the visible age, core/inflight.py).
Unacked = tuple[Entry, Queue, "Consumer | None", float]

# Rebuild the deadline heap once stale items outnumber live ones by this much.
_COMPACT_SLACK = 1024


class Channel:
    def __init__(self, connection: Connection, number: int) -> None:
        self.connection = connection
        self.number = number
        self.vhost = connection.vhost
        self.broker = connection.broker
        self.access = connection.access
        #: Exchanges this channel passed the write check for, when the user
        #: has no topic permissions: the check then depends on the name
        #: alone, and the user's rights are fixed for the connection.
        self._writable: set[str] = set()
        self.stats = connection.broker.stats
        self.consumers: dict[str, Consumer] = {}
        self.unacked: OrderedDict[int, Unacked] = OrderedDict()
        self._next_tag = 0
        #: basic.qos prefetch_count for consumers started from now on.
        self.prefetch = 0
        #: basic.qos with global=true: a limit on the channel's unacked total.
        self.global_prefetch = 0
        #: Unacked deliveries to consumers; what global prefetch counts
        #: (basic.get is not subject to prefetch, as in RabbitMQ).
        self.consumer_unacked = 0
        self.buffered = 0
        self.buffer_limit = DEFAULT_BUFFER_LIMIT
        self.outbox: deque[Deliver | ConsumerCancelled | AckTimedOut] = deque()
        #: Called when the outbox becomes non-empty; a driver's wake-up.
        self.notify: Callable[[], None] | None = None
        self.confirm = False
        #: Sequence number of the last publish in confirm mode.
        self.publish_seq = 0
        self.transactional = False
        self._tx_publishes: list[tuple[str, Message, bool]] = []
        self._tx_settles: list[tuple[int, Unacked, Settlement]] = []
        #: The journal position the last commit's unit needs on disk (0: none).
        self.committed_at = 0
        self.closed = False
        #: Consumer timeouts: (deadline, delivery tag, timeout) for the
        #: deliveries that have one, earliest first. Settled tags stay
        #: behind until they reach the top or the heap is compacted.
        self._deadlines: list[tuple[float, int, float]] = []
        #: The broker's timers call :meth:`on_timer` at this time.
        self.timer_at: float | None = None
        #: Queues with message groups that a settlement here may have let
        #: move on (the next of a group): they deliver at the next redispatch,
        #: to whichever consumer, like a requeue's queue.
        self._groups_moved: dict[Queue, None] = {}

    def _require_open(self) -> None:
        # A closed channel must not declare, publish or register a consumer
        # that nobody will ever serve (a zombie on an exclusive queue).
        if self.closed:
            raise ChannelStateError(f"channel {self.number} is closed")

    # -- exchanges and queues -------------------------------------------

    # Permission checks (self.access) come before anything is looked up,
    # with RabbitMQ's mapping: see core/permissions.py.

    def declare_exchange(self, name: str, type: str = "direct", **options: Any) -> Exchange:
        self._require_open()
        access = self.access
        if access is not None and not options.get("passive"):
            access.configure("exchange", name)
            alternate = (options.get("arguments") or {}).get("alternate-exchange")
            if isinstance(alternate, str):
                access.read("exchange", name)
                access.write("exchange", alternate)
        return self.vhost.declare_exchange(name, type, **options)

    def delete_exchange(self, name: str, *, if_unused: bool = False) -> None:
        self._require_open()
        if self.access is not None:
            self.access.configure("exchange", name)
        self.vhost.delete_exchange(name, if_unused=if_unused)

    def _check_binding(self, kind: str, destination: str, source: str, routing_key: str) -> None:
        access = self.access
        if access is not None:
            access.write(kind, destination)
            access.read("exchange", source)
            exchange = self.vhost.exchanges.get(source)
            if exchange is not None and exchange.type == "topic":
                access.topic_read(source, routing_key)

    def bind_exchange(self, destination: str, source: str, routing_key: str = "", arguments: dict[str, Any] | None = None) -> None:
        self._require_open()
        self._check_binding("exchange", destination, source, routing_key)
        self.vhost.bind_exchange(destination, source, routing_key, arguments)

    def unbind_exchange(self, destination: str, source: str, routing_key: str = "", arguments: dict[str, Any] | None = None) -> None:
        self._require_open()
        self._check_binding("exchange", destination, source, routing_key)
        self.vhost.unbind_exchange(destination, source, routing_key, arguments)

    def declare_queue(self, name: str = "", *, now: float, **options: Any) -> Queue:
        self._require_open()
        access = self.access
        if access is not None and not options.get("passive"):
            if name == "":
                # Server-named: RabbitMQ checks the name it made up.
                name = self.broker.new_name("amq.gen-", self.vhost.queues)
                access.configure("queue", name)
                return self.vhost.declare_queue(name, owner=self.connection, now=now, server_named=True, **options)
            access.configure("queue", name)
            dead_letter_exchange = (options.get("arguments") or {}).get("x-dead-letter-exchange")
            if isinstance(dead_letter_exchange, str):
                access.read("queue", name)
                access.write("exchange", dead_letter_exchange)
        return self.vhost.declare_queue(name, owner=self.connection, now=now, **options)

    def bind_queue(self, queue: str, exchange: str, routing_key: str = "", arguments: dict[str, Any] | None = None) -> None:
        self._require_open()
        self._check_binding("queue", queue, exchange, routing_key)
        self.vhost.bind_queue(queue, exchange, routing_key, arguments, self.connection)

    def unbind_queue(self, queue: str, exchange: str, routing_key: str = "", arguments: dict[str, Any] | None = None) -> None:
        self._require_open()
        self._check_binding("queue", queue, exchange, routing_key)
        self.vhost.unbind_queue(queue, exchange, routing_key, arguments, self.connection)

    def purge_queue(self, name: str) -> int:
        self._require_open()
        if self.access is not None:
            self.access.read("queue", name)
        return self.vhost.get_queue(name, self.connection).purge()

    def redrive_queue(self, name: str, *, now: float, to: str | None = None, limit: int | None = None) -> int:
        """Move dead-lettered messages back where they died (see core/redrive.py)."""
        self._require_open()
        if self.access is not None:
            self.access.read("queue", name)
            if to is not None:
                self.access.write("queue", to)
        if to is not None:
            self.vhost.get_queue(to, self.connection)  # exists, and ours to use
        return redrive(self.vhost, self.vhost.get_queue(name, self.connection), now, to=to, limit=limit)

    def delete_queue(self, name: str, *, now: float, if_unused: bool = False, if_empty: bool = False) -> int:
        self._require_open()
        if self.access is not None:
            self.access.configure("queue", name)
        if name not in self.vhost.queues:
            return 0  # idempotent, as in RabbitMQ
        queue = self.vhost.get_queue(name, self.connection)
        return self.vhost.delete_queue(queue, now, if_unused=if_unused, if_empty=if_empty)

    # -- consumers ------------------------------------------------------

    def qos(self, prefetch_count: int, *, global_: bool = False, prefetch_size: int = 0, now: float) -> None:
        self._require_open()
        if prefetch_size:
            raise NotImplemented_(f"prefetch_size!=0 ({prefetch_size})")
        if global_:
            self.global_prefetch = prefetch_count
        else:
            # Differs from RabbitMQ, which applies it only to consumers started
            # afterwards: Celery raises the prefetch of its running consumer
            # while it holds countdown tasks, and stalls otherwise (as LavinMQ
            # does; rabbitmq-server #11948).
            self.prefetch = prefetch_count
            for consumer in self.consumers.values():
                consumer.prefetch = prefetch_count
        self._redispatch(now)

    def consume(
        self,
        queue: str,
        *,
        now: float,
        consumer_tag: str = "",
        no_ack: bool = False,
        exclusive: bool = False,
        arguments: dict[str, Any] | None = None,
    ) -> str:
        self._require_open()
        if self.access is not None:
            self.access.read("queue", queue)
        target = self.vhost.get_queue(queue, self.connection)
        if not consumer_tag:
            consumer_tag = self.broker.new_name("amq.ctag-", self.consumers)
        elif consumer_tag in self.consumers:
            raise NotAllowed(f"attempt to reuse consumer tag '{consumer_tag}'")
        arguments = dict(arguments or {})
        priority = arguments.get("x-priority", 0)
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise PreconditionFailed(  # RabbitMQ's wording
                f"invalid arg 'x-priority' for queue '{target.name}' in vhost '{self.vhost.name}': "
                f'"expected integer, got {amqp_type(priority)}"'
            )
        consumer = Consumer(
            tag=consumer_tag,
            channel=self,
            queue=target,
            no_ack=no_ack,
            exclusive=exclusive,
            priority=priority,
            prefetch=self.prefetch,
            arguments=arguments,
            timeout=self._consumer_timeout(target, arguments),
        )
        self.consumers[consumer_tag] = consumer
        try:
            target.add_consumer(consumer, now)
        except Exception:
            del self.consumers[consumer_tag]  # refused: queue in exclusive use
            raise
        return consumer_tag

    def _consumer_timeout(self, queue: Queue, arguments: dict[str, Any]) -> float | None:
        """The queue's timeout (or the broker's default), lowered by the
        consumer's own x-consumer-timeout: a consumer may ask to be held to
        less, never to more than the operator allows."""
        timeout = queue.consumer_timeout
        mine = arguments.get("x-consumer-timeout")
        if mine is None or queue.is_stream:
            return timeout
        if isinstance(mine, bool) or not isinstance(mine, int) or mine < 0:
            raise PreconditionFailed(
                f"invalid arg 'x-consumer-timeout' for queue '{queue.name}' in vhost '{self.vhost.name}': "
                f'"expected a non-negative integer of milliseconds, got {mine!r}"'
            )
        return mine / 1000 if timeout is None else min(timeout, mine / 1000)

    def cancel(self, consumer_tag: str, *, now: float, undelivered: Iterable[int] = ()) -> bool:
        """Stop a consumer. ``undelivered`` names deliveries the driver
        still holds and will never hand on (an embedded consumer's buffer):
        they go back to their queue at their original position and, since
        nobody saw them, do not count as a delivery attempt."""
        self._require_open()
        consumer = self.consumers.pop(consumer_tag, None)
        if consumer is None:
            return False  # unknown tags are ignored, as in RabbitMQ
        queue = consumer.queue
        queue.remove_consumer(consumer, now)
        returned = 0
        for tag in undelivered:
            returned += 1
            record = self.unacked.pop(tag, None)
            if record is None:
                continue  # settled meanwhile, e.g. by an ack with multiple
            consumer.unacked -= 1
            self.consumer_unacked -= 1
            queue.unlend(record[0], now)
        if returned:
            self.delivered(returned, now=now)
            queue.dispatch(now)  # other consumers may take them now
        return True

    def server_cancel(self, consumer: Consumer) -> None:
        """The queue went away under the consumer: tell the client."""
        if self.consumers.pop(consumer.tag, None) is not None:
            self._emit(ConsumerCancelled(consumer.tag))

    # -- publishing -----------------------------------------------------

    def publish(
        self,
        body: bytes,
        *,
        now: float,
        exchange: str = "",
        routing_key: str = "",
        properties: Properties = EMPTY_PROPERTIES,
        mandatory: bool = False,
    ) -> PublishOutcome | None:
        # Over AMQP the decoder has bounded this already; in process, check
        # here, or a message could be accepted that no encoder can write.
        if properties.headers and nesting(properties.headers) > MAX_NESTING:
            raise PreconditionFailed(f"headers nest deeper than {MAX_NESTING} levels")
        message = Message(exchange, routing_key, properties, body)
        return self.publish_message(message, mandatory=mandatory, now=now)

    def publish_message(self, message: Message, *, mandatory: bool, now: float) -> PublishOutcome | None:
        """Route one message. In a transaction it is held until commit
        (and None is returned); otherwise the outcome says where it went."""
        self._require_open()
        access = self.access
        # RabbitMQ checks user_id against the authenticated user (the
        # management API's channel acts as one too), so consumers can trust it.
        user_id = message.properties.user_id
        if user_id is not None and access is not None and user_id != access.user:
            raise PreconditionFailed(f"user_id property set to '{user_id}' but authenticated user was '{access.user}'")
        if access is not None and message.exchange not in self._writable:
            access.write("exchange", message.exchange)
            if access.topics:
                exchange = self.vhost.exchanges.get(message.exchange)
                if exchange is not None and exchange.type == "topic":
                    access.topic_write(message.exchange, message.routing_key)
            else:
                self._writable.add(message.exchange)
        limit = self.broker.max_message_size
        if len(message.body) > limit:
            raise PreconditionFailed(f"message size {len(message.body)} is larger than configured max size {limit}")
        stats = self.stats
        stats.received += 1
        if self.confirm:
            self.publish_seq += 1
            stats.received_confirm += 1
        if self.transactional:
            if message.exchange not in self.vhost.exchanges:
                raise NotFound(f"no exchange '{message.exchange}' in vhost '{self.vhost.name}'")
            self._tx_publishes.append((message.exchange, message, mandatory))
            return None
        return self.vhost.publish(message.exchange, message, mandatory, now)

    # -- deliveries -----------------------------------------------------

    def deliver(self, consumer: Consumer, queue: Queue, entry: Entry, now: float) -> None:
        """Called by a queue that chose ``consumer`` for ``entry``."""
        self._next_tag += 1
        tag = self._next_tag
        stats = self.stats
        if consumer.no_ack:
            queue.settle(entry)
            stats.delivered_consume_auto_ack += 1
        else:
            queue.lend(entry)
            consumer.unacked += 1
            self.consumer_unacked += 1
            self.unacked[tag] = (entry, queue, consumer, now)
            stats.delivered_consume_manual_ack += 1
            if consumer.timeout is not None:
                self._watch(tag, consumer.timeout, now)
        self._count_delivery(queue, entry)
        self.buffered += 1
        self._emit(Deliver(consumer.tag, tag, entry.redelivered, entry.message, entry.delivery_count,
                           entry.seq if queue.is_stream else None))

    def _count_delivery(self, queue: Queue, entry: Entry) -> None:
        """The counts every delivery adds to, consumed or got."""
        counts = queue.stats
        counts.deliver_get += 1
        if entry.redelivered:
            self.stats.redelivered += 1
            counts.redeliver += 1

    def _emit(self, event: Deliver | ConsumerCancelled | AckTimedOut) -> None:
        self.outbox.append(event)
        if len(self.outbox) == 1 and self.notify is not None:
            self.notify()

    def delivered(self, count: int, *, now: float) -> None:
        """The driver handed ``count`` deliveries on; room for more."""
        was_full = self.buffered >= self.buffer_limit
        self.buffered -= count
        if was_full and self.buffered < self.buffer_limit:
            self._redispatch(now)

    def get(self, queue: str, *, now: float, no_ack: bool = False) -> GetResult | WaitForDisk | None:
        """basic.get: the message, WAIT_FOR_DISK (ask again once storage
        moves on), or None when the queue is empty."""
        self._require_open()
        if self.access is not None:
            self.access.read("queue", queue)
        target = self.vhost.get_queue(queue, self.connection)
        entry = target.fetch(now)
        stats = self.stats
        if not isinstance(entry, Entry):
            if entry is None:
                stats.get_empty += 1
            return entry
        self._next_tag += 1
        tag = self._next_tag
        if no_ack:
            target.settle(entry)
            stats.delivered_get_auto_ack += 1
        else:
            target.lend(entry)
            self.unacked[tag] = (entry, target, None, now)
            stats.delivered_get_manual_ack += 1
            timeout = target.consumer_timeout
            if timeout is not None:
                self._watch(tag, timeout, now)
        self._count_delivery(target, entry)
        return GetResult(tag, entry.redelivered, entry.message, target.message_count, entry.delivery_count)

    # -- consumer timeouts ----------------------------------------------

    def _watch(self, tag: int, timeout: float, now: float) -> None:
        """Delivery ``tag`` must be settled within ``timeout`` seconds."""
        deadlines = self._deadlines
        heapq.heappush(deadlines, (now + timeout, tag, timeout))
        if len(deadlines) > 2 * len(self.unacked) + _COMPACT_SLACK:
            self._deadlines = [item for item in deadlines if item[1] in self.unacked]
            heapq.heapify(self._deadlines)
        self.broker.timers.schedule(self, now + timeout)

    def on_timer(self, now: float) -> None:
        """A consumer timeout may have passed: if a delivery is still
        unacked past it, close the channel with RabbitMQ's 406 (which
        requeues everything it held); otherwise wait for the next one."""
        if self.closed:
            return
        deadlines, unacked = self._deadlines, self.unacked
        while deadlines and deadlines[0][1] not in unacked:
            heapq.heappop(deadlines)
        if not deadlines:
            return
        deadline, tag, timeout = deadlines[0]
        if deadline > now:
            self.broker.timers.schedule(self, deadline)
            return
        _, queue, consumer, _ = unacked[tag]
        error = PreconditionFailed(
            f"delivery acknowledgement on channel {self.number} timed out. Timeout value used: "
            f"{round(timeout * 1000)} ms. This timeout value can be configured, see consumers doc guide "
            "to learn more"
        )
        self.close(now=now)
        self._emit(AckTimedOut(error, consumer.tag if consumer is not None else None, queue.name, tag))

    def _redispatch(self, now: float, requeued: Iterable[Queue] = ()) -> None:
        """Let queues deliver again: those this channel consumes from (its
        credit may have grown) and those it just requeued messages to, whose
        other consumers may be waiting for them."""
        consumers = self.consumers
        queues = dict.fromkeys(requeued)
        if len(consumers) == 1 and not queues:
            next(iter(consumers.values())).queue.dispatch(now)
            return
        for consumer in consumers.values():
            queues[consumer.queue] = None
        for queue in queues:
            queue.dispatch(now)

    # -- acknowledgements -----------------------------------------------

    def _take(self, delivery_tag: int, multiple: bool) -> list[tuple[int, Unacked]]:
        self._require_open()
        unacked = self.unacked
        if not multiple:
            record = unacked.pop(delivery_tag, None)
            if record is None:
                raise PreconditionFailed(f"unknown delivery tag {delivery_tag}")
            return [(delivery_tag, record)]
        if delivery_tag and delivery_tag not in unacked:
            # As RabbitMQ: the tag itself must be outstanding, and then
            # nothing is settled, even if smaller tags are.
            raise PreconditionFailed(f"unknown delivery tag {delivery_tag}")
        taken = []
        while unacked:
            tag = next(iter(unacked))
            if delivery_tag and tag > delivery_tag:
                break
            taken.append(unacked.popitem(last=False))
        return taken

    def ack(self, delivery_tag: int, *, now: float, multiple: bool = False, redispatch: bool = True) -> None:
        """``redispatch=False`` leaves the credit the ack returns unused
        until :meth:`redispatch`: a driver handling many acks at once
        (the AMQP engine, a read's worth) fills it once, after the last."""
        self._settle(self._take(delivery_tag, multiple), Settlement.ACK, now, redispatch)

    def ack_each(self, delivery_tags: list[int], *, now: float) -> None:
        """basic.ack of each of ``delivery_tags`` (multiple off), in order,
        as :meth:`ack` with ``redispatch=False`` would one by one: a
        consumer acking every message sends runs of acks, and the driver
        hands over a read's worth. An unknown tag raises once the acks
        before it are settled."""
        self._require_open()
        unacked = self.unacked
        records: list[tuple[int, Unacked]] = []
        for tag in delivery_tags:
            record = unacked.pop(tag, None)
            if record is None:
                self._settle(records, Settlement.ACK, now, False)
                raise PreconditionFailed(f"unknown delivery tag {tag}")
            records.append((tag, record))
        self._settle(records, Settlement.ACK, now, False)

    def nack(self, delivery_tag: int, *, now: float, multiple: bool = False, requeue: bool = True) -> None:
        records = self._refuse_for_streams(self._take(delivery_tag, multiple))
        self._settle(records, Settlement.REQUEUE if requeue else Settlement.REJECT, now)

    def reject(self, delivery_tag: int, *, now: float, requeue: bool = True) -> None:
        records = self._refuse_for_streams(self._take(delivery_tag, False))
        self._settle(records, Settlement.REQUEUE if requeue else Settlement.REJECT, now)

    def _refuse_for_streams(self, records: list[tuple[int, Unacked]]) -> list[tuple[int, Unacked]]:
        """RabbitMQ closes the connection on a nack or reject of a stream's
        delivery. The records go back first, so that the close requeues
        what other queues lent."""
        for _, (_, queue, _, _) in records:
            if queue.is_stream:
                self.unacked.update(records)
                self.unacked = OrderedDict(sorted(self.unacked.items()))
                raise NotImplemented_("basic.nack and basic.reject not supported by stream queues "
                                      f"queue '{queue.name}' in vhost '{self.vhost.name}'")
        return records

    def recover(self, *, now: float, requeue: bool = True) -> None:
        if not requeue:
            raise NotImplemented_("requeue=false")
        self._settle(self._take(0, True), Settlement.RETURN, now)

    def _settle(self, records: list[tuple[int, Unacked]], how: Settlement, now: float,
                redispatch: bool = True) -> None:
        if self.transactional:
            self._tx_settles.extend((tag, record, how) for tag, record in records)
            return
        self._apply(records, how, now)
        requeued = [queue for _, (_, queue, _, _) in records] if how is not Settlement.ACK and how.requeues else ()
        moved = self._groups_moved
        if requeued or (redispatch and (self.consumers or moved)):
            if moved:
                requeued = [*requeued, *self._take_groups_moved()]
            self._redispatch(now, requeued)

    def redispatch(self, now: float) -> None:
        """Let the queues this channel consumes from deliver to it again
        (after acks taken with ``redispatch=False``)."""
        if self.consumers or self._groups_moved:
            self._redispatch(now, self._take_groups_moved())

    def _take_groups_moved(self) -> list[Queue]:
        if not self._groups_moved:
            return []
        moved, self._groups_moved = list(self._groups_moved), {}
        return moved

    def _apply(self, records: list[tuple[int, Unacked]], how: Settlement, now: float) -> None:
        if how is Settlement.ACK:
            self.stats.acknowledged += len(records)
        for _, (entry, queue, consumer, _) in records:
            if consumer is not None:
                consumer.unacked -= 1
                self.consumer_unacked -= 1
            if queue.groups is not None:
                self._groups_moved[queue] = None
            if how is Settlement.ACK:
                queue.settle(entry)
                queue.stats.ack += 1
            else:
                queue.give_back(entry, how.requeues, now, failed=how is not Settlement.RETURN)

    # -- confirms and transactions --------------------------------------

    def confirm_select(self) -> None:
        self._require_open()
        if self.transactional:
            raise PreconditionFailed("cannot switch from tx to confirm mode")
        self.confirm = True

    def tx_select(self) -> None:
        self._require_open()
        if self.confirm:
            raise PreconditionFailed("cannot switch from confirm to tx mode")
        self.transactional = True

    def _require_tx(self) -> None:
        self._require_open()
        if not self.transactional:
            raise PreconditionFailed("channel is not transactional")

    def tx_commit(self, *, now: float) -> list[tuple[Message, PublishOutcome]]:
        """Apply the held publishes and settlements, in order, as one
        atomic unit of the journal: after a crash all of it or none of it
        is found (messages, acks and the consumer groups' offsets those
        acks move). A publish that fails or is refused fails the commit
        (PreconditionFailed, RabbitMQ's "partial tx completion") with the
        publishes before it applied, as RabbitMQ leaves them, but none of
        the acks. Returns each publish's outcome so the caller can send
        basic.return for mandatory messages that reached no queue; the
        unit is on disk once the journal's ``synced`` reaches
        :attr:`committed_at`."""
        self._require_tx()
        publishes, self._tx_publishes = self._tx_publishes, []
        settles = self._tx_settles
        journal = self.broker.journal
        if journal is not None:
            journal.begin_unit()
        try:
            outcomes = [
                (message, self.vhost.publish(exchange, message, mandatory, now))
                for exchange, message, mandatory in publishes
            ]
            # A publish that failed (its exchange deleted meanwhile) or that a
            # queue refused (the disk alarm, reject-publish) fails the commit
            # before its acks are applied: they stay held, and the channel's
            # close requeues them, so no input is taken without its output.
            if any(outcome.rejected for _, outcome in outcomes):
                raise PreconditionFailed("partial tx completion")
            self._tx_settles = []
            for tag, record, how in settles:
                self._apply([(tag, record)], how, now)
        finally:
            if journal is not None:
                self.committed_at = journal.end_unit()
        requeued = [queue for _, (_, queue, _, _), how in settles if how.requeues] + self._take_groups_moved()
        if self.consumers or requeued:
            self._redispatch(now, requeued)
        return outcomes

    def tx_rollback(self) -> None:
        """Forget held publishes; settlements are undone, so those
        deliveries are unacked again (as in RabbitMQ)."""
        self._require_tx()
        self._rollback()

    def _rollback(self) -> None:
        self._tx_publishes.clear()
        for tag, record, _ in self._tx_settles:
            self.unacked[tag] = record
        self._tx_settles.clear()
        self.unacked = OrderedDict(sorted(self.unacked.items()))

    # -- closing --------------------------------------------------------

    def close(self, *, now: float) -> None:
        """Requeue what is unacked and cancel every consumer."""
        if self.closed:
            return
        self.closed = True
        # No credit from here on, so nothing requeued comes straight back here.
        self.buffer_limit = 0
        if self.transactional:
            # Uncommitted work is forgotten; messages acked in it are unacked
            # again, so they are requeued below rather than lost.
            self._rollback()
            self.transactional = False
        unacked, self.unacked = self.unacked, OrderedDict()
        for entry, queue, consumer, _ in unacked.values():
            if consumer is not None:
                consumer.unacked -= 1
                self.consumer_unacked -= 1
            queue.give_back(entry, True, now, failed=False)
        consumers, self.consumers = self.consumers, {}
        for consumer in consumers.values():
            consumer.queue.remove_consumer(consumer, now)
        # Other consumers of those queues can have the requeued messages now.
        for queue in {queue: None for _, queue, _, _ in unacked.values()}:
            queue.dispatch(now)
        self.outbox.clear()
        self._deadlines.clear()
        self.connection.channels.pop(self.number, None)
