"""The same API scenario against amqlite and the reference RabbitMQ's
management plugin (127.0.0.1:15672, enabled by .ci/run): status codes and
bodies must match."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from reference import rabbitmq_available

from .conftest import ManagedServerThread

REFERENCE = "http://127.0.0.1:15672"


def _reference_up() -> bool:
    if not rabbitmq_available():
        return False
    try:
        return httpx.get(f"{REFERENCE}/api/whoami", auth=("guest", "guest"), timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


NO_REFERENCE = "RabbitMQ's management API is not on 127.0.0.1:15672, or the broker is unhealthy"
pytestmark = pytest.mark.skipif(not _reference_up(), reason=NO_REFERENCE)

#: RabbitMQ fills a new queue's counts only at its next stats emission
#: (every 5 s), so counts are compared by tests of their own, not here.
QUEUE_FIELDS = ("name", "vhost", "durable", "auto_delete", "exclusive", "arguments")


def scenario(base_url: str, queue: str) -> list[Any]:
    path = f"/api/queues/%2F/{queue}"
    seen: list[Any] = []
    with httpx.Client(base_url=base_url, auth=("guest", "guest"), timeout=10) as http:
        def step(response: httpx.Response, fields: tuple[str, ...] = ()) -> None:
            body = response.json() if response.content else None
            if fields:
                assert isinstance(body, dict)
                body = {field: body[field] for field in fields}
            elif isinstance(body, dict) and "reason" in body:
                body = {**body, "reason": body["reason"].replace(queue, "Q")}
            seen.append((response.request.method, response.request.url.path.replace(queue, "Q"),
                         response.status_code, body))

        step(http.get("/api/overview", auth=None))
        step(http.get("/api/overview", auth=("guest", "wrong")))
        step(http.get("/api/whoami"))
        step(http.get(path))
        step(http.put(path, json={"durable": True, "arguments": {"x-max-length": 5}}))
        step(http.put(path, json={"durable": True, "arguments": {"x-max-length": 5}}))
        step(http.put(path, json={"durable": True, "arguments": {"x-max-length": 6}}))
        step(http.put(path, content=b"[bad", headers={"content-type": "application/json"}))
        step(http.get(path), QUEUE_FIELDS)
        exchange = f"/api/exchanges/%2F/{queue}.x"
        step(http.put(exchange, json={"type": "topic", "durable": True}))
        step(http.put(exchange, json={"type": "topic", "durable": True}))
        step(http.put(exchange, json={"type": "fanout", "durable": True}))
        step(http.get(exchange), ("name", "vhost", "type", "durable", "auto_delete", "internal", "arguments"))
        binding = f"/api/bindings/%2F/e/{queue}.x/q/{queue}"
        step(http.post(binding, json={"routing_key": "a.*", "arguments": {}}))
        step(http.post(binding, json={"routing_key": "", "arguments": {}}))
        step(http.get(binding))
        step(http.get(f"{path}/bindings"))
        step(http.get(f"{exchange}/bindings/source"))
        step(http.post(f"{exchange}/publish", json={"routing_key": "a.b", "payload": "one", "payload_encoding": "string",
                                                    "properties": {"delivery_mode": 2, "headers": {"h": 1}}}))
        step(http.post(f"{exchange}/publish", json={"routing_key": "b.b", "payload": "bm8=",
                                                    "payload_encoding": "base64", "properties": {}}))
        step(http.post("/api/exchanges/%2F/amq.default/publish",
                       json={"routing_key": queue, "payload": "two", "payload_encoding": "string", "properties": {}}))
        step(http.post(f"{path}/get", json={"count": 5, "ackmode": "ack_requeue_true", "encoding": "auto"}))
        step(http.post(f"{path}/get", json={"count": 1, "ackmode": "ack_requeue_false", "encoding": "base64"}))
        step(http.post(f"{path}/get", json={"count": 5, "ackmode": "ack_requeue_false", "encoding": "auto"}))
        step(http.delete(f"{binding}/a.%2A"))
        step(http.delete(f"{binding}/~"))
        step(http.delete(f"{binding}/~"))
        step(http.get(binding))
        step(http.delete(exchange))
        step(http.delete(exchange))
        step(http.delete(f"{path}/contents"))
        step(http.delete(path))
        step(http.delete(path))
        step(http.get("/api/exchanges/%2F/amq.direct"), ("name", "vhost", "type", "durable", "auto_delete", "internal"))
        vhost, user = f"/api/vhosts/{queue}-vh", f"/api/users/{queue}-user"
        step(http.put(vhost))
        step(http.put(vhost))
        step(http.put(user, json={"password": "pw", "tags": "monitoring"}))
        step(http.put(user, json={"password": "pw2", "tags": "management,policymaker"}))
        step(http.get(user), ("name", "tags", "hashing_algorithm"))
        permission = f"/api/permissions/{queue}-vh/{queue}-user"
        step(http.get(permission))
        step(http.put(permission, json={"configure": ".*", "write": ".*", "read": ".*"}))
        step(http.put(permission, json={"configure": ".*", "write": ".*", "read": ".*"}))
        step(http.get(permission))
        step(http.delete(permission))
        step(http.get(permission))
        step(http.put("/api/users/{queue}-nopass".replace("{queue}", queue), json={"tags": ""}))
        step(http.delete(user))
        step(http.delete(user))
        step(http.delete(vhost))
        step(http.delete(vhost))
        step(http.get("/api/health/checks/alarms"))
        step(http.get("/api/aliveness-test/%2F"))
    return seen


def test_api_answers_as_rabbitmq_does(managed: ManagedServerThread) -> None:
    queue = f"diff-{uuid.uuid4().hex[:8]}"
    ours = scenario(f"http://127.0.0.1:{managed.management_port}", queue)
    theirs = scenario(REFERENCE, queue)
    for mine, reference in zip(ours, theirs):
        assert mine == reference
    assert len(ours) == len(theirs)
