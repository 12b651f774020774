"""What every resource handler works with: the broker behind the API
(:class:`Api`), one authenticated request (:class:`Call`), and RabbitMQ's
error shapes.

Message operations and changes run on a channel of a connection opened *as
the requesting user* (:meth:`Call.channel`), as RabbitMQ's
``rabbit_mgmt_util:with_channel`` does, so that the core checks permissions,
``user_id`` and the rest exactly as it does for a client on the wire.
"""

from __future__ import annotations

import json
import weakref
from contextlib import contextmanager
from typing import Any, Callable, Collection, Iterator
from urllib.parse import unquote

import anyio
import attrs
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..accounts import Accounts
from ..auth import User, Users
from ..core.broker import Broker
from ..core.channel import Channel
from ..core.errors import ACCESS_REFUSED, NOT_FOUND, AMQPError
from ..core.queue import Queue
from ..core.vhost import VirtualHost
from . import snapshot
from .rates import Rates, queue_counters

#: The largest request body read, as RabbitMQ's management.http.max_body_size
#: (3.11 on) defaults to; a definitions file is the largest body anyone sends.
MAX_BODY = 20_000_000

CHALLENGE = {"WWW-Authenticate": 'Basic realm="RabbitMQ Management"'}


class Refused(Exception):
    """Ends a handler with ``response`` (raised from helpers deep in one)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def error(status: int, error: str, reason: str | list[str]) -> JSONResponse:
    return JSONResponse({"error": error, "reason": reason}, status_code=status,
                        headers=CHALLENGE if status == 401 else None)


def not_found() -> JSONResponse:
    return error(404, "Object Not Found", "Not Found")


def bad_request(reason: str | list[str]) -> JSONResponse:
    return error(400, "bad_request", reason)


def refusal(failure: AMQPError, *, publishing: bool = False) -> Response:
    """A broker error as RabbitMQ's API answers it: 404 for a missing
    resource, 401 for a refused permission, else 400 with the AMQP text.
    A publish's refusal is a 400 with the reply code (RabbitMQ's comes back
    as the channel's close)."""
    if failure.reply_code == NOT_FOUND:
        return not_found()
    if publishing:
        return bad_request(f"{failure.reply_code} {failure.reply_text}")
    if failure.reply_code == ACCESS_REFUSED:
        return error(401, "not_authorised", failure.reply_text)
    return bad_request(failure.text)


def flag(spec: dict[str, Any], key: str, default: bool) -> bool:
    """A boolean field; rabbitmqadmin sends "true" and "false" as strings."""
    value = spec.get(key, default)
    return value is True or value == "true"


def count_field(spec: dict[str, Any], key: str, default: int | None) -> int | None:
    """A whole number field (rabbitmqadmin sends "5"); None if it is not one."""
    value = spec.get(key, default)
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


_NOT_JSON = "the body must be JSON (Content-Type: application/json)"


async def read_json(request: Request) -> Any:
    """The request's JSON body ({} when empty). Refused: 415 unless it is
    JSON (a form or text/plain post from another site's page is refused
    before it does anything), 413 past MAX_BODY (without reading the rest,
    the declared length is checked first), 400 when it does not parse."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type and media_type != "application/json" and not media_type.endswith("+json"):
        raise Refused(error(415, "unsupported_media_type", _NOT_JSON))
    declared = request.headers.get("content-length", "")
    too_large = error(413, "payload_too_large", f"the body is larger than {MAX_BODY} bytes")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise Refused(too_large)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise Refused(too_large)
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        return {}
    if not media_type:
        raise Refused(error(415, "unsupported_media_type", _NOT_JSON))
    try:
        return json.loads(raw)
    except ValueError:
        raise Refused(bad_request("not_json")) from None


@attrs.define(eq=False)
class Api:
    """The broker and accounts the API serves; one per app."""

    broker: Broker
    users: Users
    #: The broker's clock.
    now: Callable[[], float]
    #: Users and vhosts changed here (in memory only without a data dir).
    overlay: Accounts
    #: What /api/overview reports as listeners (protocol, ip_address, port).
    listeners: list[dict[str, Any]]
    #: Closes a client connection by name with a reason; False if none.
    close: Callable[[str, str], bool] | None
    #: Which resource alarms ("memory", "disk") are on.
    alarms: Callable[[], Collection[str]]
    #: The connections of other protocols than AMQP (Kafka's), as
    #: /api/connections shows them; ``close`` closes them too.
    other_connections: Callable[[], list[dict[str, Any]]] = list
    rates: Rates = attrs.field(factory=lambda: Rates(anyio.current_time))
    #: Samples per queue object: a deleted queue's go with it.
    queue_rates: weakref.WeakKeyDictionary[Queue, Rates] = attrs.field(factory=weakref.WeakKeyDictionary)

    def queue_info(self, queue: Queue) -> dict[str, Any]:
        found = self.queue_rates.get(queue)
        if found is None:
            found = self.queue_rates[queue] = Rates(anyio.current_time)
        return {**snapshot.queue_info(queue, self.now()), "message_stats": found.message_stats(queue_counters(queue))}

    async def saved(self, response: Response) -> Response:
        """Persist the accounts overlay (fsync: in a worker thread), then answer."""
        await anyio.to_thread.run_sync(self.overlay.save)
        return response

    async def change_user(self, changed: User, status: int) -> Response:
        self.users.add(changed)
        self.overlay.set_user(changed)
        return await self.saved(Response(status_code=status))


@attrs.frozen
class Call:
    """One authenticated request to a route: what its handler is given."""

    request: Request
    user: User
    api: Api

    def param(self, name: str) -> str:
        """A path parameter, percent-decoded (routes match the raw path)."""
        return unquote(self.request.path_params[name])

    def optional(self, name: str) -> str | None:
        return self.param(name) if name in self.request.path_params else None

    @property
    def broker(self) -> Broker:
        return self.api.broker

    async def body(self) -> dict[str, Any]:
        """The JSON object the request carries, or a refusal (see read_json)."""
        decoded = await read_json(self.request)
        if not isinstance(decoded, dict):
            raise Refused(bad_request("not_json"))
        return decoded

    def vhost(self, name: str | None = None) -> VirtualHost:
        """The vhost named in the path (or ``name``); 404 when missing."""
        found = self.broker.vhosts.get(self.param("vhost") if name is None else name)
        if found is None:
            raise Refused(not_found())
        return found

    def visible_vhosts(self, only: str | None = None) -> list[VirtualHost]:
        """The vhosts this user may open (or the one named, if it may)."""
        return [v for name, v in sorted(self.broker.vhosts.items())
                if self.user.may_open(name) and only in (None, name)]

    def everyone(self) -> bool:
        """Monitoring users and administrators see every user's connections."""
        return bool({"administrator", "monitoring"}.intersection(self.user.tags))

    @contextmanager
    def channel(self, vhost: str, *, publishing: bool = False) -> Iterator[Channel]:
        """A channel of a connection opened as this user for this request
        alone, closed on the way out (its unsettled messages go back). A
        broker error ends the request as RabbitMQ's API answers it."""
        if not self.user.may_open(vhost) or vhost not in self.broker.vhosts:
            raise Refused(not_found())
        connection = self.broker.connect(vhost, user=self.user.name, name="management",
                                         access=self.user.access(vhost))
        try:
            yield connection.open_channel()
        except AMQPError as failure:
            raise Refused(refusal(failure, publishing=publishing)) from None
        finally:
            connection.close(now=self.api.now())

    def on_channel(self, vhost: str, operation: Callable[[Channel], Any], *, publishing: bool = False) -> Any:
        """Run ``operation`` on :meth:`channel`, without awaiting in between,
        so no other request or client ever sees the connection."""
        with self.channel(vhost, publishing=publishing) as channel:
            return operation(channel)
