"""The broker: virtual hosts, connections and the one deadline index.

This is the pure model. It reads no clock: every call that depends on time
takes ``now`` (seconds), and :meth:`Broker.next_deadline` tells the driver
when to call :meth:`Broker.tick` next.
"""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any, Callable, Container, Mapping

from .connection import Connection
from .. import defaults
from .journal import Journal
from .errors import NotAllowed
from .message import Message
from .stats import Stats
from .permissions import Access
from .timers import Timers
from .vhost import VirtualHost

#: (queue or exchange, message, reason); the message is None when it was on
#: disk only (paged out), so its content is not in memory to show.
DropHook = Callable[[str, Message | None, str], None]


class Broker:
    def __init__(self, *, name_prefix: str = "", max_message_size: int = defaults.MAX_MESSAGE_SIZE,
                 consumer_timeout: float | None = None) -> None:
        #: Makes generated names unique across broker runs; the driver
        #: passes something random, since the core has no randomness.
        self.name_prefix = name_prefix
        self.max_message_size = max_message_size
        #: Seconds a delivery may stay unacked where a queue sets no
        #: x-consumer-timeout; None: no limit (see core/channel.py).
        self.consumer_timeout = consumer_timeout
        self.timers = Timers()
        self.vhosts: dict[str, VirtualHost] = {}
        self.connections: set[Connection] = set()
        #: Messages dropped, by reason (unroutable, expired, maxlen, ...).
        self.drops: Counter[str] = Counter()
        #: Message counters (received, routed, delivered, ...): see core/stats.py.
        self.stats = Stats()
        #: Called for every dropped message: (queue or exchange, message, reason).
        self.on_drop: DropHook | None = None
        #: Body bytes of the messages that left queues (acked, purged,
        #: deleted, expired, dead-lettered), once per queue: the driver
        #: trims the heap when it has grown enough (heap.trim_after_frees).
        self.freed_bytes = 0
        #: Durable storage, when the driver has one (see core/journal.py).
        self.journal: Journal | None = None
        self._names = itertools.count(1)
        self.add_vhost("/")

    def add_vhost(self, name: str) -> VirtualHost:
        vhost = self.vhosts.get(name)
        if vhost is None:
            vhost = self.vhosts[name] = VirtualHost(self, name)
        return vhost

    def connect(self, vhost: str = "/", *, user: str = "guest", name: str = "",
                access: Access | None = None, client_properties: Mapping[str, Any] | None = None) -> Connection:
        target = self.vhosts.get(vhost)
        if target is None:
            raise NotAllowed(f"vhost {vhost} not found")
        connection = Connection(self, target, user=user, name=name, access=access,
                                client_properties=client_properties or {})
        self.connections.add(connection)
        return connection

    def new_name(self, prefix: str, taken: Container[str]) -> str:
        while True:
            name = f"{prefix}{self.name_prefix}{next(self._names)}"
            if name not in taken:
                return name

    def dropped(self, where: str, message: Message | None, reason: str) -> None:
        self.drops[reason] += 1
        if self.on_drop is not None:
            self.on_drop(where, message, reason)

    # -- time -----------------------------------------------------------

    def next_deadline(self) -> float | None:
        return self.timers.next_deadline()

    def tick(self, now: float) -> None:
        """Run everything due at ``now``: expiries, delays, retries."""
        for target in self.timers.pop_due(now):
            target.on_timer(now)
