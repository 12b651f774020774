"""Issue 21 items 1-6: what a management user may do through the API is
what the same user may do over AMQP, message properties are checked at every
entry, and requests are bounded and JSON."""

from __future__ import annotations

import json
import time
from typing import Iterator

import httpx
import pytest
from structlog.testing import capture_logs

from amqlite.amqp.properties import InvalidProperty
from amqlite.core.message import Message, Properties
from amqlite.embedded import open_broker

from .conftest import ManagedServerThread

PUBLISH = {"routing_key": "jobs", "payload": "x", "payload_encoding": "string"}


def depth(http: httpx.Client, queue: str) -> int:
    """The queue's message count, as the API reports it."""
    count = http.get(f"/api/queues/%2F/{queue}").json()["messages"]
    assert isinstance(count, int)
    return count


def add_user(http: httpx.Client, name: str, tags: str, **permission: str) -> None:
    assert http.put(f"/api/users/{name}", json={"password": "pw", "tags": tags}).status_code == 201
    if permission:
        assert http.put(f"/api/permissions/%2F/{name}", json=permission).status_code == 201


def test_get_needs_read_permission(managed: ManagedServerThread) -> None:
    http = managed.http()
    http.put("/api/queues/%2F/jobs", json={})
    for _ in range(3):
        http.post("/api/exchanges/%2F/amq.default/publish", json={"properties": {}, **PUBLISH})
    add_user(http, "reader", "management", configure=".*", write=".*", read="^$")
    taken = managed.http("reader", "pw").post(
        "/api/queues/%2F/jobs/get", json={"count": 5, "ackmode": "ack_requeue_false", "encoding": "auto"})
    assert (taken.status_code, taken.json()["error"]) == (401, "not_authorised")
    assert "ACCESS_REFUSED - access to queue 'jobs'" in taken.json()["reason"]
    assert depth(http, "jobs") == 3


def test_publish_refuses_another_users_user_id(managed: ManagedServerThread) -> None:
    http = managed.http()
    http.put("/api/queues/%2F/jobs", json={})
    forged = http.post("/api/exchanges/%2F/amq.default/publish", json={"properties": {"user_id": "bob"}, **PUBLISH})
    assert (forged.status_code, forged.json()) == (400, {
        "error": "bad_request",
        "reason": "406 PRECONDITION_FAILED - user_id property set to 'bob' but authenticated user was 'guest'"})
    own = http.post("/api/exchanges/%2F/amq.default/publish", json={"properties": {"user_id": "guest"}, **PUBLISH})
    assert own.json() == {"routed": True}
    assert depth(http, "jobs") == 1


def test_monitoring_user_cannot_close_another_users_connection(managed: ManagedServerThread) -> None:
    client = managed.connect()
    http = managed.http()
    deadline = time.monotonic() + 10
    while not (listed := http.get("/api/connections").json()) and time.monotonic() < deadline:
        time.sleep(0.05)
    name = listed[0]["name"]
    refused = managed.http("monitor", "pw").delete(f"/api/connections/{name}")
    assert (refused.status_code, refused.json()["error"]) == (401, "not_authorised")
    assert client.is_open
    client.process_data_events(0)
    assert client.is_open
    assert managed.http("monitor", "pw").get(f"/api/connections/{name}").status_code == 200
    client.close()


@pytest.mark.parametrize("properties, reason", [
    ({"priority": "high"}, ["not_int", "priority"]),
    ({"priority": True}, ["not_int", "priority"]),
    ({"delivery_mode": "2"}, ["not_int", "delivery_mode"]),
    ({"timestamp": 1.5}, ["not_int", "timestamp"]),
    ({"correlation_id": 5}, ["not_string", "correlation_id"]),
    ({"headers": 5}, ["not_table", "headers"]),
    ({"priority": 300}, ["out_of_range", "priority"]),
    ({"content_type": "x" * 256}, ["too_long", "content_type"]),
])
def test_publish_with_badly_typed_properties_is_400_and_stores_nothing(
        managed: ManagedServerThread, properties: dict[str, object], reason: list[str]) -> None:
    http = managed.http()
    http.put("/api/queues/%2F/jobs", json={})
    response = http.post("/api/exchanges/%2F/amq.default/publish", json={"properties": properties, **PUBLISH})
    assert (response.status_code, response.json()) == (400, {"error": "bad_request", "reason": reason})
    assert depth(http, "jobs") == 0


def test_publish_ignores_unknown_properties_as_rabbitmq_does(managed: ManagedServerThread) -> None:
    http = managed.http()
    http.put("/api/queues/%2F/jobs", json={})
    response = http.post("/api/exchanges/%2F/amq.default/publish",
                         json={"properties": {"bogus": 3, "priority": 4}, **PUBLISH})
    assert response.json() == {"routed": True}
    got = http.post("/api/queues/%2F/jobs/get", json={"count": 1, "ackmode": "ack_requeue_false", "encoding": "auto"})
    assert got.json()[0]["properties"] == {"priority": 4}


async def test_embedded_publish_refuses_properties_with_no_encoding() -> None:
    async with open_broker() as broker:
        channel = await broker.channel()
        await channel.queue_declare("jobs")
        with pytest.raises(InvalidProperty) as refused:
            await channel.publish(b"x", routing_key="jobs", properties=Properties(priority="high"))  # type: ignore[arg-type]
        assert (refused.value.reason, refused.value.field) == ("not_int", "priority")
        with pytest.raises(InvalidProperty):
            await channel.publish(b"x", routing_key="jobs", properties=Properties(headers={"a": object()}))
        # The channel carries on, and nothing was stored.
        await channel.publish(b"ok", routing_key="jobs", properties=Properties(priority=3))
        assert (await channel.queue_declare("jobs", passive=True)).message_count == 1


def test_a_stored_message_that_cannot_be_encoded_is_dead_lettered_not_fatal(managed: ManagedServerThread) -> None:
    """The second line of defence: a message with unencodable properties
    already in a queue (stored before entries checked them) goes to the
    dead-letter exchange, and the consumer's connection carries on."""
    client = managed.connect()
    channel = client.channel()
    channel.exchange_declare("dlx", "fanout")
    channel.queue_declare("dead")
    channel.queue_bind("dead", "dlx")
    channel.queue_declare("work", arguments={"x-dead-letter-exchange": "dlx"})

    def poison() -> None:
        assert managed.server is not None
        core = managed.server.core
        bad = Message("", "work", Properties(priority="high"), b"poison")  # type: ignore[arg-type]
        core.vhosts["/"].publish("", bad, False, managed.server.clock.now())

    managed.call(poison)
    channel.basic_publish("", "work", b"fine")
    received: list[bytes] = []
    channel.basic_consume("work", lambda ch, method, props, body: (received.append(body),
                                                                   ch.basic_ack(method.delivery_tag)))
    deadline = time.monotonic() + 10
    while not received and time.monotonic() < deadline:
        client.process_data_events(0.05)
    assert received == [b"fine"]
    assert client.is_open
    assert channel.queue_declare("work", passive=True).method.message_count == 0
    assert channel.queue_declare("dead", passive=True).method.message_count == 1
    client.close()


@pytest.mark.parametrize("taken", ["consumed", "got"])
def test_a_stored_message_that_cannot_be_encoded_is_dropped_with_a_log_line_where_it_cannot_be_dead_lettered(
        managed: ManagedServerThread, taken: str) -> None:
    """With no dead-letter exchange, on basic.get as on basic.deliver: the
    poison goes, said once in the log, the connection carries on and the
    next message comes."""
    client = managed.connect()
    channel = client.channel()
    queue = f"work-{taken}"
    channel.queue_declare(queue)

    def poison() -> None:
        assert managed.server is not None
        bad = Message("", queue, Properties(priority="high"), b"poison")  # type: ignore[arg-type]
        managed.server.core.vhosts["/"].publish("", bad, False, managed.server.clock.now())

    managed.call(poison)
    channel.basic_publish("", queue, b"fine")
    received: list[bytes] = []
    with capture_logs() as logs:
        if taken == "got":
            assert channel.basic_get(queue) == (None, None, None)  # basic.get-empty in its place
            received.append(channel.basic_get(queue, auto_ack=True)[2])
        else:
            channel.basic_consume(queue, lambda ch, method, props, body: (received.append(body),
                                                                          ch.basic_ack(method.delivery_tag)))
            deadline = time.monotonic() + 10
            while not received and time.monotonic() < deadline:
                client.process_data_events(0.05)
    assert received == [b"fine"]
    assert client.is_open
    assert channel.queue_declare(queue, passive=True).method.message_count == 0
    dropped = [entry for entry in logs if entry["event"] == "delivery.unencodable"]
    assert len(dropped) == 1 and dropped[0]["routing_key"] == queue and dropped[0]["log_level"] == "error"
    client.close()


def test_non_json_bodies_are_415_and_change_nothing(managed: ManagedServerThread) -> None:
    http = managed.http()
    admin = json.dumps({"users": [{"name": "mallory", "password": "pw", "tags": "administrator"}]})
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        response = http.post("/api/definitions", content=admin, headers={"content-type": content_type})
        assert response.status_code == 415, content_type
    # No Content-Type at all (a Blob posted by a script of another site) is no better.
    request = http.build_request("POST", "/api/definitions", content=admin)
    assert "content-type" not in request.headers
    assert http.send(request).status_code == 415
    assert http.get("/api/users/mallory").status_code == 404
    form = http.post("/api/exchanges/%2F/amq.default/publish", content="x", headers={"content-type": "text/plain"})
    assert form.status_code == 415
    assert http.post("/api/definitions", content=admin,
                     headers={"content-type": "application/json; charset=utf-8"}).status_code == 204
    # A body-less PUT (curl -X PUT) needs no Content-Type.
    assert http.put("/api/vhosts/plain").status_code == 201


def test_responses_carry_the_security_headers(managed: ManagedServerThread) -> None:
    http = managed.http()
    for path in ("/", "/app.js", "/api/overview", "/api/nowhere"):
        headers = http.get(path).headers
        assert headers["x-frame-options"] == "DENY", path
        assert headers["x-content-type-options"] == "nosniff", path
        assert "frame-ancestors 'none'" in headers["content-security-policy"], path
        assert "default-src 'self'" in headers["content-security-policy"], path


def test_a_body_over_the_limit_is_refused_without_being_read(managed: ManagedServerThread) -> None:
    from amqlite.management.api import MAX_BODY
    http = managed.http()
    declared = http.post("/api/definitions", content=b" " * (MAX_BODY + 1), headers={"content-type": "application/json"})
    assert declared.status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: sent chunked
        for _ in range(MAX_BODY // 65536 + 200):
            yield b" " * 65536

    streamed = http.post("/api/definitions", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    assert http.get("/api/overview").status_code == 200


@pytest.mark.parametrize("path", ["/api/queues/", "/api/exchanges/", "/api/overview/", "/api/queues/%2F/"])
def test_a_trailing_slash_answers_as_without(managed: ManagedServerThread, path: str) -> None:
    http = managed.http()
    with_slash, without = http.get(path), http.get(path.rstrip("/"))
    assert with_slash.status_code == 200
    assert type(with_slash.json()) is type(without.json())
    if isinstance(without.json(), list):
        assert with_slash.json() == without.json()
