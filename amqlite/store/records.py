"""The journal's record types and their layouts (big-endian).

==========  ===================================================================
DEFINITION  an AMQP field table: {"op": ..., ...} for exchanges, queues, bindings
PUBLISH     msg id, queue id, seq, expires (NaN: none), priority, body size,
            then the content (below); the first durable queue a message reaches
ENQUEUE     msg id, queue id, seq, expires; every further durable queue
REMOVE      queue id, seq, repeated: acked, dead-lettered, expired, dropped or
            purged (the removals of a batch share records, up to
            ENTRIES_PER_RECORD in each)
DELIVERED   queue id, seq, repeated likewise: handed to a consumer
            (redelivered after a crash)
COUNT       queue id, seq, delivery count
RETRY       queue id, seq, due: waiting out a retry delay
MOVE        queue id, old seq, new seq: back from a retry delay, at the tail
HOLD        msg id, due, vhost, exchange, then the content
RELEASE     msg id: a held delayed message was routed, or cancelled
TRUNCATE    queue id, first offset: a stream's retention removed what came before
GROUP       queue id, committed offset, group name, then the commit's metadata string
            (a longstr, absent when empty): a consumer group's progress on a stream
            (offset GROUP_FORGOTTEN: the group's offset there was deleted)
DEDUP       queue id (0 for an exchange), expires (NaN: never), vhost, exchange,
            then a table {"id": the message id}: an id a deduplicating owner took;
            expires -inf (REFUSED): the id handed back, its message refused
SPILL       the content only: a transient message written so that it can page
            out under memory pressure; recovery skips it
BATCH       queue id, first offset, time appended, then a Kafka record batch
            (v2) as its producer sent it: a stream's messages appended at
            once, each offset counting as a message record
RESCHEDULE  msg id, due: a held delayed message is due at a new time
UNIT        the length in bytes of the records that follow it and form one
            atomic unit with it (a transaction's commit): recovery finds all
            of them or none (segments.SegmentLog.open_unit)
NAMED       msg id, key: the HOLD of that id has a message_id, whose
            core.delayed.name_key is key (its id for scheduled messages)
TXN         a table: a Kafka transactional id (vhost, id), its producer id,
            epoch, timeout and state, and its transaction's partitions
            (stream ids) and pending group offsets (core/transactions.py,
            ``record``)
==========  ===================================================================

Content is exchange and routing key (shortstr), the AMQP content header
(u32 length, then the bytes clients send) and the body: the message as it
arrived, so a publish is stored without re-encoding.
"""

from __future__ import annotations

import functools
import math
import struct
import zlib
from typing import TYPE_CHECKING, Any

from ..core.errors import FrameError
from ..amqp.properties import BASIC_CLASS_ID, BasicProperties, decode_content_header_at, encode_content_header
from ..amqp.values import decode_name, decode_table, encode_shortstr, encode_table
from ..core.message import Message
from ..kafka import records as kafka_records
from ..kafka.mapping import StoredBatch

if TYPE_CHECKING:
    from .segments import SegmentLog

(DEFINITION, PUBLISH, ENQUEUE, REMOVE, DELIVERED, COUNT, RETRY, MOVE, HOLD, RELEASE, TRUNCATE, GROUP, DEDUP, SPILL,
 BATCH, RESCHEDULE, UNIT, NAMED, TXN) = range(1, 20)

PUBLISH_HEAD = struct.Struct(">QQQdBI")
ENQUEUE_HEAD = struct.Struct(">QQQd")
ENTRY = struct.Struct(">QQ")
#: Entries in one REMOVE or DELIVERED record at most (64 KiB of payload).
ENTRIES_PER_RECORD = 4096
COUNT_RECORD = struct.Struct(">QQI")
RETRY_RECORD = struct.Struct(">QQd")
MOVE_RECORD = struct.Struct(">QQQ")
TRUNCATE_RECORD = struct.Struct(">QQ")
GROUP_HEAD = struct.Struct(">QQ")
#: The committed offset of a GROUP record that deletes the group's offset.
GROUP_FORGOTTEN = 2**64 - 1
DEDUP_HEAD = struct.Struct(">Qd")
HOLD_HEAD = struct.Struct(">Qd")
NAMED_RECORD = struct.Struct(">QQ")
ID = struct.Struct(">Q")
BATCH_HEAD = struct.Struct(">QQd")
#: What recovery reads of a BATCH record (and a segment index keeps): its
#: head and the Kafka batch's header, not the records; a transaction
#: marker's type lies just past the header.
BATCH_PREFIX = BATCH_HEAD.size + kafka_records.HEADER_SIZE
BATCH_KEPT = BATCH_HEAD.size + kafka_records.CONTROL_PREFIX
_LEN = struct.Struct(">I")
SNAPSHOT = "definitions.snapshot"
#: A file of tables the store keeps beside the log (the snapshot, the
#: manifest) is its magic, the CRC-32 of the table, the table. (Snapshots
#: written before the magic hold the table alone.)
SNAPSHOT_MAGIC = b"AMQLSNP2"
_CHECKED_CRC = struct.Struct(">I")
#: A DEDUP record's expiry that hands the id back (see core/dedup.py).
REFUSED = -math.inf


#: Exchange names and routing keys repeat from message to message: each
#: is encoded once.
_encoded_name = functools.lru_cache(maxsize=4096)(encode_shortstr)
#: Exchange and routing key by their encoded bytes, and properties by the
#: content header's, of messages read back (read_message); each cleared
#: when full, as amqp/properties keeps its own.
_READ_CACHE_MAX = 4096
_names_read: dict[bytes, tuple[str, str]] = {}
_headers_read: dict[bytes, BasicProperties] = {}


def encode_checked(magic: bytes, table: dict[str, Any]) -> bytes:
    body = encode_table(table)
    return magic + _CHECKED_CRC.pack(zlib.crc32(body)) + body


def decode_checked(magic: bytes, data: bytes, *, bare: bool = False) -> dict[str, Any]:
    """The table of a file :func:`encode_checked` wrote (or, if ``bare``,
    a table alone); ValueError if it is damaged."""
    if data.startswith(magic):
        start = len(magic) + _CHECKED_CRC.size
        if len(data) < start or _CHECKED_CRC.unpack_from(data, len(magic))[0] != zlib.crc32(data[start:]):
            raise ValueError("checksum mismatch")
        data = data[start:]
    elif not bare:
        raise ValueError("not written by amqlite")
    try:
        table, end = decode_table(data)
    except FrameError as error:
        raise ValueError(str(error)) from None
    if end != len(data):
        raise ValueError(f"{len(data) - end} bytes after the table")
    return table


def encode_snapshot(table: dict[str, Any]) -> bytes:
    return encode_checked(SNAPSHOT_MAGIC, table)


def decode_snapshot(data: bytes) -> dict[str, Any]:
    """The table of a snapshot file, its definitions by key; ValueError if it is damaged."""
    table = decode_checked(SNAPSHOT_MAGIC, data, bare=True)
    try:
        int(table["segment"]), int(table["next_msg"]), int(table["next_queue"])
        table["definitions"] = {tuple(item["key"]): item["value"] for item in table["definitions"]}
    except (LookupError, TypeError, ValueError) as error:
        raise ValueError(f"not a snapshot: {error!r}") from None
    return table


def content(message: Message) -> bytes:
    header = message.wire_header
    if header is None:
        # Kept: a delivery of the message sends the same bytes.
        header = message.wire_header = encode_content_header(BASIC_CLASS_ID, len(message.body), message.properties)
    return b"".join((
        _encoded_name(message.exchange), _encoded_name(message.routing_key),
        _LEN.pack(len(header)), header, message.body,
    ))


def read_message(payload: bytes, offset: int, store_id: int | None = None, store_segment: int = 0) -> Message:
    """The message whose content starts at ``offset`` of a record payload,
    with the store fields given. Exchange and routing key, and content
    headers without a headers table (whose properties are immutable), come
    from the caches below when their bytes were read before: a page-in
    reads thousands of messages, and they repeat from one to the next."""
    try:
        at = offset + 1 + payload[offset]
        at += 1 + payload[at]
        (size,) = _LEN.unpack_from(payload, at)
    except (IndexError, struct.error):
        raise ValueError("message content truncated") from None
    encoded_names = payload[offset:at]
    names = _names_read.get(encoded_names)
    if names is None:
        exchange, next_name = decode_name(payload, offset)
        names = (exchange, decode_name(payload, next_name)[0])
        if len(_names_read) >= _READ_CACHE_MAX:
            _names_read.clear()
        _names_read[encoded_names] = names
    start = at + 4
    end = start + size
    header = payload[start:end]
    properties = _headers_read.get(header)
    if properties is None:
        _, _, properties = decode_content_header_at(payload, start, end)  # in place
        if properties.headers is None:
            if len(_headers_read) >= _READ_CACHE_MAX:
                _headers_read.clear()
            _headers_read[header] = properties
    return Message(names[0], names[1], properties, payload[end:], header, (), store_id, store_segment)


def load_message(log: SegmentLog, segment: int, offset: int) -> Message:
    """The message of the PUBLISH, HOLD or SPILL record at ``offset`` of
    ``segment``, as its owner (a queue, a delayed exchange) holds it
    (store fields set; none for a spill, which is not journalled)."""
    kind, payload = log.read(segment, offset)
    return message_of(kind, payload, segment, offset)


def message_of(kind: int, payload: bytes, segment: int, offset: int) -> Message:
    """:func:`load_message` for a record already read."""
    if kind == SPILL:
        return read_message(payload, 0)
    # Both begin with the message id.
    if kind == PUBLISH:
        return read_message(payload, PUBLISH_HEAD.size, ID.unpack_from(payload)[0], segment)
    if kind == HOLD:
        _, at = decode_name(payload, HOLD_HEAD.size)  # vhost
        _, at = decode_name(payload, at)  # exchange
        return read_message(payload, at, ID.unpack_from(payload)[0], segment)
    raise ValueError(f"record at {segment}:{offset} is not a publish, a hold or a spill")


def batch_of(payload: bytes) -> StoredBatch:
    """The batch of a BATCH record."""
    return StoredBatch(kafka_records.stored(payload[BATCH_HEAD.size:]))


def stream_entry(kind: int, payload: bytes) -> Message | StoredBatch:
    """What a stream keeps at an offset, read back for a reader that takes
    batches: the batch of a BATCH record, the message of a PUBLISH."""
    if kind == BATCH:
        return batch_of(payload)
    if kind == PUBLISH:
        return read_message(payload, PUBLISH_HEAD.size)
    raise ValueError(f"a record of kind {kind} is not a stream's")
