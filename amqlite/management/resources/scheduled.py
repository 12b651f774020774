"""Scheduled messages (amqlite's own): list the messages a delayed
exchange holds, cancel one or all that match a filter, reschedule one, fire
one now (core/delayed.py, amqlite/scheduled.py). A held message's id is its
message_id property, or else the number the broker gave it (as text);
several held messages may share a message_id, and a change by that id
applies to each of them. Pages go on from a held message's ``number``.

A queue's retries waiting out an ``x-delayed-retry-*`` delay are
scheduled messages too (core/retries.py), under the queue's own
``.../scheduled`` routes: their number is their seq in the queue, and a
cancel dead-letters the message as a reject without requeue would."""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import attrs
from starlette.responses import JSONResponse, Response

from ... import scheduled
from ...core.browse import Filter, parse_filter
from ...core.exchange import Exchange
from ...core.queue import Queue
from .. import snapshot
from ..api import Call, Refused, bad_request, count_field, error, not_found
from .exchanges import exchange_name

MAX_LIMIT, DEFAULT_LIMIT = 1000, 50
PREVIEW = 1024


def _exchange(call: Call) -> Exchange:
    found = call.vhost().exchanges.get(exchange_name(call))
    if found is None:
        raise Refused(not_found())
    if not found.delayed:
        raise Refused(bad_request("only an x-delayed-message exchange holds scheduled messages"))
    return found


def _selection(fields: Mapping[str, Any], headers: Mapping[str, Any] | None = None) -> tuple[float, float, Filter]:
    """(due from, due to, content filter) from ``due_from``, ``due_to``
    (epoch seconds or ISO 8601), ``routing_key`` and headers."""
    try:
        parsed = parse_filter({"routing_key": fields.get("routing_key"), "since": fields.get("due_from"),
                               "until": fields.get("due_to"), "headers": fields.get("headers") or {}}, headers)
    except ValueError as problem:
        raise Refused(bad_request(str(problem).replace("since", "due_from").replace("until", "due_to"))) from None
    due_from = -math.inf if parsed.since is None else parsed.since
    due_to = math.inf if parsed.until is None else parsed.until
    return due_from, due_to, attrs.evolve(parsed, since=None, until=None)


def _queue(call: Call) -> Queue:
    found = call.vhost().queues.get(call.param("name"))
    if found is None:
        raise Refused(not_found())
    return found


def _paging(call: Call, query: dict[str, str] | None = None) -> tuple[int, int, float, float, Filter]:
    """``after``, ``limit``, and the selection of a listing's query."""
    query = dict(call.request.query_params) if query is None else query
    after, limit = count_field(query, "after", 0), count_field(query, "limit", DEFAULT_LIMIT)
    if after is None or after < 0 or limit is None or not 0 < limit <= MAX_LIMIT:
        raise Refused(bad_request(f'"after" must be a number (0: from the first), "limit" 1 to {MAX_LIMIT}'))
    headers = {key[len("header."):]: value for key, value in query.items() if key.startswith("header.")}
    return (after, limit, *_selection(query, headers))


def _ids(call: Call, exchange: Exchange) -> list[int]:
    """The held messages the id in the path names; 404 if none."""
    found = exchange.find_scheduled(call.param("id"))
    if not found:
        raise Refused(not_found())
    return found


async def list_scheduled(call: Call) -> Response:
    """``GET .../scheduled?after=&limit=`` with ``due_from``, ``due_to``,
    ``routing_key`` and ``header.NAME=value``: held messages in id order."""
    exchange = _exchange(call)
    text = call.request.query_params.get("after", "0")
    query = {key: value for key, value in call.request.query_params.items() if key != "after"}
    _, limit, due_from, due_to, chosen = _paging(call, query)
    cursor: scheduled.Cursor
    if due_from == -math.inf and due_to == math.inf:
        cursor, _, _, _, _ = _paging(call)
    else:
        # In due order: "DUE/NUMBER" (as "next" gives it) goes on after that message.
        due_text, _, number = text.partition("/")
        try:
            cursor = (due_from, -1) if text == "0" else (float(due_text), int(number))
        except ValueError:
            return bad_request('"after" must be "DUE/NUMBER" (as "next" gives it) with a due range')
    shown, following = await scheduled.page(call.broker, exchange, cursor, limit, due_from, due_to, chosen)
    now = call.api.now()
    return JSONResponse({
        "held": len(exchange.held),
        "next": None if following is None else (
            f"{following[0]!r}/{following[1]}" if isinstance(following, tuple) else str(following)),
        "messages": [_info(msg_id, due, message, now) for msg_id, due, message in shown],
    })


def _info(msg_id: int, due: float, message: Any, now: float) -> dict[str, Any]:
    info: dict[str, Any] = {"id": str(msg_id), "number": str(msg_id), "due": due,
                            "due_in_ms": max(0, round((due - now) * 1000))}
    if message is None:
        return {**info, "id": None, "error": "the message cannot be read from disk"}
    if message.properties.message_id:
        info["id"] = message.properties.message_id
    shown = snapshot.message_info(message, redelivered=False, message_count=0, encoding="auto", truncate=PREVIEW)
    del shown["message_count"], shown["redelivered"]
    return {**info, **shown}


async def _done(call: Call, changed: int) -> Response:
    """``{"changed": n}`` once the change is on disk; 404 if nothing is
    held under the id."""
    if not changed:
        return not_found()
    if not await scheduled.on_disk(call.broker):
        return error(503, "not_on_disk", "made, but not on disk yet: the disk refuses writes")
    return JSONResponse({"changed": changed})


async def cancel(call: Call) -> Response:
    exchange = _exchange(call)
    return await _done(call, sum(map(exchange.cancel_scheduled, _ids(call, exchange))))


async def cancel_matching(call: Call) -> Response:
    """``POST .../scheduled/cancel`` with ``{"filter": {...}}`` (the
    listing's fields; ``headers`` an object): ``{"cancelled": n}``."""
    exchange = _exchange(call)
    given = (await call.body()).get("filter", {})
    if not isinstance(given, dict):
        return bad_request('"filter" must be an object')
    due_from, due_to, chosen = _selection(given)
    cancelled = await scheduled.cancel_matching(call.broker, exchange, due_from, due_to, chosen)
    if not await scheduled.on_disk(call.broker):
        return error(503, "not_on_disk", f"{cancelled} cancelled, but not on disk yet: the disk refuses writes")
    return JSONResponse({"cancelled": cancelled})


Move = Callable[[int, float], bool]


def _held(call: Call) -> tuple[list[int], Move]:
    """The exchange's held messages the path's id names, and how to move one."""
    exchange = _exchange(call)
    return _ids(call, exchange), exchange.reschedule


def _retried(call: Call) -> tuple[list[int], Move]:
    """The queue's retries the path's id names, and how to move one."""
    queue = _queue(call)
    return _seqs(call, queue), queue.reschedule_retry


async def _reschedule(call: Call, ids: list[int], move: Move) -> Response:
    """``POST .../scheduled/{id}/reschedule`` with ``{"due": epoch seconds}``
    or ``{"delay": ms from now}``."""
    when = _when(await call.body(), call.api.now())
    return await _done(call, sum(move(msg_id, when) for msg_id in ids))


async def _fire(call: Call, ids: list[int], move: Move) -> Response:
    now = call.api.now()
    return await _done(call, sum(move(msg_id, now) for msg_id in ids))


async def reschedule(call: Call) -> Response:
    return await _reschedule(call, *_held(call))


async def fire(call: Call) -> Response:
    return await _fire(call, *_held(call))


async def reschedule_retry(call: Call) -> Response:
    return await _reschedule(call, *_retried(call))


async def fire_retry(call: Call) -> Response:
    return await _fire(call, *_retried(call))


def _when(spec: Mapping[str, Any], now: float) -> float:
    """The new due time a reschedule's body gives."""
    given = [(name, spec[name]) for name in ("due", "delay") if spec.get(name) is not None]
    if len(given) != 1 or isinstance(given[0][1], bool) or not isinstance(given[0][1], int | float) \
            or not math.isfinite(given[0][1]):
        raise Refused(bad_request('give one of "due" (epoch seconds) or "delay" (ms from now), a number'))
    name, value = given[0]
    return float(value) if name == "due" else now + float(value) / 1000


async def list_retries(call: Call) -> Response:
    """``GET /api/queues/{vhost}/{name}/scheduled``: the queue's retries
    waiting out their delay, in seq order, filtered as a delayed
    exchange's listing is (all in memory: nothing is read from disk)."""
    queue = _queue(call)
    after, limit, due_from, due_to, chosen = _paging(call)
    shown: list[dict[str, Any]] = []
    now = call.api.now()
    while len(shown) < limit and (batch := queue.retries.page(after, scheduled.BATCH, due_from, due_to)):
        for seq, due, entry in batch:
            after = seq
            if chosen.matches(entry.message):
                shown.append({**_info(seq, due, entry.message, now), "delivery_count": entry.delivery_count})
                if len(shown) == limit:
                    break
    following = queue.retries.page(after, 1, due_from, due_to) if len(shown) == limit else []
    return JSONResponse({"held": len(queue.retries), "next": str(after) if following else None, "messages": shown})


def _seqs(call: Call, queue: Queue) -> list[int]:
    found = queue.retries.lookup(call.param("id"))
    if not found:
        raise Refused(not_found())
    return found


async def cancel_retry(call: Call) -> Response:
    queue = _queue(call)
    now = call.api.now()
    return await _done(call, sum(queue.cancel_retry(seq, now) for seq in _seqs(call, queue)))
