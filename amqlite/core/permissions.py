"""What a user may do in a vhost: RabbitMQ's configure, write and read
permissions, and its topic permissions.

Each permission is a regular expression matched against a resource name,
as RabbitMQ matches it (``re:run``): a search, so anchor it with ``^`` and
``$`` to mean the whole name; the empty pattern grants nothing. Which
operation needs which permission is RabbitMQ's mapping, checked in the core
channel before the operation looks anything up (docs/concepts.md).

Topic permissions narrow write (publish) and read (bind) on topic exchanges
by routing key, with ``{username}`` and ``{vhost}`` expanded in the
pattern. An exchange with no topic permission for the user is unrestricted.
"""

from __future__ import annotations

import functools
import re

import attrs

from .errors import AccessRefused

#: The default exchange's name in permission checks and their errors.
DEFAULT_EXCHANGE = "amq.default"


@attrs.frozen
class Permission:
    configure: str = ".*"
    write: str = ".*"
    read: str = ".*"


#: What the default user and an in-process (embedded) application have.
FULL = Permission()


@attrs.frozen
class TopicPermission:
    vhost: str
    exchange: str
    write: str = ".*"
    read: str = ".*"


@functools.lru_cache(maxsize=4096)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def matches(pattern: str, name: str) -> bool:
    # RabbitMQ: an empty pattern is "no access", not "matches everything".
    # ".*", the usual grant, matches every name without the regex engine.
    return pattern == ".*" or (pattern != "" and _compiled(pattern).search(name) is not None)


def valid_pattern(pattern: str) -> str | None:
    """Why ``pattern`` is not a usable regular expression, or None."""
    try:
        _compiled(pattern)
    except re.error as error:
        return str(error)
    return None


@attrs.frozen
class Access:
    """One user's rights in one vhost, fixed when the connection opens (as
    RabbitMQ caches them per connection)."""

    user: str
    vhost: str
    permission: Permission
    topics: tuple[TopicPermission, ...] = ()

    def configure(self, kind: str, name: str) -> None:
        self._check(self.permission.configure, kind, name)

    def write(self, kind: str, name: str) -> None:
        self._check(self.permission.write, kind, name)

    def read(self, kind: str, name: str) -> None:
        self._check(self.permission.read, kind, name)

    def _check(self, pattern: str, kind: str, name: str) -> None:
        if kind == "exchange" and not name:
            name = DEFAULT_EXCHANGE
        if not matches(pattern, name):
            raise AccessRefused(f"access to {kind} '{name}' in vhost '{self.vhost}' refused for user '{self.user}'")

    def topic_write(self, exchange: str, routing_key: str) -> None:
        self._topic("write", exchange, routing_key)

    def topic_read(self, exchange: str, routing_key: str) -> None:
        self._topic("read", exchange, routing_key)

    def _topic(self, what: str, exchange: str, routing_key: str) -> None:
        for topic in self.topics:
            if topic.exchange == exchange:
                pattern = getattr(topic, what).replace("{username}", self.user).replace("{vhost}", self.vhost)
                if not matches(pattern, routing_key):
                    raise AccessRefused(
                        f"access to topic '{routing_key}' in exchange '{exchange}' in vhost '{self.vhost}' "
                        f"refused for user '{self.user}'")
