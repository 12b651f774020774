"""Typed broker errors that carry their AMQP reply code.

Every error says whether it closes a channel or the whole connection, so the
protocol layer maps it one to one onto ``channel.close`` or
``connection.close`` and the embedded API raises it unchanged.
"""

from __future__ import annotations

# AMQP 0-9-1 reply codes (spec section 1.2, plus RabbitMQ usage).
REPLY_SUCCESS = 200
CONTENT_TOO_LARGE = 311
NO_ROUTE = 312
NO_CONSUMERS = 313
CONNECTION_FORCED = 320
INVALID_PATH = 402
ACCESS_REFUSED = 403
NOT_FOUND = 404
RESOURCE_LOCKED = 405
PRECONDITION_FAILED = 406
FRAME_ERROR = 501
SYNTAX_ERROR = 502
COMMAND_INVALID = 503
CHANNEL_ERROR = 504
UNEXPECTED_FRAME = 505
RESOURCE_ERROR = 506
NOT_ALLOWED = 530
NOT_IMPLEMENTED = 540
INTERNAL_ERROR = 541

REPLY_NAMES = {
    REPLY_SUCCESS: "REPLY_SUCCESS",
    CONTENT_TOO_LARGE: "CONTENT_TOO_LARGE",
    NO_ROUTE: "NO_ROUTE",
    NO_CONSUMERS: "NO_CONSUMERS",
    CONNECTION_FORCED: "CONNECTION_FORCED",
    INVALID_PATH: "INVALID_PATH",
    ACCESS_REFUSED: "ACCESS_REFUSED",
    NOT_FOUND: "NOT_FOUND",
    RESOURCE_LOCKED: "RESOURCE_LOCKED",
    PRECONDITION_FAILED: "PRECONDITION_FAILED",
    FRAME_ERROR: "FRAME_ERROR",
    SYNTAX_ERROR: "SYNTAX_ERROR",
    COMMAND_INVALID: "COMMAND_INVALID",
    CHANNEL_ERROR: "CHANNEL_ERROR",
    UNEXPECTED_FRAME: "UNEXPECTED_FRAME",
    RESOURCE_ERROR: "RESOURCE_ERROR",
    NOT_ALLOWED: "NOT_ALLOWED",
    NOT_IMPLEMENTED: "NOT_IMPLEMENTED",
    INTERNAL_ERROR: "INTERNAL_ERROR",
}


class AMQPError(Exception):
    """Base of every broker error. ``reply_code`` and ``reply_text`` go on the wire."""

    reply_code: int = INTERNAL_ERROR
    #: True when the error closes the connection rather than one channel.
    connection_level: bool = False

    def __init__(self, text: str, reply_code: int | None = None) -> None:
        if reply_code is not None:
            self.reply_code = reply_code
        self.text = text
        super().__init__(self.reply_text)

    @property
    def reply_text(self) -> str:
        # RabbitMQ's format, which client libraries and their tests match on.
        return f"{REPLY_NAMES.get(self.reply_code, 'ERROR')} - {self.text}"


class ChannelError(AMQPError):
    """Closes only the channel it happened on."""


class ConnectionError_(AMQPError):
    """Closes the whole connection."""

    connection_level = True


class AccessRefused(ChannelError):
    reply_code = ACCESS_REFUSED


class NotFound(ChannelError):
    reply_code = NOT_FOUND


class ResourceLocked(ChannelError):
    reply_code = RESOURCE_LOCKED


class PreconditionFailed(ChannelError):
    reply_code = PRECONDITION_FAILED


class NotAllowed(ConnectionError_):
    reply_code = NOT_ALLOWED


class NotImplemented_(ConnectionError_):
    reply_code = NOT_IMPLEMENTED


class FrameError(ConnectionError_):
    reply_code = FRAME_ERROR


class SyntaxError_(ConnectionError_):
    reply_code = SYNTAX_ERROR


class CommandInvalid(ConnectionError_):
    reply_code = COMMAND_INVALID


class ChannelStateError(ConnectionError_):
    reply_code = CHANNEL_ERROR


class UnexpectedFrame(ConnectionError_):
    reply_code = UNEXPECTED_FRAME


class ResourceError(ConnectionError_):
    reply_code = RESOURCE_ERROR


class ConnectionForced(ConnectionError_):
    reply_code = CONNECTION_FORCED
