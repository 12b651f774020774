"""One Kafka connection, sans-IO: bytes in, requests to handlers, bytes out.

The driver (server/kafka_listener.py) feeds what it reads to
:meth:`KafkaConnection.receive_data`, sends what :meth:`data_to_send`
gives, and calls :meth:`tick` at :meth:`next_deadline`.

Requests are handled as they arrive, several in flight at once as clients
pipeline them (librdkafka keeps up to five), and their responses go out
in request order, as Kafka requires: a response that a handler completes
later (a :class:`Pending`: a Fetch long poll, a Produce waiting for the
disk) holds back the ones behind it. Reading pauses while too many are
outstanding or too many bytes wait for the client to read them.

Errors. What Kafka answers with an error code is answered so, in that
API's response at the version asked: an API or version not served
(UNSUPPORTED_VERSION), a body that cannot be read (INVALID_REQUEST), a
handler that failed (UNKNOWN_SERVER_ERROR, logged with its traceback). A
stream that cannot be read on, a size under a header's or over the limit
(a 2 GiB claim), closes the connection, as a Kafka broker does, and so
does a request whose API and version have no schema to answer in.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Callable

import attrs

from ..log import get_logger
from .apis import Api, Pending, Reply
from .protocol import (
    ErrorCode,
    FrameError,
    Request,
    decode_body,
    encode_raw_response,
    encode_response,
    error_response,
    is_flexible,
    parse_header,
    read_frames,
    request_type,
    response_type,
)
from .session import Session

log = get_logger(__name__)

#: Produce's key: what the memory alarm holds back.
PRODUCE = 0
#: Requests whose responses are outstanding before reading pauses.
MAX_IN_FLIGHT = 64
#: Bytes of responses waiting for the client before reading pauses.
OUTPUT_HIGH_WATER = 4 * 1024 * 1024
#: Refused requests logged per connection; the rest are counted in its close line.
LOGGED_REFUSALS = 5
#: Kafka's socket.request.max.bytes default: the largest request.
MAX_REQUEST_SIZE = 100 * 1024 * 1024
#: Seconds without a request or a response after which a connection with
#: nothing outstanding is closed: Kafka's connections.max.idle.ms (clients
#: close theirs at 9 minutes, and reconnect when they need to).
IDLE_TIMEOUT = 600.0
#: The largest request before authentication, Kafka's
#: sasl.server.max.receive.size: a stranger's claim is believed this far.
MAX_UNAUTHENTICATED_REQUEST = 512 * 1024


class State(enum.Enum):
    OPEN = "open"
    #: The last response is queued; the connection ends once it is sent.
    CLOSING = "closing"
    CLOSED = "closed"


@attrs.define(eq=False, slots=True)
class _Slot:
    request: Request
    flexible: bool
    data: bytes | None = None
    pending: Pending | None = None


class KafkaConnection:
    def __init__(self, session: Session, *, now: float, handshake_timeout: float,
                 max_request_size: int = MAX_REQUEST_SIZE) -> None:
        self.session = session
        self.state = State.OPEN
        self.close_reason: str | None = None
        self.max_request_size = max_request_size
        self._handshake_deadline: float | None = now + handshake_timeout
        self._last_active = now
        self._buffer = bytearray()
        self._slots: deque[_Slot] = deque()
        self._out: list[bytes] = []
        self.buffered_output = 0
        #: Called when there is output to send.
        self.on_output: Callable[[], object] | None = None
        #: Called when reading may resume.
        self.on_readable: Callable[[], object] | None = None
        #: Called once, when the client has authenticated.
        self.on_authenticated: Callable[[], None] | None = None
        self.requests = 0
        #: Requests answered with an error for what they were (unreadable, unknown).
        self.refused = 0
        #: The broker's memory alarm is on, and this connection has produced:
        #: it is not read until the alarm clears, as AMQP publishers are not.
        self._memory_alarm = False
        self._produced = False
        #: After a failed login: when its answer goes out and the connection
        #: closes. Until then nothing is read or sent.
        self._held_until: float | None = None
        self._held_reason = ""

    # -- the driver's side -------------------------------------------------

    def wants_read(self) -> bool:
        return (self.state is State.OPEN and self._held_until is None and len(self._slots) < MAX_IN_FLIGHT
                and self.buffered_output <= OUTPUT_HIGH_WATER and not (self._memory_alarm and self._produced))

    def set_memory_alarm(self, on: bool) -> None:
        """The broker's memory alarm went on or off. A producer's
        connection is not read while it is on (its client's requests wait,
        then time out and are retried, idempotently); consumers go on."""
        self._memory_alarm = on
        if not on and self.on_readable is not None:
            self.on_readable()

    def force_close(self, reason: str) -> None:
        """An administrator closes the connection (the management API):
        Kafka has no close message, so the socket closes, once what is
        queued is sent, and the client reconnects as after a broker's
        idle close."""
        self._held_until = None
        self._close(f"closed by an administrator: {reason}")

    def wants_write(self) -> bool:
        return bool(self._out) and self._held_until is None

    @property
    def peer(self) -> str:
        return self.session.peer

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    def data_to_send(self, now: float) -> bytes:
        if self._held_until is not None:
            return b""
        out = b"".join(self._out)
        self._out.clear()
        self.buffered_output = 0
        if out:
            self._last_active = now
        if self.state is State.CLOSING and not self._slots:
            self.state = State.CLOSED
        return out

    def receive_data(self, data: bytes, now: float) -> None:
        if self.state is not State.OPEN or self._held_until is not None or not data:
            return
        self._last_active = now
        self._buffer += data
        limit = self.max_request_size if self.session.user is not None else MAX_UNAUTHENTICATED_REQUEST
        try:
            frames = read_frames(self._buffer, limit)
        except FrameError as error:
            self._close(str(error))
            return
        for frame in frames:
            if self.state is not State.OPEN or self._held_until is not None:
                break
            self._handle(frame, now)

    def next_deadline(self) -> float | None:
        if self.state is State.CLOSED:
            return None
        if self._held_until is not None:
            return self._held_until
        deadlines = [slot.pending.deadline for slot in self._slots
                     if slot.pending is not None and slot.pending.deadline is not None and not slot.pending.done]
        if self._handshake_deadline is not None and self.session.user is None:
            deadlines.append(self._handshake_deadline)
        if not self._slots:
            deadlines.append(self._last_active + IDLE_TIMEOUT)
        return min(deadlines, default=None)

    def tick(self, now: float) -> None:
        if self.state is State.CLOSED:
            return
        if self._held_until is not None:
            if now >= self._held_until:
                self._held_until = None
                self._close(self._held_reason)
            return
        if self.session.user is None and self._handshake_deadline is not None and now >= self._handshake_deadline:
            self._close("no authentication within handshake_timeout")
            return
        if not self._slots and now >= self._last_active + IDLE_TIMEOUT:
            self._close(f"idle for {IDLE_TIMEOUT:.0f} s (Kafka's connections.max.idle.ms)")
            return
        for slot in list(self._slots):
            pending = slot.pending
            if (pending is not None and not pending.done and pending.deadline is not None
                    and now >= pending.deadline and pending.on_deadline is not None):
                pending.complete(pending.on_deadline(now))

    def storage_moved(self, now: float) -> None:
        """The journal synced, or messages came back from disk: handlers
        waiting on either look again."""
        for slot in list(self._slots):
            pending = slot.pending
            if pending is not None and not pending.done and pending.poll is not None:
                pending.poll(now)

    def connection_lost(self) -> None:
        if self.state is not State.CLOSED:
            self.close_reason = self.close_reason or "connection lost"
            self.state = State.CLOSED
        self._cancel_pending()

    def _cancel_pending(self) -> None:
        for slot in self._slots:
            pending = slot.pending
            if pending is not None:
                pending.cancel()
        self._slots.clear()

    # -- requests ------------------------------------------------------------

    def _handle(self, frame: bytes, now: float) -> None:
        self.requests += 1
        try:
            request, offset = parse_header(frame)
        except ValueError as error:
            # Key, version and correlation id are there (read_frames checked the size).
            request = Request(*_fixed_header(frame), None)
            self._answer_error(request, ErrorCode.invalid_request, f"bad request header: {error}")
            return
        session = self.session
        if session.client_id is None:
            session.client_id = request.client_id
        if request.api_key == PRODUCE:
            self._produced = True
        api = session.apis.get(request.api_key)
        if api is None or not api.min_version <= request.api_version <= api.max_version:
            if api is not None and api.any_version and request.api_version > api.max_version:
                self._dispatch(api, request, frame, offset, now)
                return
            self._answer_error(request, ErrorCode.unsupported_version, None)
            return
        if session.user is None and not api.before_auth:
            refused = session.authenticate_anonymous()
            if refused is not None:
                self._answer_error(request, ErrorCode.sasl_authentication_failed, refused)
                self._login_failed(refused, now)
                return
            self.authenticated()
        self._dispatch(api, request, frame, offset, now)

    def authenticated(self) -> None:
        """The client is who it says (SASL or anonymous): limits for
        strangers no longer apply."""
        self._handshake_deadline = None
        if self.on_authenticated is not None:
            callback, self.on_authenticated = self.on_authenticated, None
            callback()

    def _dispatch(self, api: Api, request: Request, frame: bytes, offset: int, now: float) -> None:
        if api.raw:
            request.body = memoryview(frame)[offset:]
        else:
            cls = request_type(request.api_key, request.api_version)
            if cls is None:  # a version newer than the schemas: nothing to read it with
                request.body = None
            else:
                try:
                    request.body = decode_body(cls, frame, offset)
                except Exception as error:  # kio's reader: underflow, bad lengths, bad UTF-8 ...
                    self._answer_error(request, ErrorCode.invalid_request, f"unreadable body: {error!r}")
                    return
        try:
            reply = api.handler(self.session, request, now)
        except Exception:
            log.exception("kafka.handler_failed", peer=self.session.peer, api_key=request.api_key,
                          api_version=request.api_version, client_id=request.client_id)
            self._answer_error(request, ErrorCode.unknown_server_error, None)
            return
        if self._handshake_deadline is not None and self.session.user is not None:
            self.authenticated()  # through SASL
        if reply is not None:  # None: no response (a Produce with acks=0)
            slot = _Slot(request, is_flexible(request.api_key, request.api_version))
            self._slots.append(slot)
            if isinstance(reply, Pending):
                slot.pending = reply
                reply.deliver = lambda late: self._fill(slot, late)
                if reply.done:
                    raise AssertionError("a handler returned a Pending it had completed")
            else:
                self._fill(slot, reply)
        if self.session.login_failed is not None:
            self._login_failed(self.session.login_failed, now)

    def _login_failed(self, reason: str, now: float) -> None:
        """The refusal is answered and the connection closed only after a
        delay (Kafka's connection.failed.authentication.delay.ms, growing
        with the address's recent failures), reading nothing meanwhile: a
        client that retries at once cannot guess passwords at speed."""
        session = self.session
        self._held_until = now + session.failed_logins.failed(session.peer_address, now)
        self._held_reason = reason

    def _answer_error(self, request: Request, code: ErrorCode, reason: str | None) -> None:
        """Answer ``request`` with nothing but ``code``; close the connection
        when this API and version have no response schema to say it in."""
        cls = response_type(request.api_key, request.api_version)
        self.refused += 1
        if (reason is not None or cls is None) and self.refused <= LOGGED_REFUSALS:
            log.warning("kafka.request_refused", peer=self.session.peer, api_key=request.api_key,
                        api_version=request.api_version, client_id=request.client_id, error=code.name,
                        reason=reason or "no such API or version")
        if cls is None:
            self._close(f"API key {request.api_key} version {request.api_version} is not a Kafka request")
            return
        slot = _Slot(request, is_flexible(request.api_key, request.api_version))
        self._slots.append(slot)
        self._fill(slot, error_response(cls, code))

    def _fill(self, slot: _Slot, reply: Reply) -> None:
        if self.state is State.CLOSED:
            return
        request = slot.request
        if isinstance(reply, (bytes, bytearray, memoryview)):
            slot.data = encode_raw_response(request.correlation_id, slot.flexible, bytes(reply))
        else:
            slot.data = encode_response(request.correlation_id, reply)
        slots, out = self._slots, self._out
        woke = False
        while slots and slots[0].data is not None:
            data = slots.popleft().data
            assert data is not None
            out.append(data)
            self.buffered_output += len(data)
            woke = True
        if woke and self.on_output is not None:
            self.on_output()

    def _close(self, reason: str) -> None:
        """End the connection once what is queued is sent; pending replies
        are not waited for."""
        if self.state is not State.OPEN:
            return
        self.close_reason = reason
        self._cancel_pending()
        self.state = State.CLOSING if self._out else State.CLOSED
        if self.on_output is not None:
            self.on_output()


def _fixed_header(frame: bytes) -> tuple[int, int, int]:
    return (int.from_bytes(frame[0:2], "big", signed=True), int.from_bytes(frame[2:4], "big", signed=True),
            int.from_bytes(frame[4:8], "big", signed=True))

