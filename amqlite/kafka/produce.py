"""Produce (key 0, v3-v9).

Each partition's records are record batches v2 (records.py). A batch is
checked (CRC-32C, the record lengths) and appended to the partition's
stream whole, as its producer built it, at the next offset
(``Stream.append_batch``): nothing is decoded per record, and a Fetch
serves the same bytes back. A batch of an idempotent producer (producer
id set) is first checked against the partition's last batches of that
producer (core/idempotence.py): a retry is answered with the offset it
got the first time, a gap with OUT_OF_ORDER_SEQUENCE_NUMBER, an older
epoch with INVALID_PRODUCER_EPOCH. A transactional batch needs its
producer's transaction to be ongoing with the partition added
(AddPartitionsToTxn, transactions.py), and opens that producer's
transaction in the partition (core/visibility.py).

``acks``: 0 answers nothing; 1 answers once appended (in memory, as a
Kafka leader answers once the record is in its log); -1 ("all") once the
journal has synced everything appended, as a publisher confirm waits,
or REQUEST_TIMED_OUT after the request's timeout.
"""

from __future__ import annotations

import datetime
from typing import Any

from ..core import transactions as txn
from ..core.idempotence import ProducerIds, Verdict
from ..core.stream import Stream
from ..log import get_logger
from . import records, topics
from .apis import Api, Pending
from .mapping import StoredBatch
from .protocol import ErrorCode, Request, build
from .session import Session

log = get_logger(__name__)

PRODUCE = 0
NO_THROTTLE = datetime.timedelta(0)
_VERDICT_ERRORS = {
    Verdict.OUT_OF_ORDER: ErrorCode.out_of_order_sequence_number,
    Verdict.FENCED: ErrorCode.invalid_producer_epoch,
}


def append(stream: Stream, data: bytes, now: float) -> tuple[ErrorCode, int, str | None]:
    """Append a partition's record batches: (error, base offset of the
    first batch, why). Every batch is checked before any is appended, so
    a bad one loses nothing and stores nothing of its request."""
    try:
        batches = [records.parse(whole) for whole in records.split(data)]
    except records.UnsupportedMagic as error:
        return ErrorCode.unsupported_for_message_format, -1, str(error)
    except records.CorruptRecord as error:
        return ErrorCode.corrupt_message, -1, str(error)
    if not batches:
        return ErrorCode.corrupt_message, -1, "no record batch"
    for batch in batches:
        if batch.attributes & records.CONTROL:
            return ErrorCode.invalid_record, -1, "a producer cannot send control batches"
        if batch.attributes & records.TRANSACTIONAL:
            coordinator = stream.vhost.transactions
            refused = (txn.INVALID_PRODUCER_ID_MAPPING if coordinator is None
                       else coordinator.check_produce(batch.producer_id, batch.producer_epoch, stream))
            if refused:
                return ErrorCode(refused), -1, f"producer {batch.producer_id}: not in a transaction on this partition"
    base = -1
    for batch in batches:
        idempotent = batch.producer_id >= 0
        if idempotent:
            verdict, offset = stream.producers.check(batch.producer_id, batch.producer_epoch, batch.base_sequence,
                                                     batch.last_sequence)
            if verdict is Verdict.DUPLICATE:
                base = offset if base < 0 else base
                continue
            if verdict is not Verdict.APPEND:
                return _VERDICT_ERRORS[verdict], -1, f"producer {batch.producer_id}: {verdict.value}"
        transaction = batch.producer_id if batch.attributes & records.TRANSACTIONAL else None
        appended = stream.append_batch(StoredBatch(batch.with_base_offset(stream.end)), now, transaction=transaction)
        if appended is None:
            return ErrorCode.kafka_storage_error, -1, "the disk refuses writes"
        if idempotent:
            stream.producers.appended(batch.producer_id, batch.producer_epoch, batch.base_sequence,
                                      batch.last_sequence, appended)
        base = appended if base < 0 else base
    return ErrorCode.none, base, None


def produce(session: Session, request: Request, now: float) -> Any:
    body = request.body
    cls = request.response_type()
    vhost = session.vhost
    answers = []
    for topic_data in body.topic_data:
        name = topic_data.name
        topic = topics.find(vhost, name)
        allowed = topic is not None and session.allowed("write", name)
        partitions = []
        for partition in topic_data.partition_data:
            error, base, why, first = ErrorCode.none, -1, None, -1
            if topic is None:
                error = ErrorCode.unknown_topic_or_partition
            elif not allowed:
                error = ErrorCode.topic_authorization_failed
            elif not 0 <= partition.index < len(topic.partitions):
                error = ErrorCode.unknown_topic_or_partition
            else:
                stream = topic.partitions[partition.index]
                error, base, why = append(stream, bytes(partition.records or b""), now)
                first = stream.first
                if why is not None:
                    log.warning("kafka.produce_refused", topic=name, partition=partition.index, peer=session.peer,
                                error=error.name, reason=why)
            partitions.append(build(cls, "PartitionProduceResponse", index=partition.index, error_code=error,
                                    base_offset=base, log_append_time=None, log_start_offset=first,
                                    record_errors=(), error_message=why))
        answers.append(build(cls, "TopicProduceResponse", name=name, partition_responses=tuple(partitions)))
    if body.acks == 0:
        return None
    response = build(cls, responses=tuple(answers), throttle_time=NO_THROTTLE)
    journal = session.broker.journal
    if body.acks == 1 or journal is None or journal.synced >= journal.position:
        return response
    return _on_disk(journal.position, response, answers, cls, now + body.timeout.total_seconds(), session)


def _on_disk(position: int, response: Any, answers: list[Any], cls: type[Any], deadline: float,
             session: Session) -> Pending:
    """acks=all: the response once the journal has synced ``position``."""
    journal = session.broker.journal
    assert journal is not None
    pending = Pending(deadline=deadline)

    def poll(now: float) -> None:
        if journal.synced >= position:
            pending.complete(response)

    def timed_out(now: float) -> Any:
        if journal.synced >= position:
            return response
        return build(cls, throttle_time=NO_THROTTLE, responses=tuple(
            build(cls, "TopicProduceResponse", name=topic.name, partition_responses=tuple(
                build(cls, "PartitionProduceResponse", index=p.index,
                      error_code=p.error_code if p.error_code != ErrorCode.none else ErrorCode.request_timed_out,
                      base_offset=-1, log_append_time=None, log_start_offset=-1, record_errors=(),
                      error_message=None)
                for p in topic.partition_responses))
            for topic in answers))

    pending.poll = poll
    pending.on_deadline = timed_out
    return pending


def producer_ids(session: Session, now: float) -> ProducerIds:
    """The Kafka vhost's producer ids, made on first use: counting up from
    the wall clock in ms << 16, above any a previous run handed out."""
    vhost = session.vhost
    if vhost.producer_ids is None:
        vhost.producer_ids = ProducerIds.from_clock(now)
    return vhost.producer_ids


APIS = [Api(PRODUCE, 3, 9, produce)]
