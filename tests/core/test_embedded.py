"""The embedded trio API: channels, consumer iterators, errors, time."""

from __future__ import annotations

import pytest
import trio
import trio.testing

import amqlite
from amqlite import ChannelClosed, Properties
from amqlite.core.errors import NotAllowed, NotFound, PreconditionFailed, ResourceLocked


async def test_publish_consume_ack_round_trip():
    async with amqlite.open_broker() as broker:
        ch = await broker.channel()
        ok = await ch.queue_declare("q")
        assert (ok.queue, ok.message_count, ok.consumer_count) == ("q", 0, 0)
        outcome = await ch.publish(b"hello", routing_key="q", properties=Properties(content_type="text/plain"))
        assert outcome.routed == 1
        async with await ch.consume("q") as consumer:
            delivery = await consumer.__anext__()
            assert delivery.body == b"hello"
            assert delivery.properties.content_type == "text/plain"
            assert (delivery.exchange, delivery.routing_key) == ("", "q")
            assert delivery.consumer_tag == consumer.tag
            assert not delivery.redelivered and delivery.delivery_count == 0
            delivery.ack()
        await ch.close()
        # Acked: nothing comes back when the channel goes away.
        other = await broker.channel()
        assert (await other.queue_declare("q")).message_count == 0


async def test_unacked_delivery_returns_when_channel_closes():
    async with amqlite.open_broker() as broker:
        ch = await broker.channel()
        await ch.queue_declare("q")
        await ch.publish(b"x", routing_key="q")
        consumer = await ch.consume("q")
        await consumer.__anext__()
        await ch.close()
        other = await broker.channel()
        again = await other.get("q")
        assert again is not None and again.redelivered and again.body == b"x"


async def test_consumer_sees_messages_published_by_another_task(autojump_clock):
    async with amqlite.open_broker() as broker:
        ch = await broker.channel()
        await ch.queue_declare("q")
        received = []

        async def consume(task_status=trio.TASK_STATUS_IGNORED):
            consumer = await ch.consume("q", no_ack=True)
            task_status.started()
            async for delivery in consumer:
                received.append(delivery.body)
                if len(received) == 3:
                    await consumer.cancel()

        with trio.fail_after(60):  # virtual time: a hang fails at once
            async with trio.open_nursery() as nursery:
                await nursery.start(consume)
                producer = await broker.channel()
                for body in (b"1", b"2", b"3"):
                    await producer.publish(body, routing_key="q")
        assert received == [b"1", b"2", b"3"]


async def test_get_reports_message_count_and_none_when_empty():
    async with amqlite.open_broker() as broker:
        ch = await broker.channel()
        await ch.queue_declare("q")
        for body in (b"a", b"b"):
            await ch.publish(body, routing_key="q")
        first = await ch.get("q", no_ack=True)
        assert first.body == b"a" and first.message_count == 1
        second = await ch.get("q")
        assert second.message_count == 0
        second.ack()
        assert await ch.get("q") is None


async def test_channel_error_closes_only_that_channel():
    async with amqlite.open_broker() as broker:
        bad = await broker.channel()
        good = await broker.channel()
        await good.queue_declare("q")
        with pytest.raises(NotFound) as info:
            await bad.queue_declare("missing", passive=True)
        assert info.value.reply_code == 404
        with pytest.raises(ChannelClosed) as closed:
            await bad.publish(b"x", routing_key="q")
        assert closed.value.cause is info.value
        with pytest.raises(ChannelClosed):
            await bad.queue_declare("q")
        assert (await good.publish(b"y", routing_key="q")).routed == 1
        assert (await good.get("q", no_ack=True)).body == b"y"


async def test_channel_error_requeues_the_channels_unacked_messages_and_ends_consumers():
    async with amqlite.open_broker() as broker:
        ch = await broker.channel()
        await ch.queue_declare("q")
        await ch.publish(b"x", routing_key="q")
        consumer = await ch.consume("q")
        delivery = await consumer.__anext__()
        with pytest.raises(PreconditionFailed):
            ch.ack(delivery.delivery_tag + 100)
        with pytest.raises(ChannelClosed):
            delivery.ack()
        assert [d async for d in consumer] == []
        other = await broker.channel()
        again = await other.get("q")
        assert again.body == b"x" and again.redelivered


async def test_consumer_tag_reuse_raises_not_allowed():
    async with amqlite.open_broker() as broker:
        ch = await broker.channel()
        await ch.queue_declare("q")
        await ch.consume("q", consumer_tag="t")
        with pytest.raises(NotAllowed) as info:
            await ch.consume("q", consumer_tag="t")
        assert info.value.connection_level


async def test_consumer_iterator_ends_on_cancel():
    async with amqlite.open_broker() as broker:
        ch = await broker.channel()
        await ch.queue_declare("q")
        consumer = await ch.consume("q")
        await consumer.cancel()
        assert consumer.cancelled
        assert [d async for d in consumer] == []
        await ch.publish(b"x", routing_key="q")
        assert (await ch.queue_declare("q")).message_count == 1


async def test_leaving_consumer_block_cancels_it():
    async with amqlite.open_broker() as broker:
        ch = await broker.channel()
        await ch.queue_declare("q")
        async with await ch.consume("q") as consumer:
            assert (await ch.queue_declare("q")).consumer_count == 1
        assert consumer.cancelled
        assert (await ch.queue_declare("q")).consumer_count == 0


async def test_consumer_iterator_ends_when_queue_deleted(autojump_clock):
    async with amqlite.open_broker() as broker:
        ch = await broker.channel()
        await ch.queue_declare("q")
        consumer = await ch.consume("q")
        seen = []

        async def read():
            async for delivery in consumer:
                seen.append(delivery.body)

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                await ch.publish(b"x", routing_key="q")
                await trio.testing.wait_all_tasks_blocked()
                other = await broker.channel()
                await other.queue_delete("q")
        assert seen == [b"x"]
        assert consumer.cancelled


async def test_prefetch_bounds_what_a_consumer_receives_before_acking():
    async with amqlite.open_broker() as broker:
        ch = await broker.channel()
        await ch.queue_declare("q")
        for i in range(5):
            await ch.publish(b"%d" % i, routing_key="q")
        consumer = await ch.consume("q", prefetch=2)
        first = consumer.receive_nowait()
        second = consumer.receive_nowait()
        with pytest.raises(trio.WouldBlock):
            consumer.receive_nowait()
        assert (first.body, second.body) == (b"0", b"1")
        first.ack()
        assert consumer.receive_nowait().body == b"2"
        with pytest.raises(trio.WouldBlock):
            consumer.receive_nowait()
        assert (await ch.queue_declare("q")).message_count == 2


async def test_nack_requeue_redelivers_to_consumer():
    async with amqlite.open_broker() as broker:
        ch = await broker.channel()
        await ch.queue_declare("q")
        await ch.publish(b"x", routing_key="q")
        consumer = await ch.consume("q")
        first = await consumer.__anext__()
        first.nack(requeue=True)
        again = await consumer.__anext__()
        assert again.body == b"x" and again.redelivered and again.delivery_count == 1
        again.reject(requeue=False)
        assert (await ch.queue_declare("q")).message_count == 0


async def test_exclusive_queue_belongs_to_its_connection():
    async with amqlite.open_broker() as broker:
        conn = await broker.connection()
        owner = await conn.channel()
        await owner.queue_declare("mine", exclusive=True)
        ch = await broker.channel()
        with pytest.raises(ResourceLocked):
            await ch.queue_declare("mine", passive=True)
        await conn.close()
        other = await broker.channel()
        with pytest.raises(NotFound):
            await other.queue_declare("mine", passive=True)


async def test_tx_and_confirm_through_embedded():
    async with amqlite.open_broker() as broker:
        ch = await broker.channel()
        await ch.queue_declare("q")
        await ch.tx_select()
        assert await ch.publish(b"a", routing_key="q") is None
        assert (await ch.queue_declare("q")).message_count == 0
        [outcome] = await ch.tx_commit()
        assert outcome.routed == 1
        await ch.publish(b"b", routing_key="q")
        await ch.tx_rollback()
        assert (await ch.queue_declare("q")).message_count == 1
        confirm = await broker.channel()
        await confirm.queue_declare("full", arguments={"x-max-length": 0, "x-overflow": "reject-publish"})
        await confirm.confirm_select()
        assert (await confirm.publish(b"x", routing_key="full")).rejected


async def test_message_ttl_runs_on_trio_clock(autojump_clock):
    async with amqlite.open_broker() as broker:
        ch = await broker.channel()
        await ch.queue_declare("q", arguments={"x-message-ttl": 5000})
        await ch.publish(b"x", routing_key="q")
        await trio.sleep(4.99)
        assert (await ch.queue_declare("q", arguments={"x-message-ttl": 5000})).message_count == 1
        await trio.sleep(0.02)
        assert (await ch.queue_declare("q", arguments={"x-message-ttl": 5000})).message_count == 0


async def test_short_ttl_wakes_driver_sleeping_on_a_longer_deadline(autojump_clock):
    async with amqlite.open_broker() as broker:
        ch = await broker.channel()
        await ch.queue_declare("q")
        await ch.publish(b"long", routing_key="q", properties=Properties(expiration="60000"))
        await trio.sleep(1)
        await ch.publish(b"short", routing_key="q", properties=Properties(expiration="500"))
        await trio.sleep(0.5)
        assert (await ch.queue_declare("q")).message_count == 1


async def test_queue_expires_on_trio_clock(autojump_clock):
    async with amqlite.open_broker() as broker:
        ch = await broker.channel()
        await ch.queue_declare("tmp", arguments={"x-expires": 2000})
        await trio.sleep(1.5)
        await ch.queue_declare("tmp", arguments={"x-expires": 2000})  # renews the lease
        await trio.sleep(1.9)
        await ch.queue_declare("tmp", passive=True)
        await trio.sleep(2.1)
        with pytest.raises(NotFound):
            await ch.queue_declare("tmp", passive=True)


async def test_max_message_size_option():
    async with amqlite.open_broker(max_message_size=4) as broker:
        ch = await broker.channel()
        await ch.queue_declare("q")
        with pytest.raises(PreconditionFailed):
            await ch.publish(b"12345", routing_key="q")
        assert ch.closed is not None


async def test_leaving_open_broker_closes_connections():
    async with amqlite.open_broker() as broker:
        ch = await broker.channel()
        await ch.queue_declare("q", exclusive=True)
        core = broker.core
    assert not core.connections
    assert "q" not in core.vhosts["/"].queues


# -- checkpoint rules of the hot paths ---------------------------------------


async def test_publish_in_a_cancelled_scope_raises_and_publishes_nothing():
    async with amqlite.open_broker() as broker:
        ch = await broker.channel()
        await ch.queue_declare("q")
        with trio.CancelScope() as scope:
            scope.cancel()
            with pytest.raises(trio.Cancelled):
                await ch.publish(b"x", routing_key="q")
        assert (await ch.queue_declare("q", passive=True)).message_count == 0


async def test_next_delivery_in_a_cancelled_scope_raises_and_keeps_the_delivery():
    async with amqlite.open_broker() as broker:
        ch = await broker.channel()
        await ch.queue_declare("q")
        await ch.publish(b"first", routing_key="q")
        consumer = await ch.consume("q")
        await trio.testing.wait_all_tasks_blocked()
        with trio.CancelScope() as scope:
            scope.cancel()
            with pytest.raises(trio.Cancelled):
                await consumer.__anext__()
        delivery = await consumer.__anext__()
        assert delivery.body == b"first"


async def test_hot_paths_let_other_tasks_run_once_every_schedule_every_calls():
    # Publishing and consuming schedule only every SCHEDULE_EVERY calls, but
    # they must never starve the rest of the program.
    every = amqlite.embedded.SCHEDULE_EVERY
    async with amqlite.open_broker() as broker:
        ch = await broker.channel()
        await ch.queue_declare("q")
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker)
            consumer = await ch.consume("q", prefetch=10 * every)
            ticks = 0
            for _ in range(10 * every):
                await ch.publish(b"x", routing_key="q")
            # Ten schedule points, give or take the one where the ticker
            # stood in trio's batch when counting started.
            assert 9 <= ticks <= 11
            ticks = 0
            for _ in range(10 * every):
                (await consumer.__anext__()).ack()
            assert 9 <= ticks <= 11
            nursery.cancel_scope.cancel()
