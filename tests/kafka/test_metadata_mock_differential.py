"""Metadata, differential: the same raw requests (v0, v1, v4, v9, v12)
against librdkafka's mock cluster (confluent-kafka's
``test.mock.num.brokers``) and amqlite, the same observations from both
once what is each cluster's own is set aside: broker ids, ports, cluster
ids and topic ids (random in the mock, derived from the name here).

The mock serves no admin API but Metadata (ApiVersions lists Metadata
0-13 and no CreateTopics, DeleteTopics, DescribeConfigs, DescribeCluster,
ListGroups or DescribeGroups), so the admin APIs are checked against
amqlite alone (test_kafka_admin.py). Where the mock differs from Kafka,
the test says so (``MOCK_DIFFERS``); docs/kafka.md lists it too.
"""

from __future__ import annotations

import importlib
import socket
import struct
import uuid
from typing import Any, Iterator

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient
from kio.serial import entity_reader

from amqlite.kafka.protocol import response_type

from kafka_support import KafkaServerThread, request, request_frame

VERSIONS = [0, 1, 4, 9, 12]
#: Bytes after the response's last field, by (address, version).
TRAILING: dict[tuple[tuple[str, int], int], int] = {}
#: librdkafka's mock against Kafka (and amqlite), as observed with librdkafka 2.16.
MOCK_DIFFERS = {
    # The mock auto-creates topics with 4 partitions; Kafka's num.partitions is 1.
    "auto-created partitions": (4, 1),
    # Its controller id is 0 while its only broker is 1, so confluent-kafka's
    # describe_cluster and describe_topics time out "waiting for controller".
    "controller is a broker": (False, True),
    # It creates a topic of any name; Kafka refuses INVALID_TOPIC_EXCEPTION (17).
    "invalid name": (0, 17),
    # Its flexible responses (v9+) end with one byte more than the schema has.
    "bytes after the response at v9, v12": ((1, 1), (0, 0)),
}


def metadata(address: tuple[str, int], version: int, names: list[str] | None, auto: bool = True) -> Any:
    module = importlib.import_module(f"kio.schema.metadata.v{version}.request")
    fields: dict[str, Any] = {}
    if version >= 4:
        fields["allow_auto_topic_creation"] = auto
    if 8 <= version <= 10:
        fields["include_cluster_authorized_operations"] = False
    if version >= 8:
        fields["include_topic_authorized_operations"] = False
    by_id = {"topic_id": uuid.UUID(int=0)} if version >= 10 else {}
    topics = None if names is None else tuple(module.MetadataRequestTopic(name=name, **by_id) for name in names)
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(request_frame(request(3, version, topics=topics, **fields), 7))
        data = b""
        while len(data) < 4 or len(data) < 4 + struct.unpack_from(">i", data)[0]:
            chunk = sock.recv(65536)
            assert chunk, "connection closed"
            data += chunk
    frame = data[4:]
    cls = response_type(3, version)
    assert cls is not None and struct.unpack_from(">i", frame)[0] == 7
    offset = 5 if cls.__flexible__ else 4
    body, size = entity_reader(cls)(frame, offset)
    TRAILING[address, version] = len(frame) - offset - size
    return body


def observe(address: tuple[str, int], prefix: str) -> dict[str, Any]:
    """What a client learns, with each cluster's own ids made relative."""
    seen: dict[str, Any] = {}
    for version in VERSIONS:
        body = metadata(address, version, [f"{prefix}-{version}"])
        [broker] = body.brokers
        node = broker.node_id
        assert (broker.host, broker.port) == address  # where the client reached it
        topics = {t.name: (t.error_code, t.is_internal if version else None,
                           sorted({(p.error_code, p.leader_id == node, p.replica_nodes == (node,),
                                    p.isr_nodes == (node,)) for p in t.partitions}))
                  for t in body.topics}
        seen[f"v{version}"] = {"topics": topics, "controller": getattr(body, "controller_id", node) == node,
                               "partitions": [len(t.partitions) for t in body.topics],
                               "cluster id": bool(getattr(body, "cluster_id", "x"))}
        if version >= 10:
            seen[f"v{version}"]["topic ids"] = all(t.topic_id != uuid.UUID(int=0) for t in body.topics)
    everything = metadata(address, 12, None)
    seen["all topics"] = sorted(t.name for t in everything.topics if t.name.startswith(prefix))
    seen["no topics"] = [t.name for t in metadata(address, 12, []).topics]
    seen["v0 empty list: all"] = sorted(t.name for t in metadata(address, 0, []).topics if t.name.startswith(prefix))
    refused = metadata(address, 12, [f"{prefix}-absent"], auto=False)
    seen["unknown, no auto-creation"] = [(t.name, t.error_code, t.partitions) for t in refused.topics]
    seen["unknown stays unknown"] = [t.name for t in metadata(address, 12, None).topics
                                     if t.name == f"{prefix}-absent"]
    invalid = metadata(address, 12, ["bad name!"], auto=True)
    seen["invalid name"] = invalid.topics[0].error_code
    return seen


@pytest.fixture(scope="module")
def mock() -> Iterator[tuple[str, int]]:
    keeper = Producer({"test.mock.num.brokers": 1, "log_level": 0})
    [broker] = keeper.list_topics(timeout=10).brokers.values()
    yield broker.host, broker.port
    keeper.flush(10)
    del keeper


def test_metadata_as_librdkafkas_mock_answers_it(kafka_server: KafkaServerThread, mock: tuple[str, int]) -> None:
    ours = observe(("127.0.0.1", kafka_server.kafka_port), "md")
    reference = observe(mock, "md")
    differs = {
        "auto-created partitions": (reference["v1"]["partitions"][0], ours["v1"]["partitions"][0]),
        "controller is a broker": (reference["v1"]["controller"], ours["v1"]["controller"]),
        "invalid name": (int(reference["invalid name"]), int(ours["invalid name"])),
        "bytes after the response at v9, v12": tuple((TRAILING[address, 9], TRAILING[address, 12])
                                                      for address in (mock, ("127.0.0.1", kafka_server.kafka_port))),
    }
    assert all(TRAILING[("127.0.0.1", kafka_server.kafka_port), version] == 0 for version in VERSIONS)
    assert differs == MOCK_DIFFERS
    for seen in (ours, reference):
        for version in VERSIONS:
            seen[f"v{version}"].pop("partitions")
            seen[f"v{version}"].pop("controller")
        seen.pop("invalid name")
    assert ours == reference
    assert ours["v12"]["topics"]["md-12"] == (0, False, [(0, True, True, True)])  # one leader: the broker


def test_the_admin_client_describes_amqlite_where_the_mock_times_out(kafka_server: KafkaServerThread,
                                                                     mock: tuple[str, int]) -> None:
    """confluent-kafka's describe_cluster needs the controller Metadata
    names to be a broker: amqlite's is, the mock's (0, its broker is 1) not."""
    admin = AdminClient({"bootstrap.servers": kafka_server.bootstrap})  # kept: its futures end with it
    ours = admin.describe_cluster(request_timeout=10).result()
    assert ours.cluster_id == "amqlite" and ours.controller.id == 0 and [n.id for n in ours.nodes] == [0]
    reference = AdminClient({"bootstrap.servers": f"{mock[0]}:{mock[1]}"})
    with pytest.raises(KafkaException, match="controller"):
        reference.describe_cluster(request_timeout=2).result()
