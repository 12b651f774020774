"""Client connections, channels and consumers; monitoring and
administrators see everyone's, other users their own."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse, Response

from .. import snapshot
from ..api import Call, not_found


def connections_of(call: Call) -> list[Any]:
    """The AMQP connections the caller may see (their channels too)."""
    everyone = call.everyone()
    return sorted((c for c in call.broker.connections if everyone or c.user == call.user.name), key=lambda c: c.name)


def infos(call: Call) -> list[dict[str, Any]]:
    """Every connection the caller may see, AMQP's and Kafka's, by name."""
    everyone = call.everyone()
    kafka = [info for info in call.api.other_connections() if everyone or info["user"] == call.user.name]
    return sorted([snapshot.connection_info(c) for c in connections_of(call)] + kafka, key=lambda info: info["name"])


def find(call: Call) -> dict[str, Any] | None:
    name = call.param("name")
    found = [info for info in infos(call) if info["name"] == name]
    return found[0] if found else None


async def list_connections(call: Call) -> Response:
    return JSONResponse(infos(call))


async def show(call: Call) -> Response:
    found = find(call)
    return JSONResponse(found) if found is not None else not_found()


async def close(call: Call) -> Response:
    """Close a client's connection with connection.close 320, the reason
    from the ``X-Reason`` header, as RabbitMQ does (a Kafka client's
    socket is closed: Kafka has no close message)."""
    found, close = find(call), call.api.close
    if close is None or found is None:
        return not_found()
    reason = call.request.headers.get("x-reason", "Closed via management plugin")
    return Response(status_code=204) if close(found["name"], reason) else not_found()


async def list_channels(call: Call) -> Response:
    return JSONResponse([snapshot.channel_info(ch) for c in connections_of(call) for _, ch in sorted(c.channels.items())])


async def list_consumers(call: Call) -> Response:
    vhost = call.optional("vhost")
    if vhost is not None:
        call.vhost()
    now = call.api.now()
    return JSONResponse([snapshot.consumer_info(consumer, now) for v in call.visible_vhosts(vhost)
                         for _, q in sorted(v.queues.items()) for consumer in q.consumers])

