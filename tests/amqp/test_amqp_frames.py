"""Frame decoding from arbitrary chunks, frame_max, body splitting, protocol header."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amqlite.amqp import frames, spec
from amqlite.amqp.frames import BodyFrame, FrameDecoder, HeaderFrame, HeartbeatFrame, MethodFrame
from amqlite.amqp.properties import BasicProperties, encode_content_header
from amqlite.core.errors import FrameError, NotImplemented_, SyntaxError_, UnexpectedFrame

PROPS = BasicProperties(content_type="text/plain", delivery_mode=2, headers={"k": [1, "v"]})
EMPTY_HEADER = encode_content_header(60, 0, BasicProperties())


def _stream() -> bytes:
    """A realistic inbound conversation: methods, a two-frame body, heartbeats, acks."""
    return b"".join(
        [
            frames.encode_method_frame(0, spec.Connection.TuneOk(2047, 4096, 60)),
            frames.encode_method_frame(1, spec.Channel.Open()),
            frames.encode_method_frame(1, spec.Basic.Publish("amq.topic", "a.b", mandatory=True)),
            frames.encode_content(1, 60, PROPS, b"x" * 5000, 4096),
            frames.HEARTBEAT_FRAME,
            frames.encode_method_frame(1, spec.Basic.Publish("", "q")),
            frames.encode_content(1, 60, BasicProperties(), b"", 4096),
            frames.encode_method_frame(2, spec.Basic.Ack(7, multiple=True)),
        ]
    )


def _drain(decoder: FrameDecoder) -> list[frames.Frame]:
    out = []
    while (frame := decoder.next_frame()) is not None:
        out.append(frame)
    return out


def _drain_all(data: bytes, frame_max: int = 4096) -> list[frames.Frame]:
    decoder = FrameDecoder(frame_max)
    decoder.feed(data)
    return _drain(decoder)


EXPECTED = _drain_all(_stream())


def test_whole_stream_decodes_to_the_expected_frames() -> None:
    header = encode_content_header(60, 5000, PROPS)
    expected = [
        MethodFrame(0, spec.Connection.TuneOk(2047, 4096, 60)),
        MethodFrame(1, spec.Channel.Open()),
        MethodFrame(1, spec.Basic.Publish("amq.topic", "a.b", True, False)),
        HeaderFrame(1, 60, 5000, PROPS, header),
        BodyFrame(1, b"x" * 4088),
        BodyFrame(1, b"x" * 912),
        HeartbeatFrame(0),
        MethodFrame(1, spec.Basic.Publish("", "q")),
        HeaderFrame(1, 60, 0, BasicProperties(), encode_content_header(60, 0, BasicProperties())),
        MethodFrame(2, spec.Basic.Ack(7, True)),
    ]
    assert EXPECTED == expected
    # NamedTuples compare as tuples; make sure the frame types match too.
    assert [type(f) for f in EXPECTED] == [type(f) for f in expected]


def test_byte_by_byte() -> None:
    decoder = FrameDecoder(4096)
    out = []
    for i in range(len(data := _stream())):
        decoder.feed(data[i : i + 1])
        out.extend(_drain(decoder))
    assert out == EXPECTED


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 6000), max_size=40), st.booleans())
def test_random_splits(cuts: list[int], drain_between: bool) -> None:
    data = _stream()
    decoder = FrameDecoder(4096)
    out: list[frames.Frame] = []
    pos = 0
    for size in cuts:
        decoder.feed(memoryview(data)[pos : pos + size])
        pos += size
        if drain_between:
            out.extend(_drain(decoder))
    decoder.feed(bytearray(data[pos:]))
    out.extend(_drain(decoder))
    assert out == EXPECTED
    assert decoder.next_frame() is None


def test_partial_frame_is_none_not_an_error() -> None:
    decoder = FrameDecoder(4096)
    decoder.feed(frames.HEARTBEAT_FRAME[:7])
    assert decoder.next_frame() is None
    decoder.feed(b"")
    assert decoder.next_frame() is None
    decoder.feed(frames.HEARTBEAT_FRAME[7:])
    assert decoder.next_frame() == HeartbeatFrame(0)


# --------------------------------------------------------------------------- frame_max


def _body_frame(size: int) -> bytes:
    return struct.pack(">BHI", 3, 1, size) + b"b" * size + b"\xce"


def test_payload_up_to_frame_max_is_accepted_like_rabbitmq() -> None:
    # RabbitMQ lets the payload reach frame_max (an 8-octet fudge for sloppy clients).
    decoder = FrameDecoder(4096)
    decoder.feed(_body_frame(4096))
    assert decoder.next_frame() == BodyFrame(1, b"b" * 4096)


def test_oversized_frame_is_refused_from_its_header() -> None:
    decoder = FrameDecoder(4096)
    decoder.feed(_body_frame(4097)[:7])  # no payload yet: refuse before buffering it
    with pytest.raises(FrameError) as info:
        decoder.next_frame()
    assert info.value.reply_code == 501


def test_frame_max_can_be_raised_after_tune_and_zero_means_unlimited() -> None:
    decoder = FrameDecoder(frames.FRAME_MIN_SIZE)
    decoder.frame_max = 131072
    decoder.feed(_body_frame(100_000))
    assert decoder.next_frame() == BodyFrame(1, b"b" * 100_000)
    decoder.frame_max = 0
    decoder.feed(_body_frame(1_000_000))
    assert decoder.next_frame() == BodyFrame(1, b"b" * 1_000_000)
    assert decoder.frame_max == 0


# --------------------------------------------------------------------------- malformed frames


@pytest.mark.parametrize(
    ("data", "error", "code"),
    [
        (frames.HEARTBEAT_FRAME[:-1] + b"\x00", FrameError, 501),
        (b"\x09\x00\x01\x00\x00\x00\x00\xce", FrameError, 501),
        (b"\x08\x00\x01\x00\x00\x00\x00\xce", UnexpectedFrame, 505),
        (b"\x08\x00\x00\x00\x00\x00\x01x\xce", FrameError, 501),
        (b"\x03\x00\x00\x00\x00\x00\x01x\xce", UnexpectedFrame, 505),
        (b"\x02\x00\x00\x00\x00\x00\x0e" + EMPTY_HEADER + b"\xce", UnexpectedFrame, 505),
        (b"\x01\x00\x01\x00\x00\x00\x03\x00\x3c\x00\xce", FrameError, 501),
        (b"\x01\x00\x01\x00\x00\x00\x04\x00\x3c\x03\xe7\xce", NotImplemented_, 540),
        (b"\x01\x00\x01\x00\x00\x00\x0a\x00\x3c\x00\x50" + b"\x00" * 6 + b"\xce", FrameError, 501),
        (b"\x02\x00\x01\x00\x00\x00\x0e\x00\x32" + EMPTY_HEADER[2:] + b"\xce", UnexpectedFrame, 505),
    ],
    ids=[
        "bad frame end",
        "unknown frame type",
        "heartbeat on channel 1",
        "heartbeat with payload",
        "body on channel 0",
        "header on channel 0",
        "method payload under 4 octets",
        "unknown method id",
        "truncated basic.ack",
        "header of class queue",
    ],
)
def test_malformed_frames(data: bytes, error: type[Exception], code: int) -> None:
    decoder = FrameDecoder(4096)
    decoder.feed(data)
    with pytest.raises(error) as info:
        decoder.next_frame()
    assert info.value.reply_code == code  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- a publish's content at once


def _content(channel: int, size: int, *, body_channel: int | None = None, declared: int | None = None,
             frame_max: int = 4096, header: bytes | None = None) -> bytes:
    """A content header and the body frames of a ``size``-octet message."""
    payload = header if header is not None else encode_content_header(60, size if declared is None else declared, PROPS)
    body, step = b"b" * size, frame_max - 8
    bodies = [struct.pack(">BHI", 3, body_channel or channel, len(part)) + part + b"\xce"
              for part in (body[i : i + step] for i in range(0, size, step))]
    return struct.pack(">BHI", 2, channel, len(payload)) + payload + b"\xce" + b"".join(bodies)


def test_take_content_takes_a_header_and_its_one_body_frame() -> None:
    decoder = FrameDecoder(4096)
    decoder.feed(_content(1, 100) + frames.HEARTBEAT_FRAME)
    assert decoder.take_content(1, 1000) == (PROPS, encode_content_header(60, 100, PROPS), b"b" * 100)
    assert _drain(decoder) == [HeartbeatFrame(0)]


@pytest.mark.parametrize(
    ("data", "max_body"),
    [
        (_content(2, 100), 1000),
        (_content(1, 100, body_channel=2), 1000),
        (_content(1, 5000), 10_000),
        (_content(1, 100), 99),
        (_content(1, 100, declared=200), 1000),
        (_content(1, 0), 1000),
        (_content(1, 100, header=b"\x00\x3c\x00\x00" + b"\x00" * 8 + b"\x80\x00"), 1000),
        (_content(1, 100)[:-1], 1000),
        (_content(1, 100)[:30], 1000),
        (frames.HEARTBEAT_FRAME + _content(1, 100), 1000),
    ],
    ids=["header on another channel", "body on another channel", "body in two frames", "body over the limit",
         "body shorter than declared", "empty body", "malformed header", "body frame incomplete",
         "header frame incomplete", "not a header next"],
)
def test_take_content_takes_nothing_unless_the_whole_content_is_there(data: bytes, max_body: int) -> None:
    """Whatever is not one header and one body frame of the same channel
    goes the usual way, frame by frame, with the same frames or errors."""
    expected = FrameDecoder(4096)
    expected.feed(data)
    decoder = FrameDecoder(4096)
    decoder.feed(data)
    assert decoder.take_content(1, max_body) is None
    assert decoder.buffered == len(data)
    try:
        wanted: object = _drain(expected)
    except Exception as error:  # noqa: BLE001 - the same error either way
        wanted = type(error)
        with pytest.raises(type(error)):
            _drain(decoder)
    else:
        assert _drain(decoder) == wanted


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 2), st.integers(0, 300)), min_size=1, max_size=20),
       st.lists(st.integers(1, 400), max_size=10))
def test_take_content_after_each_publish_gives_what_frame_by_frame_decoding_gives(
    messages: list[tuple[int, int]], cuts: list[int]
) -> None:
    """Publishes of random sizes (some split over body frames, some empty)
    on two channels, fed in random pieces: taking content at once where it
    can be taken yields the same messages as decoding every frame."""
    data = b"".join(frames.encode_method_frame(channel, spec.Basic.Publish("", "q"))
                    + frames.encode_content(channel, 60, PROPS, bytes([size % 256]) * size, 128)
                    for channel, size in messages)
    expected = _drain_all(data, 128)
    decoder = FrameDecoder(128)
    got: list[frames.Frame] = []
    pos = 0
    for size in [*cuts, len(data)]:
        decoder.feed(data[pos : pos + size])
        pos += size
        while (frame := decoder.next_frame()) is not None:
            got.append(frame)
            if isinstance(frame, MethodFrame) and (taken := decoder.take_content(frame.channel, 200)) is not None:
                properties, header, body = taken
                got += [HeaderFrame(frame.channel, 60, len(body), properties, header), BodyFrame(frame.channel, body)]
    assert got == expected


def _ack_frame(channel: int, tag: int, bits: int = 0, end: int = 0xCE) -> bytes:
    return struct.pack(">BHIHHQBB", 1, channel, 13, 60, 80, tag, bits, end)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["ack 1", "ack 2", "multiple", "bits", "heartbeat", "publish", "bad end"]),
                min_size=1, max_size=30),
       st.lists(st.integers(1, 60), max_size=10))
def test_take_acks_after_each_ack_gives_what_frame_by_frame_decoding_gives(kinds: list[str], cuts: list[int]) -> None:
    """Acks on two channels among other frames (a multiple ack, one with a
    reserved bit set, heartbeats, a publish, a frame whose end octet is
    wrong), fed in random pieces: taking the acks behind each ack yields
    the same acks, in order, and the same error, as decoding every frame."""
    made = {"ack 1": lambda tag: _ack_frame(1, tag), "ack 2": lambda tag: _ack_frame(2, tag),
            "multiple": lambda tag: _ack_frame(1, tag, bits=1), "bits": lambda tag: _ack_frame(1, tag, bits=2),
            "heartbeat": lambda tag: frames.HEARTBEAT_FRAME,
            "publish": lambda tag: frames.encode_method_frame(1, spec.Basic.Publish("", "q")),
            "bad end": lambda tag: _ack_frame(1, tag, end=0xCD)}
    data = b"".join(made[kind](tag) for tag, kind in enumerate(kinds, 1))

    def decoded(take: bool) -> tuple[list[tuple[int, object]], type[Exception] | None]:
        decoder, got, pos = FrameDecoder(4096), [], 0
        try:
            for size in [*cuts, len(data)]:
                decoder.feed(data[pos : pos + size])
                pos += size
                while (frame := decoder.next_frame()) is not None:
                    got.append((getattr(frame, "channel", 0), getattr(frame, "method", frame)))
                    if take and isinstance(frame, MethodFrame) and type(frame.method) is spec.Basic.Ack:
                        if not frame.method.multiple:
                            got += [(frame.channel, spec.Basic.Ack(tag))
                                    for tag in decoder.take_acks(frames.ack_prefix(frame.channel))]
        except FrameError as error:
            return got, type(error)
        return got, None

    assert decoded(True) == decoded(False)


# --------------------------------------------------------------------------- encoding


@pytest.mark.parametrize("frame_max", [4096, 131072, 0])
@pytest.mark.parametrize("extra", [-1, 0, 1])
@pytest.mark.parametrize("chunks", [0, 1, 2, 3])
def test_body_split_at_frame_max_boundaries(frame_max: int, extra: int, chunks: int) -> None:
    size = max(0, chunks * ((frame_max or 4096) - 8) + extra)
    body = bytes(i % 251 for i in range(size))
    expected_frames = -(-size // (frame_max - 8)) if frame_max else int(size > 0)
    for encoded in (
        frames.encode_content(5, 60, PROPS, body, frame_max),
        frames.encode_deliver(
            5, "ctag", 1, True, "ex", "rk", encode_content_header(60, size, PROPS), body, frame_max
        ),
    ):
        out = _drain_all(encoded, frame_max)
        bodies = [f for f in out if isinstance(f, BodyFrame)]
        assert len(bodies) == expected_frames
        assert all(len(f.payload) <= (frame_max or size + 8) - 8 for f in bodies)
        assert all(len(f.payload) == frame_max - 8 for f in bodies[:-1])
        assert b"".join(f.payload for f in bodies) == body
        header = next(f for f in out if isinstance(f, HeaderFrame))
        assert (header.channel, header.body_size, header.properties) == (5, size, PROPS)


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 2**16 - 1),
    st.text(max_size=60),
    st.integers(0, 2**64 - 1),
    st.booleans(),
    st.text(max_size=60),
    st.text(max_size=60),
    st.integers(0, 9000),
    st.sampled_from([0, 4096, 8192]),
)
def test_encode_deliver_equals_the_generic_encoding(
    channel: int,
    tag: str,
    delivery_tag: int,
    redelivered: bool,
    exchange: str,
    routing_key: str,
    size: int,
    frame_max: int,
) -> None:
    body = b"b" * size
    header = encode_content_header(60, size, PROPS)
    expected = frames.encode_method_frame(
        channel, spec.Basic.Deliver(tag, delivery_tag, redelivered, exchange, routing_key)
    ) + frames.encode_content(channel, 60, PROPS, body, frame_max)
    args = (tag, delivery_tag, redelivered, exchange, routing_key, header, body, frame_max)
    assert frames.encode_deliver(channel, *args) == expected


def test_encode_content_frames_reuses_a_header_payload() -> None:
    header = encode_content_header(60, 5000, PROPS)
    expected = frames.encode_content(1, 60, PROPS, b"x" * 5000, 4096)
    assert frames.encode_content_frames(1, header, b"x" * 5000, 4096) == expected


def test_encode_deliver_matches_method_plus_content() -> None:
    header = encode_content_header(60, 3, PROPS)
    expected = frames.encode_method_frame(
        9, spec.Basic.Deliver("ctag", 2**40, True, "amq.direct", "rk")
    ) + frames.encode_content(9, 60, PROPS, b"abc", 131072)
    assert frames.encode_deliver(9, "ctag", 2**40, True, "amq.direct", "rk", header, b"abc", 131072) == expected
    assert frames.encode_deliver(9, "ctag", 2**40, True, "amq.direct", "rk", header, b"abc", 0) == expected


def test_encode_deliver_reuses_the_published_header_payload() -> None:
    header = next(f for f in EXPECTED if isinstance(f, HeaderFrame))
    body = b"x" * header.body_size
    out = FrameDecoder(4096)
    out.feed(frames.encode_deliver(3, "c", 1, False, "amq.topic", "a.b", header.payload, body, 4096))
    delivered = _drain(out)
    assert delivered[0] == MethodFrame(3, spec.Basic.Deliver("c", 1, False, "amq.topic", "a.b"))
    assert delivered[1].properties == PROPS  # type: ignore[union-attr]


def test_encode_deliver_rejects_long_names() -> None:
    with pytest.raises(SyntaxError_):
        frames.encode_deliver(1, "c" * 256, 1, False, "", "q", encode_content_header(60, 0, PROPS), b"", 4096)


def test_method_frame_and_heartbeat_bytes() -> None:
    close_ok = b"\x01\x00\x00\x00\x00\x00\x04\x00\x0a\x00\x33\xce"
    assert frames.encode_method_frame(0, spec.Connection.CloseOk()) == close_ok
    assert frames.HEARTBEAT_FRAME == b"\x08\x00\x00\x00\x00\x00\x00\xce"


# --------------------------------------------------------------------------- protocol header


@pytest.mark.parametrize(
    ("data", "result"),
    [
        (b"AMQP\x00\x00\x09\x01", "ok"),
        (b"AMQP\x00\x00\x09\x01\x01\x00", "ok"),
        (b"AMQP\x01\x01\x00\x09", "ok"),  # the 0-9 header, which RabbitMQ accepts too
        (b"", "need_more"),
        (b"AM", "need_more"),
        (b"AMQP\x00\x00\x09", "need_more"),
        (b"AMQP\x00\x00\x08\x00", "bad"),
        (b"AMQP\x03\x01\x00\x00", "bad"),  # AMQP 1.0 SASL
        (b"GET / HTTP/1.1\r\n", "bad"),
        (b"\x16\x03\x01", "bad"),  # TLS client hello
        (b"amqp", "bad"),
    ],
)
def test_protocol_header(data: bytes, result: str) -> None:
    assert frames.parse_protocol_header(data) == result
    assert frames.parse_protocol_header(memoryview(data)) == result


def test_protocol_header_answer() -> None:
    assert frames.PROTOCOL_HEADER == b"AMQP\x00\x00\x09\x01"
