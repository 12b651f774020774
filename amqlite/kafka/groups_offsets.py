"""Committed offsets over Kafka: OffsetCommit, OffsetFetch, OffsetDelete.

A group's committed offset on a partition is the group's offset on that
partition's stream (core/groups.py, ``Stream.group_offsets``): the one
AMQP ``x-stream-group`` consumers advance with their acks and start from.
So a group that commits over Kafka resumes at the same offset when it
consumes over AMQP, and the reverse; the offsets are journalled (GROUP
records) and shown by ``GET /api/stream-groups``, ``amqlite ctl list
groups``, the stream's page and ``amqlite_stream_group_lag``.

An OffsetCommit is answered once its offsets are on disk, as Kafka
answers once they are replicated. Its metadata strings are kept with the
offsets (journalled too) and OffsetFetch returns them, up to Kafka's
``offset.metadata.max.bytes`` (4096); an AMQP ack that moves the offset
clears it. Leader epochs are not kept (-1). Committing or fetching needs
read permission on the topic.

Offsets committed in a Kafka transaction (TxnOffsetCommit,
transactions.py) are pending until it commits: meanwhile OffsetFetch
answers the last committed offset, or UNSTABLE_OFFSET_COMMIT for that
partition when the request sets ``require_stable`` (v7+), as Kafka does.
"""

from __future__ import annotations

import datetime
from typing import Any

from ..core.coordinator import GROUP_SUBSCRIBED_TO_TOPIC
from ..core.stream import Stream
from .apis import Api, Pending
from .groups import in_order, coordinator, offset_streams
from .protocol import ErrorCode, Request, build
from .session import Session
from . import topics

OFFSET_COMMIT, OFFSET_FETCH, OFFSET_DELETE = 8, 9, 47
NO_OFFSET = -1
NO_EPOCH = -1
NO_THROTTLE = datetime.timedelta(0)
#: Kafka's offset.metadata.max.bytes default.
MAX_METADATA_BYTES = 4096


def _partition(session: Session, topic: str, index: int) -> Stream | ErrorCode:
    """The stream of a partition, or the error to answer for it."""
    if not session.allowed("read", topic):
        return ErrorCode.topic_authorization_failed
    found = topics.find(session.vhost, topic)
    if found is None or not 0 <= index < len(found.partitions):
        return ErrorCode.unknown_topic_or_partition
    return found.partitions[index]


@in_order
def offset_commit(session: Session, request: Request, now: float) -> Any:
    body, cls = request.body, request.response_type()
    generation = body.generation_id_or_member_epoch
    error = coordinator(session).validate_commit(body.group_id, body.member_id,
                                                 getattr(body, "group_instance_id", None), generation, now)
    journal = session.broker.journal
    written_after = journal.position if journal is not None else 0
    answers, stored = [], False
    for topic in body.topics:
        partitions = []
        for partition in topic.partitions:
            code = ErrorCode(error)
            metadata = partition.committed_metadata or ""
            if not error and len(metadata.encode()) > MAX_METADATA_BYTES:
                code = ErrorCode.offset_metadata_too_large
            elif not error:
                stream = _partition(session, topic.name, partition.partition_index)
                if isinstance(stream, Stream):
                    stream.commit_group(body.group_id, partition.committed_offset, metadata)
                    stored = True
                else:
                    code = stream
            partitions.append(build(cls, "OffsetCommitResponsePartition", partition_index=partition.partition_index,
                                    error_code=code))
        answers.append(build(cls, "OffsetCommitResponseTopic", name=topic.name, partitions=tuple(partitions)))
    response = build(cls, throttle_time=NO_THROTTLE, topics=tuple(answers))
    if journal is None or not stored:
        return response
    # The offsets go with the journal's next write: answer once it is on disk.
    pending = Pending()

    def poll(now: float) -> None:
        if journal.synced > written_after:
            pending.complete(response)
    pending.poll = poll
    return pending


@in_order
def offset_fetch(session: Session, request: Request, now: float) -> Any:
    body, cls = request.body, request.response_type()
    stable = getattr(body, "require_stable", False)
    if request.api_version < 8:
        topics_ = _fetched(session, cls, body.group_id, body.topics, "OffsetFetchResponseTopic",
                           "OffsetFetchResponsePartition", stable)
        return build(cls, throttle_time=NO_THROTTLE, error_code=ErrorCode.none, topics=topics_)
    return build(cls, throttle_time=NO_THROTTLE, groups=tuple(
        build(cls, "OffsetFetchResponseGroup", group_id=group.group_id, error_code=ErrorCode.none,
              topics=_fetched(session, cls, group.group_id, group.topics, "OffsetFetchResponseTopics",
                              "OffsetFetchResponsePartitions", stable))
        for group in body.groups))


def _fetched(session: Session, cls: type[Any], group: str, wanted: Any, topic_struct: str,
             partition_struct: str, require_stable: bool) -> tuple[Any, ...]:
    """The group's offsets on the partitions asked for (None: every
    partition it has one on that the client may read)."""
    transactions = session.vhost.transactions
    if wanted is None:
        asked: dict[str, list[int]] = {}
        for topic, index, _ in offset_streams(session, group):
            if session.allowed("read", topic):
                asked.setdefault(topic, []).append(index)
    else:
        asked = {topic.name: list(topic.partition_indexes) for topic in wanted}
    answers = []
    for topic, indexes in asked.items():
        partitions = []
        for index in indexes:
            stream = _partition(session, topic, index)
            offset, metadata, code = NO_OFFSET, "", ErrorCode.none
            if isinstance(stream, Stream):
                committed = stream.group_offsets.get(group)
                if require_stable and transactions is not None and transactions.pending_offset(group, stream):
                    code = ErrorCode.unstable_offset_commit
                elif committed is not None:
                    offset, metadata = committed.committed, committed.metadata
            elif stream is ErrorCode.topic_authorization_failed:
                code = stream
            partitions.append(build(cls, partition_struct, partition_index=index, committed_offset=offset,
                                    committed_leader_epoch=NO_EPOCH, metadata=metadata, error_code=code))
        answers.append(build(cls, topic_struct, name=topic, partitions=tuple(partitions)))
    return tuple(answers)


def offset_delete(session: Session, request: Request, now: float) -> Any:
    """Delete a group's offsets on some partitions; refused on the topics
    its members subscribe to (Kafka's GROUP_SUBSCRIBED_TO_TOPIC), and on a
    stream AMQP members of the group consume."""
    body, cls = request.body, request.response_type()
    group = body.group_id
    if group not in coordinator(session).groups and not offset_streams(session, group):
        return build(cls, error_code=ErrorCode.group_id_not_found, throttle_time=NO_THROTTLE, topics=())
    subscribed = coordinator(session).subscribed_topics(group)
    amqp = session.vhost.groups.get(group)
    answers = []
    for topic in body.topics:
        partitions = []
        for partition in topic.partitions:
            stream = _partition(session, topic.name, partition.partition_index)
            if not isinstance(stream, Stream):
                code = stream
            elif topic.name in subscribed or (amqp is not None and stream in amqp.consumers):
                code = ErrorCode(GROUP_SUBSCRIBED_TO_TOPIC)
            else:
                stream.forget_group(group)
                code = ErrorCode.none
            partitions.append(build(cls, "OffsetDeleteResponsePartition", partition_index=partition.partition_index,
                                    error_code=code))
        answers.append(build(cls, "OffsetDeleteResponseTopic", name=topic.name, partitions=tuple(partitions)))
    return build(cls, error_code=ErrorCode.none, throttle_time=NO_THROTTLE, topics=tuple(answers))


APIS = [
    Api(OFFSET_COMMIT, 2, 8, offset_commit),
    Api(OFFSET_FETCH, 1, 8, offset_fetch),
    Api(OFFSET_DELETE, 0, 0, offset_delete),
]
