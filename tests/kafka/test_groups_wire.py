"""The group APIs on the wire (kafka/groups.py, kafka/groups_offsets.py),
through the sans-IO engine: each version's fields, batches, errors,
permissions, and offsets shared with AMQP x-stream-group consumers."""

from __future__ import annotations

import datetime
import importlib
from typing import Any

from kio.schema.errors import ErrorCode

from amqlite.auth import User, Users, hash_password
from amqlite.config import Settings
from amqlite.core.broker import Broker
from amqlite.core.channel import Channel
from amqlite.core.permissions import Permission
from amqlite.kafka.engine import KafkaConnection
from amqlite.kafka.registry import APIS
from amqlite.kafka.session import KafkaSettings, Session

from kafka_support import decode_response, engine, request, request_frame, split_responses

OFFSET_COMMIT, OFFSET_FETCH, FIND_COORDINATOR, JOIN_GROUP, HEARTBEAT, LEAVE_GROUP, SYNC_GROUP = 8, 9, 10, 11, 12, 13, 14
DESCRIBE_GROUPS, LIST_GROUPS, DELETE_GROUPS, OFFSET_DELETE = 15, 16, 42, 47
SECONDS = datetime.timedelta


def subscription(*topics: str) -> bytes:
    """Kafka's ConsumerProtocolSubscription v0."""
    out = b"\0\0" + len(topics).to_bytes(4, "big")
    for topic in topics:
        out += len(topic).to_bytes(2, "big") + topic.encode()
    return out + b"\xff\xff\xff\xff"


def call(conn: KafkaConnection, body: Any, now: float = 0.0, correlation_id: int = 1) -> Any:
    """One request; its response (there must be one now)."""
    conn.receive_data(request_frame(body, correlation_id=correlation_id), now)
    (frame,) = split_responses(conn.data_to_send(now))
    got_id, response = decode_response(frame, body.__api_key__, body.__version__)
    assert got_id == correlation_id
    return response


def send(conn: KafkaConnection, body: Any, now: float = 0.0, correlation_id: int = 1) -> None:
    conn.receive_data(request_frame(body, correlation_id=correlation_id), now)


def answers(conn: KafkaConnection, body: Any, now: float = 0.0) -> list[Any]:
    return [decode_response(frame, body.__api_key__, body.__version__)[1]
            for frame in split_responses(conn.data_to_send(now))]


def join_request(version: int, member_id: str = "", group: str = "g", topics: tuple[str, ...] = ("events",),
                 instance: str | None = None) -> Any:
    module = importlib.import_module(f"kio.schema.join_group.v{version}.request")
    fields: dict[str, Any] = dict(
        group_id=group, session_timeout=SECONDS(seconds=10), member_id=member_id, protocol_type="consumer",
        protocols=(module.JoinGroupRequestProtocol(name="range", metadata=subscription(*topics)),))
    if version >= 1:
        fields["rebalance_timeout"] = SECONDS(seconds=30)
    if version >= 5:
        fields["group_instance_id"] = instance
    if version >= 8:
        fields["reason"] = None
    return module.JoinGroupRequest(**fields)


def stream_with(broker: Broker, name: str = "events", count: int = 10) -> Channel:
    ch = broker.connect().open_channel()
    ch.declare_queue(name, durable=True, arguments={"x-queue-type": "stream"}, now=0.0)
    for n in range(count):
        ch.publish(b"m%d" % n, routing_key=name, now=0.0)
    return ch


def joined(broker: Broker, version: int = 5) -> tuple[KafkaConnection, str]:
    """A member of group g, generation 1, Stable, assigned events-0."""
    conn = engine(broker)
    first = call(conn, join_request(version))
    assert first.error_code == ErrorCode.member_id_required
    send(conn, join_request(version, first.member_id))
    broker.tick(0.0)  # the zero initial delay ends
    broker.tick(3.0)  # the default initial delay ends
    (joined_,) = answers(conn, join_request(version))
    assert joined_.error_code == ErrorCode.none and joined_.generation_id == 1
    member = joined_.member_id
    synced = call(conn, request(SYNC_GROUP, 3, group_id="g", generation_id=1, member_id=member, group_instance_id=None,
                                assignments=(sync_assignment(3, member, b"events-0"),)))
    assert synced.error_code == ErrorCode.none and synced.assignment == b"events-0"
    return conn, member


def sync_assignment(version: int, member: str, data: bytes) -> Any:
    module = importlib.import_module(f"kio.schema.sync_group.v{version}.request")
    return module.SyncGroupRequestAssignment(member_id=member, assignment=data)


def test_find_coordinator_names_this_broker_one_key_or_a_batch() -> None:
    conn = engine()
    for version in range(4):
        fields = {"key": "g"} if version == 0 else {"key": "g", "key_type": 0}
        response = call(conn, request(FIND_COORDINATOR, version, **fields))
        assert (response.error_code, response.node_id, response.host, response.port) == (
            ErrorCode.none, 0, "127.0.0.1", 9092)
    response = call(conn, request(FIND_COORDINATOR, 4, key_type=0, coordinator_keys=("a", "b", "c")))
    assert [(c.key, c.error_code, c.port) for c in response.coordinators] == [
        ("a", ErrorCode.none, 9092), ("b", ErrorCode.none, 9092), ("c", ErrorCode.none, 9092)]
    bad = call(conn, request(FIND_COORDINATOR, 4, key_type=7, coordinator_keys=("a",)))
    assert bad.coordinators[0].error_code == ErrorCode.invalid_request


def test_join_sync_heartbeat_leave_at_every_version() -> None:
    for version in (0, 1, 2, 3):
        broker = Broker()
        stream_with(broker)
        conn = engine(broker)
        # Before v4 there is no MEMBER_ID_REQUIRED step: the join parks at once.
        send(conn, join_request(version))
        assert conn.data_to_send(0.0) == b""
        broker.tick(3.0)
        (response,) = answers(conn, join_request(version))
        assert response.error_code == ErrorCode.none and response.generation_id == 1
        assert response.leader == response.member_id and response.protocol_name == "range"
        assert [m.metadata for m in response.members] == [subscription("events")]
    broker = Broker()
    stream_with(broker)
    conn, member = joined(broker, 4)
    beat = call(conn, request(HEARTBEAT, 3, group_id="g", generation_id=1, member_id=member, group_instance_id=None))
    assert beat.error_code == ErrorCode.none
    stale = call(conn, request(HEARTBEAT, 0, group_id="g", generation_id=0, member_id=member))
    assert stale.error_code == ErrorCode.illegal_generation
    left = call(conn, request(LEAVE_GROUP, 3, group_id="g", members=(
        leave_member(3, member), leave_member(3, "stranger"))))
    assert [(m.member_id, m.error_code) for m in left.members] == [
        (member, ErrorCode.none), ("stranger", ErrorCode.unknown_member_id)]
    gone = call(conn, request(LEAVE_GROUP, 0, group_id="g", member_id=member))
    assert gone.error_code == ErrorCode.unknown_member_id


def leave_member(version: int, member: str) -> Any:
    module = importlib.import_module(f"kio.schema.leave_group.v{version}.request")
    return module.MemberIdentity(member_id=member, group_instance_id=None)


def test_the_newest_join_and_sync_versions_carry_protocol_type_and_name() -> None:
    broker = Broker()
    stream_with(broker)
    conn = engine(broker)
    first = call(conn, join_request(9))
    send(conn, join_request(9, first.member_id))
    broker.tick(3.0)
    (response,) = answers(conn, join_request(9))
    assert (response.protocol_type, response.protocol_name, response.skip_assignment) == ("consumer", "range", False)
    synced = call(conn, request(SYNC_GROUP, 5, group_id="g", generation_id=1, member_id=response.member_id,
                                group_instance_id=None, protocol_type="consumer", protocol_name="range",
                                assignments=()))
    assert (synced.error_code, synced.protocol_type, synced.protocol_name) == (ErrorCode.none, "consumer", "range")
    wrong = call(conn, request(SYNC_GROUP, 5, group_id="g", generation_id=1, member_id=response.member_id,
                               group_instance_id=None, protocol_type="consumer", protocol_name="roundrobin",
                               assignments=()))
    assert wrong.error_code == ErrorCode.inconsistent_group_protocol


def commit_request(version: int, member: str, generation: int, offsets: dict[tuple[str, int], int],
                   group: str = "g", metadata: str = "") -> Any:
    module = importlib.import_module(f"kio.schema.offset_commit.v{version}.request")
    by_topic: dict[str, list[Any]] = {}
    for (topic, partition), offset in offsets.items():
        by_topic.setdefault(topic, []).append(module.OffsetCommitRequestPartition(
            partition_index=partition, committed_offset=offset, committed_metadata=metadata,
            **({"committed_leader_epoch": -1} if version >= 6 else {})))
    fields: dict[str, Any] = dict(group_id=group, generation_id_or_member_epoch=generation, member_id=member,
                                  topics=tuple(module.OffsetCommitRequestTopic(name=t, partitions=tuple(p))
                                               for t, p in by_topic.items()))
    if version <= 4:
        fields["retention_time"] = SECONDS(milliseconds=-1)
    if version >= 7:
        fields["group_instance_id"] = None
    return module.OffsetCommitRequest(**fields)


def fetch_request(version: int, group: str, partitions: dict[str, list[int]] | None) -> Any:
    module = importlib.import_module(f"kio.schema.offset_fetch.v{version}.request")
    if version >= 8:
        topics = None if partitions is None else tuple(
            module.OffsetFetchRequestTopics(name=t, partition_indexes=tuple(p)) for t, p in partitions.items())
        return module.OffsetFetchRequest(groups=(module.OffsetFetchRequestGroup(group_id=group, topics=topics),),
                                         require_stable=False)
    topics = None if partitions is None else tuple(
        module.OffsetFetchRequestTopic(name=t, partition_indexes=tuple(p)) for t, p in partitions.items())
    fields: dict[str, Any] = dict(group_id=group, topics=topics)
    if version >= 7:
        fields["require_stable"] = False
    return module.OffsetFetchRequest(**fields)


def fetched(response: Any, version: int) -> dict[tuple[str, int], int]:
    topics = response.groups[0].topics if version >= 8 else response.topics
    return {(t.name, p.partition_index): p.committed_offset for t in topics for p in t.partitions}


def test_offsets_committed_over_kafka_are_the_stream_groups_offsets() -> None:
    broker = Broker()
    ch = stream_with(broker)
    stream_with(broker, "other", 3)
    conn, member = joined(broker)
    for version in (2, 5, 8):
        response = call(conn, commit_request(version, member, 1, {("events", 0): 1 + version, ("nope", 0): 1,
                                                                  ("events", 3): 2}))
        assert {(t.name, p.partition_index): p.error_code for t in response.topics for p in t.partitions} == {
            ("events", 0): ErrorCode.none, ("nope", 0): ErrorCode.unknown_topic_or_partition,
            ("events", 3): ErrorCode.unknown_topic_or_partition}
        stream = broker.vhosts["/"].queues["events"]
        assert stream.group_offsets["g"].committed == 1 + version  # type: ignore[attr-defined]
    stale = call(conn, commit_request(8, member, 0, {("events", 0): 1}))
    assert stale.topics[0].partitions[0].error_code == ErrorCode.illegal_generation
    for version in (1, 3, 5, 7, 8):
        asked = call(conn, fetch_request(version, "g", {"events": [0, 1], "other": [0]}))
        assert fetched(asked, version) == {("events", 0): 9, ("events", 1): -1, ("other", 0): -1}
    for version in (2, 8):  # null topics: every partition with an offset
        assert fetched(call(conn, fetch_request(version, "g", None)), version) == {("events", 0): 9}
    # The same offset over AMQP: an x-stream-group consumer starts there.
    ch.qos(10, now=0.0)
    call(conn, request(LEAVE_GROUP, 0, group_id="g", member_id=member))
    ch.consume("events", now=0.0, arguments={"x-stream-group": "g"})
    stream = broker.vhosts["/"].queues["events"]
    assert list(stream.group_offsets["g"].in_flight) == [9]  # type: ignore[attr-defined]


def test_a_commit_without_membership_and_amqp_acks_reach_offset_fetch() -> None:
    broker = Broker()
    ch = stream_with(broker)
    conn = engine(broker)
    # generation -1, no member: a consumer with manual assignment.
    response = call(conn, commit_request(2, "", -1, {("events", 0): 3}, group="manual"))
    assert response.topics[0].partitions[0].error_code == ErrorCode.none
    # An AMQP group acks 0..5: Kafka reads offset 6.
    ch.qos(100, now=0.0)
    ch.consume("events", now=0.0, arguments={"x-stream-group": "amqp", "x-stream-offset": "first"})
    stream = broker.vhosts["/"].queues["events"]
    for entry in list(stream._pending)[:6]:  # noqa: SLF001 - the deliveries the channel holds
        stream.settle(entry)
    assert fetched(call(conn, fetch_request(3, "amqp", {"events": [0]})), 3) == {("events", 0): 6}
    assert fetched(call(conn, fetch_request(3, "manual", {"events": [0]})), 3) == {("events", 0): 3}
    # While AMQP consumers are its members, Kafka cannot commit for the group or join it.
    refused = call(conn, commit_request(2, "", -1, {("events", 0): 9}, group="amqp"))
    assert refused.topics[0].partitions[0].error_code == ErrorCode.unknown_member_id
    assert call(conn, join_request(5, group="amqp")).error_code == ErrorCode.inconsistent_group_protocol
    listed = call(conn, request(LIST_GROUPS, 4, states_filter=()))
    assert {(g.group_id, g.protocol_type, g.group_state) for g in listed.groups} == {
        ("amqp", "amqp", "Stable"), ("manual", "", "Empty")}
    described = call(conn, request(DESCRIBE_GROUPS, 5, groups=("amqp", "manual", "unknown"),
                                   include_authorized_operations=False))
    assert [(g.group_id, g.group_state, len(g.members)) for g in described.groups] == [
        ("amqp", "Stable", 1), ("manual", "Empty", 0), ("unknown", "Dead", 0)]


def fetched_metadata(response: Any, version: int) -> dict[tuple[str, int], str]:
    topics = response.groups[0].topics if version >= 8 else response.topics
    return {(t.name, p.partition_index): p.metadata for t in topics for p in t.partitions}


def test_offset_fetch_returns_the_commits_metadata() -> None:
    """As Kafka: the metadata string committed with an offset comes back
    with it, up to offset.metadata.max.bytes (4096: beyond, the partition
    is refused OFFSET_METADATA_TOO_LARGE and keeps what it had); an AMQP
    ack that moves the offset clears it."""
    broker = Broker()
    ch = stream_with(broker)
    conn = engine(broker)
    for version in (2, 8):
        response = call(conn, commit_request(version, "", -1, {("events", 0): version}, metadata=f"v{version} é"))
        assert response.topics[0].partitions[0].error_code == ErrorCode.none
        for fetch_version in (1, 8):
            asked = call(conn, fetch_request(fetch_version, "g", {"events": [0, 1]}))
            assert fetched(asked, fetch_version) == {("events", 0): version, ("events", 1): -1}
            assert fetched_metadata(asked, fetch_version) == {("events", 0): f"v{version} é", ("events", 1): ""}
    too_large = call(conn, commit_request(8, "", -1, {("events", 0): 1}, metadata="x" * 4097))
    assert too_large.topics[0].partitions[0].error_code == ErrorCode.offset_metadata_too_large
    asked = call(conn, fetch_request(8, "g", {"events": [0]}))
    assert (fetched(asked, 8), fetched_metadata(asked, 8)) == ({("events", 0): 8}, {("events", 0): "v8 é"})
    assert call(conn, commit_request(8, "", -1, {("events", 0): 1}, metadata="x" * 4096)).topics[0].partitions[
        0].error_code == ErrorCode.none
    # An x-stream-group consumer acks offset 1: the offset moves, the metadata goes.
    ch.qos(1, now=0.0)
    ch.consume("events", now=0.0, arguments={"x-stream-group": "g"})
    stream = broker.vhosts["/"].queues["events"]
    [entry] = list(stream._pending)  # noqa: SLF001 - the delivery the channel holds
    stream.settle(entry)
    asked = call(conn, fetch_request(8, "g", {"events": [0]}))
    assert (fetched(asked, 8), fetched_metadata(asked, 8)) == ({("events", 0): 2}, {("events", 0): ""})


def test_list_describe_and_delete_kafka_groups() -> None:
    broker = Broker()
    stream_with(broker)
    conn, member = joined(broker)
    call(conn, commit_request(2, member, 1, {("events", 0): 5}))
    listed = call(conn, request(LIST_GROUPS, 0))
    assert [(g.group_id, g.protocol_type) for g in listed.groups] == [("g", "consumer")]
    assert call(conn, request(LIST_GROUPS, 4, states_filter=("Empty",))).groups == ()
    described = call(conn, request(DESCRIBE_GROUPS, 4, groups=("g",), include_authorized_operations=False))
    (group,) = described.groups
    assert (group.group_state, group.protocol_type, group.protocol_data) == ("Stable", "consumer", "range")
    assert [(m.member_id, m.client_host, m.member_assignment) for m in group.members] == [
        (member, "/127.0.0.1", b"events-0")]
    deleted = call(conn, request(DELETE_GROUPS, 1, groups_names=("g", "never")))
    assert [(r.group_id, r.error_code) for r in deleted.results] == [
        ("g", ErrorCode.non_empty_group), ("never", ErrorCode.group_id_not_found)]
    # OffsetDelete refuses a topic the group's members subscribe to.
    refused = call(conn, request(OFFSET_DELETE, 0, group_id="g", topics=(offset_delete_topic("events", 0),)))
    assert refused.topics[0].partitions[0].error_code == ErrorCode.group_subscribed_to_topic
    call(conn, request(LEAVE_GROUP, 0, group_id="g", member_id=member))
    assert call(conn, request(DELETE_GROUPS, 1, groups_names=("g",))).results[0].error_code == ErrorCode.none
    assert "g" not in broker.vhosts["/"].queues["events"].group_offsets  # type: ignore[attr-defined]
    assert fetched(call(conn, fetch_request(3, "g", {"events": [0]})), 3) == {("events", 0): -1}
    missing = call(conn, request(OFFSET_DELETE, 0, group_id="g", topics=(offset_delete_topic("events", 0),)))
    assert missing.error_code == ErrorCode.group_id_not_found


def offset_delete_topic(name: str, *partitions: int) -> Any:
    module = importlib.import_module("kio.schema.offset_delete.v0.request")
    return module.OffsetDeleteRequestTopic(name=name, partitions=tuple(
        module.OffsetDeleteRequestPartition(partition_index=p) for p in partitions))


def test_offset_delete_of_an_empty_group() -> None:
    broker = Broker()
    stream_with(broker)
    conn = engine(broker)
    call(conn, commit_request(2, "", -1, {("events", 0): 5}, group="solo"))
    deleted = call(conn, request(OFFSET_DELETE, 0, group_id="solo", topics=(offset_delete_topic("events", 0, 9),)))
    assert [(p.partition_index, p.error_code) for p in deleted.topics[0].partitions] == [
        (0, ErrorCode.none), (9, ErrorCode.unknown_topic_or_partition)]
    assert "solo" not in broker.vhosts["/"].queues["events"].group_offsets  # type: ignore[attr-defined]


def test_membership_and_offsets_need_read_permission() -> None:
    broker = Broker()
    stream_with(broker)
    stream_with(broker, "secret", 3)
    users = Users.from_settings(Settings())
    users.add(User("reader", hash_password("pw"), {"/": Permission(configure="", write="", read="^events$")}))
    session = Session(broker, users, KafkaSettings(advertised_host="127.0.0.1", advertised_port=9092,
                                                   anonymous_user="reader"),
                      APIS, peer="127.0.0.1:40000", peer_loopback=True)
    conn = KafkaConnection(session, now=0.0, handshake_timeout=10.0)
    refused = call(conn, join_request(5, topics=("events", "secret")))
    assert refused.error_code == ErrorCode.group_authorization_failed
    assert call(conn, join_request(5, topics=("events",))).error_code == ErrorCode.member_id_required
    commit = call(conn, commit_request(2, "", -1, {("events", 0): 1, ("secret", 0): 1}, group="solo"))
    assert {t.name: t.partitions[0].error_code for t in commit.topics} == {
        "events": ErrorCode.none, "secret": ErrorCode.topic_authorization_failed}


def test_group_requests_behind_a_parked_join_wait_for_it() -> None:
    """Kafka reads a connection's next request once it has answered the
    last: a Heartbeat sent behind a waiting JoinGroup is handled after the
    rebalance, in the new generation's state, not during it."""
    broker = Broker()
    stream_with(broker)
    a, b = engine(broker), engine(broker)
    ids = []
    for conn in (a, b):
        ids.append(call(conn, join_request(5)).member_id)
        send(conn, join_request(5, ids[-1]))
    broker.tick(3.0)
    broker.tick(6.0)  # B came during the initial delay: it ran again
    assert [answers(conn, join_request(5))[0].generation_id for conn in (a, b)] == [1, 1]
    for conn, member in zip((a, b), ids):
        synced = call(conn, request(SYNC_GROUP, 3, group_id="g", generation_id=1, member_id=member,
                                    group_instance_id=None, assignments=()))
        assert synced.error_code == ErrorCode.none
    send(a, join_request(5, ids[0]), correlation_id=2)  # a rebalance: A waits for B
    send(a, request(HEARTBEAT, 3, group_id="g", generation_id=1, member_id=ids[0], group_instance_id=None),
         correlation_id=3)
    assert a.data_to_send(3.0) == b""  # both wait
    send(b, join_request(5, ids[1]), correlation_id=2)  # B is in: generation 2
    frames = split_responses(a.data_to_send(3.0))
    assert len(frames) == 2
    _, joined_again = decode_response(frames[0], JOIN_GROUP, 5)
    _, beat = decode_response(frames[1], HEARTBEAT, 3)
    assert joined_again.generation_id == 2
    # Handled after the join: generation 1 is over (handled during it, the
    # answer REBALANCE_IN_PROGRESS would send the member round again).
    assert beat.error_code == ErrorCode.illegal_generation
