"""A client connection: its channels and the exclusive queues it owns."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from .channel import Channel
from .errors import ChannelStateError
from .permissions import Access

if TYPE_CHECKING:
    from .broker import Broker
    from .queue import Queue
    from .vhost import VirtualHost


class Connection:
    def __init__(self, broker: Broker, vhost: VirtualHost, *, user: str = "guest", name: str = "",
                 access: Access | None = None, client_properties: Mapping[str, Any] | None = None) -> None:
        self.broker = broker
        self.vhost = vhost
        self.user = user
        #: What the user may do here; None: anything (in-process use, the
        #: definitions import, the management API acting as an administrator).
        self.access = access
        self.name = name
        #: What the client said about itself in connection.start-ok (product,
        #: version, the connection_name its user gave it), for the management API.
        self.client_properties: Mapping[str, Any] = client_properties or {}
        self.channels: dict[int, Channel] = {}
        self.exclusive_queues: set[Queue] = set()
        self.closed = False

    def open_channel(self, number: int | None = None) -> Channel:
        if self.closed:
            raise ChannelStateError(f"connection '{self.name}' is closed")
        if number is None:
            number = max(self.channels, default=0) + 1
        if number in self.channels:
            raise ChannelStateError(f"second 'channel.open' seen on channel {number}")
        channel = self.channels[number] = Channel(self, number)
        return channel

    def close(self, *, now: float) -> None:
        """Requeue every channel's unacked messages, then delete the
        exclusive queues, as RabbitMQ does when a client goes away."""
        if self.closed:
            return
        self.closed = True
        for channel in list(self.channels.values()):
            channel.close(now=now)
        for queue in list(self.exclusive_queues):
            self.vhost.delete_queue(queue, now)
        self.broker.connections.discard(self)
