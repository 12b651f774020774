"""AMQP 0-9-1 frame layer, sans-IO: bytes in, frames out; frames in, bytes out.

A frame is type (octet), channel (short), payload size (long), payload and the
end octet 0xCE. :class:`FrameDecoder` takes whatever the socket gave
(``feed``) and hands out complete frames (``next_frame``), returning None
while a frame is still partial. Errors follow what RabbitMQ answers
(checked against RabbitMQ 3.10 and rabbit_reader.erl):

===========================================  ==============================
input                                        error
===========================================  ==============================
payload size over frame_max                  FrameError 501 (from the frame
                                             header, before the payload is
                                             buffered)
unknown frame type                           FrameError 501
end octet other than 0xCE                    FrameError 501
heartbeat with a payload                     FrameError 501
method payload under 4 octets                FrameError 501
method arguments that do not decode exactly  FrameError 501 "cannot decode"
shortstr that is not UTF-8                   FrameError 501
unknown class or method id                   NotImplemented_ 540 (RabbitMQ
                                             drops the TCP connection)
heartbeat on a channel other than 0          UnexpectedFrame 505
content header or body on channel 0          UnexpectedFrame 505
content header of a class other than basic,
or with a non-zero weight                    UnexpectedFrame 505
===========================================  ==============================

Frame sequencing (a header must follow a content method, body sizes must
add up, the 16 MiB message limit) belongs to the channel state machine:
RabbitMQ's answers there are 505 and 501 respectively.
"""

from __future__ import annotations

import struct
from typing import Literal, NamedTuple

from amqlite.defaults import FRAME_MIN_SIZE
from amqlite.amqp.properties import BasicProperties, decode_content_header_at, encode_content_header
from amqlite.amqp.spec import Basic, Method, decode_method_at, encode_method
from amqlite.core.errors import AMQPError, FrameError, SyntaxError_, UnexpectedFrame

FRAME_METHOD = 1
FRAME_HEADER = 2
FRAME_BODY = 3
FRAME_HEARTBEAT = 8
FRAME_END = 0xCE
#: Smallest frame_max a peer may negotiate, and RabbitMQ's limit until tune-ok.
#: Bytes a frame adds around its payload (7 header + 1 end).
FRAME_OVERHEAD = 8

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
#: RabbitMQ treats the 0-9 header like 0-9-1; so do we.
_ACCEPTED_HEADERS = (PROTOCOL_HEADER, b"AMQP\x01\x01\x00\x09")
HEARTBEAT_FRAME = b"\x08\x00\x00\x00\x00\x00\x00\xce"

_FRAME_HEAD = struct.Struct(">BHI")
_unpack_head = _FRAME_HEAD.unpack_from
_new = tuple.__new__
_FRAME_TYPES = (FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT)
_END_AND_HEAD = struct.Struct(">BBHI")  # end octet of one frame + header of the next
#: A basic.ack frame: its head and method ids (a prefix per channel,
#: ack_prefix), then delivery tag, bits and the end octet.
_ACK_HEAD = struct.Struct(">BHIHH")
_ACK_TAIL = struct.Struct(">QBB")
_ACK_SIZE = _ACK_HEAD.size + _ACK_TAIL.size
_DELIVER_HEAD = struct.Struct(">BHIHHB")  # frame header, class and method ids, consumer-tag length
_DELIVER_MID = struct.Struct(">QBB")  # delivery tag, redelivered, exchange length
_UINT8 = struct.Struct(">B")
_END = b"\xce"


class MethodFrame(NamedTuple):
    channel: int
    method: Method


class HeaderFrame(NamedTuple):
    channel: int
    class_id: int
    body_size: int
    properties: BasicProperties
    #: The undecoded header payload, so a delivery can reuse it instead of re-encoding.
    payload: bytes


class BodyFrame(NamedTuple):
    channel: int
    payload: bytes


class HeartbeatFrame(NamedTuple):
    channel: int = 0


Frame = MethodFrame | HeaderFrame | BodyFrame | HeartbeatFrame

_HEARTBEAT = HeartbeatFrame(0)


def ack_prefix(channel: int) -> bytes:
    """What every basic.ack frame on ``channel`` begins with (FrameDecoder.take_acks)."""
    return _ACK_HEAD.pack(FRAME_METHOD, channel, _ACK_SIZE - FRAME_OVERHEAD, Basic.Ack.class_id, Basic.Ack.method_id)


class FrameDecoder:
    """Incremental frame decoder; one per connection.

    ``frame_max`` is the negotiated maximum frame size (0: no limit). Set it
    after tune-ok; until then RabbitMQ holds clients to FRAME_MIN_SIZE. Like
    RabbitMQ we let the payload itself reach frame_max (8 octets more than the
    spec allows), because clients commonly get the overhead wrong by 1 or 8.

    Input is kept as one bytes object plus a list of later chunks that are
    joined only once they complete a frame, so a large frame arriving in small
    reads costs linear, not quadratic, copying.
    """

    __slots__ = ("_frame_max", "_limit", "_buf", "_pos", "_pending", "_pending_size")

    def __init__(self, frame_max: int) -> None:
        self.frame_max = frame_max
        self._buf = b""
        self._pos = 0
        self._pending: list[bytes] = []
        self._pending_size = 0

    @property
    def frame_max(self) -> int:
        return self._frame_max

    @frame_max.setter
    def frame_max(self, value: int) -> None:
        self._frame_max = value
        self._limit = value or 0xFFFFFFFF  # largest payload allowed; 0 means no limit

    @property
    def buffered(self) -> int:
        """Bytes fed and not yet returned as frames."""
        return len(self._buf) - self._pos + self._pending_size

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if self._pos == len(self._buf) and not self._pending:
            self._buf = data if type(data) is bytes else bytes(data)
            self._pos = 0
        else:
            self._pending.append(bytes(data))
            self._pending_size += len(data)

    def next_frame(self) -> Frame | None:
        """The next complete frame, or None until more bytes are fed."""
        while True:
            buf = self._buf
            pos = self._pos
            available = len(buf) - pos
            if available >= 7:
                frame_type, channel, size = _unpack_head(buf, pos)
                if available > size + 7 and size <= self._limit:
                    # The common case in one straight line: complete and small enough.
                    start = pos + 7
                    end = start + size
                    if buf[end] != FRAME_END:
                        raise FrameError(f"invalid frame end marker {buf[end]:#04x}")
                    self._pos = end + 1
                    if frame_type == FRAME_METHOD:
                        return _new(MethodFrame, (channel, decode_method_at(buf, start, end)))
                    if frame_type == FRAME_BODY and channel:
                        return _new(BodyFrame, (channel, buf[start:end]))
                    if frame_type == FRAME_HEADER and channel:
                        class_id, body_size, properties = decode_content_header_at(buf, start, end)
                        return _new(HeaderFrame, (channel, class_id, body_size, properties, buf[start:end]))
                    return self._unusual_frame(frame_type, channel, size)
                if size > self._limit:
                    raise FrameError(
                        f"frame of type {frame_type} on channel {channel} has a {size}-octet payload; "
                        f"frame_max is {self.frame_max}"
                    )
                if frame_type not in _FRAME_TYPES:
                    raise FrameError(f"unknown frame type {frame_type}")
                needed = size + 8
            else:
                needed = 7
            if available + self._pending_size < needed:
                return None
            self._buf = b"".join([buf[pos:], *self._pending])
            self._pos = 0
            self._pending.clear()
            self._pending_size = 0

    def take_content(self, channel: int, max_body: int) -> tuple[BasicProperties, bytes, bytes] | None:
        """A publish's content, if the next two frames are all of it:
        a basic content header on ``channel`` of at most ``max_body``
        octets, then one body frame on ``channel`` carrying exactly that.
        Returns (properties, header payload, body) and consumes both
        frames; otherwise None and consumes nothing, and the frames take
        the usual way, one at a time, with whatever errors they earn.

        One message per frame of each kind is how clients publish small
        messages, and taking the two at once spares the content state
        machine two trips per message."""
        buf = self._buf
        pos = self._pos
        if len(buf) - pos < 16:
            return None
        frame_type, on, size = _unpack_head(buf, pos)
        header_end = pos + 7 + size
        # The body frame's header must be there too: 8 octets past this frame's end.
        if frame_type != FRAME_HEADER or on != channel or size > self._limit or len(buf) < header_end + 8:
            return None
        end, frame_type, on, body_size = _END_AND_HEAD.unpack_from(buf, header_end)
        body_start = header_end + 8
        body_end = body_start + body_size
        if (end != FRAME_END or frame_type != FRAME_BODY or on != channel or body_size > self._limit
                or not 0 < body_size <= max_body or len(buf) <= body_end or buf[body_end] != FRAME_END):
            return None
        try:
            _, declared, properties = decode_content_header_at(buf, pos + 7, header_end)  # class 60 or it raises
        except AMQPError:
            return None  # its error comes when the frame is read the usual way
        if declared != body_size:
            return None
        self._pos = body_end + 1
        return properties, buf[pos + 7 : header_end], buf[body_start:body_end]

    def take_acks(self, prefix: bytes) -> list[int]:
        """The delivery tags of the single basic.ack frames (multiple off)
        next in the buffer, complete, on the channel of ``prefix``
        (:func:`ack_prefix`), which it consumes; stops at any other frame,
        which then takes the usual way. A consumer acking every message
        sends runs of these, and each taken here is one frame, method
        object and dispatch fewer."""
        buf, pos = self._buf, self._pos
        last = len(buf) - _ACK_SIZE
        tags = []
        while pos <= last and buf.startswith(prefix, pos):
            tag, bits, end = _ACK_TAIL.unpack_from(buf, pos + _ACK_HEAD.size)
            if bits or end != FRAME_END:
                break
            tags.append(tag)
            pos += _ACK_SIZE
        self._pos = pos
        return tags

    def starts_with(self, prefix: bytes) -> bool:
        """Whether the bytes buffered next begin with ``prefix``."""
        return self._buf.startswith(prefix, self._pos)

    def take_repeated_content(self, frames: bytes, channel: int, body_size: int) -> bytes | None:
        """The body of the next publish if it repeats the one before:
        ``frames`` (that publish's method and content header frames, byte
        for byte) next, then one body frame on ``channel`` of ``body_size``
        octets, which the header declares and take_content checked. Consumes
        them and returns the body; otherwise None and consumes nothing.

        A publisher sends message after message to the same place with the
        same properties: a run of them skips decoding a method and a header
        for each."""
        buf = self._buf
        start = self._pos + len(frames)
        end = start + 7 + body_size
        if len(buf) <= end or not buf.startswith(frames, self._pos):
            return None
        frame_type, on, size = _unpack_head(buf, start)
        if frame_type != FRAME_BODY or on != channel or size != body_size or buf[end] != FRAME_END:
            return None
        self._pos = end + 1
        return buf[start + 7 : end]

    @staticmethod
    def _unusual_frame(frame_type: int, channel: int, size: int) -> Frame:
        if frame_type == FRAME_HEARTBEAT:
            if size:
                raise FrameError("heartbeat frame with a payload")
            if channel:
                raise UnexpectedFrame(f"heartbeat frame on channel {channel}")
            return _HEARTBEAT
        if frame_type in (FRAME_HEADER, FRAME_BODY):
            raise UnexpectedFrame(f"content frame of type {frame_type} on channel 0")
        raise FrameError(f"unknown frame type {frame_type}")


def parse_protocol_header(data: bytes | bytearray | memoryview) -> Literal["ok", "need_more", "bad"]:
    """Check the 8 octets a client sends first.

    "bad" as soon as the bytes so far cannot start an accepted header, so an
    HTTP or TLS client is refused without waiting for 8 octets. The server
    answers "bad" with PROTOCOL_HEADER and closes; after "ok", bytes past the
    first 8 are frames.
    """
    head = bytes(data[:8])
    if len(head) == 8:
        return "ok" if head in _ACCEPTED_HEADERS else "bad"
    return "need_more" if any(h.startswith(head) for h in _ACCEPTED_HEADERS) else "bad"


def encode_method_frame(channel: int, method: Method) -> bytes:
    payload = encode_method(method)
    return _FRAME_HEAD.pack(FRAME_METHOD, channel, len(payload)) + payload + _END


def _append_body(out: list[bytes], channel: int, body: bytes, frame_max: int) -> None:
    """Body frames of at most frame_max - 8 payload octets; none for an empty body."""
    size = len(body)
    if not size:
        return
    step = frame_max - FRAME_OVERHEAD if frame_max else size
    if step <= 0:
        raise ValueError(f"frame_max {frame_max} leaves no room for a body")
    view = memoryview(body) if size > step else body
    for start in range(0, size, step):
        chunk = view[start : start + step]
        out.append(_FRAME_HEAD.pack(FRAME_BODY, channel, len(chunk)))
        out.append(chunk)  # type: ignore[arg-type]  # join takes memoryviews
        out.append(_END)


def encode_content(
    channel: int, class_id: int, properties: BasicProperties, body: bytes, frame_max: int
) -> bytes:
    """Content header frame + body frames for a message (return, get-ok, deliver)."""
    return encode_content_frames(channel, encode_content_header(class_id, len(body), properties), body, frame_max)


def encode_content_frames(channel: int, header_payload: bytes, body: bytes, frame_max: int) -> bytes:
    """encode_content from an already encoded header payload (a Message's wire_header),
    so a message returned or fetched again is not re-encoded."""
    out = [_FRAME_HEAD.pack(FRAME_HEADER, channel, len(header_payload)), header_payload, _END]
    _append_body(out, channel, body, frame_max)
    return b"".join(out)


def encode_deliver(
    channel: int,
    consumer_tag: str,
    delivery_tag: int,
    redelivered: bool,
    exchange: str,
    routing_key: str,
    header_payload: bytes,
    body: bytes,
    frame_max: int,
) -> bytes:
    """basic.deliver + content header + body frames in one bytes object.

    ``header_payload`` is an encoded content header (HeaderFrame.payload of the
    publish, or encode_content_header) whose body size is ``len(body)``; it is
    copied as is, so a delivery never re-encodes properties. When the body
    fits one frame (the common case) the method is packed here rather than
    through encode_method, saving an object, a call and a join per delivered
    message; the tests hold both encodings equal.
    """
    size = len(body)
    if size and (size <= frame_max - 8 or not frame_max):
        # One body frame: everything in one join, with literal frame types
        # because this runs once per delivered message.
        try:
            tag = consumer_tag.encode()
            ex = exchange.encode("utf-8", "surrogateescape")
            rk = routing_key.encode("utf-8", "surrogateescape")
            return b"".join(
                (
                    _DELIVER_HEAD.pack(1, channel, 16 + len(tag) + len(ex) + len(rk), 60, 60, len(tag)),
                    tag,
                    _DELIVER_MID.pack(delivery_tag, redelivered, len(ex)),
                    ex,
                    _UINT8.pack(len(rk)),
                    rk,
                    _END_AND_HEAD.pack(0xCE, 2, channel, len(header_payload)),
                    header_payload,
                    _END_AND_HEAD.pack(0xCE, 3, channel, size),
                    body,
                    b"\xce",
                )
            )
        except (struct.error, UnicodeEncodeError) as exc:
            raise SyntaxError_(f"cannot encode basic.deliver: {exc}") from exc
    deliver = Basic.Deliver(consumer_tag, delivery_tag, redelivered, exchange, routing_key)
    return encode_method_frame(channel, deliver) + encode_content_frames(channel, header_payload, body, frame_max)
