"""Kafka's default partitioner: which partition a keyed record goes to.

Java's ``Utils.murmur2`` (MurmurHash2, seed 0x9747b28c), then
``(murmur2(key) & 0x7fffffff) % partitions``, as the Java client,
kafka-python and aiokafka place keyed records. amqlite's partitioned
streams route AMQP publishes by the same rule (routing key as the key), so
a Kafka producer and an AMQP publisher with the same key feed the same
partition. librdkafka's default (``consistent_random``, CRC32) differs:
its ``partitioner=murmur2_random`` matches (docs/kafka.md).
"""

from __future__ import annotations

import struct

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF
_WORDS = struct.Struct("<I")


def murmur2(data: bytes) -> int:
    """Java's ``Utils.murmur2``: a signed 32-bit int."""
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


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for ``key``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
