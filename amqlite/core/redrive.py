"""Dead-letter redrive: move messages out of a dead-letter queue, back to
the queue each one died in (or to a named queue).

RabbitMQ has no such operation (rabbitmq-server #10937): users shovel the
messages back by hand or with a script, and lose or duplicate some when the
script dies half-way. Here each move is one synchronous core step (into
the destination, then out of the source), so every message is moved
exactly once.

:func:`redrive` moves everything from the head in one go. A :class:`Job`
is the dead-letter workbench's selective version: it moves (or deletes, or
only counts) what matches a filter (core/browse.py), wherever it sits in
the queue, at a rate, in steps a driver runs as time passes
(amqlite/workbench.py), so it can report its progress.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

import attrs

from .arguments import message_ttl
from .browse import Filter, Item, parked
from .fieldtypes import Long
from .message import READY, Entry, Message

if TYPE_CHECKING:
    from .queue import Queue
    from .vhost import VirtualHost

#: What a job does with the messages that match.
REDRIVE, DELETE, COUNT = "redrive", "delete", "count"
#: A job's states.
RUNNING, DONE, CANCELLED, FAILED = "running", "done", "cancelled", "failed"


def origin(message: Message) -> tuple[str, str, str] | None:
    """(queue, exchange, routing key) the message had when it last died."""
    deaths = message.headers.get("x-death")
    if not deaths or not isinstance(deaths[0], dict):
        return None
    death = deaths[0]
    keys = death.get("routing-keys") or [message.routing_key]
    queue, exchange = death.get("queue"), death.get("exchange")
    if not isinstance(queue, str) or not isinstance(exchange, str):
        return None
    return queue, exchange, keys[0] if isinstance(keys[0], str) else message.routing_key


def redrive(vhost: VirtualHost, source: Queue, now: float, *, to: str | None = None, limit: int | None = None) -> int:
    """Move up to ``limit`` ready messages from ``source`` into the queue
    they died in (or into ``to``), in order. Returns how many moved.

    A moved message gets its original exchange and routing key back, a
    fresh delivery count and the redrive headers (:func:`redriven`); its
    ``x-death`` history stays, so a message that fails again shows every
    round. Messages with no known origin, or whose
    queue is gone or refuses them (x-overflow), stay where they were.
    """
    moved = 0
    kept = []
    while limit is None or moved < limit:
        entry = source.fetch(now)
        if not isinstance(entry, Entry):
            break  # empty, or the rest is on disk (a later redrive moves it)
        found = origin(entry.message)
        name = to if to is not None else found[0] if found is not None else None
        destination = vhost.queues.get(name) if name is not None else None
        if destination is None or destination is source:
            kept.append(entry)
            continue
        message = redriven(entry.message, found, now)
        ttl = message_ttl(message.properties.expiration)
        if not destination.refuses(message) and destination.enqueue(message, ttl, now):
            source.settle(entry)
            moved += 1
        else:
            kept.append(entry)
    for entry in kept:
        source.put_back(entry, now)
    return moved


def redriven(message: Message, found: tuple[str, str, str] | None, now: float) -> Message:
    """The copy that goes back: the exchange and routing key it had when
    it died (``found``, from :func:`origin`), and for a dead letter
    ``x-redrive-count`` one up and ``x-last-redrive`` now, so a message that
    keeps coming back shows it. A message that never died is only moved
    (RabbitMQ's "move messages" shovel adds nothing either)."""
    # Always a new message: the destination records its own copy, whatever
    # storage did with the source's (a paged one comes read from disk).
    exchange, routing_key = (message.exchange, message.routing_key) if found is None else found[1:]
    properties = message.properties
    if "x-death" in message.headers:
        headers = dict(message.headers)
        count = headers.get("x-redrive-count")
        headers["x-redrive-count"] = Long((count if isinstance(count, int) else 0) + 1)
        headers["x-last-redrive"] = datetime.datetime.fromtimestamp(int(now), tz=datetime.timezone.utc)
        properties = properties._replace(headers=headers)
    return Message(exchange, routing_key, properties, message.body)


def _key(item: Item) -> tuple[int, int]:
    """Where an item is in delivery order, for a job's cursor: priority
    first, then publication order."""
    return (-item.priority, item.seq) if isinstance(item, Entry) else (-item[0], item[1][2])


@attrs.define(eq=False)
class Job:
    """One selective redrive, delete or count over one queue.

    It visits the queue's ready messages once, in delivery order, up to
    the newest one there when it started: a message that dies again after
    its redrive (and so comes back behind it) waits for the next job
    instead of going round for ever. Rate-limited jobs hold a bucket of
    at most a second's worth of messages, filled as ``now`` advances.
    """

    id: int
    vhost: str
    queue: str
    action: str
    filter: Filter
    started: float
    #: The newest seq the job visits (the queue's last when it started).
    until_seq: int
    #: Where to redrive; None: where each message died.
    to: str | None = None
    #: Messages per second redriven or deleted; None: as fast as it goes.
    rate: float | None = None
    #: At most this many redriven or deleted; None: all that match.
    limit: int | None = None
    #: Who started it (the API shows and cancels a user's own jobs).
    user: str = ""
    scanned: int = 0
    matched: int = 0
    #: Redriven or deleted.
    done: int = 0
    #: Matched but left in place: no known origin, a destination that is
    #: gone or refused it (x-overflow), or a record unreadable on disk.
    skipped: int = 0
    state: str = RUNNING
    error: str | None = None
    finished: float | None = None
    #: Delivery-order key of the last message visited.
    cursor: tuple[int, int] = (-(2**31), -1)
    _tokens: float = 1.0
    _filled: float = 0.0

    def __attrs_post_init__(self) -> None:
        self._filled = self.started

    @property
    def running(self) -> bool:
        return self.state == RUNNING

    def _refill(self, now: float) -> None:
        if self.rate is not None:
            self._tokens = min(max(1.0, self.rate), self._tokens + (now - self._filled) * self.rate)
        self._filled = now

    def next_due(self, now: float) -> float:
        """When the next step can act: now, or once a message's worth of
        rate has built up."""
        self._refill(now)
        if self.rate is None or self.action == COUNT or self._tokens >= 1:
            return now
        return now + (1 - self._tokens) / self.rate

    def candidates(self, queue: Queue, batch: int) -> list[Item]:
        """The next ``batch`` messages to visit, in delivery order: the
        ready list from the cursor on (found by bisection, not walked from
        the head), and any parked by message groups."""
        if self.state != RUNNING:
            return []
        cursor, until = self.cursor, self.until_seq
        chosen: list[Item] = [entry for entry in parked(queue) if cursor < _key(entry) and entry.seq <= until]
        found = 0
        for item in queue.ready.walk(after=(-cursor[0], cursor[1])):
            if _key(item)[1] <= until:
                chosen.append(item)
                found += 1
                if found >= batch:
                    break
        chosen.sort(key=_key)
        return chosen[:batch]

    def apply(self, vhost: VirtualHost, queue: Queue, visited: list[tuple[Item, Message | None]],
              now: float) -> None:
        """Act on ``visited`` (from :meth:`candidates`, with each message;
        None for one that could not be read from disk) as far as the rate
        allows. Stops at a message that changed place meanwhile (read back
        from disk): the next step visits it again. Finishes the job once
        nothing is left to visit."""
        if self.state != RUNNING:
            return
        if queue.deleted or vhost.queues.get(self.queue) is not queue:
            self.fail(f"queue '{self.queue}' was deleted", now)
            return
        if not visited:
            self.finish(DONE, now)
            return
        self._refill(now)
        # Paged messages that left, taken off the disk run at once at the end.
        gone: dict[int, list[int]] = {}
        try:
            self._visit(vhost, queue, visited, now, gone)
        finally:
            for priority, seqs in gone.items():
                queue.backing.remove_paged(priority, seqs)
        if self.limit is not None and self.done >= self.limit:
            self.finish(DONE, now)

    def _visit(self, vhost: VirtualHost, queue: Queue, visited: list[tuple[Item, Message | None]], now: float,
               gone: dict[int, list[int]]) -> None:
        for item, message in visited:
            if self.limit is not None and self.done >= self.limit:
                return
            if isinstance(item, Entry):
                if item.state != READY:
                    self.cursor = _key(item)
                    continue  # taken meanwhile: delivered, expired
            elif not queue.ready.holds_paged(item[0], item[1][2]):
                return  # read back (or being read back) from disk: visited again next step
            if message is None:
                self.scanned += 1
                self.skipped += 1
                self.cursor = _key(item)
                continue
            if not self.filter.matches(message):
                self.scanned += 1
                self.cursor = _key(item)
                continue
            if self.action != COUNT and self.rate is not None and self._tokens < 1:
                return  # out of rate: this one is next
            self.scanned += 1
            self.matched += 1
            self.cursor = _key(item)
            if self.action == COUNT:
                continue
            if self.action == DELETE or self._redrive(vhost, queue, message, now):
                if isinstance(item, Entry):
                    queue.take_ready(item)
                else:
                    gone.setdefault(item[0], []).append(item[1][2])
                if self.action == DELETE:
                    vhost.broker.dropped(queue.name, message, "deleted")
                self.done += 1
                if self.rate is not None:
                    self._tokens -= 1
            else:
                self.skipped += 1

    def _redrive(self, vhost: VirtualHost, source: Queue, message: Message, now: float) -> bool:
        found = origin(message)
        name = self.to if self.to is not None else found[0] if found is not None else None
        destination = vhost.queues.get(name) if name is not None else None
        if destination is None or destination is source or destination.deleted:
            return False
        copy = redriven(message, found, now)
        # A full destination that dead-letters what it refuses must not get
        # the copy at all: the original stays here.
        return not destination.refuses(copy) and destination.enqueue(copy, message_ttl(copy.properties.expiration), now)

    def finish(self, state: str, now: float) -> None:
        if self.state == RUNNING:
            self.state, self.finished = state, now

    def fail(self, error: str, now: float) -> None:
        if self.state == RUNNING:
            self.error = error
            self.finish(FAILED, now)

    def info(self) -> dict[str, Any]:
        """What the API, ctl and the dashboard show."""
        return {
            "id": self.id, "vhost": self.vhost, "queue": self.queue, "action": self.action,
            "filter": self.filter.describe(), "to": self.to, "rate": self.rate, "limit": self.limit,
            "user": self.user, "state": self.state, "error": self.error, "scanned": self.scanned,
            "matched": self.matched, "done": self.done, "skipped": self.skipped, "started": self.started,
            "finished": self.finished,
        }

