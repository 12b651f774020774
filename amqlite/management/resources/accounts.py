"""Users, their permissions, topic permissions and limits: administrators' business."""

from __future__ import annotations

from typing import Any

import anyio
import attrs
from starlette.responses import JSONResponse, Response

from ...auth import ScramCredential, User, hash_password, scram_credentials
from ...config import USER_LIMITS
from ...core.permissions import Permission, TopicPermission, valid_pattern
from .. import definitions
from ..api import Call, Refused, bad_request, not_found


def user_info(user: User) -> dict[str, Any]:
    return {"name": user.name, "password_hash": user.password_hash,
            "hashing_algorithm": definitions.HASHING, "tags": list(user.tags), "limits": {}}


async def list_users(call: Call) -> Response:
    return JSONResponse([user_info(u) for u in call.api.users])


async def show_user(call: Call) -> Response:
    found = call.api.users.get(call.param("name"))
    return JSONResponse(user_info(found)) if found is not None else not_found()


async def put_user(call: Call) -> Response:
    spec = await call.body()
    users, name = call.api.users, call.param("name")
    existing = users.get(name)
    scram: dict[str, ScramCredential] = {}
    if isinstance(spec.get("password"), str):
        # PBKDF2's 4,096 rounds per hash take milliseconds: off the event loop.
        password_hash, scram = hash_password(spec["password"]), await anyio.to_thread.run_sync(
            scram_credentials, spec["password"])
    elif isinstance(spec.get("password_hash"), str):
        password_hash = spec["password_hash"]
    elif existing is not None:
        password_hash, scram = existing.password_hash, dict(existing.scram)
    else:
        password_hash = ""  # as in RabbitMQ, a user with no password, who cannot log in with one
    changed = User(name, password_hash, existing.permissions if existing else {},
                   definitions.tags(spec.get("tags")), existing.topic_permissions if existing else (),
                   scram=scram)
    return await call.api.change_user(changed, 204 if existing else 201)


async def delete_user(call: Call) -> Response:
    name = call.param("name")
    if not call.api.users.remove(name):
        return not_found()
    call.api.overlay.delete_user(name)
    return await call.api.saved(Response(status_code=204))


def permission_info(user: User, vhost: str) -> dict[str, Any]:
    permission = user.permission(vhost)
    assert permission is not None
    return {"user": user.name, "vhost": vhost, **attrs.asdict(permission)}


async def list_permissions(call: Call) -> Response:
    vhosts = sorted(call.broker.vhosts)
    return JSONResponse([permission_info(u, v) for u in call.api.users for v in vhosts if u.may_open(v)])


async def user_permissions(call: Call) -> Response:
    target = call.api.users.get(call.param("name"))
    if target is None:
        return not_found()
    return JSONResponse([permission_info(target, v) for v in sorted(call.broker.vhosts) if target.may_open(v)])


def permission_target(call: Call) -> tuple[str, User]:
    """(vhost, user) of a permission path; 404 unless both exist."""
    vhost, target = call.param("vhost"), call.api.users.get(call.param("user"))
    if target is None or vhost not in call.broker.vhosts:
        raise Refused(not_found())
    return vhost, target


def patterns(spec: dict[str, Any], keys: tuple[str, ...]) -> dict[str, str]:
    """The regular expressions of a permission body, all of ``keys``."""
    missing = [key for key in keys if not isinstance(spec.get(key), str)]
    if missing:
        raise Refused(bad_request(f"missing or not a string: {', '.join(missing)}"))
    for key in keys:
        problem = valid_pattern(spec[key])
        if problem is not None:
            raise Refused(bad_request(f"{key}: invalid regular expression {spec[key]!r}: {problem}"))
    return {key: spec[key] for key in keys}


async def show_permission(call: Call) -> Response:
    vhost, target = permission_target(call)
    return JSONResponse(permission_info(target, vhost)) if target.may_open(vhost) else not_found()


async def put_permission(call: Call) -> Response:
    spec = await call.body()
    vhost, target = permission_target(call)
    given = patterns(spec, ("configure", "write", "read"))
    return await call.api.change_user(target.granted(vhost, Permission(**given)),
                                      204 if target.may_open(vhost) else 201)


async def delete_permission(call: Call) -> Response:
    vhost, target = permission_target(call)
    if not target.may_open(vhost):
        return not_found()
    return await call.api.change_user(target.revoked(vhost, sorted(call.broker.vhosts)), 204)


def topic_permission_info(user: User, topic: TopicPermission) -> dict[str, Any]:
    return {"user": user.name, **attrs.asdict(topic)}


async def list_topic_permissions(call: Call) -> Response:
    return JSONResponse([topic_permission_info(u, t) for u in call.api.users for t in u.topic_permissions])


async def show_topic_permissions(call: Call) -> Response:
    vhost, target = permission_target(call)
    shown = [t for t in target.topic_permissions if t.vhost == vhost]
    return JSONResponse([topic_permission_info(target, t) for t in shown]) if shown else not_found()


async def put_topic_permission(call: Call) -> Response:
    spec = await call.body()
    vhost, target = permission_target(call)
    given = patterns(spec, ("exchange", "write", "read"))
    return await call.api.change_user(target.with_topic_permission(TopicPermission(vhost, **given)), 204)


async def delete_topic_permission(call: Call) -> Response:
    vhost, target = permission_target(call)
    if not any(t.vhost == vhost for t in target.topic_permissions):
        return not_found()
    return await call.api.change_user(target.without_topic_permissions(vhost), 204)


def limit_value(spec: dict[str, Any], name: str, known: tuple[str, ...]) -> int:
    if name not in known:
        raise Refused(bad_request(f"unknown limit {name!r} (known: {', '.join(known)})"))
    value = spec.get("value")
    if isinstance(value, bool) or not isinstance(value, int):
        raise Refused(bad_request('"value" must be an integer (negative: no limit)'))
    return value


async def user_limits(call: Call) -> Response:
    name = call.optional("user")
    wanted = call.api.users.get(name) if name is not None else None
    if name is not None and wanted is None:
        return not_found()
    return JSONResponse([{"user": u.name, "value": dict(u.limits)} for u in call.api.users
                         if u.limits and (wanted is None or u is wanted)])


async def put_user_limit(call: Call) -> Response:
    spec = await call.body()
    target, name = call.api.users.get(call.param("user")), call.param("name")
    if target is None:
        return not_found()
    limits = {**target.limits, name: limit_value(spec, name, USER_LIMITS)}
    return await call.api.change_user(attrs.evolve(target, limits=limits), 204)


async def delete_user_limit(call: Call) -> Response:
    target, name = call.api.users.get(call.param("user")), call.param("name")
    if target is None:
        return not_found()
    limits = {k: v for k, v in target.limits.items() if k != name}
    return await call.api.change_user(attrs.evolve(target, limits=limits), 204)
