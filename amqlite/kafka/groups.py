"""Consumer group membership over Kafka: FindCoordinator, JoinGroup,
SyncGroup, Heartbeat, LeaveGroup, and the group administration APIs
(ListGroups, DescribeGroups, DeleteGroups).

The group protocol itself is core/coordinator.py; these handlers read
the requests, call it and write its answers at the version asked. A
JoinGroup or SyncGroup that waits for the rest of the group is a
:class:`Pending` completed when the coordinator answers (another member's
request, or the broker's timers: session and rebalance timeouts).

One broker is every group's coordinator. Groups are the vhost's: a name
is one group whether its members speak Kafka or AMQP (``x-stream-group``,
docs/streams.md), with members of one protocol at a time; a group whose
members are AMQP consumers is listed and described with protocol type
``amqp``. Committed offsets are the streams' (groups_offsets.py).
"""

from __future__ import annotations

import datetime
import functools
from collections import deque
from typing import Any, Callable, TypeVar
from weakref import WeakKeyDictionary

from ..core.coordinator import (
    GROUP_ID_NOT_FOUND, NONE, NON_EMPTY_GROUP, Coordinator, GroupSummary, JoinResult, MemberSummary, Settings,
    State, SyncResult, subscription_topics,
)
from ..core.stream import Stream
from ..log import get_logger
from . import topics
from .apis import Api, Pending
from .protocol import ErrorCode, Request, build
from .session import Session

log = get_logger(__name__)

FIND_COORDINATOR, JOIN_GROUP, HEARTBEAT, LEAVE_GROUP, SYNC_GROUP = 10, 11, 12, 13, 14
DESCRIBE_GROUPS, LIST_GROUPS, DELETE_GROUPS = 15, 16, 42
#: FindCoordinator's key types: a consumer group, a transactional id.
GROUP_KEY, TRANSACTION_KEY = 0, 1
#: DescribeGroups' authorized_operations when the client did not ask.
OPERATIONS_NOT_ASKED = -(2**31)
#: How a group whose members consume over AMQP shows to Kafka clients.
AMQP_PROTOCOL_TYPE = "amqp"
NO_THROTTLE = datetime.timedelta(0)

T = TypeVar("T")


def coordinator(session: Session) -> Coordinator:
    """The Kafka vhost's group coordinator, made on first use."""
    vhost = session.vhost
    if vhost.coordinator is None:
        vhost.coordinator = Coordinator(
            vhost, Settings(initial_rebalance_delay=session.settings.group_initial_rebalance_delay),
            id_prefix=session.broker.name_prefix)
    return vhost.coordinator


#: The group requests of a connection that wait behind a parked JoinGroup
#: or SyncGroup of the same connection. Kafka reads nothing more from a
#: connection until it has answered its request, so a Heartbeat or a
#: second JoinGroup sent meanwhile is handled only after the rebalance; the
#: engine reads on (clients pipeline), so group requests keep that order
#: here: handled at once, kafka-python's stray Heartbeat heard
#: REBALANCE_IN_PROGRESS after its JoinGroup had completed, and joined
#: again, round after round.
_waiting: WeakKeyDictionary[Session, deque[Callable[[], None]]] = WeakKeyDictionary()


def in_order(handler: Callable[[Session, Request, float], Any]) -> Callable[[Session, Request, float], Any]:
    @functools.wraps(handler)
    def handle(session: Session, request: Request, now: float) -> Any:
        queue = _waiting.get(session)
        if queue is None:
            return handler(session, request, now)
        pending = Pending()

        def resume() -> None:
            reply = handler(session, request, coordinator(session).now)
            if isinstance(reply, Pending):
                reply.deliver = pending.complete
                pending.poll = reply.poll
            else:
                pending.complete(reply)
        queue.append(resume)
        return pending
    return handle


def _later(session: Session, start: Callable[[Callable[[T], None]], None], respond: Callable[[T], Any]) -> Any:
    """Run a coordinator call whose answer comes now or later: the response
    now, else a Pending that the answer completes, behind which the
    connection's next group requests wait."""
    now_answered: list[T] = []
    pending = Pending()

    def gone() -> None:
        _waiting.pop(session, None)
    pending.on_cancel = gone

    def reply(result: T) -> None:
        if pending.deliver is None:
            now_answered.append(result)
            return
        pending.complete(respond(result))
        queue = _waiting.pop(session, None)
        while queue:
            queue.popleft()()
            if session in _waiting:  # parked again: the rest wait behind that
                _waiting[session].extend(queue)
                return
    start(reply)
    if now_answered:
        return respond(now_answered[0])
    _waiting[session] = deque()
    return pending


def _client_host(session: Session) -> str:
    """Kafka's client_host: the address, with its leading slash."""
    return "/" + session.peer.rsplit(":", 1)[0]


# -- FindCoordinator -----------------------------------------------------------


def find_coordinator(session: Session, request: Request, now: float) -> Any:
    """This broker coordinates every group (and transactional id); v4 asks
    for a batch of keys at once."""
    body, cls, settings = request.body, request.response_type(), session.settings
    key_type = getattr(body, "key_type", GROUP_KEY)
    error = ErrorCode.none if key_type in (GROUP_KEY, TRANSACTION_KEY) else ErrorCode.invalid_request
    node = dict(node_id=settings.node_id, host=settings.advertised_host, port=settings.advertised_port)
    if error is not ErrorCode.none:
        node = dict(node_id=-1, host="", port=-1)
    message = None if error is ErrorCode.none else f"unknown key type {key_type}"
    if request.api_version >= 4:
        return build(cls, throttle_time=NO_THROTTLE, coordinators=tuple(
            build(cls, "Coordinator", key=key, error_code=error, error_message=message, **node)
            for key in body.coordinator_keys))
    return build(cls, throttle_time=NO_THROTTLE, error_code=error, error_message=message, **node)


# -- membership --------------------------------------------------------------


@in_order
def join_group(session: Session, request: Request, now: float) -> Any:
    body, cls, version = request.body, request.response_type(), request.api_version
    protocols = [(p.name, p.metadata) for p in body.protocols]

    def respond(result: JoinResult) -> Any:
        return build(cls, throttle_time=NO_THROTTLE, error_code=ErrorCode(result.error),
                     generation_id=result.generation, protocol_type=result.protocol_type,
                     protocol_name=result.protocol if version >= 7 else result.protocol or "",
                     leader=result.leader, skip_assignment=False, member_id=result.member_id,
                     members=tuple(build(cls, "JoinGroupResponseMember", member_id=m.member_id,
                                         group_instance_id=m.instance_id, metadata=m.metadata)
                                   for m in result.members))

    if body.protocol_type == "consumer":
        # Membership needs read permission on every topic subscribed to.
        refused = sorted({topic for _, metadata in protocols for topic in subscription_topics(metadata)
                          if not session.allowed("read", topic)})
        if refused:
            log.info("kafka.group_refused", group=body.group_id, topics=refused, peer=session.peer,
                     user=session.user_name)
            return respond(JoinResult(ErrorCode.group_authorization_failed.value, body.member_id))
    session_timeout = body.session_timeout.total_seconds()
    rebalance_timeout = body.rebalance_timeout.total_seconds() if version >= 1 else session_timeout
    return _later(session, lambda reply: coordinator(session).join(
        body.group_id, body.member_id, getattr(body, "group_instance_id", None),
        protocol_type=body.protocol_type, protocols=protocols, session_timeout=session_timeout,
        rebalance_timeout=rebalance_timeout, client_id=request.client_id or "", client_host=_client_host(session),
        require_known_member_id=version >= 4, now=now, reply=reply), respond)


@in_order
def sync_group(session: Session, request: Request, now: float) -> Any:
    body, cls = request.body, request.response_type()

    def respond(result: SyncResult) -> Any:
        return build(cls, throttle_time=NO_THROTTLE, error_code=ErrorCode(result.error),
                     protocol_type=result.protocol_type, protocol_name=result.protocol, assignment=result.assignment)

    assignments = {a.member_id: a.assignment for a in body.assignments}
    return _later(session, lambda reply: coordinator(session).sync(
        body.group_id, body.member_id, getattr(body, "group_instance_id", None), body.generation_id, assignments,
        protocol_type=getattr(body, "protocol_type", None), protocol=getattr(body, "protocol_name", None),
        now=now, reply=reply), respond)


@in_order
def heartbeat(session: Session, request: Request, now: float) -> Any:
    body = request.body
    error = coordinator(session).heartbeat(body.group_id, body.member_id, getattr(body, "group_instance_id", None),
                                           body.generation_id, now)
    return build(request.response_type(), throttle_time=NO_THROTTLE, error_code=ErrorCode(error))


@in_order
def leave_group(session: Session, request: Request, now: float) -> Any:
    body, cls = request.body, request.response_type()
    if request.api_version < 3:
        (error,) = coordinator(session).leave(body.group_id, [(body.member_id, None)], now)
        return build(cls, throttle_time=NO_THROTTLE, error_code=ErrorCode(error))
    leaving = [(m.member_id, m.group_instance_id) for m in body.members]
    errors = coordinator(session).leave(body.group_id, leaving, now)
    return build(cls, throttle_time=NO_THROTTLE, error_code=ErrorCode.none, members=tuple(
        build(cls, "MemberResponse", member_id=member_id, group_instance_id=instance_id, error_code=ErrorCode(error))
        for (member_id, instance_id), error in zip(leaving, errors)))


# -- administration ------------------------------------------------------------


def offset_streams(session: Session, group: str) -> list[tuple[str, int, Stream]]:
    """Where ``group`` has a committed offset: (topic, partition, stream)."""
    return [(topic.name, index, stream) for topic in topics.every(session.vhost)
            for index, stream in enumerate(topic.partitions) if group in stream.group_offsets]


def _summaries(session: Session) -> dict[str, GroupSummary]:
    """Every group Kafka clients see: the coordinator's, those AMQP
    consumers are members of, and those that only have offsets (Empty,
    as Kafka lists a group that only commits)."""
    vhost = session.vhost
    found = {name: summary for name in coordinator(session).groups
             if (summary := coordinator(session).describe(name)) is not None}
    for name, group in vhost.groups.items():
        found[name] = GroupSummary(name, State.STABLE.value, AMQP_PROTOCOL_TYPE, "x-stream-group", tuple(
            MemberSummary(connection.name, None, "", "", b"", b"") for connection in group.members))
    for queue in vhost.queues.values():
        if isinstance(queue, Stream):
            for name in queue.group_offsets:
                found.setdefault(name, GroupSummary(name, State.EMPTY.value, "", "", ()))
    return found


def list_groups(session: Session, request: Request, now: float) -> Any:
    body, cls = request.body, request.response_type()
    states = {state.lower() for state in getattr(body, "states_filter", ())}
    types = {kind.lower() for kind in getattr(body, "types_filter", ())}
    listed = [summary for _, summary in sorted(_summaries(session).items())
              if (not states or summary.state.lower() in states) and (not types or "classic" in types)]
    return build(cls, throttle_time=NO_THROTTLE, error_code=ErrorCode.none, groups=tuple(
        build(cls, "ListedGroup", group_id=summary.name, protocol_type=summary.protocol_type,
              group_state=summary.state, group_type="classic") for summary in listed))


def describe_groups(session: Session, request: Request, now: float) -> Any:
    body, cls = request.body, request.response_type()
    summaries = _summaries(session)
    described = []
    for name in body.groups:
        summary = summaries.get(name) or GroupSummary(name, State.DEAD.value, "", "", ())
        described.append(build(
            cls, "DescribedGroup", error_code=ErrorCode.none, group_id=name, group_state=summary.state,
            protocol_type=summary.protocol_type, protocol_data=summary.protocol,
            authorized_operations=OPERATIONS_NOT_ASKED, members=tuple(
                build(cls, "DescribedGroupMember", member_id=m.member_id, group_instance_id=m.instance_id,
                      client_id=m.client_id, client_host=m.client_host, member_metadata=m.metadata,
                      member_assignment=m.assignment) for m in summary.members)))
    return build(cls, throttle_time=NO_THROTTLE, groups=tuple(described))


def delete_groups(session: Session, request: Request, now: float) -> Any:
    """A group with no members goes with its committed offsets; deleting
    needs configure permission on every topic it has offsets on."""
    body, cls = request.body, request.response_type()
    results = []
    for name in body.groups_names:
        results.append(build(cls, "DeletableGroupResult", group_id=name, error_code=_delete(session, name)))
    return build(cls, throttle_time=NO_THROTTLE, results=tuple(results))


def _delete(session: Session, name: str) -> ErrorCode:
    where = offset_streams(session, name)
    if any(not session.allowed("configure", topic) for topic, _, _ in where):
        return ErrorCode.group_authorization_failed
    known = name in coordinator(session).groups or bool(where)
    error = coordinator(session).delete(name)
    if error == NON_EMPTY_GROUP:
        return ErrorCode.non_empty_group
    if not known:
        return ErrorCode(GROUP_ID_NOT_FOUND)
    assert error == NONE
    for _, _, stream in where:
        stream.forget_group(name)
    log.info("kafka.group_deleted", group=name, offsets=len(where), peer=session.peer,
             user=session.user_name)
    return ErrorCode.none


APIS = [
    Api(FIND_COORDINATOR, 0, 4, find_coordinator),
    Api(JOIN_GROUP, 0, 9, join_group),
    Api(SYNC_GROUP, 0, 5, sync_group),
    Api(HEARTBEAT, 0, 4, heartbeat),
    Api(LEAVE_GROUP, 0, 5, leave_group),
    Api(DESCRIBE_GROUPS, 0, 5, describe_groups),
    Api(LIST_GROUPS, 0, 5, list_groups),
    Api(DELETE_GROUPS, 0, 2, delete_groups),
]
