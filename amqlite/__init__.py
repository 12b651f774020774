"""amqlite: a RabbitMQ-style message broker in Python.

Embedded use::

    async with amqlite.open_broker() as broker:
        channel = await broker.channel()
        ...
"""

from .core.errors import AMQPError, ChannelError, ConnectionError_
from .core.events import PublishOutcome
from .core.message import Properties
from .embedded import Broker, Channel, ChannelClosed, Consumer, DeclareOk, Delivery, open_broker

__all__ = [
    "AMQPError",
    "Broker",
    "Channel",
    "ChannelClosed",
    "ChannelError",
    "ConnectionError_",
    "Consumer",
    "DeclareOk",
    "Delivery",
    "Properties",
    "PublishOutcome",
    "open_broker",
]
__version__ = "0.1.0"
