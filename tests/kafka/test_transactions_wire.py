"""The transaction APIs on the wire (the sans-IO engine, no journal): the
error each version answers, transactional offsets and OffsetFetch's
require_stable, ListOffsets at read_committed, and a group whose members
consume over AMQP."""

from __future__ import annotations

import datetime
import importlib
from typing import Any

from kio.schema.errors import ErrorCode

from amqlite.core.broker import Broker
from amqlite.kafka import records
from amqlite.kafka.engine import KafkaConnection
from amqlite.kafka.records import Record

from kafka_support import decode_response, engine, request, request_frame, split_responses

INIT_PRODUCER_ID, ADD_PARTITIONS, ADD_OFFSETS, END_TXN, TXN_OFFSET_COMMIT = 22, 24, 25, 26, 28
PRODUCE, LIST_OFFSETS, OFFSET_FETCH = 0, 2, 9


def call(conn: KafkaConnection, body: Any, now: float = 0.0) -> Any:
    conn.receive_data(request_frame(body), now)
    (frame,) = split_responses(conn.data_to_send(now))
    return decode_response(frame, body.__api_key__, body.__version__)[1]


def module(name: str, version: int, kind: str = "request") -> Any:
    return importlib.import_module(f"kio.schema.{name}.v{version}.{kind}")


def setup() -> tuple[Broker, KafkaConnection, int, int]:
    broker = Broker()
    ch = broker.connect().open_channel()
    ch.declare_queue("events", durable=True, arguments={"x-queue-type": "stream"}, now=0.0)
    ch.publish(b"plain", routing_key="events", now=0.0)
    conn = engine(broker)
    answer = call(conn, request(INIT_PRODUCER_ID, 4, transactional_id="t",
                                transaction_timeout=datetime.timedelta(seconds=60), producer_id=-1, producer_epoch=-1))
    assert answer.error_code == ErrorCode.none
    return broker, conn, answer.producer_id, answer.producer_epoch


def txn_commit(pid: int, epoch: int, group: str, offset: int, version: int = 3) -> Any:
    m = module("txn_offset_commit", version)
    return m.TxnOffsetCommitRequest(
        transactional_id="t", group_id=group, producer_id=pid, producer_epoch=epoch,
        topics=(m.TxnOffsetCommitRequestTopic(name="events", partitions=(m.TxnOffsetCommitRequestPartition(
            partition_index=0, committed_offset=offset, committed_metadata="", committed_leader_epoch=-1),)),))


def offset_fetch(group: str, stable: bool) -> Any:
    m = module("offset_fetch", 7)
    return m.OffsetFetchRequest(group_id=group, require_stable=stable, topics=(
        m.OffsetFetchRequestTopic(name="events", partition_indexes=(0,)),))


def fetched(response: Any) -> tuple[ErrorCode, int]:
    partition = response.topics[0].partitions[0]
    return partition.error_code, partition.committed_offset


def test_transactional_offsets_are_unstable_until_the_commit() -> None:
    _, conn, pid, epoch = setup()
    assert call(conn, request(ADD_OFFSETS, 3, transactional_id="t", producer_id=pid, producer_epoch=epoch,
                              group_id="g")).error_code == ErrorCode.none
    committed = call(conn, txn_commit(pid, epoch, "g", 1))
    assert committed.topics[0].partitions[0].error_code == ErrorCode.none
    assert fetched(call(conn, offset_fetch("g", True))) == (ErrorCode.unstable_offset_commit, -1)
    assert fetched(call(conn, offset_fetch("g", False))) == (ErrorCode.none, -1)  # the last committed: none
    assert call(conn, request(END_TXN, 3, transactional_id="t", producer_id=pid, producer_epoch=epoch,
                              committed=True)).error_code == ErrorCode.none
    assert fetched(call(conn, offset_fetch("g", True))) == (ErrorCode.none, 1)


def test_a_fenced_producer_hears_the_code_of_its_version() -> None:
    _, conn, pid, old = setup()
    call(conn, request(INIT_PRODUCER_ID, 4, transactional_id="t", transaction_timeout=datetime.timedelta(seconds=60),
                       producer_id=-1, producer_epoch=-1))
    for version, code in ((1, ErrorCode.invalid_producer_epoch), (3, ErrorCode.producer_fenced)):
        answer = call(conn, request(END_TXN, version, transactional_id="t", producer_id=pid, producer_epoch=old,
                                    committed=True))
        assert answer.error_code == code
    m = module("add_partitions_to_txn", 1)
    answer = call(conn, m.AddPartitionsToTxnRequest(
        v3_and_below_transactional_id="t", v3_and_below_producer_id=pid, v3_and_below_producer_epoch=old,
        v3_and_below_topics=(m.AddPartitionsToTxnTopic(name="events", partitions=(0,)),)))
    assert answer.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code == \
        ErrorCode.invalid_producer_epoch


def test_list_offsets_read_committed_answers_the_last_stable_offset() -> None:
    _, conn, pid, epoch = setup()
    m = module("add_partitions_to_txn", 3)
    call(conn, m.AddPartitionsToTxnRequest(
        v3_and_below_transactional_id="t", v3_and_below_producer_id=pid, v3_and_below_producer_epoch=epoch,
        v3_and_below_topics=(m.AddPartitionsToTxnTopic(name="events", partitions=(0,)),)))
    batch = records.encode(0, [Record(0, 0, None, b"open")], producer_id=pid, producer_epoch=epoch, base_sequence=0,
                           flags=records.TRANSACTIONAL)
    p = module("produce", 7)
    produced = call(conn, p.ProduceRequest(transactional_id="t", acks=1, timeout=datetime.timedelta(seconds=5),
                                           topic_data=(p.TopicProduceData(name="events", partition_data=(
                                               p.PartitionProduceData(index=0, records=batch),)),)))
    assert produced.responses[0].partition_responses[0].base_offset == 1
    lo = module("list_offsets", 2)

    def latest(isolation: int) -> int:
        answer = call(conn, lo.ListOffsetsRequest(replica_id=-1, isolation_level=isolation, topics=(
            lo.ListOffsetsTopic(name="events", partitions=(lo.ListOffsetsPartition(partition_index=0,
                                                                                    timestamp=-1),)),)))
        return int(answer.topics[0].partitions[0].offset)

    assert (latest(0), latest(1)) == (2, 1)
    call(conn, request(END_TXN, 3, transactional_id="t", producer_id=pid, producer_epoch=epoch, committed=False))
    assert (latest(0), latest(1)) == (3, 3)  # the abort marker took offset 2


def test_a_group_consuming_over_amqp_takes_no_transactional_offsets() -> None:
    broker, conn, pid, epoch = setup()
    ch = broker.connect().open_channel()
    ch.qos(10, now=0.0)
    ch.consume("events", now=0.0, arguments={"x-stream-group": "amqp", "x-stream-offset": "first"})
    call(conn, request(ADD_OFFSETS, 3, transactional_id="t", producer_id=pid, producer_epoch=epoch, group_id="amqp"))
    refused = call(conn, txn_commit(pid, epoch, "amqp", 1))
    assert refused.topics[0].partitions[0].error_code == ErrorCode.unknown_member_id
