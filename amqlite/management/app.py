"""The management API as a Starlette app, RabbitMQ's paths and shapes, built
from the route table (:mod:`.routes`); the dashboard's static files beside it.

Routes match on the raw (still percent-encoded) path, so that RabbitMQ's
``%2F`` for the default vhost stays one path segment; handlers decode each
segment themselves (:meth:`.api.Call.param`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Collection

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount
from starlette.routing import Route as StarletteRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..accounts import Accounts
from ..auth import Users
from ..core.broker import Broker
from .api import Api, Call, Refused, not_found
from .routes import ROUTES, Route
from .rules import authorize, login

DASHBOARD = Path(__file__).parent / "dashboard"

#: Sent with every response: the dashboard loads its own script and style
#: only, is never framed, and no response is sniffed into another type.
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; object-src 'none'; "
                                 b"base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
]


class _Edge:
    """What every request and response goes through: routes match the
    undecoded path (see the module docstring), an API path ending in "/"
    answers as without it (as RabbitMQ's do; Celery Flower asks for
    ``/api/queues/``), and responses carry SECURITY_HEADERS."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["raw_path"].decode("latin-1") if scope.get("raw_path") else scope["path"]
        if path.startswith("/api/") and path.endswith("/"):
            path = path.rstrip("/")
        scope = dict(scope, path=path)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _endpoint(route: Route, api: Api) -> Callable[[Request], Any]:
    """The route's handler behind its login and rule."""

    def owner(connection: str) -> str | None:
        return next((c.user for c in api.broker.connections if c.name == connection), None)

    async def endpoint(request: Request) -> Response:
        user = login(request, api.users)
        if isinstance(user, Response):
            response = user
        else:
            refused = authorize(route.who, route.needs, request, user, owner, publishing=route.publishing)
            try:
                response = refused or await route.handler(Call(request, user, api))
            except Refused as refusal:
                response = refusal.response
        if "www-authenticate" in response.headers and "x-requested-with" in request.headers:
            # A script (the dashboard) shows its own login: a challenge would
            # make the browser open its password dialog over the page.
            del response.headers["www-authenticate"]
        return response

    return endpoint


def create_app(broker: Broker, users: Users, now: Callable[[], float], *,
               listeners: list[dict[str, Any]] | None = None,
               close: Callable[[str, str], bool] | None = None, accounts: Accounts | None = None,
               alarms: Callable[[], Collection[str]] = tuple,
               other_connections: Callable[[], list[dict[str, Any]]] = list) -> ASGIApp:
    """The API over ``broker``, authenticating against ``users``; ``now``
    is the broker's clock. ``listeners`` is what /api/overview reports
    (protocol, ip_address, port); ``close(name, reason)`` closes a client
    connection by name (False if there is none). Users and vhosts changed
    here are kept in ``accounts`` (in memory only without one). ``alarms``
    says which resource alarms ("memory", "disk") are on; ``other_connections``
    lists the Kafka clients' connections beside AMQP's."""
    api = Api(broker, users, now, accounts if accounts is not None else Accounts(None), listeners or [], close,
              alarms, other_connections)
    routes: list[BaseRoute] = [StarletteRoute(route.path, _endpoint(route, api), methods=[route.method])
                               for route in ROUTES]

    async def missing(request: Request, exc: Exception) -> Response:
        return not_found()

    # The dashboard: static files calling this API from the browser.
    routes.append(Mount("/", StaticFiles(directory=DASHBOARD, html=True)))
    return _Edge(Starlette(routes=routes, exception_handlers={404: missing}))
