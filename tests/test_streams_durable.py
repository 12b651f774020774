"""Streams on disk, through the embedded broker with a data directory:
readers behind the memory window read back from disk, in order, holding
one batch each; offsets, retention and the log survive a restart."""

from __future__ import annotations

from pathlib import Path

import trio

import amqlite
from amqlite.core.stream import READ_BATCH, Stream

STREAM = {"x-queue-type": "stream"}


def the_stream(broker: amqlite.Broker, name: str = "events") -> Stream:
    stream = broker.core.vhosts["/"].queues[name]
    assert isinstance(stream, Stream)
    return stream


async def publish(broker: amqlite.Broker, count: int, start: int = 0, name: str = "events") -> None:
    ch = await broker.channel()
    await ch.confirm_select()
    for n in range(start, start + count - 1):
        outcome = ch.publish_nowait(b"event-%d" % n, routing_key=name)
        assert outcome is not None and outcome.routed == 1
    # Confirmed: on disk (the journal synced it), and with it every one before.
    outcome = await ch.publish(b"event-%d" % (start + count - 1), routing_key=name)
    assert outcome is not None and outcome.routed == 1


async def read(broker: amqlite.Broker, offset: object, count: int, name: str = "events") -> list[tuple[int, bytes]]:
    ch = await broker.channel()
    got = []
    async with await ch.consume(name, prefetch=50, offset=offset) as deliveries:
        async for delivery in deliveries:
            got.append((delivery.offset, delivery.body))
            delivery.ack()
            if len(got) == count:
                break
    await ch.close()
    return got


async def test_readers_behind_the_memory_window_read_from_disk_in_order(tmp_path: Path) -> None:
    async with amqlite.open_broker(data_dir=tmp_path, queue_memory_budget=20) as broker:
        ch = await broker.channel()
        await ch.queue_declare("events", durable=True, arguments=STREAM)
        total = 4 * READ_BATCH  # a backlog well past one batch and the next
        await publish(broker, total)
        await trio.sleep(0.05)  # the last write's page-out
        stream = the_stream(broker)
        assert len(stream._memory) <= 20  # the rest is on disk only

        results: dict[object, list[tuple[int, bytes]]] = {}
        held: list[int] = []

        async def reader(offset: object, count: int) -> None:
            results[offset] = await read(broker, offset, count)

        async def watch() -> None:
            while len(results) < 3:
                held.append(max((len(r.buffer) for r in stream._readers.values()), default=0))
                await trio.sleep(0)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader, "first", total)
            nursery.start_soon(reader, 400, total - 400)
            nursery.start_soon(reader, total - 10, 10)
            nursery.start_soon(watch)
    assert results["first"] == [(n, b"event-%d" % n) for n in range(total)]
    assert results[400] == results["first"][400:]
    assert results[total - 10] == results["first"][total - 10:]
    assert max(held) <= READ_BATCH + READ_BATCH // 2  # one batch and the next, never the backlog


async def test_offsets_and_the_log_survive_a_restart(tmp_path: Path) -> None:
    async with amqlite.open_broker(data_dir=tmp_path, queue_memory_budget=10) as broker:
        ch = await broker.channel()
        await ch.queue_declare("events", durable=True, arguments=STREAM)
        await publish(broker, 100)
    async with amqlite.open_broker(data_dir=tmp_path, queue_memory_budget=10) as broker:
        stream = the_stream(broker)
        assert (stream.first, stream.end) == (0, 100)
        await publish(broker, 5, start=100)  # offsets go on, never reused
        got = await read(broker, "first", 105)
        assert got == [(n, b"event-%d" % n) for n in range(105)]
        assert await read(broker, 103, 2) == got[103:]


async def test_retention_survives_a_restart_and_frees_what_it_removed(tmp_path: Path) -> None:
    arguments = {**STREAM, "x-max-length-bytes": 2000, "x-stream-max-segment-size-bytes": 500}
    async with amqlite.open_broker(data_dir=tmp_path) as broker:
        ch = await broker.channel()
        await ch.queue_declare("events", durable=True, arguments=arguments)
        await publish(broker, 1000)  # "event-n": about 9 bytes each, 9 KB in all
        before = the_stream(broker)
        first = before.first
        assert 0 < first < 1000 - 2000 // 10
        journal = broker.core.journal
        live = sum((journal._live - journal._definition_live).values())  # the stream's declaration aside
        assert live == 2 * (1000 - first)  # the records retention removed count no more
    async with amqlite.open_broker(data_dir=tmp_path) as broker:
        stream = the_stream(broker)
        assert (stream.first, stream.end) == (first, 1000)
        got = await read(broker, "first", 1000 - first)
        assert got == [(n, b"event-%d" % n) for n in range(first, 1000)]


async def test_a_deleted_stream_leaves_nothing_live_and_does_not_come_back(tmp_path: Path) -> None:
    async with amqlite.open_broker(data_dir=tmp_path) as broker:
        ch = await broker.channel()
        await ch.queue_declare("events", durable=True, arguments=STREAM)
        await publish(broker, 50)
        await ch.queue_delete("events")
        assert sum(broker.core.journal._live.values()) == 0
    async with amqlite.open_broker(data_dir=tmp_path) as broker:
        assert "events" not in broker.core.vhosts["/"].queues


async def test_a_groups_committed_offset_survives_a_restart(tmp_path: Path) -> None:
    async with amqlite.open_broker(data_dir=tmp_path) as broker:
        ch = await broker.channel()
        await ch.queue_declare("events", durable=True, arguments=STREAM)
        await publish(broker, 20)
        worker = await broker.channel()
        async with await worker.consume("events", prefetch=5, offset="first",
                                        arguments={"x-stream-group": "mailer"}) as deliveries:
            async for delivery in deliveries:
                delivery.ack()
                if delivery.offset == 11:
                    break
        await trio.sleep(0.05)  # the commit rides the next write
    async with amqlite.open_broker(data_dir=tmp_path) as broker:
        assert the_stream(broker).group_offsets["mailer"].committed == 12
        worker = await broker.channel()
        async with await worker.consume("events", prefetch=5,
                                        arguments={"x-stream-group": "mailer"}) as deliveries:
            async for delivery in deliveries:
                assert delivery.offset == 12  # resumes right after what was acked
                break


async def test_a_group_offset_set_from_outside_or_deleted_survives_a_restart(tmp_path: Path) -> None:
    """Kafka's OffsetCommit and DeleteGroups/OffsetDelete act on the same
    group offsets as x-stream-group consumers, and are journalled alike."""
    async with amqlite.open_broker(data_dir=tmp_path) as broker:
        ch = await broker.channel()
        await ch.queue_declare("events", durable=True, arguments=STREAM)
        await publish(broker, 20)
        stream = the_stream(broker)
        assert stream.commit_group("kafka", 7) == 7
        assert stream.commit_group("far", 99) == 20  # past the end: the end
        assert stream.commit_group("gone", 3) == 3
        await trio.sleep(0.05)
        assert stream.forget_group("gone") and not stream.forget_group("never")
        await trio.sleep(0.05)
    async with amqlite.open_broker(data_dir=tmp_path) as broker:
        stream = the_stream(broker)
        assert {name: o.committed for name, o in stream.group_offsets.items()} == {"kafka": 7, "far": 20}
        worker = await broker.channel()
        async with await worker.consume("events", prefetch=5, arguments={"x-stream-group": "kafka"}) as deliveries:
            async for delivery in deliveries:
                assert delivery.offset == 7  # an AMQP member resumes where Kafka committed
                break
    async with amqlite.open_broker(data_dir=tmp_path) as broker:
        # The deletion stays deleted after a second restart too (its record is kept live).
        assert "gone" not in the_stream(broker).group_offsets
