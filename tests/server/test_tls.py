"""AMQP over TLS beside the plain listener, with RabbitMQ's ssl_options
semantics, through pika; certificates made by trustme."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pika
import pytest
import trustme
from structlog.testing import capture_logs

from amqlite.amqp import spec
from amqlite.config import ConfigError, load

from .conftest import ServerThread, start_amqlite


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def files(ca: trustme.CA, tmp_path: Path) -> dict[str, str]:
    server = ca.issue_cert("127.0.0.1", "localhost")
    paths = {"cert": tmp_path / "server.pem", "key": tmp_path / "server.key", "ca": tmp_path / "ca.pem"}
    server.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    for extra in server.cert_chain_pems[1:]:
        extra.write_to_path(str(paths["cert"]), append=True)
    server.private_key_pem.write_to_path(str(paths["key"]))
    ca.cert_pem.write_to_path(str(paths["ca"]))
    return {name: str(path) for name, path in paths.items()}


def serve(files: dict[str, str], **settings: object) -> ServerThread:
    # A plain port beside the TLS one: port 0 would turn the plain listener off.
    return start_amqlite(**{"port": free_port(), "tls_port": free_port(), "tls_cert": files["cert"],
                            "tls_key": files["key"], "tls_ca": files["ca"], **settings})


@pytest.fixture
def tls_server(files: dict[str, str]) -> Iterator[ServerThread]:
    server = serve(files)
    yield server
    server.stop()


def tls_connect(server: ServerThread, ca: trustme.CA, client_cert: trustme.LeafCert | None = None
                ) -> pika.BlockingConnection:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    if client_cert is not None:
        client_cert.configure_cert(context)
    assert server.server is not None
    port = server.server.tls_addresses[0][1]
    return pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", port, ssl_options=pika.SSLOptions(context, "127.0.0.1"), connection_attempts=1))


def test_pika_over_tls_beside_the_plain_listener(tls_server: ServerThread, ca: trustme.CA) -> None:
    secure = tls_connect(tls_server, ca)
    channel = secure.channel()
    channel.queue_declare("over-tls")
    channel.basic_publish("", "over-tls", b"secret")
    plain = tls_server.connect()  # the plain port still serves
    _, _, body = plain.channel().basic_get("over-tls", auto_ack=True)
    assert body == b"secret"
    secure.close()
    plain.close()


def test_a_plaintext_client_on_the_tls_port_is_logged_and_others_carry_on(tls_server: ServerThread,
                                                                          ca: trustme.CA) -> None:
    assert tls_server.server is not None
    port = tls_server.server.tls_addresses[0][1]
    with capture_logs() as logs:
        with socket.create_connection(("127.0.0.1", port)) as raw:
            raw.sendall(b"AMQP\x00\x00\x09\x01")
            raw.settimeout(5)
            while raw.recv(100):  # perhaps a TLS alert; then the broker closes the socket
                pass
        tls_connect(tls_server, ca).close()
    failures = [e for e in logs if e["event"] == "connection.tls_failed"]
    assert len(failures) == 1 and failures[0]["peer"].startswith("127.0.0.1:")
    assert failures[0]["reason"]


def test_client_certificates_verified_and_required(files: dict[str, str], ca: trustme.CA) -> None:
    server = serve(files, tls_verify_peer=True, tls_fail_if_no_peer_cert=True)
    try:
        with capture_logs() as logs:
            with pytest.raises(pika.exceptions.AMQPConnectionError):
                tls_connect(server, ca)  # no client certificate
            other = trustme.CA()  # a certificate from a CA the broker does not trust
            with pytest.raises(pika.exceptions.AMQPConnectionError):
                tls_connect(server, ca, other.issue_cert("intruder"))
        reasons = [e["reason"] for e in logs if e["event"] == "connection.tls_failed"]
        assert len(reasons) == 2, reasons
        connection = tls_connect(server, ca, ca.issue_cert("app"))
        assert connection.channel().queue_declare("mutual").method.queue == "mutual"
        connection.close()
    finally:
        server.stop()


def test_a_missing_key_stops_start_up_with_one_line(files: dict[str, str], tmp_path: Path) -> None:
    base = [sys.executable, "-m", "amqlite", "serve", "--host", "127.0.0.1", "--port", "0", "--data-dir",
            str(tmp_path / "data"), "--management-port", "0", "--prometheus-port", "0"]
    for tls, expected in (
        ({"AMQLITE_TLS_CERT": files["cert"], "AMQLITE_TLS_KEY": str(tmp_path / "missing.key")},
         "amqlite: TLS certificate or key: No such file or directory"),
        ({}, "amqlite: tls_port needs tls_cert and tls_key"),
    ):
        env = {**os.environ, "AMQLITE_LOG_FORMAT": "json", "AMQLITE_TLS_PORT": str(free_port()), **tls}
        result = subprocess.run(base, capture_output=True, text=True, timeout=30, env=env)
        lines = [line for line in result.stderr.splitlines() if not line.startswith("{")]
        assert (result.returncode, lines) == (1, [expected])


def _serve_once(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "amqlite", "serve", "--host", "127.0.0.1", "--port", "0", "--data-dir",
               str(tmp_path / "data"), "--management-port", "0", "--prometheus-port", "0", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=30,
                          env={**os.environ, "AMQLITE_LOG_FORMAT": "console", **(env or {})})


def test_a_taken_tls_port_names_tls_port_once(files: dict[str, str], tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = _serve_once(tmp_path, "--tls-port", str(port), "--tls-cert", files["cert"], "--tls-key", files["key"])
    assert result.returncode == 1
    expected = (f"amqlite: tls_port {port} is already in use (another broker, such as RabbitMQ?); "
                "choose another with --tls-port or AMQLITE_TLS_PORT")
    # Console logs: the message is said once, as its own line, not again in a log line.
    assert result.stderr.count("already in use") == 1 and expected in result.stderr.splitlines()


def test_every_tls_setting_has_its_flag(files: dict[str, str], ca: trustme.CA, tmp_path: Path) -> None:
    # Each flag reaches the settings: the errors that only its value can cause.
    missing = str(tmp_path / "missing.key")
    assert "amqlite: TLS certificate or key: No such file or directory" in _serve_once(
        tmp_path, "--tls-port", str(free_port()), "--tls-cert", files["cert"], "--tls-key", missing).stderr
    for flag in ("--tls-verify-peer", "--tls-fail-if-no-peer-cert"):
        assert "amqlite: tls_verify_peer and tls_fail_if_no_peer_cert need tls_ca" in _serve_once(
            tmp_path, "--tls-port", str(free_port()), "--tls-cert", files["cert"], "--tls-key", files["key"],
            flag).stderr
    # --no-... overrides the environment; with --tls-ca the pair is accepted and served.
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "amqlite", "serve", "--host", "127.0.0.1", "--port", "0", "--data-dir",
         str(tmp_path / "data"), "--management-port", "0", "--prometheus-port", "0", "--tls-port", str(port),
         "--tls-cert", files["cert"], "--tls-key", files["key"], "--tls-ca", files["ca"], "--no-tls-verify-peer"],
        stderr=subprocess.PIPE, text=True,
        env={**os.environ, "AMQLITE_LOG_FORMAT": "json", "AMQLITE_TLS_VERIFY_PEER": "true"})
    try:
        assert process.stderr is not None
        while "broker.listening" not in (line := process.stderr.readline()):
            assert line, "the broker stopped"
        assert f"127.0.0.1:{port}" in line
        context = ssl.create_default_context()
        ca.configure_trust(context)
        connection = pika.BlockingConnection(pika.ConnectionParameters(
            "127.0.0.1", port, ssl_options=pika.SSLOptions(context, "127.0.0.1"), connection_attempts=1))
        connection.close()
    finally:
        process.terminate()
        process.wait(10)


def test_tls_settings_from_a_table_and_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "amqlite.toml"
    config.write_text('[tls]\nport = 5671\ncert = "c.pem"\nkey = "k.pem"\nverify_peer = true\n')
    settings = load(config_file=str(config), environ={"AMQLITE_TLS_FAIL_IF_NO_PEER_CERT": "true"})
    assert (settings.tls_port, settings.tls_cert, settings.tls_key) == (5671, "c.pem", "k.pem")
    assert settings.tls_verify_peer and settings.tls_fail_if_no_peer_cert
    with pytest.raises(ConfigError, match="tls_verify_peer must be true or false"):
        load(environ={"AMQLITE_TLS_VERIFY_PEER": "maybe"})


def test_sasl_external_logs_in_as_the_certificates_common_name(files: dict[str, str], ca: trustme.CA) -> None:
    server = serve(files, tls_verify_peer=True, users={"app": {"password_hash": "unusable", "tags": []}})
    try:
        context = ssl.create_default_context()
        ca.configure_trust(context)
        ca.issue_cert("app", common_name="app").configure_cert(context)
        assert server.server is not None
        port = server.server.tls_addresses[0][1]
        connection = pika.BlockingConnection(pika.ConnectionParameters(
            "127.0.0.1", port, credentials=pika.credentials.ExternalCredentials(),
            ssl_options=pika.SSLOptions(context, "127.0.0.1"), connection_attempts=1))
        connection.channel().queue_declare("by-certificate")
        who = server.call(lambda: sorted(c.user.name for c in server.server.connections if c.user))
        assert who == ["app"]
        connection.close()
        # A certificate naming a user that does not exist is refused, as RabbitMQ refuses it.
        stranger = ssl.create_default_context()
        ca.configure_trust(stranger)
        ca.issue_cert("nobody", common_name="nobody").configure_cert(stranger)
        with pytest.raises(pika.exceptions.ProbableAuthenticationError):
            pika.BlockingConnection(pika.ConnectionParameters(
                "127.0.0.1", port, credentials=pika.credentials.ExternalCredentials(),
                ssl_options=pika.SSLOptions(stranger, "127.0.0.1"), connection_attempts=1))
    finally:
        server.stop()


def mechanisms_offered(host: str, port: int, context: ssl.SSLContext | None = None) -> list[str]:
    raw = socket.create_connection((host, port), timeout=5)
    sock = context.wrap_socket(raw, server_hostname=host) if context is not None else raw
    with sock:
        sock.sendall(b"AMQP\x00\x00\x09\x01")
        data = b""
        while len(data) < 7 or len(data) < 8 + int.from_bytes(data[3:7], "big"):
            data += sock.recv(4096)
    start = spec.decode_method(data[7:7 + int.from_bytes(data[3:7], "big")])
    assert isinstance(start, spec.Connection.Start)
    return start.mechanisms.decode().split()


def test_external_is_offered_only_with_a_verified_certificate_and_auth_mechanisms_limit(
        files: dict[str, str], ca: trustme.CA) -> None:
    server = serve(files, tls_verify_peer=True)
    try:
        assert server.server is not None
        tls_port = server.server.tls_addresses[0][1]
        plain_context = ssl.create_default_context()
        ca.configure_trust(plain_context)
        with_certificate = ssl.create_default_context()
        ca.configure_trust(with_certificate)
        ca.issue_cert("app", common_name="app").configure_cert(with_certificate)
        assert mechanisms_offered("127.0.0.1", server.port) == ["PLAIN", "AMQPLAIN"]
        assert mechanisms_offered("127.0.0.1", tls_port, plain_context) == ["PLAIN", "AMQPLAIN"]
        assert mechanisms_offered("127.0.0.1", tls_port, with_certificate) == ["PLAIN", "AMQPLAIN", "EXTERNAL"]
    finally:
        server.stop()
    server = serve(files, tls_verify_peer=True, auth_mechanisms=["EXTERNAL"])
    try:
        assert server.server is not None
        assert mechanisms_offered("127.0.0.1", server.server.tls_addresses[0][1], with_certificate) == ["EXTERNAL"]
        with pytest.raises(pika.exceptions.AMQPConnectionError):
            server.connect()  # PLAIN is not offered, so refused
    finally:
        server.stop()


def test_port_0_beside_a_tls_port_turns_plain_amqp_off(files: dict[str, str], ca: trustme.CA) -> None:
    server = serve(files, port=0)
    try:
        assert server.server is not None and server.server.addresses == []
        assert server.port == server.server.tls_addresses[0][1]
        tls_connect(server, ca).close()
    finally:
        server.stop()


def test_aio_pika_over_tls_with_and_without_a_client_certificate(files: dict[str, str], ca: trustme.CA) -> None:
    import asyncio

    import aio_pika

    server = serve(files, tls_verify_peer=True, users={"app": {"password_hash": "unusable", "tags": []}})
    assert server.server is not None
    port = server.server.tls_addresses[0][1]
    context = ssl.create_default_context()
    ca.configure_trust(context)
    certified = ssl.create_default_context()
    ca.configure_trust(certified)
    ca.issue_cert("app", common_name="app").configure_cert(certified)

    async def scenario() -> bytes:
        anonymous = await aio_pika.connect(f"amqps://guest:guest@127.0.0.1:{port}/", ssl_context=context)
        channel = await anonymous.channel()
        await channel.declare_queue("aio-tls")
        await channel.default_exchange.publish(aio_pika.Message(b"by password"), routing_key="aio-tls")
        await anonymous.close()
        external = await aio_pika.connect(f"amqps://127.0.0.1:{port}/?auth=external", ssl_context=certified)
        queue = await (await external.channel()).declare_queue("aio-tls", passive=True)
        message = await queue.get(no_ack=True)
        await external.close()
        return message.body

    try:
        assert asyncio.run(asyncio.wait_for(scenario(), 30)) == b"by password"
    finally:
        server.stop()


def served_certificate(port: int, ca: trustme.CA) -> bytes:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as secure:
            der = secure.getpeercert(binary_form=True)
            assert der is not None
            return der


def test_sighup_reloads_the_certificate_without_dropping_connections(
        files: dict[str, str], ca: trustme.CA, tmp_path: Path) -> None:
    import threading
    import time

    port, tls_port = free_port(), free_port()
    log = tmp_path / "broker.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "amqlite.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--data-dir", str(tmp_path / "data"), "--management-port", "0", "--prometheus-port", "0"],
        env={**os.environ, "AMQLITE_TLS_PORT": str(tls_port), "AMQLITE_TLS_CERT": files["cert"],
             "AMQLITE_TLS_KEY": files["key"], "AMQLITE_LOG_FORMAT": "json"}, stderr=log.open("w"))

    def logged(event: str) -> bool:
        return f'"event": "{event}"' in log.read_text()

    def wait_logged(event: str) -> None:
        deadline = time.monotonic() + 15
        while not logged(event):
            assert time.monotonic() < deadline, f"no {event} in the log"
            time.sleep(0.05)

    try:
        wait_logged("broker.listening")
        before = served_certificate(tls_port, ca)
        context = ssl.create_default_context()
        ca.configure_trust(context)
        connection = pika.BlockingConnection(pika.ConnectionParameters(
            "127.0.0.1", tls_port, ssl_options=pika.SSLOptions(context, "127.0.0.1"), connection_attempts=1))
        channel = connection.channel()
        channel.queue_declare("rotating")
        channel.confirm_delivery()
        confirmed, stop, failure = [0], threading.Event(), []

        def publish() -> None:
            try:
                while not stop.is_set():
                    channel.basic_publish("", "rotating", b"x")
                    confirmed[0] += 1
            except Exception as error:  # reported below
                failure.append(error)

        publisher = threading.Thread(target=publish)
        publisher.start()
        # Rotate: a new certificate from the same CA in the same files.
        renewed = ca.issue_cert("127.0.0.1", "localhost")
        renewed.cert_chain_pems[0].write_to_path(files["cert"])
        for extra in renewed.cert_chain_pems[1:]:
            extra.write_to_path(files["cert"], append=True)
        renewed.private_key_pem.write_to_path(files["key"])
        process.send_signal(signal.SIGHUP)
        wait_logged("tls.reloaded")
        after = served_certificate(tls_port, ca)
        assert after != before and after == ssl.PEM_cert_to_DER_cert(renewed.cert_chain_pems[0].bytes().decode())
        # A broken file on the next reload keeps the certificate in use.
        Path(files["key"]).write_text("not a key")
        process.send_signal(signal.SIGHUP)
        wait_logged("tls.reload_failed")
        assert served_certificate(tls_port, ca) == after
        during = confirmed[0]
        time.sleep(0.5)
        stop.set()
        publisher.join(10)
        assert not failure and confirmed[0] > during > 0  # the open connection went on throughout
        connection.close()
    finally:
        process.terminate()
        process.wait()


def test_the_management_api_over_https_with_the_same_certificate(files: dict[str, str]) -> None:
    import httpx

    port = free_port()
    server = serve(files, management_tls_port=port)
    try:
        response = httpx.get(f"https://127.0.0.1:{port}/api/whoami", auth=("guest", "guest"),
                             verify=ssl.create_default_context(cafile=files["ca"]))
        assert response.json() == {"name": "guest", "tags": ["administrator"]}
        with pytest.raises(httpx.ConnectError):  # it is HTTPS only, and the CA is checked
            httpx.get(f"https://127.0.0.1:{port}/api/whoami", auth=("guest", "guest"))
    finally:
        server.stop()


def test_the_https_management_port_ends_a_stalled_handshake_at_handshake_timeout(files: dict[str, str],
                                                                                  ca: trustme.CA) -> None:
    # Hypercorn's own TLS handshake timeout is 60 s; the port follows amqlite's setting, as AMQPS does.
    port = free_port()
    server = serve(files, management_tls_port=port, handshake_timeout=1.0)
    try:
        silent = socket.create_connection(("127.0.0.1", port))
        half = socket.create_connection(("127.0.0.1", port))
        half.sendall(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03")  # the start of a client hello
        started = time.monotonic()
        for stalled in (silent, half):
            stalled.settimeout(10)
            try:
                assert stalled.recv(1) == b""
            except ConnectionResetError:
                pass
            stalled.close()
        assert 0.9 <= time.monotonic() - started < 3
        assert served_certificate(port, ca)  # and the port serves on
    finally:
        server.stop()
