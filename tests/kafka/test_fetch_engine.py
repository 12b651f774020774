"""Fetch through the sans-IO engine on a core broker: the long poll (a
response at min_bytes or at max_wait, whichever first), KIP-74's limits,
responses in request order behind a waiting Fetch, offsets out of range,
AMQP messages served as a batch, and the high watermark at what is on
disk."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from kio.schema.errors import ErrorCode

from amqlite.core.broker import Broker
from amqlite.core.message import Message, Properties
from amqlite.kafka import records
from amqlite.kafka.records import Record

from kafka_support import decode_response, engine, request, request_frame, split_responses
from store.support import Store

FETCH, PRODUCE = 1, 0


def broker_with_stream() -> Broker:
    broker = Broker()
    broker.vhosts["/"].declare_queue("t", owner=None, now=0.0, durable=True, arguments={"x-queue-type": "stream"})
    return broker


def fetch_request(offset: int, *, wait_ms: int = 500, min_bytes: int = 1, partition_max: int = 1_000_000) -> Any:
    partition = {"partition": 0, "fetch_offset": offset, "log_start_offset": -1,
                 "partition_max_bytes": partition_max}
    module = __import__("kio.schema.fetch.v11.request", fromlist=["FetchPartition", "FetchTopic"])
    return request(FETCH, 11, replica_id=-1, max_wait=datetime.timedelta(milliseconds=wait_ms),
                   min_bytes=min_bytes, max_bytes=50_000_000, isolation_level=0, session_id=0, session_epoch=-1,
                   topics=(module.FetchTopic(topic="t", partitions=(module.FetchPartition(**partition),)),),
                   forgotten_topics_data=(), rack_id="")


def produce_request(data: bytes, acks: int = 1) -> Any:
    module = __import__("kio.schema.produce.v7.request", fromlist=["PartitionProduceData", "TopicProduceData"])
    return request(PRODUCE, 7, transactional_id=None, acks=acks, timeout=datetime.timedelta(seconds=5),
                   topic_data=(module.TopicProduceData(name="t", partition_data=(
                       module.PartitionProduceData(index=0, records=data),)),))


def batch(first: int, count: int, size: int = 10) -> bytes:
    return records.encode(0, [Record(i, 1_000 + i, None, b"v%d-" % (first + i) + b"x" * size) for i in range(count)])


def fetched(frame: bytes) -> tuple[int, int, list[Record]]:
    _, body = decode_response(frame, FETCH, 11)
    [topic] = body.responses
    [partition] = topic.partitions
    rows = [record for whole in records.split(bytes(partition.records or b""))
            for record in records.parse(whole).records()]
    return int(partition.error_code.value), int(partition.high_watermark), rows


def test_a_fetch_waits_for_data_and_answers_in_request_order() -> None:
    conn = engine(broker_with_stream())
    conn.receive_data(request_frame(fetch_request(0), correlation_id=1), 0.0)
    assert conn.data_to_send(0.0) == b""  # nothing yet: it waits
    assert conn.next_deadline() == 0.5
    conn.receive_data(request_frame(produce_request(batch(0, 3)), correlation_id=2), 0.1)
    assert conn.data_to_send(0.1) == b""  # the produce response waits behind the fetch
    conn.storage_moved(0.1)
    first, second = split_responses(conn.data_to_send(0.1))
    error, high, rows = fetched(first)
    assert (error, high, [r.value for r in rows]) == (0, 3, [b"v0-" + b"x" * 10, b"v1-" + b"x" * 10,
                                                           b"v2-" + b"x" * 10])
    assert decode_response(second, PRODUCE, 7)[0] == 2


def test_max_wait_answers_with_nothing() -> None:
    conn = engine(broker_with_stream())
    conn.receive_data(request_frame(fetch_request(0, wait_ms=200), correlation_id=1), 0.0)
    conn.tick(0.1)
    assert conn.data_to_send(0.1) == b""
    conn.tick(0.2)
    [frame] = split_responses(conn.data_to_send(0.2))
    assert fetched(frame) == (0, 0, [])


def test_min_bytes_holds_a_small_answer_until_enough_or_time() -> None:
    conn = engine(broker_with_stream())
    conn.receive_data(request_frame(produce_request(batch(0, 1)), correlation_id=1), 0.0)
    conn.data_to_send(0.0)
    conn.receive_data(request_frame(fetch_request(0, min_bytes=10_000), correlation_id=2), 0.0)
    conn.storage_moved(0.1)
    assert conn.data_to_send(0.1) == b""
    conn.receive_data(request_frame(produce_request(batch(1, 200, size=100)), correlation_id=3), 0.2)
    conn.storage_moved(0.2)
    frames = split_responses(conn.data_to_send(0.2))
    assert len(frames[0]) > 10_000 and len(fetched(frames[0])[2]) == 201


def test_partition_max_bytes_but_always_the_first_batch() -> None:
    conn = engine(broker_with_stream())
    for n, data in enumerate((batch(0, 50, size=100), batch(50, 50, size=100))):
        conn.receive_data(request_frame(produce_request(data), correlation_id=n + 1), 0.0)
    conn.data_to_send(0.0)
    # Smaller than the first batch: the first batch alone.
    conn.receive_data(request_frame(fetch_request(0, partition_max=100), correlation_id=3), 0.0)
    [frame] = split_responses(conn.data_to_send(0.0))
    assert [r.offset for r in fetched(frame)[2]] == list(range(50))
    # From inside the second batch: that batch whole (clients skip what is before their offset).
    conn.receive_data(request_frame(fetch_request(75, partition_max=100), correlation_id=4), 0.0)
    [frame] = split_responses(conn.data_to_send(0.0))
    assert [r.offset for r in fetched(frame)[2]] == list(range(50, 100))


def test_offset_out_of_range() -> None:
    conn = engine(broker_with_stream())
    conn.receive_data(request_frame(fetch_request(5), correlation_id=1), 0.0)
    [frame] = split_responses(conn.data_to_send(0.0))
    assert fetched(frame)[0] == ErrorCode.offset_out_of_range.value


def test_amqp_messages_are_served_as_records() -> None:
    broker = broker_with_stream()
    stream = broker.vhosts["/"].queues["t"]
    for n in range(3):
        stream.enqueue(Message("orders", f"key-{n}", Properties(headers={"h": "v"}, timestamp=1_700_000_000),
                               b"body-%d" % n), None, 5.0)
    conn = engine(broker)
    conn.receive_data(request_frame(fetch_request(1), correlation_id=1), 5.0)
    [frame] = split_responses(conn.data_to_send(5.0))
    error, high, rows = fetched(frame)
    assert (error, high) == (0, 3)
    assert [(r.offset, r.key, r.value, r.headers, r.timestamp) for r in rows] == [
        (n, b"key-%d" % n, b"body-%d" % n, (records.Header("h", b"v"),), 1_700_000_000_000) for n in (1, 2)]


def test_a_fetch_serves_only_what_is_on_disk(tmp_path: Path) -> None:
    """The high watermark is what the journal has written: a record a
    crash could take back is never sent, so a reader's position is never
    past the end the broker comes back with (it would reset or skip)."""
    store = Store(tmp_path)
    store.ch.declare_queue("t", durable=True, arguments={"x-queue-type": "stream"}, now=5.0)
    stream = store.queue("t")
    for n in range(3):
        stream.enqueue(Message("", "t", Properties(delivery_mode=2), b"body-%d" % n), None, 5.0)
        if n == 1:
            store.sync()
    conn = engine(store.broker)
    conn.receive_data(request_frame(fetch_request(0, wait_ms=0), correlation_id=1), 5.0)
    [frame] = split_responses(conn.data_to_send(5.0))
    error, high, rows = fetched(frame)
    assert (error, high, [r.value for r in rows]) == (0, 2, [b"body-0", b"body-1"])  # the third is not on disk
    store.sync()
    conn.receive_data(request_frame(fetch_request(2, wait_ms=0), correlation_id=2), 5.0)
    [frame] = split_responses(conn.data_to_send(5.0))
    error, high, rows = fetched(frame)
    assert (error, high, [r.value for r in rows]) == (0, 3, [b"body-2"])
    store.close()
