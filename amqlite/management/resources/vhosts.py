"""Virtual hosts, their limits, definitions (export and import) and the
aliveness test."""

from __future__ import annotations

from starlette.responses import JSONResponse, Response

from ... import __version__
from ...config import VHOST_LIMITS
from ...core.channel import Channel
from .. import definitions, snapshot
from ..api import Call, bad_request, not_found
from .accounts import limit_value


async def list_vhosts(call: Call) -> Response:
    return JSONResponse([snapshot.vhost_info(v) for v in call.visible_vhosts()])


async def show(call: Call) -> Response:
    found = call.visible_vhosts(call.param("vhost"))
    return JSONResponse(snapshot.vhost_info(found[0])) if found else not_found()


async def put(call: Call) -> Response:
    name = call.param("vhost")
    existed = name in call.broker.vhosts
    call.api.overlay.set_vhost(name, call.broker.add_vhost(name).limits)
    return await call.api.saved(Response(status_code=204 if existed else 201))


async def delete(call: Call) -> Response:
    """Close its connections, delete its queues (their messages go) and
    exchanges through a channel (the journal records it), then forget it."""
    vhost = call.vhost()
    close = call.api.close
    for connection in [c for c in call.broker.connections if c.vhost is vhost]:
        if close is not None:
            close(connection.name, f"vhost '{vhost.name}' is deleted")

    def empty(channel: Channel) -> None:
        for queue in list(vhost.queues):
            channel.delete_queue(queue, now=call.api.now())
        for exchange in [x for x in vhost.exchanges if x and not x.startswith("amq.")]:
            channel.delete_exchange(exchange)

    call.on_channel(vhost.name, empty)
    del call.broker.vhosts[vhost.name]
    call.api.overlay.delete_vhost(vhost.name)
    return await call.api.saved(Response(status_code=204))


async def limits(call: Call) -> Response:
    wanted = call.optional("vhost")
    if wanted is not None:
        call.vhost()
    return JSONResponse([{"vhost": name, "value": dict(v.limits)} for name, v in sorted(call.broker.vhosts.items())
                         if v.limits and wanted in (None, name)])


async def put_limit(call: Call) -> Response:
    spec = await call.body()
    vhost, name = call.vhost(), call.param("name")
    vhost.limits[name] = limit_value(spec, name, VHOST_LIMITS)
    call.api.overlay.set_vhost(vhost.name, vhost.limits)
    return await call.api.saved(Response(status_code=204))


async def delete_limit(call: Call) -> Response:
    vhost = call.vhost()
    vhost.limits.pop(call.param("name"), None)
    call.api.overlay.set_vhost(vhost.name, vhost.limits)
    return await call.api.saved(Response(status_code=204))


async def export_definitions(call: Call) -> Response:
    vhost = call.optional("vhost")
    if vhost is not None:
        call.vhost()
    return JSONResponse(definitions.export(call.broker, call.api.users, version=__version__, vhost=vhost))


async def import_definitions(call: Call) -> Response:
    vhost = call.optional("vhost")
    if vhost is not None:
        call.vhost()
    loaded = await call.body()
    try:
        definitions.load(loaded, call.broker, call.api.users, call.api.overlay, now=call.api.now(), vhost=vhost)
    except definitions.DefinitionsError as problem:
        return bad_request(str(problem))
    return await call.api.saved(Response(status_code=204))


async def aliveness(call: Call) -> Response:
    return JSONResponse({"status": "ok"}) if call.visible_vhosts(call.param("vhost")) else not_found()
