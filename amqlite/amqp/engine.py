"""The AMQP 0-9-1 server side of one connection, sans-IO.

Bytes go in with :meth:`ServerConnection.receive_data`; bytes to write come
out of :meth:`ServerConnection.data_to_send`. In between, frames are decoded,
the connection and channel state machines advance, and methods become calls
on the pure broker core. Nothing here touches a socket or a clock: ``now``
comes in, and :meth:`next_deadline` says when :meth:`tick` is due (heartbeats).

Errors follow RabbitMQ: a channel error closes that channel with its reply
code and the connection carries on; a connection error sends
connection.close and ignores everything but close-ok from then on.
"""

from __future__ import annotations

import enum
import struct
from typing import Any, Callable

from .. import defaults
from ..auth import User, Users
from ..core import errors
from ..core.broker import Broker
from ..core.connection import Connection as CoreConnection
from ..core.events import AckTimedOut, ConsumerCancelled, Deliver, WaitForDisk
from ..core.message import Message
from ..core.stream import OFFSET_HEADER, with_offset
from ..log import get_logger
from . import spec
from .channel import Channel, ChannelState
from .handshake import Handshake, Limits
from .frames import (
    FRAME_HEADER,
    FRAME_METHOD,
    FRAME_MIN_SIZE,
    HEARTBEAT_FRAME,
    PROTOCOL_HEADER,
    BodyFrame,
    FrameDecoder,
    HeaderFrame,
    MethodFrame,
    encode_content_frames,
    encode_deliver,
    encode_method_frame,
    parse_protocol_header,
)
from .properties import BASIC_CLASS_ID, BasicProperties, encode_content_header, with_long_header

log = get_logger(__name__)

#: How encoding a message's properties fails when they hold a value of the
#: wrong type (the encoder's own error, or Python's from a str or int method).
_UNENCODABLE = (errors.SyntaxError_, TypeError, ValueError, AttributeError, struct.error)

#: Seconds a client has to answer our connection.close with close-ok.
CLOSE_TIMEOUT = 5.0
#: Past this many bytes of replies not yet taken (confirms, returns), the
#: engine wants no more input.
OUTPUT_HIGH_WATER = 4 * 1024 * 1024
#: Channel numbers are 16 bits; a channel_max of 0 means no lower limit.
MAX_CHANNELS = 65535
_HEAD = struct.Struct(">BHI")
_END = b"\xce"
#: A frame's type and channel: how a method frame on a channel begins.
_METHOD_FRAME_HEAD = struct.Struct(">BH")
# Delivery bytes gathered per data_to_send call before the driver writes them.
_DRAIN_BUDGET = 256 * 1024


class State(enum.Enum):
    AWAIT_HEADER = "awaiting protocol header"
    AWAIT_START_OK = "awaiting connection.start-ok"
    AWAIT_TUNE_OK = "awaiting connection.tune-ok"
    AWAIT_OPEN = "awaiting connection.open"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class ServerConnection:
    def __init__(
        self,
        broker: Broker,
        users: Users,
        *,
        now: float,
        peer_loopback: bool,
        peer: str = "",
        heartbeat: int = defaults.HEARTBEAT,
        frame_max: int = defaults.FRAME_MAX,
        channel_max: int = defaults.CHANNEL_MAX,
        handshake_timeout: float = defaults.HANDSHAKE_TIMEOUT,
        max_content_in_flight: int = defaults.MAX_CONTENT_IN_FLIGHT,
        auth_mechanisms: tuple[str, ...] = ("PLAIN", "AMQPLAIN"),
        certificate_user: str | None = None,
    ) -> None:
        self.broker = broker
        #: At least one message of the largest size must fit.
        self.max_content_in_flight = max(max_content_in_flight, broker.max_message_size)
        self.peer = peer
        self.peer_loopback = peer_loopback
        self.state = State.AWAIT_HEADER
        self.heartbeat = heartbeat
        self.frame_max = frame_max
        self.channel_max = channel_max
        self._handshake = Handshake(
            lambda name, password: users.authenticate(name, password, loopback=peer_loopback),
            Limits(channel_max, frame_max, heartbeat),
            peer=peer,
            mechanisms=auth_mechanisms,
            certificate_user=certificate_user,
        )
        self.vhost = ""
        self.core: CoreConnection | None = None
        #: Why the connection closed, for the one log line about it.
        self.close_reason: str | None = None
        #: Called when there is new output; the driver's wake-up for its writer.
        self.on_output: Callable[[], object] | None = None
        #: Called when :meth:`wants_read` turns true again; wakes the reader.
        self.on_readable: Callable[[], object] | None = None
        #: Called once the handshake is done (connection.open accepted).
        self.on_open: Callable[[], object] | None = None
        #: The handshake must be done by then; afterwards, None.
        self._handshake_deadline: float | None = now + handshake_timeout
        #: Once we sent connection.close, close-ok must come by then.
        self._close_deadline: float | None = None
        self.last_received = now
        self.last_sent = now
        self._header = b""
        self._decoder = FrameDecoder(FRAME_MIN_SIZE)
        self._out: list[bytes] = []
        self._channels: dict[int, Channel] = {}
        self._dirty: dict[int, None] = {}  # channels whose core outbox has events
        self._confirming: dict[int, None] = {}  # channels with confirms to send
        #: Channels whose acks returned credit that no delivery used yet
        #: (see _basic_ack).
        self._acked: dict[int, Channel] = {}
        self._cancel_notify = False
        #: A basic.get whose answer is on its way back from disk (a paged
        #: queue); later frames wait, so replies keep their order.
        self._waiting_get: tuple[Channel, spec.Basic.Get] | None = None
        #: A tx.commit whose persistent messages are not yet on disk:
        #: (channel, journal position they need).
        self._waiting_commit: tuple[Channel, int] | None = None
        #: The broker's memory alarm is on (see set_memory_alarm).
        self._memory_alarm = False
        #: This connection has published since it opened.
        self._published = False
        #: Not read from: it published while the memory alarm was on.
        self.blocked_by_alarm = False
        self._handlers: dict[type, Callable[[Channel, Any, float], Any]] = {
            spec.Channel.Flow: self._channel_flow,
            spec.Exchange.Declare: self._exchange_declare,
            spec.Exchange.Delete: self._exchange_delete,
            spec.Exchange.Bind: self._exchange_bind,
            spec.Exchange.Unbind: self._exchange_unbind,
            spec.Queue.Declare: self._queue_declare,
            spec.Queue.Bind: self._queue_bind,
            spec.Queue.Unbind: self._queue_unbind,
            spec.Queue.Purge: self._queue_purge,
            spec.Queue.Delete: self._queue_delete,
            spec.Basic.Qos: self._basic_qos,
            spec.Basic.Consume: self._basic_consume,
            spec.Basic.Cancel: self._basic_cancel,
            spec.Basic.Get: self._basic_get,
            spec.Basic.Ack: self._basic_ack,
            spec.Basic.Nack: self._basic_nack,
            spec.Basic.Reject: self._basic_reject,
            spec.Basic.Recover: self._basic_recover,
            spec.Basic.RecoverAsync: self._basic_recover,
            spec.Confirm.Select: self._confirm_select,
            spec.Tx.Select: self._tx_select,
            spec.Tx.Commit: self._tx_commit,
            spec.Tx.Rollback: self._tx_rollback,
        }

    # -- output ---------------------------------------------------------

    def _send(self, channel: int, method: spec.Method) -> None:
        self._out.append(encode_method_frame(channel, method))

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    def wants_write(self) -> bool:
        return bool(self._out or self._dirty)

    def wants_read(self) -> bool:
        """Whether the driver should read more, as h11's PAUSED says no.

        While a basic.get or tx.commit waits for the disk, the frames
        behind it must wait too; reading on would buffer without bound (a
        publisher during a disk outage). Nor while more than
        OUTPUT_HIGH_WATER bytes of replies wait for the driver (a publisher
        that never reads its confirms). :attr:`on_readable` says when a
        wait ends; output drains when the driver takes it."""
        return (
            self.state is not State.CLOSED
            and not self._reading_paused()
            and self.buffered_output <= OUTPUT_HIGH_WATER
        )

    def _waits_for_storage(self) -> bool:
        return self._waiting_get is not None or self._waiting_commit is not None

    def _reading_paused(self) -> bool:
        """Not read from, for the broker's sake (the disk, the memory
        alarm), not because the client stalls: its silence proves nothing."""
        return self.blocked_by_alarm or self._waits_for_storage()

    @property
    def buffered_input(self) -> int:
        """Bytes received and not yet handled: while :meth:`wants_read` is
        false, at most what the driver read in its last call."""
        return self._decoder.buffered

    @property
    def buffered_output(self) -> int:
        """Bytes of replies and confirms not yet taken by the driver."""
        return sum(map(len, self._out))

    def data_to_send(self, now: float) -> bytes:
        """Everything ready to write: replies, confirms, then deliveries."""
        if self._dirty:
            self._drain_deliveries(now)
        out = b"".join(self._out)
        self._out.clear()
        if out:
            self.last_sent = now
        return out

    def _wake(self) -> None:
        if self.on_output is not None:
            self.on_output()

    def _drain_deliveries(self, now: float) -> None:
        budget = _DRAIN_BUDGET
        for number in list(self._dirty):
            ch = self._channels.get(number)
            if ch is None:
                del self._dirty[number]
                continue
            budget -= self._drain(ch, now, budget)
            if budget <= 0:
                return

    def _drain(self, ch: Channel, now: float, budget: int = 1 << 62) -> int:
        """Encode the channel's pushed events, in order; returns bytes written."""
        outbox = ch.core.outbox
        out = self._out
        frame_max = self.frame_max
        number = ch.number
        written = delivered = 0
        timed_out = None
        while outbox and written < budget:
            event = outbox.popleft()
            if type(event) is Deliver:
                message = event.message
                try:
                    if event.stream_offset is not None:
                        header = self._header_with_offset(message, event.stream_offset)
                    elif event.delivery_count:
                        header = self._header_with_count(message, event.delivery_count)
                    else:
                        header = message.wire_header or self._encoded_header(message)
                except _UNENCODABLE as problem:
                    self._drop_unencodable(ch, event.delivery_tag, message, problem, now)
                    delivered += 1
                    continue
                data = encode_deliver(
                    number,
                    event.consumer_tag,
                    event.delivery_tag,
                    event.redelivered,
                    message.exchange,
                    message.routing_key,
                    header,
                    message.body,
                    frame_max,
                )
                out.append(data)
                written += len(data)
                delivered += 1
            elif type(event) is ConsumerCancelled and self._cancel_notify:
                self._send(number, spec.Basic.Cancel(event.consumer_tag, True))
            elif type(event) is AckTimedOut:
                timed_out = event  # the last event: the core closed the channel
        if not outbox:
            self._dirty.pop(number, None)
        if delivered:
            ch.core.delivered(delivered, now=now)
        if timed_out is not None and not ch.closing:
            self._channel_error(ch, timed_out.error, None, now, consumer_tag=timed_out.consumer_tag,
                                queue=timed_out.queue, delivery_tag=timed_out.delivery_tag)
        return written

    def _drop_unencodable(self, ch: Channel, tag: int, message: Message, problem: Exception, now: float) -> None:
        """A stored message whose properties have no encoding (every entry
        checks them now; a message from before could still be on disk) is
        dead-lettered, or dropped where there is no dead-letter exchange, with
        a log line: it must not close this connection, nor come back to close
        the next consumer's. A stream's delivery is acked instead (a stream
        refuses rejects), which moves the consumer past it."""
        log.error("delivery.unencodable", peer=self.peer, channel=ch.number, exchange=message.exchange,
                  routing_key=message.routing_key, error=str(problem))
        unacked = ch.core.unacked.get(tag)
        if unacked is None:
            return  # taken with no-ack: settled already
        if unacked[1].is_stream:
            ch.core.ack(tag, now=now)
        else:
            ch.core.reject(tag, requeue=False, now=now)

    @staticmethod
    def _encoded_header(message: Message) -> bytes:
        """The message's encoded content header, encoded once and cached."""
        header = message.wire_header
        if header is None:
            header = message.wire_header = encode_content_header(BASIC_CLASS_ID, len(message.body), message.properties)
        return header

    @classmethod
    def _header_with_offset(cls, message: Message, offset: int) -> bytes:
        """A stream's delivery carries its offset, as RabbitMQ's do: spliced
        into the header bytes the publisher sent, which the stream keeps."""
        headers = message.properties.headers
        if headers and OFFSET_HEADER in headers:  # the publisher sent one: the stream's wins
            return encode_content_header(BASIC_CLASS_ID, len(message.body), with_offset(message.properties, offset))
        return with_long_header(message.wire_header or cls._encoded_header(message), OFFSET_HEADER, offset)

    @staticmethod
    def _header_with_count(message: Message, count: int) -> bytes:
        # RabbitMQ's quorum queues tell consumers how often a message came back.
        props = message.properties
        headers = dict(props.headers or {})
        headers["x-delivery-count"] = count
        return encode_content_header(BASIC_CLASS_ID, len(message.body), props._replace(headers=headers))

    # -- input ----------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> None:
        """Feed bytes from the client (any amount: partial frames are fine)."""
        self.last_received = now
        if self.state is State.CLOSED or not data:
            return
        if self.state is State.AWAIT_HEADER:
            data = self._receive_header(data)
            if not data:
                return
        self._decoder.feed(data)
        self._process(now)

    def _process(self, now: float) -> None:
        """Handle the frames fed so far, unless a basic.get waits for disk."""
        frame = None
        try:
            # _waits_for_storage, inline: this test runs once per frame.
            while self.state is not State.CLOSED and self._waiting_get is None and self._waiting_commit is None:
                frame = None  # a frame that fails to decode names no method
                if (frame := self._decoder.next_frame()) is None:
                    break
                self._handle_frame(frame, now)
        except errors.AMQPError as error:
            # Framing errors leave the stream unreadable; the rest came from handlers.
            method = frame.method if isinstance(frame, MethodFrame) else None
            self._connection_error(error, method, now)
        except Exception:
            # A bug: close this connection only, with 541 as RabbitMQ does when a channel crashes.
            method = frame.method if isinstance(frame, MethodFrame) else None
            log.exception("connection.internal_error", peer=self.peer, method=method.name if method else None)
            self._connection_error(errors.ConnectionError_("internal error", errors.INTERNAL_ERROR), method, now)
        if self._acked:
            self._redispatch_acked(now)
        if self._confirming:
            self._send_confirms()
        if self._out or self._dirty:
            self._wake()

    def _redispatch_acked(self, now: float) -> None:
        acked, self._acked = self._acked, {}
        for number, ch in acked.items():
            if self._channels.get(number) is ch:
                ch.core.redispatch(now)

    def _receive_header(self, data: bytes) -> bytes:
        self._header += data
        verdict = parse_protocol_header(self._header)
        if verdict == "need_more":
            return b""
        if verdict == "bad":
            self._out.append(PROTOCOL_HEADER)
            self._closed("bad protocol header")
            self._wake()
            return b""
        rest = self._header[8:]
        self._header = b""
        self.state = State.AWAIT_START_OK
        self._send(0, self._handshake.start())
        self._wake()
        return rest

    def _handle_frame(self, frame: Any, now: float) -> None:
        kind = type(frame)
        if kind is MethodFrame:
            if frame.channel == 0:
                self._connection_method(frame.method, now)
            else:
                self._channel_method(frame.channel, frame.method, now)
        elif kind is BodyFrame:
            self._body(frame, now)
        elif kind is HeaderFrame:
            self._content_header(frame, now)
        # Heartbeats only prove the peer is alive; last_received is updated.

    # -- connection class -------------------------------------------------

    def _connection_method(self, method: spec.Method, now: float) -> None:
        kind = type(method)
        state = self.state
        if state is State.CLOSING:
            if kind is spec.Connection.CloseOk:
                self._closed(self.close_reason or "closed")
            elif kind is spec.Connection.Close:
                self._send(0, spec.Connection.CloseOk())
                self._closed(self.close_reason or "closed")
            return
        if isinstance(method, spec.Connection.StartOk) and state is State.AWAIT_START_OK:
            self._start_ok(method)
        elif isinstance(method, spec.Connection.TuneOk) and state is State.AWAIT_TUNE_OK:
            self._tune_ok(method)
        elif isinstance(method, spec.Connection.Open) and state is State.AWAIT_OPEN:
            self._open(method)
        elif isinstance(method, spec.Connection.Close):
            self._send(0, spec.Connection.CloseOk())
            self._release(now)
            self._closed(f"client closed: {method.reply_code} {method.reply_text}")
        elif kind is spec.Connection.UpdateSecret and state is State.OPEN:
            self._send(0, spec.Connection.UpdateSecretOk())
        elif kind is spec.Connection.CloseOk:
            self._closed("close-ok")
        elif method.class_id == 10:
            # RabbitMQ: 504 "unexpected method in connection state ...".
            raise errors.ChannelStateError(f"{method.name} not expected while {state.value}")
        else:
            raise errors.ChannelStateError(f"{method.name} is not allowed on channel 0")

    def _start_ok(self, method: spec.Connection.StartOk) -> None:
        tune = self._handshake.start_ok(method)
        self._cancel_notify = bool(self._handshake.capabilities.get("consumer_cancel_notify"))
        self.state = State.AWAIT_TUNE_OK
        self._send(0, tune)

    def _tune_ok(self, method: spec.Connection.TuneOk) -> None:
        limits = self._handshake.tune_ok(method)
        self.channel_max, self.frame_max, self.heartbeat = limits.channel_max, limits.frame_max, limits.heartbeat
        self._decoder.frame_max = limits.frame_max
        self.state = State.AWAIT_OPEN

    def _open(self, method: spec.Connection.Open) -> None:
        vhost = self._handshake.open(method, self.broker.vhosts)
        user = self.user
        assert user is not None
        self._check_connection_limits(user, vhost)
        self.vhost = vhost
        self.core = self.broker.connect(vhost, user=user.name, name=self.peer, access=user.access(vhost),
                                        client_properties=self._handshake.client_properties)
        self.state = State.OPEN
        self._send(0, spec.Connection.OpenOk())
        if self.on_open is not None:
            self.on_open()
        journal = self.broker.journal
        if journal is not None and not journal.accepting:
            self.set_blocked("disk write failed")  # it connected during the outage
        log.info("connection.open", peer=self.peer, user=user.name, vhost=vhost,
                 client=self._handshake.client_name, heartbeat=self.heartbeat, frame_max=self.frame_max)

    def _check_connection_limits(self, user: User, vhost: str) -> None:
        """RabbitMQ's vhost and user connection limits, with its words."""
        connections = self.broker.connections
        limit = self.broker.vhosts[vhost].limits.get("max-connections", -1)
        if 0 <= limit <= sum(1 for c in connections if c.vhost.name == vhost):
            raise errors.NotAllowed(
                f"access to vhost '{vhost}' refused for user '{user.name}': connection limit ({limit}) is reached")
        limit = user.limits.get("max-connections", -1)
        if 0 <= limit <= sum(1 for c in connections if c.user == user.name):
            raise errors.NotAllowed(
                f"connection refused for user '{user.name}': user connection limit ({limit}) is reached")

    @property
    def user(self) -> User | None:
        """Who logged in; None until connection.start-ok succeeded."""
        return self._handshake.user

    # -- channels ---------------------------------------------------------

    def _channel_method(self, number: int, method: spec.Method, now: float) -> None:
        if self.state is not State.OPEN:
            if self.state is State.CLOSING:
                return
            # RabbitMQ: 505 for any channel frame before connection.open.
            raise errors.UnexpectedFrame(f"{method.name} on channel {number} while {self.state.value}")
        ch = self._channels.get(number)
        kind = type(method)
        if self._acked and kind is not spec.Basic.Ack:
            self._redispatch_acked(now)  # deliveries the acks allow come before anything else
        if ch is None:
            if kind is spec.Channel.Open:
                self._channel_open(number)
                return
            if kind is spec.Channel.CloseOk:
                return
            raise errors.ChannelStateError(f"expected 'channel.open' on channel {number}, got '{method.name}'")
        state = ch.state  # the closing test and the method check, once per frame
        if state is not ChannelState.CLOSING and ch.core.closed:
            # The core closed it on its own (a consumer timeout): say so
            # first; this frame was sent before the client knew.
            self._drain(ch, now)
            state = ch.state
        if state is ChannelState.CLOSING:
            if kind is spec.Channel.CloseOk:
                self._forget(ch)
            elif kind is spec.Channel.Close:
                self._send(number, spec.Channel.CloseOk())
                self._forget(ch)
            return
        if state is not ChannelState.AWAIT_METHOD:
            ch.expect_method(method)
        if isinstance(method, spec.Basic.Publish):
            if method.immediate:
                raise errors.NotImplemented_("immediate=true")
            # A publisher from its first basic.publish, finished or not: the
            # memory alarm must also stop one that starts messages and never
            # finishes them. This one's frames are taken; what follows waits.
            self._published = True
            if self._memory_alarm:
                self._block_for_memory()
            content = self._decoder.take_content(number, self.broker.max_message_size)
            if content is None:
                ch.begin_publish(method)  # its content comes frame by frame
            else:
                properties, header, body = content
                self._route(ch, method, Message(method.exchange, method.routing_key, properties, body, header), now)
                if self._decoder.starts_with(_METHOD_FRAME_HEAD.pack(FRAME_METHOD, number)):
                    self._route_repeats(ch, method, properties, header, len(body), now)
            return
        if kind is spec.Channel.Close:
            self._drain(ch, now)
            ch.core.close(now=now)
            self._send(number, spec.Channel.CloseOk())
            self._forget(ch)
            return
        if kind is spec.Channel.Open:
            raise errors.ChannelStateError(f"second 'channel.open' seen on channel {number}")
        handler = self._handlers.get(kind)
        if handler is None:
            raise errors.CommandInvalid(f"{method.name} is not allowed on channel {number}")
        try:
            reply = handler(ch, method, now)
        except errors.ChannelError as error:
            self._channel_error(ch, error, method, now)
            return
        if reply is not None:
            self._drain(ch, now)  # deliveries caused before this reply go first
            self._send(number, reply)

    def _channel_open(self, number: int) -> None:
        # channel_max limits how many channels are open, not their numbers:
        # RabbitMQ opens channel 65535 under a channel_max of 2047.
        opened = len(self._channels)
        if opened >= (self.channel_max or MAX_CHANNELS):
            raise errors.NotAllowed(
                f"number of channels opened ({opened}) has reached the negotiated channel_max ({self.channel_max})"
            )
        user = self.user
        assert self.core is not None and user is not None
        limit = user.limits.get("max-channels", -1)
        if 0 <= limit <= sum(len(c.channels) for c in self.broker.connections if c.user == user.name):
            raise errors.NotAllowed(f"number of channels opened for user '{user.name}' has reached the maximum "
                                    f"allowed user limit of ({limit})")
        core = self.core.open_channel(number)
        self._channels[number] = Channel(number, core)
        core.notify = lambda: self._on_channel_output(number)
        self._send(number, spec.Channel.OpenOk())

    def _on_channel_output(self, number: int) -> None:
        if number not in self._dirty:
            self._dirty[number] = None
            self._wake()

    def _forget(self, ch: Channel) -> None:
        self._channels.pop(ch.number, None)
        self._dirty.pop(ch.number, None)
        self._confirming.pop(ch.number, None)

    def _channel_error(self, ch: Channel, error: errors.AMQPError, method: spec.Method | None, now: float,
                       **detail: object) -> None:
        log.info("channel.error", peer=self.peer, channel=ch.number, reply_code=error.reply_code,
                 reply_text=error.reply_text, method=method.name if method else None, **detail)
        self._drain(ch, now)
        if ch.confirms:
            self._send_channel_confirms(ch)
        ch.core.close(now=now)
        ch.start_closing()
        self._send(
            ch.number,
            spec.Channel.Close(
                error.reply_code,
                error.reply_text[:255],
                method.class_id if method else 0,
                method.method_id if method else 0,
            ),
        )

    def _connection_error(self, error: errors.AMQPError, method: spec.Method | None, now: float) -> None:
        if self.state is State.CLOSING:
            # Only a framing error gets here: the stream is unreadable, so no close-ok can follow.
            self._closed(self.close_reason or error.reply_text)
            return
        if self.state is State.CLOSED:
            return
        log.info("connection.error", peer=self.peer, reply_code=error.reply_code, reply_text=error.reply_text,
                 method=method.name if method else None)
        self._send(
            0,
            spec.Connection.Close(
                error.reply_code,
                error.reply_text[:255],
                method.class_id if method else 0,
                method.method_id if method else 0,
            ),
        )
        self._release(now)
        self.close_reason = error.reply_text
        self.state = State.CLOSING
        self._close_deadline = now + CLOSE_TIMEOUT

    def force_close(self, reason: str, now: float) -> None:
        """Close the connection because an operator asked (the management
        API's DELETE): connection.close 320 CONNECTION_FORCED with ``reason``."""
        self._connection_error(errors.ConnectionForced(reason), None, now)
        self._wake()

    def _release(self, now: float) -> None:
        """Give back what the client held: unacked messages, exclusive queues."""
        if self.core is not None:
            self.core.close(now=now)
        self._channels.clear()
        self._dirty.clear()
        self._confirming.clear()

    def _closed(self, reason: str) -> None:
        self.state = State.CLOSED
        self.close_reason = self.close_reason or reason

    def connection_lost(self, now: float) -> None:
        """The socket went away (or the driver gave up on it)."""
        if self.state is not State.CLOSED:
            self._closed(self.close_reason or "connection lost")
        self._release(now)

    # -- content ----------------------------------------------------------

    def _content_header(self, frame: HeaderFrame, now: float) -> None:
        ch = self._channels.get(frame.channel)
        if ch is None or ch.state is ChannelState.CLOSING:
            if ch is None and self.state is not State.CLOSING:
                # RabbitMQ: "expected method frame, got non method frame instead".
                raise errors.UnexpectedFrame(f"content header on channel {frame.channel}, which is not open")
            return
        complete = ch.content_header(frame)
        limit = self.broker.max_message_size
        if frame.body_size > limit:
            method = ch.abandon_publish()
            self._channel_error(
                ch,
                errors.PreconditionFailed(f"message size {frame.body_size} is larger than configured max size {limit}"),
                method,
                now,
            )
            # The body frames that follow belong to a closing channel and are ignored.
            return
        if complete:
            self._publish(ch, now)

    def _body(self, frame: BodyFrame, now: float) -> None:
        ch = self._channels.get(frame.channel)
        if ch is None or ch.state is ChannelState.CLOSING:
            if ch is None and self.state is not State.CLOSING:
                # RabbitMQ: "expected method frame, got non method frame instead".
                raise errors.UnexpectedFrame(f"content body on channel {frame.channel}, which is not open")
            return
        if ch.content_body(frame.payload):
            self._publish(ch, now)
        elif (held := sum(c.partial_bytes for c in self._channels.values())) > self.max_content_in_flight:
            # Messages started on many channels and never finished would pin
            # memory for as long as the connection lives.
            raise errors.NotAllowed(
                f"partially received messages on this connection hold {held} bytes, more than "
                f"max_content_in_flight ({self.max_content_in_flight})")

    def _route_repeats(self, ch: Channel, method: spec.Basic.Publish, properties: BasicProperties, header: bytes,
                       body_size: int, now: float) -> None:
        """Publishes that repeat the one just routed (method and header
        frames byte for byte, a body of the same size), taken from the
        decoder as a run and routed as the frame loop would route each, up
        to anything else or until the channel is not taking publishes."""
        decoder, number = self._decoder, ch.number
        frames = encode_method_frame(number, method) + _HEAD.pack(FRAME_HEADER, number, len(header)) + header + _END
        exchange, routing_key = method.exchange, method.routing_key
        while self.state is State.OPEN and ch.state is ChannelState.AWAIT_METHOD and not ch.core.closed:
            body = decoder.take_repeated_content(frames, number, body_size)
            if body is None:
                return
            if self._memory_alarm:
                self._block_for_memory()
            self._route(ch, method, Message(exchange, routing_key, properties, body, header), now)

    def _publish(self, ch: Channel, now: float) -> None:
        method, message = ch.take_message()
        self._route(ch, method, message, now)

    def _route(self, ch: Channel, method: spec.Basic.Publish, message: Message, now: float) -> None:
        """A whole message published: route it, then return or confirm it."""
        core = ch.core
        try:
            outcome = core.publish_message(message, mandatory=method.mandatory, now=now)
        except errors.ChannelError as error:
            self._channel_error(ch, error, method, now)
            return
        if outcome is None:
            return  # held by a transaction
        if outcome.returned:
            self._send_return(ch.number, message)
        if core.confirm:
            # A persistent message is confirmed once its record is on disk.
            journal = self.broker.journal
            required = journal.confirm_position(message.persistent, outcome) if journal is not None else 0
            ch.confirms.append((core.publish_seq, not outcome.rejected, required))
            if not required:
                ch.unwaited += 1
            self._confirming[ch.number] = None

    def _send_return(self, number: int, message: Message) -> None:
        self._send(number, spec.Basic.Return(errors.NO_ROUTE, "NO_ROUTE", message.exchange, message.routing_key))
        self._out.append(encode_content_frames(number, self._encoded_header(message), message.body, self.frame_max))

    # -- confirms ---------------------------------------------------------

    def _send_confirms(self) -> None:
        for number in list(self._confirming):
            ch = self._channels.get(number)
            if ch is None or self._send_channel_confirms(ch):
                del self._confirming[number]

    def _send_channel_confirms(self, ch: Channel) -> bool:
        """Confirm what may be confirmed: in order, one basic.ack with
        multiple=true per run of acks, up to the first publish whose record
        is not yet synced; after it, only what waits for nothing (a nack, a
        transient message), one by one, so a refused publish is never held
        back behind persistent ones waiting for the disk. True when none is left."""
        journal = self.broker.journal
        synced = journal.synced if journal is not None else 0
        confirms = ch.confirms
        if not ch.unwaited and confirms and confirms[0][2] > synced:
            # Positions only grow: all wait for the disk (a publisher's
            # window of 2,000 was walked on every read before).
            return False
        ch.unwaited = 0
        number = ch.number
        run_end = run_length = acks = 0
        waiting: list[tuple[int, bool, int]] = []
        for confirm in confirms:
            seq, acked, required = confirm
            if waiting or required > synced:
                if required:
                    waiting.append(confirm)
                    continue
            elif acked:
                run_end = seq
                run_length += 1
                acks += 1
                continue
            if run_length:
                self._send(number, spec.Basic.Ack(run_end, run_length > 1))
                run_length = 0
            acks += acked
            self._send(number, spec.Basic.Ack(seq, False) if acked else spec.Basic.Nack(seq, False, False))
        if run_length:
            self._send(number, spec.Basic.Ack(run_end, run_length > 1))
        self.broker.stats.confirmed += acks  # acks only, as RabbitMQ counts
        ch.confirms = waiting
        return not waiting

    def store_synced(self) -> None:
        """The journal synced more records: confirms waiting on them may go."""
        if self._confirming:
            self._send_confirms()
            if self._out:
                self._wake()

    def resume(self, now: float) -> None:
        """Storage moved on: answer a basic.get whose message came back from
        disk, or a tx.commit whose messages are now synced; then carry on
        with the frames that waited behind it."""
        if self._waiting_commit is not None:
            ch, required = self._waiting_commit
            journal = self.broker.journal
            if journal is not None and journal.synced < required:
                return
            self._waiting_commit = None
            if self._channels.get(ch.number) is ch and not ch.closing:
                self._send(ch.number, spec.Tx.CommitOk())
        elif self._waiting_get is not None:
            ch, method = self._waiting_get
            self._waiting_get = None
            if self._channels.get(ch.number) is ch and not ch.closing and self.state is State.OPEN:
                try:
                    reply = self._basic_get(ch, method, now)
                except errors.ChannelError as error:
                    self._channel_error(ch, error, method, now)
                    reply = None
                if reply is not None:
                    self._send(ch.number, reply)
        else:
            return
        if not self._waits_for_storage():
            # The client's frames, heartbeats included, waited unread in its
            # socket: its silence since the pause was ours, so count afresh.
            self.last_received = now
            self._process(now)
            if self._confirming:
                self._send_confirms()
            if self.on_readable is not None and self.wants_read():
                self.on_readable()
        if self._out or self._dirty:
            self._wake()

    def set_memory_alarm(self, on: bool, now: float) -> None:
        """The broker's memory alarm went on or off. As RabbitMQ does, a
        connection that publishes is no longer read from while it is on
        (one that has not published yet, once it does); consumers go on
        reading and acking, which is how memory comes back."""
        self._memory_alarm = on
        if on and self._published:
            self._block_for_memory()
        elif not on and self.blocked_by_alarm:
            self.blocked_by_alarm = False
            self.last_received = now  # its frames waited unread: count afresh
            self.set_blocked(None)
            if self.on_readable is not None and self.wants_read():
                self.on_readable()

    def _block_for_memory(self) -> None:
        if not self.blocked_by_alarm:
            self.blocked_by_alarm = True
            self.set_blocked("low on memory")  # RabbitMQ's reason

    def set_blocked(self, reason: str | None) -> None:
        """Tell a client that announced connection.blocked that publishing
        is refused (``reason``) or accepted again (None)."""
        if self.state is State.OPEN and self._handshake.capabilities.get("connection.blocked"):
            self._send(0, spec.Connection.Blocked(reason) if reason else spec.Connection.Unblocked())
            self._wake()

    # -- timers -----------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When :meth:`tick` is next due: the handshake's end, close-ok's
        arrival, or a heartbeat to send or to miss."""
        state = self.state
        if state is State.CLOSED:
            return None
        if state is State.CLOSING:
            return self._close_deadline
        if state is not State.OPEN:
            return self._handshake_deadline
        if not self.heartbeat:
            return None
        send_by = self.last_sent + self.heartbeat / 2
        if self._reading_paused():
            return send_by  # not reading: the client's silence proves nothing
        return min(send_by, self.last_received + 2 * self.heartbeat)

    def tick(self, now: float) -> None:
        """Run what is due: give up on a handshake or a close that took too
        long, send a heartbeat, give up on a peer silent for two intervals
        unless we stopped reading it for the disk (as RabbitMQ pauses its
        heartbeat monitor while a connection is blocked). A client that
        does not read its replies is paused too, but that stall is its
        own, so its silence still counts."""
        state = self.state
        if state is State.CLOSING:
            if self._close_deadline is not None and now >= self._close_deadline:
                self._closed(self.close_reason or "no close-ok from client")
            return
        if state not in (State.OPEN, State.CLOSED):
            if self._handshake_deadline is not None and now >= self._handshake_deadline:
                self.close_reason = "handshake timeout"
                self._closed("handshake timeout")
            return
        if not self.heartbeat or state is not State.OPEN:
            return
        if now - self.last_received >= 2 * self.heartbeat and not self._reading_paused():
            self._release(now)
            self._closed(f"missed heartbeats from client, timeout: {self.heartbeat}s")
            return
        if now - self.last_sent >= self.heartbeat / 2:
            self._out.append(HEARTBEAT_FRAME)
            self._wake()

    # -- method handlers --------------------------------------------------
    # Each returns the reply method, or None when there is none (nowait).

    def _channel_flow(self, ch: Channel, method: spec.Channel.Flow, now: float) -> Any:
        if not method.active:
            raise errors.NotImplemented_("active=false")
        return spec.Channel.FlowOk(True)

    def _exchange_declare(self, ch: Channel, m: spec.Exchange.Declare, now: float) -> Any:
        ch.core.declare_exchange(
            m.exchange, m.type, passive=m.passive, durable=m.durable,
            auto_delete=m.auto_delete, internal=m.internal, arguments=m.arguments,
        )
        return None if m.nowait else spec.Exchange.DeclareOk()

    def _exchange_delete(self, ch: Channel, m: spec.Exchange.Delete, now: float) -> Any:
        ch.core.delete_exchange(m.exchange, if_unused=m.if_unused)
        return None if m.nowait else spec.Exchange.DeleteOk()

    def _exchange_bind(self, ch: Channel, m: spec.Exchange.Bind, now: float) -> Any:
        ch.core.bind_exchange(m.destination, m.source, m.routing_key, m.arguments)
        return None if m.nowait else spec.Exchange.BindOk()

    def _exchange_unbind(self, ch: Channel, m: spec.Exchange.Unbind, now: float) -> Any:
        ch.core.unbind_exchange(m.destination, m.source, m.routing_key, m.arguments)
        return None if m.nowait else spec.Exchange.UnbindOk()

    def _queue_declare(self, ch: Channel, m: spec.Queue.Declare, now: float) -> Any:
        queue = ch.core.declare_queue(
            m.queue, now=now, passive=m.passive, durable=m.durable,
            exclusive=m.exclusive, auto_delete=m.auto_delete, arguments=m.arguments,
        )
        ch.last_queue = queue.name
        return None if m.nowait else spec.Queue.DeclareOk(queue.name, queue.message_count, queue.consumer_count)

    def _queue_bind(self, ch: Channel, m: spec.Queue.Bind, now: float) -> Any:
        # An empty queue name and routing key both mean the last declared queue.
        key = m.routing_key or ("" if m.queue else ch.queue_name(""))
        ch.core.bind_queue(ch.queue_name(m.queue), m.exchange, key, m.arguments)
        return None if m.nowait else spec.Queue.BindOk()

    def _queue_unbind(self, ch: Channel, m: spec.Queue.Unbind, now: float) -> Any:
        key = m.routing_key or ("" if m.queue else ch.queue_name(""))
        ch.core.unbind_queue(ch.queue_name(m.queue), m.exchange, key, m.arguments)
        return spec.Queue.UnbindOk()

    def _queue_purge(self, ch: Channel, m: spec.Queue.Purge, now: float) -> Any:
        count = ch.core.purge_queue(ch.queue_name(m.queue))
        return None if m.nowait else spec.Queue.PurgeOk(count)

    def _queue_delete(self, ch: Channel, m: spec.Queue.Delete, now: float) -> Any:
        count = ch.core.delete_queue(ch.queue_name(m.queue), now=now, if_unused=m.if_unused, if_empty=m.if_empty)
        return None if m.nowait else spec.Queue.DeleteOk(count)

    def _basic_qos(self, ch: Channel, m: spec.Basic.Qos, now: float) -> Any:
        ch.core.qos(m.prefetch_count, global_=m.global_, prefetch_size=m.prefetch_size, now=now)
        return spec.Basic.QosOk()

    def _basic_consume(self, ch: Channel, m: spec.Basic.Consume, now: float) -> Any:
        # consume-ok must precede the first delivery: hold the outbox until it is queued.
        notify, ch.core.notify = ch.core.notify, None
        try:
            tag = ch.core.consume(
                ch.queue_name(m.queue), now=now, consumer_tag=m.consumer_tag, no_ack=m.no_ack,
                exclusive=m.exclusive, arguments=m.arguments,
            )
        finally:
            ch.core.notify = notify
        if not m.nowait:
            self._send(ch.number, spec.Basic.ConsumeOk(tag))
        if ch.core.outbox:
            self._on_channel_output(ch.number)
        return None

    def _basic_cancel(self, ch: Channel, m: spec.Basic.Cancel, now: float) -> Any:
        ch.core.cancel(m.consumer_tag, now=now)
        return None if m.nowait else spec.Basic.CancelOk(m.consumer_tag)

    def _basic_get(self, ch: Channel, m: spec.Basic.Get, now: float) -> Any:
        name = ch.queue_name(m.queue)
        result = ch.core.get(name, now=now, no_ack=m.no_ack)
        if result is None:
            return spec.Basic.GetEmpty()
        if isinstance(result, WaitForDisk):
            # RabbitMQ would answer once it has the message; so do we.
            self._waiting_get = (ch, m)
            return None
        self._drain(ch, now)
        message = result.message
        # RabbitMQ's quorum queues put x-delivery-count on every basic.get, 0 the first time.
        queue = ch.core.vhost.queues.get(name)
        quorum = queue is not None and queue.arguments.get("x-queue-type") == "quorum"
        count = result.delivery_count
        try:
            header = self._header_with_count(message, count) if count or quorum else None
            header = header or self._encoded_header(message)
        except _UNENCODABLE as problem:
            self._drop_unencodable(ch, result.delivery_tag, message, problem, now)
            return spec.Basic.GetEmpty()
        self._send(
            ch.number,
            spec.Basic.GetOk(result.delivery_tag, result.redelivered, message.exchange,
                             message.routing_key, result.message_count),
        )
        self._out.append(encode_content_frames(ch.number, header, message.body, self.frame_max))
        return None

    def _basic_ack(self, ch: Channel, m: spec.Basic.Ack, now: float) -> Any:
        # A consumer acks one message at a time, and each ack returns credit
        # for one delivery: acks read together are settled one by one, and
        # their credit is filled once, when a frame of another kind comes or
        # the frames read so far are handled (_redispatch_acked), so a queue
        # delivers a batch instead of one message per ack.
        # The acks right behind this one on the channel are taken at once.
        more = None if m.multiple else self._decoder.take_acks(ch.ack_prefix)
        if more:
            more.insert(0, m.delivery_tag)
            ch.core.ack_each(more, now=now)
        else:
            ch.core.ack(m.delivery_tag, multiple=m.multiple, now=now, redispatch=False)
        self._acked[ch.number] = ch

    def _basic_nack(self, ch: Channel, m: spec.Basic.Nack, now: float) -> Any:
        ch.core.nack(m.delivery_tag, multiple=m.multiple, requeue=m.requeue, now=now)

    def _basic_reject(self, ch: Channel, m: spec.Basic.Reject, now: float) -> Any:
        ch.core.reject(m.delivery_tag, requeue=m.requeue, now=now)

    def _basic_recover(self, ch: Channel, m: Any, now: float) -> Any:
        ch.core.recover(requeue=m.requeue, now=now)
        return spec.Basic.RecoverOk() if type(m) is spec.Basic.Recover else None

    def _confirm_select(self, ch: Channel, m: spec.Confirm.Select, now: float) -> Any:
        ch.core.confirm_select()
        return None if m.nowait else spec.Confirm.SelectOk()

    def _tx_select(self, ch: Channel, m: spec.Tx.Select, now: float) -> Any:
        ch.core.tx_select()
        return spec.Tx.SelectOk()

    def _tx_commit(self, ch: Channel, m: spec.Tx.Commit, now: float) -> Any:
        for message, outcome in ch.core.tx_commit(now=now):
            if outcome.returned:
                self._send_return(ch.number, message)
        if ch.core.committed_at:
            # Commit-ok means the transaction's unit (its persistent
            # messages, stream messages, acks and group offsets) is on disk;
            # frames behind it wait, so replies keep their order.
            self._waiting_commit = (ch, ch.core.committed_at)
            return None
        return spec.Tx.CommitOk()

    def _tx_rollback(self, ch: Channel, m: spec.Tx.Rollback, now: float) -> Any:
        ch.core.tx_rollback()
        return spec.Tx.RollbackOk()

