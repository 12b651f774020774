"""Kafka over TLS on kafka_tls_port, with the TLS settings AMQP's listener
uses: confluent-kafka and kafka-python, with and without SASL."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Iterator

import pytest
import trustme
from confluent_kafka.admin import AdminClient
from kafka import KafkaConsumer

from kafka_support import KafkaServerThread, start_kafka


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def tls_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KafkaServerThread, str]]:
    ca = trustme.CA()
    directory: Path = tmp_path_factory.mktemp("tls")
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(directory / "server.pem"))
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    server = start_kafka(kafka_tls_port=free_port(), tls_cert=str(directory / "server.pem"),
                         tls_key=str(directory / "server.pem"), users={"app": {"password": "s3cret"}})
    yield server, str(directory / "ca.pem")
    server.stop()


def test_confluent_over_tls_and_sasl_ssl(tls_kafka: tuple[KafkaServerThread, str]) -> None:
    server, ca = tls_kafka
    assert server.server is not None
    (port,) = {port for _, port in server.server.kafka.tls_addresses}
    tls = {"bootstrap.servers": f"127.0.0.1:{port}", "security.protocol": "SSL", "ssl.ca.location": ca}
    metadata = AdminClient(tls).list_topics(timeout=10)
    assert [(b.host, b.port) for b in metadata.brokers.values()] == [("127.0.0.1", port)]  # the TLS port advertised
    sasl = {**tls, "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "app",
            "sasl.password": "s3cret"}
    assert list(AdminClient(sasl).list_topics(timeout=10).brokers) == [0]


def test_kafka_python_over_tls(tls_kafka: tuple[KafkaServerThread, str]) -> None:
    server, ca = tls_kafka
    assert server.server is not None
    (port,) = {port for _, port in server.server.kafka.tls_addresses}
    consumer = KafkaConsumer(bootstrap_servers=f"127.0.0.1:{port}", security_protocol="SSL", ssl_cafile=ca)
    try:
        assert consumer.topics() == set()
    finally:
        consumer.close()


def test_a_plaintext_client_on_the_tls_port_does_not_disturb_the_listener(tls_kafka: tuple[KafkaServerThread, str]) -> None:
    server, ca = tls_kafka
    assert server.server is not None
    (port,) = {port for _, port in server.server.kafka.tls_addresses}
    with socket.create_connection(("127.0.0.1", port), timeout=10) as plain:
        plain.sendall(b"\0\0\0\x0a" + b"\0" * 10)  # a Kafka request, not a TLS hello
        while plain.recv(1024):  # perhaps a TLS alert, then the close
            pass
    consumer = KafkaConsumer(bootstrap_servers=f"127.0.0.1:{port}", security_protocol="SSL", ssl_cafile=ca)
    try:
        assert consumer.topics() == set()
    finally:
        consumer.close()
