"""Definitions in RabbitMQ's JSON format, both ways: what
``GET /api/definitions`` exports, ``POST /api/definitions`` and
``amqlite serve --definitions FILE`` import, and RabbitMQ imports unchanged.

Users keep RabbitMQ's password hashes (``rabbit_password_hashing_sha256``,
its default), so an export moves between the two brokers with the logins
intact, and so do permissions and topic permissions (RabbitMQ's regular
expressions, core/permissions.py). A user's Kafka SCRAM credentials, made
when its password was set in clear, go out as ``scram`` (an amqlite key,
which RabbitMQ ignores) and come back in with the hash; a user imported
with a ``password`` gets new ones, and one with a hash only has none (it
logs in to Kafka with PLAIN).
Changes go through a core channel, so they take the same checks and the
same journal path as over AMQP; users and vhosts go to the accounts
overlay, so they survive restarts.
"""

from __future__ import annotations

from typing import Any

import attrs

from ..accounts import Accounts
from ..auth import User, Users, hash_password, scram_credentials, scram_from_json, scram_to_json
from ..config import USER_LIMITS, VHOST_LIMITS, limit_problems
from ..core.broker import Broker
from ..core.errors import AMQPError
from ..core.permissions import Permission, TopicPermission, valid_pattern
from ..core.queue import Queue
from .snapshot import jsonable

HASHING = "rabbit_password_hashing_sha256"


def _scram(user: User) -> dict[str, Any]:
    return {"scram": scram_to_json(user.scram)} if user.scram else {}


class DefinitionsError(ValueError):
    """Definitions that cannot be imported; the message says what and where."""


def _system(name: str) -> bool:
    return name == "" or name.startswith("amq.")


def export(broker: Broker, users: Users, *, version: str, vhost: str | None = None) -> dict[str, Any]:
    """Everything (or one vhost's topology), as RabbitMQ exports it."""
    vhosts = [v for name, v in sorted(broker.vhosts.items()) if vhost is None or name == vhost]
    queues = [{"name": q.name, "vhost": v.name, "durable": q.durable, "auto_delete": q.auto_delete,
               "arguments": jsonable(dict(q.arguments))}
              for v in vhosts for _, q in sorted(v.queues.items()) if q.exclusive_owner is None]
    exchanges = [{"name": x.name, "vhost": v.name, "type": x.type, "durable": x.durable,
                  "auto_delete": x.auto_delete, "internal": x.internal, "arguments": jsonable(dict(x.arguments))}
                 for v in vhosts for _, x in sorted(v.exchanges.items()) if not _system(x.name)]
    bindings = [{"source": x.name, "vhost": v.name, "destination": destination.name,
                 "destination_type": "queue" if isinstance(destination, Queue) else "exchange",
                 "routing_key": routing_key, "arguments": jsonable(arguments)}
                for v in vhosts for _, x in sorted(v.exchanges.items()) if x.name
                for (destination, routing_key, _), arguments in x.bindings.items()
                if not (isinstance(destination, Queue) and destination.exclusive_owner is not None)]
    if vhost is not None:
        for item in queues + exchanges + bindings:
            del item["vhost"]
        return {"rabbit_version": version, "parameters": [], "policies": [], "queues": queues,
                "exchanges": exchanges, "bindings": bindings}
    return {
        "rabbit_version": version,
        "rabbitmq_version": version,
        "product_name": "amqlite",
        "product_version": version,
        "users": [{"name": u.name, "password_hash": u.password_hash, "hashing_algorithm": HASHING,
                   "tags": list(u.tags), "limits": dict(u.limits), **_scram(u)} for u in users],
        "vhosts": [{"name": v.name} for v in vhosts],
        "permissions": [{"user": u.name, "vhost": v.name, **attrs.asdict(permission)}
                        for u in users for v in vhosts if (permission := u.permission(v.name)) is not None],
        "topic_permissions": [{"user": u.name, **attrs.asdict(t)} for u in users for t in u.topic_permissions
                              if any(t.vhost == v.name for v in vhosts)],
        # RabbitMQ keeps vhost limits as runtime parameters, and exports them so.
        "parameters": [{"vhost": v.name, "component": "vhost-limits", "name": "limits", "value": dict(v.limits)}
                       for v in vhosts if v.limits],
        "global_parameters": [],
        "policies": [],
        "queues": queues,
        "exchanges": exchanges,
        "bindings": bindings,
    }


def _entries(definitions: dict[str, Any], key: str, fields: tuple[str, ...]) -> list[dict[str, Any]]:
    entries = definitions.get(key, [])
    if not isinstance(entries, list):
        raise DefinitionsError(f"{key} must be a list")
    for n, entry in enumerate(entries):
        missing = [f for f in fields if not isinstance(entry, dict) or f not in entry]
        if missing:
            raise DefinitionsError(f"{key}[{n}] lacks {', '.join(missing)}")
    return entries


def tags(value: Any) -> tuple[str, ...]:
    # Older exports write tags as one comma-separated string.
    if isinstance(value, str):
        return tuple(tag.strip() for tag in value.split(",") if tag.strip())
    return tuple(str(tag) for tag in value or ())


def load(definitions: Any, broker: Broker, users: Users, accounts: Accounts, *, now: float,
         vhost: str | None = None) -> dict[str, int]:
    """Import ``definitions`` (into ``vhost`` only, for a per-vhost file).
    Returns how many of each kind were applied; raises DefinitionsError
    before changing anything when the file is malformed, or at the first
    item the broker refuses (as RabbitMQ's import stops there)."""
    if not isinstance(definitions, dict):
        raise DefinitionsError("definitions must be a JSON object")
    new_vhosts = [] if vhost is not None else _entries(definitions, "vhosts", ("name",))
    new_users = [] if vhost is not None else _entries(definitions, "users", ("name",))
    permissions = [] if vhost is not None else _entries(definitions, "permissions", ("user", "vhost"))
    topic_permissions = [] if vhost is not None else _entries(
        definitions, "topic_permissions", ("user", "vhost", "exchange", "write", "read"))
    queues = _entries(definitions, "queues", ("name",) if vhost else ("name", "vhost"))
    exchanges = _entries(definitions, "exchanges", ("name", "type") if vhost else ("name", "vhost", "type"))
    bindings = _entries(definitions, "bindings", ("source", "destination", "destination_type") if vhost
                        else ("source", "vhost", "destination", "destination_type"))
    for n, spec in enumerate(new_users):
        algorithm = spec.get("hashing_algorithm", HASHING)
        if "password" not in spec and ("password_hash" not in spec or algorithm != HASHING):
            raise DefinitionsError(f"users[{n}] ({spec['name']}): needs a password, or a password_hash made with "
                                   f"{HASHING} (not {algorithm})")
        try:
            scram_from_json(spec.get("scram"))
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise DefinitionsError(f"users[{n}] ({spec['name']}): scram: {error!r}") from None

    vhost_limits = {str(p["vhost"]): p["value"] for p in ([] if vhost is not None else _entries(
        definitions, "parameters", ("vhost", "component", "value"))) if p["component"] == "vhost-limits"}
    limit_errors = [problem for name, value in vhost_limits.items()
                    for problem in limit_problems(f"vhost-limits of {name}", value, VHOST_LIMITS)]
    limit_errors += [problem for spec in new_users
                     for problem in limit_problems(f"limits of {spec['name']}", spec.get("limits", {}), USER_LIMITS)]
    if limit_errors:
        raise DefinitionsError("; ".join(limit_errors))
    for spec in new_vhosts:
        broker.add_vhost(str(spec["name"]))
        accounts.set_vhost(str(spec["name"]))
    for name, limits in vhost_limits.items():
        if name not in broker.vhosts:
            raise DefinitionsError(f"vhost-limits name vhost {name}, which does not exist")
        broker.vhosts[name].limits = dict(limits)
        accounts.set_vhost(name, limits)
    changed: dict[str, User] = {}
    for spec in new_users:
        name = str(spec["name"])
        if "password_hash" in spec:
            password_hash, scram = spec["password_hash"], scram_from_json(spec.get("scram"))
        else:
            password_hash, scram = hash_password(str(spec["password"])), scram_credentials(str(spec["password"]))
        existing = users.get(name)
        changed[name] = User(name, password_hash, existing.permissions if existing else {}, tags(spec.get("tags")),
                             existing.topic_permissions if existing else (), dict(spec.get("limits") or {}), scram)
    grants = [("permissions", spec) for spec in permissions]
    grants += [("topic_permissions", spec) for spec in topic_permissions]
    for kind, spec in grants:
        name = str(spec["user"])
        user = changed.get(name) or users.get(name)
        if user is None:
            raise DefinitionsError(f"{kind} name user {name}, which does not exist")
        keys = ("configure", "write", "read") if kind == "permissions" else ("write", "read")
        given = {key: str(spec.get(key, ".*")) for key in keys}
        for key, pattern in given.items():
            problem = valid_pattern(pattern)
            if problem is not None:
                raise DefinitionsError(f"{kind} of {name} in {spec['vhost']}: {key} {pattern!r}: {problem}")
        if kind == "permissions":
            changed[name] = user.granted(str(spec["vhost"]), Permission(**given))
        else:
            changed[name] = user.with_topic_permission(TopicPermission(str(spec["vhost"]), str(spec["exchange"]),
                                                                       **given))
    for user in changed.values():
        users.add(user)
        accounts.set_user(user)

    def where(spec: dict[str, Any]) -> str:
        return vhost if vhost is not None else str(spec["vhost"])

    def apply(kind: str, spec: dict[str, Any], operation: Any) -> None:
        target = where(spec)
        if target not in broker.vhosts:
            raise DefinitionsError(f"{kind} {spec.get('name', '')!r}: vhost {target!r} does not exist")
        connection = broker.connect(target, user="definitions", name="definitions")
        try:
            operation(connection.open_channel())
        except AMQPError as failure:
            raise DefinitionsError(f"{kind} {spec.get('name', spec.get('destination'))!r} in vhost {target!r}: "
                                   f"{failure.reply_text}") from None
        finally:
            connection.close(now=now)

    for spec in exchanges:
        if not _system(str(spec["name"])):
            apply("exchange", spec, lambda ch, s=spec: ch.declare_exchange(
                str(s["name"]), str(s["type"]), durable=bool(s.get("durable", True)),
                auto_delete=bool(s.get("auto_delete", False)), internal=bool(s.get("internal", False)),
                arguments=s.get("arguments") or {}))
    for spec in queues:
        apply("queue", spec, lambda ch, s=spec: ch.declare_queue(
            str(s["name"]), now=now, durable=bool(s.get("durable", True)), auto_delete=bool(s.get("auto_delete", False)),
            arguments=s.get("arguments") or {}))
    for spec in bindings:
        if not spec["source"]:
            continue  # the default exchange's implicit bindings
        bind = "bind_queue" if spec["destination_type"] == "queue" else "bind_exchange"
        apply("binding", spec, lambda ch, s=spec, b=bind: getattr(ch, b)(
            str(s["destination"]), str(s["source"]), str(s.get("routing_key", "")), s.get("arguments") or {}))
    return {"users": len(new_users), "vhosts": len(new_vhosts), "permissions": len(permissions),
            "exchanges": len(exchanges), "queues": len(queues), "bindings": len(bindings)}
