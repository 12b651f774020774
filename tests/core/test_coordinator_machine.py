"""The group coordinator under random members that join, sync, heartbeat,
leave, crash and come back while time passes (hypothesis state machine).

Each client follows Kafka's consumer protocol as a client does; the
invariants are the coordinator's promises: every request is answered
exactly once (a parked JoinGroup or SyncGroup too, once time has passed),
generations only grow, a group's state agrees with its members, and a
member's assignment is the one its generation's leader sent for it (a
static member that restarts into a stable group takes over its old
membership, assignment included, under a new member id, as in Kafka).
"""

from __future__ import annotations

from typing import Any

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from amqlite.core.broker import Broker
from amqlite.core.coordinator import (
    MEMBER_ID_REQUIRED, NONE, REBALANCE_IN_PROGRESS, Coordinator, JoinResult, Settings, State, SyncResult,
)

CLIENTS = 4
PROTOCOLS = [[("range", b"r"), ("roundrobin", b"rr")], [("roundrobin", b"rr2"), ("range", b"r2")], [("range", b"r3")]]


class Client:
    def __init__(self, index: int) -> None:
        self.index = index
        self.instance = f"static-{index}" if index == CLIENTS - 1 else None
        self.member_id = ""
        self.generation = -1
        self.leader = False
        self.members: list[str] = []
        #: Requests sent and not yet answered (JoinGroup or SyncGroup).
        self.waiting: list[str] = []
        self.assignment: bytes | None = None
        self.protocols = 0


class CoordinatorMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.broker = Broker()
        self.coordinator = Coordinator(self.broker.vhosts["/"], Settings(initial_rebalance_delay=1.0))
        self.now = 0.0
        self.clients = [Client(i) for i in range(CLIENTS)]
        self.generation = 0
        #: (generation, member id) -> the assignment the leader sent.
        self.sent: dict[tuple[int, str], bytes] = {}
        self.answers = 0
        self.requests = 0
        #: group.instance.id -> the member id it last joined as.
        self.static_ids: dict[str, str] = {}

    # -- replies ----------------------------------------------------------

    def _replier(self, client: Client, kind: str) -> Any:
        self.requests += 1
        client.waiting.append(kind)
        answered = []

        def reply(result: JoinResult | SyncResult) -> None:
            assert not answered, "answered twice"
            answered.append(result)
            self.answers += 1
            client.waiting.remove(kind)
            if isinstance(result, JoinResult):
                self._joined(client, result)
            else:
                self._synced(client, result)
        return reply

    def _joined(self, client: Client, result: JoinResult) -> None:
        if result.error == NONE:
            client.member_id = result.member_id
            client.generation = result.generation
            client.leader = result.leader == result.member_id
            client.members = [m.member_id for m in result.members]
            client.assignment = None
            if client.leader:
                assert client.member_id in client.members
            if client.instance is not None:
                old_id = self.static_ids.get(client.instance, client.member_id)
                if (client.generation, old_id) in self.sent:
                    # Kafka's updateStaticMemberAndRebalance in a stable
                    # group: the same generation, the old member's assignment.
                    self.sent[(client.generation, client.member_id)] = self.sent[(client.generation, old_id)]
                self.static_ids[client.instance] = client.member_id
        elif result.error == MEMBER_ID_REQUIRED:
            client.member_id = result.member_id
        else:
            self._reset(client, result.error)

    def _synced(self, client: Client, result: SyncResult) -> None:
        if result.error == NONE:
            assert result.assignment == self.sent.get((client.generation, client.member_id), b"")
            client.assignment = result.assignment
        else:
            self._reset(client, result.error)

    def _reset(self, client: Client, error: int) -> None:
        """As Kafka clients do: join again, with the member id unless the
        coordinator no longer knows it."""
        client.generation = -1
        client.assignment = None
        if error != REBALANCE_IN_PROGRESS and client.instance is None:
            client.member_id = ""

    # -- rules --------------------------------------------------------------

    clients_ = st.integers(0, CLIENTS - 1)

    @rule(i=clients_)
    def act(self, i: int) -> None:
        """What a live client does next: join until it is a member of a
        generation, then sync, then heartbeat (and join again when told)."""
        client = self.clients[i]
        if client.waiting:
            return
        if client.generation < 0:
            self._join(client)
        elif client.assignment is None:
            self._sync(client)
        else:
            error = self.coordinator.heartbeat("g", client.member_id, client.instance, client.generation, self.now)
            if error != NONE:
                self._reset(client, error)

    @rule(i=clients_, protocols=st.integers(0, len(PROTOCOLS) - 1))
    def change_subscription(self, i: int, protocols: int) -> None:
        """A client joins again with other metadata (a new subscription)."""
        client = self.clients[i]
        client.protocols = protocols
        if not client.waiting:
            self._join(client)

    def _join(self, client: Client) -> None:
        self.coordinator.join("g", client.member_id, client.instance, protocol_type="consumer",
                              protocols=PROTOCOLS[client.protocols], session_timeout=10.0, rebalance_timeout=15.0,
                              client_id=f"c{client.index}", client_host="h", require_known_member_id=True,
                              now=self.now, reply=self._replier(client, "join"))

    def _sync(self, client: Client) -> None:
        assignments = {}
        if client.leader:
            assignments = {m: f"{client.generation}:{m}".encode() for m in client.members}
            group = self.coordinator.groups["g"]
            if group.state is State.COMPLETING_REBALANCE and group.generation == client.generation:
                self.sent.update({(client.generation, m): a for m, a in assignments.items()})
                for member in group.members:
                    self.sent.setdefault((client.generation, member), b"")
        self.coordinator.sync("g", client.member_id, client.instance, client.generation, assignments,
                              now=self.now, reply=self._replier(client, "sync"))

    @rule(i=clients_)
    def leave(self, i: int) -> None:
        client = self.clients[i]
        if client.member_id and not client.waiting:
            self.coordinator.leave("g", [(client.member_id, client.instance)], self.now)
            client.member_id, client.generation = "", -1

    @rule(i=clients_)
    def crash(self, i: int) -> None:
        """The client process dies: its parked requests are answered to
        nobody who listens, and it starts over as a new process."""
        old = self.clients[i]
        self.clients[i] = Client(i)
        self.clients[i].waiting = old.waiting  # answers to the dead process still count

    @rule(seconds=st.sampled_from([0.0, 0.5, 1.0, 3.0, 9.9, 10.0, 16.0]))
    def advance(self, seconds: float) -> None:
        self.now += seconds
        self._tick()

    def _tick(self) -> None:
        while (deadline := self.broker.next_deadline()) is not None and deadline <= self.now:
            self.broker.tick(self.now)
        deadline = self.broker.next_deadline()
        assert deadline is None or deadline > self.now

    # -- invariants ---------------------------------------------------------

    @invariant()
    def group_agrees_with_its_state(self) -> None:
        group = self.coordinator.groups.get("g")
        if group is None:
            return
        assert group.generation >= self.generation
        self.generation = group.generation
        members = group.members.values()
        if group.state is State.EMPTY:
            assert not group.members
        if group.members:
            assert group.leader in group.members
        else:
            assert group.leader is None  # (PreparingRebalance may wait on pending ids)
        if group.state in (State.COMPLETING_REBALANCE, State.STABLE):
            assert all(m.join_reply is None for m in members)
            assert group.protocol is not None
            assert all(group.protocol in {name for name, _ in m.protocols} for m in members)
        if group.state in (State.PREPARING_REBALANCE, State.STABLE, State.EMPTY):
            assert all(m.sync_reply is None for m in members)
        assert set(group.static.values()) <= set(group.members)

    def teardown(self) -> None:
        # Long enough for every session and rebalance to time out.
        for _ in range(4):
            self.now += 400.0
            self._tick()
        assert all(not c.waiting for c in self.clients)
        assert self.answers == self.requests
        group = self.coordinator.groups.get("g")
        assert group is None or group.state is State.EMPTY


TestCoordinator = CoordinatorMachine.TestCase
TestCoordinator.settings = settings(max_examples=150, stateful_step_count=50, deadline=None)


def test_static_member_restarts_into_stable_group() -> None:
    """Hypothesis's find: the static member crashes and joins again with no
    member id while the group is stable; its SyncGroup gets the assignment
    the leader sent for its old member id (the model had expected none)."""
    machine = CoordinatorMachine()
    steps = [(machine.act, {"i": 0}), (machine.act, {"i": 0}), (machine.advance, {"seconds": 1.0}),
             (machine.change_subscription, {"i": 3, "protocols": 0}), (machine.act, {"i": 0}),
             (machine.act, {"i": 0}), (machine.act, {"i": 0}), (machine.crash, {"i": 3}),
             (machine.change_subscription, {"i": 3, "protocols": 0}), (machine.act, {"i": 3})]
    for step, arguments in steps:
        step(**arguments)
        machine.group_agrees_with_its_state()
    static = machine.clients[3]
    group = machine.coordinator.groups["g"]
    assert (static.member_id, static.generation) == ("c3-3", 2)  # a new id, no rebalance...
    assert static.assignment == b"2:c3-2"  # ...and the old id's assignment
    assert (group.state, group.generation, list(group.members)) == (State.STABLE, 2, ["c0-1", "c3-3"])
    machine.teardown()
