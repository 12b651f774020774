"""The management HTTP API as a Starlette app, RabbitMQ's paths and shapes.

Routes match on the raw (still percent-encoded) path, so that RabbitMQ's
``%2F`` for the default vhost stays one path segment; handlers decode each
segment themselves.
"""

from __future__ import annotations

import base64
import binascii
import json
import weakref
from pathlib import Path
from typing import Any, Awaitable, Callable, Collection
from urllib.parse import unquote, urlsplit

import anyio
import attrs
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..accounts import Accounts
from ..amqp.properties import InvalidProperty, check_properties
from ..auth import LoginRefused, User, Users, hash_password, is_loopback
from ..config import USER_LIMITS, VHOST_LIMITS
from ..core.broker import Broker
from ..core.channel import Channel
from ..core.errors import ACCESS_REFUSED, NOT_FOUND, AMQPError
from ..core.events import GetResult, WaitForDisk
from ..core.message import Properties
from ..core.permissions import Permission, TopicPermission, valid_pattern
from ..core.queue import Queue
from ..core.stream import Stream
from ..core.vhost import VirtualHost
from . import definitions, snapshot
from .rates import Rates, counters, queue_counters

DASHBOARD = Path(__file__).parent / "dashboard"
#: How ``POST .../get`` settles what it took.
ACK_MODES = frozenset({"ack_requeue_true", "ack_requeue_false", "reject_requeue_true", "reject_requeue_false"})
#: How long ``POST .../get`` waits for paged messages to be read back.
PAGE_IN_WAIT = 5.0

#: The largest request body read, as RabbitMQ's management.http.max_body_size
#: (3.11 on) defaults to; a definitions file is the largest body anyone sends.
MAX_BODY = 20_000_000

#: User tags that grant the management API, as in RabbitMQ.
MANAGEMENT_TAGS = frozenset({"administrator", "monitoring", "policymaker", "management"})

Handler = Callable[[Request], Awaitable[Response]]


_CHALLENGE = {"WWW-Authenticate": 'Basic realm="RabbitMQ Management"'}


def error(status: int, error: str, reason: str | list[str]) -> JSONResponse:
    return JSONResponse({"error": error, "reason": reason}, status_code=status,
                        headers=_CHALLENGE if status == 401 else None)


def not_found() -> JSONResponse:
    return error(404, "Object Not Found", "Not Found")


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
    answers as without it (RabbitMQ's, and Celery Flower asks for
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


def flag(spec: dict[str, Any], key: str, default: bool) -> bool:
    """A boolean field; rabbitmqadmin sends "true" and "false" as strings."""
    value = spec.get(key, default)
    return value is True or value == "true"


def local_vhost(uri: Any) -> str | None:
    """The vhost an AMQP URI names on this broker (``amqp://`` and
    ``amqp:///%2F`` are "/"), or None if it names another host."""
    if not isinstance(uri, str):
        return None
    parts = urlsplit(uri)
    if parts.scheme not in ("amqp", "amqps") or parts.hostname not in (None, "localhost", "127.0.0.1", "::1"):
        return None
    return unquote(parts.path[1:]) if len(parts.path) > 1 else "/"


def count_field(spec: dict[str, Any], key: str, default: int | None) -> int | None:
    """A whole number field (rabbitmqadmin sends "5"); None if it is not one."""
    value = spec.get(key, default)
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def refusal(failure: AMQPError, *, publishing: bool = False) -> Response:
    """A broker error as RabbitMQ's API answers it: 404 for a missing
    resource, 401 for a refused permission, else 400 with the AMQP reply.
    A publish's refusal is a 400 too (RabbitMQ's comes back as the
    channel's close)."""
    if failure.reply_code == NOT_FOUND:
        return not_found()
    if publishing:
        return error(400, "bad_request", f"{failure.reply_code} {failure.reply_text}")
    if failure.reply_code == ACCESS_REFUSED:
        return error(401, "not_authorised", failure.reply_text)
    return error(400, "bad_request", failure.text)


def json_properties(given: Any) -> Properties | Response:
    """Message properties from a publish body, or RabbitMQ's 400 for a value
    of the wrong type: ``{"reason": ["not_int", "priority"]}``. Unknown keys
    are ignored, as RabbitMQ does."""
    if not isinstance(given, dict):
        return error(400, "bad_request", ["not_table", "properties"])
    properties = Properties(**{k: v for k, v in given.items() if k in Properties._fields})
    try:
        check_properties(properties)
    except InvalidProperty as problem:
        return error(400, "bad_request", [problem.reason, problem.field])
    return properties


async def json_body(request: Request) -> bytes | Response:
    """The request's body, read as it streams in; 415 unless it is JSON (a
    form or a text/plain post from another site's page is refused before it
    does anything), 413 past MAX_BODY (without reading the rest)."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type and media_type != "application/json" and not media_type.endswith("+json"):
        return error(415, "unsupported_media_type", "the body must be JSON (Content-Type: application/json)")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        return too_large()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            return too_large()
        chunks.append(chunk)
    raw = b"".join(chunks)
    if raw.strip() and not media_type:
        return error(415, "unsupported_media_type", "the body must be JSON (Content-Type: application/json)")
    return raw


def too_large() -> Response:
    return error(413, "payload_too_large", f"the body is larger than {MAX_BODY} bytes")


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
               listeners: list[dict[str, Any]] | None = None,
               close: Callable[[str, str], bool] | None = None, accounts: Accounts | None = None,
               alarms: Callable[[], Collection[str]] = tuple) -> ASGIApp:
    """The API over ``broker``, authenticating against ``users``; ``now``
    is the broker's clock. ``listeners`` is what /api/overview reports
    (protocol, ip_address, port); ``close(name, reason)`` closes a client
    connection by name (False if there is none). Users and vhosts changed
    here are kept in ``accounts`` (in memory only without one). ``alarms``
    says which resource alarms ("memory", "disk") are on."""
    overlay = accounts if accounts is not None else Accounts(None)
    rates = Rates(anyio.current_time)
    # Samples per queue object: a deleted queue's go with it.
    queue_rates: weakref.WeakKeyDictionary[Queue, Rates] = weakref.WeakKeyDictionary()

    def queue_info(queue: Queue) -> dict[str, Any]:
        found = queue_rates.get(queue)
        if found is None:
            found = queue_rates[queue] = Rates(anyio.current_time)
        return {**snapshot.queue_info(queue), "message_stats": found.message_stats(queue_counters(queue))}

    def on_channel(vhost: str, user: User, operation: Callable[[Channel], Any], *, publishing: bool = False) -> Any:
        """Run ``operation`` on a channel of a connection opened for this
        request alone, so that changes take the same path (checks, journal)
        as over AMQP. It opens and closes without awaiting in between, so
        no other request or client ever sees it. Returns the result or an
        error response."""
        if not user.may_open(vhost) or vhost not in broker.vhosts:
            return not_found()
        # With the user's own permissions, as RabbitMQ's management API acts.
        connection = broker.connect(vhost, user=user.name, name="management", access=user.access(vhost))
        try:
            return operation(connection.open_channel())
        except AMQPError as failure:
            return refusal(failure, publishing=publishing)
        finally:
            connection.close(now=now())

    async def body(request: Request) -> dict[str, Any] | Response:
        raw = await json_body(request)
        if isinstance(raw, Response):
            return raw
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
            response = user if isinstance(user, Response) else await handler(request, user)
            if "www-authenticate" in response.headers and "x-requested-with" in request.headers:
                # A script (the dashboard) shows its own login: a challenge would
                # make the browser open its password dialog over the page.
                del response.headers["www-authenticate"]
            return response
        return endpoint

    def param(request: Request, name: str) -> str:
        return unquote(request.path_params[name])

    def visible_vhosts(user: User, vhost: str | None = None) -> list[VirtualHost]:
        return [v for name, v in sorted(broker.vhosts.items())
                if user.may_open(name) and (vhost is None or name == vhost)]

    async def overview(request: Request, user: User) -> Response:
        shown = snapshot.overview(broker, listeners=listeners or [], version=__version__)
        return JSONResponse({**shown, "message_stats": rates.message_stats(counters(broker.stats))})

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
        return listing(request, user, lambda v: v.queues, queue_info)

    async def groups(request: Request, user: User) -> Response:
        """amqlite's own: every consumer group's committed offset and lag
        on each stream (partition) it reads."""
        vhost = param(request, "vhost") if "vhost" in request.path_params else None
        if vhost is not None and vhost not in broker.vhosts:
            return not_found()
        return JSONResponse([
            snapshot.group_info(stream, offset)
            for v in visible_vhosts(user, vhost) for _, stream in sorted(v.queues.items())
            if isinstance(stream, Stream) for _, offset in sorted(stream.group_offsets.items())
        ])

    async def queue(request: Request, user: User) -> Response:
        found = visible_vhosts(user, param(request, "vhost"))
        target = found[0].queues.get(param(request, "name")) if found else None
        return JSONResponse(queue_info(target)) if target is not None else not_found()

    async def put_queue(request: Request, user: User) -> Response:
        spec = await body(request)
        if isinstance(spec, Response):
            return spec
        vhost, name = param(request, "vhost"), param(request, "name")
        existed = vhost in broker.vhosts and name in broker.vhosts[vhost].queues
        outcome = on_channel(vhost, user, lambda channel: channel.declare_queue(
            name, now=now(), durable=flag(spec, "durable", True), auto_delete=flag(spec, "auto_delete", False),
            arguments=spec.get("arguments") or {}))
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
        outcome = await move(param(request, "vhost"), user, param(request, "name"), to, limit)
        return outcome if isinstance(outcome, Response) else JSONResponse({"moved": outcome})

    async def move(vhost: str, user: User, name: str, to: str | None, limit: int | None) -> int | Response:
        """Redrive up to ``limit`` messages, paged ones included: a round
        stops where messages wait on disk, so rounds go on while the store
        driver reads them back, until none is left or PAGE_IN_WAIT passes
        without progress."""
        moved, idle_since = 0, anyio.current_time()
        while limit is None or moved < limit:
            left = None if limit is None else limit - moved
            outcome = on_channel(vhost, user, lambda channel: channel.redrive_queue(name, now=now(), to=to, limit=left))
            if isinstance(outcome, Response):
                return outcome
            moved += outcome
            source = broker.vhosts[vhost].queues.get(name)
            if source is None or not source.paged_count:
                break
            if outcome:
                idle_since = anyio.current_time()
            elif anyio.current_time() - idle_since > PAGE_IN_WAIT:
                break
            await anyio.sleep(0.01)
        return moved

    async def put_shovel(request: Request, user: User) -> Response:
        """RabbitMQ's "move messages": a dynamic shovel from a local queue to
        another that deletes itself once it has moved the queue's length.
        Here it is one redrive to the destination; the parameter never
        outlives the request, as RabbitMQ's disappears once done."""
        spec = await body(request)
        if isinstance(spec, Response):
            return spec
        value, vhost = spec.get("value"), param(request, "vhost")
        if not isinstance(value, dict) or not isinstance(value.get("src-queue"), str) \
                or not isinstance(value.get("dest-queue"), str):
            return error(400, "bad_request", "amqlite's shovel moves messages from src-queue to dest-queue")
        if any(local_vhost(value.get(key, "amqp://")) != vhost for key in ("src-uri", "dest-uri")):
            return error(400, "bad_request", f"amqlite's shovel moves messages between queues of vhost {vhost!r} "
                                             "of this broker only")
        after = value.get("src-delete-after", "never")
        source = broker.vhosts.get(vhost, None)
        queue = source.queues.get(value["src-queue"]) if source is not None else None
        if queue is None:
            return not_found()
        if after == "queue-length":
            limit = queue.message_count
        elif isinstance(after, int) and after >= 0:
            limit = after
        else:
            return error(400, "bad_request", 'amqlite runs one-off shovels only: "src-delete-after" must be '
                                             '"queue-length" or a count')
        outcome = await move(vhost, user, value["src-queue"], value["dest-queue"], limit)
        return outcome if isinstance(outcome, Response) else Response(status_code=201)

    async def get_messages(request: Request, user: User) -> Response:
        """RabbitMQ's "get messages": take up to ``count``, then settle them
        all as ``ackmode`` says (requeued ones come back redelivered)."""
        spec = await body(request)
        if isinstance(spec, Response):
            return spec
        count, ackmode, encoding = count_field(spec, "count", 1), spec.get("ackmode"), spec.get("encoding", "auto")
        truncate = count_field(spec, "truncate", None)
        if count is None or count < 1 or ackmode not in ACK_MODES or encoding not in ("auto", "base64") \
                or (truncate is not None and truncate < 0):
            return error(400, "bad_request", 'needs "count" >= 1, "ackmode" (one of ' + ", ".join(sorted(ACK_MODES))
                         + '), "encoding" auto or base64, and "truncate" a length')
        vhost, name = param(request, "vhost"), param(request, "name")
        if not user.may_open(vhost) or vhost not in broker.vhosts or name not in broker.vhosts[vhost].queues:
            return not_found()
        connection = broker.connect(vhost, user=user.name, name="management", access=user.access(vhost))
        channel = connection.open_channel()
        taken: list[GetResult] = []
        try:
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
        except AMQPError as failure:
            return refusal(failure)
        finally:
            connection.close(now=now())
        return JSONResponse([snapshot.message_info(got.message, redelivered=got.redelivered,
                                                   message_count=got.message_count, encoding=encoding,
                                                   truncate=truncate) for got in taken])

    async def exchanges(request: Request, user: User) -> Response:
        return listing(request, user, lambda v: v.exchanges, snapshot.exchange_info)

    async def exchange(request: Request, user: User) -> Response:
        found = visible_vhosts(user, param(request, "vhost"))
        target = found[0].exchanges.get(exchange_name(request)) if found else None
        return JSONResponse(snapshot.exchange_info(target)) if target is not None else not_found()

    def exchange_name(request: Request) -> str:
        # RabbitMQ's API calls the default exchange "amq.default".
        name = param(request, "name")
        return "" if name == "amq.default" else name

    async def put_exchange(request: Request, user: User) -> Response:
        spec = await body(request)
        if isinstance(spec, Response):
            return spec
        vhost, name = param(request, "vhost"), exchange_name(request)
        if not name or "type" not in spec:
            return error(400, "bad_request", "an exchange needs a name and a type")
        existed = vhost in broker.vhosts and name in broker.vhosts[vhost].exchanges
        outcome = on_channel(vhost, user, lambda channel: channel.declare_exchange(
            name, str(spec["type"]), durable=flag(spec, "durable", True),
            auto_delete=flag(spec, "auto_delete", False), internal=flag(spec, "internal", False),
            arguments=spec.get("arguments") or {}))
        if isinstance(outcome, Response):
            return outcome
        return Response(status_code=204 if existed else 201)

    async def delete_exchange(request: Request, user: User) -> Response:
        vhost, name = param(request, "vhost"), exchange_name(request)
        if vhost not in broker.vhosts or name not in broker.vhosts[vhost].exchanges:
            return not_found()
        outcome = on_channel(vhost, user, lambda channel: channel.delete_exchange(
            name, if_unused=request.query_params.get("if-unused") == "true"))
        return outcome if isinstance(outcome, Response) else Response(status_code=204)

    async def publish(request: Request, user: User) -> Response:
        spec = await body(request)
        if isinstance(spec, Response):
            return spec
        properties = json_properties(spec.get("properties") or {})
        if isinstance(properties, Response):
            return properties
        try:
            raw = spec.get("payload", "")
            payload = (base64.b64decode(raw, validate=True) if spec.get("payload_encoding") == "base64"
                       else str(raw).encode())
        except (TypeError, binascii.Error) as problem:
            return error(400, "bad_request", str(problem))
        routing_key = str(spec.get("routing_key", ""))
        name = exchange_name(request)
        outcome = on_channel(param(request, "vhost"), user, lambda channel: channel.publish(
            payload, exchange=name, routing_key=routing_key, properties=properties, now=now()), publishing=True)
        if isinstance(outcome, Response):
            return outcome
        return JSONResponse({"routed": outcome is not None and bool(outcome.routed or outcome.delayed)})

    def vhost_bindings(request: Request, user: User) -> list[dict[str, Any]] | Response:
        vhost = param(request, "vhost") if "vhost" in request.path_params else None
        if vhost is not None and vhost not in broker.vhosts:
            return not_found()
        return [b for v in visible_vhosts(user, vhost) for b in snapshot.bindings(v)]

    async def bindings(request: Request, user: User) -> Response:
        found = vhost_bindings(request, user)
        return found if isinstance(found, Response) else JSONResponse(found)

    def bindings_where(request: Request, user: User, **match: str) -> Response:
        found = vhost_bindings(request, user)
        if isinstance(found, Response):
            return found
        return JSONResponse([b for b in found if all(b[k] == v for k, v in match.items())])

    async def queue_bindings(request: Request, user: User) -> Response:
        vhost, name = param(request, "vhost"), param(request, "name")
        if vhost not in broker.vhosts or name not in broker.vhosts[vhost].queues:
            return not_found()
        return bindings_where(request, user, destination=name, destination_type="queue")

    async def exchange_bindings(request: Request, user: User) -> Response:
        vhost, name = param(request, "vhost"), exchange_name(request)
        if vhost not in broker.vhosts or name not in broker.vhosts[vhost].exchanges:
            return not_found()
        if request.url.path.endswith("/source"):
            return bindings_where(request, user, source=name)
        return bindings_where(request, user, destination=name, destination_type="exchange")

    def binding_ends(request: Request) -> tuple[str, str, str, str]:
        """(vhost, source, destination, "queue" or "exchange") of a binding path."""
        kind = "queue" if request.path_params["kind"] == "q" else "exchange"
        source = param(request, "source")
        return param(request, "vhost"), "" if source == "amq.default" else source, param(request, "destination"), kind

    async def between(request: Request, user: User) -> Response:
        vhost, source, destination, kind = binding_ends(request)
        return bindings_where(request, user, source=source, destination=destination, destination_type=kind)

    async def bind(request: Request, user: User) -> Response:
        spec = await body(request)
        if isinstance(spec, Response):
            return spec
        vhost, source, destination, kind = binding_ends(request)
        routing_key, arguments = str(spec.get("routing_key", "")), spec.get("arguments") or {}
        if not isinstance(arguments, dict):
            return error(400, "bad_request", '"arguments" must be an object')
        bind_ = Channel.bind_queue if kind == "queue" else Channel.bind_exchange
        outcome = on_channel(vhost, user, lambda channel: bind_(channel, destination, source, routing_key, arguments))
        if isinstance(outcome, Response):
            return outcome
        return Response(status_code=201, headers={"Location": snapshot.properties_key(routing_key, arguments)})

    async def unbind(request: Request, user: User) -> Response:
        vhost, source, destination, kind = binding_ends(request)
        found = vhost_bindings(request, user)
        if isinstance(found, Response):
            return found
        wanted = param(request, "props")
        matches = [b for b in found if (b["source"], b["destination"], b["destination_type"]) == (source, destination, kind)
                   and wanted in (b["properties_key"], unquote(b["properties_key"]))]  # rabbitmqadmin quotes it again
        if not matches or not source:
            return not_found()
        unbind_ = Channel.unbind_queue if kind == "queue" else Channel.unbind_exchange
        target = matches[0]
        outcome = on_channel(vhost, user, lambda channel: unbind_(channel, destination, source, target["routing_key"],
                                                                  target["arguments"]))
        return outcome if isinstance(outcome, Response) else Response(status_code=204)

    def administrator(handler: Callable[[Request, User], Awaitable[Response]]) -> Handler:
        """Users, permissions, vhosts and definitions are for administrators, as in RabbitMQ."""
        async def admin_only(request: Request, user: User) -> Response:
            if "administrator" not in user.tags:
                return error(401, "not_authorized", "Not administrator user")
            return await handler(request, user)
        return authenticated(admin_only)

    async def saved(response: Response) -> Response:
        """Persist the accounts overlay (fsync: in a worker thread), then answer."""
        await anyio.to_thread.run_sync(overlay.save)
        return response

    def user_info(user: User) -> dict[str, Any]:
        return {"name": user.name, "password_hash": user.password_hash,
                "hashing_algorithm": definitions.HASHING, "tags": list(user.tags), "limits": {}}

    async def list_users(request: Request, user: User) -> Response:
        return JSONResponse([user_info(u) for u in users])

    async def get_user(request: Request, user: User) -> Response:
        found = users.get(param(request, "name"))
        return JSONResponse(user_info(found)) if found is not None else not_found()

    async def put_user(request: Request, user: User) -> Response:
        spec = await body(request)
        if isinstance(spec, Response):
            return spec
        name = param(request, "name")
        existing = users.get(name)
        if isinstance(spec.get("password"), str):
            password_hash = hash_password(spec["password"])
        elif isinstance(spec.get("password_hash"), str):
            password_hash = spec["password_hash"]
        elif existing is not None:
            password_hash = existing.password_hash
        else:
            password_hash = ""  # as in RabbitMQ, a user with no password, who cannot log in with one
        changed = User(name, password_hash, existing.permissions if existing else {},
                       definitions.tags(spec.get("tags")), existing.topic_permissions if existing else ())
        users.add(changed)
        overlay.set_user(changed)
        return await saved(Response(status_code=204 if existing else 201))

    async def delete_user(request: Request, user: User) -> Response:
        name = param(request, "name")
        if not users.remove(name):
            return not_found()
        overlay.delete_user(name)
        return await saved(Response(status_code=204))

    def permission_info(user: User, vhost: str) -> dict[str, Any]:
        permission = user.permission(vhost)
        assert permission is not None
        return {"user": user.name, "vhost": vhost, **attrs.asdict(permission)}

    async def list_permissions(request: Request, user: User) -> Response:
        return JSONResponse([permission_info(u, v) for u in users for v in sorted(broker.vhosts) if u.may_open(v)])

    async def user_permissions(request: Request, user: User) -> Response:
        target = users.get(param(request, "name"))
        if target is None:
            return not_found()
        return JSONResponse([permission_info(target, v) for v in sorted(broker.vhosts) if target.may_open(v)])

    def permission_target(request: Request) -> tuple[str, User | None]:
        return param(request, "vhost"), users.get(param(request, "user"))

    def patterns(spec: dict[str, Any], keys: tuple[str, ...]) -> dict[str, str] | Response:
        """The regular expressions of a permission body, all of ``keys``."""
        missing = [key for key in keys if not isinstance(spec.get(key), str)]
        if missing:
            return error(400, "bad_request", f"missing or not a string: {', '.join(missing)}")
        for key in keys:
            problem = valid_pattern(spec[key])
            if problem is not None:
                return error(400, "bad_request", f"{key}: invalid regular expression {spec[key]!r}: {problem}")
        return {key: spec[key] for key in keys}

    async def change_user(changed: User, status: int) -> Response:
        users.add(changed)
        overlay.set_user(changed)
        return await saved(Response(status_code=status))

    async def get_permission(request: Request, user: User) -> Response:
        vhost, target = permission_target(request)
        if target is None or vhost not in broker.vhosts or not target.may_open(vhost):
            return not_found()
        return JSONResponse(permission_info(target, vhost))

    async def put_permission(request: Request, user: User) -> Response:
        spec = await body(request)
        if isinstance(spec, Response):
            return spec
        vhost, target = permission_target(request)
        if target is None or vhost not in broker.vhosts:
            return not_found()
        given = patterns(spec, ("configure", "write", "read"))
        if isinstance(given, Response):
            return given
        return await change_user(target.granted(vhost, Permission(**given)), 204 if target.may_open(vhost) else 201)

    async def delete_permission(request: Request, user: User) -> Response:
        vhost, target = permission_target(request)
        if target is None or vhost not in broker.vhosts or not target.may_open(vhost):
            return not_found()
        return await change_user(target.revoked(vhost, sorted(broker.vhosts)), 204)

    def topic_permission_info(user: User, topic: TopicPermission) -> dict[str, Any]:
        return {"user": user.name, **attrs.asdict(topic)}

    async def list_topic_permissions(request: Request, user: User) -> Response:
        return JSONResponse([topic_permission_info(u, t) for u in users for t in u.topic_permissions])

    async def get_topic_permissions(request: Request, user: User) -> Response:
        vhost, target = permission_target(request)
        shown = [] if target is None else [t for t in target.topic_permissions if t.vhost == vhost]
        if target is None or not shown:
            return not_found()
        return JSONResponse([topic_permission_info(target, t) for t in shown])

    async def put_topic_permission(request: Request, user: User) -> Response:
        spec = await body(request)
        if isinstance(spec, Response):
            return spec
        vhost, target = permission_target(request)
        if target is None or vhost not in broker.vhosts:
            return not_found()
        given = patterns(spec, ("exchange", "write", "read"))
        if isinstance(given, Response):
            return given
        return await change_user(target.with_topic_permission(TopicPermission(vhost, **given)), 204)

    async def delete_topic_permission(request: Request, user: User) -> Response:
        vhost, target = permission_target(request)
        if target is None or not any(t.vhost == vhost for t in target.topic_permissions):
            return not_found()
        return await change_user(target.without_topic_permissions(vhost), 204)

    async def put_vhost(request: Request, user: User) -> Response:
        name = param(request, "vhost")
        existed = name in broker.vhosts
        overlay.set_vhost(name, broker.add_vhost(name).limits)
        return await saved(Response(status_code=204 if existed else 201))

    def limit_value(spec: dict[str, Any], name: str, known: tuple[str, ...]) -> int | Response:
        if name not in known:
            return error(400, "bad_request", f"unknown limit {name!r} (known: {', '.join(known)})")
        value = spec.get("value")
        if isinstance(value, bool) or not isinstance(value, int):
            return error(400, "bad_request", '"value" must be an integer (negative: no limit)')
        return value

    async def vhost_limits(request: Request, user: User) -> Response:
        wanted = param(request, "vhost") if "vhost" in request.path_params else None
        if wanted is not None and wanted not in broker.vhosts:
            return not_found()
        return JSONResponse([{"vhost": name, "value": dict(v.limits)} for name, v in sorted(broker.vhosts.items())
                             if v.limits and wanted in (None, name)])

    async def change_vhost_limit(request: Request, user: User) -> Response:
        vhost, name = broker.vhosts.get(param(request, "vhost")), param(request, "name")
        if vhost is None:
            return not_found()
        if request.method == "DELETE":
            vhost.limits.pop(name, None)
        else:
            spec = await body(request)
            value = spec if isinstance(spec, Response) else limit_value(spec, name, VHOST_LIMITS)
            if isinstance(value, Response):
                return value
            vhost.limits[name] = value
        overlay.set_vhost(vhost.name, vhost.limits)
        return await saved(Response(status_code=204))

    async def user_limits(request: Request, user: User) -> Response:
        wanted = users.get(param(request, "user")) if "user" in request.path_params else None
        if "user" in request.path_params and wanted is None:
            return not_found()
        return JSONResponse([{"user": u.name, "value": dict(u.limits)} for u in users
                             if u.limits and (wanted is None or u is wanted)])

    async def change_user_limit(request: Request, user: User) -> Response:
        target, name = users.get(param(request, "user")), param(request, "name")
        if target is None:
            return not_found()
        limits = dict(target.limits)
        if request.method == "DELETE":
            limits.pop(name, None)
        else:
            spec = await body(request)
            value = spec if isinstance(spec, Response) else limit_value(spec, name, USER_LIMITS)
            if isinstance(value, Response):
                return value
            limits[name] = value
        return await change_user(attrs.evolve(target, limits=limits), 204)

    async def delete_vhost(request: Request, user: User) -> Response:
        """Close its connections, delete its queues (their messages go) and
        exchanges through a channel (the journal records it), then forget it."""
        name = param(request, "vhost")
        vhost = broker.vhosts.get(name)
        if vhost is None:
            return not_found()
        for connection in [c for c in broker.connections if c.vhost is vhost]:
            if close is not None:
                close(connection.name, f"vhost '{name}' is deleted")
        def empty(channel: Channel) -> None:
            for queue in list(vhost.queues):
                channel.delete_queue(queue, now=now())
            for exchange in [x for x in vhost.exchanges if x and not x.startswith("amq.")]:
                channel.delete_exchange(exchange)
        outcome = on_channel(name, user, empty)
        if isinstance(outcome, Response):
            return outcome
        del broker.vhosts[name]
        overlay.delete_vhost(name)
        return await saved(Response(status_code=204))

    async def get_definitions(request: Request, user: User) -> Response:
        vhost = param(request, "vhost") if "vhost" in request.path_params else None
        if vhost is not None and vhost not in broker.vhosts:
            return not_found()
        return JSONResponse(definitions.export(broker, users, version=__version__, vhost=vhost))

    async def post_definitions(request: Request, user: User) -> Response:
        vhost = param(request, "vhost") if "vhost" in request.path_params else None
        if vhost is not None and vhost not in broker.vhosts:
            return not_found()
        raw = await json_body(request)
        if isinstance(raw, Response):
            return raw
        try:
            loaded = json.loads(raw)
            definitions.load(loaded, broker, users, overlay, now=now(), vhost=vhost)
        except (ValueError, definitions.DefinitionsError) as problem:
            return error(400, "bad_request", str(problem))
        return await saved(Response(status_code=204))

    async def shovels(request: Request, user: User) -> Response:
        return JSONResponse([])  # one-off moves end with their request

    def connections_of(user: User) -> list[Any]:
        # As in RabbitMQ, a monitoring or administrator user sees everyone's
        # connections; others see their own.
        everyone = bool({"administrator", "monitoring"}.intersection(user.tags))
        return sorted((c for c in broker.connections if everyone or c.user == user.name), key=lambda c: c.name)

    async def connections(request: Request, user: User) -> Response:
        return JSONResponse([snapshot.connection_info(c) for c in connections_of(user)])

    async def connection(request: Request, user: User) -> Response:
        name = param(request, "name")
        found = [c for c in connections_of(user) if c.name == name]
        return JSONResponse(snapshot.connection_info(found[0])) if found else not_found()

    async def close_connection(request: Request, user: User) -> Response:
        """Close a client's connection with connection.close 320, the reason
        from the ``X-Reason`` header, as RabbitMQ does."""
        name = param(request, "name")
        found = [c for c in connections_of(user) if c.name == name]
        if close is None or not found:
            return not_found()
        # RabbitMQ's is_authorized_user: monitoring users see everyone's
        # connections, only administrators close other users'.
        if "administrator" not in user.tags and found[0].user != user.name:
            return error(401, "not_authorised", "User not authorised to access object")
        reason = request.headers.get("x-reason", "Closed via management plugin")
        return Response(status_code=204) if close(name, reason) else not_found()

    async def channels(request: Request, user: User) -> Response:
        return JSONResponse([snapshot.channel_info(ch) for c in connections_of(user)
                             for _, ch in sorted(c.channels.items())])

    async def consumers(request: Request, user: User) -> Response:
        vhost = param(request, "vhost") if "vhost" in request.path_params else None
        if vhost is not None and vhost not in broker.vhosts:
            return not_found()
        return JSONResponse([snapshot.consumer_info(consumer) for v in visible_vhosts(user, vhost)
                             for _, q in sorted(v.queues.items()) for consumer in q.consumers])

    async def health_alarms(request: Request, user: User) -> Response:
        in_effect = sorted(alarms())
        if not in_effect:
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "failed", "reason": "There are alarms in effect in the cluster",
                             "alarms": [{"node": "amqlite", "resource": resource} for resource in in_effect]},
                            status_code=503)

    async def aliveness(request: Request, user: User) -> Response:
        return JSONResponse({"status": "ok"}) if visible_vhosts(user, param(request, "vhost")) else not_found()

    routes: list[BaseRoute] = [
        Route("/api/overview", authenticated(overview)),
        Route("/api/whoami", authenticated(whoami)),
        Route("/api/vhosts", authenticated(vhosts)),
        Route("/api/vhosts/{vhost}", authenticated(vhost), methods=["GET"]),
        Route("/api/vhosts/{vhost}", administrator(put_vhost), methods=["PUT"]),
        Route("/api/vhosts/{vhost}", administrator(delete_vhost), methods=["DELETE"]),
        Route("/api/users", administrator(list_users)),
        Route("/api/users/{name}", administrator(get_user), methods=["GET"]),
        Route("/api/users/{name}", administrator(put_user), methods=["PUT"]),
        Route("/api/users/{name}", administrator(delete_user), methods=["DELETE"]),
        Route("/api/permissions", administrator(list_permissions)),
        Route("/api/permissions/{vhost}/{user}", administrator(get_permission), methods=["GET"]),
        Route("/api/permissions/{vhost}/{user}", administrator(put_permission), methods=["PUT"]),
        Route("/api/permissions/{vhost}/{user}", administrator(delete_permission), methods=["DELETE"]),
        Route("/api/users/{name}/permissions", administrator(user_permissions)),
        Route("/api/vhost-limits", administrator(vhost_limits)),
        Route("/api/vhost-limits/{vhost}", administrator(vhost_limits)),
        Route("/api/vhost-limits/{vhost}/{name}", administrator(change_vhost_limit), methods=["PUT", "DELETE"]),
        Route("/api/user-limits", administrator(user_limits)),
        Route("/api/user-limits/{user}", administrator(user_limits)),
        Route("/api/user-limits/{user}/{name}", administrator(change_user_limit), methods=["PUT", "DELETE"]),
        Route("/api/topic-permissions", administrator(list_topic_permissions)),
        Route("/api/topic-permissions/{vhost}/{user}", administrator(get_topic_permissions), methods=["GET"]),
        Route("/api/topic-permissions/{vhost}/{user}", administrator(put_topic_permission), methods=["PUT"]),
        Route("/api/topic-permissions/{vhost}/{user}", administrator(delete_topic_permission), methods=["DELETE"]),
        Route("/api/definitions", administrator(get_definitions), methods=["GET"]),
        Route("/api/definitions", administrator(post_definitions), methods=["POST"]),
        Route("/api/definitions/{vhost}", administrator(get_definitions), methods=["GET"]),
        Route("/api/definitions/{vhost}", administrator(post_definitions), methods=["POST"]),
        Route("/api/stream-groups", authenticated(groups)),
        Route("/api/stream-groups/{vhost}", authenticated(groups)),
        Route("/api/queues", authenticated(queues)),
        Route("/api/queues/{vhost}", authenticated(queues)),
        Route("/api/queues/{vhost}/{name}", authenticated(queue), methods=["GET"]),
        Route("/api/queues/{vhost}/{name}", authenticated(put_queue), methods=["PUT"]),
        Route("/api/queues/{vhost}/{name}", authenticated(delete_queue), methods=["DELETE"]),
        Route("/api/queues/{vhost}/{name}/contents", authenticated(purge), methods=["DELETE"]),
        Route("/api/queues/{vhost}/{name}/redrive", authenticated(redrive), methods=["POST"]),
        Route("/api/queues/{vhost}/{name}/get", authenticated(get_messages), methods=["POST"]),
        Route("/api/queues/{vhost}/{name}/bindings", authenticated(queue_bindings)),
        Route("/api/exchanges", authenticated(exchanges)),
        Route("/api/exchanges/{vhost}", authenticated(exchanges)),
        Route("/api/exchanges/{vhost}/{name}", authenticated(exchange), methods=["GET"]),
        Route("/api/exchanges/{vhost}/{name}", authenticated(put_exchange), methods=["PUT"]),
        Route("/api/exchanges/{vhost}/{name}", authenticated(delete_exchange), methods=["DELETE"]),
        Route("/api/exchanges/{vhost}/{name}/publish", authenticated(publish), methods=["POST"]),
        Route("/api/exchanges/{vhost}/{name}/bindings/source", authenticated(exchange_bindings)),
        Route("/api/exchanges/{vhost}/{name}/bindings/destination", authenticated(exchange_bindings)),
        Route("/api/bindings", authenticated(bindings)),
        Route("/api/bindings/{vhost}", authenticated(bindings)),
        Route("/api/bindings/{vhost}/e/{source}/{kind:str}/{destination}", authenticated(between), methods=["GET"]),
        Route("/api/bindings/{vhost}/e/{source}/{kind:str}/{destination}", authenticated(bind), methods=["POST"]),
        Route("/api/bindings/{vhost}/e/{source}/{kind:str}/{destination}/{props}", authenticated(unbind),
              methods=["DELETE"]),
        Route("/api/parameters/shovel", authenticated(shovels), methods=["GET"]),
        Route("/api/parameters/shovel/{vhost}", authenticated(shovels), methods=["GET"]),
        Route("/api/parameters/shovel/{vhost}/{name}", authenticated(put_shovel), methods=["PUT"]),
        Route("/api/connections", authenticated(connections)),
        Route("/api/connections/{name}", authenticated(connection), methods=["GET"]),
        Route("/api/connections/{name}", authenticated(close_connection), methods=["DELETE"]),
        Route("/api/channels", authenticated(channels)),
        Route("/api/consumers", authenticated(consumers)),
        Route("/api/consumers/{vhost}", authenticated(consumers)),
        Route("/api/health/checks/alarms", authenticated(health_alarms)),
        Route("/api/health/checks/local-alarms", authenticated(health_alarms)),
        Route("/api/aliveness-test/{vhost}", authenticated(aliveness)),
    ]

    async def missing(request: Request, exc: Exception) -> Response:
        return not_found()

    # The dashboard: static files calling this API from the browser.
    routes.append(Mount("/", StaticFiles(directory=DASHBOARD, html=True)))
    return _Edge(Starlette(routes=routes, exception_handlers={404: missing}))
