"""Helpers shared by the pika scenario files (``test_pika_*.py``).

Every scenario runs against amqlite and the reference RabbitMQ (the
``broker`` fixture in ``conftest.py``). Names come from ``broker.name()`` so
scenarios never collide on the shared RabbitMQ, and :class:`Client` deletes
what a scenario declared when it ends.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import pika
import pika.exceptions
import pytest
from pika.adapters.blocking_connection import BlockingChannel

if TYPE_CHECKING:
    from .conftest import BrokerUnderTest

T = TypeVar("T")

Message = tuple[Any, pika.BasicProperties, bytes]  # (method, properties, body)


class Client:
    """pika connections to one broker, plus cleanup of what a scenario declared."""

    def __init__(self, broker: BrokerUnderTest) -> None:
        self.broker = broker
        self.connections: list[pika.BlockingConnection] = []
        self._queues: list[str] = []
        self._exchanges: list[str] = []
        self._connection: pika.BlockingConnection | None = None

    # -- connections and channels ------------------------------------------

    def connect(self, **overrides: Any) -> pika.BlockingConnection:
        params = pika.URLParameters(self.broker.url)
        for key, value in overrides.items():
            setattr(params, key, value)
        connection = pika.BlockingConnection(params)
        self.connections.append(connection)
        return connection

    @property
    def connection(self) -> pika.BlockingConnection:
        if self._connection is None or self._connection.is_closed:
            self._connection = self.connect()
        return self._connection

    def channel(self, connection: pika.BlockingConnection | None = None) -> BlockingChannel:
        return (connection or self.connection).channel()

    # -- declarations that are cleaned up -------------------------------------

    def queue(self, channel: BlockingChannel, prefix: str = "q", **options: Any) -> str:
        """Declare a uniquely named queue (deleted at the end of the scenario)."""
        name = self.broker.name(prefix)
        channel.queue_declare(name, **options)
        self._queues.append(name)
        return name

    def exchange(self, channel: BlockingChannel, exchange_type: str = "direct", prefix: str = "x", **options: Any) -> str:
        """Declare a uniquely named exchange (deleted at the end of the scenario)."""
        name = self.broker.name(prefix)
        channel.exchange_declare(name, exchange_type, **options)
        self._exchanges.append(name)
        return name

    def forget_queue(self, name: str) -> None:
        self._queues.append(name)

    def forget_exchange(self, name: str) -> None:
        self._exchanges.append(name)

    def close(self) -> None:
        for connection in self.connections:
            if connection.is_open:
                try:
                    connection.close()
                except Exception:
                    pass
        if self.broker.kind != "rabbitmq" or not (self._queues or self._exchanges):
            return  # amqlite's server goes away with the scenario
        connection = pika.BlockingConnection(pika.URLParameters(self.broker.url))
        try:
            for kind, names in (("queue", self._queues), ("exchange", self._exchanges)):
                for name in names:
                    channel = connection.channel()
                    try:
                        if kind == "queue":
                            channel.queue_delete(name)
                        else:
                            channel.exchange_delete(name)
                        channel.close()
                    except pika.exceptions.AMQPError:
                        pass
        finally:
            if connection.is_open:
                connection.close()


# -- waiting and reading ------------------------------------------------------


def wait_for(predicate: Callable[[], T], timeout: float = 3.0, interval: float = 0.02) -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")
        time.sleep(interval)


def get(channel: BlockingChannel, queue: str, auto_ack: bool = True) -> Message | None:
    method, properties, body = channel.basic_get(queue, auto_ack=auto_ack)
    if method is None:
        return None
    return method, properties, body


def get_bodies(channel: BlockingChannel, queue: str) -> list[bytes]:
    """Every ready message of ``queue`` (auto-acked), in delivery order."""
    bodies = []
    while (message := get(channel, queue)) is not None:
        bodies.append(message[2])
    return bodies


def wait_get(channel: BlockingChannel, queue: str, timeout: float = 3.0, auto_ack: bool = True) -> Message:
    """``basic.get`` until a message arrives (dead-lettered, delayed, ...)."""
    return wait_for(lambda: get(channel, queue, auto_ack), timeout)


def message_count(channel: BlockingChannel, queue: str) -> int:
    return channel.queue_declare(queue, passive=True).method.message_count


def consumer_count(channel: BlockingChannel, queue: str) -> int:
    return channel.queue_declare(queue, passive=True).method.consumer_count


def exists(client: Client, kind: str, name: str) -> bool:
    """Whether a queue or exchange exists (a passive declare on a throwaway channel)."""
    channel = client.channel()
    try:
        if kind == "queue":
            channel.queue_declare(name, passive=True)
        else:
            channel.exchange_declare(name, passive=True)
    except pika.exceptions.ChannelClosedByBroker as error:
        assert error.reply_code == 404, error
        return False
    channel.close()
    return True


class Collector:
    """Deliveries to consumers on a channel, gathered by ``pump``."""

    def __init__(self, channel: BlockingChannel) -> None:
        self.channel = channel
        self.deliveries: list[tuple[str, Any, pika.BasicProperties, bytes]] = []

    def consume(self, queue: str, auto_ack: bool = False, **options: Any) -> str:
        def on_message(ch: BlockingChannel, method: Any, properties: pika.BasicProperties, body: bytes) -> None:
            self.deliveries.append((method.consumer_tag, method, properties, body))

        return self.channel.basic_consume(queue, on_message, auto_ack=auto_ack, **options)

    def pump(self, seconds: float = 0.1) -> None:
        self.channel.connection.process_data_events(time_limit=seconds)

    def wait(self, count: int, timeout: float = 3.0) -> list[tuple[str, Any, pika.BasicProperties, bytes]]:
        """Pump until at least ``count`` deliveries have arrived."""
        deadline = time.monotonic() + timeout
        while len(self.deliveries) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.deliveries)} deliveries after {timeout}s, expected {count}")
            self.pump(0.02)
        return self.deliveries

    @property
    def bodies(self) -> list[bytes]:
        return [d[3] for d in self.deliveries]


def channel_error(fn: Callable[[], Any], channel: BlockingChannel | None = None) -> pika.exceptions.ChannelClosedByBroker:
    """Run ``fn`` and return the channel close it provokes.

    Asynchronous methods (ack, publish) are followed by a synchronous call on
    ``channel`` so the close reaches pika.
    """
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        fn()
        if channel is not None:
            # A round trip: the broker closes the channel before answering this.
            channel.basic_qos(prefetch_count=0)
    return info.value


def connection_error(fn: Callable[[], Any], connection: pika.BlockingConnection) -> pika.exceptions.ConnectionClosedByBroker:
    """Run ``fn`` and return the connection close it provokes."""
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as info:
        fn()
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            connection.process_data_events(time_limit=0.05)
    return info.value


def wait_count(channel: BlockingChannel, queue: str, count: int, timeout: float = 3.0) -> None:
    """Wait until ``queue`` has ``count`` ready messages.

    RabbitMQ applies acks and requeues in the queue's own process, after the
    channel has moved on, so a count read straight after a nack may be stale.
    """
    wait_for(lambda: message_count(channel, queue) == count, timeout)


def pump_until(connection: pika.BlockingConnection, predicate: Callable[[], T], timeout: float = 3.0) -> T:
    """Process events until ``predicate`` holds (process_data_events returns
    as soon as it has dispatched anything, so one call is not enough)."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")
        connection.process_data_events(time_limit=0.02)
    return value
