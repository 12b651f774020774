"""Consumer timeouts in the embedded API, on trio's autojump clock: a
delivery held past x-consumer-timeout closes its channel (ChannelClosed
with the 406) and goes to another consumer."""

from __future__ import annotations

import pytest
import trio

import amqlite
from amqlite.embedded import ChannelClosed


async def test_a_held_delivery_closes_the_channel_and_is_redelivered(autojump_clock):
    async with amqlite.open_broker() as broker:
        slow, fast = await broker.channel(), await broker.channel()
        await slow.queue_declare("work", arguments={"x-consumer-timeout": 60_000})
        await slow.publish(b"long task", routing_key="work")
        held = await slow.consume("work", prefetch=1)
        delivery = await held.__anext__()
        started = trio.current_time()
        others = await fast.consume("work")
        with trio.fail_after(120):
            redelivered = await others.__anext__()
        assert trio.current_time() - started == pytest.approx(60, abs=0.1)
        assert redelivered.body == b"long task" and redelivered.redelivered
        assert slow.closed is not None and slow.closed.cause.reply_code == 406
        assert "timed out. Timeout value used: 60000 ms" in slow.closed.cause.reply_text
        with pytest.raises(ChannelClosed) as late:
            delivery.ack()
        assert late.value.cause.reply_code == 406
        redelivered.ack()
        # The held consumer's iteration ends.
        with pytest.raises(StopAsyncIteration):
            await held.__anext__()


async def test_acked_in_time_nothing_happens(autojump_clock):
    async with amqlite.open_broker(consumer_timeout=10_000) as broker:
        channel = await broker.channel()
        await channel.queue_declare("work")
        for _ in range(3):
            await channel.publish(b"x", routing_key="work")
        consumer = await channel.consume("work", prefetch=1)  # each delivered when the last is acked
        for _ in range(3):
            delivery = await consumer.__anext__()
            await trio.sleep(9)
            delivery.ack()
        await trio.sleep(60)
        assert channel.closed is None


async def test_the_default_is_off(autojump_clock):
    async with amqlite.open_broker() as broker:
        channel = await broker.channel()
        await channel.queue_declare("work")
        await channel.publish(b"x", routing_key="work")
        consumer = await channel.consume("work")
        delivery = await consumer.__anext__()
        await trio.sleep(24 * 3600)
        assert channel.closed is None
        delivery.ack()
