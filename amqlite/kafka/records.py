"""Kafka record batches, v2 (magic 2): decode, check and encode.

The layout (Kafka's ``DefaultRecordBatch``), big-endian::

    baseOffset int64, batchLength int32, partitionLeaderEpoch int32,
    magic int8 (2), crc uint32 (CRC-32C of everything after it),
    attributes int16 (bits 0-2 compression, 3 timestamp type,
    4 transactional, 5 control), lastOffsetDelta int32,
    baseTimestamp int64, maxTimestamp int64, producerId int64,
    producerEpoch int16, baseSequence int32, records count int32,
    then the records, compressed as a whole when compression is set.

A record: length varint, attributes int8, timestampDelta varlong,
offsetDelta varint, key (varint length, -1 null), value (likewise),
headers count varint, then each header: key (varint length, UTF-8),
value (varint length, -1 null). Varints are zigzag, as protobuf's sint.

The broker keeps a batch as the producer built it (only baseOffset is
rewritten, outside the CRC) and serves it back as is: checking a batch
costs a CRC and a walk over the record lengths, not a decode of each
record. Records are decoded only for AMQP readers.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import cramjam

MAGIC = 2
NONE, GZIP, SNAPPY, LZ4, ZSTD = range(5)
COMPRESSION_MASK = 0x07
LOG_APPEND_TIME = 0x08
TRANSACTIONAL = 0x10
CONTROL = 0x20
NO_PRODUCER_ID = -1
NO_SEQUENCE = -1

#: Up to and including the magic byte; the CRC follows.
_PREFIX = struct.Struct(">qiib")
_CRC = struct.Struct(">I")
#: After the CRC: the part the CRC covers, up to the records.
_HEADER = struct.Struct(">hiqqqhii")
HEADER_SIZE = _PREFIX.size + _CRC.size + _HEADER.size  # 61
#: Where the CRC'd part starts, and the batch length field.
_CRC_START = _PREFIX.size + _CRC.size
_LENGTH_AT = 8
#: baseOffset + batchLength: what batchLength does not count.
LOG_OVERHEAD = 12
_OFFSET = struct.Struct(">q")
_LENGTH = struct.Struct(">i")

#: The xerial snappy framing Java's client writes (kafka-python too).
_XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_BLOCK = struct.Struct(">i")


class CorruptRecord(ValueError):
    """A batch that fails its checks: Kafka's CORRUPT_MESSAGE (2)."""


class UnsupportedMagic(ValueError):
    """Message sets older than magic 2: Kafka's UNSUPPORTED_FOR_MESSAGE_FORMAT (43)."""


class Header(NamedTuple):
    key: str
    value: bytes | None


class Record(NamedTuple):
    offset: int
    #: Milliseconds since the epoch.
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...] = ()


class Batch(NamedTuple):
    """One stored record batch: its bytes and what the header says."""

    data: bytes
    base_offset: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int

    @property
    def size(self) -> int:
        """Bytes of the whole batch, as its header says."""
        return LOG_OVERHEAD + _LENGTH.unpack_from(self.data, _LENGTH_AT)[0]

    @property
    def compression(self) -> int:
        return self.attributes & COMPRESSION_MASK

    @property
    def last_sequence(self) -> int:
        """The sequence of its last record (sequences wrap at 2**31)."""
        return (self.base_sequence + self.last_offset_delta) & 0x7FFFFFFF

    def records(self) -> list[Record]:
        """The records, decoded (decompressed first if need be)."""
        payload = decompress(self.compression, memoryview(self.data)[HEADER_SIZE:])
        log_append = self.attributes & LOG_APPEND_TIME
        records = []
        at = 0
        for _ in range(self.record_count):
            length, at = read_varint(payload, at)
            end = at + length
            at += 1  # attributes: unused
            timestamp_delta, at = read_varint(payload, at)
            offset_delta, at = read_varint(payload, at)
            key, at = _read_bytes(payload, at)
            value, at = _read_bytes(payload, at)
            count, at = read_varint(payload, at)
            headers = []
            for _ in range(count):
                name_length, at = read_varint(payload, at)
                name = bytes(payload[at:at + name_length]).decode()
                header_value, at = _read_bytes(payload, at + name_length)
                headers.append(Header(name, header_value))
            if at != end:
                raise CorruptRecord(f"record at offset delta {offset_delta} is {length} bytes, its fields {at - end + length}")
            timestamp = self.max_timestamp if log_append else self.base_timestamp + timestamp_delta
            records.append(Record(self.base_offset + offset_delta, timestamp, key, value, tuple(headers)))
        return records

    def with_base_offset(self, base_offset: int) -> Batch:
        """The same batch placed at ``base_offset`` (outside the CRC)."""
        return self._replace(data=_OFFSET.pack(base_offset) + self.data[8:], base_offset=base_offset)


def split(data: bytes) -> list[bytes]:
    """The batches of a Produce request's records field, whole; a partial
    batch at the end is corrupt (a producer never sends one)."""
    batches = []
    at, size = 0, len(data)
    while at < size:
        if size - at < LOG_OVERHEAD:
            raise CorruptRecord(f"{size - at} bytes after the last batch")
        (length,) = struct.unpack_from(">i", data, at + _LENGTH_AT)
        end = at + LOG_OVERHEAD + length
        if length < HEADER_SIZE - LOG_OVERHEAD or end > size:
            raise CorruptRecord(f"batch length {length} with {size - at - LOG_OVERHEAD} bytes left")
        batches.append(data[at:end])
        at = end
    return batches


def parse(data: bytes) -> Batch:
    """One whole batch (from :func:`split`), checked: magic, CRC-32C, and
    that its records fill it exactly. Raises CorruptRecord or
    UnsupportedMagic."""
    if len(data) < HEADER_SIZE:
        if len(data) > _PREFIX.size and data[_PREFIX.size - 1] != MAGIC:
            raise UnsupportedMagic(f"magic {data[_PREFIX.size - 1]}: only record batches v2 are supported")
        raise CorruptRecord(f"a batch of {len(data)} bytes")
    _, length, _, magic = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise UnsupportedMagic(f"magic {magic}: only record batches v2 (magic 2) are supported")
    if length + LOG_OVERHEAD != len(data):
        raise CorruptRecord(f"batch length {length} for {len(data) - LOG_OVERHEAD} bytes")
    (crc,) = _CRC.unpack_from(data, _PREFIX.size)
    view = memoryview(data)
    import crc32c  # here, not at start-up: the package imports importlib.metadata

    if crc32c.crc32c(view[_CRC_START:]) != crc:
        raise CorruptRecord("CRC-32C mismatch")
    batch = stored(bytes(data))
    if batch.record_count < 1 or batch.last_offset_delta != batch.record_count - 1:
        raise CorruptRecord(f"{batch.record_count} records with last offset delta {batch.last_offset_delta}")
    try:
        payload = decompress(batch.compression, view[HEADER_SIZE:])
    except cramjam.DecompressionError as error:
        raise CorruptRecord(f"cannot decompress: {error}") from error
    _check_lengths(payload, batch.record_count)
    return batch


def stored(data: bytes) -> Batch:
    """A batch checked when it came in (:func:`parse`), read back."""
    base_offset = _OFFSET.unpack_from(data)[0]
    return Batch(data, base_offset, *_HEADER.unpack_from(data, _CRC_START))


def _check_lengths(payload: bytes | memoryview, count: int) -> None:
    """The records' lengths add up to the payload: a batch whose record
    count or lengths lie is refused whole, before anything is stored."""
    at, size = 0, len(payload)
    for _ in range(count):
        if at >= size:
            break
        # Lengths in one or two bytes (records under 8 KiB) inline: this
        # loop runs once per record produced.
        raw = payload[at]
        if raw < 0x80:
            at += 1
        elif at + 1 < size and payload[at + 1] < 0x80:
            raw = (raw & 0x7F) | (payload[at + 1] << 7)
            at += 2
        else:
            raw, at = read_varint(payload, at)
            raw = (raw << 1) ^ (raw >> 63)  # back to the zigzag form
        length = (raw >> 1) ^ -(raw & 1)
        if length < 6:  # attributes, three varints, two lengths, a count
            raise CorruptRecord(f"record length {length}")
        at += length
    if at != size:
        raise CorruptRecord(f"{count} records for {size} bytes")


def decompress(codec: int, payload: bytes | memoryview) -> bytes | memoryview:
    if codec == NONE:
        return payload
    if codec == GZIP:
        return bytes(cramjam.gzip.decompress(payload))
    if codec == SNAPPY:
        return _snappy_decompress(payload)
    if codec == LZ4:
        return bytes(cramjam.lz4.decompress(payload))
    if codec == ZSTD:
        return bytes(cramjam.zstd.decompress(payload))
    raise CorruptRecord(f"unknown compression codec {codec}")


def compress(codec: int, payload: bytes) -> bytes:
    if codec == NONE:
        return payload
    if codec == GZIP:
        return bytes(cramjam.gzip.compress(payload))
    if codec == SNAPPY:
        return bytes(cramjam.snappy.compress_raw(payload))
    if codec == LZ4:
        return bytes(cramjam.lz4.compress(payload))
    if codec == ZSTD:
        return bytes(cramjam.zstd.compress(payload))
    raise ValueError(f"unknown compression codec {codec}")


def _snappy_decompress(payload: bytes | memoryview) -> bytes:
    """Raw snappy (librdkafka) or xerial-framed blocks (Java, kafka-python)."""
    data = bytes(payload)
    if not data.startswith(_XERIAL_MAGIC):
        return bytes(cramjam.snappy.decompress_raw(data))
    out, at = [], 16  # magic, version, compatible version
    while at < len(data):
        (size,) = _XERIAL_BLOCK.unpack_from(data, at)
        at += 4
        out.append(bytes(cramjam.snappy.decompress_raw(data[at:at + size])))
        at += size
    return b"".join(out)


def encode(base_offset: int, records: list[Record], *, compression: int = NONE, producer_id: int = NO_PRODUCER_ID,
           producer_epoch: int = -1, base_sequence: int = NO_SEQUENCE, flags: int = 0) -> bytes:
    """A batch of ``records`` (offsets from ``base_offset`` on, in order),
    as a producer builds one; ``flags``: TRANSACTIONAL, CONTROL."""
    if not records:
        raise ValueError("a batch has at least one record")
    base_ts = records[0].timestamp
    out = bytearray()
    for record in records:
        body = bytearray(b"\0")
        write_varint(body, record.timestamp - base_ts)
        write_varint(body, record.offset - base_offset)
        _write_bytes(body, record.key)
        _write_bytes(body, record.value)
        write_varint(body, len(record.headers))
        for name, value in record.headers:
            _write_bytes(body, name.encode())
            _write_bytes(body, value)
        write_varint(out, len(body))
        out += body
    payload = compress(compression, bytes(out))
    header = _HEADER.pack(compression | flags, records[-1].offset - base_offset, base_ts,
                          max(record.timestamp for record in records), producer_id, producer_epoch,
                          base_sequence, len(records))
    import crc32c

    crc = crc32c.crc32c(header + payload)
    length = HEADER_SIZE - LOG_OVERHEAD + len(payload)
    return _PREFIX.pack(base_offset, length, -1, MAGIC) + _CRC.pack(crc) + header + payload


# -- transaction markers ------------------------------------------------

#: A control record's key: version 0, then the type; its value: version 0,
#: then the coordinator's epoch (Kafka's ``EndTransactionMarker``).
_CONTROL_KEY = struct.Struct(">hh")
_CONTROL_VALUE = struct.Struct(">hi")
ABORT_MARKER, COMMIT_MARKER = 0, 1
#: How far into a batch a control record's type lies at most: the header,
#: then the record's length, attributes, timestamp and offset deltas and
#: key length (a varint each, one byte here) and the key.
CONTROL_PREFIX = HEADER_SIZE + 5 + _CONTROL_KEY.size


def control_batch(offset: int, producer_id: int, producer_epoch: int, commit: bool, coordinator_epoch: int,
                  timestamp: int) -> bytes:
    """The commit or abort marker of a producer's transaction, at ``offset``."""
    key = _CONTROL_KEY.pack(0, COMMIT_MARKER if commit else ABORT_MARKER)
    value = _CONTROL_VALUE.pack(0, coordinator_epoch)
    return encode(offset, [Record(offset, timestamp, key, value)], producer_id=producer_id, producer_epoch=producer_epoch,
                  flags=TRANSACTIONAL | CONTROL)


def marker_commits(data: bytes | memoryview) -> bool | None:
    """Whether the control batch ``data`` (its first CONTROL_PREFIX bytes
    suffice) commits (True) or aborts (False); None if its record is not a
    transaction marker."""
    _, at = read_varint(data, HEADER_SIZE)  # the record's length
    _, at = read_varint(data, at + 1)  # after its attributes: the timestamp delta
    _, at = read_varint(data, at)  # offset delta
    length, at = read_varint(data, at)
    if length != _CONTROL_KEY.size or len(data) < at + length:
        return None
    version, kind = _CONTROL_KEY.unpack_from(data, at)
    return kind == COMMIT_MARKER if version == 0 and kind in (ABORT_MARKER, COMMIT_MARKER) else None


# -- varints ---------------------------------------------------------------

def read_varint(data: bytes | memoryview, at: int) -> tuple[int, int]:
    """A zigzag varint at ``at``: (value, where the next field starts)."""
    shift = result = 0
    while True:
        try:
            byte = data[at]
        except IndexError:
            raise CorruptRecord("a varint runs past the end") from None
        at += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (result >> 1) ^ -(result & 1), at
        shift += 7
        if shift > 63:
            raise CorruptRecord("a varint longer than 10 bytes")


def write_varint(out: bytearray, value: int) -> None:
    value = (value << 1) ^ (value >> 63)
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _read_bytes(data: bytes | memoryview, at: int) -> tuple[bytes | None, int]:
    length, at = read_varint(data, at)
    if length < 0:
        return None, at
    end = at + length
    if end > len(data):
        raise CorruptRecord("a field runs past the end of its record")
    return bytes(data[at:end]), end


def _write_bytes(out: bytearray, value: bytes | None) -> None:
    if value is None:
        write_varint(out, -1)
    else:
        write_varint(out, len(value))
        out += value
