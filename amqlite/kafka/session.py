"""What a Kafka handler knows about its connection: the broker, the vhost
topics live in, who the client is, and how the broker is reached."""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

import attrs

from ..auth import FailedLogins, LoginRefused, User, Users
from ..core.broker import Broker
from ..core.permissions import Access, matches

if TYPE_CHECKING:
    from ..core.vhost import VirtualHost
    from .apis import Api
    from .sasl import SaslState


@attrs.frozen
class KafkaSettings:
    """The listener's part of the settings, as one connection sees them."""

    #: Kafka has no vhosts: every topic is in this one.
    vhost: str = "/"
    #: What Metadata says the broker is at (the address the client reached).
    advertised_host: str = "127.0.0.1"
    advertised_port: int = 9092
    auto_create_topics: bool = True
    #: Clients that do not authenticate act as this user; "" refuses them.
    anonymous_user: str = ""
    node_id: int = 0
    #: Seconds a new consumer group waits for more members (core/coordinator.py).
    group_initial_rebalance_delay: float = 3.0
    cluster_id: str = "amqlite"


@attrs.define(eq=False)
class Session:
    broker: Broker
    users: Users
    settings: KafkaSettings
    apis: Mapping[int, Api]
    peer: str = ""
    peer_loopback: bool = False
    #: The peer's address without its port: what failed logins are counted by.
    peer_address: str = ""
    #: Failed logins per address, every Kafka connection's.
    failed_logins: FailedLogins = attrs.field(factory=FailedLogins)
    #: Who the client is, once authenticated (SASL or anonymous).
    user: User | None = None
    client_id: str | None = None
    #: How it authenticated ("anonymous", "PLAIN", "SCRAM-SHA-256" ...), for the log.
    mechanism: str | None = None
    #: SASL in progress (sasl.py), from SaslHandshake on.
    sasl: SaslState | None = None
    #: Set by SaslAuthenticate when the login failed: the connection ends
    #: once its response is sent, which waits (engine.py).
    login_failed: str | None = None

    @property
    def vhost(self) -> VirtualHost:
        return self.broker.vhosts[self.settings.vhost]

    @property
    def user_name(self) -> str | None:
        """Who the client is, for log lines (None before it logs in)."""
        return self.user.name if self.user else None

    @property
    def access(self) -> Access:
        """The user's permissions in the Kafka vhost (after authentication)."""
        assert self.user is not None, "handlers run after authentication"
        return self.user.access(self.settings.vhost)

    def allowed(self, permission: str, topic: str) -> bool:
        """Whether the client may ``permission`` ("configure", "write" or
        "read") the topic: RabbitMQ's pattern for it in the Kafka vhost,
        matched against the topic's name (a partitioned topic's too, not
        its streams'). Producing needs write; fetching and group
        membership read; creating, deleting or altering a topic configure."""
        access = self.access
        return matches(getattr(access.permission, permission), topic)

    def may_see(self, topic: str) -> bool:
        """Metadata lists what the client may do anything with (Kafka's Describe)."""
        permission = self.access.permission
        return any(matches(pattern, topic) for pattern in (permission.configure, permission.write, permission.read))

    def authenticate_anonymous(self) -> str | None:
        """Log the client in as the anonymous user; why not, if it cannot be."""
        name = self.settings.anonymous_user
        if not name:
            return "anonymous clients are not allowed (kafka_allow_anonymous, default_user)"
        try:
            user = self.users.authenticate(name, None, loopback=self.peer_loopback)
        except LoginRefused as refused:
            return f"anonymous as {name}: {refused.reason}"
        return self.login(user, "anonymous")

    def login(self, user: User, mechanism: str) -> str | None:
        """Take ``user`` as the client's; why not, if they may not use the vhost."""
        if not user.may_open(self.settings.vhost):
            return f"user {user.name} has no access to vhost {self.settings.vhost}"
        self.user = user
        self.mechanism = mechanism
        return None
