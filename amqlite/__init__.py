"""amqlite: a RabbitMQ-style message broker in Python.

Embedded use::

    async with amqlite.open_broker() as broker:
        channel = await broker.channel()
        ...

The embedded API (which needs trio) loads on first use, so that importing
the pure layers (``amqlite.core``, ``amqlite.amqp``) loads neither trio nor
structlog.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .core.errors import AMQPError, ChannelError, ConnectionError_
from .core.events import PublishOutcome
from .core.message import Properties

if TYPE_CHECKING:
    from .config import Settings
    from .embedded import Broker, Channel, ChannelClosed, Consumer, DeclareOk, Delivery, open_broker

_LAZY = {
    "Broker": "embedded", "Channel": "embedded", "ChannelClosed": "embedded", "Consumer": "embedded",
    "DeclareOk": "embedded", "Delivery": "embedded", "open_broker": "embedded", "Settings": "config",
}

__all__ = ["AMQPError", "ChannelError", "ConnectionError_", "Properties", "PublishOutcome", *_LAZY]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'amqlite' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
