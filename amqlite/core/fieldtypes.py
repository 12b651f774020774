"""Field values whose AMQP wire type matters beyond their Python type."""

from __future__ import annotations


class Long(int):
    """An integer the codec always writes as a signed 64-bit ``l``, whatever its size.

    RabbitMQ writes x-death ``count`` this way, and clients in typed languages
    read it so (Java's ``(Long)``, Go's ``.(int64)``); a plain small ``int``
    would go out as a 32-bit ``I``.
    """

    __slots__ = ()
