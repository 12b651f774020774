"""Kafka's group coordinator (core/coordinator.py), driven as Kafka's
GroupCoordinatorTest drives it: requests in, replies and timers out."""

from __future__ import annotations

import struct

import pytest
import trio

from amqlite.core.broker import Broker
from amqlite.core.coordinator import (
    FENCED_INSTANCE_ID, GROUP_MAX_SIZE_REACHED, GROUP_SUBSCRIBED_TO_TOPIC, ILLEGAL_GENERATION,
    INCONSISTENT_GROUP_PROTOCOL, INVALID_GROUP_ID, INVALID_SESSION_TIMEOUT, MEMBER_ID_REQUIRED, NON_EMPTY_GROUP,
    NONE, REBALANCE_IN_PROGRESS, UNKNOWN_MEMBER_ID, Coordinator, JoinResult, Settings, SyncResult,
    subscription_topics,
)
from amqlite.core.errors import ResourceLocked

RANGE = [("range", b"r-meta")]


class Replies:
    """Collects what the coordinator answers, once per request."""

    def __init__(self) -> None:
        self.results: list[JoinResult | SyncResult] = []

    def __call__(self, result: JoinResult | SyncResult) -> None:
        self.results.append(result)

    @property
    def one(self) -> JoinResult | SyncResult:
        assert len(self.results) == 1, self.results
        return self.results[0]


@pytest.fixture
def broker() -> Broker:
    return Broker()


def make(broker: Broker, **settings: object) -> Coordinator:
    coordinator = Coordinator(broker.vhosts["/"], Settings(**{"initial_rebalance_delay": 0.0, **settings}))
    broker.vhosts["/"].coordinator = coordinator
    return coordinator


def join(c: Coordinator, member_id: str = "", *, now: float, group: str = "g", instance: str | None = None,
         protocols: list[tuple[str, bytes]] = RANGE, protocol_type: str = "consumer", session: float = 10.0,
         rebalance: float = 30.0, require_known: bool = False) -> Replies:
    replies = Replies()
    c.join(group, member_id, instance, protocol_type=protocol_type, protocols=protocols, session_timeout=session,
           rebalance_timeout=rebalance, client_id="client", client_host="/127.0.0.1",
           require_known_member_id=require_known, now=now, reply=replies)
    return replies


def sync(c: Coordinator, member_id: str, generation: int, assignments: dict[str, bytes] | None = None, *,
         now: float, group: str = "g") -> Replies:
    replies = Replies()
    c.sync(group, member_id, None, generation, assignments or {}, now=now, reply=replies)
    return replies


def tick(broker: Broker, now: float) -> None:
    """What the broker's timer task does at ``now``."""
    while (deadline := broker.next_deadline()) is not None and deadline <= now:
        broker.tick(now)


def stable_pair(broker: Broker, c: Coordinator) -> tuple[str, str]:
    """Two members, a and b, in generation 1, Stable; a leads."""
    a = join(c, now=0)
    b = join(c, now=0)
    tick(broker, 0)
    ja, jb = a.one, b.one
    assert isinstance(ja, JoinResult) and isinstance(jb, JoinResult)
    sync(c, ja.member_id, 1, {ja.member_id: b"A", jb.member_id: b"B"}, now=0)
    sync(c, jb.member_id, 1, now=0)
    assert c.groups["g"].state.value == "Stable"
    return ja.member_id, jb.member_id


def test_two_step_join_then_the_leader_gets_everyone(broker: Broker) -> None:
    c = make(broker, initial_rebalance_delay=3.0)
    first = join(c, now=0, require_known=True)
    result = first.one
    assert isinstance(result, JoinResult)
    assert result.error == MEMBER_ID_REQUIRED and result.member_id.startswith("client-")
    member_id = result.member_id
    assert c.next_deadline() == 10.0  # the pending id expires with the session timeout

    a = join(c, member_id, now=1, require_known=True)
    b_first = join(c, now=1, require_known=True).one
    b = join(c, b_first.member_id, now=2, require_known=True)
    assert a.results == [] and b.results == []
    assert c.groups["g"].state.value == "PreparingRebalance"
    tick(broker, 3.9)
    assert a.results == []
    # A member joined during the initial delay: the delay runs again.
    tick(broker, 4.0)
    assert a.results == []
    tick(broker, 7.0)
    leader, follower = a.one, b.one
    assert isinstance(leader, JoinResult) and isinstance(follower, JoinResult)
    assert (leader.error, leader.generation, leader.protocol, leader.leader) == (NONE, 1, "range", member_id)
    assert [m.member_id for m in leader.members] == [member_id, b_first.member_id]
    assert [m.metadata for m in leader.members] == [b"r-meta", b"r-meta"]
    assert follower.members == () and follower.leader == member_id
    assert c.groups["g"].state.value == "CompletingRebalance"


def test_an_unjoined_pending_id_expires(broker: Broker) -> None:
    c = make(broker)
    pending = join(c, now=0, require_known=True).one.member_id
    tick(broker, 10.0)
    assert c.groups["g"].pending == {}
    assert join(c, pending, now=11, require_known=True).one.error == UNKNOWN_MEMBER_ID


def test_the_protocol_most_members_prefer_among_those_all_support(broker: Broker) -> None:
    c = make(broker)
    rr, rng, sticky = ("roundrobin", b"rr"), ("range", b"rg"), ("sticky", b"st")
    replies = [join(c, now=0, protocols=[sticky, rr, rng]), join(c, now=0, protocols=[rr, rng]),
               join(c, now=0, protocols=[rng, rr])]
    tick(broker, 0)
    # sticky is not supported by all; roundrobin gets two votes.
    assert {r.one.protocol for r in replies} == {"roundrobin"}  # type: ignore[union-attr]
    leader = replies[0].one
    assert isinstance(leader, JoinResult) and [m.metadata for m in leader.members] == [b"rr", b"rr", b"rr"]
    # A member that supports none of the group's protocols is refused.
    assert join(c, now=1, protocols=[sticky]).one.error == INCONSISTENT_GROUP_PROTOCOL
    assert join(c, now=1, protocols=[rr], protocol_type="connect").one.error == INCONSISTENT_GROUP_PROTOCOL


def test_sync_waits_for_the_leader_and_hands_out_each_assignment(broker: Broker) -> None:
    c = make(broker)
    a, b = join(c, now=0), join(c, now=0)
    tick(broker, 0)
    a_id, b_id = a.one.member_id, b.one.member_id
    follower = sync(c, b_id, 1, now=1)
    assert follower.results == []
    # Heartbeats between JoinGroup and SyncGroup are plain heartbeats.
    assert c.heartbeat("g", b_id, None, 1, now=1) == NONE
    leader = sync(c, a_id, 1, {a_id: b"for-a", b_id: b"for-b", "stranger": b"x"}, now=2)
    assert leader.one == SyncResult(NONE, b"for-a", "consumer", "range")
    assert follower.one == SyncResult(NONE, b"for-b", "consumer", "range")
    # Stable: SyncGroup again answers the same assignment at once.
    assert sync(c, b_id, 1, now=3).one == SyncResult(NONE, b"for-b", "consumer", "range")
    assert sync(c, b_id, 0, now=3).one.error == ILLEGAL_GENERATION
    assert sync(c, "nobody", 1, now=3).one.error == UNKNOWN_MEMBER_ID
    assert sync(c, b_id, 1, now=3, group="other").one.error == UNKNOWN_MEMBER_ID
    summary = c.describe("g")
    assert summary is not None and summary.state == "Stable" and summary.protocol == "range"
    assert [(m.member_id, m.assignment, m.metadata) for m in summary.members] == [
        (a_id, b"for-a", b"r-meta"), (b_id, b"for-b", b"r-meta")]


def test_the_leader_may_leave_members_out_of_the_assignment(broker: Broker) -> None:
    c = make(broker)
    a, b = join(c, now=0), join(c, now=0)
    tick(broker, 0)
    follower = sync(c, b.one.member_id, 1, now=0)
    sync(c, a.one.member_id, 1, {}, now=0)
    assert follower.one == SyncResult(NONE, b"", "consumer", "range")


def test_a_new_member_rebalances_a_stable_group(broker: Broker) -> None:
    c = make(broker)
    a_id, b_id = stable_pair(broker, c)
    newcomer = join(c, now=5)
    assert c.groups["g"].state.value == "PreparingRebalance"
    assert c.heartbeat("g", a_id, None, 1, now=5) == REBALANCE_IN_PROGRESS
    assert sync(c, b_id, 1, now=5).one.error == REBALANCE_IN_PROGRESS
    # Members may still commit what they processed before they join again.
    assert c.validate_commit("g", a_id, None, 1, now=5) == NONE
    a = join(c, a_id, now=6)
    assert newcomer.results == [] and a.results == []
    b = join(c, b_id, now=7)  # everyone is in: no wait for the timeout
    results = [newcomer.one, a.one, b.one]
    assert {r.generation for r in results} == {2}  # type: ignore[union-attr]
    assert a.one.leader == a_id and len(a.one.members) == 3  # type: ignore[union-attr]
    assert c.validate_commit("g", a_id, None, 2, now=7) == REBALANCE_IN_PROGRESS
    assert c.validate_commit("g", a_id, None, 1, now=7) == ILLEGAL_GENERATION


def test_a_follower_rejoining_a_stable_group_unchanged_gets_the_generation(broker: Broker) -> None:
    c = make(broker)
    a_id, b_id = stable_pair(broker, c)
    again = join(c, b_id, now=1).one
    assert isinstance(again, JoinResult)
    assert (again.error, again.generation, again.leader, again.members) == (NONE, 1, a_id, ())
    assert c.groups["g"].state.value == "Stable"
    # The leader rejoining asks for a rebalance (its topics may have changed).
    join(c, a_id, now=1)
    assert c.groups["g"].state.value == "PreparingRebalance"


def test_a_silent_member_is_removed_after_its_session_timeout(broker: Broker) -> None:
    c = make(broker)
    a_id, b_id = stable_pair(broker, c)
    for now in (3.0, 6.0, 9.0):
        assert c.heartbeat("g", a_id, None, 1, now=now) == NONE
    tick(broker, 9.99)
    assert b_id in c.groups["g"].members
    tick(broker, 10.0)  # b's last sign of life was its SyncGroup at 0
    assert b_id not in c.groups["g"].members
    assert c.heartbeat("g", a_id, None, 1, now=10.5) == REBALANCE_IN_PROGRESS
    assert c.heartbeat("g", b_id, None, 1, now=10.5) == UNKNOWN_MEMBER_ID
    a = join(c, a_id, now=11)
    assert a.one.generation == 2 and a.one.leader == a_id  # type: ignore[union-attr]


def test_members_that_do_not_rejoin_in_time_are_dropped(broker: Broker) -> None:
    c = make(broker)
    a_id, b_id = stable_pair(broker, c)
    join(c, now=1)  # a newcomer starts a rebalance with a 30 s timeout
    a = join(c, a_id, now=2)
    assert c.heartbeat("g", b_id, None, 1, now=9) == REBALANCE_IN_PROGRESS  # alive, but never rejoins
    for now in (18.0, 27.0):
        c.heartbeat("g", b_id, None, 1, now=now)
    tick(broker, 30.99)
    assert a.results == []
    tick(broker, 31.0)
    assert a.one.generation == 2 and len(a.one.members) == 2  # type: ignore[union-attr]
    assert b_id not in c.groups["g"].members


def test_the_leader_leaving_hands_leadership_on(broker: Broker) -> None:
    c = make(broker)
    a_id, b_id = stable_pair(broker, c)
    assert c.leave("g", [(a_id, None), ("ghost", None)], now=1) == [NONE, UNKNOWN_MEMBER_ID]
    b = join(c, b_id, now=2)
    assert b.one.leader == b_id and b.one.generation == 2  # type: ignore[union-attr]
    assert c.leave("g", [(b_id, None)], now=3) == [NONE]
    group = c.groups["g"]
    assert (group.state.value, group.generation, group.leader) == ("Empty", 3, None)
    assert c.leave("nope", [("x", None)], now=3) == [UNKNOWN_MEMBER_ID]


def test_a_leave_during_the_join_phase_completes_it(broker: Broker) -> None:
    c = make(broker)
    a_id, b_id = stable_pair(broker, c)
    a = join(c, a_id, now=1)
    assert a.results == []
    c.leave("g", [(b_id, None)], now=2)
    assert a.one.generation == 2  # type: ignore[union-attr]


def test_a_leader_that_never_syncs_is_dropped_after_the_rebalance_timeout(broker: Broker) -> None:
    c = make(broker)
    a, b = join(c, now=0, session=25.0, rebalance=20.0), join(c, now=0, session=25.0, rebalance=20.0)
    tick(broker, 0)
    b_id = b.one.member_id
    follower = sync(c, b_id, 1, now=1)
    tick(broker, 19.9)
    assert follower.results == []
    tick(broker, 20.0)
    assert follower.one.error == REBALANCE_IN_PROGRESS
    assert a.one.member_id not in c.groups["g"].members
    again = join(c, b_id, now=21)
    assert again.one.generation == 2 and again.one.leader == b_id  # type: ignore[union-attr]


def test_static_member_restart_keeps_the_generation_and_fences_the_old_id(broker: Broker) -> None:
    c = make(broker)
    a = join(c, now=0, instance="host-1")
    b = join(c, now=0, instance="host-2")
    tick(broker, 0)
    a_id, b_id = a.one.member_id, b.one.member_id
    sync(c, a_id, 1, {a_id: b"A", b_id: b"B"}, now=0)
    sync(c, b_id, 1, now=0)
    # host-2 restarts: no member id, the same instance id.
    back = join(c, now=5, instance="host-2", require_known=True, session=100.0).one
    assert isinstance(back, JoinResult)
    assert (back.error, back.generation, back.leader) == (NONE, 1, a_id) and back.member_id != b_id
    assert c.groups["g"].state.value == "Stable"
    assert sync(c, back.member_id, 1, now=5).one == SyncResult(NONE, b"B", "consumer", "range")
    replies = Replies()
    c.sync("g", b_id, "host-2", 1, {}, now=5, reply=replies)
    assert replies.one.error == FENCED_INSTANCE_ID
    assert c.heartbeat("g", b_id, "host-2", 1, now=5) == FENCED_INSTANCE_ID
    assert c.validate_commit("g", b_id, "host-2", 1, now=5) == FENCED_INSTANCE_ID
    # A static member that misses a rebalance stays a member (until its
    # session times out).
    join(c, now=6)
    join(c, a_id, now=6, instance="host-1")
    tick(broker, 36)
    assert back.member_id in c.groups["g"].members
    assert c.leave("g", [("", "host-2")], now=37) == [NONE]
    assert "host-2" not in c.groups["g"].static


def test_join_errors(broker: Broker) -> None:
    c = make(broker, max_size=1)
    assert join(c, now=0, group="").one.error == INVALID_GROUP_ID
    assert join(c, now=0, session=1.0).one.error == INVALID_SESSION_TIMEOUT
    assert join(c, now=0, session=3600.0).one.error == INVALID_SESSION_TIMEOUT
    assert join(c, "made-up", now=0).one.error == UNKNOWN_MEMBER_ID
    join(c, now=0)
    assert join(c, now=0).one.error == GROUP_MAX_SIZE_REACHED


def test_commit_rules(broker: Broker) -> None:
    c = make(broker)
    # No group management (generation -1): taken while nobody is a member.
    assert c.validate_commit("solo", "", None, -1, now=0) == NONE
    assert c.validate_commit("solo", "m", None, 3, now=0) == ILLEGAL_GENERATION
    assert c.validate_commit("", "", None, -1, now=0) == INVALID_GROUP_ID
    a_id, _ = stable_pair(broker, c)
    assert c.validate_commit("g", "", None, -1, now=1) == UNKNOWN_MEMBER_ID
    assert c.validate_commit("g", a_id, None, 1, now=1) == NONE


def test_a_commit_counts_as_a_heartbeat(broker: Broker) -> None:
    c = make(broker)
    a_id, b_id = stable_pair(broker, c)
    c.heartbeat("g", b_id, None, 1, now=9)
    c.validate_commit("g", a_id, None, 1, now=9)
    tick(broker, 15)
    assert set(c.groups["g"].members) == {a_id, b_id}


def test_delete_and_subscriptions(broker: Broker) -> None:
    c = make(broker)
    subscription = struct.pack(">hi", 1, 2) + struct.pack(">h", 3) + b"t-1" + struct.pack(">h", 2) + b"t2" + b"\0" * 8
    assert subscription_topics(subscription) == ["t-1", "t2"]
    assert subscription_topics(b"\0\1\0") == []
    a = join(c, now=0, protocols=[("range", subscription)])
    tick(broker, 0)
    assert c.subscribed_topics("g") == {"t-1", "t2"}
    assert c.delete("g") == NON_EMPTY_GROUP
    c.leave("g", [(a.one.member_id, None)], now=1)
    assert c.delete("g") == NONE and "g" not in c.groups
    assert GROUP_SUBSCRIBED_TO_TOPIC == 86


async def test_one_group_has_members_of_one_protocol_at_a_time(autojump_clock: object) -> None:
    from amqlite.embedded import open_broker
    async with open_broker() as amqp:
        c = make(amqp.core)
        channel = await amqp.channel()
        await channel.queue_declare("s", durable=True, arguments={"x-queue-type": "stream"})
        consumer = await channel.consume("s", prefetch=10, arguments={"x-stream-group": "g"})
        assert join(c, now=amqp.now()).one.error == INCONSISTENT_GROUP_PROTOCOL
        assert c.validate_commit("g", "", None, -1, now=amqp.now()) == UNKNOWN_MEMBER_ID
        assert c.delete("g") == NON_EMPTY_GROUP
        await consumer.cancel()
        kafka = join(c, now=amqp.now())
        await trio.sleep(1)  # the broker's timer task completes the join
        assert kafka.one.error == NONE
        with pytest.raises(ResourceLocked, match="has Kafka members"):
            await channel.consume("s", prefetch=10, arguments={"x-stream-group": "g"})


def test_a_second_join_of_a_waiting_member_answers_the_first(broker: Broker) -> None:
    """Every JoinGroup is answered: the one a second replaces hears to join
    again (a client with two connections, or one that gave up waiting)."""
    c = make(broker)
    a_id, b_id = stable_pair(broker, c)
    first = join(c, a_id, now=1)
    second = join(c, a_id, now=2)
    assert first.one.error == REBALANCE_IN_PROGRESS and second.results == []
    join(c, b_id, now=3)
    assert second.one.generation == 2  # type: ignore[union-attr]
