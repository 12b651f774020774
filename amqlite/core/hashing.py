"""Partitioning exchanges: each message goes to one of the bound queues,
chosen by a hash, so that the same key always reaches the same queue.

``x-consistent-hash`` is RabbitMQ's plugin: a binding's key is its weight,
the number of buckets it gets; buckets are numbered in binding order, and a
message's bucket is Lamping and Veach's jump consistent hash of its key
over the bucket count, so adding a binding moves only about 1/n of the
keys. It hashes the routing key, or the header named by the exchange's
``hash-header`` argument, or the property named by ``hash-property``
(``message_id``, ``correlation_id`` or ``timestamp``).

``x-modulus-hash`` is RabbitMQ 4's: the hash of the routing key modulo the
number of bindings, over the bound destinations sorted by name; binding
keys are ignored, and a destination bound twice gets twice the share.

``x-murmur2-hash`` is amqlite's, for Kafka topics of several partitions:
each binding's key is its partition number (0 ... N-1), and a message goes
to partition ``(murmur2(routing key) & 0x7fffffff) % N``, Kafka's default
partitioner (Java, kafka-python, aiokafka), so that an AMQP publisher and
a Kafka producer with the same key feed the same partition.

The other two hash with the first 8 bytes of BLAKE2b, stable across restarts and
machines, but not Erlang's ``phash2``: the same key may land on a
different queue here than in RabbitMQ (docs/concepts.md).
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any, Iterable

from .errors import PreconditionFailed
from .message import Message

CONSISTENT_HASH = "x-consistent-hash"
MODULUS_HASH = "x-modulus-hash"
MURMUR2_HASH = "x-murmur2-hash"
#: The properties hash-property may name, as the plugin allows.
HASHABLE_PROPERTIES = ("correlation_id", "message_id", "timestamp")


def validate_consistent_hash_arguments(arguments: dict[str, Any]) -> None:
    """RabbitMQ's checks of hash-header and hash-property, with its words;
    a non-string value, which crashes RabbitMQ's channel (541), is a 406."""
    header, prop = arguments.get("hash-header"), arguments.get("hash-property")
    for name, value in (("hash-header", header), ("hash-property", prop)):
        if value is not None and not isinstance(value, str):
            raise PreconditionFailed(f"{name} must be a string, not {value!r}")
    if header is not None and prop is not None:
        raise PreconditionFailed("hash-header and hash-property are mutually exclusive")
    if prop is not None and prop not in HASHABLE_PROPERTIES:
        raise PreconditionFailed(f"Unsupported property: {prop}")


def weight_of(routing_key: str) -> int:
    """A consistent-hash binding's key as its weight, checked as the plugin does."""
    try:
        weight = int(routing_key, 10)
    except ValueError:
        raise PreconditionFailed(f'The binding key must be an integer: <<"{routing_key}">>') from None
    if weight < 1:
        raise PreconditionFailed("The binding key must be greater than 0")
    return weight


def stable_hash(value: Any) -> int:
    """64 bits that do not change between runs (unlike Python's hash())."""
    if isinstance(value, str):
        data = value.encode()
    elif isinstance(value, bytes):
        data = value
    else:
        data = repr(value).encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def jump_consistent_hash(key: int, buckets: int) -> int:
    """Lamping and Veach (2014): a bucket in [0, buckets) such that growing
    ``buckets`` by one moves only the keys that go to the new bucket."""
    bucket, jump = -1, 0
    while jump < buckets:
        bucket = jump
        key = (key * 2862933555777941757 + 1) & 0xFFFFFFFFFFFFFFFF
        jump = int((bucket + 1) * ((1 << 31) / ((key >> 33) + 1)))
    return bucket


class ConsistentHashRouter:
    def __init__(self, arguments: dict[str, Any]) -> None:
        self._header: str | None = arguments.get("hash-header")
        self._property: str | None = arguments.get("hash-property")
        #: Bindings in the order they were made, with their weights.
        self._bindings: list[tuple[Any, str, int]] = []
        #: One entry per bucket: its destination.
        self._buckets: list[Any] = []

    def add(self, destination: Any, routing_key: str, arguments: dict[str, Any]) -> None:
        self._bindings.append((destination, routing_key, weight_of(routing_key)))
        self._renumber()

    def remove(self, destination: Any, routing_key: str, arguments: dict[str, Any]) -> None:
        # Later buckets move down, as the plugin renumbers them.
        self._bindings = [b for b in self._bindings if b[:2] != (destination, routing_key)]
        self._renumber()

    def _renumber(self) -> None:
        self._buckets = [dest for dest, _, weight in self._bindings for _ in range(weight)]

    def route(self, routing_key: str, message: Message) -> Iterable[Any]:
        if not self._buckets:
            return ()
        if self._header is not None:
            value: Any = (message.properties.headers or {}).get(self._header)
        elif self._property is not None:
            value = getattr(message.properties, self._property)
        else:
            value = routing_key
        return (self._buckets[jump_consistent_hash(stable_hash(value), len(self._buckets))],)


class ModulusHashRouter:
    def __init__(self, arguments: dict[str, Any]) -> None:
        #: Every binding's destination, sorted by name (RabbitMQ sorts so
        #: that routing is the same after a restart); duplicates weigh.
        self._destinations: list[Any] = []

    def add(self, destination: Any, routing_key: str, arguments: dict[str, Any]) -> None:
        self._destinations.append(destination)
        self._destinations.sort(key=lambda d: (type(d).__name__, d.name))

    def remove(self, destination: Any, routing_key: str, arguments: dict[str, Any]) -> None:
        self._destinations.remove(destination)

    def route(self, routing_key: str, message: Message) -> Iterable[Any]:
        if not self._destinations:
            return ()
        return (self._destinations[stable_hash(routing_key) % len(self._destinations)],)


_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF
_WORDS = struct.Struct("<I")


def murmur2(data: bytes) -> int:
    """Java's ``org.apache.kafka.common.utils.Utils.murmur2``: a signed
    32-bit int."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    whole = length & ~3
    for (k,) in _WORDS.iter_unpack(data[:whole]):
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    extra = length & 3
    if extra == 3:
        h ^= data[whole + 2] << 16
    if extra >= 2:
        h ^= data[whole + 1] << 8
    if extra >= 1:
        h ^= data[whole]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - 0x100000000 if h & 0x80000000 else h


def kafka_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for ``key``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class Murmur2HashRouter:
    def __init__(self, arguments: dict[str, Any]) -> None:
        #: Partition number -> destination.
        self._partitions: dict[int, Any] = {}

    def add(self, destination: Any, routing_key: str, arguments: dict[str, Any]) -> None:
        if not routing_key.isdigit() or str(int(routing_key)) != routing_key:
            raise PreconditionFailed(f"the binding key of an {MURMUR2_HASH} exchange is a partition number "
                                     f"(0, 1 ...), not {routing_key!r}")
        self._partitions[int(routing_key)] = destination

    def remove(self, destination: Any, routing_key: str, arguments: dict[str, Any]) -> None:
        if routing_key.isdigit() and self._partitions.get(int(routing_key)) is destination:
            del self._partitions[int(routing_key)]

    def route(self, routing_key: str, message: Message) -> Iterable[Any]:
        """Partitions 0 ... N-1 all bound: the one the key hashes to;
        otherwise (a partition missing) nowhere, as a Kafka producer
        cannot send to a partition that is not there."""
        count = len(self._partitions)
        destination = self._partitions.get(kafka_partition(routing_key.encode(), count)) if count else None
        return () if destination is None else (destination,)
