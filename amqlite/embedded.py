"""The whole broker inside one trio program, with no network.

``async with open_broker() as broker`` starts a broker whose channels offer
the same operations as an AMQP channel: declare, bind, publish, consume,
get, ack, nack, reject, confirm, tx. Consuming is an async iterator whose
backpressure is the prefetch count. One background task drives deadlines
(TTL, delays, retries, queue expiry) from trio's clock, so tests under
pytest-trio's autojump clock run time-based behaviour instantly.
"""

from __future__ import annotations

import secrets
from collections import deque
from datetime import datetime
from pathlib import Path
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Coroutine

import attrs
import trio

from . import workbench
from .amqp.properties import check_properties
from .config import Settings
from .core import errors
from .core.broker import Broker as CoreBroker
from .core.channel import Channel as CoreChannel
from .core.connection import Connection as CoreConnection
from .core.events import AckTimedOut, ConsumerCancelled, Deliver, GetResult, PublishOutcome, WaitForDisk
from .core.browse import Filter
from .core.message import EMPTY_PROPERTIES, Entry, Message, Properties
from .core.queue import Queue as CoreQueue
from .core.redrive import COUNT, DELETE, REDRIVE, Job
from .core.stream import OFFSET_HEADER, with_offset
from .log import get_logger
from .runtime import Clock, drive_timers
from .storage import StoreDriver
from .store.journal import DiskJournal

log = get_logger(__name__)

#: The hot paths (``publish`` and taking the next buffered delivery) are
#: always cancel points but only every this many calls a schedule point:
#: a full trio checkpoint per message costs more than the broker's own
#: work (see docs/performance.md), and the idiomatic one-await-per-message
#: loop should not have to batch by hand to be fast.
SCHEDULE_EVERY = 64


def _paced_checkpoint(calls: int) -> Coroutine[Any, Any, None]:
    """What the ``calls``-th call awaits. A plain function handing over
    trio's coroutine rather than a coroutine of its own: one frame fewer
    per message on both hot paths."""
    return trio.lowlevel.checkpoint_if_cancelled() if calls % SCHEDULE_EVERY else trio.lowlevel.checkpoint()


class ChannelClosed(Exception):
    """The channel was closed, by the application or by an error on it.

    ``cause`` is the :class:`~amqlite.core.errors.AMQPError` that closed it,
    if any; like an AMQP client, the embedded channel is unusable after a
    channel-level error and a new one must be opened.
    """

    def __init__(self, cause: errors.AMQPError | None = None) -> None:
        self.cause = cause
        super().__init__(cause.reply_text if cause else "channel closed")


@attrs.frozen(slots=True)
class DeclareOk:
    queue: str
    message_count: int
    consumer_count: int


@attrs.frozen(slots=True)
class Browsed:
    """A message seen by :meth:`Channel.queue_browse`, still in its queue."""

    position: int
    message: Message
    redelivered: bool
    delivery_count: int
    #: Read from disk: the queue holds it paged out.
    paged: bool


@attrs.define(slots=True, eq=False)
class Delivery:
    """A message handed to the application, with its settlement methods.

    A value: nothing in amqlite reads it back, so changing its fields
    changes nothing. Not frozen only because frozen construction costs
    three times as much, once per message (docs/embedded.md)."""

    body: bytes
    properties: Properties
    exchange: str
    routing_key: str
    redelivered: bool
    delivery_tag: int
    consumer_tag: str | None
    #: Times the message came back unsettled before this delivery.
    delivery_count: int
    _channel: Channel
    #: Ready messages left in the queue; set for basic.get only.
    message_count: int | None = None

    @property
    def headers(self) -> dict[str, Any]:
        return self.properties.headers or {}

    @property
    def offset(self) -> int | None:
        """Its offset in the stream it came from (None from a queue)."""
        offset = self.headers.get(OFFSET_HEADER)
        return offset if isinstance(offset, int) else None

    def ack(self, *, multiple: bool = False) -> None:
        self._channel.ack(self.delivery_tag, multiple=multiple)

    def nack(self, *, requeue: bool = True, multiple: bool = False) -> None:
        self._channel.nack(self.delivery_tag, multiple=multiple, requeue=requeue)

    def reject(self, *, requeue: bool = True) -> None:
        self._channel.reject(self.delivery_tag, requeue=requeue)


class Consumer:
    """An async iterator of deliveries from one queue.

    It ends when the consumer is cancelled, by :meth:`cancel`, by leaving
    its ``async with`` block, or by the server (the queue was deleted).
    Deliveries still buffered then, which the application never received,
    go back to the queue at their original position, and do not count as
    a delivery attempt.

    A ``no_ack`` consumer's message is settled when the application
    receives it, not when the core buffers it: in process, the buffer is
    ours, so nothing in it is lost when the consumer stops.
    """

    def __init__(self, channel: Channel, tag: str, *, auto_ack: bool) -> None:
        self.tag = tag
        self._channel = channel
        self._auto_ack = auto_ack
        self._buffer: deque[Deliver] = deque()
        self._lot = trio.lowlevel.ParkingLot()
        self._calls = 0
        self.cancelled = False

    def _push(self, event: Deliver) -> None:
        self._buffer.append(event)
        if self._lot:  # usually nobody waits: the consumer is busy with earlier ones
            self._lot.unpark_all()

    def _end(self) -> None:
        self.cancelled = True
        self._lot.unpark_all()

    def __aiter__(self) -> Consumer:
        return self

    async def __anext__(self) -> Delivery:
        if self._buffer:
            self._calls += 1
            await _paced_checkpoint(self._calls)
        while not self._buffer:
            if self.cancelled:
                raise StopAsyncIteration
            await self._lot.park()
        return self.receive_nowait()

    def receive_nowait(self) -> Delivery:
        """The next buffered delivery; raises trio.WouldBlock if none."""
        if not self._buffer:
            raise trio.WouldBlock
        event = self._buffer.popleft()
        channel = self._channel
        core = channel._core
        now = channel._broker.now()
        core.delivered(1, now=now)
        if self._auto_ack and event.delivery_tag in core.unacked:
            core.ack(event.delivery_tag, now=now)
        return channel._delivery(event)

    async def cancel(self) -> None:
        await trio.lowlevel.checkpoint()
        self._stop()

    def _stop(self) -> None:
        if self.cancelled:
            return
        channel = self._channel
        undelivered = [event.delivery_tag for event in self._buffer]
        self._buffer.clear()
        channel._consumers.pop(self.tag, None)
        self._end()
        channel._run(channel._core.cancel, self.tag, now=channel._broker.now(), undelivered=undelivered)

    async def __aenter__(self) -> Consumer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await trio.lowlevel.cancel_shielded_checkpoint()
        if self._channel.closed is None:
            self._stop()


class Channel:
    """An embedded channel. Methods mirror AMQP 0-9-1's channel methods."""

    def __init__(self, connection: Connection, core: CoreChannel) -> None:
        self._connection = connection
        self._broker = connection._broker
        self._core = core
        self._consumers: dict[str, Consumer] = {}
        self._publishes = 0
        self.closed: ChannelClosed | None = None
        core.notify = self._pump

    @property
    def number(self) -> int:
        return self._core.number

    def _pump(self) -> None:
        outbox = self._core.outbox
        consumers = self._consumers
        while outbox:
            event = outbox.popleft()
            if isinstance(event, AckTimedOut):
                self._timed_out(event)
                return
            consumer = consumers.get(event.consumer_tag)
            if consumer is None:
                continue
            if isinstance(event, Deliver):
                consumer._push(event)
            elif isinstance(event, ConsumerCancelled):
                consumers.pop(event.consumer_tag, None)
                consumer._end()

    def _timed_out(self, event: AckTimedOut) -> None:
        """The core closed the channel for a consumer timeout and requeued
        what it held, buffered deliveries too: they are not handed out."""
        log.info("channel.error", channel=self.number, reply_code=event.error.reply_code,
                 reply_text=event.error.reply_text, consumer_tag=event.consumer_tag, queue=event.queue,
                 delivery_tag=event.delivery_tag)
        for consumer in self._consumers.values():
            consumer._buffer.clear()
        self._close(event.error)

    def _delivery(self, event: Deliver | GetResult, consumer_tag: str | None = None) -> Delivery:
        message = event.message
        properties = message.properties
        if isinstance(event, Deliver) and event.stream_offset is not None:
            # As an AMQP consumer sees it (amqp/engine.py).
            properties = with_offset(properties, event.stream_offset)
        return Delivery(
            message.body,
            properties,
            message.exchange,
            message.routing_key,
            event.redelivered,
            event.delivery_tag,
            event.consumer_tag if isinstance(event, Deliver) else None,
            event.delivery_count,
            self,
            event.message_count if isinstance(event, GetResult) else None,
        )

    def _run(self, operation: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a core operation; an error closes this channel, as a channel
        error does over AMQP. A connection-level error (530, 540, ...) also
        closes only this channel: in process there is no socket to tear down,
        and the application's other channels have done nothing wrong."""
        if self.closed is not None:
            raise self.closed
        try:
            return operation(*args, **kwargs)
        except errors.AMQPError as error:
            self._fail(error)
            raise

    def _fail(self, error: errors.AMQPError) -> None:
        log.info("channel.error", channel=self.number, reply_code=error.reply_code, reply_text=error.reply_text)
        self._close(error)

    def _close(self, cause: errors.AMQPError | None) -> None:
        if self.closed is not None:
            return
        core = self._core
        if not core.closed:
            # What the application never received goes back uncounted;
            # then closing requeues what it received but did not settle.
            for consumer in list(self._consumers.values()):
                consumer._stop()
        self.closed = ChannelClosed(cause)
        self._connection._channels.pop(self.number, None)
        core.close(now=self._broker.now())
        for consumer in self._consumers.values():
            consumer._end()
        self._consumers.clear()

    async def _op(self, operation: Any, *args: Any, **kwargs: Any) -> Any:
        await trio.lowlevel.checkpoint()
        return self._run(operation, *args, **kwargs)

    # -- exchanges ------------------------------------------------------

    async def exchange_declare(
        self,
        exchange: str,
        type: str = "direct",
        *,
        passive: bool = False,
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: dict[str, Any] | None = None,
    ) -> None:
        await self._op(
            self._core.declare_exchange,
            exchange,
            type,
            passive=passive,
            durable=durable,
            auto_delete=auto_delete,
            internal=internal,
            arguments=arguments,
        )

    async def exchange_delete(self, exchange: str, *, if_unused: bool = False) -> None:
        await self._op(self._core.delete_exchange, exchange, if_unused=if_unused)

    async def exchange_bind(self, destination: str, source: str, routing_key: str = "", arguments: dict[str, Any] | None = None) -> None:
        await self._op(self._core.bind_exchange, destination, source, routing_key, arguments)

    async def exchange_unbind(self, destination: str, source: str, routing_key: str = "", arguments: dict[str, Any] | None = None) -> None:
        await self._op(self._core.unbind_exchange, destination, source, routing_key, arguments)

    # -- queues ---------------------------------------------------------

    async def queue_declare(
        self,
        queue: str = "",
        *,
        passive: bool = False,
        durable: bool = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: dict[str, Any] | None = None,
    ) -> DeclareOk:
        declared = await self._op(
            self._core.declare_queue,
            queue,
            now=self._broker.now(),
            passive=passive,
            durable=durable,
            exclusive=exclusive,
            auto_delete=auto_delete,
            arguments=arguments,
        )
        return DeclareOk(declared.name, declared.message_count, declared.consumer_count)

    async def queue_bind(self, queue: str, exchange: str, routing_key: str = "", arguments: dict[str, Any] | None = None) -> None:
        await self._op(self._core.bind_queue, queue, exchange, routing_key, arguments)

    async def queue_unbind(self, queue: str, exchange: str, routing_key: str = "", arguments: dict[str, Any] | None = None) -> None:
        await self._op(self._core.unbind_queue, queue, exchange, routing_key, arguments)

    async def queue_purge(self, queue: str) -> int:
        return await self._op(self._core.purge_queue, queue)

    async def queue_redrive(self, queue: str, *, to: str | None = None, limit: int | None = None) -> int:
        """Move dead-lettered messages from ``queue`` back to the queue each
        died in (or to ``to``), in order, exactly once. Returns how many.

        An amqlite extension: RabbitMQ needs a shovel or a script for this.
        """
        return await self._op(self._core.redrive_queue, queue, now=self._broker.now(), to=to, limit=limit)

    # -- the dead-letter workbench (amqlite/workbench.py) -----------------

    def _source(self, queue: str) -> CoreQueue:
        found: CoreQueue = self._run(self._core.vhost.get_queue, queue, self._core.connection)
        if self._core.access is not None:
            self._run(self._core.access.read, "queue", queue)
        return found

    async def queue_browse(self, queue: str, *, offset: int = 0, limit: int = 50,
                           filter: Filter | None = None) -> list[Browsed]:
        """Up to ``limit`` ready messages of ``queue`` (those matching
        ``filter``), from position ``offset``, in delivery order, without
        consuming them: nothing about them or their order changes. Messages
        paged out to disk are read from there."""
        await trio.lowlevel.checkpoint()
        shown, _ = await workbench.browse(self._broker.core, self._source(queue), offset, limit, filter or Filter())
        return [Browsed(position, message, item.redelivered if isinstance(item, Entry) else False,
                        item.delivery_count if isinstance(item, Entry) else 0, not isinstance(item, Entry))
                for position, item, message in shown if message is not None]

    async def queue_redrive_matching(self, queue: str, filter: Filter | None = None, *, to: str | None = None,
                                     rate: float | None = None, limit: int | None = None,
                                     dry_run: bool = False) -> Job:
        """Redrive the ready messages of ``queue`` that match ``filter`` to
        where each died (or ``to``), at most ``rate`` a second and ``limit``
        in all; with ``dry_run`` only count them. Returns the finished job
        (``matched``, ``done``, ``skipped``). Run it in a task of your own
        to watch its progress meanwhile: ``amqlite.workbench.jobs_of``
        lists the broker's jobs, as ``GET /api/redrives`` does."""
        await trio.lowlevel.checkpoint()
        source = self._source(queue)
        if to is not None:
            self._run(self._core.vhost.get_queue, to, self._core.connection)
            if self._core.access is not None:
                self._run(self._core.access.write, "queue", to)
        jobs = workbench.jobs_of(self._broker.core, self._broker.now)
        job = jobs.create(self._core.vhost.name, source, COUNT if dry_run else REDRIVE, filter or Filter(), to=to,
                          rate=None if dry_run else rate, limit=limit)
        await jobs.run(job)
        return job

    async def queue_delete_matching(self, queue: str, filter: Filter) -> int:
        """Delete the ready messages of ``queue`` that match ``filter``
        (logged with the count); returns how many."""
        await trio.lowlevel.checkpoint()
        source = self._source(queue)
        jobs = workbench.jobs_of(self._broker.core, self._broker.now)
        job = jobs.create(self._core.vhost.name, source, DELETE, filter)
        await jobs.run(job)
        return job.done

    async def queue_delete(self, queue: str, *, if_unused: bool = False, if_empty: bool = False) -> int:
        return await self._op(
            self._core.delete_queue, queue, now=self._broker.now(), if_unused=if_unused, if_empty=if_empty
        )

    # -- publishing -----------------------------------------------------

    async def publish(
        self,
        body: bytes,
        *,
        exchange: str = "",
        routing_key: str = "",
        properties: Properties = EMPTY_PROPERTIES,
        mandatory: bool = False,
    ) -> PublishOutcome | None:
        """Publish one message; the outcome says where it went.

        ``returned`` is the embedded form of basic.return (mandatory and
        unroutable); ``rejected`` is the form of a confirm nack (a queue's
        x-overflow refused it). In a transaction the outcome is None until
        :meth:`tx_commit`.
        """
        self._publishes += 1
        await _paced_checkpoint(self._publishes)
        outcome = self.publish_nowait(
            body, exchange=exchange, routing_key=routing_key, properties=properties, mandatory=mandatory
        )
        journal = self._broker.core.journal
        if self._core.confirm and journal is not None and outcome is not None:
            # In confirm mode, as over AMQP (the journal's one rule).
            await self._broker._synced_to(journal.confirm_position(properties.delivery_mode == 2, outcome))
        return outcome

    def publish_nowait(
        self,
        body: bytes,
        *,
        exchange: str = "",
        routing_key: str = "",
        properties: Properties = EMPTY_PROPERTIES,
        mandatory: bool = False,
    ) -> PublishOutcome | None:
        """:meth:`publish` without the checkpoint, for tight producer loops.

        Properties that have no AMQP encoding (``priority="high"``) raise
        :class:`~amqlite.amqp.properties.InvalidProperty` (a ValueError) and
        leave the channel open: accepted, such a message would fail every
        AMQP consumer it reached and the journal that stores it."""
        # Publish and ack skip _run's generic call: they are the hot path.
        if self.closed is not None:
            raise self.closed
        check_properties(properties)
        try:
            return self._core.publish(
                body, now=self._broker.now(), exchange=exchange, routing_key=routing_key,
                properties=properties, mandatory=mandatory,
            )
        except errors.AMQPError as error:
            self._fail(error)
            raise

    async def confirm_select(self) -> None:
        await self._op(self._core.confirm_select)

    # -- consuming ------------------------------------------------------

    async def basic_qos(self, prefetch_count: int, *, global_: bool = False) -> None:
        await self._op(self._core.qos, prefetch_count, global_=global_, now=self._broker.now())

    async def consume(
        self,
        queue: str,
        *,
        consumer_tag: str = "",
        no_ack: bool = False,
        exclusive: bool = False,
        arguments: dict[str, Any] | None = None,
        prefetch: int | None = None,
        offset: int | str | datetime | None = None,
    ) -> Consumer:
        """Start a consumer. ``prefetch`` is a shortcut for basic_qos first.
        ``offset``, on a stream, is where to start, as ``x-stream-offset``:
        ``"first"``, ``"last"``, ``"next"`` (the default), an offset, a
        datetime, or an interval back from now such as ``"1h"`` or ``"7D"``."""
        await trio.lowlevel.checkpoint()
        if offset is not None:
            arguments = {**(arguments or {}), "x-stream-offset": offset}
        if prefetch is not None:
            self._run(self._core.qos, prefetch, now=self._broker.now())
        # Register the iterator before the core starts pushing deliveries.
        tag = consumer_tag or self._broker.core.new_name("amq.ctag-", self._core.consumers)
        consumer = self._consumers[tag] = Consumer(self, tag, auto_ack=no_ack)
        try:
            self._run(
                self._core.consume,
                queue,
                now=self._broker.now(),
                consumer_tag=tag,
                no_ack=False,  # settled on receipt instead; see Consumer
                exclusive=exclusive,
                arguments=arguments,
            )
        except errors.AMQPError:
            self._consumers.pop(tag, None)
            raise
        return consumer

    async def get(self, queue: str, *, no_ack: bool = False) -> Delivery | None:
        result = await self._op(self._core.get, queue, now=self._broker.now(), no_ack=no_ack)
        while isinstance(result, WaitForDisk):
            await self._broker._storage_moved.park()
            result = self._run(self._core.get, queue, now=self._broker.now(), no_ack=no_ack)
        return None if result is None else self._delivery(result)

    def ack(self, delivery_tag: int, *, multiple: bool = False) -> None:
        if self.closed is not None:
            raise self.closed
        try:
            self._core.ack(delivery_tag, now=self._broker.now(), multiple=multiple)
        except errors.AMQPError as error:
            self._fail(error)
            raise

    def nack(self, delivery_tag: int, *, multiple: bool = False, requeue: bool = True) -> None:
        self._run(self._core.nack, delivery_tag, now=self._broker.now(), multiple=multiple, requeue=requeue)

    def reject(self, delivery_tag: int, *, requeue: bool = True) -> None:
        self._run(self._core.reject, delivery_tag, now=self._broker.now(), requeue=requeue)

    async def recover(self, *, requeue: bool = True) -> None:
        await self._op(self._core.recover, now=self._broker.now(), requeue=requeue)

    # -- transactions ---------------------------------------------------

    async def tx_select(self) -> None:
        await self._op(self._core.tx_select)

    async def tx_commit(self) -> list[PublishOutcome]:
        """Returns once the transaction is on disk, as commit-ok does."""
        outcomes = await self._op(self._core.tx_commit, now=self._broker.now())
        await self._broker._synced_to(self._core.committed_at)
        return [outcome for _, outcome in outcomes]

    async def tx_rollback(self) -> None:
        await self._op(self._core.tx_rollback)

    # -- closing --------------------------------------------------------

    async def close(self) -> None:
        await trio.lowlevel.checkpoint()
        self._close(None)

    async def __aenter__(self) -> Channel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._close(None)


class Connection:
    """An embedded connection: owns exclusive queues, like an AMQP one."""

    def __init__(self, broker: Broker, core: CoreConnection) -> None:
        self._broker = broker
        self._core = core
        self._channels: dict[int, Channel] = {}
        broker._connections.add(self)

    async def channel(self) -> Channel:
        await trio.lowlevel.checkpoint()
        channel = Channel(self, self._core.open_channel())
        self._channels[channel.number] = channel
        return channel

    async def close(self) -> None:
        await trio.lowlevel.checkpoint()
        self._close()

    def _close(self) -> None:
        for channel in list(self._channels.values()):
            channel._close(None)
        self._core.close(now=self._broker.now())
        self._broker._connections.discard(self)

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._close()


class Broker:
    """An embedded broker; create it with :func:`open_broker`."""

    def __init__(self, core: CoreBroker) -> None:
        self.core = core
        self.clock = Clock()
        self.now = self.clock.now
        self._connections: set[Connection] = set()
        self._default = Connection(self, core.connect())
        #: Woken when storage syncs or reads paged messages back.
        self._storage_moved = trio.lowlevel.ParkingLot()

    async def _synced_to(self, position: int) -> None:
        # During a disk outage this waits for the retry that succeeds, as an
        # AMQP publisher waits for its confirm.
        journal = self.core.journal
        while journal is not None and journal.synced < position:
            await self._storage_moved.park()

    async def channel(self) -> Channel:
        """A channel on the broker's default connection."""
        return await self._default.channel()

    async def connection(self, vhost: str = "/") -> Connection:
        """A separate connection, e.g. to own exclusive queues apart."""
        await trio.lowlevel.checkpoint()
        return Connection(self, self.core.connect(vhost))


@asynccontextmanager
async def open_broker(settings: Settings | None = None, **overrides: Any) -> AsyncIterator[Broker]:
    """Run an in-process broker for the duration of the block.

    It takes the server's :class:`~amqlite.config.Settings` (those that
    mean something in process: ``data_dir``, ``max_message_size``, ``consumer_timeout``,
    ``queue_memory_budget``, ``segment_size``, ``vhosts``), or keyword
    overrides of them, validated alike: ``open_broker(data_dir=path)``.
    Unlike ``amqlite serve`` it keeps nothing on disk unless given a
    ``data_dir``; with one, durable queues and persistent messages are kept
    there and come back the next time, and beyond ``queue_memory_budget``
    ready messages a durable queue pages to disk.
    """
    settings = attrs.evolve(settings or Settings(data_dir=""), **overrides)
    core = CoreBroker(name_prefix=secrets.token_hex(4) + "-", max_message_size=settings.max_message_size,
                      consumer_timeout=settings.consumer_timeout / 1000 or None)
    for vhost in settings.vhosts:
        core.add_vhost(vhost)
    broker = Broker(core)
    journal = None
    if settings.data_dir:
        journal = DiskJournal(Path(settings.data_dir), segment_size=settings.segment_size,
                              queue_budget=settings.queue_memory_budget)
        journal.recover(core, broker.now())
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drive_timers, core.timers, broker.clock)
            if journal is not None:
                moved = broker._storage_moved.unpark_all
                driver = StoreDriver(journal, on_synced=moved, on_blocked=lambda reason: None,
                                     now=broker.now, on_paged_in=moved, disk_free_limit=settings.disk_free_limit)
                nursery.start_soon(driver.run)
            try:
                yield broker
            finally:
                for connection in list(broker._connections):
                    connection._close()
                nursery.cancel_scope.cancel()
    finally:
        if journal is not None:
            journal.close()  # writes what is still pending
