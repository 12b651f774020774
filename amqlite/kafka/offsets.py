"""ListOffsets (key 2, v1-v7): earliest, latest, by timestamp.

- ``-2`` (earliest): the stream's first retained offset.
- ``-1`` (latest): the next offset, the high watermark (one replica:
  everything appended is committed); with isolation level read_committed
  (v2+), the last stable offset (core/visibility.py).
- ``-3`` (max timestamp, v7): the last offset.
- a timestamp in ms: the earliest offset whose record's own timestamp is
  at or after it (Kafka's ``CreateTime`` rule; a message published over
  AMQP has the timestamp docs/kafka.md's mapping gives it). The stream
  finds the entry by bisection (core/stream.py, "Record times"); a batch
  still in memory is searched for the record, one read back from disk
  answers with its first offset (early within that batch, never late).
  None that recent: offset -1, as Kafka answers.
"""

from __future__ import annotations

import datetime
from typing import Any

from ..core.message import Message
from ..core.stream import Stream, record_time
from . import records, topics
from .apis import Api
from .protocol import ErrorCode, Request, build
from .session import Session

LIST_OFFSETS = 2
LATEST, EARLIEST, MAX_TIMESTAMP = -1, -2, -3
READ_COMMITTED = 1
NO_THROTTLE = datetime.timedelta(0)


def list_offsets(session: Session, request: Request, now: float) -> Any:
    cls = request.response_type()
    vhost = session.vhost
    committed = getattr(request.body, "isolation_level", 0) == READ_COMMITTED
    answers = []
    for wanted in request.body.topics:
        name = wanted.name
        topic = topics.find(vhost, name)
        allowed = topic is not None and session.allowed("read", name)
        partitions = []
        for asked in wanted.partitions:
            error, timestamp, offset = ErrorCode.none, -1, -1
            if topic is None or not 0 <= asked.partition_index < len(topic.partitions):
                error = ErrorCode.unknown_topic_or_partition
            elif not allowed:
                error = ErrorCode.topic_authorization_failed
            else:
                stream = topic.partitions[asked.partition_index]
                wanted_time = asked.timestamp
                if wanted_time == EARLIEST:
                    offset = stream.first
                elif wanted_time == LATEST:
                    written = stream.written_end()  # the high watermark, as Fetch serves
                    offset = stream.transactions.stable(written) if committed else written
                elif wanted_time == MAX_TIMESTAMP:
                    if stream.end > stream.first:
                        offset = stream.end - 1
                        timestamp = int(stream.appended_at(offset) * 1000)
                elif wanted_time >= 0:
                    found, newest = stream.entry_stamped_from(wanted_time)
                    if found < stream.end:
                        offset, timestamp = _record_from(stream, found, wanted_time, newest)
                else:
                    error = ErrorCode.invalid_request
            partitions.append(build(cls, "ListOffsetsPartitionResponse", partition_index=asked.partition_index,
                                    error_code=error, timestamp=timestamp, offset=offset, leader_epoch=0))
        answers.append(build(cls, "ListOffsetsTopicResponse", name=name, partitions=tuple(partitions)))
    return build(cls, throttle_time=NO_THROTTLE, topics=tuple(answers))


def _record_from(stream: Stream, offset: int, wanted_time: int, newest: int) -> tuple[int, int]:
    """The offset and timestamp of the first record from the entry at
    ``offset`` on stamped at or after ``wanted_time``, if that entry is in
    memory; else the entry's first offset and newest timestamp."""
    entries = stream.entries_from(offset, 1)
    if not entries:
        return offset, newest
    first, kept = entries[0]
    appended_ms = int(stream.appended_at(first) * 1000)
    if isinstance(kept, Message):
        return first, record_time(kept.properties, appended_ms)
    for record in records.stored(kept.data).records():
        if record.timestamp >= wanted_time and record.offset >= offset:
            return record.offset, record.timestamp
    return offset, newest


APIS = [Api(LIST_OFFSETS, 1, 7, list_offsets)]
