"""Kafka's murmur2 partitioner, against Java's values and kafka-python's code."""

import pytest
from hypothesis import given, strategies as st
from kafka.partitioner.default import murmur2 as kafka_python_murmur2

import amqlite
from amqlite.core.errors import AMQPError
from amqlite.core.hashing import kafka_partition as partition_for, murmur2
from amqlite.core.stream import Stream

# Kafka's own clients/.../utils/UtilsTest.testMurmur2: Java's Utils.murmur2.
JAVA = {
    b"21": -973932308, b"foobar": -790332482, b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971, b"abc": 479470107,
}


def test_java_vectors() -> None:
    for key, expected in JAVA.items():
        assert murmur2(key) == expected, key


@given(st.binary(max_size=64))
def test_same_as_kafka_python(key: bytes) -> None:
    # kafka-python returns the same 32 bits unsigned.
    assert murmur2(key) & 0xFFFFFFFF == kafka_python_murmur2(key)


@given(st.binary(max_size=32), st.integers(1, 64))
def test_partition_in_range_and_positive_hash(key: bytes, partitions: int) -> None:
    expected = (kafka_python_murmur2(key) & 0x7FFFFFFF) % partitions
    assert partition_for(key, partitions) == expected


async def test_murmur2_exchange_routes_each_key_to_kafkas_partition() -> None:
    async with amqlite.open_broker() as broker:
        ch = await broker.channel()
        await ch.exchange_declare("orders", "x-murmur2-hash", durable=True)
        for n in range(3):
            await ch.queue_declare(f"orders-{n}", durable=True, arguments={"x-queue-type": "stream"})
        for n in (2, 0, 1):  # bound in any order: the binding key is the partition
            await ch.queue_bind(f"orders-{n}", "orders", str(n))
        keys = [f"customer-{i}" for i in range(60)]
        for key in keys:
            await ch.publish(key.encode(), exchange="orders", routing_key=key)
        vhost = broker.core.vhosts["/"]
        for n in range(3):
            stream = vhost.queues[f"orders-{n}"]
            assert isinstance(stream, Stream)
            expected = [key for key in keys if partition_for(key.encode(), 3) == n]
            assert stream.message_count == len(expected) > 0


async def test_murmur2_exchange_refuses_a_binding_key_that_is_not_a_partition() -> None:
    async with amqlite.open_broker() as broker:
        ch = await broker.channel()
        await ch.exchange_declare("t", "x-murmur2-hash")
        await ch.queue_declare("q")
        with pytest.raises(AMQPError, match="partition number"):
            await ch.queue_bind("q", "t", "1.5")
