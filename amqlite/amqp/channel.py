"""The protocol state of one channel, written down in one place (as h11's
``_state.py``): which frame it expects next, and the content being
assembled for a basic.publish.

::

    AWAIT_METHOD --basic.publish--> AWAIT_HEADER --header, size 0--> AWAIT_METHOD
                                        |
                                        +--header, size n--> AWAIT_BODY --body, n bytes in all--> AWAIT_METHOD
    any --channel error (we send channel.close)--> CLOSING --close-ok or close--> (forgotten)

A frame that does not fit the state is a connection error, as in RabbitMQ
(505 UNEXPECTED_FRAME); in CLOSING every frame but close-ok and close is
ignored.
"""

from __future__ import annotations

import enum

from ..core import errors
from ..core.channel import Channel as CoreChannel
from ..core.message import Message
from . import spec
from .frames import HeaderFrame, ack_prefix
from .properties import BASIC_CLASS_ID


class ChannelState(enum.Enum):
    AWAIT_METHOD = "awaiting a method"
    AWAIT_HEADER = "awaiting a content header"
    AWAIT_BODY = "awaiting content body"
    CLOSING = "closing"


class Channel:
    """One open channel of a connection: its state, the content of the
    publish in progress, and its confirms not yet sent."""

    __slots__ = ("number", "core", "state", "_publish", "_header", "_body", "_remaining", "confirms", "unwaited",
                 "last_queue", "ack_prefix")

    def __init__(self, number: int, core: CoreChannel) -> None:
        self.number = number
        self.core = core
        self.state = ChannelState.AWAIT_METHOD
        self._publish: spec.Basic.Publish | None = None
        self._header: HeaderFrame | None = None
        self._body: list[bytes] = []
        self._remaining = 0
        #: (sequence number, acked?, journal position it waits for) of
        #: publishes not yet confirmed on the wire, in order.
        self.confirms: list[tuple[int, bool, int]] = []
        #: Of those, how many wait for no journal position (nacks,
        #: transient messages) and came since the last pass over them.
        self.unwaited = 0
        #: The queue last declared here: an empty queue name means it (AMQP 0-9-1, as RabbitMQ).
        self.last_queue = ""
        #: How a basic.ack frame on this channel begins (FrameDecoder.take_acks).
        self.ack_prefix = ack_prefix(number)

    @property
    def closing(self) -> bool:
        return self.state is ChannelState.CLOSING

    def queue_name(self, name: str) -> str:
        if name:
            return name
        if not self.last_queue:
            raise errors.NotFound("no previously declared queue")
        return self.last_queue

    # -- transitions --------------------------------------------------------

    def expect_method(self, method: spec.Method) -> None:
        # RabbitMQ 3.10's texts, for a method mid-content.
        if self.state is ChannelState.AWAIT_HEADER:
            raise errors.UnexpectedFrame(
                f"expected content header for class 60, got non content header frame instead ({method.name})"
            )
        if self.state is ChannelState.AWAIT_BODY:
            raise errors.UnexpectedFrame(f"expected content body, got non content body frame instead ({method.name})")

    def begin_publish(self, method: spec.Basic.Publish) -> None:
        """A basic.publish arrived while awaiting a method (the caller checked)."""
        self._publish = method
        self.state = ChannelState.AWAIT_HEADER

    def content_header(self, frame: HeaderFrame) -> bool:
        """Take the publish's content header; True if the message is complete
        (an empty body). A body larger than allowed is the caller's check."""
        if self.state is not ChannelState.AWAIT_HEADER:
            raise errors.UnexpectedFrame(f"unexpected content header frame on channel {self.number}")
        if frame.class_id != BASIC_CLASS_ID:
            raise errors.UnexpectedFrame(f"content header for class {frame.class_id}, expected 60")
        self._header = frame
        self._remaining = frame.body_size
        self.state = ChannelState.AWAIT_BODY
        return not frame.body_size

    def content_body(self, payload: bytes) -> bool:
        """Take a body frame; True once the whole body has arrived."""
        if self.state is ChannelState.AWAIT_HEADER:  # RabbitMQ 3.10's words
            raise errors.UnexpectedFrame("expected content header for class 60, got non content header frame instead")
        if self.state is not ChannelState.AWAIT_BODY:
            raise errors.UnexpectedFrame(f"unexpected content body frame on channel {self.number}")
        self._remaining -= len(payload)
        if self._remaining < 0:
            raise errors.FrameError(f"content body on channel {self.number} is longer than its header said")
        self._body.append(payload)
        return not self._remaining

    @property
    def partial_bytes(self) -> int:
        """Body bytes received of a message not yet complete."""
        if self.state is not ChannelState.AWAIT_BODY or self._header is None:
            return 0
        return self._header.body_size - self._remaining

    def take_message(self) -> tuple[spec.Basic.Publish, Message]:
        """The completed publish and its message; back to AWAIT_METHOD."""
        method, header = self._publish, self._header
        assert method is not None and header is not None
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        # _reset(AWAIT_METHOD), inline: once per published message.
        self._publish = self._header = None
        self._body = []
        self.state = ChannelState.AWAIT_METHOD
        return method, Message(method.exchange, method.routing_key, header.properties, body, header.payload)

    def abandon_publish(self) -> spec.Basic.Publish | None:
        """Drop the publish in progress (its body is refused); returns it."""
        method = self._publish
        self._reset(ChannelState.AWAIT_METHOD)
        return method

    def start_closing(self) -> None:
        """We sent channel.close: from now on only close-ok (or close) counts."""
        self._reset(ChannelState.CLOSING)

    def _reset(self, state: ChannelState) -> None:
        self._publish = self._header = None
        self._body = []
        self._remaining = 0
        self.state = state
