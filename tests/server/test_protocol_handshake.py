"""The connection handshake over a raw socket, against amqlite and RabbitMQ.

Scripted bytes out, decoded frames back (see ``rawamqp``). Cases where
amqlite answers differently from RabbitMQ 3.10 on purpose say so.
"""

from __future__ import annotations

import re
import socket

import pytest

from amqlite.amqp import spec
from amqlite.amqp.frames import PROTOCOL_HEADER

from .conftest import BrokerUnderTest, start_amqlite
from .rawamqp import RawClient, amqplain, method, plain


def test_protocol_header_gets_connection_start_with_capabilities(broker: BrokerUnderTest) -> None:
    with RawClient(broker.host, broker.port) as client:
        start = client.start()
    assert (start.version_major, start.version_minor) == (0, 9)
    assert {b"PLAIN", b"AMQPLAIN"} <= set(start.mechanisms.split())
    props = start.server_properties
    for name in (
        "publisher_confirms", "exchange_exchange_bindings", "basic.nack", "consumer_cancel_notify",
        "connection.blocked", "consumer_priorities", "authentication_failure_close", "per_consumer_qos",
    ):
        assert props["capabilities"][name] is True, name
    version = props["version"]
    version = version.decode() if isinstance(version, bytes) else version
    assert re.fullmatch(r"\d+\.\d+\.\d+([-+.].*)?", version)
    assert props["product"]


@pytest.mark.parametrize("data", [b"AMQP\x00\x00\x08\x00", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"], ids=["0-8", "http"])
def test_wrong_protocol_header_is_answered_with_ours_then_closed(broker: BrokerUnderTest, data: bytes) -> None:
    with RawClient(broker.host, broker.port) as client:
        client.send(data)
        assert client.read_raw(8) == b"AMQP\x00\x00\x09\x01"
        assert client.read_raw(1) == b"" and client.eof


@pytest.mark.parametrize("start_ok", [plain(), amqplain()], ids=["PLAIN", "AMQPLAIN"])
def test_plain_and_amqplain_authenticate_and_tune_has_rabbitmq_defaults(
    broker: BrokerUnderTest, start_ok: spec.Connection.StartOk
) -> None:
    with RawClient(broker.host, broker.port) as client:
        tune = client.handshake(start_ok=start_ok)
        assert (tune.channel_max, tune.frame_max, tune.heartbeat) == (2047, 131072, 60)
        client.open_channel(1)
        client.call(0, spec.Connection.Close(200, "bye"), spec.Connection.CloseOk)
        if broker.kind == "amqlite":  # RabbitMQ leaves closing the socket to the client
            assert client.wait_closed()


def test_bad_password_is_connection_close_403(broker: BrokerUnderTest) -> None:
    # RabbitMQ sends the close only to clients announcing authentication_failure_close
    # (and otherwise drops the socket); amqlite always says why.
    start_ok = spec.Connection.StartOk(
        {"capabilities": {"authentication_failure_close": True}}, "PLAIN", b"\0guest\0wrong"
    )
    with RawClient(broker.host, broker.port) as client:
        client.start()
        client.send_method(0, start_ok)
        close = client.expect_connection_close()
        assert close.reply_code == 403
        assert close.reply_text.startswith("ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN")
        # Our close-ok ends it at once (amqlite once waited for its next timer tick, up to 1 s).
        assert client.wait_closed(timeout=0.5 if broker.kind == "amqlite" else 5)


def test_unknown_vhost_is_530(broker: BrokerUnderTest) -> None:
    with RawClient(broker.host, broker.port) as client:
        client.start()
        client.send_method(0, plain())
        client.expect(spec.Connection.Tune)
        client.send_method(0, spec.Connection.TuneOk(2047, 131072, 0))
        client.send_method(0, spec.Connection.Open("no-such-vhost"))
        close = client.expect_connection_close()
        assert close.reply_code == 530
        assert close.reply_text == "NOT_ALLOWED - vhost no-such-vhost not found"
        assert client.wait_closed()


def _non_loopback_address() -> str | None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # no packet is sent; this only picks a source address
            address = probe.getsockname()[0]
    except OSError:
        return None
    return None if address.startswith("127.") else address


def test_guest_is_refused_from_a_non_loopback_address() -> None:
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    server = start_amqlite(host="0.0.0.0", users={"alice": {"password": "secret"}})
    try:
        with RawClient(address, server.port) as client:
            client.start()
            client.send_method(0, plain("guest", "guest"))
            assert client.expect_connection_close().reply_code == 403
        with RawClient(address, server.port) as client:
            client.handshake(start_ok=plain("alice", "secret"))
        with RawClient("127.0.0.1", server.port) as client:
            client.handshake()
    finally:
        server.stop()


def test_header_and_first_frames_in_one_write() -> None:
    server = start_amqlite()
    try:
        with RawClient("127.0.0.1", server.port) as client:
            client.send(PROTOCOL_HEADER + method(0, plain()))
            assert client.expect(spec.Connection.Start).version_minor == 9
            assert client.expect(spec.Connection.Tune).frame_max == 131072
    finally:
        server.stop()
