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
import os
from typing import Any, Mapping

import attrs


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
    #: RabbitMQ lets guest connect from loopback only; so do we.
    loopback_only: bool = False

    def may_open(self, vhost: str) -> bool:
        return "*" in self.vhosts or vhost in self.vhosts


class Users:
    def __init__(self) -> None:
        self._users: dict[str, User] = {}
        self.add(User("guest", hash_password("guest"), loopback_only=True))

    def add(self, user: User) -> None:
        self._users[user.name] = user

    def authenticate(self, name: str, password: str, *, loopback: bool) -> User:
        """The user, or LoginRefused saying why."""
        user = self._users.get(name)
        if user is None:
            raise LoginRefused("unknown user")
        if not check_password(user.password_hash, password):
            raise LoginRefused("bad password")
        if user.loopback_only and not loopback:
            raise LoginRefused("user may connect from loopback only")
        return user

    @classmethod
    def from_settings(cls, users: Mapping[str, Mapping[str, Any]]) -> Users:
        registry = cls()
        for name, spec in users.items():
            password_hash = spec.get("password_hash")
            if password_hash is None and "password" in spec:
                password_hash = hash_password(str(spec["password"]))
            if not isinstance(password_hash, str):
                raise ValueError(f"user {name!r} needs password_hash (or password)")
            vhosts = spec.get("vhosts", ["*"])
            registry.add(
                User(name, password_hash, tuple(vhosts), bool(spec.get("loopback_only", False)))
            )
        return registry
