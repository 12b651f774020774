"""A stream keeps a Kafka batch whole (one BATCH record, an offset per
record) beside AMQP messages; AMQP readers get each record as a message,
from memory and from disk, before and after a restart, and the batches'
producer sequences come back with the log."""

from __future__ import annotations

from pathlib import Path

import trio

import amqlite
from amqlite.core.idempotence import Verdict
from amqlite.core.stream import Stream
from amqlite.kafka import records
from amqlite.kafka.mapping import KEY_HEADER, TIMESTAMP_HEADER, StoredBatch
from amqlite.kafka.records import Header, Record

STREAM = {"x-queue-type": "stream"}


def the_stream(broker: amqlite.Broker, name: str = "events") -> Stream:
    stream = broker.core.vhosts["/"].queues[name]
    assert isinstance(stream, Stream)
    return stream


def kafka_batch(n: int, size: int, producer: int = -1, sequence: int = -1) -> StoredBatch:
    rows = [Record(i, 1_700_000_000_000 + n * 100 + i, b"key-%d" % n, b"value-%d-%d" % (n, i),
                   (Header("h", b"%d" % i), Header("empty", None)))
            for i in range(size)]
    data = records.encode(0, rows, producer_id=producer, producer_epoch=0 if producer >= 0 else -1,
                          base_sequence=sequence)
    return StoredBatch(records.parse(data))


def append(stream: Stream, batch: StoredBatch) -> int:
    placed = StoredBatch(batch.batch.with_base_offset(stream.end))
    offset = stream.append_batch(placed, trio.current_time())
    assert offset is not None
    if batch.batch.producer_id >= 0:
        b = batch.batch
        stream.producers.appended(b.producer_id, b.producer_epoch, b.base_sequence, b.last_sequence, offset)
    return offset


async def read_all(broker: amqlite.Broker, count: int) -> list[tuple[int, bytes, dict]]:
    ch = await broker.channel()
    got = []
    async with await ch.consume("events", prefetch=100, offset="first") as deliveries:
        async for delivery in deliveries:
            got.append((delivery.offset, delivery.body, dict(delivery.properties.headers or {})))
            delivery.ack()
            if len(got) == count:
                break
    await ch.close()
    return got


def expected(batches: list[tuple[str, int]]) -> list[tuple[int, bytes]]:
    """(offset, body) of a mix of Kafka batches ("k", n) and AMQP publishes ("a", n)."""
    out = []
    for kind, n in batches:
        if kind == "k":
            out.extend((len(out), b"value-%d-%d" % (n, i)) for i in range(3))
        else:
            out.append((len(out), b"amqp-%d" % n))
    return out


async def fill(broker: amqlite.Broker, plan: list[tuple[str, int]]) -> None:
    ch = await broker.channel()
    await ch.confirm_select()
    stream = the_stream(broker)
    for kind, n in plan:
        if kind == "k":
            append(stream, kafka_batch(n, 3, producer=42, sequence=3 * n))
        else:
            assert await ch.publish(b"amqp-%d" % n, routing_key="events") is not None


PLAN = [("k", n) if n % 4 else ("a", n) for n in range(200)]


async def test_batches_and_messages_share_offsets_and_read_as_messages_in_memory() -> None:
    async with amqlite.open_broker() as broker:
        ch = await broker.channel()
        await ch.queue_declare("events", durable=True, arguments=STREAM)
        await fill(broker, PLAN)
        want = expected(PLAN)
        assert the_stream(broker).end == len(want)
        got = await read_all(broker, len(want))
        assert [(offset, body) for offset, body, _ in got] == want
        first_kafka = next(headers for _, body, headers in got if body.startswith(b"value-1-"))
        assert first_kafka[KEY_HEADER] == b"key-1"
        assert first_kafka[TIMESTAMP_HEADER] == 1_700_000_000_100
        assert first_kafka["h"] == b"0" and first_kafka["empty"] is None


async def test_batches_read_back_from_disk_and_survive_a_restart(tmp_path: Path) -> None:
    want = expected(PLAN)
    async with amqlite.open_broker(data_dir=tmp_path, queue_memory_budget=20) as broker:
        ch = await broker.channel()
        await ch.queue_declare("events", durable=True, arguments=STREAM)
        await fill(broker, PLAN)
        with trio.fail_after(10):  # the last write's page-out (a batch may straddle the budget)
            while len(the_stream(broker)._memory) > 20 + 3:
                await trio.sleep(0.01)
        got = await read_all(broker, len(want))
        assert [(offset, body) for offset, body, _ in got] == want
    async with amqlite.open_broker(data_dir=tmp_path, queue_memory_budget=20) as broker:
        stream = the_stream(broker)
        assert (stream.first, stream.end) == (0, len(want))
        got = await read_all(broker, len(want))
        assert [(offset, body) for offset, body, _ in got] == want
        # The producer's last batches came back: a retry is a duplicate,
        # answered with the offset it was stored at; the next one follows.
        last = max(n for kind, n in PLAN if kind == "k")
        verdict, offset = stream.producers.check(42, 0, 3 * last, 3 * last + 2)
        assert verdict is Verdict.DUPLICATE
        assert want[offset][1] == b"value-%d-0" % last
        assert stream.producers.check(42, 0, 3 * last + 3, 3 * last + 5) == (Verdict.APPEND, -1)


async def test_batches_recover_from_segment_indexes(tmp_path: Path) -> None:
    """Sealed segments get an index file, which keeps a BATCH record's
    header only; a restart that loads them finds every offset and the
    producer's sequences all the same."""
    want = expected(PLAN)
    async with amqlite.open_broker(data_dir=tmp_path, segment_size=4096) as broker:
        ch = await broker.channel()
        await ch.queue_declare("events", durable=True, arguments=STREAM)
        await fill(broker, PLAN)
        with trio.fail_after(10):
            while len(list(tmp_path.rglob("*.idx"))) < 3:
                await trio.sleep(0.01)
    async with amqlite.open_broker(data_dir=tmp_path, segment_size=4096) as broker:
        stream = the_stream(broker)
        assert (stream.first, stream.end) == (0, len(want))
        got = await read_all(broker, len(want))
        assert [(offset, body) for offset, body, _ in got] == want
        last = max(n for kind, n in PLAN if kind == "k")
        assert stream.producers.check(42, 0, 3 * last, 3 * last + 2)[0] is Verdict.DUPLICATE
