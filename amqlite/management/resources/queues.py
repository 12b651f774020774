"""Queues: list, show, declare, delete, purge, the message operations
(get, redrive, RabbitMQ's "move messages" shovel), and streams' consumer
groups."""

from __future__ import annotations

from typing import Any, Callable
from urllib.parse import unquote, urlsplit

import anyio
from starlette.responses import JSONResponse, Response

from ...core.events import GetResult, WaitForDisk
from ...core.stream import Stream
from ...core.vhost import VirtualHost
from .. import snapshot
from ..api import Call, bad_request, count_field, flag, not_found

#: How ``POST .../get`` settles what it took.
ACK_MODES = frozenset({"ack_requeue_true", "ack_requeue_false", "reject_requeue_true", "reject_requeue_false"})
#: How long a get or a redrive waits for paged messages to be read back.
PAGE_IN_WAIT = 5.0


def listing(call: Call, members: Callable[[VirtualHost], dict[str, Any]],
            info: Callable[[Any], dict[str, Any]]) -> Response:
    """Every member (queue, exchange) of the user's vhosts, or of the one in the path."""
    vhost = call.optional("vhost")
    if vhost is not None:
        call.vhost()
    return JSONResponse([info(x) for v in call.visible_vhosts(vhost) for _, x in sorted(members(v).items())])


async def list_queues(call: Call) -> Response:
    return listing(call, lambda v: v.queues, call.api.queue_info)


async def show(call: Call) -> Response:
    found = call.visible_vhosts(call.param("vhost"))
    target = found[0].queues.get(call.param("name")) if found else None
    return JSONResponse(call.api.queue_info(target)) if target is not None else not_found()


async def declare(call: Call) -> Response:
    spec = await call.body()
    vhost, name = call.param("vhost"), call.param("name")
    existed = name in call.vhost().queues
    call.on_channel(vhost, lambda channel: channel.declare_queue(
        name, now=call.api.now(), durable=flag(spec, "durable", True), auto_delete=flag(spec, "auto_delete", False),
        arguments=spec.get("arguments") or {}))
    return Response(status_code=204 if existed else 201)


async def delete(call: Call) -> Response:
    vhost, name = call.param("vhost"), call.param("name")
    # AMQP's queue.delete of a missing queue succeeds; the API's is a 404.
    if name not in call.vhost().queues:
        return not_found()
    query = call.request.query_params
    call.on_channel(vhost, lambda channel: channel.delete_queue(
        name, now=call.api.now(), if_unused=query.get("if-unused") == "true", if_empty=query.get("if-empty") == "true"))
    return Response(status_code=204)


async def purge(call: Call) -> Response:
    name = call.param("name")
    call.on_channel(call.param("vhost"), lambda channel: channel.purge_queue(name))
    return Response(status_code=204)


async def get(call: Call) -> Response:
    """RabbitMQ's "get messages": take up to ``count``, then settle them
    all as ``ackmode`` says (requeued ones come back redelivered)."""
    spec = await call.body()
    count, ackmode, encoding = count_field(spec, "count", 1), spec.get("ackmode"), spec.get("encoding", "auto")
    truncate = count_field(spec, "truncate", None)
    if count is None or count < 1 or ackmode not in ACK_MODES or encoding not in ("auto", "base64") \
            or (truncate is not None and truncate < 0):
        return bad_request('needs "count" >= 1, "ackmode" (one of ' + ", ".join(sorted(ACK_MODES))
                           + '), "encoding" auto or base64, and "truncate" a length')
    vhost, name = call.param("vhost"), call.param("name")
    if name not in call.vhost().queues:
        return not_found()
    now = call.api.now
    taken: list[GetResult] = []
    with call.channel(vhost) as channel:
        with anyio.move_on_after(PAGE_IN_WAIT):
            while len(taken) < count:
                got = channel.get(name, now=now())
                if isinstance(got, WaitForDisk):
                    await anyio.sleep(0.01)  # the store driver reads paged messages back meanwhile
                    continue
                if got is None:
                    break
                taken.append(got)
        requeue = ackmode.endswith("requeue_true")
        for got in taken:
            if ackmode.startswith("ack") and not requeue:
                channel.ack(got.delivery_tag, now=now())
            else:
                channel.reject(got.delivery_tag, requeue=requeue, now=now())
    return JSONResponse([snapshot.message_info(got.message, redelivered=got.redelivered,
                                               message_count=got.message_count, encoding=encoding,
                                               truncate=truncate) for got in taken])


async def redrive(call: Call) -> Response:
    spec = await call.body()
    to, limit = spec.get("to"), spec.get("limit")
    if not (to is None or isinstance(to, str)) or not (limit is None or (isinstance(limit, int) and limit >= 0)):
        return bad_request('"to" must be a queue name and "limit" a count')
    return JSONResponse({"moved": await move(call, call.param("vhost"), call.param("name"), to, limit)})


async def move(call: Call, vhost: str, name: str, to: str | None, limit: int | None) -> int:
    """Redrive up to ``limit`` messages, paged ones included: a round
    stops where messages wait on disk, so rounds go on while the store
    driver reads them back, until none is left or PAGE_IN_WAIT passes
    without progress."""
    moved, idle_since = 0, anyio.current_time()
    while limit is None or moved < limit:
        left = None if limit is None else limit - moved
        outcome: int = call.on_channel(vhost, lambda channel: channel.redrive_queue(
            name, now=call.api.now(), to=to, limit=left))
        moved += outcome
        source = call.broker.vhosts[vhost].queues.get(name)
        if source is None or not source.paged_count:
            break
        if outcome:
            idle_since = anyio.current_time()
        elif anyio.current_time() - idle_since > PAGE_IN_WAIT:
            break
        await anyio.sleep(0.01)
    return moved


def local_vhost(uri: Any) -> str | None:
    """The vhost an AMQP URI names on this broker (``amqp://`` and
    ``amqp:///%2F`` are "/"), or None if it names another host."""
    if not isinstance(uri, str):
        return None
    parts = urlsplit(uri)
    if parts.scheme not in ("amqp", "amqps") or parts.hostname not in (None, "localhost", "127.0.0.1", "::1"):
        return None
    return unquote(parts.path[1:]) if len(parts.path) > 1 else "/"


async def list_shovels(call: Call) -> Response:
    return JSONResponse([])  # one-off moves end with their request


async def put_shovel(call: Call) -> Response:
    """RabbitMQ's "move messages": a dynamic shovel from a local queue to
    another that deletes itself once it has moved the queue's length.
    Here it is one redrive to the destination; the parameter never
    outlives the request, as RabbitMQ's disappears once done."""
    spec = await call.body()
    value, vhost = spec.get("value"), call.param("vhost")
    if not isinstance(value, dict) or not isinstance(value.get("src-queue"), str) \
            or not isinstance(value.get("dest-queue"), str):
        return bad_request("amqlite's shovel moves messages from src-queue to dest-queue")
    if any(local_vhost(value.get(key, "amqp://")) != vhost for key in ("src-uri", "dest-uri")):
        return bad_request(f"amqlite's shovel moves messages between queues of vhost {vhost!r} of this broker only")
    after = value.get("src-delete-after", "never")
    queue = call.vhost().queues.get(value["src-queue"])
    if queue is None:
        return not_found()
    if after == "queue-length":
        limit = queue.message_count
    elif isinstance(after, int) and after >= 0:
        limit = after
    else:
        return bad_request('amqlite runs one-off shovels only: "src-delete-after" must be "queue-length" or a count')
    await move(call, vhost, value["src-queue"], value["dest-queue"], limit)
    return Response(status_code=201)


async def stream_groups(call: Call) -> Response:
    """amqlite's own: every consumer group's committed offset and lag on
    each stream (partition) it reads."""
    vhost = call.optional("vhost")
    if vhost is not None:
        call.vhost()
    return JSONResponse([
        snapshot.group_info(stream, offset)
        for v in call.visible_vhosts(vhost) for _, stream in sorted(v.queues.items())
        if isinstance(stream, Stream) for _, offset in sorted(stream.group_offsets.items())
    ])
