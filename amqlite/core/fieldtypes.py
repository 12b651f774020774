"""Field values whose AMQP wire type matters beyond their Python type."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Hashable

#: How deep field tables and arrays may nest (a headers table is level 1).
#: Decoding, encoding and the embedded publish all enforce it, so a message
#: that was accepted can always be encoded again, whatever happens to it.
MAX_NESTING = 64


def nesting(value: Any) -> int:
    """How deep tables (mappings) and arrays (lists, tuples) nest in ``value``;
    without recursion, so any depth is measured."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def freeze(value: Any) -> Hashable:
    """A hashable, order-insensitive key for a field value (binding
    arguments, message ids)."""
    if isinstance(value, dict):
        return tuple(sorted((k, freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    # Python says True == 1; AMQP does not, so keep the type in the key.
    return (type(value).__name__, value)


class Long(int):
    """An integer the codec always writes as a signed 64-bit ``l``, whatever its size.

    RabbitMQ writes x-death ``count`` this way, and clients in typed languages
    read it so (Java's ``(Long)``, Go's ``.(int64)``); a plain small ``int``
    would go out as a 32-bit ``I``.
    """

    __slots__ = ()
