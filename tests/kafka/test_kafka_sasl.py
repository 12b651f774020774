"""SASL PLAIN and SCRAM-SHA-256/512 against amqlite's users, through
kafka-python, confluent-kafka and aiokafka, and the rules at the engine."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any, Iterator

import pytest
from aiokafka import AIOKafkaConsumer
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from kafka import KafkaConsumer
from kafka.errors import KafkaError
from kio.schema.errors import ErrorCode
from structlog.testing import capture_logs

from amqlite.auth import FAILED_LOGIN_MEMORY, FailedLogins, User, Users, hash_password, scram_credential
from amqlite.config import Settings
from amqlite.kafka.engine import IDLE_TIMEOUT
from kafka_support import (KafkaServerThread, decode_response, engine, request, request_frame, split_responses, start_kafka,
                           start_managed_kafka)

USERS = {
    "app": {"password": "s3cret", "tags": []},
    "hashed": {"password_hash": hash_password("pw"), "tags": []},
    "elsewhere": {"password": "pw", "vhosts": ["other"]},
}
MECHANISMS = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


@pytest.fixture(scope="module")
def sasl_server() -> Iterator[KafkaServerThread]:
    server = start_kafka(users=USERS, vhosts=["/", "other"], kafka_allow_anonymous=False)
    yield server
    server.stop()


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_kafka_python_logs_in(sasl_server: KafkaServerThread, mechanism: str) -> None:
    consumer = KafkaConsumer(bootstrap_servers=sasl_server.bootstrap, security_protocol="SASL_PLAINTEXT",
                             sasl_mechanism=mechanism, sasl_plain_username="app", sasl_plain_password="s3cret")
    try:
        assert consumer.topics() == set()
    finally:
        consumer.close()


def _confluent(server: KafkaServerThread, mechanism: str, user: str, password: str, timeout: float = 10) -> Any:
    admin = AdminClient({"bootstrap.servers": server.bootstrap, "security.protocol": "SASL_PLAINTEXT",
                         "sasl.mechanism": mechanism, "sasl.username": user, "sasl.password": password})
    return admin.list_topics(timeout=timeout)


#: How long a login expected to fail is waited for: librdkafka hears the
#: refusal within milliseconds, then retries until the timeout.
REFUSED = 1.5


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_confluent_logs_in_and_a_wrong_password_is_refused(sasl_server: KafkaServerThread, mechanism: str) -> None:
    assert list(_confluent(sasl_server, mechanism, "app", "s3cret").brokers) == [0]
    with capture_logs() as logs, pytest.raises(KafkaException):
        _confluent(sasl_server, mechanism, "app", "wrong", REFUSED)
    refused = [entry for entry in logs if entry["event"] == "kafka.login_refused"]
    assert refused and refused[0]["user"] == "app" and refused[0]["reason"] == "bad password"
    assert not any("wrong" in str(value) for entry in logs for value in entry.values())


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
def test_aiokafka_logs_in(sasl_server: KafkaServerThread, mechanism: str) -> None:
    async def topics() -> set[str]:
        consumer = AIOKafkaConsumer(bootstrap_servers=sasl_server.bootstrap, security_protocol="SASL_PLAINTEXT",
                                    sasl_mechanism=mechanism, sasl_plain_username="app",
                                    sasl_plain_password="s3cret")
        await consumer.start()
        try:
            return set(await consumer.topics())
        finally:
            await consumer.stop()

    assert asyncio.run(topics()) == set()


def test_a_user_known_by_its_hash_only_uses_plain_not_scram(sasl_server: KafkaServerThread) -> None:
    assert list(_confluent(sasl_server, "PLAIN", "hashed", "pw").brokers) == [0]
    with capture_logs() as logs, pytest.raises(KafkaException):
        _confluent(sasl_server, "SCRAM-SHA-256", "hashed", "pw", REFUSED)
    assert any("no SCRAM credential" in entry.get("reason", "") for entry in logs)


def test_a_user_without_the_kafka_vhost_is_refused(sasl_server: KafkaServerThread) -> None:
    with capture_logs() as logs, pytest.raises(KafkaException):
        _confluent(sasl_server, "PLAIN", "elsewhere", "pw", REFUSED)
    assert any("no access to vhost /" in entry.get("reason", "") for entry in logs)


def test_without_anonymous_a_client_without_sasl_is_refused(sasl_server: KafkaServerThread) -> None:
    with pytest.raises(KafkaError):
        KafkaConsumer(bootstrap_servers=sasl_server.bootstrap, request_timeout_ms=3000, api_version_auto_timeout_ms=3000)


def _plain(conn: Any, user: str, password: str, now: float = 0.0) -> tuple[Any, Any]:
    """Handshake and PLAIN; a refusal is answered at its delay, when the
    engine's deadline comes."""
    conn.receive_data(request_frame(request(17, 1, mechanism="PLAIN"), 1), now)
    conn.receive_data(request_frame(request(36, 2, auth_bytes=f"\0{user}\0{password}".encode()), 2), now)
    out = conn.data_to_send(now)
    if not out:
        conn.tick(conn.next_deadline())
        out = conn.data_to_send(conn.next_deadline() or now)
    handshake, authenticate = split_responses(out)
    return decode_response(handshake, 17, 1)[1], decode_response(authenticate, 36, 2)[1]


def test_a_failed_login_is_answered_after_a_delay_that_grows_per_address() -> None:
    """Fails when a refusal is answered and closed at once: librdkafka then
    tries a bad password every 50 ms, as fast as the broker answers."""
    failed_logins = FailedLogins()

    def refused_at(now: float, address: str = "192.0.2.7") -> float:
        conn = engine(anonymous_user="", now=now)
        conn.session.failed_logins, conn.session.peer_address = failed_logins, address
        conn.receive_data(request_frame(request(17, 1, mechanism="PLAIN"), 1), now)
        conn.receive_data(request_frame(request(36, 2, auth_bytes=b"\0guest\0wrong"), 2), now)
        assert not conn.wants_write() and conn.data_to_send(now) == b"" and not conn.wants_read()
        assert not conn.closed
        deadline = conn.next_deadline()
        assert deadline is not None
        conn.tick(deadline - 0.01)
        assert not conn.wants_write()
        conn.tick(deadline)
        handshake, authenticate = split_responses(conn.data_to_send(deadline))
        assert decode_response(authenticate, 36, 2)[1].error_code == ErrorCode.sasl_authentication_failed
        assert conn.closed
        return deadline - now

    assert [refused_at(float(n)) for n in range(8)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0])
    assert refused_at(8.0, "192.0.2.8") == pytest.approx(0.1)  # another address
    assert refused_at(8.0 + FAILED_LOGIN_MEMORY) == pytest.approx(0.1)  # a minute without failures: forgiven
    conn = engine(anonymous_user="")
    conn.session.failed_logins = failed_logins
    _, result = _plain(conn, "guest", "guest")  # a good password is not held
    assert result.error_code == ErrorCode.none and conn.next_deadline() == IDLE_TIMEOUT


def test_plain_at_the_engine_and_the_handshake_pool() -> None:
    conn = engine(anonymous_user="")
    authenticated: list[bool] = []
    conn.on_authenticated = lambda: authenticated.append(True)
    handshake, result = _plain(conn, "guest", "guest")
    assert set(handshake.mechanisms) == set(MECHANISMS)
    assert result.error_code == ErrorCode.none and conn.session.user is not None
    assert authenticated == [True] and conn.next_deadline() == IDLE_TIMEOUT and not conn.closed


def test_guest_is_refused_from_afar_whatever_the_password() -> None:
    conn = engine(anonymous_user="")
    conn.session.peer_loopback = False
    _, result = _plain(conn, "guest", "guest")
    assert result.error_code == ErrorCode.sasl_authentication_failed and conn.closed


def test_an_unknown_mechanism_and_authenticate_before_handshake() -> None:
    conn = engine(anonymous_user="")
    conn.receive_data(request_frame(request(36, 2, auth_bytes=b"\0guest\0guest"), 1), 0.0)
    conn.receive_data(request_frame(request(17, 1, mechanism="GSSAPI"), 2), 0.0)
    first, second = split_responses(conn.data_to_send(0.0))
    assert decode_response(first, 36, 2)[1].error_code == ErrorCode.illegal_sasl_state
    assert decode_response(second, 17, 1)[1].error_code == ErrorCode.unsupported_sasl_mechanism
    assert conn.session.user is None


def test_scram_credentials_go_with_the_password_they_were_made_from() -> None:
    users = Users.from_settings(Settings(users={"app": {"password": "x"}, "hashed": {"password_hash": "aGFzaA=="}}))
    app = users.get("app")
    assert app is not None and set(app.scram) == {"sha256", "sha512"}
    assert users.scram_credential("app", "sha512") is app.scram["sha512"]
    assert users.scram_credential("hashed", "sha256") is None and users.scram_credential("nobody", "sha256") is None
    users.add(User("app", hash_password("changed")))  # a new hash without a clear password: no SCRAM left
    assert users.scram_credential("app", "sha256") is None


def _kafka_python_topics(server: KafkaServerThread, mechanism: str, user: str, password: str) -> set[str]:
    consumer = KafkaConsumer(bootstrap_servers=server.bootstrap, security_protocol="SASL_PLAINTEXT",
                             sasl_mechanism=mechanism, sasl_plain_username=user, sasl_plain_password=password)
    try:
        return set(consumer.topics())
    finally:
        consumer.close()


def test_a_user_made_through_the_management_api_logs_in_with_scram_across_a_restart(tmp_path: Path) -> None:
    """Fails when only config-file passwords give SCRAM credentials: the
    API's user was PLAIN-only, and so after a restart too."""
    server = start_managed_kafka(data_dir=str(tmp_path), kafka_allow_anonymous=False)
    try:
        with server.http() as http:
            assert http.put("/api/users/maker", json={"password": "m4ker", "tags": ""}).status_code == 201
            assert http.put("/api/permissions/%2F/maker",
                            json={"configure": ".*", "write": ".*", "read": ".*"}).status_code == 201
            assert http.put("/api/users/hashonly", json={"password_hash": hash_password("pw"),
                                                          "tags": ""}).status_code == 201
            assert http.put("/api/permissions/%2F/hashonly",
                            json={"configure": ".*", "write": ".*", "read": ".*"}).status_code == 201
            # Changing the tags alone keeps the password and so its credentials.
            assert http.put("/api/users/maker", json={"tags": "monitoring"}).status_code == 204
            exported = http.get("/api/definitions").json()
        assert list(_confluent(server, "SCRAM-SHA-512", "maker", "m4ker").brokers) == [0]
        assert _kafka_python_topics(server, "SCRAM-SHA-512", "maker", "m4ker") == set()
        with pytest.raises(KafkaException):
            _confluent(server, "SCRAM-SHA-512", "maker", "wrong", REFUSED)
        with pytest.raises(KafkaException):
            _confluent(server, "SCRAM-SHA-256", "hashonly", "pw", REFUSED)
        assert list(_confluent(server, "PLAIN", "hashonly", "pw").brokers) == [0]
    finally:
        server.stop()
    maker = next(user for user in exported["users"] if user["name"] == "maker")
    assert set(maker["scram"]) == {"sha256", "sha512"} and "m4ker" not in json.dumps(exported)
    assert "scram" not in next(user for user in exported["users"] if user["name"] == "hashonly")

    again = start_managed_kafka(data_dir=str(tmp_path), kafka_allow_anonymous=False)
    try:
        assert list(_confluent(again, "SCRAM-SHA-256", "maker", "m4ker").brokers) == [0]
        assert _kafka_python_topics(again, "SCRAM-SHA-512", "maker", "m4ker") == set()
    finally:
        again.stop()


def test_definitions_carry_scram_credentials_and_a_password_makes_new_ones(tmp_path: Path) -> None:
    server = start_managed_kafka(kafka_allow_anonymous=False)
    try:
        credential = scram_credential("exported", "sha512")
        definitions = {"users": [
            {"name": "moved", "password_hash": hash_password("exported"), "tags": "",
             "scram": {"sha512": credential.to_json()}},
            {"name": "fresh", "password": "n3w", "tags": ""},
        ], "permissions": [{"user": name, "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}
                           for name in ("moved", "fresh")]}
        with server.http() as http:
            assert http.post("/api/definitions", json=definitions).status_code in (200, 201, 204)
            bad = {"users": [{"name": "broken", "password": "x", "tags": "", "scram": {"sha256": {"salt": "x"}}}]}
            refused = http.post("/api/definitions", json=bad)
            assert refused.status_code == 400 and "scram" in refused.text
        assert list(_confluent(server, "SCRAM-SHA-512", "moved", "exported").brokers) == [0]
        assert list(_confluent(server, "SCRAM-SHA-256", "fresh", "n3w").brokers) == [0]
    finally:
        server.stop()


def test_librdkafka_retrying_a_bad_password_is_slowed() -> None:
    """librdkafka retries a refused login about every 50 ms (40 tries in
    2 s when answered at once); answers after 0.1, 0.2, 0.4, 0.8 s ... let
    it try a handful of times."""
    server = start_kafka(users=USERS, kafka_allow_anonymous=False)
    try:
        with capture_logs() as logs, pytest.raises(KafkaException):
            _confluent(server, "SCRAM-SHA-512", "app", "wrong", 2.0)
    finally:
        server.stop()
    tries = [entry for entry in logs if entry["event"] == "kafka.login_refused"]
    assert 1 <= len(tries) <= 6


def test_a_user_added_with_ctl_logs_in_with_scram(monkeypatch: pytest.MonkeyPatch) -> None:
    from amqlite import ctl

    server = start_managed_kafka(kafka_allow_anonymous=False)
    try:
        monkeypatch.setattr("sys.stdin", io.StringIO("c7l-pw\n"))
        out = io.StringIO()
        url = f"http://guest:guest@127.0.0.1:{server.management_port}"
        assert ctl.main(["--url", url, "add-user", "ops"], out=out) == 0, out.getvalue()
        with server.http() as http:
            assert http.put("/api/permissions/%2F/ops",
                            json={"configure": ".*", "write": ".*", "read": ".*"}).status_code == 201
        assert list(_confluent(server, "SCRAM-SHA-256", "ops", "c7l-pw").brokers) == [0]
    finally:
        server.stop()
