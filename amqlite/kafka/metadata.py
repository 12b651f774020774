"""Metadata (key 3), v0-v12: the one broker, and the topics.

One node (``node_id``, 0) leads every partition and is every replica. Its
address is ``kafka_advertised_host`` (by default the address the client
reached) and the listener's port. Topics are the vhost's streams
(topics.py); the client sees those it may configure, write or read, as
Kafka lists those it may Describe. An unknown topic asked for by name is
created when ``kafka_auto_create_topics`` is on, the request allows it
(v4+) and the client may configure it, with one partition, as Kafka's
``num.partitions`` default.
"""

from __future__ import annotations

import datetime
import uuid
from typing import Any

from ..core.errors import AMQPError
from ..log import get_logger
from . import topics
from .apis import Api
from .protocol import ErrorCode, Request, build
from .session import Session

log = get_logger(__name__)

METADATA = 3


def metadata(session: Session, request: Request, now: float) -> Any:
    body = request.body
    cls = request.response_type()
    settings = session.settings
    vhost = session.vhost
    wanted = body.topics
    if request.api_version == 0 and not wanted:
        wanted = None  # v0: an empty list means every topic
    answers = []
    if wanted is None:
        answers = [_topic(cls, topic, settings.node_id) for topic in topics.every(vhost) if session.may_see(topic.name)]
    else:
        by_id = None
        auto_create = getattr(body, "allow_auto_topic_creation", True) and settings.auto_create_topics
        for entry in wanted:
            name = entry.name
            if name is None:  # v10+: asked for by id
                if by_id is None:
                    by_id = {topic.topic_id: topic for topic in topics.every(vhost)}
                found = by_id.get(entry.topic_id)
                if found is None or not session.may_see(found.name):
                    # The name is nullable from v12, the version that serves lookups by id.
                    answers.append(build(cls, "MetadataResponseTopic", error_code=ErrorCode.unknown_topic_id,
                                         name=None if request.api_version >= 12 else "", topic_id=entry.topic_id,
                                         partitions=()))
                else:
                    answers.append(_topic(cls, found, session.settings.node_id))
                continue
            answers.append(_named(session, cls, name, auto_create, now))
    broker = build(cls, "MetadataResponseBroker", node_id=settings.node_id, host=settings.advertised_host,
                   port=settings.advertised_port, rack=None)
    return build(cls, throttle_time=datetime.timedelta(0), brokers=(broker,), cluster_id=settings.cluster_id,
                 controller_id=settings.node_id, topics=tuple(answers))


def _named(session: Session, cls: type[Any], name: str, auto_create: bool, now: float) -> Any:
    topic = topics.find(session.vhost, name)
    if topic is not None:
        if not session.may_see(name):
            return _error(cls, name, ErrorCode.topic_authorization_failed)
        return _topic(cls, topic, session.settings.node_id)
    if not auto_create:
        return _error(cls, name, ErrorCode.unknown_topic_or_partition)
    if topics.invalid_name(name) is not None:
        return _error(cls, name, ErrorCode.invalid_topic_exception)
    if not session.allowed("configure", name):
        return _error(cls, name, ErrorCode.topic_authorization_failed)
    try:
        topic = topics.create(session.vhost, name, 1, {}, now)
    except AMQPError as error:
        log.warning("kafka.topic_not_created", topic=name, peer=session.peer, reason=error.text)
        return _error(cls, name, ErrorCode.invalid_topic_exception)
    log.info("kafka.topic_created", topic=name, partitions=1, how="auto-created", peer=session.peer,
             user=session.user_name)
    return _topic(cls, topic, session.settings.node_id)


def _error(cls: type[Any], name: str, code: ErrorCode) -> Any:
    return build(cls, "MetadataResponseTopic", error_code=code, name=name, topic_id=uuid.UUID(int=0), partitions=())


def _topic(cls: type[Any], topic: topics.Topic, node: int) -> Any:
    partitions = tuple(
        build(cls, "MetadataResponsePartition", error_code=ErrorCode.none, partition_index=index, leader_id=node,
              leader_epoch=0, replica_nodes=(node,), isr_nodes=(node,), offline_replicas=())
        for index in range(len(topic.partitions)))
    return build(cls, "MetadataResponseTopic", error_code=ErrorCode.none, name=topic.name, topic_id=topic.topic_id,
                 is_internal=False, partitions=partitions)


APIS = [Api(METADATA, 0, 12, metadata)]
