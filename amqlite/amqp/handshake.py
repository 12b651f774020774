"""The AMQP 0-9-1 connection handshake, sans-IO (as wsproto keeps its
handshake apart from the connection):

    protocol header -> connection.start -> start-ok -> connection.tune
    -> tune-ok -> connection.open -> open-ok

Authentication is injected as a function, so the handshake knows nothing
of how users are stored. Each step returns the reply to send or raises the
AMQP error RabbitMQ would send; a refused login is logged once, with the
reason the client never hears.
"""

from __future__ import annotations

from collections.abc import Callable, Container
from typing import Any

import attrs

from .. import __version__
from ..auth import LoginRefused, User
from ..core import errors
from ..log import get_logger
from . import spec
from .frames import FRAME_MIN_SIZE
from .values import decode_table_entries

log = get_logger(__name__)

PRODUCT = "amqlite"

CAPABILITIES = {
    "publisher_confirms": True,
    "exchange_exchange_bindings": True,
    "basic.nack": True,
    "consumer_cancel_notify": True,
    "connection.blocked": True,
    "consumer_priorities": True,
    "authentication_failure_close": True,
    "per_consumer_qos": True,
    "direct_reply_to": False,
}

#: ``authenticate(user name, password)`` -> the user, or LoginRefused; a
#: password of None for a user proved by a verified client certificate.
Authenticate = Callable[[str, "str | None"], User]


@attrs.frozen
class Limits:
    """channel_max, frame_max and heartbeat, as proposed or as negotiated."""

    channel_max: int
    frame_max: int
    heartbeat: int


class Handshake:
    def __init__(self, authenticate: Authenticate, limits: Limits, *, peer: str = "",
                 mechanisms: tuple[str, ...] = ("PLAIN", "AMQPLAIN"), certificate_user: str | None = None) -> None:
        self._authenticate = authenticate
        self.limits = limits
        self.peer = peer
        #: The user a verified TLS client certificate names (its common name,
        #: as rabbitmq_auth_mechanism_ssl's ssl_cert_login_from = common_name).
        self.certificate_user = certificate_user
        # EXTERNAL only where there is a certificate to log in with.
        self.mechanisms = tuple(m for m in mechanisms if m != "EXTERNAL" or certificate_user is not None)
        self.user: User | None = None
        self.client_properties: dict[str, Any] = {}

    @property
    def capabilities(self) -> dict[str, Any]:
        """What the client announced it supports."""
        return self.client_properties.get("capabilities") or {}

    @property
    def client_name(self) -> str:
        props = self.client_properties
        text = f"{props.get('product', '')} {props.get('version', '')}".strip()
        name = props.get("connection_name", "")
        return f"{text} ({name})" if name else text

    def start(self) -> spec.Connection.Start:
        return spec.Connection.Start(
            0,
            9,
            {
                "capabilities": CAPABILITIES,
                "product": PRODUCT,
                "version": __version__,
                "platform": "Python",
                "information": "https://github.com/amqlite",
                "copyright": "amqlite contributors",
                "cluster_name": "amqlite",
            },
            " ".join(self.mechanisms).encode(),
            b"en_US",
        )

    def start_ok(self, method: spec.Connection.StartOk) -> spec.Connection.Tune:
        self.client_properties = method.client_properties or {}
        if method.mechanism not in self.mechanisms:
            raise errors.ConnectionError_(f"unsupported authentication mechanism '{method.mechanism}'",
                                          errors.ACCESS_REFUSED)
        name: str
        password: str | None
        if method.mechanism == "EXTERNAL":
            assert self.certificate_user is not None
            name, password = self.certificate_user, None
        else:
            name, password = _credentials(method.mechanism, method.response)
        try:
            self.user = self._authenticate(name, password)
        except LoginRefused as refused:
            log.warning("connection.login_refused", peer=self.peer, user=name, mechanism=method.mechanism,
                        reason=refused.reason)
            raise errors.ConnectionError_(
                f"Login was refused using authentication mechanism {method.mechanism}. "
                "For details see the broker logfile.",
                errors.ACCESS_REFUSED,
            ) from None
        limits = self.limits
        return spec.Connection.Tune(limits.channel_max, limits.frame_max, limits.heartbeat)

    def tune_ok(self, method: spec.Connection.TuneOk) -> Limits:
        """The limits the client chose, checked against ours (as RabbitMQ's negotiation)."""
        ours = self.limits
        if method.frame_max and method.frame_max < FRAME_MIN_SIZE:
            raise errors.NotAllowed(f"frame_max={method.frame_max} < {FRAME_MIN_SIZE} min_size")
        if method.frame_max > ours.frame_max or (ours.frame_max and not method.frame_max):
            raise errors.NotAllowed(f"frame_max={method.frame_max} > {ours.frame_max} max_size")
        channel_max = method.channel_max or ours.channel_max
        if ours.channel_max and channel_max > ours.channel_max:
            raise errors.NotAllowed(f"channel_max={method.channel_max} > {ours.channel_max} max")
        self.limits = Limits(channel_max, method.frame_max, method.heartbeat)
        return self.limits

    def open(self, method: spec.Connection.Open, vhosts: Container[str]) -> str:
        """The vhost the client may open."""
        user = self.user
        assert user is not None
        vhost = method.virtual_host
        if vhost not in vhosts:
            raise errors.NotAllowed(f"vhost {vhost} not found")
        if not user.may_open(vhost):
            log.warning("connection.login_refused", peer=self.peer, user=user.name, vhost=vhost,
                        reason="no access to the vhost")
            raise errors.NotAllowed(f"access to vhost '{vhost}' refused for user '{user.name}'")
        return vhost


def _credentials(mechanism: str, response: bytes) -> tuple[str, str]:
    if mechanism == "PLAIN":
        parts = response.split(b"\x00")
        if len(parts) != 3:
            return "", ""
        return parts[1].decode("utf-8", "replace"), parts[2].decode("utf-8", "replace")
    if mechanism == "AMQPLAIN":
        # A field table without its length prefix (py-amqp, the Java client).
        try:
            table = decode_table_entries(response)
        except errors.AMQPError:
            return "", ""
        login, password = table.get("LOGIN", ""), table.get("PASSWORD", "")
        return _text(login), _text(password)
    raise errors.ConnectionError_(f"unsupported authentication mechanism '{mechanism}'", errors.ACCESS_REFUSED)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
