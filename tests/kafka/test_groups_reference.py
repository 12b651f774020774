"""The group protocol flow, differential: one script of raw Kafka requests
(kio's types) against librdkafka's mock cluster (confluent-kafka's
``test.mock.num.brokers``, the reference that runs here) and against
amqlite, and the same observations from both: error codes, generations,
who leads and what the leader learns, assignments relayed, heartbeats
during a rebalance, offsets committed and fetched, leaving.

At the versions both serve: the mock has FindCoordinator 0-3, JoinGroup
0-6, SyncGroup 0-4, Heartbeat 0-5, LeaveGroup 0-4, OffsetCommit 0-9 and
OffsetFetch 0-6, and no ListGroups, DescribeGroups, DeleteGroups or
OffsetDelete. Where they differ, the test says so (``REFERENCE_DIFFERS``).
Left out where the mock's answer does not follow Kafka's schema (kio
cannot read it): a refused SyncGroup (a null assignment) and LeaveGroup
v3+ (its member list), so LeaveGroup is v1 here.
"""

from __future__ import annotations

import datetime
import importlib
import select
import socket
import struct
import time
from collections import deque
from typing import Any, Iterator

import pytest
from confluent_kafka import Producer
from kio.serial.errors import UnexpectedNull

from kafka_support import KafkaServerThread, decode_response, request, request_frame, start_kafka

TOPIC = "ledger"
JOIN, SYNC, HEARTBEAT, LEAVE, COMMIT, FETCH, FIND = (11, 5), (14, 3), (12, 3), (13, 1), (8, 5), (9, 5), (10, 2)
NONE, ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID, REBALANCE_IN_PROGRESS, MEMBER_ID_REQUIRED = 0, 22, 25, 27, 79


class Wire:
    """One client connection speaking raw requests."""

    def __init__(self, host: str, port: int, group: str) -> None:
        self.group = group
        self.sock = socket.create_connection((host, port), timeout=20)
        self.sent: deque[tuple[int, int, int]] = deque()
        self.next_id = 0

    def send(self, api: tuple[int, int], **fields: Any) -> None:
        self.next_id += 1
        self.sock.sendall(request_frame(request(api[0], api[1], **fields), correlation_id=self.next_id,
                                        client_id="reference"))
        self.sent.append((self.next_id, *api))

    def receive(self) -> Any:
        correlation_id, key, version = self.sent.popleft()
        (size,) = struct.unpack(">i", self._exactly(4))
        got, body = decode_response(self._exactly(size), key, version)
        assert got == correlation_id
        return body

    def answered_within(self, seconds: float) -> bool:
        """Whether a response comes within ``seconds`` (it is not read)."""
        return bool(select.select([self.sock], [], [], seconds)[0])

    def call(self, api: tuple[int, int], **fields: Any) -> Any:
        self.send(api, **fields)
        return self.receive()

    def _exactly(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            assert chunk, "connection closed"
            data += chunk
        return data


def module(api: tuple[int, int]) -> Any:
    names = {11: "join_group", 14: "sync_group", 8: "offset_commit", 9: "offset_fetch"}
    return importlib.import_module(f"kio.schema.{names[api[0]]}.v{api[1]}.request")


def subscription() -> bytes:
    return b"\0\0" + (1).to_bytes(4, "big") + len(TOPIC).to_bytes(2, "big") + TOPIC.encode() + b"\xff\xff\xff\xff"


def join_fields(group: str, member_id: str) -> dict[str, Any]:
    return dict(group_id=group, session_timeout=datetime.timedelta(seconds=10),
                rebalance_timeout=datetime.timedelta(seconds=10), member_id=member_id, group_instance_id=None,
                protocol_type="consumer",
                protocols=(module(JOIN).JoinGroupRequestProtocol(name="range", metadata=subscription()),))


def join(wire: Wire, member_id: str = "") -> tuple[list[Any], Any]:
    """Join (again); (what came before the real answer, the answer)."""
    first = wire.call(JOIN, **join_fields(wire.group, member_id))
    if first.error_code.value != MEMBER_ID_REQUIRED:
        return [], first
    return [first.error_code.value], wire.call(JOIN, **join_fields(wire.group, first.member_id))


def sync(wire: Wire, generation: int, member_id: str, assignments: dict[str, bytes]) -> Any:
    m = module(SYNC)
    return wire.call(SYNC, group_id=wire.group, generation_id=generation, member_id=member_id, group_instance_id=None,
                     assignments=tuple(m.SyncGroupRequestAssignment(member_id=k, assignment=v)
                                       for k, v in assignments.items()))


def heartbeat(wire: Wire, generation: int, member_id: str) -> int:
    return wire.call(HEARTBEAT, group_id=wire.group, generation_id=generation, member_id=member_id,
                     group_instance_id=None).error_code.value


def commit(wire: Wire, generation: int, member_id: str, offset: int) -> int:
    m = module(COMMIT)
    response = wire.call(COMMIT, group_id=wire.group, generation_id_or_member_epoch=generation, member_id=member_id,
                         topics=(m.OffsetCommitRequestTopic(name=TOPIC, partitions=(
                             m.OffsetCommitRequestPartition(partition_index=0, committed_offset=offset,
                                                            committed_metadata=""),)),))
    return response.topics[0].partitions[0].error_code.value


def fetch(wire: Wire) -> dict[int, int]:
    m = module(FETCH)
    response = wire.call(FETCH, group_id=wire.group, topics=(m.OffsetFetchRequestTopic(name=TOPIC,
                                                                                 partition_indexes=(0,)),))
    return {p.partition_index: p.committed_offset for t in response.topics for p in t.partitions}


def leave(wire: Wire, member_id: str) -> int:
    return wire.call(LEAVE, group_id=wire.group, member_id=member_id).error_code.value


def scenario(host: str, port: int, group: str) -> list[tuple[str, Any]]:
    """The flow, as observations that do not depend on the broker's ids."""
    seen: list[tuple[str, Any]] = []
    a, b = Wire(host, port, group), Wire(host, port, group)
    found = a.call(FIND, key=group, key_type=0)
    seen.append(("find coordinator", found.error_code.value))
    seen.append(("heartbeat, unknown group", heartbeat(a, 1, "nobody")))

    before, joined = join(a)
    a_id, generation = joined.member_id, joined.generation_id
    seen.append(("first join", (before, joined.error_code.value, joined.leader == a_id, joined.protocol_name,
                                [m.metadata for m in joined.members])))
    synced = sync(a, generation, a_id, {a_id: b"for-a"})
    seen.append(("leader's sync", (synced.error_code.value, synced.assignment)))
    seen.append(("heartbeat, stable", heartbeat(a, generation, a_id)))
    seen.append(("heartbeat, wrong generation", heartbeat(a, generation + 5, a_id)))
    seen.append(("heartbeat, unknown member", heartbeat(a, generation, "nobody")))
    seen.append(("commit", commit(a, generation, a_id, 3)))
    seen.append(("commit, wrong generation", commit(a, generation + 5, a_id, 4)))
    seen.append(("fetch", fetch(b)))

    # B joins: A hears of the rebalance from its heartbeat and joins again.
    b.send(JOIN, **join_fields(b.group, ""))
    two_step = b.answered_within(2.0)  # Kafka's MEMBER_ID_REQUIRED; the mock parks the join at once
    if two_step:
        b_first = b.receive()
        assert b_first.error_code.value == MEMBER_ID_REQUIRED
        b.send(JOIN, **join_fields(b.group, b_first.member_id))
    seen.append(("second member's first join answered at once", two_step))
    # B's join reaches the coordinator on its own connection: A's heartbeats
    # answer NONE until it has, then REBALANCE_IN_PROGRESS.
    deadline = time.monotonic() + 10
    while (answer := heartbeat(a, generation, a_id)) == NONE and time.monotonic() < deadline:
        time.sleep(0.05)
    seen.append(("heartbeat, rebalancing", answer))
    seen.append(("commit while rebalancing", commit(a, generation, a_id, 4)))
    a.send(JOIN, **join_fields(a.group, a_id))
    a_joined, b_joined = a.receive(), b.receive()
    b_id = b_joined.member_id
    seen.append(("second generation", (a_joined.generation_id - generation, b_joined.generation_id - generation,
                                       a_joined.leader == a_id, b_joined.leader == a_id,
                                       sorted(m.member_id == a_id for m in a_joined.members), len(b_joined.members))))
    generation = a_joined.generation_id
    b.send(SYNC, group_id=b.group, generation_id=generation, member_id=b_id, group_instance_id=None, assignments=())
    leader = sync(a, generation, a_id, {a_id: b"a2", b_id: b"b2"})
    follower = b.receive()
    seen.append(("assignments relayed", (leader.assignment, follower.assignment)))
    seen.append(("fetch after rebalance", fetch(b)))

    seen.append(("leave", leave(b, b_id)))
    seen.append(("leave, unknown member", leave(b, "nobody")))
    seen.append(("heartbeat after a leave", heartbeat(a, generation, a_id)))
    return seen


#: Where the mock cluster answers otherwise than Kafka's GroupCoordinator
#: (and amqlite): observation -> (mock, amqlite).
REFERENCE_DIFFERS: dict[str, tuple[Any, Any]] = {
    # Kafka's GroupCoordinator.handleHeartbeat: no such group is UNKNOWN_MEMBER_ID.
    "heartbeat, unknown group": (69, UNKNOWN_MEMBER_ID),
    # The mock has no KIP-394 MEMBER_ID_REQUIRED step for JoinGroup v4+.
    "first join": (([], NONE, True, "range", [subscription()]),
                   ([MEMBER_ID_REQUIRED], NONE, True, "range", [subscription()])),
    "second member's first join answered at once": (False, True),
    # Kafka stores a member's commit during PreparingRebalance ("we rely on
    # heartbeat response to eventually notify the rebalance"); the mock
    # refuses it, so what is fetched after differs too.
    "commit while rebalancing": (REBALANCE_IN_PROGRESS, NONE),
    "fetch after rebalance": ({0: 3}, {0: 4}),
}


def reference_scenario(host: str, port: int) -> dict[str, Any]:
    """The scenario against the mock, which now and then answers a
    SyncGroup during its rebalance with a null assignment (kio cannot read
    that): then the scenario runs again, in a group of another name."""
    for attempt in range(3):
        try:
            return dict(scenario(host, port, group=f"g{attempt}"))
        except UnexpectedNull:
            continue
    raise AssertionError("the mock cluster's answers could not be read three times")


@pytest.fixture
def reference() -> Iterator[tuple[str, int]]:
    producer = Producer({"test.mock.num.brokers": 1, "log_level": 0})
    producer.produce(TOPIC, b"x" * 10)
    for _ in range(5):
        producer.produce(TOPIC, b"y", partition=0)
    producer.flush(10)
    broker = next(iter(producer.list_topics(timeout=10).brokers.values()))
    yield broker.host, broker.port
    del producer


@pytest.fixture
def amqlite() -> Iterator[KafkaServerThread]:
    server = start_kafka(kafka_group_initial_rebalance_delay=0)
    connection = server.connect()
    channel = connection.channel()
    channel.queue_declare(TOPIC, durable=True, arguments={"x-queue-type": "stream"})
    for _ in range(6):
        channel.basic_publish("", TOPIC, b"y")
    connection.close()
    yield server
    server.stop()


def test_the_group_flow_matches_librdkafkas_mock_cluster(reference: tuple[str, int],
                                                         amqlite: KafkaServerThread) -> None:
    expected = reference_scenario(*reference)
    got = dict(scenario("127.0.0.1", amqlite.kafka_port, group="g0"))
    differs = {key: (expected[key], got[key]) for key in expected if expected[key] != got[key]}
    assert differs == REFERENCE_DIFFERS
    # And the flow itself is Kafka's (so both are not wrong alike).
    assert got["heartbeat, rebalancing"] == REBALANCE_IN_PROGRESS
    assert got["second generation"] == (1, 1, True, True, [False, True], 0)
    assert got["assignments relayed"] == (b"a2", b"b2")
    assert got["fetch after rebalance"] == {0: 4}
