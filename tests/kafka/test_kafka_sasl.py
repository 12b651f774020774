"""SASL PLAIN and SCRAM-SHA-256/512 against amqlite's users, through
kafka-python, confluent-kafka and aiokafka, and the rules at the engine."""

from __future__ import annotations

import asyncio
from typing import Any, Iterator

import pytest
from aiokafka import AIOKafkaConsumer
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from kafka import KafkaConsumer
from kafka.errors import KafkaError
from kio.schema.errors import ErrorCode
from structlog.testing import capture_logs

from amqlite.auth import Users, hash_password
from amqlite.config import Settings
from amqlite.kafka.engine import IDLE_TIMEOUT
from kafka_support import KafkaServerThread, decode_response, engine, request, request_frame, split_responses, start_kafka

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


def _plain(conn: Any, user: str, password: str) -> tuple[Any, Any]:
    conn.receive_data(request_frame(request(17, 1, mechanism="PLAIN"), 1), 0.0)
    conn.receive_data(request_frame(request(36, 2, auth_bytes=f"\0{user}\0{password}".encode()), 2), 0.0)
    handshake, authenticate = split_responses(conn.data_to_send(0.0))
    return decode_response(handshake, 17, 1)[1], decode_response(authenticate, 36, 2)[1]


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


def test_scram_credentials_are_made_only_while_the_password_is_the_known_one() -> None:
    users = Users.from_settings(Settings(users={"app": {"password": "x"}}))
    first = users.scram_credential("app", "sha256")
    assert first is not None and users.scram_credential("app", "sha256") is first
    user = users.get("app")
    assert user is not None
    users.add(type(user)("app", hash_password("changed")))  # the password changed (the management API)
    assert users.scram_credential("app", "sha256") is None
    assert users.scram_credential("nobody", "sha256") is None
