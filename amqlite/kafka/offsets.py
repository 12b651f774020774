"""ListOffsets (key 2, v1-v7): earliest, latest, by timestamp.

- ``-2`` (earliest): the stream's first retained offset.
- ``-1`` (latest): the next offset, the high watermark (one replica:
  everything appended is committed).
- ``-3`` (max timestamp, v7): the last offset.
- a timestamp in ms: the first offset of the first chunk the stream
  appended at or after it (docs/streams.md: a chunk is what one journal
  write carried), as ``x-stream-offset`` with a timestamp finds it over
  AMQP. The time is amqlite's append time, Kafka's ``LogAppendTime``: a
  record created before the time asked for but appended in that chunk
  comes too, so a seek by time may start a few records early, never
  late. None appended since: offset -1, as Kafka answers.
"""

from __future__ import annotations

import datetime
from typing import Any

from . import topics
from .apis import Api
from .protocol import ErrorCode, Request, build
from .session import Session

LIST_OFFSETS = 2
LATEST, EARLIEST, MAX_TIMESTAMP = -1, -2, -3
NO_THROTTLE = datetime.timedelta(0)


def list_offsets(session: Session, request: Request, now: float) -> Any:
    cls = request.response_type()
    vhost = session.vhost
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
                    offset = stream.end
                elif wanted_time == MAX_TIMESTAMP:
                    if stream.end > stream.first:
                        offset = stream.end - 1
                        timestamp = int(stream.appended_at(offset) * 1000)
                elif wanted_time >= 0:
                    found = stream.start_offset(datetime.datetime.fromtimestamp(wanted_time / 1000, datetime.UTC),
                                                now)
                    if found < stream.end:
                        offset, timestamp = found, int(stream.appended_at(found) * 1000)
                else:
                    error = ErrorCode.invalid_request
            partitions.append(build(cls, "ListOffsetsPartitionResponse", partition_index=asked.partition_index,
                                    error_code=error, timestamp=timestamp, offset=offset, leader_epoch=0))
        answers.append(build(cls, "ListOffsetsTopicResponse", name=name, partitions=tuple(partitions)))
    return build(cls, throttle_time=NO_THROTTLE, topics=tuple(answers))


APIS = [Api(LIST_OFFSETS, 1, 7, list_offsets)]
