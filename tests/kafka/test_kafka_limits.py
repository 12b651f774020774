"""Kafka connections before login are held to AMQP's bounds: the listener's
pool of max_unauthenticated and handshake_timeout."""

from __future__ import annotations

import socket
import struct
import time

from kafka_support import decode_response, request, request_frame, start_kafka


def _versions(sock: socket.socket) -> int:
    """An ApiVersions round trip; its error code."""
    sock.sendall(request_frame(request(18, 3, client_software_name="t", client_software_version="1"), 1))
    (size,) = struct.unpack(">i", _read(sock, 4))
    return int(decode_response(_read(sock, size), 18, 3)[1].error_code)


def _read(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_clients_that_have_not_logged_in_fill_the_pool_then_are_refused() -> None:
    server = start_kafka(max_unauthenticated=2, kafka_allow_anonymous=False)
    try:
        address = ("127.0.0.1", server.kafka_port)
        first, second = socket.create_connection(address, timeout=10), socket.create_connection(address, timeout=10)
        assert _versions(first) == 0 and _versions(second) == 0  # served, still not logged in
        with socket.create_connection(address, timeout=10) as third:
            assert _closed(third)
        first.close()
        deadline = time.monotonic() + 10
        while True:  # the server sees the close a moment later
            with socket.create_connection(address, timeout=10) as again:
                try:
                    assert _versions(again) == 0
                    break
                except ConnectionError:
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
        second.close()
    finally:
        server.stop()


def test_a_client_that_never_logs_in_is_closed_at_the_handshake_timeout() -> None:
    server = start_kafka(handshake_timeout=0.5, kafka_allow_anonymous=False)
    try:
        with socket.create_connection(("127.0.0.1", server.kafka_port), timeout=10) as silent:
            started = time.monotonic()
            assert _closed(silent)
            assert 0.4 <= time.monotonic() - started < 5
    finally:
        server.stop()
