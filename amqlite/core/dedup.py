"""Publisher deduplication, with LavinMQ's arguments (which are those of
the rabbitmq-message-deduplication plugin), so clients carry over.

An exchange or a queue declared with ``x-message-deduplication: true``
remembers the ids of the messages it took: the value of the header named by
``x-deduplication-header`` (that header itself by default). A message whose
id it remembers is a duplicate: an exchange does not route it, a queue (or
stream) does not store it, and the publisher's confirm is still an ack, so
a producer retrying everything unconfirmed after a crash moves on. Messages
without the header are never duplicates.

The window: ``x-cache-size`` ids at most (the oldest go first; no bound if
absent), each for ``x-cache-ttl`` milliseconds (for ever if absent), or for
the message's own ``x-cache-ttl`` header. On a durable owner, each id taken
is journalled, so the window survives a restart.

An id counts only once its message is taken: the owner takes it as it
checks (so that its record precedes the message's in the journal, see
store/recovery.py), and hands it back with :meth:`Deduplicator.refused`
when the message is refused after all (``x-overflow: reject-publish``, a
failing disk), so the publisher's retry is stored rather than dropped.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Hashable

import attrs

from .errors import PreconditionFailed
from .fieldtypes import freeze
from .message import Message

ENABLE = "x-message-deduplication"
CACHE_SIZE = "x-cache-size"
CACHE_TTL = "x-cache-ttl"
HEADER = "x-deduplication-header"


@attrs.define(slots=True, eq=False)
class _Seen:
    #: The message id as it came, for the journal.
    value: Any
    expires_at: float | None
    #: The journal segment recording it (0: not journalled).
    segment: int = 0


class Deduplicator:
    def __init__(self, size: int | None, ttl: float | None, header: str) -> None:
        self.size = size
        self.ttl = ttl
        self.header = header
        self._seen: OrderedDict[Hashable, _Seen] = OrderedDict()
        #: Set on a durable owner: records an id taken and returns the
        #: journal segment; and lets go of a record.
        self.on_taken: Callable[[Any, float | None], int] | None = None
        self.on_forgotten: Callable[[int], None] | None = None
        #: Set on a durable owner: records that the id in a segment was
        #: handed back (its message refused).
        self.on_refused: Callable[[Any, int], None] | None = None

    def __len__(self) -> int:
        return len(self._seen)

    def duplicate(self, message: Message, now: float) -> bool:
        """True if the message's id is in the window; else it is now."""
        headers = message.properties.headers
        if not headers or self.header not in headers:
            return False
        value = headers[self.header]
        key = freeze(value)
        seen = self._seen.get(key)
        if seen is not None and (seen.expires_at is None or seen.expires_at > now):
            return True
        ttl = _milliseconds(headers.get(CACHE_TTL))
        ttl = self.ttl if ttl is None else ttl
        self.remember(value, None if ttl is None else now + ttl)
        self._forget_expired(now)
        return False

    def refused(self, message: Message) -> None:
        """The message :meth:`duplicate` just took in was refused: its id
        is not remembered after all."""
        headers = message.properties.headers
        if not headers or self.header not in headers:
            return
        value = headers[self.header]
        seen = self._seen.pop(freeze(value), None)
        if seen is not None and seen.segment and self.on_refused is not None:
            self.on_refused(value, seen.segment)

    def remember(self, value: Any, expires_at: float | None, segment: int = 0) -> None:
        """Take an id into the window (``segment``: recovered from there)."""
        key = freeze(value)
        old = self._seen.pop(key, None)
        if old is not None:
            self._let_go(old)
        seen = self._seen[key] = _Seen(value, expires_at, segment)
        if not segment and self.on_taken is not None:
            seen.segment = self.on_taken(value, expires_at)
        while self.size is not None and len(self._seen) > self.size:
            self._let_go(self._seen.popitem(last=False)[1])

    def _forget_expired(self, now: float) -> None:
        # Oldest first: with one TTL for all, these are the first to expire;
        # per-message TTLs may leave some behind, until the size bound.
        seen = self._seen
        while seen:
            oldest = next(iter(seen.values()))
            if oldest.expires_at is None or oldest.expires_at > now:
                break
            self._let_go(seen.popitem(last=False)[1])

    def _let_go(self, seen: _Seen) -> None:
        if seen.segment and self.on_forgotten is not None:
            self.on_forgotten(seen.segment)

    def forget_all(self) -> None:
        for seen in self._seen.values():
            self._let_go(seen)
        self._seen.clear()


def _milliseconds(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        return None
    return value / 1000


def deduplicator_for(arguments: dict[str, Any], what: str) -> Deduplicator | None:
    """The deduplicator an exchange's or queue's arguments ask for, if any;
    ``what`` names it in errors ("queue 'q' in vhost '/'")."""
    if arguments.get(ENABLE) is not True:
        return None
    size, ttl, header = arguments.get(CACHE_SIZE), arguments.get(CACHE_TTL), arguments.get(HEADER, HEADER)
    for name, value in ((CACHE_SIZE, size), (CACHE_TTL, ttl)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise PreconditionFailed(f"invalid arg '{name}' for {what}: expected a positive integer, got {value!r}")
    if not isinstance(header, str) or not header:
        raise PreconditionFailed(f"invalid arg '{HEADER}' for {what}: expected a header name, got {header!r}")
    return Deduplicator(size, None if ttl is None else ttl / 1000, header)
