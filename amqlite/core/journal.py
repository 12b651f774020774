"""What the core tells durable storage, and nothing more.

The core calls these methods synchronously, as things happen to durable
definitions and to persistent messages on durable queues. An implementation
only records them in memory; a driver writes them to disk later (and tells
publishers when their confirms may go). So the core stays free of I/O, and
tests run it with no journal at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .exchange import Exchange
    from .message import Entry, Message
    from .queue import Queue


class Journal(Protocol):
    #: False while the disk refuses writes; durable queues then refuse
    #: persistent messages (the publisher gets a nack) instead of accepting
    #: what cannot be made durable.
    accepting: bool

    def exchange_declared(self, exchange: Exchange) -> None: ...

    def exchange_deleted(self, exchange: Exchange) -> None: ...

    def bound(self, source: Exchange, destination: Any, routing_key: str, arguments: dict[str, Any]) -> None: ...

    def unbound(self, source: Exchange, destination: Any, routing_key: str, arguments: dict[str, Any]) -> None: ...

    def queue_declared(self, queue: Queue) -> None: ...

    def queue_deleted(self, queue: Queue) -> None: ...

    def enqueued(self, queue: Queue, entry: Entry) -> None: ...

    def removed(self, queue: Queue, entry: Entry) -> None: ...

    def delivered(self, queue: Queue, entry: Entry) -> None: ...

    def counted(self, queue: Queue, entry: Entry) -> None: ...

    def retrying(self, queue: Queue, entry: Entry, due: float) -> None: ...

    def moved(self, queue: Queue, entry: Entry, old_seq: int) -> None: ...

    def held(self, exchange: Exchange, message: Message, due: float) -> None: ...

    def released(self, exchange: Exchange, message: Message) -> None: ...
