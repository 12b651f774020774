"""Users, password hashes and vhost access.

Passwords are stored as RabbitMQ stores them
(``rabbit_password_hashing_sha256``): base64 of a 4-byte salt followed by
SHA-256(salt + password). Hashes exported from a RabbitMQ definitions file
therefore work here unchanged, and ``amqlite hash-password`` makes new ones.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
from typing import TYPE_CHECKING, Iterable, Iterator

import attrs

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


def is_loopback(host: str) -> bool:
    """Whether a peer's address is a loopback one, what ``loopback_users``
    are limited to (any of 127.0.0.0/8 and ::1)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
    #: vhosts this user may open; "*" means all.
    vhosts: tuple[str, ...] = ("*",)
    #: RabbitMQ's user tags (administrator, monitoring, ...).
    tags: tuple[str, ...] = ()

    def may_open(self, vhost: str) -> bool:
        return "*" in self.vhosts or vhost in self.vhosts

    def granted(self, *vhosts: str) -> User:
        """This user, also allowed to open ``vhosts``."""
        return attrs.evolve(self, vhosts=tuple(dict.fromkeys([*self.vhosts, *vhosts])))


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

    def remove(self, name: str) -> bool:
        return self._users.pop(name, None) is not None

    def __iter__(self) -> Iterator[User]:
        return iter(sorted(self._users.values(), key=lambda user: user.name))

    def authenticate(self, name: str, password: str, *, loopback: bool) -> User:
        """The user, or LoginRefused saying why."""
        user = self._users.get(name)
        if user is None:
            raise LoginRefused("unknown user")
        if not check_password(user.password_hash, password):
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
            registry.add(User(settings.default_user, hash_password(settings.default_pass), tags=("administrator",)))
        for name, spec in settings.users.items():
            password_hash = spec.get("password_hash") or hash_password(spec["password"])
            registry.add(User(name, password_hash, tuple(spec.get("vhosts", ["*"])), tuple(spec.get("tags", []))))
        return registry
