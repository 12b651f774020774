"""The embedded broker with a data directory: durable like `amqlite serve`."""

from __future__ import annotations

from pathlib import Path

import amqlite
from amqlite import Properties

PERSISTENT = Properties(delivery_mode=2)


async def test_durable_queues_and_persistent_messages_come_back(tmp_path: Path) -> None:
    async with amqlite.open_broker(data_dir=tmp_path) as broker:
        ch = await broker.channel()
        await ch.queue_declare("jobs", durable=True)
        await ch.queue_declare("scratch")
        await ch.confirm_select()
        for body in (b"a", b"b", b"c"):
            outcome = await ch.publish(body, routing_key="jobs", properties=PERSISTENT)
            # Confirmed means on disk: the journal has synced this message.
            assert outcome is not None and outcome.routed == 1
            assert broker.core.journal is not None and broker.core.journal.synced >= broker.core.journal.position
        await ch.publish(b"transient", routing_key="jobs")
        (await ch.get("jobs")).ack()  # "a" is done
    async with amqlite.open_broker(data_dir=tmp_path) as broker:
        ch = await broker.channel()
        bodies = []
        while (delivery := await ch.get("jobs", no_ack=True)) is not None:
            bodies.append(delivery.body)
        assert bodies == [b"b", b"c"]
        assert "scratch" not in broker.core.vhosts["/"].queues


async def test_a_backlog_beyond_the_memory_budget_pages_and_drains_in_order(tmp_path: Path) -> None:
    async with amqlite.open_broker(data_dir=tmp_path, queue_memory_budget=8) as broker:
        ch = await broker.channel()
        await ch.queue_declare("big", durable=True)
        await ch.confirm_select()
        for i in range(200):
            await ch.publish(b"%03d" % i, routing_key="big", properties=PERSISTENT)
        await ch.publish(b"sync", routing_key="big", properties=PERSISTENT)
        ready = broker.core.vhosts["/"].queues["big"].ready
        assert ready.paged > 150 and ready.in_memory <= 20
        got = []
        async with await ch.consume("big", prefetch=5) as deliveries:
            async for delivery in deliveries:
                got.append(delivery.body)
                delivery.ack()
                if len(got) == 201:
                    break
        assert got == [b"%03d" % i for i in range(200)] + [b"sync"]


async def test_a_refused_persistent_publish_is_answered_at_once_during_a_disk_outage(
        tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The embedded API and the AMQP engine share the journal's one confirm
    rule: a refused publish (a nack) waits for nothing. The embedded API
    used to wait for the disk whatever the outcome, so during an outage a
    publisher heard nothing until the disk came back."""
    import functools

    import trio

    from amqlite import embedded
    from faultyfs import FaultyFS

    fs = FaultyFS()
    monkeypatch.setattr(embedded, "DiskJournal", functools.partial(embedded.DiskJournal, fs=fs))
    async with amqlite.open_broker(data_dir=tmp_path) as broker:
        journal = broker.core.journal
        assert journal is not None
        ch = await broker.channel()
        await ch.queue_declare("jobs", durable=True)
        await ch.confirm_select()
        fs.full = True
        ch.publish_nowait(b"in flight", routing_key="jobs", properties=PERSISTENT)  # its write fails
        with trio.fail_after(5):
            while journal.accepting:
                await trio.sleep(0.01)
            outcome = await ch.publish(b"refused", routing_key="jobs", properties=PERSISTENT)
        assert outcome is not None and outcome.rejected and journal.synced < journal.position
        fs.full = False


async def test_a_consistent_hash_exchange_places_each_key_on_the_same_queue_after_a_restart(tmp_path: Path) -> None:
    """Buckets are numbered in binding order; recovery must rebuild them in
    that order, or a restart would move keys between partitions and break
    per-key order across it."""
    keys = [f"customer-{i}" for i in range(200)]

    async def placement(broker: amqlite.Broker) -> dict[str, str]:
        ch = await broker.channel()
        for key in keys:
            await ch.publish(key.encode(), exchange="orders", routing_key=key)
        where = {}
        for queue in ("p0", "p1", "p2"):
            while (delivery := await ch.get(queue, no_ack=True)) is not None:
                where[delivery.body.decode()] = queue
        return where

    async with amqlite.open_broker(data_dir=tmp_path) as broker:
        ch = await broker.channel()
        await ch.exchange_declare("orders", "x-consistent-hash", durable=True)
        # Declared in one order, bound in another, with unequal weights.
        for queue in ("p2", "p0", "p1"):
            await ch.queue_declare(queue, durable=True)
        for queue, weight in (("p1", "1"), ("p2", "3"), ("p0", "2")):
            await ch.queue_bind(queue, "orders", weight)
        before = await placement(broker)
    assert len(before) == len(keys) and set(before.values()) == {"p0", "p1", "p2"}
    async with amqlite.open_broker(data_dir=tmp_path) as broker:
        assert await placement(broker) == before


async def test_a_durable_exchanges_deduplication_window_survives_a_restart(tmp_path: Path) -> None:
    def with_id(n: int) -> Properties:
        return Properties(delivery_mode=2, headers={"x-deduplication-header": f"id-{n}"})

    async with amqlite.open_broker(data_dir=tmp_path) as broker:
        ch = await broker.channel()
        await ch.exchange_declare("orders", "fanout", durable=True,
                                  arguments={"x-message-deduplication": True, "x-cache-size": 3})
        await ch.queue_declare("shipping", durable=True)
        await ch.queue_bind("shipping", "orders")
        await ch.confirm_select()
        for n in range(5):  # the window keeps ids 2, 3 and 4
            await ch.publish(b"%d" % n, exchange="orders", properties=with_id(n))
    async with amqlite.open_broker(data_dir=tmp_path) as broker:
        ch = await broker.channel()
        await ch.confirm_select()
        for n in (2, 3, 4, 0, 1, 5):  # the known ids first: new ones push the oldest out
            outcome = await ch.publish(b"%d again" % n, exchange="orders", properties=with_id(n))
            assert outcome is not None and not outcome.rejected
        bodies = []
        while (delivery := await ch.get("shipping", no_ack=True)) is not None:
            bodies.append(delivery.body)
        assert bodies == [b"0", b"1", b"2", b"3", b"4", b"0 again", b"1 again", b"5 again"]
        assert len(broker.core.vhosts["/"].exchanges["orders"].deduplicator) == 3
    async with amqlite.open_broker(data_dir=tmp_path) as broker:
        # The ids taken after the first restart were journalled too: 0, 1 and 5.
        ch = await broker.channel()
        for n in (5, 1, 0):
            await ch.publish(b"%d thrice" % n, exchange="orders", properties=with_id(n))
        assert await ch.get("shipping") is None
