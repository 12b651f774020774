"""Protocol errors over a raw socket: connection errors close the connection
with RabbitMQ's reply codes, channel errors close only their channel.

Most cases run against amqlite and the reference RabbitMQ 3.10 and expect the
same answer. Observed on RabbitMQ 3.10 where it differs:

* unknown class or method id: RabbitMQ drops the TCP connection without a
  connection.close; amqlite sends 540 NOT_IMPLEMENTED.
* any frame on a channel before connection.open: 505 UNEXPECTED_FRAME on
  both (RabbitMQ drops the socket silently if tune-ok has not come yet).
* a content frame on a channel that is not open: 505 on both.
* frames on a channel the server is closing are dropped until close-ok, but
  RabbitMQ still checks their sequence (a content header without a publish
  there is 505); amqlite drops them unchecked.
* crossing channel.close: both answer close-ok; RabbitMQ frees the number
  only on the client's close-ok, amqlite at once.
* the failing method of a 505 "method where a content header was expected"
  is the publish (60/40) on RabbitMQ, the interrupting method on amqlite.
"""

from __future__ import annotations

import struct

import pytest

from amqlite.amqp import spec
from amqlite.amqp.engine import ServerConnection

from .conftest import BrokerUnderTest, start_amqlite
from .rawamqp import RawClient, body, frame, header, method, plain, publish


def opened(broker: BrokerUnderTest, **tune: int) -> RawClient:
    client = RawClient(broker.host, broker.port)
    client.handshake(**tune)
    client.open_channel(1)
    return client


def assert_connection_closed(client: RawClient, reply_code: int, broker: BrokerUnderTest) -> spec.Connection.Close:
    close = client.expect_connection_close()
    assert close.reply_code == reply_code, close
    if broker.kind == "amqlite":  # RabbitMQ leaves closing the socket to the client
        assert client.wait_closed()
    return close


def test_frame_larger_than_frame_max_is_501(broker: BrokerUnderTest) -> None:
    with opened(broker, frame_max=4096) as client:
        client.send(method(1, spec.Basic.Publish("", "q")) + header(1, 10000) + body(1, b"x" * 5000))
        close = assert_connection_closed(client, 501, broker)
        assert close.reply_text.startswith("FRAME_ERROR")


def test_bad_frame_end_is_501(broker: BrokerUnderTest) -> None:
    with opened(broker) as client:
        client.send(frame(1, 1, spec.encode_method(spec.Basic.Qos(0, 1, False)), end=b"\x00"))
        assert_connection_closed(client, 501, broker)


@pytest.mark.parametrize("data", [frame(9, 0, b"x"), frame(8, 0, b"x")], ids=["type-9", "heartbeat-payload"])
def test_malformed_frame_is_501(broker: BrokerUnderTest, data: bytes) -> None:
    with opened(broker) as client:
        client.send(data)
        assert_connection_closed(client, 501, broker)


def test_method_where_a_content_header_was_expected_is_505(broker: BrokerUnderTest) -> None:
    with opened(broker) as client:
        client.send(method(1, spec.Basic.Publish("", "q")) + method(1, spec.Basic.Qos(0, 1, False)))
        assert_connection_closed(client, 505, broker)


@pytest.mark.parametrize("data", [header(1, 3) + body(1, b"abc"), body(1, b"abc"), header(5, 3)],
                         ids=["header", "body", "header-on-unopened-channel"])
def test_content_without_a_publish_is_505(broker: BrokerUnderTest, data: bytes) -> None:
    with opened(broker) as client:
        client.send(data)
        assert_connection_closed(client, 505, broker)


def test_heartbeat_on_a_channel_is_505(broker: BrokerUnderTest) -> None:
    with opened(broker) as client:
        client.send(frame(8, 1, b""))
        assert_connection_closed(client, 505, broker)


@pytest.mark.parametrize("ids", [(60, 999), (77, 10)])
def test_unknown_class_or_method_is_540(ids: tuple[int, int]) -> None:
    # RabbitMQ 3.10 just drops the TCP connection here.
    server = start_amqlite()
    try:
        with RawClient("127.0.0.1", server.port) as client:
            client.handshake()
            client.open_channel(1)
            client.send(frame(1, 1, struct.pack(">HH", *ids)))
            close = client.expect_connection_close()
            assert close.reply_code == 540
            assert client.wait_closed()
    finally:
        server.stop()


def test_immediate_is_540_not_implemented(broker: BrokerUnderTest) -> None:
    with opened(broker) as client:
        client.send(publish(1, broker.name(), b"abc", immediate=True))
        close = assert_connection_closed(client, 540, broker)
        assert close.reply_text == "NOT_IMPLEMENTED - immediate=true"
        assert (close.failing_class_id, close.failing_method_id) == (60, 40)


@pytest.mark.parametrize("m", [spec.Channel.Open(), spec.Queue.Declare("q")], ids=["channel.open", "queue.declare"])
def test_channel_method_before_connection_open_is_505(broker: BrokerUnderTest, m: spec.Method) -> None:
    with RawClient(broker.host, broker.port) as client:
        client.start()
        client.send_method(0, plain())
        client.expect(spec.Connection.Tune)
        client.send_method(0, spec.Connection.TuneOk(2047, 131072, 0))
        client.send_method(1, m)
        assert_connection_closed(client, 505, broker)


def test_method_on_an_unopened_channel_is_504(broker: BrokerUnderTest) -> None:
    with RawClient(broker.host, broker.port) as client:
        client.handshake()
        client.send_method(3, spec.Queue.Declare("q"))
        close = assert_connection_closed(client, 504, broker)
        assert close.reply_text.startswith("CHANNEL_ERROR - expected 'channel.open'")
        assert (close.failing_class_id, close.failing_method_id) == (50, 10)


@pytest.mark.parametrize("m", [spec.Basic.Qos(0, 1, False), spec.Connection.TuneOk(2047, 131072, 0)],
                         ids=["basic.qos", "tune-ok-again"])
def test_out_of_place_method_on_channel_0_is_504(broker: BrokerUnderTest, m: spec.Method) -> None:
    with RawClient(broker.host, broker.port) as client:
        client.handshake()
        client.send_method(0, m)
        close = assert_connection_closed(client, 504, broker)
        assert (close.failing_class_id, close.failing_method_id) == (m.class_id, m.method_id)


def test_second_channel_open_is_504(broker: BrokerUnderTest) -> None:
    with opened(broker) as client:
        client.send_method(1, spec.Channel.Open())
        close = assert_connection_closed(client, 504, broker)
        assert close.reply_text.startswith("CHANNEL_ERROR - second 'channel.open' seen")
        assert (close.failing_class_id, close.failing_method_id) == (20, 10)


def test_channel_error_closes_only_that_channel(broker: BrokerUnderTest) -> None:
    missing = broker.name("missing")
    with opened(broker) as client:
        client.open_channel(2)
        client.send_method(1, spec.Queue.Declare(missing, passive=True))
        close = client.expect(spec.Channel.Close, 1)
        assert close.reply_code == 404
        assert close.reply_text == f"NOT_FOUND - no queue '{missing}' in vhost '/'"
        assert (close.failing_class_id, close.failing_method_id) == (50, 10)
        # Until close-ok, whatever comes on channel 1 is dropped; channel 2 carries on.
        ignored = broker.name("ignored")
        client.send_method(1, spec.Queue.Declare(ignored, exclusive=True))
        client.send(publish(1, ignored, b"lost"))
        client.send_method(1, spec.Basic.Qos(0, 1, False))
        ok = client.call(2, spec.Queue.Declare("", exclusive=True), spec.Queue.DeclareOk)
        client.send_method(2, spec.Queue.Declare(ignored, passive=True))
        assert client.expect(spec.Channel.Close, 2).reply_code == 404  # the declare on 1 never happened
        client.send_method(2, spec.Channel.CloseOk())
        client.send_method(1, spec.Channel.CloseOk())
        client.open_channel(1)
        assert client.call(1, spec.Queue.Declare(broker.name("again"), exclusive=True), spec.Queue.DeclareOk)
        client.open_channel(2)
        assert client.call(1, spec.Queue.Declare(ok.queue, passive=True), spec.Queue.DeclareOk).queue == ok.queue


def test_client_channel_close_crossing_ours_gets_close_ok(broker: BrokerUnderTest) -> None:
    with opened(broker) as client:
        client.send_method(1, spec.Queue.Declare(broker.name("missing"), passive=True))
        assert client.expect(spec.Channel.Close, 1).reply_code == 404
        assert isinstance(client.call(1, spec.Channel.Close(200, "bye"), spec.Channel.CloseOk), spec.Channel.CloseOk)
        # RabbitMQ still wants the close-ok for its own close before the number is free again.
        client.send_method(1, spec.Channel.CloseOk())
        client.open_channel(1)


def test_message_over_max_size_closes_the_channel_406_and_the_connection_carries_on() -> None:
    server = start_amqlite(max_message_size=1000)
    try:
        with RawClient("127.0.0.1", server.port) as client:
            client.handshake()
            client.open_channel(1)
            client.open_channel(2)
            client.call(2, spec.Queue.Declare("q"), spec.Queue.DeclareOk)
            client.send(publish(1, "q", b"x" * 5000))
            close = client.expect(spec.Channel.Close, 1)
            assert close.reply_code == 406
            assert close.reply_text == "PRECONDITION_FAILED - message size 5000 is larger than configured max size 1000"
            client.send(publish(2, "q", b"y" * 1000))
            client.send_method(2, spec.Basic.Get("q", no_ack=True))
            get_ok = client.expect(spec.Basic.GetOk, 2)
            assert get_ok.message_count == 0
            assert client.read_frame().body_size == 1000
            assert client.read_frame().payload == b"y" * 1000
            client.send_method(1, spec.Channel.CloseOk())
            client.open_channel(1)
    finally:
        server.stop()


def test_an_internal_error_closes_only_that_connection_541(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in one connection's handling must not take the server down with it."""

    def boom(self: object, *args: object) -> None:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(ServerConnection, "_queue_purge", boom)
    server = start_amqlite()
    try:
        with RawClient("127.0.0.1", server.port) as bystander, RawClient("127.0.0.1", server.port) as victim:
            bystander.handshake()
            bystander.open_channel(1)
            victim.handshake()
            victim.open_channel(1)
            victim.send_method(1, spec.Queue.Purge("q"))
            close = victim.expect_connection_close()
            assert close.reply_code == 541 and close.reply_text.startswith("INTERNAL_ERROR")
            assert victim.wait_closed()
            bystander.call(1, spec.Queue.Declare("still-here"), spec.Queue.DeclareOk)
            with RawClient("127.0.0.1", server.port) as newcomer:
                newcomer.handshake()
    finally:
        server.stop()
