"""Scheduled messages' driver: pages of a delayed exchange's held
messages (core/delayed.py keeps them by id, due time and HOLD record), with
their content read back from disk in a worker thread, and cancels of all
that match a filter; for the management API and ``amqlite ctl``."""

from __future__ import annotations

import math

import trio

from .core.broker import Broker
from .core.browse import Filter
from .core.exchange import Exchange
from .core.message import Message
from .log import get_logger

log = get_logger(__name__)

#: Held messages read back per round of a filtered page or a cancel.
BATCH = 500
#: Held messages a filtered page looks through per request at most; it
#: answers the id to go on from.
SCAN_MAX = 20_000

#: Seconds a change waits for its record to reach the disk (and how often it looks).
SYNC_WAIT, SYNC_POLL = 5.0, 0.002

Shown = tuple[int, float, Message | None]


async def on_disk(broker: Broker) -> bool:
    """Wait until every record appended so far is on disk, as a confirm
    does: a change answered as made survives kill -9. False if the disk
    took none of it within SYNC_WAIT (writes fail)."""
    journal = broker.journal
    if journal is None:
        return True
    position = journal.position
    with trio.move_on_after(SYNC_WAIT):
        while journal.synced < position:
            await trio.sleep(SYNC_POLL)
        return True
    return False


async def read(broker: Broker, exchange: Exchange, ids: list[int]) -> list[Message | None]:
    """The held messages of ``ids`` as their HOLD records have them, or
    as held in memory when not journalled (None: gone meanwhile, or
    unreadable)."""
    journal = broker.journal
    refs = []
    found: list[Message | None] = [None] * len(ids)
    for n, msg_id in enumerate(ids):
        where = exchange.held.location(msg_id)
        if where is not None and where[0]:
            refs.append((where[0], where[1], n, 0))
        elif where is not None:
            found[n] = exchange.held.resident(msg_id)
    if journal is None or not refs:
        return found
    for ref in refs:  # one bad record must not hide the others
        try:
            (found[ref[2]],) = await trio.to_thread.run_sync(journal.read_paged, [ref])
        except (OSError, ValueError) as error:
            log.warning("scheduled.unreadable", exchange=exchange.name, segment=ref[0], offset=ref[1],
                        error=str(error))
    return found


#: Where a page goes on from: after a held message's id (pages in id
#: order), or after its (due, id) (pages in due order, O(log n)).
Cursor = int | tuple[float, int]


def _batch(exchange: Exchange, after: Cursor, size: int, due_from: float,
           due_to: float) -> list[tuple[Cursor, int, float]]:
    """(cursor, id, due) of up to ``size`` held messages after ``after``."""
    if isinstance(after, tuple):
        return [((due, msg_id), msg_id, due)
                for msg_id, due in exchange.held.scheduled_by_due(due_from, due_to, after, size)]
    return [(msg_id, msg_id, due) for msg_id, due in exchange.held.scheduled(after, size, due_from, due_to)]


async def page(broker: Broker, exchange: Exchange, after: Cursor, limit: int, due_from: float = -math.inf,
               due_to: float = math.inf, chosen: Filter = Filter()) -> tuple[list[Shown], Cursor | None]:
    """Up to ``limit`` held messages after ``after``, due in [``due_from``,
    ``due_to``), whose content matches ``chosen`` (routing key, headers);
    and where to go on from (None: no more)."""
    shown: list[Shown] = []
    scanned = 0
    while len(shown) < limit and scanned < SCAN_MAX:
        batch = _batch(exchange, after, limit if chosen.everything else BATCH, due_from, due_to)
        if not batch:
            return shown, None
        messages = await read(broker, exchange, [msg_id for _, msg_id, _ in batch])
        for (cursor, msg_id, due), message in zip(batch, messages, strict=True):
            after = cursor
            if chosen.everything or (message is not None and chosen.matches(message)):
                shown.append((msg_id, due, message))
                if len(shown) == limit:
                    break
        scanned += len(batch)
    return shown, after if _batch(exchange, after, 1, due_from, due_to) else None


async def cancel_matching(broker: Broker, exchange: Exchange, due_from: float = -math.inf,
                          due_to: float = math.inf, chosen: Filter = Filter()) -> int:
    """Cancel every held message due in the range whose content matches
    ``chosen``; how many were cancelled. Only the due range: no reads,
    and in due order (O(log n) to find) when a range is given."""
    cancelled = 0
    after: Cursor | None = 0 if due_from == -math.inf and due_to == math.inf else (due_from, -1)
    while after is not None:
        if chosen.everything:
            batch = _batch(exchange, after, BATCH, due_from, due_to)
            ids = [msg_id for _, msg_id, _ in batch]
            after = batch[-1][0] if batch else None
        else:
            shown, after = await page(broker, exchange, after, BATCH, due_from, due_to, chosen)
            ids = [msg_id for msg_id, _, _ in shown]
        cancelled += sum(exchange.cancel_scheduled(msg_id) for msg_id in ids)
    log.info("scheduled.cancelled", vhost=exchange.vhost.name, exchange=exchange.name, count=cancelled)
    return cancelled
