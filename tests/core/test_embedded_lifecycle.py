"""Embedded consumers and channels at the end of their life: nothing the
application never received is stranded, and nothing closed keeps working."""

from __future__ import annotations

import pytest
import trio

import amqlite
from amqlite import ChannelClosed
from amqlite.core.errors import CHANNEL_ERROR, ChannelStateError


async def _fill(ch: amqlite.Channel, queue: str, count: int) -> None:
    await ch.queue_declare(queue)
    for i in range(count):
        ch.publish_nowait(str(i).encode(), routing_key=queue)


async def test_readme_pattern_does_not_strand_buffered_deliveries(autojump_clock):
    # async with consume(prefetch=10) / take one / ack / break, round after
    # round on one channel: the nine buffered deliveries must go back.
    with trio.fail_after(60):  # a stranded queue stalls; the clock jumps there
        seen, unacked, left = await _readme_rounds()
    assert seen == list(range(200))  # in order: returned to their position
    assert unacked == 0 and left == 800


async def _readme_rounds() -> tuple[list[int], int, int]:
    async with amqlite.open_broker() as broker:
        ch = await broker.channel()
        await _fill(ch, "q", 1000)
        seen = []
        for _ in range(200):
            async with await ch.consume("q", prefetch=10) as consumer:
                async for delivery in consumer:
                    seen.append(int(delivery.body))
                    delivery.ack()
                    break
        return seen, len(ch._core.unacked), (await ch.queue_declare("q", passive=True)).message_count


async def test_returned_deliveries_are_not_a_delivery_attempt():
    async with amqlite.open_broker() as broker:
        ch = await broker.channel()
        await _fill(ch, "q", 3)
        consumer = await ch.consume("q", prefetch=3)
        first = await consumer.__anext__()
        await consumer.cancel()
        assert first.body == b"0"
        again = [await ch.get("q") for _ in range(3)]
        # The one the application held is still unacked on the channel, so
        # basic.get sees the two it never received, in order, as new.
        assert [d.body if d else None for d in again] == [b"1", b"2", None]
        assert all(not d.redelivered and d.delivery_count == 0 for d in again if d)


async def test_no_ack_consumer_loses_nothing_it_never_handed_over():
    async with amqlite.open_broker() as broker:
        ch = await broker.channel()
        await _fill(ch, "q", 50)
        async with await ch.consume("q", no_ack=True) as consumer:
            async for delivery in consumer:
                assert delivery.body == b"0"
                break
        # Received with no_ack: settled. The other 49 are back, unacked by nobody.
        assert (await ch.queue_declare("q", passive=True)).message_count == 49
        assert not ch._core.unacked


async def test_closing_a_channel_returns_unreceived_deliveries_uncounted():
    async with amqlite.open_broker() as broker:
        ch = await broker.channel()
        await _fill(ch, "q", 3)
        consumer = await ch.consume("q", prefetch=3)
        await consumer.__anext__()  # received, never acked
        await ch.close()
        other = await broker.channel()
        got = [await other.get("q", no_ack=True) for _ in range(3)]
        counts = [(d.body, d.redelivered, d.delivery_count) for d in got if d]
        assert counts == [(b"0", True, 1), (b"1", False, 0), (b"2", False, 0)]


async def test_channels_of_a_closed_connection_refuse_every_operation():
    async with amqlite.open_broker() as broker:
        conn = await broker.connection()
        ch = await conn.channel()
        await ch.queue_declare("q")
        await conn.close()
        with pytest.raises(ChannelClosed):
            await ch.publish(b"x", routing_key="q")
        with pytest.raises(ChannelClosed):
            await ch.consume("q")
        with pytest.raises(ChannelStateError):
            await conn.channel()
        other = await broker.channel()
        assert (await other.queue_declare("q", passive=True)).message_count == 0


async def test_a_closed_channel_registers_no_zombie_consumer():
    async with amqlite.open_broker() as broker:
        conn = await broker.connection()
        ch = await conn.channel()
        await ch.queue_declare("q", arguments={"x-single-active-consumer": True})
        core_channel = ch._core
        await conn.close()
        with pytest.raises(ChannelStateError) as refused:
            core_channel.consume("q", now=broker.now())
        assert refused.value.reply_code == CHANNEL_ERROR
        # The queue is free for a live consumer.
        live = await broker.channel()
        ch2 = live
        live.publish_nowait(b"m", routing_key="q")
        async with await ch2.consume("q") as consumer:
            delivery = await consumer.__anext__()
            assert delivery.body == b"m"


async def test_embedded_publish_refuses_headers_no_encoder_could_write():
    from amqlite import Properties
    from amqlite.amqp.properties import InvalidProperty
    from amqlite.core.fieldtypes import MAX_NESTING

    def nested(depth: int) -> dict:
        value: dict = {"leaf": 1}
        for _ in range(depth - 1):
            value = {"n": value}
        return value

    async with amqlite.open_broker() as broker:
        ch = await broker.channel()
        await ch.queue_declare("q")
        await ch.publish(b"ok", routing_key="q", properties=Properties(headers=nested(MAX_NESTING)))
        with pytest.raises(InvalidProperty, match="nest deeper"):
            await ch.publish(b"deep", routing_key="q", properties=Properties(headers=nested(2000)))
        other = await broker.channel()
        assert (await other.queue_declare("q", passive=True)).message_count == 1
