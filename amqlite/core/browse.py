"""Browsing a queue without consuming it, and the filters of the
dead-letter workbench (browse, redrive, delete; see core/redrive.py).

RabbitMQ can only show a queue's messages by getting them with requeue
(rabbitmq-server #124): that reorders the queue and marks every message
redelivered. A browse here reads the ready list in delivery order and
changes nothing: no state, no counters, no position. Messages paged out
to disk come back as their location (``Paged``); the driver reads them
from disk, off the queue's own page-in path (amqlite/workbench.py).
"""

from __future__ import annotations

import datetime
from itertools import chain, islice
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Union

import attrs

from .message import Entry, Message
from .ready import PagedRef

if TYPE_CHECKING:
    from .queue import Queue

#: A ready message on disk only: (priority level, its ref).
Paged = tuple[int, PagedRef]
#: A ready message as a browse finds it.
Item = Union[Entry, Paged]

#: The reasons RabbitMQ writes in x-death.
REASONS = frozenset({"rejected", "expired", "maxlen", "delivery_limit"})


def walk(queue: Queue) -> Iterator[Item]:
    """The queue's ready messages in delivery order, taking none. With
    message groups, parked messages (next out, once their group's turn
    comes) go first, oldest first."""
    yield from parked(queue)
    yield from queue.ready.walk()


def parked(queue: Queue) -> list[Entry]:
    """With message groups, the messages waiting for their group's turn
    out of the ready list (a few), oldest first."""
    if queue.groups is None:
        return []
    return sorted((entry for group in queue.groups.groups.values() for entry in group.parked.values()),
                  key=lambda entry: entry.seq)


def page(queue: Queue, offset: int, limit: int) -> list[Item]:
    """Up to ``limit`` ready messages from position ``offset`` (0: the head)."""
    first = parked(queue)
    return list(islice(chain(first[offset:], queue.ready.walk(skip=max(0, offset - len(first)))), limit))


def seq_of(item: Item) -> int:
    return item.seq if isinstance(item, Entry) else item[1][2]


def deaths(message: Message) -> list[dict[str, Any]]:
    """The message's x-death entries, newest first."""
    found = message.headers.get("x-death")
    return [death for death in found if isinstance(death, dict)] if isinstance(found, list) else []


def _timestamp(value: Any) -> float | None:
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def first_death(message: Message) -> float | None:
    """When the message first died (seconds since the epoch); None if never."""
    times = [t for t in (_timestamp(death.get("time")) for death in deaths(message)) if t is not None]
    return min(times, default=None)


def death_count(message: Message) -> int:
    """How many times the message died, in every queue, for every reason."""
    total = 0
    for death in deaths(message):
        count = death.get("count", 1)
        total += int(count) if isinstance(count, int) else 1
    return total


@attrs.frozen
class Filter:
    """Which dead-lettered messages a browse shows, a redrive moves or a
    delete removes. Every field given must match; none given matches all."""

    #: An x-death reason (rejected, expired, maxlen, delivery_limit), any death.
    reason: str | None = None
    #: The queue it died in, any death.
    queue: str | None = None
    #: Total deaths (the sum of the x-death counts), inclusive bounds.
    min_deaths: int | None = None
    max_deaths: int | None = None
    #: Header name -> value, compared as text.
    headers: Mapping[str, str] = attrs.field(factory=dict)
    #: The routing key it carries, or the one it was published with
    #: (x-dead-letter-routing-key may have changed it).
    routing_key: str | None = None
    #: First death in [since, until), seconds since the epoch.
    since: float | None = None
    until: float | None = None

    @property
    def everything(self) -> bool:
        return self == Filter()

    def matches(self, message: Message) -> bool:
        found = deaths(message)
        if self.reason is not None and not any(death.get("reason") == self.reason for death in found):
            return False
        if self.queue is not None and not any(death.get("queue") == self.queue for death in found):
            return False
        if self.min_deaths is not None or self.max_deaths is not None:
            count = death_count(message)
            if (self.min_deaths is not None and count < self.min_deaths) or \
                    (self.max_deaths is not None and count > self.max_deaths):
                return False
        headers = message.headers
        for name, value in self.headers.items():
            if name not in headers or _text(headers[name]) != value:
                return False
        if self.routing_key is not None and self.routing_key not in (message.routing_key,
                                                                     original_routing_key(message)):
            return False
        if self.since is not None or self.until is not None:
            first = first_death(message)
            if first is None or (self.since is not None and first < self.since) or \
                    (self.until is not None and first >= self.until):
                return False
        return True

    def describe(self) -> dict[str, Any]:
        """The fields given, for logs and the API."""
        return {name: value for name, value in attrs.asdict(self).items() if value not in (None, {})}


def original_routing_key(message: Message) -> str:
    """The key the message had before it died: a dead-lettered copy may be
    re-keyed (x-dead-letter-routing-key); x-death keeps the original."""
    found = deaths(message)
    keys = found[-1].get("routing-keys") if found else None
    if isinstance(keys, list) and keys and isinstance(keys[0], str):
        return keys[0]
    return message.routing_key


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _whole(fields: Mapping[str, Any], name: str) -> int | None:
    value = fields.get(name)
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a whole number, not {value!r}") from None
    if number < 0:
        raise ValueError(f"{name} must not be negative")
    return number


def _time(fields: Mapping[str, Any], name: str) -> float | None:
    value = fields.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
        try:
            parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=datetime.timezone.utc)
            return parsed.timestamp()
    raise ValueError(f"{name} must be seconds since the epoch or an ISO 8601 time, not {value!r}")


def _text_field(fields: Mapping[str, Any], name: str) -> str | None:
    value = fields.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name} must be text")
    return value


def parse_filter(fields: Mapping[str, Any], headers: Mapping[str, Any] | None = None) -> Filter:
    """A filter from query parameters or a JSON object: ``reason``,
    ``queue``, ``min_deaths``, ``max_deaths``, ``routing_key``, ``since``,
    ``until`` (epoch seconds or ISO 8601) and ``headers`` (name -> value).
    Raises ValueError naming the field that is wrong."""
    reason = _text_field(fields, "reason")
    if reason is not None and reason not in REASONS:
        raise ValueError(f"reason must be one of {', '.join(sorted(REASONS))}, not {reason!r}")
    wanted = headers if headers is not None else fields.get("headers") or {}
    if not isinstance(wanted, Mapping) or not all(isinstance(name, str) for name in wanted):
        raise ValueError("headers must map header names to values")
    return Filter(
        reason=reason, queue=_text_field(fields, "queue"), min_deaths=_whole(fields, "min_deaths"),
        max_deaths=_whole(fields, "max_deaths"), headers={name: _text(value) for name, value in wanted.items()},
        routing_key=_text_field(fields, "routing_key"), since=_time(fields, "since"), until=_time(fields, "until"))
