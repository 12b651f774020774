"""Users, vhosts and vhost access changed at run time (the management API,
an imported definitions file), kept in the data directory so that they
survive restarts.

``access.json`` holds an overlay on the config file: per user and per vhost,
its definition as last set, or ``null`` once deleted. At start-up the config
file's users and vhosts are set up first, then the overlay is applied, so a
change made through the API wins over the file until the overlay entry goes.
The file is replaced atomically (temporary file, fsync, rename).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from .auth import User, Users, permissions_from, scram_from_json, scram_to_json, topic_permissions_from

if TYPE_CHECKING:
    from .core.broker import Broker

FILE = "access.json"


@attrs.define
class Accounts:
    """The overlay, and where it is kept (None: in memory only, no data dir)."""

    directory: Path | None
    users: dict[str, dict[str, Any] | None] = attrs.Factory(dict)
    vhosts: dict[str, dict[str, Any] | None] = attrs.Factory(dict)

    @classmethod
    def load(cls, directory: Path | None) -> Accounts:
        accounts = cls(directory)
        if directory is not None and (directory / FILE).exists():
            saved = json.loads((directory / FILE).read_text())
            accounts.users, accounts.vhosts = dict(saved.get("users", {})), dict(saved.get("vhosts", {}))
        return accounts

    def apply(self, users: Users, broker: Broker) -> None:
        """Bring ``users`` and ``broker``'s vhosts up to the overlay."""
        for name, vhost in self.vhosts.items():
            if vhost is not None:
                added = broker.add_vhost(name)
                if "limits" in vhost:
                    added.limits = dict(vhost["limits"])
        for name, spec in self.users.items():
            if spec is None:
                users.remove(name)
            else:
                # permissions_from also reads the plain "vhosts" list that
                # files written before permissions existed hold.
                users.add(User(name, spec["password_hash"], permissions_from(spec), tuple(spec["tags"]),
                               topic_permissions_from(spec), dict(spec.get("limits", {})),
                               scram_from_json(spec.get("scram"))))

    def set_user(self, user: User) -> None:
        self.users[user.name] = {
            "password_hash": user.password_hash,
            "permissions": {vhost: attrs.asdict(p) for vhost, p in user.permissions.items()},
            "topic_permissions": [attrs.asdict(t) for t in user.topic_permissions],
            "tags": list(user.tags),
            "limits": dict(user.limits),
            "scram": scram_to_json(user.scram),
        }

    def delete_user(self, name: str) -> None:
        self.users[name] = None

    def set_vhost(self, name: str, limits: dict[str, int] | None = None) -> None:
        self.vhosts[name] = {} if limits is None else {"limits": dict(limits)}

    def delete_vhost(self, name: str) -> None:
        self.vhosts[name] = None

    def save(self) -> None:
        """Write the overlay (a worker thread's job: it fsyncs)."""
        if self.directory is None:
            return
        path = self.directory / FILE
        temp = path.with_name(FILE + ".tmp")
        with open(temp, "w") as file:
            json.dump({"users": self.users, "vhosts": self.vhosts}, file, indent=1, sort_keys=True)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
