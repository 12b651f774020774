"""Headers-exchange matching with RabbitMQ's semantics.

Mirrors ``rabbit_exchange_type_headers``: the binding's ``x-match`` argument
picks ``all`` (the default), ``any``, ``all-with-x`` or ``any-with-x``.  Plain
``all``/``any`` skip binding arguments whose name starts with ``x-``, so
broker-level arguments never have to appear in message headers; the
``-with-x`` variants compare them too.  ``x-match`` itself is never compared.

Values are compared the way RabbitMQ compares its typed field values, not the
way Python's ``==`` does: ``True`` is not ``1`` (AMQP booleans are atoms in
Erlang), ``1`` is not ``"1"``, and ``Decimal("1.0")`` is not ``Decimal("1")``
(AMQP decimals carry their scale).  Integers and floats do compare by numeric
value (Erlang's ``==`` says ``1 == 1.0``), and ``str`` and ``bytes`` are both
AMQP byte strings, so they are equal when the text encodes to the bytes.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from amqlite.core.errors import PreconditionFailed

_MODES = frozenset({"all", "any", "all-with-x", "any-with-x"})

# Types for which Python's == already agrees with RabbitMQ when both sides
# have the same type; checked first so the common case costs one set lookup.
_PLAIN_TYPES = frozenset({str, bytes, int, float, bool, datetime.datetime})

# Erlang's ~tp escapes these inside a printed binary; other control
# characters make it print the binary as a list of byte values instead.
_ERLANG_ESCAPES = {
    "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v",
    "\b": "\\b", "\f": "\\f", "\x1b": "\\e", '"': '\\"', "\\": "\\\\",
}

# AMQP field-type names RabbitMQ would report for a non-string x-match.
_AMQP_TYPE_NAMES = {
    bool: "bool", int: "long", float: "double", Decimal: "decimal",
    datetime.datetime: "timestamp", dict: "table", list: "array",
    type(None): "void",
}


def _as_text(value: Any) -> str | None:
    """The x-match value as text, or None if it is not an AMQP string at all."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    return None


def _erlang_binary(value: str | bytes | bytearray) -> str:
    """Render a string as Erlang's ``~tp`` would, because that is the text
    RabbitMQ puts in its error, and clients and their tests match on it."""
    raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if not raw:
        return "<<>>"
    if text is not None and all(c in _ERLANG_ESCAPES or c.isprintable() for c in text):
        body = "".join(_ERLANG_ESCAPES.get(c, c) for c in text)
        suffix = "" if text.isascii() else "/utf8"
        return f'<<"{body}"{suffix}>>'
    return "<<" + ",".join(str(b) for b in raw) + ">>"


def validate_x_match(binding_args: Mapping[str, Any]) -> None:
    """Reject a binding whose x-match RabbitMQ would reject at queue.bind time.

    An absent x-match is allowed (it means ``all``), as RabbitMQ allows it.
    """
    if "x-match" not in binding_args:
        return
    value = binding_args["x-match"]
    text = _as_text(value)
    if text is None:
        type_name = _AMQP_TYPE_NAMES.get(type(value), type(value).__name__)
        shown = str(value).lower() if isinstance(value, bool) else repr(value)
        raise PreconditionFailed(
            f"Invalid x-match field type {type_name} (value {shown}); expected longstr"
        )
    if text not in _MODES:
        raise PreconditionFailed(
            f"Invalid x-match field value {_erlang_binary(value)}; "
            "expected all, any, all-with-x, or any-with-x"
        )


def _same_value(expected: Any, actual: Any) -> bool:
    """Whether two header values are equal as RabbitMQ's typed values are."""
    kind = type(expected)
    if kind is type(actual) and kind in _PLAIN_TYPES:
        return expected == actual
    if isinstance(expected, bool) or isinstance(actual, bool):
        # Only reached with a bool on one side and a non-bool on the other
        # (including an int, which Python would call equal).
        return False
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
        return expected == actual
    if isinstance(expected, (str, bytes, bytearray)) and isinstance(
        actual, (str, bytes, bytearray)
    ):
        left = expected.encode("utf-8") if isinstance(expected, str) else bytes(expected)
        right = actual.encode("utf-8") if isinstance(actual, str) else bytes(actual)
        return left == right
    if isinstance(expected, Decimal) and isinstance(actual, Decimal):
        return expected.as_tuple() == actual.as_tuple()
    if isinstance(expected, Mapping) and isinstance(actual, Mapping):
        return expected.keys() == actual.keys() and all(
            _same_value(v, actual[k]) for k, v in expected.items()
        )
    if isinstance(expected, (list, tuple)) and isinstance(actual, (list, tuple)):
        return len(expected) == len(actual) and all(
            _same_value(e, a) for e, a in zip(expected, actual)
        )
    return kind is type(actual) and expected == actual


def headers_match(binding_args: Mapping[str, Any], headers: Mapping[str, Any] | None) -> bool:
    """Whether a message with ``headers`` is routed along a headers binding.

    An unrecognised x-match counts as ``all``: bindings made before RabbitMQ
    validated the field still route that way, and validation is the job of
    :func:`validate_x_match` at bind time, not of every publish.
    """
    mode = _as_text(binding_args.get("x-match", "all"))
    match_any = mode in ("any", "any-with-x")
    with_x = mode in ("all-with-x", "any-with-x")
    if headers is None:
        headers = {}
    for key, expected in binding_args.items():
        if key == "x-match" or (not with_x and key.startswith("x-")):
            continue
        if key in headers and (expected is None or _same_value(expected, headers[key])):
            # A void binding value asks only that the header be present.
            if match_any:
                return True
        elif not match_any:
            return False
    # Reached when every relevant key matched (all) or none did (any), which
    # also makes "all" with no relevant keys match everything and "any" with
    # none match nothing.
    return not match_any
