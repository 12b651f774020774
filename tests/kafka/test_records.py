"""Record batches v2: ours against kafka-python's builder and reader, each
codec, and the checks that refuse a bad batch."""

import struct

import pytest
from hypothesis import given, settings, strategies as st
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from amqlite.kafka import records
from amqlite.kafka.records import CorruptRecord, Header, Record, UnsupportedMagic

import kafka.codec

CODECS = [records.NONE, records.GZIP, records.SNAPPY, records.LZ4, records.ZSTD]
#: What kafka-python can compress and decompress here (it needs a library
#: per codec; ours are all in cramjam, checked by our own round trip).
KAFKA_PYTHON_CODECS = [codec for codec, present in zip(CODECS, [
    True, kafka.codec.has_gzip(), kafka.codec.has_snappy(), kafka.codec.has_lz4(), kafka.codec.has_zstd()]) if present]

_records = st.lists(
    st.tuples(
        st.integers(0, 2**41),
        st.none() | st.binary(max_size=40),
        st.none() | st.binary(max_size=200),
        st.lists(st.tuples(st.text(max_size=10), st.none() | st.binary(max_size=20)), max_size=3),
    ),
    min_size=1, max_size=20)


def kafka_python_batch(rows: list, codec: int, producer: tuple[int, int, int] = (-1, -1, -1)) -> bytes:
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=codec, is_transactional=False,
                                        producer_id=producer[0], producer_epoch=producer[1],
                                        base_sequence=producer[2], batch_size=2**30)
    for i, (timestamp, key, value, headers) in enumerate(rows):
        assert builder.append(i, timestamp=timestamp, key=key, value=value, headers=headers) is not None
    return bytes(builder.build())


@settings(max_examples=40, deadline=None)
@given(_records, st.sampled_from(KAFKA_PYTHON_CODECS))
def test_reads_what_kafka_python_writes(rows: list, codec: int) -> None:
    data = kafka_python_batch(rows, codec, (7, 2, 100))
    [whole] = records.split(data)
    batch = records.parse(whole)
    assert (batch.record_count, batch.producer_id, batch.producer_epoch, batch.base_sequence) == (len(rows), 7, 2, 100)
    assert batch.last_sequence == 100 + len(rows) - 1
    assert batch.compression in (codec, records.NONE)  # it leaves what compression would grow
    got = batch.records()
    assert [(r.offset, r.timestamp, r.key, r.value, list(r.headers)) for r in got] == [
        (i, ts, key, value, [(name, v) for name, v in headers]) for i, (ts, key, value, headers) in enumerate(rows)]


@settings(max_examples=40, deadline=None)
@given(_records, st.sampled_from(KAFKA_PYTHON_CODECS), st.integers(0, 2**40))
def test_kafka_python_reads_what_we_write(rows: list, codec: int, base: int) -> None:
    ours = [Record(base + i, ts, key, value, tuple(Header(n, v) for n, v in headers))
            for i, (ts, key, value, headers) in enumerate(rows)]
    data = records.encode(base, ours, compression=codec, producer_id=3, producer_epoch=1, base_sequence=5)
    theirs = DefaultRecordBatch(data)
    assert theirs.validate_crc()
    assert (theirs.base_offset, theirs.producer_id, theirs.producer_epoch, theirs.base_sequence) == (base, 3, 1, 5)
    assert [(r.offset, r.timestamp, r.key, r.value, list(r.headers)) for r in theirs] == [
        (r.offset, r.timestamp, r.key, r.value, [tuple(h) for h in r.headers]) for r in ours]
    assert records.parse(data).records() == ours


@settings(max_examples=20, deadline=None)
@given(_records, st.sampled_from(CODECS))
def test_round_trip_every_codec(rows: list, codec: int) -> None:
    ours = [Record(i, ts, key, value, tuple(Header(n, v) for n, v in headers))
            for i, (ts, key, value, headers) in enumerate(rows)]
    batch = records.parse(records.encode(0, ours, compression=codec))
    assert batch.compression == codec
    assert batch.records() == ours


def test_xerial_snappy_as_java_writes_it() -> None:
    import cramjam
    # Java's SnappyOutputStream: magic, version 1, compatible version 1,
    # then (length, raw snappy block) pairs of up to 32 KiB of input.
    payload = bytes(range(256)) * 400
    blocks = [bytes(cramjam.snappy.compress_raw(payload[i:i + 32768])) for i in range(0, len(payload), 32768)]
    framed = b"\x82SNAPPY\x00" + struct.pack(">ii", 1, 1) + b"".join(
        struct.pack(">i", len(block)) + block for block in blocks)
    assert records.decompress(records.SNAPPY, framed) == payload


def test_several_batches_in_one_request() -> None:
    one = records.encode(0, [Record(0, 1, b"k", b"v")])
    two = records.encode(0, [Record(0, 2, None, b"w"), Record(1, 3, None, None)])
    assert records.split(one + two) == [one, two]
    with pytest.raises(CorruptRecord):
        records.split(one + two[:-1])


def test_base_offset_is_outside_the_crc() -> None:
    batch = records.parse(records.encode(0, [Record(0, 1, b"k", b"v"), Record(1, 1, b"k", b"w")]))
    moved = batch.with_base_offset(1000)
    again = records.parse(moved.data)
    assert again.base_offset == 1000
    assert [r.offset for r in again.records()] == [1000, 1001]


def test_bad_crc_refused() -> None:
    data = bytearray(records.encode(0, [Record(0, 1, b"k", b"value")]))
    data[-1] ^= 1
    with pytest.raises(CorruptRecord, match="CRC"):
        records.parse(bytes(data))


def test_lying_record_count_refused() -> None:
    data = records.encode(0, [Record(0, 1, b"k", b"v"), Record(1, 1, b"k", b"w")])
    # Claim three records (and fix the CRC): the lengths do not add up.
    head = bytearray(data)
    struct.pack_into(">ii", head, 57 - 4, 2, 3)  # lastOffsetDelta, count
    struct.pack_into(">I", head, 17, __import__("crc32c").crc32c(bytes(head[21:])))
    with pytest.raises(CorruptRecord):
        records.parse(bytes(head))


def test_old_magic_refused() -> None:
    # A magic 1 message set: offset, size, crc, magic 1 ...
    legacy = struct.pack(">qiIbbq", 0, 30, 0, 1, 0, 0) + b"\xff\xff\xff\xff" + b"\x00\x00\x00\x04abcd"
    with pytest.raises(UnsupportedMagic):
        records.parse(legacy)


def test_garbage_compressed_payload_refused() -> None:
    good = records.encode(0, [Record(0, 1, None, b"v" * 50)], compression=records.LZ4)
    body = bytearray(good)
    body[records.HEADER_SIZE + 6:] = b"\x00" * (len(body) - records.HEADER_SIZE - 6)
    struct.pack_into(">I", body, 17, __import__("crc32c").crc32c(bytes(body[21:])))
    with pytest.raises(CorruptRecord):
        records.parse(bytes(body))


@given(st.integers(-2**63, 2**63 - 1))
def test_varint_round_trip(value: int) -> None:
    out = bytearray()
    records.write_varint(out, value)
    assert records.read_varint(bytes(out), 0) == (value, len(out))
