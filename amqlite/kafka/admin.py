"""The admin APIs: topics made, deleted and grown as streams (topics.py),
their configs as stream arguments (configs.py), and the cluster of one.

| API | key | versions |
|---|---|---|
| CreateTopics | 19 | 2-7 |
| DeleteTopics | 20 | 1-6 |
| DescribeConfigs | 32 | 1-4 |
| AlterConfigs | 33 | 0-2 |
| CreatePartitions | 37 | 0-3 |
| IncrementalAlterConfigs | 44 | 0-1 |
| DescribeCluster | 60 | 0-2 |

The lowest versions are the lowest in Kafka 4's schemas (kio's). Making,
deleting or altering a topic needs configure permission on its name;
describing it, any permission (Kafka's Describe). One node: a replication
factor above 1 is INVALID_REPLICATION_FACTOR, as one Kafka broker says.
"""

from __future__ import annotations

import datetime
from typing import Any, Callable

from ..core.errors import AMQPError
from ..core.stream import Stream
from ..log import get_logger
from . import configs, topics
from .apis import Api
from .configs import ConfigError
from .protocol import ErrorCode, Request, build
from .session import Session

log = get_logger(__name__)

CREATE_TOPICS, DELETE_TOPICS, DESCRIBE_CONFIGS, ALTER_CONFIGS = 19, 20, 32, 33
CREATE_PARTITIONS, INCREMENTAL_ALTER_CONFIGS, DESCRIBE_CLUSTER = 37, 44, 60
#: ConfigResource types.
TOPIC, BROKER = 2, 4
#: IncrementalAlterConfigs operations.
SET, DELETE = 0, 1
_NO_THROTTLE = datetime.timedelta(0)


class _Refused(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# -- CreateTopics ------------------------------------------------------------


def create_topics(session: Session, request: Request, now: float) -> Any:
    cls = request.response_type()
    body = request.body
    results = []
    for wanted in body.topics:
        try:
            topic = _create(session, wanted, body.validate_only, now)
        except _Refused as refused:
            results.append(build(cls, "CreatableTopicResult", name=wanted.name, topic_id=None,
                                 error_code=refused.code, error_message=refused.message, configs=None))
            continue
        described = None
        if request.api_version >= 5:  # v5+ gives the new topic's configs
            described = tuple(build(cls, "CreatableTopicConfigs", name=c.name, value=c.value, read_only=c.read_only,
                                    is_sensitive=False, config_source=configs.DYNAMIC_TOPIC_CONFIG if c.set_here
                                    else configs.DEFAULT_CONFIG)
                              for c in configs.describe(topic[2]))
        results.append(build(cls, "CreatableTopicResult", name=wanted.name, topic_id=topic[0],
                             error_code=ErrorCode.none, error_message=None, num_partitions=topic[1],
                             replication_factor=1, configs=described))
    return build(cls, throttle_time=_NO_THROTTLE, topics=tuple(results))


def _create(session: Session, wanted: Any, validate_only: bool, now: float) -> tuple[Any, int, dict[str, Any]]:
    """(topic id, partitions, stream arguments) of the topic made (or that
    would be, validating only)."""
    name = wanted.name
    vhost = session.vhost
    if (invalid := topics.invalid_name(name)) is not None:
        raise _Refused(ErrorCode.invalid_topic_exception, invalid)
    if not session.allowed("configure", name):
        raise _Refused(ErrorCode.topic_authorization_failed, f"configure permission on topic {name} is needed")
    if topics.find(vhost, name) is not None:
        raise _Refused(ErrorCode.topic_already_exists, f"Topic '{name}' already exists.")
    partitions = wanted.num_partitions
    if wanted.assignments:
        partitions = len(wanted.assignments)
        if any(tuple(assignment.broker_ids) != (session.settings.node_id,) for assignment in wanted.assignments):
            raise _Refused(ErrorCode.invalid_replica_assignment, "amqlite is one broker: replicas must be [0]")
    elif partitions == -1:
        partitions = 1  # the broker's num.partitions
    if partitions < 1:
        raise _Refused(ErrorCode.invalid_partitions, "Number of partitions must be larger than 0.")
    if wanted.replication_factor not in (-1, 1) and not wanted.assignments:
        raise _Refused(ErrorCode.invalid_replication_factor,
                       f"Replication factor: {wanted.replication_factor} larger than available brokers: 1.")
    try:
        arguments = configs.stream_arguments({config.name: config.value for config in wanted.configs})
    except ConfigError as error:
        raise _Refused(ErrorCode.invalid_config, str(error)) from None
    if taken := topics.names_taken(vhost, name, partitions):
        raise _Refused(ErrorCode.invalid_request,
                       f"{', '.join(taken)} already exist(s) in vhost {vhost.name} as other than this topic")
    if validate_only:
        return topics.Topic(name, ()).topic_id, partitions, arguments
    try:
        topic = topics.create(vhost, name, partitions, arguments, now)
    except AMQPError as error:
        raise _Refused(ErrorCode.invalid_config, error.text) from None
    log.info("kafka.topic_created", topic=name, partitions=partitions, arguments=arguments, peer=session.peer,
             user=session.user_name)
    return topic.topic_id, partitions, arguments


# -- DeleteTopics --------------------------------------------------------------


def delete_topics(session: Session, request: Request, now: float) -> Any:
    cls = request.response_type()
    body = request.body
    vhost = session.vhost
    # v6 names topics (by name or id) in ``topics``, earlier versions in ``topic_names``.
    wanted = [(entry.name, entry.topic_id) for entry in body.topics] if hasattr(body, "topics") else [
        (name, None) for name in body.topic_names]
    by_id = {topic.topic_id: topic for topic in topics.every(vhost)} if any(n is None for n, _ in wanted) else {}
    results = []
    for name, topic_id in wanted:
        topic = topics.find(vhost, name) if name is not None else by_id.get(topic_id) if topic_id else None
        code, message = ErrorCode.none, None
        if topic is None:
            code = ErrorCode.unknown_topic_or_partition if name is not None else ErrorCode.unknown_topic_id
            message = "This server does not host this topic."
        elif not session.allowed("configure", topic.name):
            code, message = ErrorCode.topic_authorization_failed, f"configure permission on {topic.name} is needed"
        else:
            topics.delete(vhost, topic, now)
            log.info("kafka.topic_deleted", topic=topic.name, partitions=len(topic.partitions), peer=session.peer,
                     user=session.user_name)
        results.append(build(cls, "DeletableTopicResult", name=topic.name if topic else name,
                             topic_id=topic.topic_id if topic else topic_id, error_code=code, error_message=message))
    return build(cls, throttle_time=_NO_THROTTLE, responses=tuple(results))


# -- CreatePartitions ------------------------------------------------------------


def create_partitions(session: Session, request: Request, now: float) -> Any:
    cls = request.response_type()
    body = request.body
    results = []
    for wanted in body.topics:
        code, message = ErrorCode.none, None
        try:
            _grow(session, wanted, body.validate_only, now)
        except _Refused as refused:
            code, message = refused.code, refused.message
        results.append(build(cls, "CreatePartitionsTopicResult", name=wanted.name, error_code=code,
                             error_message=message))
    return build(cls, throttle_time=_NO_THROTTLE, results=tuple(results))


def _grow(session: Session, wanted: Any, validate_only: bool, now: float) -> None:
    vhost = session.vhost
    topic = topics.find(vhost, wanted.name)
    if topic is None:
        raise _Refused(ErrorCode.unknown_topic_or_partition, "This server does not host this topic.")
    if not session.allowed("configure", topic.name):
        raise _Refused(ErrorCode.topic_authorization_failed, f"configure permission on {topic.name} is needed")
    have = len(topic.partitions)
    if wanted.count <= have:
        raise _Refused(ErrorCode.invalid_partitions,
                       f"Topic currently has {have} partitions, {wanted.count} would not be an increase.")
    if topic.exchange is None:
        raise _Refused(ErrorCode.invalid_partitions,
                       f"{topic.name} is a one-partition topic, the stream {topic.name}; it cannot grow partitions "
                       "(create a topic with several partitions: a partitioned stream)")
    taken = [f"{topic.name}-{index}" for index in range(have, wanted.count) if f"{topic.name}-{index}" in vhost.queues]
    if taken:
        raise _Refused(ErrorCode.invalid_request, f"{', '.join(taken)} already exist(s) as other than partitions")
    if validate_only:
        return
    arguments = {key: value for key, value in topic.partitions[0].arguments.items() if key != "x-queue-type"}
    try:
        topics.add_partitions(vhost, topic, wanted.count, arguments, now)
    except AMQPError as error:
        raise _Refused(ErrorCode.invalid_request, error.text) from None
    log.info("kafka.partitions_created", topic=topic.name, partitions=wanted.count, before=have, peer=session.peer,
             user=session.user_name)


# -- configs ---------------------------------------------------------------


def describe_configs(session: Session, request: Request, now: float) -> Any:
    cls = request.response_type()
    results = []
    for resource in request.body.resources:
        code, message, entries = ErrorCode.none, None, ()
        try:
            found = _described(session, resource.resource_type, resource.resource_name)
        except _Refused as refused:
            code, message = refused.code, refused.message
        else:
            keys = resource.configuration_keys
            entries = tuple(
                build(cls, "DescribeConfigsResourceResult", name=c.name, value=c.value, read_only=c.read_only,
                      is_sensitive=False, synonyms=(), documentation=None, config_type=0,
                      config_source=configs.DYNAMIC_TOPIC_CONFIG if c.set_here else configs.DEFAULT_CONFIG,
                      is_default=not c.set_here)
                for c in found if keys is None or c.name in keys)
        results.append(build(cls, "DescribeConfigsResult", error_code=code, error_message=message,
                             resource_type=resource.resource_type, resource_name=resource.resource_name,
                             configs=entries))
    return build(cls, throttle_time=_NO_THROTTLE, results=tuple(results))


def _described(session: Session, kind: int, name: str) -> list[configs.TopicConfig]:
    if kind == BROKER:
        if name not in ("", str(session.settings.node_id)):
            raise _Refused(ErrorCode.invalid_request, f"no broker {name}: this is broker {session.settings.node_id}")
        settings = session.settings
        return [configs.TopicConfig(key, value, False, True) for key, value in (
            ("auto.create.topics.enable", str(settings.auto_create_topics).lower()),
            ("num.partitions", "1"),
            ("default.replication.factor", "1"),
            ("broker.id", str(settings.node_id)),
        )]
    return configs.describe(_stream(session, kind, name, "read").arguments)


def _stream(session: Session, kind: int, name: str, need: str) -> Stream:
    """The first partition of topic ``name`` (its arguments are every
    partition's), if the client may ``need`` it ("read": see it at all)."""
    if kind != TOPIC:
        raise _Refused(ErrorCode.invalid_request, f"resource type {kind} is not served (topics and broker only)")
    topic = topics.find(session.vhost, name)
    if topic is None:
        raise _Refused(ErrorCode.unknown_topic_or_partition, f"Topic {name} does not exist")
    allowed = session.may_see(name) if need == "read" else session.allowed(need, name)
    if not allowed:
        raise _Refused(ErrorCode.topic_authorization_failed, f"{need} permission on topic {name} is needed")
    return topic.partitions[0]


def alter_configs(session: Session, request: Request, now: float) -> Any:
    """Every config not named goes back to its default, as Kafka's AlterConfigs."""
    def change(arguments: dict[str, Any], resource: Any) -> dict[str, Any]:
        kept = {key: value for key, value in arguments.items() if key not in configs.ARGUMENTS.values()}
        for config in resource.configs:
            kept = configs.with_config(kept, config.name, config.value)
        return kept

    return _alter(session, request, now, change)


def incremental_alter_configs(session: Session, request: Request, now: float) -> Any:
    def change(arguments: dict[str, Any], resource: Any) -> dict[str, Any]:
        for config in resource.configs:
            if config.config_operation not in (SET, DELETE):
                raise ConfigError(f"{config.name} is not a list: APPEND and SUBTRACT do not apply")
            arguments = configs.with_config(arguments, config.name,
                                            config.value if config.config_operation == SET else None)
        return arguments

    return _alter(session, request, now, change)


def _alter(session: Session, request: Request, now: float,
           change: Callable[[dict[str, Any], Any], dict[str, Any]]) -> Any:
    cls = request.response_type()
    body = request.body
    results = []
    for resource in body.resources:
        code, message = ErrorCode.none, None
        try:
            if resource.resource_type == BROKER:
                raise _Refused(ErrorCode.invalid_config, "broker configs are amqlite's settings (docs/operations.md)")
            stream = _stream(session, resource.resource_type, resource.resource_name, "configure")
            topic = topics.find(session.vhost, resource.resource_name)
            assert topic is not None
            try:
                arguments = change(dict(stream.arguments), resource)
                if not body.validate_only:
                    for partition in topic.partitions:
                        partition.reconfigure(arguments)
                    log.info("kafka.topic_configured", topic=topic.name, arguments=arguments, peer=session.peer,
                             user=session.user_name)
            except (ConfigError, AMQPError) as error:
                raise _Refused(ErrorCode.invalid_config, getattr(error, "text", None) or str(error)) from None
        except _Refused as refused:
            code, message = refused.code, refused.message
        results.append(build(cls, "AlterConfigsResourceResponse", error_code=code, error_message=message,
                             resource_type=resource.resource_type, resource_name=resource.resource_name))
    return build(cls, throttle_time=_NO_THROTTLE, responses=tuple(results))


# -- DescribeCluster ---------------------------------------------------------


def describe_cluster(session: Session, request: Request, now: float) -> Any:
    cls = request.response_type()
    settings = session.settings
    broker = build(cls, "DescribeClusterBroker", broker_id=settings.node_id, host=settings.advertised_host,
                   port=settings.advertised_port, rack=None, is_fenced=False)
    return build(cls, throttle_time=_NO_THROTTLE, error_code=ErrorCode.none, error_message=None,
                 cluster_id=settings.cluster_id, controller_id=settings.node_id, brokers=(broker,))


APIS = [
    Api(CREATE_TOPICS, 2, 7, create_topics),
    Api(DELETE_TOPICS, 1, 6, delete_topics),
    Api(DESCRIBE_CONFIGS, 1, 4, describe_configs),
    Api(ALTER_CONFIGS, 0, 2, alter_configs),
    Api(CREATE_PARTITIONS, 0, 3, create_partitions),
    Api(INCREMENTAL_ALTER_CONFIGS, 0, 1, incremental_alter_configs),
    Api(DESCRIBE_CLUSTER, 0, 2, describe_cluster),
]
