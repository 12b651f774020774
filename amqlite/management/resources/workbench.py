"""The dead-letter workbench (amqlite's own): browse a queue's messages
without consuming them, and redrive, delete or count those that match a
filter (core/browse.py, core/redrive.py, amqlite/workbench.py).

A redrive is a job: ``POST .../redrives`` starts it and answers at once,
``GET /api/redrives/...`` reports its progress, ``DELETE`` cancels it. A
dry run and a delete run to their end within the request.
"""

from __future__ import annotations

from typing import Any, Mapping
from urllib.parse import quote

from starlette.responses import JSONResponse, Response

from ...core.browse import Filter, parse_filter
from ...core.errors import AMQPError
from ...core.message import Entry
from ...core.queue import Queue
from ...core.redrive import COUNT, DELETE, REDRIVE, Job
from ...log import get_logger
from ...workbench import Jobs, browse, jobs_of
from .. import snapshot
from ..api import Call, Refused, bad_request, count_field, error, not_found, refusal

log = get_logger(__name__)

#: Messages one browse request shows at most, and by default.
MAX_LIMIT, DEFAULT_LIMIT = 1000, 50
#: Body bytes a browse shows of each message by default (a preview).
PREVIEW = 1024


def _jobs(call: Call) -> Jobs:
    return jobs_of(call.broker, call.api.now)


def _queue(call: Call) -> Queue:
    found = call.vhost().queues.get(call.param("name"))
    if found is None:
        raise Refused(not_found())
    if found.is_stream:
        raise Refused(bad_request("a stream keeps what it delivers: read it from an offset instead of browsing"))
    return found


def _filter(fields: Mapping[str, Any], headers: Mapping[str, Any] | None = None) -> Filter:
    try:
        return parse_filter(fields, headers)
    except ValueError as problem:
        raise Refused(bad_request(str(problem))) from None


async def messages(call: Call) -> Response:
    """``GET .../messages?offset=&limit=`` with filter fields
    (``header.NAME=value`` for a header): the ready messages from a
    position, in delivery order, unchanged."""
    queue = _queue(call)
    query = dict(call.request.query_params)
    offset, limit = count_field(query, "offset", 0), count_field(query, "limit", DEFAULT_LIMIT)
    truncate = count_field(query, "truncate", PREVIEW)
    if offset is None or offset < 0 or limit is None or not 0 < limit <= MAX_LIMIT or truncate is None \
            or truncate < 0:
        return bad_request(f'"offset" must be a position (0 is the head), "limit" 1 to {MAX_LIMIT}, '
                           f'"truncate" a length')
    headers = {key[len("header."):]: value for key, value in query.items() if key.startswith("header.")}
    chosen = _filter(query, headers)
    shown, following = await browse(call.broker, queue, offset, limit, chosen)
    return JSONResponse({
        "offset": offset, "next": following, "messages_ready": queue.message_count,
        "filter": chosen.describe(),
        "messages": [message_info(position, item, message, truncate) for position, item, message in shown],
    })


def message_info(position: int, item: Any, message: Any, truncate: int) -> dict[str, Any]:
    """One browsed message: what ``POST .../get`` shows of it, with its
    position, delivery count and whether it is on disk only."""
    entry = item if isinstance(item, Entry) else None
    info: dict[str, Any] = {"position": position, "paged": entry is None,
                            "delivery_count": entry.delivery_count if entry is not None else 0}
    if message is None:
        return {**info, "error": "the message cannot be read from disk"}
    shown = snapshot.message_info(message, redelivered=entry.redelivered if entry is not None else False,
                                  message_count=0, encoding="auto", truncate=truncate)
    del shown["message_count"]
    shown["x_death"] = snapshot.jsonable(message.headers.get("x-death") or [])
    return {**info, **shown}


def _job_spec(spec: dict[str, Any]) -> tuple[Filter, str | None, float | None, int | None]:
    """The filter (``spec["filter"]``), destination, rate and limit a body asks for."""
    given = spec.get("filter", {})
    if not isinstance(given, dict):
        raise Refused(bad_request('"filter" must be an object'))
    to, rate, limit = spec.get("to"), spec.get("rate"), spec.get("limit")
    if to is not None and not (isinstance(to, str) and to):
        raise Refused(bad_request('"to" must be a queue name'))
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float)) or rate <= 0):
        raise Refused(bad_request('"rate" must be messages per second, more than 0'))
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise Refused(bad_request('"limit" must be a count'))
    return _filter(given), to, None if rate is None else float(rate), limit


async def start_redrive(call: Call) -> Response:
    """Redrive what matches ``filter``, to where each died or ``to``, at
    ``rate`` messages per second, at most ``limit``; with ``"dry_run":
    true`` only count them (and answer when done)."""
    spec = await call.body()
    chosen, to, rate, limit = _job_spec(spec)
    dry_run = spec.get("dry_run", False)
    if not isinstance(dry_run, bool):
        return bad_request('"dry_run" must be true or false')
    vhost, queue = call.param("vhost"), _queue(call)
    if to is not None:
        if to not in call.vhost().queues:
            return not_found()
        try:
            call.user.access(vhost).write("queue", to)
        except AMQPError as failure:
            return refusal(failure)
    jobs = _jobs(call)
    job = jobs.create(vhost, queue, COUNT if dry_run else REDRIVE, chosen, to=to, rate=None if dry_run else rate,
                      limit=limit, user=call.user.name)
    if dry_run:
        await jobs.run(job)
        return JSONResponse(job.info())
    jobs.start(job)
    return JSONResponse(job.info(), status_code=202, headers={"location": f"/api/redrives/{_path(job)}"})


async def delete_matching(call: Call) -> Response:
    """Delete every ready message that matches ``filter`` (``{}``: all);
    the count is logged and answered."""
    spec = await call.body()
    given = spec.get("filter")
    if not isinstance(given, dict):
        return bad_request('"filter" must be an object ({} deletes every ready message, as a purge)')
    queue = _queue(call)
    jobs = _jobs(call)
    job = jobs.create(call.param("vhost"), queue, DELETE, _filter(given), user=call.user.name)
    await jobs.run(job)
    return JSONResponse({**job.info(), "deleted": job.done})


def _path(job: Job) -> str:
    return f"{quote(job.vhost, safe='')}/{job.id}"


def _visible(call: Call) -> list[Job]:
    vhost = call.optional("vhost")
    if vhost is not None:
        call.vhost()
    names = {v.name for v in call.visible_vhosts(vhost)}
    return [job for job in _jobs(call).jobs.values() if job.vhost in names]


async def list_redrives(call: Call) -> Response:
    """Every job of the user's vhosts (or the one in the path), running or lately finished."""
    return JSONResponse([job.info() for job in _visible(call)])


def _job(call: Call) -> Job:
    wanted = call.param("id")
    found = next((job for job in _visible(call) if str(job.id) == wanted), None)
    if found is None:
        raise Refused(not_found())
    return found


async def show_redrive(call: Call) -> Response:
    return JSONResponse(_job(call).info())


async def cancel_redrive(call: Call) -> Response:
    """Stop a job (its own user's, or any for an administrator); what it
    moved stays moved."""
    job = _job(call)
    if job.user != call.user.name and "administrator" not in call.user.tags:
        return error(401, "not_authorised", f"redrive {job.id} was started by another user")
    _jobs(call).cancel(job)
    return JSONResponse(job.info())
