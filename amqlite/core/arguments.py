"""Validation of the ``x-`` arguments of queues and exchanges.

Arguments are checked once, at declare time, and turned into typed settings,
so the hot path never looks at a raw argument table again. Unknown arguments
are kept and ignored, as RabbitMQ does.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import attrs

from .errors import PreconditionFailed

DROP_HEAD = "drop-head"
REJECT_PUBLISH = "reject-publish"
REJECT_PUBLISH_DLX = "reject-publish-dlx"
OVERFLOW_MODES = (DROP_HEAD, REJECT_PUBLISH, REJECT_PUBLISH_DLX)

#: LavinMQ's default once broker-side retry is switched on.
DEFAULT_RETRY_DELIVERY_LIMIT = 20
#: RabbitMQ's longest TTL, expiration or x-expires: ten years in milliseconds.
MAX_EXPIRY_MS = 315_360_000_000
_LEADING_INTEGER = re.compile(r"([+-]?[0-9]+)(.*)", re.DOTALL)

# The arguments RabbitMQ compares when a queue is redeclared.
EQUIVALENCE_KEYS = (
    "x-message-ttl",
    "x-expires",
    "x-max-length",
    "x-max-length-bytes",
    "x-overflow",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-priority",
    "x-single-active-consumer",
    "x-delivery-limit",
    "x-delayed-retry-min",
    "x-delayed-retry-max",
    "x-delayed-retry-multiplier",
    "x-queue-type",
    "x-max-age",
    "x-stream-max-segment-size-bytes",
    "x-consumer-timeout",
    "x-message-group-header",
    "x-message-group-in-flight",
)


@attrs.frozen(slots=True)
class RetryPolicy:
    """Broker-side retry with backoff (LavinMQ's ``x-delayed-retry-*``).

    Times are in seconds. ``multiplier`` None means linear growth.
    """

    min_delay: float
    max_delay: float | None
    multiplier: float | None

    def delay(self, attempt: int) -> float:
        """Delay before redelivery after the ``attempt``-th failure (1-based)."""
        if self.multiplier is None:
            delay = self.min_delay * attempt
        else:
            delay = self.min_delay * self.multiplier ** (attempt - 1)
        if self.max_delay is not None:
            delay = min(delay, self.max_delay)
        return delay


@attrs.frozen(slots=True)
class QueueSettings:
    message_ttl: float | None = None
    expires: float | None = None
    max_length: int | None = None
    max_length_bytes: int | None = None
    overflow: str = DROP_HEAD
    dead_letter_exchange: str | None = None
    dead_letter_routing_key: str | None = None
    max_priority: int | None = None
    single_active_consumer: bool = False
    delivery_limit: int | None = None
    retry: RetryPolicy | None = None
    #: x-consumer-timeout in seconds: a delivery unacked for longer closes
    #: its channel (core/channel.py). None: the broker's default applies.
    consumer_timeout: float | None = None
    #: x-message-group-header: the header whose value groups messages
    #: (core/messagegroups.py); None: no groups.
    group_header: str | None = None
    #: x-message-group-in-flight: messages of one group out at once.
    group_in_flight: int = 1


def _fail(key: str, what: str, name: str, vhost: str, value: Any) -> PreconditionFailed:
    return PreconditionFailed(
        f"invalid arg '{key}' for queue '{name}' in vhost '{vhost}': {what} ({value!r})"
    )


def _invalid(key: str, reason: str, name: str, vhost: str) -> PreconditionFailed:
    # RabbitMQ prints the reason as an Erlang term, e.g. {value_negative,-1}.
    return PreconditionFailed(f"invalid arg '{key}' for queue '{name}' in vhost '{vhost}': {reason}")


def _int(args: Mapping[str, Any], key: str, name: str, vhost: str, minimum: int) -> int | None:
    value = args.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(key, f'"expected integer, got {amqp_type(value)}"', name, vhost)
    if value < 0:
        raise _invalid(key, f"{{value_negative,{value}}}", name, vhost)
    if value < minimum:
        raise _invalid(key, f"{{value_zero,{value}}}", name, vhost)
    return value


def _str(args: Mapping[str, Any], key: str, name: str, vhost: str) -> str | None:
    value = args.get(key)
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        raise _invalid(key, f"{{unacceptable_type,{amqp_type(value)}}}", name, vhost)
    return value


def queue_settings(args: Mapping[str, Any] | None, name: str, vhost: str) -> QueueSettings:
    args = args or {}
    ttl = _int(args, "x-message-ttl", name, vhost, 0)
    expires = _int(args, "x-expires", name, vhost, 1)
    for key, value in (("x-message-ttl", ttl), ("x-expires", expires)):
        if value is not None and value > MAX_EXPIRY_MS:
            raise _invalid(key, f"{{value_too_large,{value}}}", name, vhost)
    overflow = _str(args, "x-overflow", name, vhost) or DROP_HEAD
    if overflow not in OVERFLOW_MODES:
        raise _invalid("x-overflow", "invalid_overflow", name, vhost)
    dlx = args.get("x-dead-letter-exchange")
    if dlx is not None and not isinstance(dlx, (str, bytes)):
        raise PreconditionFailed(
            f"invalid type '{amqp_type(dlx)}' for arg 'x-dead-letter-exchange' in queue '{name}' in vhost '{vhost}'"
        )
    dlx = _str(args, "x-dead-letter-exchange", name, vhost)
    dlrk = _str(args, "x-dead-letter-routing-key", name, vhost)
    if dlrk is not None and dlx is None:
        raise _invalid("x-dead-letter-routing-key", "routing_key_but_no_dlx_defined", name, vhost)
    # 0 is accepted, as by RabbitMQ: every message then has the one priority there is.
    max_priority = _int(args, "x-max-priority", name, vhost, 0)
    if max_priority is not None and max_priority > 255:
        raise _invalid("x-max-priority", f"{{max_value_exceeded,{max_priority}}}", name, vhost)
    sac = args.get("x-single-active-consumer", False)
    if not isinstance(sac, bool):
        raise _invalid("x-single-active-consumer", f"{{unacceptable_type,{amqp_type(sac)}}}", name, vhost)
    queue_type = _str(args, "x-queue-type", name, vhost)
    if queue_type not in (None, "classic", "quorum"):
        raise _invalid("x-queue-type", f'"unsupported queue type \'{queue_type}\'"', name, vhost)
    _refuse_foreign(args, STREAM_ONLY, f"rabbit_{queue_type or 'classic'}_queue", name, vhost)
    retry = _retry(args, name, vhost)
    limit = _int(args, "x-delivery-limit", name, vhost, 0)
    if limit is None and retry is not None:
        limit = DEFAULT_RETRY_DELIVERY_LIMIT
    consumer_timeout = _int(args, "x-consumer-timeout", name, vhost, 0)
    group_header = _str(args, "x-message-group-header", name, vhost)
    if group_header == "":
        raise _invalid("x-message-group-header", '"expected a header name"', name, vhost)
    group_in_flight = _int(args, "x-message-group-in-flight", name, vhost, 1)
    if group_in_flight is not None and group_header is None:
        raise _invalid("x-message-group-in-flight", "group_in_flight_but_no_group_header", name, vhost)
    return QueueSettings(
        message_ttl=None if ttl is None else ttl / 1000,
        expires=None if expires is None else expires / 1000,
        max_length=_int(args, "x-max-length", name, vhost, 0),
        max_length_bytes=_int(args, "x-max-length-bytes", name, vhost, 0),
        overflow=overflow,
        dead_letter_exchange=dlx,
        dead_letter_routing_key=dlrk,
        max_priority=max_priority,
        single_active_consumer=sac,
        delivery_limit=limit,
        retry=retry,
        consumer_timeout=None if consumer_timeout is None else consumer_timeout / 1000,
        group_header=group_header,
        group_in_flight=1 if group_in_flight is None else group_in_flight,
    )


#: Stream arguments (RabbitMQ's) that other queue types refuse, and the
#: other way round: queue arguments a stream refuses.
STREAM_ONLY = ("x-max-age", "x-stream-max-segment-size-bytes")
NOT_FOR_STREAMS = (
    "x-message-ttl", "x-expires", "x-max-length", "x-overflow", "x-dead-letter-exchange",
    "x-dead-letter-routing-key", "x-max-priority", "x-single-active-consumer", "x-delivery-limit",
    "x-delayed-retry-min", "x-delayed-retry-max", "x-delayed-retry-multiplier",
    "x-message-group-header", "x-message-group-in-flight",
)
#: RabbitMQ's default segment size for streams.
DEFAULT_STREAM_SEGMENT_SIZE = 500_000_000
#: x-max-age units, as RabbitMQ reads them (a month is 30 days, a year 365).
AGE_UNITS = {"Y": 365 * 86400, "M": 30 * 86400, "D": 86400, "h": 3600, "m": 60, "s": 1}
_AGE = re.compile(r"([0-9]+)([YMDhms])")


def _refuse_foreign(args: Mapping[str, Any], keys: tuple[str, ...], type_name: str, name: str, vhost: str) -> None:
    for key in keys:
        if key in args:
            raise PreconditionFailed(
                f"invalid arg '{key}' for queue '{name}' in vhost '{vhost}' of queue type {type_name}")


@attrs.frozen(slots=True)
class StreamSettings:
    #: Seconds; segments whose newest message is older go (None: kept).
    max_age: float | None = None
    max_length_bytes: int | None = None
    max_segment_size: int = DEFAULT_STREAM_SEGMENT_SIZE


def parse_age(text: str) -> float | None:
    """Seconds in an x-max-age or interval string ("7D", "30m"), or None."""
    match = _AGE.fullmatch(text)
    return None if match is None else int(match.group(1)) * AGE_UNITS[match.group(2)]


def stream_settings(args: Mapping[str, Any], name: str, vhost: str, *, durable: bool, exclusive: bool,
                    auto_delete: bool) -> StreamSettings:
    """A stream's declaration checked as RabbitMQ checks it, in its words."""
    for refused, prop in ((not durable, "non-durable"), (exclusive, "exclusive-owner"), (auto_delete, "auto-delete")):
        if refused:
            raise PreconditionFailed(f"invalid property '{prop}' for queue '{name}' in vhost '{vhost}'")
    _refuse_foreign(args, NOT_FOR_STREAMS, "rabbit_stream_queue", name, vhost)
    max_age = _str(args, "x-max-age", name, vhost)
    age = None if max_age is None else parse_age(max_age)
    if max_age is not None and age is None:
        raise _invalid("x-max-age", "invalid_max_age", name, vhost)
    segment_size = _int(args, "x-stream-max-segment-size-bytes", name, vhost, 1)
    return StreamSettings(
        max_age=age,
        max_length_bytes=_int(args, "x-max-length-bytes", name, vhost, 0),
        max_segment_size=DEFAULT_STREAM_SEGMENT_SIZE if segment_size is None else segment_size,
    )


def _retry(args: Mapping[str, Any], name: str, vhost: str) -> RetryPolicy | None:
    min_ms = _int(args, "x-delayed-retry-min", name, vhost, 1)
    max_ms = _int(args, "x-delayed-retry-max", name, vhost, 1)
    multiplier = args.get("x-delayed-retry-multiplier")
    if min_ms is None:
        if max_ms is not None or multiplier is not None:
            raise _fail("x-delayed-retry-min", "required by the other x-delayed-retry arguments", name, vhost, None)
        return None
    if multiplier is not None and (
        isinstance(multiplier, bool) or not isinstance(multiplier, (int, float)) or multiplier < 1
    ):
        raise _fail("x-delayed-retry-multiplier", "must be a number of at least 1", name, vhost, multiplier)
    if max_ms is not None and max_ms < min_ms:
        raise _fail("x-delayed-retry-max", "must not be less than x-delayed-retry-min", name, vhost, max_ms)
    return RetryPolicy(
        min_delay=min_ms / 1000,
        max_delay=None if max_ms is None else max_ms / 1000,
        multiplier=None if multiplier is None else float(multiplier),
    )


def message_ttl(expiration: str | None) -> float | None:
    """The per-message ``expiration`` property in seconds, or None if unusable.

    RabbitMQ rejects a malformed expiration at publish time; the caller does
    that with the error this raises.
    """
    if expiration is None:
        return None
    if expiration.isascii() and expiration.isdigit():
        ms = int(expiration)
    else:
        # Erlang's string:to_integer, as RabbitMQ parses it: a sign, digits, nothing after.
        match = _LEADING_INTEGER.match(expiration)
        if match is None:
            raise PreconditionFailed(f"invalid expiration '{expiration}': no_integer")
        if match.group(2):
            raise PreconditionFailed(f"invalid expiration '{expiration}': {{leftover_string,\"{match.group(2)}\"}}")
        ms = int(match.group(1))
    if ms < 0:
        raise PreconditionFailed(f"invalid expiration '{expiration}': {{value_negative,{ms}}}")
    if ms > MAX_EXPIRY_MS:
        raise PreconditionFailed(f"invalid expiration '{expiration}': {{value_too_large,{ms}}}")
    return ms / 1000


def amqp_type(value: Any) -> str:
    """The AMQP field type RabbitMQ names in its error texts."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "signedint" if -(2**31) <= value < 2**31 else "long"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "longstr"
    return type(value).__name__


def _erlang_text(value: Any) -> str:
    # RabbitMQ formats values with Erlang's ~tp (booleans are atoms) or ~ts.
    return str(value).lower() if isinstance(value, bool) else str(value)


def describe_arg(value: Any) -> str:
    """RabbitMQ's wording, which people search for when a redeclare fails."""
    if value is None:
        return "none"
    return f"the value '{_erlang_text(value)}' of type '{amqp_type(value)}'"


def check_equivalent(
    kind: str, name: str, vhost: str, current: Mapping[str, Any], received: Mapping[str, Any], keys: tuple[str, ...]
) -> None:
    for key in keys:
        mine, theirs = current.get(key), received.get(key)
        if key == "x-queue-type" and (mine or "classic") == (theirs or "classic"):
            continue
        if mine != theirs or (type(mine) is not type(theirs) and not _same_number(mine, theirs)):
            if mine is None or theirs is None:
                # Only one side has it: RabbitMQ names the type of the value present.
                detail = f"received {describe_arg(theirs)} but current is {describe_arg(mine)}"
            else:
                detail = f"received '{_erlang_text(theirs)}' but current is '{_erlang_text(mine)}'"
            raise PreconditionFailed(f"inequivalent arg '{key}' for {kind} '{name}' in vhost '{vhost}': {detail}")


def _same_number(a: Any, b: Any) -> bool:
    # Clients encode the same integer with different widths; that is still equal.
    return isinstance(a, int) and isinstance(b, int) and not isinstance(a, bool) and not isinstance(b, bool) and a == b
