"""Kafka records and AMQP messages: one stream, two views of each entry.

The table (docs/kafka.md has it for users):

================  ==============================================================
Kafka record      AMQP message
================  ==============================================================
value             body (a null value: an empty body and header
                  ``x-kafka-null-value: true``)
key               header ``x-kafka-key`` (byte array), absent for a null key.
                  A message published over AMQP without it has its routing key
                  as key, unless it came through the default exchange (there
                  the routing key is the stream's name): then the key is null.
timestamp (ms)    header ``x-kafka-timestamp`` (long, ms since the epoch), and
                  the ``timestamp`` property in seconds. Over AMQP without the
                  header: the property (in seconds), else when the stream
                  appended it.
headers           headers of the same names, values as byte arrays (a null
                  value: void); a name that comes more than once: an array of
                  its values, in order. Over AMQP, text goes as UTF-8, other
                  values as their text form.
offset            the ``x-stream-offset`` header of each delivery
================  ==============================================================

A record produced over Kafka is delivered over AMQP with exchange and
routing key "", persistent. Headers starting with
``x-kafka-`` and ``x-stream-offset`` are not Kafka headers.
"""

from __future__ import annotations

from typing import Any

from ..core.message import PERSISTENT, Message, Properties
from ..core.stream import NO_MESSAGE, OFFSET_HEADER, RECORD_TIME_HEADER, record_time
from .records import CONTROL, Batch, Header, Record, control_batch, stored

KEY_HEADER = "x-kafka-key"
TIMESTAMP_HEADER = RECORD_TIME_HEADER
NULL_VALUE_HEADER = "x-kafka-null-value"
_RESERVED_PREFIX = "x-kafka-"


def record_message(record: Record) -> Message:
    """The AMQP message of a record produced over Kafka."""
    headers: dict[str, Any] = {}
    if record.key is not None:
        headers[KEY_HEADER] = record.key
    headers[TIMESTAMP_HEADER] = record.timestamp
    if record.value is None:
        headers[NULL_VALUE_HEADER] = True
    for name, value in record.headers:
        if name in headers and not name.startswith(_RESERVED_PREFIX):
            earlier = headers[name]
            headers[name] = [*earlier, value] if isinstance(earlier, list) else [earlier, value]
        else:
            headers[name] = value
    properties = Properties(headers=headers, delivery_mode=PERSISTENT, timestamp=record.timestamp // 1000)
    return Message("", "", properties, record.value or b"")


def message_record(offset: int, message: Message, appended_ms: int) -> Record:
    """The Kafka record of a message at ``offset`` (published over AMQP,
    or over Kafka and read back as a message)."""
    properties = message.properties
    headers = properties.headers or {}
    key = headers.get(KEY_HEADER)
    if key is None and message.exchange:
        key = message.routing_key
    timestamp = record_time(properties, appended_ms)
    value = None if headers.get(NULL_VALUE_HEADER) is True and not message.body else message.body
    kafka_headers = []
    for name, header in headers.items():
        if name.startswith(_RESERVED_PREFIX) or name == OFFSET_HEADER:
            continue
        for item in header if isinstance(header, list) else (header,):
            kafka_headers.append(Header(name, _header_bytes(item)))
    return Record(offset, timestamp, _header_bytes(key), value, tuple(kafka_headers))


def _header_bytes(value: Any) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bool):
        return b"true" if value else b"false"
    return str(value).encode()


class StoredBatch:
    """A Kafka batch as a stream keeps it (core/stream.py's ``Batch``): its
    bytes, served to Kafka readers as they are, and its messages, decoded
    once the first AMQP reader asks."""

    __slots__ = ("batch", "_messages")

    def __init__(self, batch: Batch) -> None:
        self.batch = batch
        self._messages: list[Message] | None = None

    @property
    def data(self) -> bytes:
        return self.batch.data

    @property
    def record_count(self) -> int:
        return self.batch.record_count

    @property
    def base_offset(self) -> int:
        return self.batch.base_offset

    @property
    def max_timestamp(self) -> int:
        return self.batch.max_timestamp

    def message(self, offset: int) -> Message:
        if self.batch.attributes & CONTROL:
            return NO_MESSAGE
        messages = self._messages
        if messages is None:
            messages = self._messages = [record_message(record) for record in self.batch.records()]
        return messages[offset - self.batch.base_offset]


def marker(offset: int, producer_id: int, producer_epoch: int, commit: bool, coordinator_epoch: int,
           now: float) -> StoredBatch:
    """A transaction's commit or abort marker at ``offset``, as the
    transaction coordinator appends it to a partition (core/transactions.py)."""
    data = control_batch(offset, producer_id, producer_epoch, commit, coordinator_epoch, int(now * 1000))
    return StoredBatch(stored(data))
