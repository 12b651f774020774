"""The admin APIs through confluent-kafka, kafka-python and aiokafka: topics
made, grown, altered and deleted are streams and partitioned streams, their
retention configs are stream arguments, and permissions are RabbitMQ's."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin import NewPartitions as AIONewPartitions
from aiokafka.admin import NewTopic as AIONewTopic
from aiokafka.admin.config_resource import ConfigResource as AIOConfigResource
from aiokafka.admin.config_resource import ConfigResourceType as AIOResourceType
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewPartitions, NewTopic
from kafka.admin import ConfigResource as KafkaPythonResource
from kafka.admin import ConfigResourceType, KafkaAdminClient
from kafka.admin import NewTopic as KafkaPythonTopic

from amqlite.core.stream import Stream
from amqlite.kafka import configs
from kafka_support import KafkaServerThread, start_kafka


def _admin(server: KafkaServerThread, **extra: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": server.bootstrap, **extra})


def _results(futures: dict[str, Any]) -> dict[str, Any]:
    """Each future's result, or the KafkaError it raised."""
    out = {}
    for key, future in futures.items():
        try:
            out[key] = future.result()
        except KafkaException as error:
            out[key] = error.args[0]
    return out


def _vhost(server: KafkaServerThread) -> Any:
    assert server.server is not None
    return server.server.core.vhosts["/"]


def _arguments(server: KafkaServerThread, queue: str) -> dict[str, Any]:
    return dict(server.call(lambda: _vhost(server).queues[queue].arguments))


def test_confluent_creates_topics_as_streams_and_partitioned_streams(kafka_server: KafkaServerThread) -> None:
    admin = _admin(kafka_server)
    results = _results(admin.create_topics([
        NewTopic("one", 1, 1, config={"retention.ms": "3600000", "segment.bytes": "1000000"}),
        NewTopic("three", 3, 1),
        NewTopic("replicated", 1, 3),
        NewTopic("bad name!", 1, 1),
        NewTopic("compacted", 1, 1, config={"cleanup.policy": "compact"}),
    ]))
    assert results["one"] is None and results["three"] is None
    assert results["replicated"].code() == 38  # INVALID_REPLICATION_FACTOR
    assert results["bad name!"].code() == 17  # INVALID_TOPIC_EXCEPTION
    assert results["compacted"].code() == 40  # INVALID_CONFIG
    assert _arguments(kafka_server, "one") == {"x-queue-type": "stream", "x-max-age": "3600s",
                                               "x-stream-max-segment-size-bytes": 1000000}
    vhost_names = kafka_server.call(lambda: (sorted(_vhost(kafka_server).queues),
                                             _vhost(kafka_server).exchanges["three"].type))
    assert vhost_names == (["one", "three-0", "three-1", "three-2"], "x-murmur2-hash")
    again = _results(admin.create_topics([NewTopic("one", 1, 1)]))
    assert again["one"].code() == 36  # TOPIC_ALREADY_EXISTS
    listed = admin.list_topics(timeout=10).topics
    assert {name: len(topic.partitions) for name, topic in listed.items()} == {"one": 1, "three": 3}


def test_configs_describe_and_alter_the_stream_arguments(kafka_server: KafkaServerThread) -> None:
    admin = _admin(kafka_server)
    _results(admin.create_topics([NewTopic("logs", 2, 1, config={"retention.bytes": "5000000"})]))
    described = _results(admin.describe_configs([ConfigResource("topic", "logs")]))
    (entries,) = described.values()
    assert entries["retention.bytes"].value == "5000000" and not entries["retention.bytes"].is_default
    assert entries["retention.ms"].value == "-1" and entries["retention.ms"].is_default
    assert entries["cleanup.policy"].value == "delete" and entries["cleanup.policy"].is_read_only
    changed = _results(admin.incremental_alter_configs([ConfigResource("topic", "logs", incremental_configs=[
        ConfigEntry("retention.ms", "90000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("retention.bytes", None, incremental_operation=AlterConfigOpType.DELETE),
    ])]))
    assert list(changed.values()) == [None]
    for partition in ("logs-0", "logs-1"):
        assert _arguments(kafka_server, partition) == {"x-queue-type": "stream", "x-max-age": "90s"}
    refused = _results(admin.incremental_alter_configs([ConfigResource("topic", "logs", incremental_configs=[
        ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.SET)])]))
    assert list(refused.values())[0].code() == 40
    stream = kafka_server.call(lambda: _vhost(kafka_server).queues["logs-0"])
    assert isinstance(stream, Stream) and stream.stream_settings.max_age == 90.0


def test_partitions_grow_on_a_partitioned_topic_not_on_a_stream(kafka_server: KafkaServerThread) -> None:
    admin = _admin(kafka_server)
    _results(admin.create_topics([NewTopic("grow", 2, 1, config={"retention.ms": "60000"}), NewTopic("single", 1, 1)]))
    results = _results(admin.create_partitions([NewPartitions("grow", 4), NewPartitions("single", 2),
                                                NewPartitions("missing", 2)]))
    assert results["grow"] is None
    assert results["single"].code() == 37 and "one-partition topic" in results["single"].str()
    assert results["missing"].code() == 3
    assert _arguments(kafka_server, "grow-3") == {"x-queue-type": "stream", "x-max-age": "60s"}
    assert len(admin.list_topics(timeout=10).topics["grow"].partitions) == 4
    shrink = _results(admin.create_partitions([NewPartitions("grow", 2)]))
    assert shrink["grow"].code() == 37


def test_delete_topics_deletes_streams_and_exchange_and_amqp_declared_ones_too(kafka_server: KafkaServerThread) -> None:
    connection = kafka_server.connect()
    connection.channel().queue_declare("amqp-made", durable=True, arguments={"x-queue-type": "stream"})
    connection.close()
    admin = _admin(kafka_server)
    _results(admin.create_topics([NewTopic("parts", 2, 1)]))
    results = _results(admin.delete_topics(["amqp-made", "parts", "never"]))
    assert results["amqp-made"] is None and results["parts"] is None and results["never"].code() == 3
    left = kafka_server.call(lambda: (list(_vhost(kafka_server).queues), "parts" in _vhost(kafka_server).exchanges))
    assert left == ([], False)


def test_alter_configs_resets_what_it_does_not_name(kafka_server: KafkaServerThread) -> None:
    admin = _admin(kafka_server)
    _results(admin.create_topics([NewTopic("reset", 1, 1, config={"retention.bytes": "5000"})]))
    done = _results(admin.alter_configs([ConfigResource("topic", "reset", set_config={"retention.ms": "60000"})]))
    assert list(done.values()) == [None]
    assert _arguments(kafka_server, "reset") == {"x-queue-type": "stream", "x-max-age": "60s"}


def test_describe_cluster(kafka_server: KafkaServerThread) -> None:
    admin = _admin(kafka_server)  # held: the future fails once its client is gone
    cluster = admin.describe_cluster().result()
    assert cluster.cluster_id == "amqlite" and cluster.controller.id == 0
    assert [(node.id, node.host, node.port) for node in cluster.nodes] == [(0, "127.0.0.1", kafka_server.kafka_port)]


def test_kafka_python_admin_round_trip(kafka_server: KafkaServerThread) -> None:
    admin = KafkaAdminClient(bootstrap_servers=kafka_server.bootstrap)
    try:
        created = admin.create_topics([KafkaPythonTopic("kp", 2, 1, topic_configs={"retention.bytes": "5000"})])
        assert [topic["error_code"] for topic in created["topics"]] == [0]
        resource = KafkaPythonResource(ConfigResourceType.TOPIC, "kp", configs={"retention.ms": "60000"})
        admin.alter_configs([resource])  # IncrementalAlterConfigs: retention.bytes stays
        assert _arguments(kafka_server, "kp-1") == {"x-queue-type": "stream", "x-max-length-bytes": 5000,
                                                    "x-max-age": "60s"}
        # AlterConfigs replaces the whole set: kafka-python sends the other dynamic ones along.
        admin.alter_configs([KafkaPythonResource(ConfigResourceType.TOPIC, "kp", configs={"retention.ms": "120000"})],
                            incremental=False)
        assert _arguments(kafka_server, "kp-1") == {"x-queue-type": "stream", "x-max-length-bytes": 5000,
                                                    "x-max-age": "120s"}
        deleted = admin.delete_topics(["kp"])
        assert [topic["error_code"] for topic in deleted["topics"]] == [0]
    finally:
        admin.close()
    assert kafka_server.call(lambda: list(_vhost(kafka_server).queues)) == []


def test_aiokafka_admin_creates_alters_grows_and_deletes(kafka_server: KafkaServerThread) -> None:
    async def run() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_server.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([AIONewTopic("aio", 3, 1)])
            assert sorted(await admin.list_topics()) == ["aio"]
            await admin.alter_configs([AIOConfigResource(AIOResourceType.TOPIC, "aio",
                                                         configs={"retention.bytes": "7000"})])
            assert _arguments(kafka_server, "aio-2") == {"x-queue-type": "stream", "x-max-length-bytes": 7000}
            (described,) = await admin.describe_configs([AIOConfigResource(AIOResourceType.TOPIC, "aio")])
            (resource,) = described.resources
            assert ("retention.bytes", "7000") in [(entry[0], entry[1]) for entry in resource[4]]
            await admin.create_partitions({"aio": AIONewPartitions(4)})
            assert kafka_server.call(lambda: "aio-3" in _vhost(kafka_server).queues)
            await admin.delete_topics(["aio"])
        finally:
            await admin.close()

    asyncio.run(run())
    assert kafka_server.call(lambda: list(_vhost(kafka_server).queues)) == []


def test_configure_permission_is_needed_to_make_alter_and_delete() -> None:
    users = {"reader": {"password": "pw", "permissions": {"/": {"configure": "^own-", "write": ".*", "read": ".*"}}}}
    server = start_kafka(users=users, kafka_allow_anonymous=False)
    try:
        admin = _admin(server, **{"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
                                  "sasl.username": "reader", "sasl.password": "pw"})
        results = _results(admin.create_topics([NewTopic("own-topic", 1, 1), NewTopic("theirs", 1, 1)]))
        assert results["own-topic"] is None and results["theirs"].code() == 29  # TOPIC_AUTHORIZATION_FAILED
        server.call(lambda: _vhost(server).declare_queue("theirs", owner=None, now=0.0, durable=True,
                                                         arguments={"x-queue-type": "stream"}))
        altered = _results(admin.incremental_alter_configs([ConfigResource("topic", "theirs", incremental_configs=[
            ConfigEntry("retention.ms", "1000", incremental_operation=AlterConfigOpType.SET)])]))
        assert list(altered.values())[0].code() == 29
        assert _results(admin.delete_topics(["theirs"]))["theirs"].code() == 29
        assert _results(admin.delete_topics(["own-topic"]))["own-topic"] is None
    finally:
        server.stop()


def test_altered_configs_survive_a_restart(tmp_path: Any) -> None:
    server = start_kafka(data_dir=str(tmp_path))
    try:
        admin = _admin(server)
        _results(admin.create_topics([NewTopic("kept", 1, 1)]))
        _results(admin.incremental_alter_configs([ConfigResource("topic", "kept", incremental_configs=[
            ConfigEntry("retention.bytes", "123456", incremental_operation=AlterConfigOpType.SET)])]))
    finally:
        server.stop()
    again = start_kafka(data_dir=str(tmp_path))
    try:
        assert _arguments(again, "kept") == {"x-queue-type": "stream", "x-max-length-bytes": 123456}
    finally:
        again.stop()


@pytest.mark.parametrize(("name", "value", "argument"), [
    ("retention.ms", "1500", "2s"),       # rounded up to whole seconds
    ("retention.ms", "86400000", "86400s"),
    ("retention.ms", "-1", None),         # unlimited
    ("retention.bytes", "0", 0),
    ("segment.bytes", "4096", 4096),
])
def test_config_values_as_stream_arguments(name: str, value: str, argument: Any) -> None:
    changed = configs.with_config({"x-queue-type": "stream", configs.ARGUMENTS[name]: "old"}, name, value)
    assert changed.get(configs.ARGUMENTS[name]) == argument and changed["x-queue-type"] == "stream"


@pytest.mark.parametrize(("name", "value"), [("retention.ms", "soon"), ("retention.bytes", "-5"),
                                             ("segment.bytes", "0"), ("flush.ms", "1")])
def test_config_values_refused(name: str, value: str) -> None:
    with pytest.raises(configs.ConfigError):
        configs.with_config({}, name, value)
