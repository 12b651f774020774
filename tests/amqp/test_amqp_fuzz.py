"""Hostile input: random and mutated bytes may only ever raise AMQP errors with a
reply code, and the decoder always terminates."""

from __future__ import annotations

import os
import struct

from amqp_strategies import methods_of, properties
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amqlite.amqp import frames, spec, values
from amqlite.amqp.frames import FrameDecoder
from amqlite.amqp.properties import decode_content_header, encode_content_header
from amqlite.core.errors import AMQPError

DECODE_CODES = {501, 505, 540}  # frame error, unexpected frame, not implemented
# `make fuzz` style: AMQLITE_FUZZ_EXAMPLES=5000 for a longer campaign.
FUZZ = settings(
    max_examples=int(os.environ.get("AMQLITE_FUZZ_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

any_method = st.sampled_from(sorted(spec.METHODS.values(), key=lambda c: c.name)).flatmap(methods_of)


@st.composite
def valid_streams(draw: st.DrawFn) -> bytes:
    parts = [frames.HEARTBEAT_FRAME]
    for method in draw(st.lists(any_method, min_size=1, max_size=4)):
        channel = draw(st.integers(0, 3))
        parts.append(frames.encode_method_frame(channel, method))
        if draw(st.booleans()):
            body = draw(st.binary(max_size=300))
            parts.append(frames.encode_content(channel or 1, 60, draw(properties), body, 4096))
    return b"".join(parts)


@st.composite
def mutated(draw: st.DrawFn, source: st.SearchStrategy[bytes]) -> bytes:
    data = bytearray(draw(source))
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "insert", "delete", "byte"]))
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        else:
            data[pos] = draw(st.sampled_from([0x00, 0xFF, 0xCE, 0x7F, 0x80]))
    return bytes(data)


def _run_decoder(data: bytes, cuts: list[int]) -> int:
    """Feed in pieces until exhausted or an AMQP error; returns the frames
    decoded. Every frame costs 8+ octets, so more frames than len/8 + 1
    would mean the decoder is going round in circles."""
    decoder = FrameDecoder(4096)
    produced = 0
    pos = 0
    try:
        for size in [*cuts, len(data)]:
            decoder.feed(data[pos : pos + size])
            pos += size
            while decoder.next_frame() is not None:
                produced += 1
                assert produced <= len(data) // 8 + 1
    except AMQPError as exc:
        assert exc.reply_code in DECODE_CODES, exc
        assert exc.connection_level
    return produced


cuts = st.lists(st.integers(1, 64), max_size=10)


@FUZZ
@given(st.binary(max_size=600), cuts)
def test_random_bytes(data: bytes, pieces: list[int]) -> None:
    assert _run_decoder(data, pieces) <= len(data) // 8 + 1


@FUZZ
@given(mutated(valid_streams()), cuts)
def test_mutated_streams(data: bytes, pieces: list[int]) -> None:
    assert _run_decoder(data, pieces) <= len(data) // 8 + 1


@FUZZ
@given(st.binary(max_size=200), st.binary(max_size=200))
def test_random_frame_bodies_behind_valid_headers(method_args: bytes, header_props: bytes) -> None:
    """Random payloads rarely reach the argument decoders by chance; put them behind real ids."""
    for class_id, method_id in spec.METHODS:
        payload = struct.pack(">HH", class_id, method_id) + method_args
        try:
            spec.decode_method(payload)
        except AMQPError as exc:
            assert exc.reply_code in DECODE_CODES
    try:
        decode_content_header(struct.pack(">HHQ", 60, 0, 5) + header_props)
    except AMQPError as exc:
        assert exc.reply_code in DECODE_CODES


@FUZZ
@given(mutated(any_method.map(spec.encode_method)))
def test_mutated_method_payloads(payload: bytes) -> None:
    try:
        spec.decode_method(payload)
    except AMQPError as exc:
        assert exc.reply_code in DECODE_CODES


@FUZZ
@given(mutated(properties.map(lambda p: encode_content_header(60, 0, p))))
def test_mutated_content_headers(payload: bytes) -> None:
    try:
        decode_content_header(payload)
    except AMQPError as exc:
        assert exc.reply_code in DECODE_CODES


@FUZZ
@given(st.binary(max_size=300))
def test_random_tables(data: bytes) -> None:
    decoders = (values.decode_table, values.decode_table_entries, values.decode_value, values.decode_array)
    for decode in decoders:
        try:
            decode(data)
        except AMQPError as exc:
            assert exc.reply_code == 501
