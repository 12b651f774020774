"""Kafka's murmur2 partitioner, against Java's values and kafka-python's code."""

from hypothesis import given, strategies as st
from kafka.partitioner.default import murmur2 as kafka_python_murmur2

from amqlite.kafka.partitioner import murmur2, partition_for

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
