"""Kafka's group coordinator: the classic group membership protocol
(JoinGroup, SyncGroup, Heartbeat, LeaveGroup), as Kafka's
``GroupCoordinator`` and ``GroupMetadata`` run it.

A group moves through five states::

    Empty --join--> PreparingRebalance --all joined or timeout--> CompletingRebalance
      ^                    ^    |                                   |  leader's SyncGroup
      |                    |    +--no member left--> Empty          v
      |                    +--join, leave, expiry---------------- Stable
    DeleteGroups: Empty --> Dead (gone)

The broker only relays: members send their subscriptions (opaque bytes per
protocol, e.g. range, roundrobin, sticky, cooperative-sticky) in JoinGroup,
the coordinator picks the protocol every member supports that most members
prefer, and hands every member's metadata to the *leader*, which computes
the assignment and sends it in SyncGroup; every member gets its own part.
So any client-side assignor works, incremental cooperative rebalancing
included (the client runs two rebalances, the coordinator sees two).

Requests that must wait (a JoinGroup until the rebalance completes, a
SyncGroup until the leader's arrives) take a ``reply`` callback that is
called once, now or later. Nothing here reads a clock: every call takes
``now`` (seconds), :meth:`Coordinator.next_deadline` says when sessions,
rebalance and sync timeouts next fall due, and the broker's timer index
calls :meth:`Coordinator.on_timer` then.

Membership is not kept across restarts (Kafka writes it to its offsets
topic): after a restart members hear UNKNOWN_MEMBER_ID and join again.
Committed offsets are the streams' group offsets (core/groups.py), so they
are journalled and shared with AMQP's ``x-stream-group`` consumers; a
group's name is one group whichever protocol its members speak, and it
has members of one protocol at a time.
"""

from __future__ import annotations

import enum
import itertools
import struct
from typing import TYPE_CHECKING, Callable, Iterable

import attrs

if TYPE_CHECKING:
    from .vhost import VirtualHost

# Kafka's error codes (org.apache.kafka.common.protocol.Errors) that the
# coordinator answers with.
NONE = 0
COORDINATOR_NOT_AVAILABLE = 15
ILLEGAL_GENERATION = 22
INCONSISTENT_GROUP_PROTOCOL = 23
INVALID_GROUP_ID = 24
UNKNOWN_MEMBER_ID = 25
INVALID_SESSION_TIMEOUT = 26
REBALANCE_IN_PROGRESS = 27
NON_EMPTY_GROUP = 68
GROUP_ID_NOT_FOUND = 69
MEMBER_ID_REQUIRED = 79
GROUP_MAX_SIZE_REACHED = 81
FENCED_INSTANCE_ID = 82
GROUP_SUBSCRIBED_TO_TOPIC = 86

#: Kafka's NewMemberJoinTimeoutMs: a new member's parked JoinGroup is kept
#: this long at most (it cannot heartbeat meanwhile, and a client that gave
#: up and retried would otherwise leave defunct members behind).
NEW_MEMBER_JOIN_TIMEOUT = 300.0


class State(enum.Enum):
    """A group's state, named as DescribeGroups and ListGroups report it."""

    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"


@attrs.frozen
class Settings:
    """The broker's group settings, with Kafka's defaults (seconds)."""

    #: group.min.session.timeout.ms and group.max.session.timeout.ms.
    min_session_timeout: float = 6.0
    max_session_timeout: float = 1800.0
    #: group.initial.rebalance.delay.ms: a new group waits this long for
    #: more members before its first rebalance, so that members started
    #: together cause one rebalance, not one each.
    initial_rebalance_delay: float = 3.0
    #: group.max.size (None: no limit).
    max_size: int | None = None


@attrs.frozen
class JoinedMember:
    """What the leader learns of each member in its JoinGroup response."""

    member_id: str
    instance_id: str | None
    metadata: bytes


@attrs.frozen
class JoinResult:
    error: int
    member_id: str
    generation: int = -1
    protocol_type: str | None = None
    protocol: str | None = None
    leader: str = ""
    #: Every member, for the leader only.
    members: tuple[JoinedMember, ...] = ()


@attrs.frozen
class SyncResult:
    error: int
    assignment: bytes = b""
    protocol_type: str | None = None
    protocol: str | None = None


@attrs.frozen
class MemberSummary:
    """A member as DescribeGroups shows it."""

    member_id: str
    instance_id: str | None
    client_id: str
    client_host: str
    metadata: bytes
    assignment: bytes


@attrs.frozen
class GroupSummary:
    """A group as DescribeGroups shows it."""

    name: str
    state: str
    protocol_type: str
    protocol: str
    members: tuple[MemberSummary, ...]


JoinReply = Callable[[JoinResult], object]
SyncReply = Callable[[SyncResult], object]


@attrs.define(eq=False)
class Member:
    id: str
    instance_id: str | None
    client_id: str
    client_host: str
    session_timeout: float
    rebalance_timeout: float
    protocol_type: str
    #: (name, metadata) in the member's order of preference.
    protocols: list[tuple[str, bytes]]
    last_heartbeat: float
    assignment: bytes = b""
    #: Joined and not yet a member of a generation: a long wait expires it.
    new: bool = True
    join_reply: JoinReply | None = None
    sync_reply: SyncReply | None = None

    def metadata(self, protocol: str | None) -> bytes:
        return next((data for name, data in self.protocols if name == protocol), b"")

    def vote(self, candidates: set[str]) -> str:
        return next(name for name, _ in self.protocols if name in candidates)

    def alive_at(self, now: float) -> bool:
        """Kafka's shouldKeepAlive: a member waiting for its JoinGroup or
        SyncGroup response cannot heartbeat, so only a new member's long
        join wait expires it."""
        if self.join_reply is not None:
            return not self.new or now < self.last_heartbeat + NEW_MEMBER_JOIN_TIMEOUT
        return self.sync_reply is not None or now < self.last_heartbeat + self.session_timeout

    def expires_at(self) -> float | None:
        if self.join_reply is not None:
            return self.last_heartbeat + NEW_MEMBER_JOIN_TIMEOUT if self.new else None
        return None if self.sync_reply is not None else self.last_heartbeat + self.session_timeout


class Group:
    """One group's membership (GroupMetadata)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.state = State.EMPTY
        self.generation = 0
        self.protocol_type: str | None = None
        self.protocol: str | None = None
        self.leader: str | None = None
        #: Members in joining order.
        self.members: dict[str, Member] = {}
        #: Member ids handed out with MEMBER_ID_REQUIRED, not yet joined:
        #: each expires at the deadline given.
        self.pending: dict[str, float] = {}
        #: group.instance.id -> member id, for static members.
        self.static: dict[str, str] = {}
        #: Members of the current generation that have not sent SyncGroup.
        self.pending_sync: set[str] = set()
        #: When the join phase ends anyway (PreparingRebalance).
        self.join_deadline: float | None = None
        #: The initial delay's remaining budget, while it runs (else None),
        #: and whether a member joined during the current delay.
        self.initial_remaining: float | None = None
        self.new_member_added = False
        #: When members that have not sent SyncGroup are dropped.
        self.sync_deadline: float | None = None

    @property
    def rebalance_timeout(self) -> float:
        return max((m.rebalance_timeout for m in self.members.values()), default=0.0)

    def all_joined(self) -> bool:
        return not self.pending and all(m.join_reply is not None for m in self.members.values())

    def supports(self, protocol_type: str, protocols: Iterable[str]) -> bool:
        names = set(protocols)
        if self.state is State.EMPTY:
            return bool(protocol_type) and bool(names)
        return protocol_type == self.protocol_type and bool(names & self.candidates())

    def candidates(self) -> set[str]:
        """The protocols every member supports."""
        sets = [{name for name, _ in m.protocols} for m in self.members.values()]
        return set.intersection(*sets) if sets else set()

    def select_protocol(self) -> str:
        """Each member votes for its most preferred candidate; most votes
        wins (ties: the earlier member's vote)."""
        candidates = self.candidates()
        votes = [m.vote(candidates) for m in self.members.values()]
        return max(dict.fromkeys(votes), key=votes.count)

    def fenced(self, member_id: str, instance_id: str | None) -> bool:
        """A static member's instance id now belongs to another member id."""
        return instance_id is not None and instance_id in self.static and self.static[instance_id] != member_id

    def member_error(self, member_id: str, instance_id: str | None, generation: int) -> int:
        """What a SyncGroup or Heartbeat from this member of this generation
        is refused with (NONE if it is a current member)."""
        if self.fenced(member_id, instance_id):
            return FENCED_INSTANCE_ID
        if member_id not in self.members:
            return UNKNOWN_MEMBER_ID
        return ILLEGAL_GENERATION if generation != self.generation else NONE

    def join_result(self, member: Member) -> JoinResult:
        leader = member.id == self.leader
        return JoinResult(
            NONE, member.id, self.generation, self.protocol_type, self.protocol, self.leader or "",
            tuple(JoinedMember(m.id, m.instance_id, m.metadata(self.protocol)) for m in self.members.values())
            if leader else ())

    def summary(self) -> GroupSummary:
        stable = self.state is State.STABLE
        return GroupSummary(self.name, self.state.value, self.protocol_type or "",
                            self.protocol or "" if stable else "", tuple(
                                MemberSummary(m.id, m.instance_id, m.client_id, m.client_host,
                                              m.metadata(self.protocol) if stable else b"",
                                              m.assignment if stable else b"")
                                for m in self.members.values()))


class Coordinator:
    """Every Kafka group of one vhost (the one Kafka clients use)."""

    def __init__(self, vhost: VirtualHost, settings: Settings = Settings(), *, id_prefix: str = "") -> None:
        self.vhost = vhost
        self.settings = settings
        self.groups: dict[str, Group] = {}
        #: Makes member ids unique across broker runs (the driver passes
        #: something random: the core has no randomness).
        self.id_prefix = id_prefix
        self._ids = itertools.count(1)
        #: When the broker's timer index calls :meth:`on_timer`.
        self.timer_at: float | None = None
        #: The latest ``now`` any call brought: the time of an answer given
        #: later, for work that waited for it.
        self.now = 0.0

    # -- membership -------------------------------------------------------

    def has_members(self, name: str) -> bool:
        group = self.groups.get(name)
        return group is not None and bool(group.members or group.pending)

    def _amqp_members(self, name: str) -> bool:
        return name in self.vhost.groups

    def join(self, name: str, member_id: str, instance_id: str | None, *, protocol_type: str,
             protocols: list[tuple[str, bytes]], session_timeout: float, rebalance_timeout: float,
             client_id: str, client_host: str, require_known_member_id: bool, now: float,
             reply: JoinReply) -> None:
        """JoinGroup; ``reply`` is called once the join completes (or at
        once with an error). A new dynamic member of a v4+ client
        (``require_known_member_id``) first gets MEMBER_ID_REQUIRED and its
        id, and joins again with it: a member whose first response was lost
        then leaves no defunct member behind."""
        try:
            error = self._join(name, member_id, instance_id, protocol_type, protocols, session_timeout,
                               rebalance_timeout, client_id, client_host, require_known_member_id, now, reply)
            if error is not None:
                reply(JoinResult(error, member_id))
        finally:
            self._settle(name, now)

    def _join(self, name: str, member_id: str, instance_id: str | None, protocol_type: str,
              protocols: list[tuple[str, bytes]], session_timeout: float, rebalance_timeout: float,
              client_id: str, client_host: str, require_known_member_id: bool, now: float,
              reply: JoinReply) -> int | None:
        settings = self.settings
        if not name:
            return INVALID_GROUP_ID
        if not settings.min_session_timeout <= session_timeout <= settings.max_session_timeout:
            return INVALID_SESSION_TIMEOUT
        if self._amqp_members(name):
            # Consumers of the group's streams over AMQP (x-stream-group):
            # a group of another protocol type, as Kafka sees it.
            return INCONSISTENT_GROUP_PROTOCOL
        group = self.groups.get(name)
        if group is None:
            if member_id:
                return UNKNOWN_MEMBER_ID
            group = self.groups[name] = Group(name)
        names = [protocol for protocol, _ in protocols]
        if not member_id and settings.max_size is not None and len(group.members) >= settings.max_size:
            return GROUP_MAX_SIZE_REACHED
        if not group.supports(protocol_type, names):
            return INCONSISTENT_GROUP_PROTOCOL
        if not member_id:
            new_id = f"{client_id}-{self.id_prefix}{next(self._ids)}"
            if instance_id is not None and instance_id in group.static:
                self._replace_static(group, group.static[instance_id], new_id, protocols, session_timeout,
                                     rebalance_timeout, now, reply)
                return None
            if require_known_member_id and instance_id is None:
                group.pending[new_id] = now + session_timeout
                reply(JoinResult(MEMBER_ID_REQUIRED, new_id))
                return None
            self._add_member(group, Member(new_id, instance_id, client_id, client_host, session_timeout,
                                           rebalance_timeout, protocol_type, protocols, now), reply, now)
            return None
        if member_id in group.pending:
            del group.pending[member_id]
            self._add_member(group, Member(member_id, instance_id, client_id, client_host, session_timeout,
                                           rebalance_timeout, protocol_type, protocols, now), reply, now)
            return None
        if group.fenced(member_id, instance_id):
            return FENCED_INSTANCE_ID
        member = group.members.get(member_id)
        if member is None or (instance_id is not None and instance_id not in group.static):
            return UNKNOWN_MEMBER_ID
        state = group.state
        member.session_timeout, member.rebalance_timeout = session_timeout, rebalance_timeout
        if state is State.PREPARING_REBALANCE:
            self._update_member(group, member, protocols, reply, now)
        elif state is State.COMPLETING_REBALANCE and member.protocols == protocols:
            # It missed the JoinGroup response: the same again.
            reply(group.join_result(member))
        elif state is State.STABLE and member.id != group.leader and member.protocols == protocols:
            # A follower with nothing new: the current generation, so it syncs.
            reply(attrs.evolve(group.join_result(member), members=()))
        elif state in (State.COMPLETING_REBALANCE, State.STABLE):
            # New metadata, or the leader asking for a rebalance (topics changed).
            self._update_member(group, member, protocols, reply, now)
        else:
            return UNKNOWN_MEMBER_ID
        return None

    def _add_member(self, group: Group, member: Member, reply: JoinReply, now: float) -> None:
        if group.state is State.PREPARING_REBALANCE and group.initial_remaining is not None:
            group.new_member_added = True
        if not group.members:
            group.protocol_type = member.protocol_type
        if group.leader is None:
            group.leader = member.id
        group.members[member.id] = member
        member.join_reply = reply
        if member.instance_id is not None:
            group.static[member.instance_id] = member.id
        self._prepare_rebalance(group, now)

    def _update_member(self, group: Group, member: Member, protocols: list[tuple[str, bytes]],
                       reply: JoinReply, now: float) -> None:
        member.protocols = protocols
        if member.join_reply is not None:
            # A second JoinGroup while the first waits (Kafka would drop the
            # first unanswered): the first hears to join again.
            member.join_reply(JoinResult(REBALANCE_IN_PROGRESS, member.id))
        member.join_reply = reply
        self._prepare_rebalance(group, now)

    def _replace_static(self, group: Group, old_id: str, new_id: str, protocols: list[tuple[str, bytes]],
                        session_timeout: float, rebalance_timeout: float, now: float, reply: JoinReply) -> None:
        """A static member came back with no member id (it restarted): it
        takes over its old membership under a new id, and the old id is
        fenced; in a stable group whose protocol stays, no rebalance."""
        member = group.members.pop(old_id)
        if member.join_reply is not None:
            member.join_reply(JoinResult(FENCED_INSTANCE_ID, old_id))
        if member.sync_reply is not None:
            member.sync_reply(SyncResult(FENCED_INSTANCE_ID))
        member.join_reply = member.sync_reply = None
        member.id = new_id
        member.protocols = protocols
        member.session_timeout, member.rebalance_timeout = session_timeout, rebalance_timeout
        member.last_heartbeat = now
        group.members[new_id] = member
        assert member.instance_id is not None
        group.static[member.instance_id] = new_id
        if old_id in group.pending_sync:
            group.pending_sync.discard(old_id)
            group.pending_sync.add(new_id)
        old_leader = group.leader
        if old_leader == old_id:
            group.leader = new_id
        if group.state is State.STABLE and group.select_protocol() == group.protocol:
            # The old leader id is returned, so that a new leader does not
            # compute an assignment that a stable group would not send out.
            reply(JoinResult(NONE, new_id, group.generation, group.protocol_type, group.protocol, old_leader or ""))
            return
        # Joining, or the leader may already have been sent the old id, or
        # the group's protocol would change: a rebalance.
        member.join_reply = reply
        self._prepare_rebalance(group, now)

    def sync(self, name: str, member_id: str, instance_id: str | None, generation: int,
             assignments: dict[str, bytes], *, protocol_type: str | None = None, protocol: str | None = None,
             now: float, reply: SyncReply) -> None:
        """SyncGroup; the leader's carries every member's assignment."""
        group = self.groups.get(name)
        try:
            error = self._sync(group, member_id, instance_id, generation, assignments, protocol_type, protocol,
                               now, reply)
            if error is not None:
                reply(SyncResult(error))
        finally:
            self._settle(name, now)

    def _sync(self, group: Group | None, member_id: str, instance_id: str | None, generation: int,
              assignments: dict[str, bytes], protocol_type: str | None, protocol: str | None, now: float,
              reply: SyncReply) -> int | None:
        if group is None:
            return UNKNOWN_MEMBER_ID
        if error := group.member_error(member_id, instance_id, generation):
            return error
        member = group.members[member_id]
        if ((protocol_type is not None and protocol_type != group.protocol_type)
                or (protocol is not None and protocol != group.protocol)):
            return INCONSISTENT_GROUP_PROTOCOL
        group.pending_sync.discard(member_id)
        if group.state is State.PREPARING_REBALANCE:
            return REBALANCE_IN_PROGRESS
        if group.state is State.STABLE:
            member.last_heartbeat = now
            reply(SyncResult(NONE, member.assignment, group.protocol_type, group.protocol))
            return None
        if group.state is not State.COMPLETING_REBALANCE:
            return UNKNOWN_MEMBER_ID
        member.sync_reply = reply
        if member_id == group.leader:
            for each in group.members.values():
                each.assignment = assignments.get(each.id, b"")
            group.state = State.STABLE
            self._propagate(group, NONE, now)
        return None

    def _propagate(self, group: Group, error: int, now: float) -> None:
        """Answer every SyncGroup waiting, with its assignment or the error."""
        for member in group.members.values():
            reply, member.sync_reply = member.sync_reply, None
            if reply is not None:
                member.last_heartbeat = now
                if error:
                    reply(SyncResult(error))
                else:
                    reply(SyncResult(NONE, member.assignment, group.protocol_type, group.protocol))

    def heartbeat(self, name: str, member_id: str, instance_id: str | None, generation: int, now: float) -> int:
        """Heartbeat: the error code to answer with. REBALANCE_IN_PROGRESS
        tells a member to join again."""
        group = self.groups.get(name)
        try:
            if group is None:
                return UNKNOWN_MEMBER_ID
            if error := group.member_error(member_id, instance_id, generation):
                return error
            member = group.members[member_id]
            if group.state is State.EMPTY:
                return UNKNOWN_MEMBER_ID
            member.last_heartbeat = now
            # Clients heartbeat between their JoinGroup response and SyncGroup:
            # in CompletingRebalance that is a heartbeat like any other.
            return REBALANCE_IN_PROGRESS if group.state is State.PREPARING_REBALANCE else NONE
        finally:
            self._settle(name, now)

    def leave(self, name: str, members: list[tuple[str, str | None]], now: float) -> list[int]:
        """LeaveGroup of (member id, instance id) pairs: an error per member
        (v3+ leaves a batch; earlier versions one member)."""
        group = self.groups.get(name)
        if group is None:
            return [UNKNOWN_MEMBER_ID for _ in members]
        errors = []
        for member_id, instance_id in members:
            if member_id and group.fenced(member_id, instance_id):
                errors.append(FENCED_INSTANCE_ID)
            elif member_id in group.pending:
                del group.pending[member_id]
                errors.append(NONE)
            else:
                if instance_id is not None and instance_id in group.static:
                    member_id = group.static[instance_id]
                member = group.members.get(member_id)
                if member is None:
                    errors.append(UNKNOWN_MEMBER_ID)
                else:
                    self._remove_member(group, member, now)
                    errors.append(NONE)
        self._settle(name, now)
        return errors

    def _remove_member(self, group: Group, member: Member, now: float) -> None:
        # A parked JoinGroup is answered so that a live client joins again.
        if member.join_reply is not None:
            member.join_reply(JoinResult(UNKNOWN_MEMBER_ID, ""))
        if member.sync_reply is not None:
            member.sync_reply(SyncResult(UNKNOWN_MEMBER_ID))
        member.join_reply = member.sync_reply = None
        del group.members[member.id]
        group.pending_sync.discard(member.id)
        if member.instance_id is not None and group.static.get(member.instance_id) == member.id:
            del group.static[member.instance_id]
        if group.leader == member.id:
            group.leader = next(iter(group.members), None)
        if group.state in (State.STABLE, State.COMPLETING_REBALANCE):
            self._prepare_rebalance(group, now)

    # -- rebalances -------------------------------------------------------

    def _prepare_rebalance(self, group: Group, now: float) -> None:
        if group.state not in (State.EMPTY, State.STABLE, State.COMPLETING_REBALANCE):
            return
        if group.state is State.COMPLETING_REBALANCE:
            for member in group.members.values():
                member.assignment = b""
            self._propagate(group, REBALANCE_IN_PROGRESS, now)
        group.sync_deadline = None
        group.pending_sync.clear()
        if group.state is State.EMPTY:
            delay = self.settings.initial_rebalance_delay
            group.initial_remaining = max(group.rebalance_timeout - delay, 0.0)
            group.new_member_added = False
            group.join_deadline = now + delay
        else:
            group.initial_remaining = None
            group.join_deadline = now + group.rebalance_timeout
        group.state = State.PREPARING_REBALANCE

    def _complete_join(self, group: Group, now: float) -> None:
        """The join phase ends: members that did not join again leave
        (static ones stay), and a new generation starts."""
        for member in [m for m in group.members.values() if m.join_reply is None and m.instance_id is None]:
            self._remove_member(group, member, now)
        leader = group.members.get(group.leader or "")
        if leader is not None and leader.join_reply is None:
            group.leader = next((m.id for m in group.members.values() if m.join_reply is not None), None)
            if group.leader is None:
                # Only static members that have not joined: wait on.
                group.leader = leader.id
                group.join_deadline = now + group.rebalance_timeout
                return
        group.generation += 1
        group.join_deadline = group.initial_remaining = None
        if not group.members:
            group.protocol = None
            group.leader = None
            group.state = State.EMPTY
            return
        group.protocol = group.select_protocol()
        group.state = State.COMPLETING_REBALANCE
        group.pending_sync = set(group.members)
        group.sync_deadline = now + group.rebalance_timeout
        for member in group.members.values():
            reply, member.join_reply = member.join_reply, None
            member.last_heartbeat = now
            member.new = False
            if reply is not None:
                reply(group.join_result(member))

    def _settle(self, name: str, now: float) -> None:
        """After any change: complete a join phase that has everyone, and
        tell the broker's timers when this needs looking at next."""
        self.now = max(self.now, now)
        group = self.groups.get(name)
        if (group is not None and group.state is State.PREPARING_REBALANCE
                and group.initial_remaining is None and group.all_joined()):
            self._complete_join(group, now)
        self.vhost.broker.timers.schedule(self, self.next_deadline())

    def next_deadline(self) -> float | None:
        deadlines: list[float] = []
        for group in self.groups.values():
            deadlines.extend(group.pending.values())
            deadlines.extend(d for m in group.members.values() if (d := m.expires_at()) is not None)
            if group.join_deadline is not None:
                deadlines.append(group.join_deadline)
            if group.sync_deadline is not None and group.pending_sync:
                deadlines.append(group.sync_deadline)
        return min(deadlines, default=None)

    def on_timer(self, now: float) -> None:
        """Expire sessions, end join phases and sync waits that timed out."""
        for group in list(self.groups.values()):
            for pending, deadline in list(group.pending.items()):
                if deadline <= now:
                    del group.pending[pending]
            for member in list(group.members.values()):
                if not member.alive_at(now) and member.id in group.members:
                    self._remove_member(group, member, now)
            if group.sync_deadline is not None and group.sync_deadline <= now:
                group.sync_deadline = None
                late = [group.members[m] for m in group.pending_sync if m in group.members]
                group.pending_sync.clear()
                for member in late:
                    if member.id in group.members:
                        self._remove_member(group, member, now)
            if group.join_deadline is not None and group.join_deadline <= now:
                self._join_timer(group, now)
            self._settle(group.name, now)

    def _join_timer(self, group: Group, now: float) -> None:
        remaining = group.initial_remaining
        if remaining and group.new_member_added and self.settings.initial_rebalance_delay:
            # Members still arriving: the initial delay again, within the
            # rebalance timeout.
            delay = min(self.settings.initial_rebalance_delay, remaining)
            group.initial_remaining = max(remaining - delay, 0.0)
            group.new_member_added = False
            group.join_deadline = now + delay
            return
        group.initial_remaining = None
        self._complete_join(group, now)

    # -- offsets and administration ------------------------------------------

    def validate_commit(self, name: str, member_id: str, instance_id: str | None, generation: int,
                        now: float) -> int:
        """OffsetCommit's membership check: NONE if the commit may be stored.
        A commit with generation -1 (no group management: a consumer with
        manual assignment, an admin tool) is taken while nobody is a member."""
        if not name:
            return INVALID_GROUP_ID
        group = self.groups.get(name)
        if self._amqp_members(name):
            return UNKNOWN_MEMBER_ID
        if group is None:
            return NONE if generation < 0 else ILLEGAL_GENERATION
        if group.fenced(member_id, instance_id):
            return FENCED_INSTANCE_ID
        if generation < 0 and group.state is State.EMPTY:
            return NONE
        member = group.members.get(member_id)
        if member is None:
            return UNKNOWN_MEMBER_ID
        if generation != group.generation:
            return ILLEGAL_GENERATION
        if group.state is State.COMPLETING_REBALANCE:
            return REBALANCE_IN_PROGRESS
        # Stable, or PreparingRebalance: members commit before they join again.
        member.last_heartbeat = now
        return NONE

    def describe(self, name: str) -> GroupSummary | None:
        group = self.groups.get(name)
        return None if group is None else group.summary()

    def delete(self, name: str) -> int:
        """DeleteGroups' membership part: NONE if the group (and so its
        offsets, which the caller removes) may go."""
        if self.has_members(name) or self._amqp_members(name):
            return NON_EMPTY_GROUP
        self.groups.pop(name, None)
        return NONE

    def subscribed_topics(self, name: str) -> set[str]:
        """The topics a group's members subscribe to (consumer groups only):
        OffsetDelete refuses their offsets."""
        group = self.groups.get(name)
        if group is None or group.protocol_type != "consumer":
            return set()
        topics: set[str] = set()
        for member in group.members.values():
            topics.update(subscription_topics(member.metadata(group.protocol)))
        return topics


_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")


def subscription_topics(metadata: bytes) -> list[str]:
    """The topics of a consumer protocol subscription (Kafka's
    ConsumerProtocolSubscription: version, then the topics, in every
    version); none if it does not parse."""
    try:
        (count,) = _I32.unpack_from(metadata, 2)
        topics, at = [], 6
        for _ in range(count):
            (size,) = _I16.unpack_from(metadata, at)
            topics.append(metadata[at + 2:at + 2 + size].decode())
            at += 2 + size
        return topics
    except (struct.error, UnicodeDecodeError):
        return []
