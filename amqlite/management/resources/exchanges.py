"""Exchanges (list, show, declare, delete, publish) and bindings."""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import unquote

from starlette.responses import JSONResponse, Response

from ...amqp.properties import InvalidProperty, check_properties
from ...core.channel import Channel
from ...core.message import Properties
from .. import snapshot
from ..api import Call, Refused, bad_request, flag, not_found
from .queues import listing


def exchange_name(call: Call, param: str = "name") -> str:
    # RabbitMQ's API calls the default exchange "amq.default".
    name = call.param(param)
    return "" if name == "amq.default" else name


async def list_exchanges(call: Call) -> Response:
    return listing(call, lambda v: v.exchanges, snapshot.exchange_info)


async def show(call: Call) -> Response:
    found = call.visible_vhosts(call.param("vhost"))
    target = found[0].exchanges.get(exchange_name(call)) if found else None
    return JSONResponse(snapshot.exchange_info(target)) if target is not None else not_found()


async def declare(call: Call) -> Response:
    spec = await call.body()
    vhost, name = call.param("vhost"), exchange_name(call)
    if not name or "type" not in spec:
        return bad_request("an exchange needs a name and a type")
    existed = name in call.vhost().exchanges
    call.on_channel(vhost, lambda channel: channel.declare_exchange(
        name, str(spec["type"]), durable=flag(spec, "durable", True),
        auto_delete=flag(spec, "auto_delete", False), internal=flag(spec, "internal", False),
        arguments=spec.get("arguments") or {}))
    return Response(status_code=204 if existed else 201)


async def delete(call: Call) -> Response:
    vhost, name = call.param("vhost"), exchange_name(call)
    if name not in call.vhost().exchanges:
        return not_found()
    call.on_channel(vhost, lambda channel: channel.delete_exchange(
        name, if_unused=call.request.query_params.get("if-unused") == "true"))
    return Response(status_code=204)


def json_properties(given: Any) -> Properties:
    """Message properties from a publish body; RabbitMQ's 400 for a value
    of the wrong type: ``{"reason": ["not_int", "priority"]}``. Unknown keys
    are ignored, as RabbitMQ does."""
    if not isinstance(given, dict):
        raise Refused(bad_request(["not_table", "properties"]))
    properties = Properties(**{k: v for k, v in given.items() if k in Properties._fields})
    try:
        check_properties(properties)
    except InvalidProperty as problem:
        raise Refused(bad_request([problem.reason, problem.field])) from None
    return properties


async def publish(call: Call) -> Response:
    spec = await call.body()
    properties = json_properties(spec.get("properties") or {})
    try:
        raw = spec.get("payload", "")
        payload = (base64.b64decode(raw, validate=True) if spec.get("payload_encoding") == "base64"
                   else str(raw).encode())
    except (TypeError, binascii.Error) as problem:
        return bad_request(str(problem))
    routing_key, name = str(spec.get("routing_key", "")), exchange_name(call)
    outcome = call.on_channel(call.param("vhost"), lambda channel: channel.publish(
        payload, exchange=name, routing_key=routing_key, properties=properties, now=call.api.now()),
        publishing=True)
    return JSONResponse({"routed": outcome is not None and bool(outcome.routed or outcome.delayed)})


def vhost_bindings(call: Call) -> list[dict[str, Any]]:
    vhost = call.optional("vhost")
    if vhost is not None:
        call.vhost()
    return [b for v in call.visible_vhosts(vhost) for b in snapshot.bindings(v)]


def bindings_where(call: Call, **match: str) -> Response:
    return JSONResponse([b for b in vhost_bindings(call) if all(b[k] == v for k, v in match.items())])


async def list_bindings(call: Call) -> Response:
    return JSONResponse(vhost_bindings(call))


async def queue_bindings(call: Call) -> Response:
    name = call.param("name")
    if name not in call.vhost().queues:
        return not_found()
    return bindings_where(call, destination=name, destination_type="queue")


async def source_bindings(call: Call) -> Response:
    name = exchange_name(call)
    if name not in call.vhost().exchanges:
        return not_found()
    return bindings_where(call, source=name)


async def destination_bindings(call: Call) -> Response:
    name = exchange_name(call)
    if name not in call.vhost().exchanges:
        return not_found()
    return bindings_where(call, destination=name, destination_type="exchange")


def binding_ends(call: Call) -> tuple[str, str, str, str]:
    """(vhost, source, destination, "queue" or "exchange") of a binding path."""
    # /api/bindings/{vhost}/e/{source}/q|e/{destination}[/{props}]
    kind = "queue" if call.request.url.path.split("/")[6] == "q" else "exchange"
    return call.param("vhost"), exchange_name(call, "source"), call.param("destination"), kind


async def between(call: Call) -> Response:
    _, source, destination, kind = binding_ends(call)
    return bindings_where(call, source=source, destination=destination, destination_type=kind)


async def bind(call: Call) -> Response:
    spec = await call.body()
    vhost, source, destination, kind = binding_ends(call)
    routing_key, arguments = str(spec.get("routing_key", "")), spec.get("arguments") or {}
    if not isinstance(arguments, dict):
        return bad_request('"arguments" must be an object')
    bind_ = Channel.bind_queue if kind == "queue" else Channel.bind_exchange
    call.on_channel(vhost, lambda channel: bind_(channel, destination, source, routing_key, arguments))
    return Response(status_code=201, headers={"Location": snapshot.properties_key(routing_key, arguments)})


async def unbind(call: Call) -> Response:
    vhost, source, destination, kind = binding_ends(call)
    wanted = call.param("props")
    matches = [b for b in vhost_bindings(call)
               if (b["source"], b["destination"], b["destination_type"]) == (source, destination, kind)
               and wanted in (b["properties_key"], unquote(b["properties_key"]))]  # rabbitmqadmin quotes it again
    if not matches or not source:
        return not_found()
    unbind_ = Channel.unbind_queue if kind == "queue" else Channel.unbind_exchange
    target = matches[0]
    call.on_channel(vhost, lambda channel: unbind_(channel, destination, source, target["routing_key"],
                                                   target["arguments"]))
    return Response(status_code=204)
