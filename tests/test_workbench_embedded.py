"""The dead-letter workbench through the embedded API: browsing reads
paged messages from disk and changes nothing, a selective redrive of
paged messages survives a restart exactly once, and the rate limit runs
on trio's clock."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import amqlite
from amqlite import workbench
from amqlite.core.browse import Filter
from amqlite.core.message import Properties

PERSISTENT = Properties(delivery_mode=2)


def _tagged(i: int) -> Properties:
    return Properties(delivery_mode=2, headers={"kind": "poison" if i % 3 == 0 else "fine"})


async def test_browse_reads_paged_messages_from_disk_and_changes_nothing(tmp_path: Path) -> None:
    async with amqlite.open_broker(data_dir=tmp_path, queue_memory_budget=8) as broker:
        ch = await broker.channel()
        await ch.queue_declare("dlq", durable=True)
        await ch.confirm_select()
        for i in range(100):
            await ch.publish(b"%03d" % i, routing_key="dlq", properties=_tagged(i))
        queue = broker.core.vhosts["/"].queues["dlq"]
        assert queue.paged_count > 50
        paged_before = queue.paged_count

        shown = await ch.queue_browse("dlq", offset=40, limit=10)
        assert [b.position for b in shown] == list(range(40, 50))
        assert [b.message.body for b in shown] == [b"%03d" % i for i in range(40, 50)]
        assert all(b.paged and not b.redelivered for b in shown)
        everything = [b.message.body for b in await ch.queue_browse("dlq", limit=1000)]
        assert everything == [b"%03d" % i for i in range(100)]
        for offset in (0, 3, 7, 8, 9, 50, 95, 99, 100):  # across memory and disk, where a paged run is skipped
            page = await ch.queue_browse("dlq", offset=offset, limit=7)
            assert [b.message.body for b in page] == everything[offset:offset + 7], offset
        poison = await ch.queue_browse("dlq", limit=100, filter=Filter(headers={"kind": "poison"}))
        assert [b.message.body for b in poison] == [b"%03d" % i for i in range(0, 100, 3)]
        assert queue.paged_count == paged_before and queue.message_count == 100

        got = []
        async with await ch.consume("dlq", prefetch=10) as deliveries:
            async for delivery in deliveries:
                got.append((delivery.body, delivery.redelivered))
                delivery.ack()
                if len(got) == 100:
                    break
        assert got == [(b"%03d" % i, False) for i in range(100)]


async def test_a_selective_redrive_of_paged_messages_moves_each_once_across_a_restart(tmp_path: Path) -> None:
    async with amqlite.open_broker(data_dir=tmp_path, queue_memory_budget=8) as broker:
        ch = await broker.channel()
        await ch.queue_declare("dlq", durable=True)
        await ch.queue_declare("fixed", durable=True)
        await ch.confirm_select()
        for i in range(90):
            await ch.publish(b"%03d" % i, routing_key="dlq", properties=_tagged(i))
        assert broker.core.vhosts["/"].queues["dlq"].paged_count > 50
        dry = await ch.queue_redrive_matching("dlq", Filter(headers={"kind": "poison"}), to="fixed", dry_run=True)
        assert (dry.matched, dry.done, broker.core.vhosts["/"].queues["dlq"].message_count) == (30, 0, 90)
        job = await ch.queue_redrive_matching("dlq", Filter(headers={"kind": "poison"}), to="fixed")
        assert (job.state, job.matched, job.done, job.skipped) == ("done", 30, 30, 0)
        deleted = await ch.queue_delete_matching("dlq", Filter(headers={"kind": "fine"}, min_deaths=1))
        assert deleted == 0  # none died: nothing matches
        await ch.publish(b"sync", routing_key="other", properties=PERSISTENT)
    async with amqlite.open_broker(data_dir=tmp_path, queue_memory_budget=8) as broker:
        ch = await broker.channel()

        async def drain(name: str) -> list[bytes]:
            out = []
            while (got := await ch.get(name, no_ack=True)) is not None:
                out.append(got.body)
            return out

        moved = await drain("fixed")
        assert moved == [b"%03d" % i for i in range(0, 90, 3)]
        assert await drain("dlq") == [b"%03d" % i for i in range(90) if i % 3]


async def test_a_redrive_keeps_to_its_rate_on_trios_clock(autojump_clock) -> None:  # type: ignore[no-untyped-def]
    async with amqlite.open_broker() as broker:
        ch = await broker.channel()
        await ch.queue_declare("dlq")
        await ch.queue_declare("slow")
        for i in range(10):
            await ch.publish(b"%d" % i, routing_key="dlq")
        start = trio.current_time()
        seen = []
        async with trio.open_nursery() as nursery:
            async def watch() -> None:
                await trio.sleep(0.25)  # between the moves, which are on the half second
                for _ in range(5):
                    await trio.sleep(1)
                    seen.append(broker.core.vhosts["/"].queues["slow"].message_count)

            nursery.start_soon(watch)
            job = await ch.queue_redrive_matching("dlq", to="slow", rate=2)
            took = trio.current_time() - start
        assert job.done == 10
        # One at once, then two a second: the last of ten 4.5 s in.
        assert 4.5 <= took < 4.6
        assert seen[:4] == [3, 5, 7, 9]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(0, 3), min_size=1, max_size=60), st.integers(0, 3), st.integers(1, 40),
       st.one_of(st.none(), st.integers(0, 30)))
def test_a_redrive_over_disk_moves_each_match_once_and_a_restart_agrees(tmp_path_factory, kinds, wanted, batch,
                                                                        limit) -> None:  # type: ignore[no-untyped-def]
    """Paged and in-memory messages alike, steps of any size: what matches
    is in the destination once, in order, the rest in place, in order,
    before and after a restart."""
    data_dir = tmp_path_factory.mktemp("workbench")
    bodies = [b"%02d" % n for n in range(len(kinds))]
    matching = [body for body, kind in zip(bodies, kinds) if kind == wanted]
    moved = matching if limit is None else matching[:limit]
    kept = [body for body in bodies if body not in moved]

    async def drain(ch, name: str) -> list[bytes]:  # type: ignore[no-untyped-def]
        out = []
        while (got := await ch.get(name, no_ack=True)) is not None:
            out.append(got.body)
        return out

    async def run() -> None:
        async with amqlite.open_broker(data_dir=data_dir, queue_memory_budget=8) as broker:
            ch = await broker.channel()
            await ch.queue_declare("dlq", durable=True)
            await ch.queue_declare("fixed", durable=True)
            for body, kind in zip(bodies, kinds):
                await ch.publish(body, routing_key="dlq",
                                 properties=Properties(delivery_mode=2, headers={"kind": kind}))
            await ch.confirm_select()
            await ch.publish(b"sync", routing_key="other", properties=PERSISTENT)
            await trio.sleep(0.05)
            if len(bodies) > 20:
                assert broker.core.vhosts["/"].queues["dlq"].paged_count, "nothing was paged out"
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(workbench, "BATCH", batch)
                job = await ch.queue_redrive_matching("dlq", Filter(headers={"kind": str(wanted)}), to="fixed",
                                                      limit=limit)
            assert job.done == len(moved)
            browsed = await ch.queue_browse("fixed", limit=100)
            assert [b.message.body for b in browsed] == moved
            assert [b.message.body for b in await ch.queue_browse("dlq", limit=100)] == kept
        async with amqlite.open_broker(data_dir=data_dir, queue_memory_budget=8) as broker:
            ch = await broker.channel()
            assert await drain(ch, "fixed") == moved
            assert await drain(ch, "dlq") == kept

    trio.run(run)
