"""The sans-IO AMQP server engine, driven by scripted bytes (h11 style).

Each test builds client frames with the codec's encoders, feeds them to a
:class:`ServerConnection` over a fresh core :class:`Broker`, and decodes what
the engine has to send back. No sockets, no clock: ``now`` is a number the
test moves by hand.

Where RabbitMQ 3.10 answers a protocol error differently from the obvious
reading of the spec, the test says what RabbitMQ does (checked with a raw
socket against the reference broker).
"""

from __future__ import annotations

import re
import struct
from typing import Any

import pytest

from amqlite.amqp import engine, spec
from amqlite.amqp.engine import ServerConnection, State
from amqlite.amqp.frames import (
    PROTOCOL_HEADER,
    BodyFrame,
    FrameDecoder,
    HeaderFrame,
    HeartbeatFrame,
    MethodFrame,
)
from amqlite.auth import User, Users, hash_password
from amqlite.config import Settings
from amqlite.core.broker import Broker
from amqlite.core.events import WaitForDisk
from amqlite.core.message import Properties
from amqlite.core.permissions import FULL
from amqlite.store.journal import DiskJournal
from wire import HEARTBEAT, amqplain, body, frame, header, method, plain, publish

# -- the scripted peer ---------------------------------------------------------


class Peer:
    """One client connection to a ServerConnection, with a hand-moved clock."""

    def __init__(self, broker: Broker | None = None, users: Users | None = None, *, loopback: bool = True,
                 **limits: int) -> None:
        self.broker = broker or Broker()
        self.users = users or Users.from_settings(Settings())
        self.now = 0.0
        self.conn = ServerConnection(self.broker, self.users, now=self.now, peer_loopback=loopback,
                                     peer="test", **limits)
        self._decoder = FrameDecoder(0)
        self.raw = b""

    @property
    def state(self) -> State:
        return self.conn.state

    def send(self, data: bytes) -> None:
        self.conn.receive_data(data, self.now)

    def send_method(self, channel: int, m: spec.Method) -> None:
        self.send(method(channel, m))

    def frames(self) -> list[Any]:
        """Every frame the engine has to send right now, decoded."""
        data = self.conn.data_to_send(self.now)
        self._decoder.feed(data)
        out = []
        while (f := self._decoder.next_frame()) is not None:
            out.append(f)
        return out

    def methods(self) -> list[tuple[int, spec.Method]]:
        return [(f.channel, f.method) for f in self.frames() if isinstance(f, MethodFrame)]

    def one(self, kind: type[spec.Method], channel: int | None = None) -> Any:
        got = self.methods()
        assert len(got) == 1 and isinstance(got[0][1], kind), f"expected one {kind.name}, got {got}"
        if channel is not None:
            assert got[0][0] == channel
        return got[0][1]

    def connection_close(self) -> spec.Connection.Close:
        close = self.one(spec.Connection.Close, 0)
        assert self.state is State.CLOSING
        return close

    def handshake(self, *, start_ok: spec.Connection.StartOk | None = None, channel_max: int = 2047,
                  frame_max: int = 131072, heartbeat: int = 0, vhost: str = "/") -> None:
        self.send(PROTOCOL_HEADER)
        self.one(spec.Connection.Start, 0)
        self.send_method(0, start_ok or plain())
        self.one(spec.Connection.Tune, 0)
        self.send_method(0, spec.Connection.TuneOk(channel_max, frame_max, heartbeat))
        self.send_method(0, spec.Connection.Open(vhost))
        self.one(spec.Connection.OpenOk, 0)
        assert self.state is State.OPEN

    def open_channel(self, number: int = 1) -> None:
        self.send_method(number, spec.Channel.Open())
        self.one(spec.Channel.OpenOk, number)

    def call(self, channel: int, m: spec.Method, reply: type[spec.Method]) -> Any:
        self.send_method(channel, m)
        return self.one(reply, channel)


def opened(**kwargs: Any) -> Peer:
    peer = Peer(**kwargs)
    peer.handshake()
    peer.open_channel(1)
    return peer


# -- handshake -----------------------------------------------------------------


def test_protocol_header_is_answered_with_connection_start() -> None:
    peer = Peer()
    peer.send(PROTOCOL_HEADER)
    start = peer.one(spec.Connection.Start, 0)
    assert (start.version_major, start.version_minor) == (0, 9)
    assert set(start.mechanisms.split()) >= {b"PLAIN", b"AMQPLAIN"}
    assert b"en_US" in start.locales.split()
    props = start.server_properties
    capabilities = props["capabilities"]
    for name in (
        "publisher_confirms", "exchange_exchange_bindings", "basic.nack", "consumer_cancel_notify",
        "connection.blocked", "consumer_priorities", "authentication_failure_close", "per_consumer_qos",
    ):
        assert capabilities[name] is True, name
    assert props["product"]
    # The Java client parses the version; it has to look like semver.
    version = props["version"]
    version = version.decode() if isinstance(version, bytes) else version
    assert re.fullmatch(r"\d+\.\d+\.\d+([-+.].*)?", version)
    assert peer.state is State.AWAIT_START_OK


def test_protocol_header_byte_by_byte_and_with_frames_behind_it() -> None:
    peer = Peer()
    for byte in PROTOCOL_HEADER[:-1]:
        peer.send(bytes([byte]))
        assert peer.frames() == []
    # The last header byte and start-ok arrive in the same read.
    peer.send(PROTOCOL_HEADER[-1:] + method(0, plain()))
    kinds = [type(m) for _, m in peer.methods()]
    assert kinds == [spec.Connection.Start, spec.Connection.Tune]


def test_amqp_0_9_header_is_treated_as_0_9_1() -> None:
    peer = Peer()
    peer.send(b"AMQP\x01\x01\x00\x09")
    start = peer.one(spec.Connection.Start)
    assert (start.version_major, start.version_minor) == (0, 9)


@pytest.mark.parametrize(
    "data",
    [
        b"AMQP\x00\x00\x08\x00",  # AMQP 0-8
        b"AMQP\x00\x01\x00\x00",  # AMQP 1.0
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01",  # a TLS client hello
        b"\x00",  # cannot start an accepted header: refused without waiting for 8 octets
    ],
)
def test_wrong_protocol_header_is_answered_with_ours_then_closed(data: bytes) -> None:
    peer = Peer()
    peer.send(data)
    assert peer.conn.data_to_send(peer.now) == b"AMQP\x00\x00\x09\x01"
    assert peer.state is State.CLOSED
    peer.send(PROTOCOL_HEADER)  # nothing more is read
    assert peer.conn.data_to_send(peer.now) == b""


@pytest.mark.parametrize("start_ok", [plain(), amqplain()], ids=["PLAIN", "AMQPLAIN"])
def test_plain_and_amqplain_authenticate_and_tune_has_rabbitmq_defaults(start_ok: spec.Connection.StartOk) -> None:
    peer = Peer()
    peer.send(PROTOCOL_HEADER)
    peer.frames()
    peer.send_method(0, start_ok)
    tune = peer.one(spec.Connection.Tune, 0)
    assert (tune.channel_max, tune.frame_max, tune.heartbeat) == (2047, 131072, 60)
    assert peer.state is State.AWAIT_TUNE_OK
    peer.send_method(0, spec.Connection.TuneOk(2047, 131072, 60))
    peer.send_method(0, spec.Connection.Open("/"))
    peer.one(spec.Connection.OpenOk, 0)
    assert peer.state is State.OPEN
    assert peer.conn.user is not None and peer.conn.user.name == "guest"


@pytest.mark.parametrize("start_ok", [plain("guest", "wrong"), amqplain("guest", "wrong"), plain("nobody", "guest"),
                                      spec.Connection.StartOk({}, "PLAIN", b"garbage")],
                         ids=["PLAIN", "AMQPLAIN", "unknown-user", "malformed"])
def test_bad_credentials_get_connection_close_403(start_ok: spec.Connection.StartOk) -> None:
    peer = Peer()
    peer.send(PROTOCOL_HEADER)
    peer.frames()
    peer.send_method(0, start_ok)
    close = peer.connection_close()
    assert close.reply_code == 403
    assert close.reply_text.startswith("ACCESS_REFUSED - Login was refused")
    # Nothing but close-ok is heard now.
    peer.send_method(0, spec.Connection.TuneOk(2047, 131072, 0))
    peer.send_method(0, spec.Connection.Open("/"))
    assert peer.methods() == [] and peer.state is State.CLOSING
    peer.send_method(0, spec.Connection.CloseOk())
    assert peer.state is State.CLOSED


def test_unknown_mechanism_is_refused_403() -> None:
    peer = Peer()
    peer.send(PROTOCOL_HEADER)
    peer.frames()
    peer.send_method(0, spec.Connection.StartOk({}, "EXTERNAL", b""))
    assert peer.connection_close().reply_code == 403


def test_guest_is_refused_from_a_non_loopback_address_but_other_users_are_not() -> None:
    users = Users.from_settings(Settings())
    users.add(User("alice", hash_password("secret")))
    peer = Peer(users=users, loopback=False)
    peer.send(PROTOCOL_HEADER)
    peer.frames()
    peer.send_method(0, plain("guest", "guest"))
    assert peer.connection_close().reply_code == 403

    remote = Peer(users=users, loopback=False)
    remote.handshake(start_ok=plain("alice", "secret"))


def test_unknown_vhost_is_refused_530() -> None:
    peer = Peer()
    peer.send(PROTOCOL_HEADER)
    peer.send_method(0, plain())
    peer.send_method(0, spec.Connection.TuneOk(2047, 131072, 0))
    peer.frames()
    peer.send_method(0, spec.Connection.Open("no-such-vhost"))
    close = peer.connection_close()
    assert close.reply_code == 530
    assert (close.failing_class_id, close.failing_method_id) == (10, 40)


def test_vhost_the_user_may_not_open_is_refused_530() -> None:
    broker = Broker()
    broker.add_vhost("private")
    users = Users.from_settings(Settings())
    users.add(User("bob", hash_password("pw"), {"/": FULL}))
    peer = Peer(broker, users)
    peer.send(PROTOCOL_HEADER)
    peer.send_method(0, plain("bob", "pw"))
    peer.send_method(0, spec.Connection.TuneOk(2047, 131072, 0))
    peer.frames()
    peer.send_method(0, spec.Connection.Open("private"))
    assert peer.connection_close().reply_code == 530


def test_client_may_lower_the_tune_values() -> None:
    peer = Peer()
    peer.handshake(channel_max=10, frame_max=8192, heartbeat=0)
    assert (peer.conn.channel_max, peer.conn.frame_max, peer.conn.heartbeat) == (10, 8192, 0)
    assert peer.conn.next_deadline() is None  # heartbeat 0: no timers at all
    # Deliveries are split to the client's frame_max.
    peer.open_channel(1)
    peer.call(1, spec.Queue.Declare("q"), spec.Queue.DeclareOk)
    peer.send(publish(1, "q", b"x" * 20000, frame_max=8192))
    peer.send_method(1, spec.Basic.Get("q", no_ack=True))
    frames = peer.frames()
    bodies = [f for f in frames if isinstance(f, BodyFrame)]
    assert b"".join(f.payload for f in bodies) == b"x" * 20000
    assert all(len(f.payload) <= 8192 - 8 for f in bodies) and len(bodies) == 3


@pytest.mark.parametrize("tune_ok", [spec.Connection.TuneOk(2047, 1 << 20, 0), spec.Connection.TuneOk(2047, 1000, 0),
                                     spec.Connection.TuneOk(5000, 131072, 0)],
                         ids=["frame_max-too-big", "frame_max-too-small", "channel_max-too-big"])
def test_tune_ok_beyond_the_limits_is_refused_530(tune_ok: spec.Connection.TuneOk) -> None:
    # RabbitMQ 3.10 drops the socket without a word here; we say why.
    peer = Peer()
    peer.send(PROTOCOL_HEADER)
    peer.send_method(0, plain())
    peer.frames()
    peer.send_method(0, tune_ok)
    assert peer.connection_close().reply_code == 530


# -- framing errors --------------------------------------------------------------


def test_frame_larger_than_frame_max_is_501() -> None:
    peer = Peer()
    peer.handshake(frame_max=4096)
    peer.open_channel(1)
    peer.send(method(1, spec.Basic.Publish("", "q")) + header(1, 10000) + body(1, b"x" * 5000))
    close = peer.connection_close()
    assert close.reply_code == 501 and close.reply_text.startswith("FRAME_ERROR")


def test_frame_max_is_4096_until_tune_ok() -> None:
    peer = Peer()
    peer.send(PROTOCOL_HEADER)
    peer.frames()
    big = spec.Connection.StartOk({"padding": "x" * 5000}, "PLAIN", b"\0guest\0guest")
    peer.send_method(0, big)
    assert peer.connection_close().reply_code == 501


def test_oversized_frame_is_refused_from_its_header_before_the_payload_arrives() -> None:
    peer = opened()
    peer.send(struct.pack(">BHI", 3, 1, 10_000_000))  # claims 10 MB; nothing buffered
    assert peer.connection_close().reply_code == 501


def test_bad_frame_end_is_501() -> None:
    peer = opened()
    peer.send(frame(1, 1, spec.encode_method(spec.Basic.Qos(0, 1, False)), end=b"\x00"))
    close = peer.connection_close()
    assert close.reply_code == 501


def test_a_frame_error_names_no_method_even_after_a_good_frame_in_the_same_read() -> None:
    # RabbitMQ reports class/method 0 for framing errors.
    peer = opened()
    good = method(1, spec.Basic.Qos(0, 1, False))
    peer.send(good + frame(1, 1, spec.encode_method(spec.Basic.Qos(0, 1, False)), end=b"\x00"))
    got = peer.methods()
    assert isinstance(got[0][1], spec.Basic.QosOk)
    close = got[1][1]
    assert close.reply_code == 501 and (close.failing_class_id, close.failing_method_id) == (0, 0)


def test_an_unexpected_exception_closes_the_connection_541(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(self: object, *args: object) -> None:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(ServerConnection, "_queue_purge", boom)
    broker = Broker()
    peer = opened(broker=broker)
    peer.call(1, spec.Queue.Declare("q"), spec.Queue.DeclareOk)
    peer.send(publish(1, "q", b"m"))
    peer.send_method(1, spec.Basic.Consume("q", "c"))
    assert [type(m) for _, m in peer.methods()] == [spec.Basic.ConsumeOk, spec.Basic.Deliver]
    peer.send_method(1, spec.Queue.Purge("q"))
    got = peer.methods()
    close = got[-1][1]
    assert isinstance(close, spec.Connection.Close) and peer.state is State.CLOSING
    assert (close.reply_code, close.reply_text) == (541, "INTERNAL_ERROR - internal error")
    assert (close.failing_class_id, close.failing_method_id) == (50, 30)
    # What the connection held is given back.
    assert broker.vhosts["/"].queues["q"].message_count == 1


@pytest.mark.parametrize("data", [frame(9, 0, b"x"), frame(8, 0, b"x"), frame(1, 1, b"\x00")],
                         ids=["frame-type-9", "heartbeat-with-payload", "short-method"])
def test_malformed_frames_are_501(data: bytes) -> None:
    peer = opened()
    peer.send(data)
    assert peer.connection_close().reply_code == 501


def test_method_frame_where_a_content_header_was_expected_is_505() -> None:
    peer = opened()
    peer.send(method(1, spec.Basic.Publish("", "q")) + method(1, spec.Basic.Qos(0, 1, False)))
    close = peer.connection_close()
    assert close.reply_code == 505
    # (RabbitMQ names the publish, 60/40, as the failing method; we name the frame that broke the sequence.)


@pytest.mark.parametrize("data", [header(1, 3) + body(1, b"abc"), body(1, b"abc")], ids=["header", "body"])
def test_content_without_a_publish_is_505(data: bytes) -> None:
    peer = opened()
    peer.send(data)
    assert peer.connection_close().reply_code == 505


@pytest.mark.parametrize("data", [header(0, 3), HEARTBEAT[:1] + b"\x00\x01" + HEARTBEAT[3:]],
                         ids=["content-on-channel-0", "heartbeat-on-channel-1"])
def test_frames_on_the_wrong_channel_are_505(data: bytes) -> None:
    peer = opened()
    peer.send(data)
    assert peer.connection_close().reply_code == 505


def test_body_longer_than_its_header_said_is_501() -> None:
    peer = opened()
    peer.send(method(1, spec.Basic.Publish("", "q")) + header(1, 2) + body(1, b"abc"))
    assert peer.connection_close().reply_code == 501


@pytest.mark.parametrize("ids", [(60, 999), (77, 10), (10, 99)])
def test_unknown_class_or_method_is_540(ids: tuple[int, int]) -> None:
    # RabbitMQ 3.10 drops the TCP connection without a close here.
    peer = opened()
    peer.send(frame(1, 0 if ids[0] == 10 else 1, struct.pack(">HH", *ids)))
    close = peer.connection_close()
    assert close.reply_code == 540


def test_immediate_publish_is_540_with_rabbitmqs_text() -> None:
    peer = opened()
    peer.send(publish(1, "q", b"abc", immediate=True))
    close = peer.connection_close()
    assert (close.reply_code, close.reply_text) == (540, "NOT_IMPLEMENTED - immediate=true")
    assert (close.failing_class_id, close.failing_method_id) == (60, 40)


# -- connection and channel state ------------------------------------------------


@pytest.mark.parametrize("frames", [method(1, spec.Channel.Open()), method(1, spec.Queue.Declare("q")), header(1, 3)],
                         ids=["channel.open", "queue.declare", "content-header"])
def test_channel_frames_before_connection_open_are_505_like_rabbitmq(frames: bytes) -> None:
    # RabbitMQ 3.10 answers anything on a channel between tune-ok and
    # connection.open with 505 UNEXPECTED_FRAME (class/method 0).
    peer = Peer()
    peer.send(PROTOCOL_HEADER)
    peer.send_method(0, plain())
    peer.send_method(0, spec.Connection.TuneOk(2047, 131072, 0))
    peer.frames()
    peer.send(frames)
    assert peer.connection_close().reply_code == 505


def test_channel_open_before_tune_ok_closes_the_connection() -> None:
    # RabbitMQ 3.10 just drops the socket here; a close with 505 says more.
    peer = Peer()
    peer.send(PROTOCOL_HEADER)
    peer.send_method(0, plain())
    peer.frames()
    peer.send_method(1, spec.Channel.Open())
    assert peer.connection_close().reply_code == 505


def test_method_on_an_unopened_channel_is_504() -> None:
    peer = Peer()
    peer.handshake()
    peer.send_method(3, spec.Queue.Declare("q"))
    close = peer.connection_close()
    assert close.reply_code == 504
    assert (close.failing_class_id, close.failing_method_id) == (50, 10)


def test_second_channel_open_is_504() -> None:
    peer = opened()
    peer.send_method(1, spec.Channel.Open())
    close = peer.connection_close()
    assert close.reply_code == 504
    assert "second 'channel.open'" in close.reply_text


@pytest.mark.parametrize("m", [spec.Basic.Qos(0, 1, False), spec.Connection.TuneOk(2047, 131072, 0), plain()],
                         ids=["basic.qos", "tune-ok-again", "start-ok-again"])
def test_out_of_place_method_on_channel_0_is_504(m: spec.Method) -> None:
    # RabbitMQ: 504 "unexpected method in connection state running".
    peer = opened()
    peer.send_method(0, m)
    close = peer.connection_close()
    assert close.reply_code == 504
    assert (close.failing_class_id, close.failing_method_id) == (m.class_id, m.method_id)


def test_channel_max_counts_open_channels() -> None:
    peer = Peer()
    peer.handshake(channel_max=2)
    peer.open_channel(65535)
    peer.open_channel(7)
    peer.send_method(1, spec.Channel.Open())
    assert peer.connection_close().reply_code == 530


def test_channel_max_zero_allows_any_number_of_channels_up_to_65535() -> None:
    peer = Peer(channel_max=0)
    peer.handshake(channel_max=0)
    for number in range(1, 3000):
        peer.open_channel(number)
    assert len(peer.conn._channels) == 2999


def test_channel_error_closes_only_that_channel() -> None:
    peer = Peer()
    peer.handshake()
    peer.open_channel(1)
    peer.open_channel(2)
    peer.send_method(1, spec.Queue.Declare("missing", passive=True))
    close = peer.one(spec.Channel.Close, 1)
    assert close.reply_code == 404
    assert close.reply_text == "NOT_FOUND - no queue 'missing' in vhost '/'"
    assert (close.failing_class_id, close.failing_method_id) == (50, 10)
    assert peer.state is State.OPEN
    # Channel 1 is deaf until close-ok: methods, content, even a publish are ignored.
    peer.send_method(1, spec.Queue.Declare("q1"))
    peer.send(publish(1, "q1", b"lost"))
    peer.send(header(1, 3) + body(1, b"abc"))
    peer.send_method(1, spec.Basic.Qos(0, 1, False))
    assert peer.methods() == []
    assert "q1" not in peer.broker.vhosts["/"].queues
    # Channel 2 carries on.
    ok = peer.call(2, spec.Queue.Declare("q2"), spec.Queue.DeclareOk)
    assert ok.queue == "q2"
    # close-ok frees the number; it opens again.
    peer.send_method(1, spec.Channel.CloseOk())
    assert peer.methods() == []
    peer.open_channel(1)
    peer.call(1, spec.Queue.Declare("q2", passive=True), spec.Queue.DeclareOk)


def test_client_channel_close_crossing_ours_gets_close_ok() -> None:
    peer = opened()
    peer.send_method(1, spec.Queue.Declare("missing", passive=True))
    assert peer.one(spec.Channel.Close, 1).reply_code == 404
    peer.send_method(1, spec.Channel.Close(200, "bye"))
    assert isinstance(peer.one(spec.Channel.CloseOk, 1), spec.Channel.CloseOk)
    peer.open_channel(1)  # the number is free again
    assert peer.state is State.OPEN


def test_channel_close_by_the_client() -> None:
    peer = opened()
    peer.call(1, spec.Channel.Close(200, "bye"), spec.Channel.CloseOk)
    peer.send_method(1, spec.Channel.CloseOk())  # stray close-ok on a closed channel: ignored, like RabbitMQ
    assert peer.methods() == [] and peer.state is State.OPEN
    peer.open_channel(1)


def test_message_over_max_size_closes_the_channel_406_and_the_connection_carries_on() -> None:
    peer = Peer(Broker(max_message_size=1000))
    peer.handshake()
    peer.open_channel(1)
    peer.open_channel(2)
    peer.call(2, spec.Queue.Declare("q"), spec.Queue.DeclareOk)
    peer.send(publish(1, "q", b"x" * 1001))
    close = peer.one(spec.Channel.Close, 1)
    assert close.reply_code == 406 and "1001" in close.reply_text
    assert (close.failing_class_id, close.failing_method_id) == (60, 40)
    assert peer.state is State.OPEN
    peer.send(publish(2, "q", b"x" * 1000))  # at the limit is fine
    ok = peer.call(2, spec.Queue.Declare("q", passive=True), spec.Queue.DeclareOk)
    assert ok.message_count == 1


def test_a_publish_read_in_one_piece_is_the_publish_read_byte_by_byte() -> None:
    """Method, header and body in one read take the engine's shortcut
    (FrameDecoder.take_content); the same bytes a byte at a time take the
    content state machine. Queues, confirms and deliveries must not tell."""
    properties = Properties(content_type="text/plain", headers={"k": "v"}, delivery_mode=2, priority=3)
    messages = [publish(1, "q", b"a" * 200), publish(1, "q", b""), publish(1, "q", b"b" * 300, frame_max=128),
                method(1, spec.Basic.Publish("", "q")) + header(1, 5, properties) + body(1, b"hello")]
    delivered = []
    for pieces in ([b"".join(messages)], [bytes([octet]) for octet in b"".join(messages)]):
        peer = opened()
        peer.call(1, spec.Queue.Declare("q"), spec.Queue.DeclareOk)
        peer.call(1, spec.Confirm.Select(), spec.Confirm.SelectOk)
        for piece in pieces:
            peer.send(piece)
        acks = [m for _, m in peer.methods()]
        assert all(isinstance(a, spec.Basic.Ack) for a in acks) and acks[-1].delivery_tag == 4, acks
        peer.send_method(1, spec.Basic.Consume("q", "c", no_ack=True))
        frames = peer.frames()[1:]  # after the consume-ok
        delivered.append([(f.properties, f.body_size) if isinstance(f, HeaderFrame) else f.payload
                          for f in frames if isinstance(f, HeaderFrame | BodyFrame)])
    whole, byte_by_byte = delivered
    assert whole == byte_by_byte
    assert whole[-2:] == [(properties, 5), b"hello"] and whole[:2] == [(Properties(), 200), b"a" * 200]


def test_acks_read_together_free_credit_once_and_another_method_sees_their_deliveries_first() -> None:
    """Acks in one read are settled one by one and their credit filled
    after the last (or before any other method): the consumer gets what
    its prefetch allows, in order, once each; a basic.cancel behind acks
    in the same read comes after the deliveries those acks allowed, as if
    each ack had been handled alone."""
    peer = opened()
    peer.call(1, spec.Queue.Declare("q"), spec.Queue.DeclareOk)
    peer.send(b"".join(publish(1, "q", b"%d" % n) for n in range(10)))
    peer.call(1, spec.Basic.Qos(0, 3, False), spec.Basic.QosOk)
    peer.send_method(1, spec.Basic.Consume("q", "c"))
    delivered = [m for _, m in peer.methods() if isinstance(m, spec.Basic.Deliver)]
    assert [d.delivery_tag for d in delivered] == [1, 2, 3]
    peer.send(b"".join(method(1, spec.Basic.Ack(tag)) for tag in (1, 2, 3)))
    delivered = [m for _, m in peer.methods()]
    assert [(type(d), d.delivery_tag) for d in delivered] == [(spec.Basic.Deliver, tag) for tag in (4, 5, 6)]
    peer.send(method(1, spec.Basic.Ack(4)) + method(1, spec.Basic.Ack(5)) + method(1, spec.Basic.Cancel("c")))
    replies = [m for _, m in peer.methods()]
    assert [(type(m), getattr(m, "delivery_tag", None)) for m in replies] == [
        (spec.Basic.Deliver, 7), (spec.Basic.Deliver, 8), (spec.Basic.CancelOk, None)]
    queue = peer.broker.vhosts["/"].queues["q"]
    assert (queue.message_count, queue.unacked) == (2, 3)  # 9 and 10 ready; 6, 7 and 8 delivered, unacked


def test_a_run_of_acks_taken_at_once_settles_as_acks_handled_one_by_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine takes a run of acks at once (FrameDecoder.take_acks):
    with an unknown tag in the middle, the acks before it are settled, the
    channel closes with 406 naming it, the acks behind it are ignored and
    the close requeues what was still unacked. The same read handled a
    frame at a time (no acks taken) must leave the same replies and queue;
    so must the acks read one at a time, each read's credit used at once."""

    def outcome(pieces: list[bytes]) -> tuple[object, ...]:
        peer = opened()
        peer.call(1, spec.Queue.Declare("q"), spec.Queue.DeclareOk)
        peer.send(b"".join(publish(1, "q", b"%d" % n) for n in range(8)))
        peer.call(1, spec.Basic.Qos(0, 6, False), spec.Basic.QosOk)
        peer.send_method(1, spec.Basic.Consume("q", "c"))
        assert [m.delivery_tag for _, m in peer.methods() if isinstance(m, spec.Basic.Deliver)] == [1, 2, 3, 4, 5, 6]
        for piece in pieces:
            peer.send(piece)
        replies = [(type(m), getattr(m, "delivery_tag", None), getattr(m, "reply_code", None),
                    getattr(m, "reply_text", None)) for _, m in peer.methods()]
        queue = peer.broker.vhosts["/"].queues["q"]
        return replies, queue.message_count, queue.unacked, queue.stats.ack

    acks = [method(1, spec.Basic.Ack(tag)) for tag in (1, 2, 3, 99, 4, 5)]
    taken = outcome([b"".join(acks)])
    close = (spec.Channel.Close, None, 406, "PRECONDITION_FAILED - unknown delivery tag 99")
    assert taken == ([close], 8 - 3, 0, 3)  # 1-3 acked; the close requeued 4-6
    # Read one at a time, the credit of 1-3 is used before 99 comes.
    assert outcome(acks) == ([(spec.Basic.Deliver, 7, None, None), (spec.Basic.Deliver, 8, None, None), close],
                             8 - 3, 0, 3)
    monkeypatch.setattr(FrameDecoder, "take_acks", lambda self, prefix: [])
    assert outcome([b"".join(acks)]) == taken


def test_publishes_that_repeat_the_one_before_are_routed_alike_and_anything_else_ends_the_run() -> None:
    """A run of publishes with the same method and header bytes is taken
    at once (FrameDecoder.take_repeated_content): each is routed and
    confirmed as if read alone, in order; a publish elsewhere, with other
    properties, of another body size, in several body frames or on
    another channel ends the run and takes the usual way."""
    peer = opened()
    peer.open_channel(2)
    for name in ("a", "b"):
        peer.call(1, spec.Queue.Declare(name), spec.Queue.DeclareOk)
    peer.call(1, spec.Confirm.Select(), spec.Confirm.SelectOk)
    tagged = Properties(content_type="text/plain", headers={"k": 1})
    frames = [publish(1, "a", b"a%d" % n) for n in range(4)]
    frames += [publish(1, "b", b"b0"), publish(1, "a", b"a4")]
    frames += [method(1, spec.Basic.Publish("", "a")) + header(1, 2, tagged) + body(1, b"a5"),
               method(1, spec.Basic.Publish("", "a")) + header(1, 2, tagged) + body(1, b"a6"),
               publish(1, "a", b"a77"), publish(2, "a", b"c0"), publish(1, "a", b"a88", frame_max=10),
               publish(1, "a", b"a9")]
    peer.send(b"".join(frames))
    confirms = [m for _, m in peer.methods() if isinstance(m, spec.Basic.Ack)]
    assert max(m.delivery_tag for m in confirms) == 11 and all(m.multiple or m.delivery_tag == 1 for m in confirms)
    assert [body for body, _ in _taken(peer.broker, "b")] == [b"b0"]
    assert _taken(peer.broker, "a") == [(b"a%d" % n, Properties()) for n in range(5)] + [(b"a5", tagged), (b"a6", tagged)] + [
        (b"a77", Properties()), (b"c0", Properties()), (b"a88", Properties()), (b"a9", Properties())]


def test_a_run_of_repeated_publishes_stops_at_a_channel_error() -> None:
    """The first publish of a run that the channel refuses closes it (404
    here) and the repeats after it are ignored, as on a closing channel;
    another channel's publish in the same read still goes through."""
    peer = opened()
    peer.open_channel(2)
    peer.call(2, spec.Queue.Declare("q"), spec.Queue.DeclareOk)
    peer.send(b"".join([publish(1, "q", b"x", exchange="missing")] * 3 + [publish(2, "q", b"y")]))
    close = peer.one(spec.Channel.Close, 1)
    assert close.reply_code == 404
    assert [body for body, _ in _taken(peer.broker, "q")] == [b"y"]


def _taken(broker: Broker, queue: str) -> list[tuple[bytes, Properties]]:
    """Everything in ``queue``, taken with basic.get (body, properties)."""
    ch = broker.connect().open_channel()
    got = []
    while (result := ch.get(queue, now=0.0, no_ack=True)) is not None:
        assert not isinstance(result, WaitForDisk)
        got.append((result.message.body, result.message.properties))
    return got


def test_a_streams_deliveries_carry_their_offset_whoever_published() -> None:
    """A stream keeps messages as published and the engine adds
    x-stream-offset on the way out: spliced into the header bytes of a
    message published over AMQP, encoded for one published in process
    (no header bytes), and in place of a publisher's own value."""
    peer = opened()
    peer.call(1, spec.Queue.Declare("s", durable=True, arguments={"x-queue-type": "stream"}), spec.Queue.DeclareOk)
    mine = Properties(content_type="text/plain", headers={"k": "v"})
    peer.send(method(1, spec.Basic.Publish("", "s")) + header(1, 2, mine) + body(1, b"m0"))
    core = peer.broker.connect().open_channel()
    core.publish(b"m1", routing_key="s", properties=Properties(headers={"x-stream-offset": 99}), now=0.0)
    core.publish(b"m2", routing_key="s", now=0.0)
    peer.call(1, spec.Basic.Qos(0, 10, False), spec.Basic.QosOk)
    peer.send_method(1, spec.Basic.Consume("s", "c", arguments={"x-stream-offset": "first"}))
    headers = [f.properties for f in peer.frames() if isinstance(f, HeaderFrame)]
    assert headers == [
        Properties(content_type="text/plain", headers={"k": "v", "x-stream-offset": 0}),
        Properties(headers={"x-stream-offset": 1}),
        Properties(headers={"x-stream-offset": 2}),
    ]
    stream = peer.broker.vhosts["/"].queues["s"]
    assert stream.message_count == 3


def test_connection_close_from_the_client() -> None:
    peer = opened()
    peer.call(0, spec.Connection.Close(200, "bye"), spec.Connection.CloseOk)
    assert peer.state is State.CLOSED


def test_after_a_connection_error_only_close_ok_is_heard() -> None:
    peer = opened()
    peer.send_method(1, spec.Channel.Open())
    peer.connection_close()
    peer.send_method(1, spec.Queue.Declare("q"))
    peer.send(publish(1, "q", b"abc"))
    assert peer.methods() == [] and peer.state is State.CLOSING
    peer.send_method(0, spec.Connection.CloseOk())
    assert peer.state is State.CLOSED


def test_garbage_after_our_connection_close_ends_the_connection_without_a_second_close() -> None:
    # The stream cannot be read any more, so waiting for close-ok would be pointless.
    peer = opened()
    peer.send_method(1, spec.Channel.Open())
    peer.connection_close()
    peer.send(b"\xff" * 20)
    assert peer.methods() == [] and peer.state is State.CLOSED


def test_connection_close_crossing_ours_gets_close_ok() -> None:
    peer = opened()
    peer.send_method(1, spec.Channel.Open())
    peer.connection_close()
    peer.call(0, spec.Connection.Close(200, "bye"), spec.Connection.CloseOk)
    assert peer.state is State.CLOSED


# -- heartbeats --------------------------------------------------------------------


def test_heartbeats_are_sent_when_idle_and_a_silent_client_is_dropped() -> None:
    peer = Peer()
    peer.handshake(heartbeat=1)
    peer.open_channel(1)
    peer.call(1, spec.Queue.Declare("q"), spec.Queue.DeclareOk)
    peer.send(publish(1, "q", b"m"))
    peer.send_method(1, spec.Basic.Consume("q", "c"))
    assert [type(f) for f in peer.frames()] == [MethodFrame, MethodFrame, HeaderFrame, BodyFrame]
    assert peer.conn.next_deadline() == pytest.approx(peer.now + 0.5)

    heartbeats = 0
    while peer.state is State.OPEN:
        peer.now = peer.conn.next_deadline()
        peer.conn.tick(peer.now)
        heartbeats += sum(isinstance(f, HeartbeatFrame) for f in peer.frames())
        assert peer.now <= 2.0 + 1e-9
    assert peer.now == pytest.approx(2.0)  # two intervals of silence
    assert heartbeats >= 3
    assert peer.state is State.CLOSED and "heartbeat" in (peer.conn.close_reason or "")
    queue = peer.broker.vhosts["/"].queues["q"]
    assert queue.message_count == 1 and queue.consumer_count == 0
    # The requeued message is flagged redelivered.
    other = Peer(peer.broker)
    other.handshake()
    other.open_channel(1)
    other.send_method(1, spec.Basic.Get("q", no_ack=True))
    assert other.methods()[0][1].redelivered is True


def test_a_client_that_sends_heartbeats_stays() -> None:
    peer = Peer()
    peer.handshake(heartbeat=1)
    for _ in range(10):
        peer.now += 0.9
        peer.send(HEARTBEAT)
        peer.conn.tick(peer.now)
    assert peer.state is State.OPEN


def test_before_the_connection_is_open_only_the_handshake_deadline_counts() -> None:
    peer = Peer()
    peer.send(PROTOCOL_HEADER)
    assert peer.conn.next_deadline() == peer.now + 10.0  # the handshake timeout, no heartbeat
    peer.frames()
    peer.conn.tick(peer.now + 9.9)
    assert peer.conn.state is State.AWAIT_START_OK and peer.frames() == []  # no heartbeat either
    peer.conn.tick(peer.now + 10.0)
    assert peer.conn.state is State.CLOSED and peer.conn.close_reason == "handshake timeout"


def test_a_close_ok_that_never_comes_ends_the_connection_at_its_deadline() -> None:
    peer = opened()
    peer.send_method(3, spec.Queue.Declare("q"))  # channel 3 is not open: 504
    assert peer.connection_close().reply_code == 504
    assert peer.conn.state is State.CLOSING and peer.conn.next_deadline() == peer.now + 5.0
    peer.conn.tick(peer.now + 5.0)
    assert peer.conn.state is State.CLOSED and peer.conn.next_deadline() is None


PERSISTENT = Properties(delivery_mode=2)


def on_disk(tmp_path: Any, **options: Any) -> tuple[Broker, DiskJournal]:
    """A broker with a disk journal that nothing writes until :func:`write_all`."""
    broker = Broker()
    journal = DiskJournal(tmp_path, **options)
    journal.recover(broker, now=0.0)
    return broker, journal


def write_all(journal: DiskJournal) -> None:
    """What a store driver's write does: the batch on disk, then the commit step."""
    pending, position = journal.take_batch()
    journal.log.write_and_sync(pending)
    journal.commit(position)


def test_reading_pauses_while_a_commit_waits_for_the_disk(tmp_path: Any) -> None:
    broker, journal = on_disk(tmp_path)
    peer = opened(broker=broker)
    readable = []
    peer.conn.on_readable = lambda: readable.append(True)
    peer.call(1, spec.Queue.Declare("dq", durable=True), spec.Queue.DeclareOk)
    peer.call(1, spec.Tx.Select(), spec.Tx.SelectOk)
    assert peer.conn.wants_read()
    peer.send(method(1, spec.Basic.Publish("", "dq")) + header(1, 1, PERSISTENT) + body(1, b"x"))
    peer.send_method(1, spec.Tx.Commit())
    assert not peer.conn.wants_read() and readable == []  # the driver stops reading here
    behind = method(1, spec.Queue.Declare("behind"))
    peer.send(behind)  # what the driver read before it stopped waits, unhandled
    assert peer.conn.buffered_input == len(behind) and "behind" not in broker.vhosts["/"].queues
    write_all(journal)
    peer.conn.resume(peer.now)
    assert peer.conn.wants_read() and readable == [True]
    assert peer.conn.buffered_input == 0 and "behind" in broker.vhosts["/"].queues
    journal.close()


def test_no_heartbeat_timeout_while_the_engine_is_not_reading(tmp_path: Any) -> None:
    """While a commit waits for the disk the driver reads nothing, so the
    client's heartbeats sit unread: that silence is ours (RabbitMQ pauses its
    heartbeat monitor while a connection is blocked). Two intervals of real
    silence after reading resumes still drop the client."""
    broker, journal = on_disk(tmp_path)
    peer = Peer(broker)
    peer.handshake(heartbeat=1)
    peer.open_channel(1)
    peer.call(1, spec.Queue.Declare("dq", durable=True), spec.Queue.DeclareOk)
    peer.call(1, spec.Tx.Select(), spec.Tx.SelectOk)
    peer.send(method(1, spec.Basic.Publish("", "dq")) + header(1, 1, PERSISTENT) + body(1, b"x"))
    peer.send_method(1, spec.Tx.Commit())
    assert not peer.conn.wants_read()
    heartbeats = 0
    while peer.now < 10.0:  # a disk outage of ten heartbeat intervals
        deadline = peer.conn.next_deadline()
        assert deadline is not None and deadline <= peer.now + 0.5  # we keep sending ours
        peer.now = deadline
        peer.conn.tick(peer.now)
        heartbeats += sum(isinstance(f, HeartbeatFrame) for f in peer.frames())
        assert peer.state is State.OPEN
    assert heartbeats >= 19
    write_all(journal)
    peer.conn.resume(peer.now)
    assert peer.conn.wants_read() and peer.one(spec.Tx.CommitOk, 1)
    resumed = peer.now
    peer.conn.tick(resumed + 1.9)
    assert peer.state is State.OPEN  # the silence is counted from the resume
    peer.conn.tick(resumed + 2.0)
    assert peer.state is State.CLOSED and "heartbeat" in (peer.conn.close_reason or "")
    journal.close()


def test_reading_pauses_while_replies_over_the_high_water_mark_wait_for_the_driver() -> None:
    peer = opened()
    peer.call(1, spec.Confirm.Select(), spec.Confirm.SelectOk)
    # Mandatory and unroutable: each publish earns a basic.return with its body.
    one = publish(1, "nowhere", b"z" * 60000, mandatory=True)
    sent = 0
    while peer.conn.wants_read():
        peer.send(one)
        sent += 1
    assert peer.conn.buffered_output > engine.OUTPUT_HIGH_WATER
    assert sent <= engine.OUTPUT_HIGH_WATER // 60000 + 1
    peer.frames()  # the driver takes the output
    assert peer.conn.wants_read()


def test_a_client_that_reads_none_of_its_replies_is_still_timed_out_by_heartbeat() -> None:
    peer = Peer()
    peer.handshake(heartbeat=10)
    peer.open_channel(1)
    peer.call(1, spec.Confirm.Select(), spec.Confirm.SelectOk)
    while peer.conn.wants_read():
        peer.send(publish(1, "nowhere", b"z" * 60000, mandatory=True))
    peer.now += 20  # two intervals, with nothing taken from us and nothing read
    peer.conn.tick(peer.now)
    assert peer.state is State.CLOSED and "heartbeat" in (peer.conn.close_reason or "")


def test_reading_pauses_while_a_basic_get_waits_for_paged_messages(tmp_path: Any) -> None:
    broker, journal = on_disk(tmp_path, queue_budget=2)
    peer = opened(broker=broker)
    peer.call(1, spec.Queue.Declare("dq", durable=True), spec.Queue.DeclareOk)
    for i in range(10):
        peer.send(method(1, spec.Basic.Publish("", "dq")) + header(1, 1, PERSISTENT)
                  + body(1, b"%d" % i))
    write_all(journal)
    got = []
    while peer.conn.wants_read():
        peer.send_method(1, spec.Basic.Get("dq", no_ack=True))
        got += [m for _, m in peer.methods() if isinstance(m, spec.Basic.GetOk)]
    assert 0 < len(got) < 10  # what was in memory; the next ones are on disk
    peer.send(method(1, spec.Basic.Get("dq", no_ack=True)))  # a driver's last read, kept
    assert peer.conn.buffered_input > 0
    answered = 0
    while not peer.conn.wants_read():  # each page-in brings one message back (budget 2)
        for queue, priority, refs in journal.page_in_work():
            queue.paged_in(priority, refs, journal.read_paged(refs), peer.now)
        peer.conn.resume(peer.now)
        answered += sum(isinstance(m, spec.Basic.GetOk) for _, m in peer.methods())
    assert answered == 2 and peer.conn.buffered_input == 0
    journal.close()


# -- lifecycle ---------------------------------------------------------------------


def _consume(peer: Peer, queue: str, count: int, **options: Any) -> list[int]:
    peer.send_method(1, spec.Basic.Consume(queue, "c", **options))
    tags = [m.delivery_tag for _, m in peer.methods() if isinstance(m, spec.Basic.Deliver)]
    assert len(tags) == count
    return tags


def test_connection_lost_requeues_unacked_messages_as_redelivered() -> None:
    broker = Broker()
    peer = opened(broker=broker)
    peer.call(1, spec.Queue.Declare("q"), spec.Queue.DeclareOk)
    for i in range(3):
        peer.send(publish(1, "q", b"m%d" % i))
    tags = _consume(peer, "q", 3)
    peer.send_method(1, spec.Basic.Ack(tags[0]))
    peer.conn.connection_lost(peer.now)
    assert peer.state is State.CLOSED
    queue = broker.vhosts["/"].queues["q"]
    assert queue.message_count == 2 and queue.consumer_count == 0
    other = opened(broker=broker)
    other.send_method(1, spec.Basic.Consume("q", "c2"))
    delivers = [m for _, m in other.methods() if isinstance(m, spec.Basic.Deliver)]
    assert [m.redelivered for m in delivers] == [True, True]


def test_connection_lost_deletes_exclusive_and_auto_delete_queues() -> None:
    broker = Broker()
    peer = opened(broker=broker)
    peer.call(1, spec.Queue.Declare("excl", exclusive=True), spec.Queue.DeclareOk)
    peer.call(1, spec.Queue.Declare("auto", auto_delete=True), spec.Queue.DeclareOk)
    peer.call(1, spec.Basic.Consume("auto", "c"), spec.Basic.ConsumeOk)
    queues = broker.vhosts["/"].queues
    assert {"excl", "auto"} <= set(queues)
    peer.conn.connection_lost(peer.now)
    assert "excl" not in queues and "auto" not in queues


def test_connection_lost_twice_and_after_close_is_harmless() -> None:
    peer = opened()
    peer.call(0, spec.Connection.Close(200, "bye"), spec.Connection.CloseOk)
    peer.conn.connection_lost(peer.now)
    peer.conn.connection_lost(peer.now)
    assert peer.state is State.CLOSED


# -- flow control --------------------------------------------------------------------


def test_slow_reader_buffers_at_most_the_channel_limit() -> None:
    broker = Broker()
    consumer = opened(broker=broker)
    consumer.call(1, spec.Queue.Declare("q"), spec.Queue.DeclareOk)
    consumer.call(1, spec.Basic.Consume("q", "c", no_ack=True), spec.Basic.ConsumeOk)
    publisher = opened(broker=broker)
    for _ in range(5000):
        publisher.send(publish(1, "q", b"x" * 100))
    core = consumer.conn._channels[1].core
    queue = broker.vhosts["/"].queues["q"]
    # The consumer never reads: the channel holds at most its limit, the rest waits in the queue.
    assert core.buffered <= core.buffer_limit
    assert queue.message_count == 5000 - core.buffered
    assert queue.message_count >= 4000
    # Other connections keep working meanwhile.
    publisher.call(1, spec.Queue.Declare("q", passive=True), spec.Queue.DeclareOk)
    # Reading drains it all, a bounded chunk per data_to_send.
    received = 0
    for _ in range(1000):
        chunk = consumer.conn.data_to_send(consumer.now)
        if not chunk:
            break
        assert len(chunk) <= 512 * 1024
        received += chunk.count(b"\x00\x3c\x00\x3c")  # basic.deliver class/method ids
        assert core.buffered <= core.buffer_limit
    assert received == 5000 and queue.message_count == 0


def test_confirms_are_coalesced_and_buffered_output_is_reported() -> None:
    peer = opened()
    peer.call(1, spec.Queue.Declare("q"), spec.Queue.DeclareOk)
    peer.call(1, spec.Confirm.Select(), spec.Confirm.SelectOk)
    peer.send(b"".join(publish(1, "q", b"m") for _ in range(100)))
    assert peer.conn.buffered_output > 0
    acks = peer.methods()
    assert [(type(m), m.delivery_tag, m.multiple) for _, m in acks] == [(spec.Basic.Ack, 100, True)]
    assert peer.conn.buffered_output == 0


def test_commit_ok_and_later_frames_wait_until_persistent_messages_are_on_disk(tmp_path: Any) -> None:
    """As in RabbitMQ: tx.commit-ok means the committed persistent messages
    are durable. Frames behind the commit wait, so replies keep their order."""
    broker, journal = on_disk(tmp_path)
    peer = opened(broker=broker)
    peer.call(1, spec.Queue.Declare("dq", durable=True), spec.Queue.DeclareOk)
    peer.call(1, spec.Tx.Select(), spec.Tx.SelectOk)
    peer.send(method(1, spec.Basic.Publish("", "dq")) + header(1, 1, PERSISTENT) + body(1, b"x"))
    peer.send_method(1, spec.Tx.Commit())
    peer.send_method(1, spec.Queue.Declare("dq", passive=True))
    assert peer.methods() == []  # nothing until the disk has the message
    write_all(journal)
    peer.conn.resume(peer.now)
    replies = [type(m) for _, m in peer.methods()]
    assert replies == [spec.Tx.CommitOk, spec.Queue.DeclareOk]
    journal.close()


def test_a_refused_publish_is_nacked_at_once_not_behind_confirms_waiting_for_the_disk(tmp_path: Any) -> None:
    broker, journal = on_disk(tmp_path)
    peer = opened(broker=broker)
    peer.call(1, spec.Queue.Declare("dq", durable=True), spec.Queue.DeclareOk)
    peer.call(1, spec.Confirm.Select(), spec.Confirm.SelectOk)
    peer.send(method(1, spec.Basic.Publish("", "dq")) + header(1, 1, PERSISTENT) + body(1, b"1"))
    assert peer.methods() == []  # waits for the disk
    journal.disk_low = True  # now refused
    peer.send(method(1, spec.Basic.Publish("", "dq")) + header(1, 1, PERSISTENT) + body(1, b"2"))
    peer.send(method(1, spec.Basic.Publish("", "dq")) + header(1, 1, Properties()) + body(1, b"3"))
    replies = [(type(m), m.delivery_tag, m.multiple) for _, m in peer.methods()]
    assert replies == [(spec.Basic.Nack, 2, False), (spec.Basic.Ack, 3, False)]
    journal.close()


# -- the memory alarm ------------------------------------------------------------


def blocked_capable(peer: Peer, **handshake: Any) -> None:
    start_ok = spec.Connection.StartOk({"product": "test", "capabilities": {"connection.blocked": True}}, "PLAIN",
                                       b"\0guest\0guest")
    peer.handshake(start_ok=start_ok, **handshake)
    peer.open_channel()


def test_the_memory_alarm_stops_reading_publishers_only_and_pauses_their_heartbeat_timeout() -> None:
    broker = Broker()
    publisher, consumer = Peer(broker), Peer(broker)
    blocked_capable(publisher, heartbeat=10)
    blocked_capable(consumer)
    publisher.call(1, spec.Queue.Declare("q"), spec.Queue.DeclareOk)
    consumer.call(1, spec.Basic.Consume("q", "c"), spec.Basic.ConsumeOk)

    publisher.conn.set_memory_alarm(True, publisher.now)
    consumer.conn.set_memory_alarm(True, consumer.now)
    # Nobody has published yet: nobody is blocked, nobody told.
    assert publisher.conn.wants_read() and consumer.conn.wants_read()
    assert publisher.methods() == [] and consumer.methods() == []

    publisher.send(publish(1, "q", b"taken"))  # this one is taken, then reading stops
    assert publisher.one(spec.Connection.Blocked, 0).reason == "low on memory"
    assert not publisher.conn.wants_read()
    assert consumer.conn.wants_read()  # consumers keep draining
    assert [f.payload for f in consumer.frames() if isinstance(f, BodyFrame)] == [b"taken"]
    # Not read for 25 s, two 10 s heartbeat intervals: silence the broker caused.
    publisher.now += 25
    publisher.conn.tick(publisher.now)
    assert publisher.state is State.OPEN

    publisher.conn.set_memory_alarm(False, publisher.now)
    assert isinstance(publisher.one(spec.Connection.Unblocked, 0), spec.Connection.Unblocked)
    assert publisher.conn.wants_read()
