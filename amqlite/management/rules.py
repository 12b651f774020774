"""Who may call a route: RabbitMQ's ``is_authorized`` rules
(``rabbit_mgmt_util``), one of which every route in :mod:`.routes` names,
and the AMQP permission it needs on the resource in its path.

The rules, as in RabbitMQ 3.10, in the order they are checked:

- every route needs a user who logs in and has a management tag
  (administrator, monitoring, policymaker or management): else 401;
- ``Who.ANY``: that is all (``is_authorized``);
- ``Who.VHOST``: administrators, or a user who may open the vhost in the
  path (``is_authorized_vhost``); a vhost that does not exist passes, to be
  answered 404 by the handler;
- ``Who.VHOST_VISIBLE``: the same, and monitoring users, who see every
  vhost (``is_authorized_vhost_visible``);
- ``Who.OWNER``: a connection's user, or a monitoring user (an
  administrator, for DELETE) (``is_authorized_user``);
- ``Who.POLICYMAKER``: administrators, or a policymaker who may open the
  vhost (``is_authorized_policies``);
- ``Who.ADMINISTRATOR``: administrators only (``is_authorized_admin``).

Then :class:`Need` says which of the user's configure, write and read
patterns the route's operation needs, on which named queue or exchange. The
channel the handler opens as the user checks it too (that is where RabbitMQ
checks it); naming it here makes the table say what each route does, and
keeps a route from forgetting it.
"""

from __future__ import annotations

import base64
import binascii
import enum
from typing import Callable
from urllib.parse import unquote

import attrs
from starlette.requests import Request
from starlette.responses import Response

from ..auth import LoginRefused, User, Users, is_loopback
from ..core.errors import AMQPError
from .api import CHALLENGE, error, refusal

#: User tags that grant the management API, as in RabbitMQ.
MANAGEMENT_TAGS = frozenset({"administrator", "monitoring", "policymaker", "management"})


class Who(enum.Enum):
    ANY = "any management user"
    VHOST = "administrators and users of the vhost"
    VHOST_VISIBLE = "administrators, monitoring and users of the vhost"
    OWNER = "the connection's user, monitoring (GET) or administrators"
    POLICYMAKER = "administrators and policymakers of the vhost"
    ADMINISTRATOR = "administrators"


@attrs.frozen
class Need:
    """An AMQP permission on a resource named in the path."""

    #: "configure", "write" or "read".
    permission: str
    #: "queue" or "exchange".
    kind: str
    #: The path parameter that names it.
    param: str

    def __str__(self) -> str:
        return f"{self.permission} on {self.kind} {{{self.param}}}"


def configure(kind: str, param: str = "name") -> Need:
    return Need("configure", kind, param)


def write(kind: str, param: str = "name") -> Need:
    return Need("write", kind, param)


def read(kind: str, param: str = "name") -> Need:
    return Need("read", kind, param)


def login(request: Request, users: Users) -> User | Response:
    """The user the request's Basic credentials name, if it may use the API."""
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        # RabbitMQ's answer to a request without credentials: a bare challenge.
        return Response(status_code=401, headers=CHALLENGE)
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
        return error(401, "not_authorised", "Not management user")
    return user


def _vhost_param(request: Request) -> str | None:
    raw = request.path_params.get("vhost")
    return None if raw is None else unquote(raw)


def authorize(who: Who, needs: tuple[Need, ...], request: Request, user: User,
              owner: Callable[[str], str | None], *, publishing: bool = False) -> Response | None:
    """None when ``user`` may call the route, else RabbitMQ's refusal.
    ``owner`` names the user of a connection (Who.OWNER: the one in the
    path). A publish's missing permission is refused as RabbitMQ's is (see
    :func:`.api.refusal`)."""
    tags = set(user.tags)
    admin = "administrator" in tags
    vhost = _vhost_param(request)
    if who is Who.ADMINISTRATOR and not admin:
        return error(401, "not_authorised", "Not administrator user")
    sees_all = admin or (who is Who.VHOST_VISIBLE and "monitoring" in tags)
    if who in (Who.VHOST, Who.VHOST_VISIBLE) and not sees_all and vhost is not None and not user.may_open(vhost):
        return error(401, "not_authorised", "User not authorised to access virtual host")
    if who is Who.POLICYMAKER and not (admin or ("policymaker" in tags and (vhost is None or user.may_open(vhost)))):
        return error(401, "not_authorised", "User not authorised to access object")
    if who is Who.OWNER:
        allowed = admin if request.method == "DELETE" else bool({"administrator", "monitoring"} & tags)
        name = request.path_params.get("name")
        if not allowed and name is not None and owner(unquote(name)) not in (None, user.name):
            return error(401, "not_authorised", "User not authorised to access object")
    if needs and vhost is not None and user.may_open(vhost):
        access = user.access(vhost)
        try:
            for need in needs:
                name = unquote(request.path_params[need.param])
                getattr(access, need.permission)(need.kind, "" if name == "amq.default" else name)
        except AMQPError as refused:
            return refusal(refused, publishing=publishing)
    return None
