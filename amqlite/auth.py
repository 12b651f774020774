"""Users, password hashes and their permissions per vhost.

Passwords are stored as RabbitMQ stores them
(``rabbit_password_hashing_sha256``): base64 of a 4-byte salt followed by
SHA-256(salt + password). Hashes exported from a RabbitMQ definitions file
therefore work here unchanged, and ``amqlite hash-password`` makes new ones.
Wherever a password is set in clear (the config file, the management API,
a definitions import), its SCRAM credentials for Kafka's SCRAM-SHA-256/512
are made too and kept beside the hash, as Kafka keeps them: a hash alone
cannot give SCRAM's salted password.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping

import attrs

from .core.permissions import FULL, Access, Permission, TopicPermission

if TYPE_CHECKING:
    from .config import Settings


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = os.urandom(4) if salt is None else salt
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def check_password(password_hash: str, password: str) -> bool:
    try:
        raw = base64.b64decode(password_hash, validate=True)
    except ValueError:
        return False
    salt, digest = raw[:4], raw[4:]
    return hmac.compare_digest(digest, hashlib.sha256(salt + password.encode()).digest())


#: Kafka's default iteration count for SCRAM credentials.
SCRAM_ITERATIONS = 4096


@attrs.frozen
class ScramCredential:
    """What a SCRAM server keeps for a user (RFC 5802): never the password."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes

    def to_json(self) -> dict[str, Any]:
        return {"salt": _b64(self.salt), "iterations": self.iterations,
                "stored_key": _b64(self.stored_key), "server_key": _b64(self.server_key)}

    @classmethod
    def from_json(cls, saved: Mapping[str, Any]) -> ScramCredential:
        return cls(base64.b64decode(saved["salt"]), int(saved["iterations"]),
                   base64.b64decode(saved["stored_key"]), base64.b64decode(saved["server_key"]))


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


#: The hashes of Kafka's SCRAM mechanisms (SCRAM-SHA-256, SCRAM-SHA-512).
SCRAM_HASHES = ("sha256", "sha512")


def scram_credential(password: str, hash_name: str, salt: bytes | None = None,
                     iterations: int = SCRAM_ITERATIONS) -> ScramCredential:
    """The SCRAM credential of ``password`` for ``hash_name`` ("sha256", "sha512")."""
    salt = os.urandom(16) if salt is None else salt
    salted = hashlib.pbkdf2_hmac(hash_name, password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hash_name).digest()
    return ScramCredential(salt, iterations, hashlib.new(hash_name, client_key).digest(),
                           hmac.new(salted, b"Server Key", hash_name).digest())


def scram_credentials(password: str) -> dict[str, ScramCredential]:
    """``password``'s credential for each SCRAM hash."""
    return {hash_name: scram_credential(password, hash_name) for hash_name in SCRAM_HASHES}


def scram_to_json(scram: Mapping[str, ScramCredential]) -> dict[str, dict[str, Any]]:
    return {hash_name: credential.to_json() for hash_name, credential in scram.items()}


def scram_from_json(saved: Mapping[str, Any] | None) -> dict[str, ScramCredential]:
    return {hash_name: ScramCredential.from_json(entry) for hash_name, entry in (saved or {}).items()
            if hash_name in SCRAM_HASHES}


def is_loopback(host: str) -> bool:
    """Whether a peer's address is a loopback one, what ``loopback_users``
    are limited to (any of 127.0.0.0/8 and ::1)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


#: How long a failed login's answer waits, Kafka's
#: connection.failed.authentication.delay.ms (KIP-306) ...
FAILED_LOGIN_DELAY = 0.1
#: ... doubled for each failure from the same address in a row, up to this ...
FAILED_LOGIN_MAX_DELAY = 5.0
#: ... until the address has failed none for this long.
FAILED_LOGIN_MEMORY = 60.0
#: Addresses remembered before the quiet ones are forgotten.
_FAILED_LOGIN_ADDRESSES = 1024


@attrs.define
class FailedLogins:
    """Recent failed logins per source address, and how long the answer
    to the next one waits: a client retrying a bad password at once
    (librdkafka: every 50 ms) or many guesses from one address get at most
    one answer per ``FAILED_LOGIN_MAX_DELAY`` per connection, while a
    mistyped password hears back within 0.1 s."""

    _recent: dict[str, tuple[int, float]] = attrs.field(factory=dict)

    def failed(self, address: str, now: float) -> float:
        """A login from ``address`` failed at ``now``: seconds its answer waits."""
        count, last = self._recent.pop(address, (0, now))
        count = count + 1 if now - last < FAILED_LOGIN_MEMORY else 1
        if len(self._recent) >= _FAILED_LOGIN_ADDRESSES:
            self._recent = {key: value for key, value in self._recent.items()
                            if now - value[1] < FAILED_LOGIN_MEMORY}
        self._recent[address] = (count, now)
        return min(FAILED_LOGIN_DELAY * 2 ** min(count - 1, 32), FAILED_LOGIN_MAX_DELAY)


class LoginRefused(Exception):
    """A login that failed; ``reason`` is for the log line, never for the
    client (which, as in RabbitMQ, hears only that the login was refused)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@attrs.frozen
class User:
    name: str
    password_hash: str
    #: Per vhost, the user's configure/write/read patterns; the key "*"
    #: stands for every vhost (the default user's full rights everywhere).
    permissions: Mapping[str, Permission] = attrs.field(factory=lambda: {"*": FULL})
    #: RabbitMQ's user tags (administrator, monitoring, ...).
    tags: tuple[str, ...] = ()
    topic_permissions: tuple[TopicPermission, ...] = ()
    #: RabbitMQ's user limits ("max-connections", "max-channels"); negative
    #: or absent: no limit.
    limits: Mapping[str, int] = attrs.field(factory=dict)
    #: Kafka's SCRAM credentials by hash ("sha256", "sha512"), made when
    #: the password was set in clear; empty for a user known by its hash
    #: only, who logs in to Kafka with PLAIN.
    scram: Mapping[str, ScramCredential] = attrs.field(factory=dict)

    def permission(self, vhost: str) -> Permission | None:
        """What the user may do in ``vhost``; None: not even open it."""
        return self.permissions.get(vhost) or self.permissions.get("*")

    def may_open(self, vhost: str) -> bool:
        return self.permission(vhost) is not None

    def access(self, vhost: str) -> Access:
        permission = self.permission(vhost)
        assert permission is not None, "checked when the vhost was opened"
        return Access(self.name, vhost, permission, tuple(t for t in self.topic_permissions if t.vhost == vhost))

    def granted(self, vhost: str, permission: Permission = FULL) -> User:
        """This user, with ``permission`` in ``vhost``."""
        return attrs.evolve(self, permissions={**self.permissions, vhost: permission})

    def revoked(self, vhost: str, every_vhost: Iterable[str]) -> User:
        """This user, with no permission in ``vhost``; a grant of every vhost
        ("*") becomes one grant per other vhost in ``every_vhost``."""
        permissions = dict(self.permissions)
        everywhere = permissions.pop("*", None)
        if everywhere is not None:
            permissions = {name: permissions.get(name, everywhere) for name in every_vhost}
        permissions.pop(vhost, None)
        return attrs.evolve(self, permissions=permissions)

    def with_topic_permission(self, topic: TopicPermission) -> User:
        kept = tuple(t for t in self.topic_permissions if (t.vhost, t.exchange) != (topic.vhost, topic.exchange))
        return attrs.evolve(self, topic_permissions=(*kept, topic))

    def without_topic_permissions(self, vhost: str, exchange: str | None = None) -> User:
        kept = tuple(t for t in self.topic_permissions
                     if t.vhost != vhost or (exchange is not None and t.exchange != exchange))
        return attrs.evolve(self, topic_permissions=kept)


class Users:
    def __init__(self, *, loopback_users: Iterable[str] = ("guest",)) -> None:
        self._users: dict[str, User] = {}
        #: Who may connect from loopback only, whatever their password: a
        #: setting apart from the user, as RabbitMQ's loopback_users, so
        #: that changing guest's password does not open guest to the network.
        self.loopback_users = frozenset(loopback_users)

    def add(self, user: User) -> None:
        self._users[user.name] = user

    def get(self, name: str) -> User | None:
        return self._users.get(name)

    def scram_credential(self, name: str, hash_name: str) -> ScramCredential | None:
        """The user's SCRAM credential for ``hash_name``, or None: no such
        user, or one whose password amqlite never saw in clear (only a
        hash: ``password_hash`` in a definitions file or the management
        API, as RabbitMQ exports them), from which SCRAM's salted password
        cannot be made."""
        user = self._users.get(name)
        return None if user is None else user.scram.get(hash_name)

    def remove(self, name: str) -> bool:
        return self._users.pop(name, None) is not None

    def __iter__(self) -> Iterator[User]:
        return iter(sorted(self._users.values(), key=lambda user: user.name))

    def authenticate(self, name: str, password: str | None, *, loopback: bool) -> User:
        """The user, or LoginRefused saying why. A password of None means
        the peer proved who it is otherwise (SASL EXTERNAL: a verified
        client certificate naming the user)."""
        user = self._users.get(name)
        if user is None:
            raise LoginRefused("unknown user")
        if password is not None and not check_password(user.password_hash, password):
            raise LoginRefused("bad password")
        if name in self.loopback_users and not loopback:
            raise LoginRefused("user may connect from loopback only")
        return user

    @classmethod
    def from_settings(cls, settings: Settings) -> Users:
        """The default user (if any), then the configured ones, which may
        redefine it. Settings have validated every table already."""
        registry = cls(loopback_users=settings.loopback_users)
        if settings.default_user:
            registry.add(User(settings.default_user, hash_password(settings.default_pass), tags=("administrator",),
                              scram=scram_credentials(settings.default_pass)))
        for name, spec in settings.users.items():
            password_hash = spec.get("password_hash") or hash_password(spec["password"])
            scram = scram_credentials(spec["password"]) if "password" in spec else {}
            registry.add(User(name, password_hash, permissions_from(spec), tuple(spec.get("tags", [])),
                              topic_permissions_from(spec), dict(spec.get("limits", {})), scram))
        return registry


def permissions_from(spec: Mapping[str, Any]) -> dict[str, Permission]:
    """A config file user table's grants: ``vhosts = [...]`` (full rights
    in each, "*" for all; every vhost if neither key is there) and
    ``permissions = {vhost = {configure, write, read}}``."""
    granted = {} if "permissions" in spec else {vhost: FULL for vhost in spec.get("vhosts", ["*"])}
    for vhost, patterns in spec.get("permissions", {}).items():
        granted[vhost] = Permission(**patterns)
    return granted


def topic_permissions_from(spec: Mapping[str, Any]) -> tuple[TopicPermission, ...]:
    return tuple(TopicPermission(**entry) for entry in spec.get("topic_permissions", []))
