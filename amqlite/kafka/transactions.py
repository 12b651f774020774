"""Producer ids and transactions: InitProducerId (key 22), AddPartitionsToTxn
(24), AddOffsetsToTxn (25), EndTxn (26), TxnOffsetCommit (28),
DescribeTransactions (65), ListTransactions (66).

InitProducerId without a transactional id serves idempotent producers
(core/idempotence.py); with one, the transaction coordinator
(core/transactions.py) hands out the id's producer id and next epoch,
fencing the previous instance. This broker coordinates every
transactional id (FindCoordinator, groups.py).

InitProducerId is answered once the journal has the id's new epoch on
disk, as Kafka answers once its transaction log has it (a new instance's
epoch must survive a crash, or the restarted broker would fence it), and
EndTxn once the decision, the markers and the Complete record are.
AddPartitionsToTxn is answered at once: its record comes before, in the
one log, the transaction's batches, which are answered only once on disk,
and a batch retried after a crash that lost it is refused
(INVALID_TXN_STATE: its partition was not added). AddOffsetsToTxn waits
for the disk: its TxnOffsetCommit is held in memory until EndTxn, so
nothing else would put the open transaction on disk first, and a crash
that lost it would leave the producer unfenced, its commit carrying the
records without the offsets it was told were added. A fenced producer
hears PRODUCER_FENCED, or INVALID_PRODUCER_EPOCH at the versions older
than that code (Kafka's KafkaApis converts it the same way).
"""

from __future__ import annotations

import datetime
from typing import Any, Callable

from ..core import transactions as txn
from ..core.stream import Stream
from ..core.transactions import TransactionCoordinator
from ..log import get_logger
from . import topics
from .apis import Api, Pending
from .groups import coordinator as group_coordinator
from .mapping import marker
from .produce import producer_ids
from .protocol import ErrorCode, Request, build
from .session import Session

log = get_logger(__name__)

INIT_PRODUCER_ID, ADD_PARTITIONS_TO_TXN, ADD_OFFSETS_TO_TXN, END_TXN = 22, 24, 25, 26
TXN_OFFSET_COMMIT, DESCRIBE_TRANSACTIONS, LIST_TRANSACTIONS = 28, 65, 66
NO_THROTTLE = datetime.timedelta(0)
#: The first version of each API that knows PRODUCER_FENCED (KIP-588).
_FENCED_FROM = {INIT_PRODUCER_ID: 4, ADD_PARTITIONS_TO_TXN: 2, ADD_OFFSETS_TO_TXN: 2, END_TXN: 2, TXN_OFFSET_COMMIT: 3}


def coordinator(session: Session, now: float) -> TransactionCoordinator:
    """The Kafka vhost's transaction coordinator, made on first use."""
    vhost = session.vhost
    if vhost.transactions is None:
        vhost.transactions = TransactionCoordinator(vhost, producer_ids(session, now), marker)
    return vhost.transactions


def _code(request: Request, error: int) -> ErrorCode:
    if error == txn.PRODUCER_FENCED and request.api_version < _FENCED_FROM[request.api_key]:
        return ErrorCode.invalid_producer_epoch
    return ErrorCode(error)


def _when_on_disk(session: Session, before: int, reply: Callable[[], Any]) -> Any:
    """``reply()`` now if nothing was journalled since ``before``, else once
    the journal has synced what was."""
    journal = session.broker.journal
    if journal is None or journal.position == before or journal.synced >= journal.position:
        return reply()
    position = journal.position
    pending = Pending()

    def poll(now: float) -> None:
        if journal.synced >= position:
            pending.complete(reply())
    pending.poll = poll
    return pending


def _position(session: Session) -> int:
    journal = session.broker.journal
    return journal.position if journal is not None else 0


def init_producer_id(session: Session, request: Request, now: float) -> Any:
    body, cls = request.body, request.response_type()
    given = getattr(body, "producer_id", -1)
    given_epoch = getattr(body, "producer_epoch", -1)
    if body.transactional_id is None:
        return _idempotent(session, cls, given, given_epoch, now)
    before = _position(session)
    error, producer_id, epoch = coordinator(session, now).init_producer(
        body.transactional_id, body.transaction_timeout.total_seconds(), given, given_epoch, now)
    log.info("kafka.transactional_producer", transactional_id=body.transactional_id, producer_id=producer_id,
             epoch=epoch, error=ErrorCode(error).name, peer=session.peer)
    return _when_on_disk(session, before, lambda: build(
        cls, throttle_time=NO_THROTTLE, error_code=_code(request, error), producer_id=producer_id,
        producer_epoch=epoch))


def _idempotent(session: Session, cls: type[Any], given: int, given_epoch: int, now: float) -> Any:
    ids = producer_ids(session, now)
    if given >= 0:
        bumped = ids.bump(given, given_epoch)
        if bumped is None:
            return build(cls, throttle_time=NO_THROTTLE, error_code=ErrorCode.producer_fenced,
                         producer_id=-1, producer_epoch=-1)
        producer_id, epoch = bumped
    else:
        producer_id, epoch = ids.new()
    log.info("kafka.producer_id", producer_id=producer_id, epoch=epoch, peer=session.peer)
    return build(cls, throttle_time=NO_THROTTLE, error_code=ErrorCode.none, producer_id=producer_id,
                 producer_epoch=epoch)


def add_partitions_to_txn(session: Session, request: Request, now: float) -> Any:
    body, cls = request.body, request.response_type()
    wanted: list[tuple[str, int, Stream | ErrorCode]] = []
    for topic in body.v3_and_below_topics:
        found = topics.find(session.vhost, topic.name)
        for index in topic.partitions:
            if not session.allowed("write", topic.name):
                wanted.append((topic.name, index, ErrorCode.topic_authorization_failed))
            elif found is None or not 0 <= index < len(found.partitions):
                wanted.append((topic.name, index, ErrorCode.unknown_topic_or_partition))
            else:
                wanted.append((topic.name, index, found.partitions[index]))
    refused = any(isinstance(stream, ErrorCode) for _, _, stream in wanted)
    if refused:
        # Kafka adds none of them, and the others hear OPERATION_NOT_ATTEMPTED.
        codes = {(name, index): stream if isinstance(stream, ErrorCode) else ErrorCode.operation_not_attempted
                 for name, index, stream in wanted}
    else:
        error = coordinator(session, now).add_partitions(
            body.v3_and_below_transactional_id, body.v3_and_below_producer_id, body.v3_and_below_producer_epoch,
            [stream for _, _, stream in wanted if isinstance(stream, Stream)], now)
        codes = {(name, index): _code(request, error) for name, index, _ in wanted}
    by_topic: dict[str, list[Any]] = {}
    for (name, index), code in codes.items():
        by_topic.setdefault(name, []).append(build(cls, "AddPartitionsToTxnPartitionResult", partition_index=index,
                                                   partition_error_code=code))
    return build(cls, throttle_time=NO_THROTTLE, results_by_topic_v3_and_below=tuple(
        build(cls, "AddPartitionsToTxnTopicResult", name=name, results_by_partition=tuple(results))
        for name, results in by_topic.items()))


def add_offsets_to_txn(session: Session, request: Request, now: float) -> Any:
    body, cls = request.body, request.response_type()
    before = _position(session)
    error = coordinator(session, now).add_offsets(body.transactional_id, body.producer_id, body.producer_epoch,
                                                  body.group_id, now)
    return _when_on_disk(session, before, lambda: build(cls, throttle_time=NO_THROTTLE,
                                                        error_code=_code(request, error)))


def txn_offset_commit(session: Session, request: Request, now: float) -> Any:
    """Offsets pending in the transaction: the group's OffsetFetch sees
    them once it commits (groups_offsets.py: UNSTABLE_OFFSET_COMMIT). The
    member is checked when the request names its generation (v3+, as
    Kafka does); without one (v0-2, or -1) only that no AMQP member
    consumes for the group."""
    body, cls = request.body, request.response_type()
    generation = getattr(body, "generation_id", -1)
    membership = 0
    if generation >= 0:
        membership = group_coordinator(session).validate_commit(
            body.group_id, body.member_id, getattr(body, "group_instance_id", None), generation, now)
    elif body.group_id in session.vhost.groups:
        # Its members consume over AMQP (one protocol at a time, as OffsetCommit).
        membership = ErrorCode.unknown_member_id.value
    transactions = coordinator(session, now)
    answers = []
    for topic in body.topics:
        found = topics.find(session.vhost, topic.name)
        partitions = []
        for partition in topic.partitions:
            if membership:
                code = ErrorCode(membership)
            elif not session.allowed("read", topic.name):
                code = ErrorCode.topic_authorization_failed
            elif found is None or not 0 <= partition.partition_index < len(found.partitions):
                code = ErrorCode.unknown_topic_or_partition
            else:
                code = _code(request, transactions.commit_offset(
                    body.transactional_id, body.producer_id, body.producer_epoch, body.group_id,
                    found.partitions[partition.partition_index], partition.committed_offset,
                    partition.committed_metadata or ""))
            partitions.append(build(cls, "TxnOffsetCommitResponsePartition",
                                    partition_index=partition.partition_index, error_code=code))
        answers.append(build(cls, "TxnOffsetCommitResponseTopic", name=topic.name, partitions=tuple(partitions)))
    return build(cls, throttle_time=NO_THROTTLE, topics=tuple(answers))


def end_txn(session: Session, request: Request, now: float) -> Any:
    body, cls = request.body, request.response_type()
    transactions = coordinator(session, now)
    before = _position(session)
    error = transactions.end(body.transactional_id, body.producer_id, body.producer_epoch, body.committed, now)
    log.info("kafka.end_txn", transactional_id=body.transactional_id, producer_id=body.producer_id,
             commit=body.committed, error=ErrorCode(error).name, peer=session.peer)

    def reply() -> Any:
        transactions.refresh()
        return build(cls, throttle_time=NO_THROTTLE, error_code=_code(request, error))
    return _when_on_disk(session, before, reply)


def _partitions_by_topic(session: Session) -> dict[Stream, tuple[str, int]]:
    return {stream: (topic.name, index) for topic in topics.every(session.vhost)
            for index, stream in enumerate(topic.partitions)}


def describe_transactions(session: Session, request: Request, now: float) -> Any:
    cls = request.response_type()
    transactions = coordinator(session, now)
    transactions.refresh()
    where = _partitions_by_topic(session)
    states = []
    for transactional_id in request.body.transactional_ids:
        found = transactions.transactions.get(transactional_id)
        if found is None:
            states.append(build(cls, "TransactionState", error_code=ErrorCode.transactional_id_not_found,
                                transactional_id=transactional_id, transaction_state="",
                                transaction_timeout=datetime.timedelta(0),
                                transaction_start_time=datetime.datetime.fromtimestamp(0, datetime.timezone.utc),
                                producer_id=-1, producer_epoch=-1, topics=()))
            continue
        by_topic: dict[str, list[int]] = {}
        for stream in found.partitions:
            if stream in where:
                name, index = where[stream]
                by_topic.setdefault(name, []).append(index)
        start = found.started if found.started >= 0 else 0.0
        states.append(build(cls, "TransactionState", error_code=ErrorCode.none, transactional_id=transactional_id,
                            transaction_state=found.state.value,
                            transaction_timeout=datetime.timedelta(seconds=found.timeout),
                            transaction_start_time=datetime.datetime.fromtimestamp(start, datetime.timezone.utc),
                            producer_id=found.producer_id, producer_epoch=found.epoch,
                            topics=tuple(build(cls, "TopicData", topic=name, partitions=tuple(indexes))
                                         for name, indexes in by_topic.items())))
    return build(cls, throttle_time=NO_THROTTLE, transaction_states=tuple(states))


def list_transactions(session: Session, request: Request, now: float) -> Any:
    body, cls = request.body, request.response_type()
    transactions = coordinator(session, now)
    transactions.refresh()
    known = {state.value for state in txn.State}
    states = set(body.state_filters)
    producers = set(body.producer_id_filters)
    longer_than = getattr(body, "duration_filter", -1)
    listed = []
    for found in transactions.transactions.values():
        if states and found.state.value not in states or producers and found.producer_id not in producers:
            continue
        if longer_than >= 0 and not (found.started >= 0 and (now - found.started) * 1000 >= longer_than):
            continue
        listed.append(build(cls, "TransactionState", transactional_id=found.transactional_id,
                            producer_id=found.producer_id, transaction_state=found.state.value))
    return build(cls, throttle_time=NO_THROTTLE, error_code=ErrorCode.none,
                 unknown_state_filters=tuple(sorted(states - known)), transaction_states=tuple(listed))


APIS = [
    Api(INIT_PRODUCER_ID, 0, 4, init_producer_id),
    Api(ADD_PARTITIONS_TO_TXN, 0, 3, add_partitions_to_txn),
    Api(ADD_OFFSETS_TO_TXN, 0, 3, add_offsets_to_txn),
    Api(END_TXN, 0, 4, end_txn),
    Api(TXN_OFFSET_COMMIT, 0, 3, txn_offset_commit),
    Api(DESCRIBE_TRANSACTIONS, 0, 0, describe_transactions),
    Api(LIST_TRANSACTIONS, 0, 1, list_transactions),
]
