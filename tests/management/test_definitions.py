"""Users, permissions, vhosts and definitions through the API: durable in
the data directory, and RabbitMQ's definitions format both ways, checked
against the reference RabbitMQ."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
import pika
import pytest

from amqlite.config import Settings

from .conftest import ManagedServerThread, USERS
from .test_differential import NO_REFERENCE, REFERENCE, _reference_up


def restarted(server: ManagedServerThread, **settings: object) -> ManagedServerThread:
    """The same data directory served again, after a clean stop."""
    data_dir = server.settings.data_dir
    server.owned_dir, owned = None, server.owned_dir  # stop() would delete the directory
    server.stop()
    again = ManagedServerThread(Settings(host="127.0.0.1", port=0, data_dir=data_dir, users=USERS,
                                         vhosts={"/": {}, "other": {}}, management_port=0, prometheus_port=0, kafka_port=0,
                                         **settings))  # type: ignore[arg-type]
    again.owned_dir = owned
    again.start()
    return again


def test_users_permissions_and_vhosts_survive_a_restart(managed: ManagedServerThread) -> None:
    http = managed.http()
    assert http.put("/api/vhosts/jobs").status_code == 201
    assert http.put("/api/vhosts/jobs").status_code == 204
    assert http.put("/api/users/carol", json={"password": "s3cret", "tags": "management"}).status_code == 201
    assert http.put("/api/permissions/jobs/carol", json={"configure": "^in-", "write": ".*", "read": ".*"}
                    ).status_code == 201
    assert http.put("/api/permissions/jobs/carol", json={"configure": "^in-"}).status_code == 400
    assert http.put("/api/permissions/jobs/carol", json={"configure": "(", "write": "", "read": ""}
                    ).status_code == 400
    assert http.put("/api/topic-permissions/jobs/carol", json={"exchange": "amq.topic", "write": "^carol\\.",
                                                                "read": ".*"}).status_code == 204
    assert http.put("/api/users/bob", json={"password": "x", "tags": ""}).status_code == 201
    assert http.delete("/api/users/bob").status_code == 204
    assert http.delete("/api/users/monitor").status_code == 204  # defined in the config file
    assert managed.http("monitor", "monitor").get("/api/whoami").status_code == 401
    assert managed.http("carol", "nope").get("/api/whoami").status_code == 401

    server = restarted(managed)
    try:
        carol = server.http("carol", "s3cret")
        assert carol.get("/api/whoami").json() == {"name": "carol", "tags": ["management"]}
        assert [v["name"] for v in carol.get("/api/vhosts").json()] == ["jobs"]
        names = [u["name"] for u in server.http().get("/api/users").json()]
        assert "carol" in names and "bob" not in names and "monitor" not in names  # the API's deletion holds
        connection = pika.BlockingConnection(pika.ConnectionParameters(
            "127.0.0.1", server.port, "jobs", pika.PlainCredentials("carol", "s3cret")))
        connection.channel().queue_declare("in-jobs")
        with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="access to queue 'out-jobs'"):
            connection.channel().queue_declare("out-jobs")
        connection.close()
        assert server.http().get("/api/permissions/jobs/carol").json() == {
            "user": "carol", "vhost": "jobs", "configure": "^in-", "write": ".*", "read": ".*"}
        assert server.http().get("/api/topic-permissions/jobs/carol").json() == [
            {"user": "carol", "vhost": "jobs", "exchange": "amq.topic", "write": "^carol\\.", "read": ".*"}]
        exported = server.http().get("/api/definitions").json()
        assert {"user": "carol", "vhost": "jobs", "configure": "^in-", "write": ".*", "read": ".*"} in exported[
            "permissions"]
        assert exported["topic_permissions"] == [
            {"user": "carol", "vhost": "jobs", "exchange": "amq.topic", "write": "^carol\\.", "read": ".*"}]
        assert server.http().delete("/api/permissions/jobs/carol").status_code == 204
        assert carol.get("/api/vhosts").json() == []
        assert server.http().delete("/api/vhosts/jobs").status_code == 204
        assert server.http().get("/api/vhosts/jobs").status_code == 404
    finally:
        server.stop()


def test_only_administrators_manage_users(managed: ManagedServerThread) -> None:
    response = managed.http("monitor", "pw").get("/api/users")
    assert (response.status_code, response.json()["reason"]) == (401, "Not administrator user")
    assert managed.http().put("/api/users/dave", json={"tags": "management"}).status_code == 201  # no password...
    assert managed.http("dave", "").get("/api/whoami").status_code == 401  # ...so no password logs in


def test_export_then_import_restores_the_topology(managed: ManagedServerThread, tmp_path: Path) -> None:
    http = managed.http()
    http.put("/api/exchanges/%2F/orders", json={"type": "topic", "durable": True})
    http.put("/api/queues/%2F/paid", json={"durable": True, "arguments": {"x-max-length": 10}})
    http.post("/api/bindings/%2F/e/orders/q/paid", json={"routing_key": "order.paid", "arguments": {}})
    http.put("/api/users/erin", json={"password": "pw2", "tags": ["monitoring"]})
    http.put("/api/permissions/%2F/erin", json={"configure": ".*", "write": ".*", "read": ".*"})
    exported = http.get("/api/definitions").json()
    assert {"name": "orders", "vhost": "/", "type": "topic", "durable": True, "auto_delete": False,
            "internal": False, "arguments": {}} in exported["exchanges"]
    assert {"source": "orders", "vhost": "/", "destination": "paid", "destination_type": "queue",
            "routing_key": "order.paid", "arguments": {}} in exported["bindings"]
    assert {"user": "erin", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"} in exported["permissions"]
    path = tmp_path / "defs.json"
    path.write_text(json.dumps(exported))

    http.delete("/api/exchanges/%2F/orders")
    http.delete("/api/queues/%2F/paid")
    http.delete("/api/users/erin")
    assert http.post("/api/definitions", content=path.read_bytes(), headers={"content-type": "application/json"}).status_code == 204
    assert http.get("/api/definitions").json()["bindings"] == exported["bindings"]
    assert managed.http("erin", "pw2").get("/api/whoami").status_code == 200
    response = http.post("/api/definitions", json={"queues": [{"name": "x", "vhost": "nowhere"}]})
    assert (response.status_code, response.json()["reason"]) == (400, "queue 'x': vhost 'nowhere' does not exist")

    # The same file at boot (--definitions): imported again at every start.
    http.delete("/api/queues/%2F/paid")
    server = restarted(managed, definitions=str(path))
    try:
        assert server.http().get("/api/queues/%2F/paid").json()["arguments"] == {"x-max-length": 10}
    finally:
        server.stop()


@pytest.mark.skipif(not _reference_up(), reason=NO_REFERENCE)
def test_definitions_move_between_amqlite_and_rabbitmq(managed: ManagedServerThread) -> None:
    # The way out to a RabbitMQ cluster: an amqlite export imports into
    # RabbitMQ unchanged, logins included, and back.
    tag = uuid.uuid4().hex[:8]
    vhost = f"mig-{tag}"
    ours = managed.http()
    ours.put(f"/api/vhosts/{vhost}")
    ours.put(f"/api/users/u-{tag}", json={"password": "pw", "tags": "management"})
    ours.put(f"/api/permissions/{vhost}/u-{tag}", json={"configure": ".*", "write": ".*", "read": ".*"})
    ours.put(f"/api/exchanges/{vhost}/events", json={"type": "fanout", "durable": True})
    ours.put(f"/api/queues/{vhost}/audit", json={"durable": True, "arguments": {"x-message-ttl": 60000}})
    ours.post(f"/api/bindings/{vhost}/e/events/q/audit", json={"routing_key": "", "arguments": {}})
    exported = ours.get("/api/definitions").json()
    mine = {**exported, "users": [u for u in exported["users"] if u["name"] == f"u-{tag}"],
            "permissions": [p for p in exported["permissions"] if p["user"] == f"u-{tag}"]}
    with httpx.Client(base_url=REFERENCE, auth=("guest", "guest"), timeout=20) as reference:
        try:
            assert reference.post("/api/definitions", json=mine).status_code in (201, 204)
            theirs = reference.get("/api/definitions").json()
            assert [q for q in theirs["queues"] if q["vhost"] == vhost] == \
                [q for q in exported["queues"] if q["vhost"] == vhost]
            # The exported password hash logs in to RabbitMQ over AMQP.
            connection = pika.BlockingConnection(pika.ConnectionParameters(
                "127.0.0.1", 5672, vhost, pika.PlainCredentials(f"u-{tag}", "pw")))
            channel = connection.channel()
            channel.confirm_delivery()  # routed once confirmed: the count below is RabbitMQ's queue's, not in flight
            channel.basic_publish("events", "", b"via rabbitmq")
            assert channel.queue_declare("audit", passive=True).method.message_count == 1
            connection.close()
            # And RabbitMQ's export of that vhost imports into amqlite.
            per_vhost = reference.get(f"/api/definitions/{vhost}").json()
            ours.delete(f"/api/vhosts/{vhost}")
            ours.put(f"/api/vhosts/{vhost}")
            assert ours.post(f"/api/definitions/{vhost}", json=per_vhost).status_code == 204
            assert ours.get(f"/api/queues/{vhost}/audit").json()["arguments"] == {"x-message-ttl": 60000}
            assert ours.get(f"/api/exchanges/{vhost}/events/bindings/source").json()[0]["destination"] == "audit"
        finally:
            reference.delete(f"/api/vhosts/{vhost}")
            reference.delete(f"/api/users/u-{tag}")
