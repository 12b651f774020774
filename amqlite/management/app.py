"""The management HTTP API as a Starlette app, RabbitMQ's paths and shapes.

Routes match on the raw (still percent-encoded) path, so that RabbitMQ's
``%2F`` for the default vhost stays one path segment; handlers decode each
segment themselves.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Awaitable, Callable
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import __version__
from ..auth import LoginRefused, User, Users, is_loopback
from ..core.broker import Broker
from ..core.channel import Channel
from ..core.errors import NOT_FOUND, AMQPError
from ..core.vhost import VirtualHost
from . import snapshot

#: User tags that grant the management API, as in RabbitMQ.
MANAGEMENT_TAGS = frozenset({"administrator", "monitoring", "policymaker", "management"})

Handler = Callable[[Request], Awaitable[Response]]


_CHALLENGE = {"WWW-Authenticate": 'Basic realm="RabbitMQ Management"'}


def error(status: int, error: str, reason: str) -> JSONResponse:
    return JSONResponse({"error": error, "reason": reason}, status_code=status,
                        headers=_CHALLENGE if status == 401 else None)


def not_found() -> JSONResponse:
    return error(404, "Object Not Found", "Not Found")


class _RawPath:
    """Route on the undecoded path (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("raw_path"):
            scope = dict(scope, path=scope["raw_path"].decode("latin-1"))
        await self.app(scope, receive, send)


def _login(request: Request, users: Users) -> User | Response:
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        # RabbitMQ's answer to a request without credentials: a bare challenge.
        return Response(status_code=401, headers=_CHALLENGE)
    try:
        name, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return error(401, "not_authorized", "Login failed")
    client = request.client
    loopback = client is not None and is_loopback(client.host)
    try:
        user = users.authenticate(name, password, loopback=loopback)
    except LoginRefused:
        return error(401, "not_authorized", "Login failed")
    if not MANAGEMENT_TAGS.intersection(user.tags):
        return error(401, "not_authorized", "Not management user")
    return user


def create_app(broker: Broker, users: Users, now: Callable[[], float], *,
               listeners: list[dict[str, Any]] | None = None) -> ASGIApp:
    """The API over ``broker``, authenticating against ``users``; ``now``
    is the broker's clock. ``listeners`` is what /api/overview reports
    (protocol, ip_address, port)."""

    def on_channel(vhost: str, user: User, operation: Callable[[Channel], Any]) -> Any:
        """Run ``operation`` on a channel of a connection opened for this
        request alone, so that changes take the same path (checks, journal)
        as over AMQP. It opens and closes without awaiting in between, so
        no other request or client ever sees it. Returns the result or an
        error response."""
        if not user.may_open(vhost) or vhost not in broker.vhosts:
            return not_found()
        connection = broker.connect(vhost, user=user.name, name="management")
        try:
            return operation(connection.open_channel())
        except AMQPError as failure:
            if failure.reply_code == NOT_FOUND:
                return not_found()
            return error(400, "bad_request", failure.text)
        finally:
            connection.close(now=now())

    async def body(request: Request) -> dict[str, Any] | Response:
        raw = await request.body()
        try:
            decoded = json.loads(raw) if raw.strip() else {}
        except ValueError:
            decoded = None
        if not isinstance(decoded, dict):
            return error(400, "bad_request", "not_json")
        return decoded

    def authenticated(handler: Callable[[Request, User], Awaitable[Response]]) -> Handler:
        async def endpoint(request: Request) -> Response:
            user = _login(request, users)
            if isinstance(user, Response):
                return user
            return await handler(request, user)
        return endpoint

    def param(request: Request, name: str) -> str:
        return unquote(request.path_params[name])

    def visible_vhosts(user: User, vhost: str | None = None) -> list[VirtualHost]:
        return [v for name, v in sorted(broker.vhosts.items())
                if user.may_open(name) and (vhost is None or name == vhost)]

    async def overview(request: Request, user: User) -> Response:
        return JSONResponse(snapshot.overview(broker, listeners=listeners or [], version=__version__))

    async def whoami(request: Request, user: User) -> Response:
        return JSONResponse({"name": user.name, "tags": list(user.tags)})

    async def vhosts(request: Request, user: User) -> Response:
        return JSONResponse([snapshot.vhost_info(v) for v in visible_vhosts(user)])

    async def vhost(request: Request, user: User) -> Response:
        found = visible_vhosts(user, param(request, "vhost"))
        return JSONResponse(snapshot.vhost_info(found[0])) if found else not_found()

    def listing(request: Request, user: User, members: Callable[[VirtualHost], dict[str, Any]],
                info: Callable[[Any], dict[str, Any]]) -> Response:
        """Every member (queue, exchange) of the user's vhosts, or of the one in the path."""
        vhost = param(request, "vhost") if "vhost" in request.path_params else None
        if vhost is not None and vhost not in broker.vhosts:
            return not_found()
        return JSONResponse([info(x) for v in visible_vhosts(user, vhost) for _, x in sorted(members(v).items())])

    async def queues(request: Request, user: User) -> Response:
        return listing(request, user, lambda v: v.queues, snapshot.queue_info)

    async def queue(request: Request, user: User) -> Response:
        found = visible_vhosts(user, param(request, "vhost"))
        target = found[0].queues.get(param(request, "name")) if found else None
        return JSONResponse(snapshot.queue_info(target)) if target is not None else not_found()

    async def put_queue(request: Request, user: User) -> Response:
        spec = await body(request)
        if isinstance(spec, Response):
            return spec
        vhost, name = param(request, "vhost"), param(request, "name")
        existed = vhost in broker.vhosts and name in broker.vhosts[vhost].queues
        outcome = on_channel(vhost, user, lambda channel: channel.declare_queue(
            name, now=now(), durable=bool(spec.get("durable", True)),
            auto_delete=bool(spec.get("auto_delete", False)), arguments=spec.get("arguments") or {}))
        if isinstance(outcome, Response):
            return outcome
        return Response(status_code=204 if existed else 201)

    async def delete_queue(request: Request, user: User) -> Response:
        vhost, name = param(request, "vhost"), param(request, "name")
        # AMQP's queue.delete of a missing queue succeeds; the API's is a 404.
        if vhost not in broker.vhosts or name not in broker.vhosts[vhost].queues:
            return not_found()
        outcome = on_channel(vhost, user, lambda channel: channel.delete_queue(
            name, now=now(), if_unused=request.query_params.get("if-unused") == "true",
            if_empty=request.query_params.get("if-empty") == "true"))
        return outcome if isinstance(outcome, Response) else Response(status_code=204)

    async def purge(request: Request, user: User) -> Response:
        name = param(request, "name")
        outcome = on_channel(param(request, "vhost"), user, lambda channel: channel.purge_queue(name))
        return outcome if isinstance(outcome, Response) else Response(status_code=204)

    async def redrive(request: Request, user: User) -> Response:
        spec = await body(request)
        if isinstance(spec, Response):
            return spec
        to, limit = spec.get("to"), spec.get("limit")
        if not (to is None or isinstance(to, str)) or not (limit is None or (isinstance(limit, int) and limit >= 0)):
            return error(400, "bad_request", '"to" must be a queue name and "limit" a count')
        name = param(request, "name")
        outcome = on_channel(param(request, "vhost"), user, lambda channel: channel.redrive_queue(
            name, now=now(), to=to, limit=limit))
        return outcome if isinstance(outcome, Response) else JSONResponse({"moved": outcome})

    async def exchanges(request: Request, user: User) -> Response:
        return listing(request, user, lambda v: v.exchanges, snapshot.exchange_info)

    async def exchange(request: Request, user: User) -> Response:
        found = visible_vhosts(user, param(request, "vhost"))
        name = param(request, "name")
        # RabbitMQ's API calls the default exchange "amq.default".
        target = found[0].exchanges.get("" if name == "amq.default" else name) if found else None
        return JSONResponse(snapshot.exchange_info(target)) if target is not None else not_found()

    def connections_of(user: User) -> list[Any]:
        # As in RabbitMQ, a monitoring or administrator user sees everyone's
        # connections; others see their own.
        everyone = bool({"administrator", "monitoring"}.intersection(user.tags))
        return sorted((c for c in broker.connections if everyone or c.user == user.name), key=lambda c: c.name)

    async def connections(request: Request, user: User) -> Response:
        return JSONResponse([snapshot.connection_info(c) for c in connections_of(user)])

    async def channels(request: Request, user: User) -> Response:
        return JSONResponse([snapshot.channel_info(ch) for c in connections_of(user)
                             for _, ch in sorted(c.channels.items())])

    async def consumers(request: Request, user: User) -> Response:
        vhost = param(request, "vhost") if "vhost" in request.path_params else None
        if vhost is not None and vhost not in broker.vhosts:
            return not_found()
        return JSONResponse([snapshot.consumer_info(consumer) for v in visible_vhosts(user, vhost)
                             for _, q in sorted(v.queues.items()) for consumer in q.consumers])

    async def alarms(request: Request, user: User) -> Response:
        return JSONResponse({"status": "ok"})

    async def aliveness(request: Request, user: User) -> Response:
        return JSONResponse({"status": "ok"}) if visible_vhosts(user, param(request, "vhost")) else not_found()

    routes = [
        Route("/api/overview", authenticated(overview)),
        Route("/api/whoami", authenticated(whoami)),
        Route("/api/vhosts", authenticated(vhosts)),
        Route("/api/vhosts/{vhost}", authenticated(vhost)),
        Route("/api/queues", authenticated(queues)),
        Route("/api/queues/{vhost}", authenticated(queues)),
        Route("/api/queues/{vhost}/{name}", authenticated(queue), methods=["GET"]),
        Route("/api/queues/{vhost}/{name}", authenticated(put_queue), methods=["PUT"]),
        Route("/api/queues/{vhost}/{name}", authenticated(delete_queue), methods=["DELETE"]),
        Route("/api/queues/{vhost}/{name}/contents", authenticated(purge), methods=["DELETE"]),
        Route("/api/queues/{vhost}/{name}/redrive", authenticated(redrive), methods=["POST"]),
        Route("/api/exchanges", authenticated(exchanges)),
        Route("/api/exchanges/{vhost}", authenticated(exchanges)),
        Route("/api/exchanges/{vhost}/{name}", authenticated(exchange)),
        Route("/api/connections", authenticated(connections)),
        Route("/api/channels", authenticated(channels)),
        Route("/api/consumers", authenticated(consumers)),
        Route("/api/consumers/{vhost}", authenticated(consumers)),
        Route("/api/health/checks/alarms", authenticated(alarms)),
        Route("/api/health/checks/local-alarms", authenticated(alarms)),
        Route("/api/aliveness-test/{vhost}", authenticated(aliveness)),
    ]

    async def missing(request: Request, exc: Exception) -> Response:
        return not_found()

    return _RawPath(Starlette(routes=routes, exception_handlers={404: missing}))
