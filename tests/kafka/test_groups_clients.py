"""Consumer groups through kafka-python, aiokafka and confluent-kafka: three
members share a three-partition topic and rebalance as they come and go
(leaving, or going silent until their session times out); their commits
are the streams' x-stream-group offsets, where a member taking over a
partition resumes, over Kafka or over AMQP, and after the broker is
killed (kill -9); one group switches protocol and back, visible in the
management API and Prometheus meanwhile.

The topics are seeded over AMQP; members read them over Kafka.
"""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import httpx
import pytest
import trio
from aiokafka import AIOKafkaConsumer
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor
from aiokafka.structs import TopicPartition as AioTopicPartition
from confluent_kafka import Consumer as ConfluentConsumer
from confluent_kafka import Producer as ConfluentProducer
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka import TopicPartition as ConfluentTopicPartition
from kafka import KafkaConsumer
from kafka import TopicPartition as KafkaTopicPartition
from kafka.coordinator.base import BaseCoordinator
from kafka.structs import OffsetAndMetadata

from amqlite import ctl
from amqlite.core.stream import Stream
from amqlite.management.http import bind, serve
from amqlite.management.metrics import create_metrics_app
from amqlite.management.service import management_app

from kafka_support import BrokerProcess, KafkaServerThread
from server.conftest import start_amqlite

TOPIC = "orders"
PARTITIONS = 3
PER_PARTITION = 10
ALL = set(range(PARTITIONS))
SESSION_MS = 6000  # the coordinator's minimum, Kafka's group.min.session.timeout.ms
HEARTBEAT_MS = 500


class GroupServer(KafkaServerThread):
    """Kafka, the management API and Prometheus, each on a free port."""

    management_port = 0
    prometheus_port = 0

    async def _serving(self, nursery: trio.Nursery) -> None:
        await super()._serving(nursery)
        assert self.server is not None
        ports = []
        for app in (management_app(self.server),
                    create_metrics_app(self.server.core, self.server.clock.now, self.server.store_metrics,
                                       self.server.alarms)):
            bound = bind(app, "127.0.0.1", 0)
            await nursery.start(serve, bound)
            ports.append(bound.port)
        self.management_port, self.prometheus_port = ports


@pytest.fixture
def server() -> Iterator[GroupServer]:
    started = start_amqlite(GroupServer, kafka_group_initial_rebalance_delay=0)
    assert isinstance(started, GroupServer)
    declare_partitioned(started)
    yield started
    started.stop()


def declare_partitioned(server: KafkaServerThread) -> None:
    """The topic as a partitioned stream, PER_PARTITION messages in each."""
    connection = server.connect()
    channel = connection.channel()
    channel.confirm_delivery()
    channel.exchange_declare(TOPIC, "x-consistent-hash", durable=True)
    for n in range(PARTITIONS):
        channel.queue_declare(f"{TOPIC}-{n}", durable=True, arguments={"x-queue-type": "stream"})
        channel.queue_bind(f"{TOPIC}-{n}", TOPIC, "1")
        for i in range(PER_PARTITION):
            channel.basic_publish("", f"{TOPIC}-{n}", b"p%d-%d" % (n, i))
    connection.close()


class Member:
    """One group member through some client. ``pump`` lets the client do
    its group work and fetch for a moment; ``first_read`` is the first
    offset it read on each partition since that partition became its own."""

    def __init__(self) -> None:
        self.first_read: dict[int, int] = {}
        self._held: set[int] = set()
        #: What it held when the test last looked (see ``resumed``).
        self.marked: set[int] = set()

    def pump(self) -> None:
        read = self._poll()
        held = self.assigned()
        for partition in held - self._held:
            self.first_read.pop(partition, None)
        self._held = held
        for partition, offset in read:
            if partition in held:
                self.first_read.setdefault(partition, offset)

    def _poll(self) -> list[tuple[int, int]]:
        """(partition, offset) of the records a poll returned."""
        raise NotImplementedError

    def assigned(self) -> set[int]:
        raise NotImplementedError

    def commit(self, offsets: dict[int, int]) -> None:
        raise NotImplementedError

    def committed(self) -> dict[int, int | None]:
        raise NotImplementedError

    def close(self) -> None:
        """Leave the group."""
        raise NotImplementedError


class KafkaPythonMember(Member):
    def __init__(self, bootstrap: str, group: str, name: str) -> None:
        super().__init__()
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, client_id=name,
                                      enable_auto_commit=False, session_timeout_ms=SESSION_MS,
                                      heartbeat_interval_ms=HEARTBEAT_MS, auto_offset_reset="earliest")
        # The leader joins again when the metadata it assigned with (its
        # snapshot of the subscribed topics' partitions, taken at each
        # Metadata response) differs from later metadata: subscribed first,
        # then the topic's metadata fetched, the snapshot has its partitions
        # before the first join (fetched before subscribing, it is empty
        # until the next Metadata response, after the first assignment).
        self.consumer.subscribe([TOPIC])
        assert self.consumer.partitions_for_topic(TOPIC) == ALL

    def _poll(self) -> list[tuple[int, int]]:
        batches = self.consumer.poll(timeout_ms=50)
        return [(tp.partition, record.offset) for tp, records in batches.items() for record in records]

    def assigned(self) -> set[int]:
        return {tp.partition for tp in self.consumer.assignment()}

    def commit(self, offsets: dict[int, int]) -> None:
        self.consumer.commit({KafkaTopicPartition(TOPIC, p): OffsetAndMetadata(o, "", -1) for p, o in offsets.items()})

    def committed(self) -> dict[int, int | None]:
        return {p: self.consumer.committed(KafkaTopicPartition(TOPIC, p)) for p in ALL}

    def close(self) -> None:
        self.consumer.close(autocommit=False)


class ConfluentMember(Member):
    def __init__(self, bootstrap: str, group: str, name: str, assignor: str = "range,roundrobin") -> None:
        super().__init__()
        self.consumer = ConfluentConsumer({
            "bootstrap.servers": bootstrap, "group.id": group, "client.id": name, "enable.auto.commit": False,
            "session.timeout.ms": SESSION_MS, "heartbeat.interval.ms": 500, "auto.offset.reset": "earliest",
            "partition.assignment.strategy": assignor, "log_level": 0})
        self.consumer.subscribe([TOPIC])

    def _poll(self) -> list[tuple[int, int]]:
        message = self.consumer.poll(0.05)
        if message is None or message.error() is not None:
            return []
        return [(message.partition(), message.offset())]

    def assigned(self) -> set[int]:
        return {tp.partition for tp in self.consumer.assignment()}

    def commit(self, offsets: dict[int, int]) -> None:
        self.consumer.commit(offsets=[ConfluentTopicPartition(TOPIC, p, o) for p, o in offsets.items()],
                             asynchronous=False)

    def committed(self) -> dict[int, int | None]:
        found = self.consumer.committed([ConfluentTopicPartition(TOPIC, p) for p in ALL], timeout=10)
        return {tp.partition: tp.offset if tp.offset >= 0 else None for tp in found}

    def close(self) -> None:
        self.consumer.close()


class AiokafkaMember(Member):
    """aiokafka's consumer on an asyncio loop the test turns by hand."""

    def __init__(self, bootstrap: str, group: str, name: str, loop: asyncio.AbstractEventLoop,
                 assignors: tuple[type, ...] = (RangePartitionAssignor,)) -> None:
        super().__init__()
        self.loop = loop

        async def start() -> AIOKafkaConsumer:
            consumer = AIOKafkaConsumer(TOPIC, bootstrap_servers=bootstrap, group_id=group, client_id=name,
                                        enable_auto_commit=False, session_timeout_ms=SESSION_MS,
                                        heartbeat_interval_ms=500, auto_offset_reset="earliest",
                                        partition_assignment_strategy=assignors)
            await consumer.start()
            return consumer
        self.consumer = loop.run_until_complete(start())

    def _poll(self) -> list[tuple[int, int]]:
        batches = self.loop.run_until_complete(self.consumer.getmany(timeout_ms=50))
        return [(tp.partition, record.offset) for tp, records in batches.items() for record in records]

    def assigned(self) -> set[int]:
        return {tp.partition for tp in self.consumer.assignment()}

    def commit(self, offsets: dict[int, int]) -> None:
        self.loop.run_until_complete(self.consumer.commit({AioTopicPartition(TOPIC, p): o for p, o in offsets.items()}))

    def committed(self) -> dict[int, int | None]:
        return {p: self.loop.run_until_complete(self.consumer.committed(AioTopicPartition(TOPIC, p))) for p in ALL}

    def close(self) -> None:
        self.loop.run_until_complete(self.consumer.stop())


#: Seconds a group may take to settle: a few rebalances, each within a
#: heartbeat interval or two.
PATIENCE = 20.0


def settle(members: list[Member], done: Callable[[], bool], timeout: float = PATIENCE) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, [m.assigned() for m in members]
        for member in members:
            member.pump()


def shared(members: list[Member]) -> bool:
    """Every partition assigned to exactly one member, every member busy."""
    assigned = [m.assigned() for m in members]
    return all(assigned) and sorted(p for a in assigned for p in a) == sorted(ALL)


def resumed(members: list[Member], committed: dict[int, int]) -> None:
    """Each member reads each partition it got since the last look from the
    group's committed offset on it (from the first offset where none is)."""
    def gained(member: Member) -> set[int]:
        return member.assigned() - member.marked
    settle(members, lambda: all(gained(m) <= set(m.first_read) for m in members))
    for member in members:
        assert {p: member.first_read[p] for p in gained(member)} == {p: committed.get(p, 0) for p in gained(member)}
        member.marked = member.assigned()


def stream_offsets(server: KafkaServerThread, group: str) -> dict[int, int | None]:
    """The group's offset on each partition's stream, as AMQP sees it."""
    assert server.server is not None
    queues = server.server.core.vhosts["/"].queues
    offsets: dict[int, int | None] = {}
    for n in ALL:
        stream = queues[f"{TOPIC}-{n}"]
        assert isinstance(stream, Stream)
        offset = stream.group_offsets.get(group)
        offsets[n] = None if offset is None else offset.committed
    return offsets


def amqp_first_offset(server: KafkaServerThread, stream: str, group: str) -> int:
    """The first offset an x-stream-group consumer of ``group`` gets (left
    unacked: pika would reject anything it still held at the cancel, which
    a stream refuses)."""
    connection = server.connect()
    channel = connection.channel()
    channel.basic_qos(prefetch_count=1)
    for method, properties, _ in channel.consume(stream, arguments={"x-stream-group": group}, inactivity_timeout=10):
        assert method is not None, "no delivery"
        offset = properties.headers["x-stream-offset"]
        break
    channel.cancel()
    connection.close()
    return int(offset)


def generation(server: GroupServer, group: str) -> int:
    assert server.server is not None
    coordinator = server.server.core.vhosts["/"].coordinator
    assert coordinator is not None
    return coordinator.groups[group].generation


def three_members_come_and_go(server: GroupServer, make: Callable[[str], Member], group: str,
                              generations: int | None = 6) -> None:
    """Members join one by one and leave one by one: a generation each
    (the last leave's is the empty group's), unless ``generations`` is None."""
    first = make("first")
    settle([first], lambda: first.assigned() == ALL)
    resumed([first], {})  # nothing committed yet: auto.offset.reset=earliest
    committed = {0: 3, 1: 4, 2: 5}
    first.commit(committed)
    second = make("second")
    settle([first, second], lambda: shared([first, second]))
    resumed([first, second], committed)
    third = make("third")
    members = [first, second, third]
    settle(members, lambda: shared(members) and all(len(m.assigned()) == 1 for m in members))
    resumed(members, committed)
    assert stream_offsets(server, group) == committed

    owner = next(m for m in members if 1 in m.assigned())
    committed[1] = 8
    owner.commit({1: 8})
    first.close()
    members.remove(first)
    settle(members, lambda: shared(members))
    resumed(members, committed)
    assert members[0].committed() == committed
    members[0].close()
    last = members[1]
    settle([last], lambda: last.assigned() == ALL)
    resumed([last], committed)  # whoever committed, the last member resumes there
    last.close()
    # Over AMQP the same group starts at the same offsets.
    assert amqp_first_offset(server, f"{TOPIC}-1", group) == 8
    assert amqp_first_offset(server, f"{TOPIC}-2", group) == 5
    if generations is not None:
        assert generation(server, group) == generations


@pytest.fixture
def kafka_python_keeps_finished_joins(monkeypatch: pytest.MonkeyPatch) -> None:
    """Works around a kafka-python 3.0 bug (3.0.12 and its master of
    2026-08): ``join_group_async`` starts a new JoinGroup whenever its last
    join task is done, also when that task succeeded after the caller's
    ``poll(timeout_ms=...)`` had given up waiting for it. The finished
    join is thrown away and the member joins again; the leader's JoinGroup
    in a stable group starts a rebalance, in Kafka as here
    (GroupCoordinator: "force a rebalance if the leader sends JoinGroup"),
    so any rebalance longer than a poll timeout is followed by more.
    Here a finished join's result is taken instead of joining again."""
    join_group = BaseCoordinator.join_group_async
    join_and_sync = BaseCoordinator._do_join_and_sync_async

    async def join_group_async(self: BaseCoordinator, timeout_ms: int | None = None) -> bool:
        task = self._join_task
        if task is not None and task.succeeded() and self.need_rejoin():
            self._unclaimed_join = task.value
        return bool(await join_group(self, timeout_ms))

    async def do_join_and_sync_async(self: BaseCoordinator) -> bytes:
        unclaimed, self._unclaimed_join = getattr(self, "_unclaimed_join", None), None
        if unclaimed is not None:
            return bytes(unclaimed)
        return bytes(await join_and_sync(self))

    monkeypatch.setattr(BaseCoordinator, "join_group_async", join_group_async)
    monkeypatch.setattr(BaseCoordinator, "_do_join_and_sync_async", do_join_and_sync_async)


@pytest.mark.usefixtures("kafka_python_keeps_finished_joins")
def test_kafka_python_group_of_three(server: GroupServer) -> None:
    three_members_come_and_go(server, lambda name: KafkaPythonMember(server.bootstrap, "kp", name), "kp")


@pytest.mark.parametrize("assignor", ["range,roundrobin", "roundrobin", "cooperative-sticky"])
def test_confluent_group_of_three(server: GroupServer, assignor: str) -> None:
    """librdkafka's assignors, its incremental cooperative one included:
    the broker relays what the leader assigns, two rounds or one."""
    # Cooperative rebalancing takes a second round whenever partitions move.
    three_members_come_and_go(server, lambda name: ConfluentMember(server.bootstrap, "ck", name, assignor), "ck",
                              None if assignor == "cooperative-sticky" else 6)


@pytest.mark.parametrize("assignor", [RangePartitionAssignor, StickyPartitionAssignor])
def test_aiokafka_group_of_three(server: GroupServer, assignor: type) -> None:
    loop = asyncio.new_event_loop()
    try:
        three_members_come_and_go(
            server, lambda name: AiokafkaMember(server.bootstrap, "ak", name, loop, (assignor,)), "ak")
    finally:
        loop.close()


#: A member in a process of its own, killed by the test: it says when it
#: has partitions, then heartbeats (kafka-python's heartbeat thread) until killed.
_CRASHING_MEMBER = """
import sys, time
from kafka import KafkaConsumer
consumer = KafkaConsumer(bootstrap_servers=sys.argv[1], group_id="crash", client_id="doomed",
                         enable_auto_commit=False, session_timeout_ms=%d, heartbeat_interval_ms=500)
consumer.subscribe([sys.argv[2]])
while True:
    consumer.poll(timeout_ms=100)
    if consumer.assignment():
        print(sorted(tp.partition for tp in consumer.assignment()), flush=True)
""" % SESSION_MS


def test_a_killed_member_loses_its_partitions_after_its_session(server: GroupServer) -> None:
    """A member whose process dies (kill -9: no LeaveGroup) is dropped once
    its session times out, and its partitions go to the others."""
    doomed = subprocess.Popen([sys.executable, "-c", _CRASHING_MEMBER, server.bootstrap, TOPIC],
                              stdout=subprocess.PIPE, text=True)
    try:
        members: list[Member] = [ConfluentMember(server.bootstrap, "crash", f"m{i}") for i in range(2)]
        settle(members, lambda: all(len(m.assigned()) == 1 for m in members) and len(
            members[0].assigned() | members[1].assigned()) == 2)
        assert doomed.stdout is not None and doomed.stdout.readline().strip() != ""
    finally:
        doomed.kill()
        doomed.wait()
    killed = time.monotonic()
    settle(members, lambda: shared(members), timeout=4 * SESSION_MS / 1000)
    assert time.monotonic() - killed >= SESSION_MS / 1000 * 0.8  # not before its session ran out
    for member in members:
        member.close()


def test_one_group_switches_protocol_and_back(server: GroupServer) -> None:
    """Kafka commits, AMQP resumes there and acks on, Kafka resumes there;
    the management API and Prometheus show the one group throughout."""
    kafka = ConfluentMember(server.bootstrap, "switch", "kafka-1")
    settle([kafka], lambda: kafka.assigned() == ALL)
    kafka.commit({0: 2})
    kafka.close()

    with httpx.Client(base_url=f"http://127.0.0.1:{server.management_port}", auth=("guest", "guest")) as api:
        listed = {(g["stream"], g["group"]): g for g in api.get("/api/stream-groups").json()}
        assert (listed[f"{TOPIC}-0", "switch"]["committed_offset"], listed[f"{TOPIC}-0", "switch"]["lag"]) == (2, 8)
        out = io.StringIO()
        assert ctl.main(["--url", f"http://guest:guest@127.0.0.1:{server.management_port}", "list", "groups"],
                        out=out) == 0
        assert ["/", f"{TOPIC}-0", "switch", "2", "8"] in [line.split() for line in out.getvalue().splitlines()]

        connection = server.connect()
        channel = connection.channel()
        channel.basic_qos(prefetch_count=5)
        got = []
        for method, properties, _ in channel.consume(f"{TOPIC}-0", arguments={"x-stream-group": "switch"},
                                                     inactivity_timeout=10):
            assert method is not None
            got.append(properties.headers["x-stream-offset"])
            channel.basic_ack(method.delivery_tag)
            if len(got) == PER_PARTITION - 2:
                break  # the end of the stream: nothing left in pika's hands
        assert got == list(range(2, PER_PARTITION))  # AMQP resumes where Kafka committed
        channel.queue_declare(f"{TOPIC}-0", passive=True)  # a round trip: the acks are in
        listed = {(g["stream"], g["group"]): g for g in api.get("/api/stream-groups").json()}
        assert listed[f"{TOPIC}-0", "switch"]["committed_offset"] == PER_PARTITION
        assert listed[f"{TOPIC}-0", "switch"]["active_consumer"] is not None
        channel.cancel()
        channel.confirm_delivery()
        for n in range(3):
            channel.basic_publish("", f"{TOPIC}-0", b"later-%d" % n)
        connection.close()

    metrics = httpx.get(f"http://127.0.0.1:{server.prometheus_port}/metrics", timeout=10).text
    assert f'amqlite_stream_group_lag{{group="switch",stream="{TOPIC}-0",vhost="/"}} 3.0' in metrics
    back = AiokafkaMember(server.bootstrap, "switch", "kafka-2", asyncio.new_event_loop())
    try:
        settle([back], lambda: back.assigned() == ALL)
        assert back.committed()[0] == PER_PARTITION  # Kafka resumes where AMQP acked
        resumed([back], {0: PER_PARTITION, 1: 0, 2: 0})
        assert back.first_read[0] == PER_PARTITION  # the first record published after AMQP's acks
    finally:
        back.close()
        back.loop.close()


def test_a_group_across_a_broker_kill_9(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The broker is killed (kill -9) under a stable group whose members
    have read past what they committed: after the restart they find
    themselves unknown (membership is not kept), join again, and read
    again from the committed offsets, on disk since the commit's answer,
    and the commit's metadata strings are still the offsets'."""
    # As the server fixture's: no 3 s wait for more members, at the first join nor after the restart.
    monkeypatch.setenv("AMQLITE_KAFKA_GROUP_INITIAL_REBALANCE_DELAY", "0")
    broker = BrokerProcess(tmp_path / "data", tmp_path)
    broker.start()
    members: list[ConfluentMember] = []
    try:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap, "log_level": 0})
        admin.create_topics([NewTopic(TOPIC, PARTITIONS)])[TOPIC].result(10)
        producer = ConfluentProducer({"bootstrap.servers": broker.bootstrap, "acks": "all", "log_level": 0})
        for n in range(PARTITIONS):
            for i in range(PER_PARTITION):
                producer.produce(TOPIC, b"p%d-%d" % (n, i), partition=n)
        assert producer.flush(10) == 0
        members = [ConfluentMember(broker.bootstrap, "survivors", f"m{i}") for i in range(2)]

        def positions() -> dict[int, int]:
            found = {}
            for member in members:
                held = [ConfluentTopicPartition(TOPIC, p) for p in member.assigned()]
                found.update({tp.partition: tp.offset for tp in member.consumer.position(held)})
            return found
        settle(members, lambda: shared(members) and positions() == {p: PER_PARTITION for p in ALL})
        committed = {0: 3, 1: 4, 2: 5}
        members[0].consumer.commit(offsets=[ConfluentTopicPartition(TOPIC, p, o, metadata=f"batch {p}")
                                            for p, o in committed.items()], asynchronous=False)
        broker.kill()
        broker.start()
        for member in members:
            member.first_read.clear()
        # They had read to the end: only starting over at the committed
        # offsets gives them records again.
        settle(members, lambda: shared(members) and all(m.assigned() <= set(m.first_read) for m in members))
        assert {p: o for m in members for p, o in m.first_read.items()} == committed
        assert members[1].committed() == committed
        found = members[1].consumer.committed([ConfluentTopicPartition(TOPIC, p) for p in ALL], timeout=10)
        assert {tp.partition: tp.metadata for tp in found} == {p: f"batch {p}" for p in ALL}
    finally:
        for member in members:
            member.close()
        broker.kill()
