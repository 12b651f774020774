"""Kafka clients' connections in the management API: listed in
/api/connections beside AMQP's (protocol "Kafka", user, peer, client id)
and closed by an administrator with DELETE /api/connections/{name}."""

from __future__ import annotations

import socket
import time
from typing import Any, Iterator

import pytest
from kafka import KafkaConsumer

from kafka_support import ManagedKafkaServerThread, start_managed_kafka

USERS = {"guest": {"password": "guest", "tags": ["administrator"]}, "app": {"password": "pw", "tags": ["management"]}}


@pytest.fixture(scope="module")
def server() -> Iterator[ManagedKafkaServerThread]:
    server = start_managed_kafka(users=USERS)
    yield server
    server.stop()


def _kafka(server: ManagedKafkaServerThread, client_id: str) -> KafkaConsumer:
    consumer = KafkaConsumer(bootstrap_servers=server.bootstrap, client_id=client_id, security_protocol="SASL_PLAINTEXT",
                             sasl_mechanism="PLAIN", sasl_plain_username="app", sasl_plain_password="pw")
    consumer.topics()  # connected and logged in
    return consumer


def _kafka_rows(server: ManagedKafkaServerThread, user: str = "guest", password: str = "guest") -> list[dict[str, Any]]:
    with server.http(user, password) as http:
        return [row for row in http.get("/api/connections").json() if row["protocol"] == "Kafka"]


def _until(condition: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return found


def test_kafka_connections_are_listed_with_their_user_peer_and_client_id(server: ManagedKafkaServerThread) -> None:
    stranger = socket.create_connection(("127.0.0.1", server.kafka_port))  # not logged in: not listed
    amqp = server.connect()
    consumer = _kafka(server, "billing-reader")
    try:
        rows = _until(lambda: [row for row in _kafka_rows(server) if row["client_id"] == "billing-reader"])
        assert len(rows) >= 1
        row = rows[0]
        assert row["user"] == "app" and row["vhost"] == "/" and row["auth_mechanism"] == "PLAIN"
        assert row["peer_host"] == "127.0.0.1" and row["name"] == f"127.0.0.1:{row['peer_port']}"
        assert row["user_provided_name"] == "billing-reader" and row["requests"] >= 3
        assert all(r["client_id"] is not None for r in _kafka_rows(server))  # the silent socket is not there
        with server.http() as http:
            everyone = http.get("/api/connections").json()
            assert {"AMQP 0-9-1", "Kafka"} <= {r["protocol"] for r in everyone}
            assert http.get(f"/api/connections/{row['name']}").json()["client_id"] == "billing-reader"
            assert http.get("/api/overview").json()["object_totals"]["connections"] == len(everyone)
        # A user who is not an administrator or monitor sees their own only.
        assert {r["user"] for r in _kafka_rows(server, "app", "pw")} == {"app"}
        with server.http("app", "pw") as http:
            assert all(r["user"] == "app" for r in http.get("/api/connections").json())
    finally:
        consumer.close()
        amqp.close()
        stranger.close()


def test_an_administrator_closes_a_kafka_connection(server: ManagedKafkaServerThread) -> None:
    consumer = _kafka(server, "to-close")
    try:
        row = _until(lambda: [r for r in _kafka_rows(server) if r["client_id"] == "to-close"])[0]
        with server.http() as http:
            closed = http.delete(f"/api/connections/{row['name']}", headers={"X-Reason": "maintenance"})
            assert closed.status_code == 204
            assert http.delete("/api/connections/127.0.0.1:1").status_code == 404
            _until(lambda: row["name"] not in {r["name"] for r in _kafka_rows(server)})
            assert http.delete(f"/api/connections/{row['name']}").status_code == 404
        # The client reconnects on its next request, as after a broker's idle close.
        assert consumer.topics() is not None
        _until(lambda: any(r["client_id"] == "to-close" and r["name"] != row["name"] for r in _kafka_rows(server)))
    finally:
        consumer.close()
