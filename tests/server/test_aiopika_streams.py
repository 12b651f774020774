"""Streams and partitions through aio-pika, against amqlite and the
reference RabbitMQ: the same scenario, the same answers."""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
import aiormq
import pytest

from .conftest import BrokerUnderTest
from .test_aiopika_scenarios import run

STREAM = {"x-queue-type": "stream"}


async def read(channel: aio_pika.abc.AbstractChannel, queue: aio_pika.abc.AbstractQueue, offset: Any,
               count: int) -> list[tuple[int, bytes]]:
    got: list[tuple[int, bytes]] = []
    done = asyncio.Event()

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        got.append((message.headers["x-stream-offset"], message.body))  # type: ignore[arg-type]
        await message.ack()
        if len(got) == count:
            done.set()

    tag = await queue.consume(on_message, arguments={"x-stream-offset": offset})
    await asyncio.wait_for(done.wait(), 5)
    await queue.cancel(tag)
    return got


def test_a_stream_read_from_several_offsets_by_aio_pika(broker: BrokerUnderTest) -> None:
    async def scenario() -> list[list[tuple[int, bytes]]]:
        async with await aio_pika.connect(broker.url) as connection:
            channel = await connection.channel(publisher_confirms=True)
            await channel.set_qos(prefetch_count=4)
            name = broker.name("s")
            queue = await channel.declare_queue(name, durable=True, arguments=STREAM)
            for n in range(6):
                await channel.default_exchange.publish(aio_pika.Message(b"e%d" % n), routing_key=name)
            results = [await read(channel, queue, spec, count) for spec, count in (("first", 6), (4, 2))]
            await queue.delete(if_unused=False, if_empty=False)
            return results

    first, from_four = run(scenario)
    assert first == [(n, b"e%d" % n) for n in range(6)]
    assert from_four == first[4:]


def test_basic_get_on_a_stream_closes_the_connection_with_540(broker: BrokerUnderTest) -> None:
    async def scenario() -> str:
        connection = await aio_pika.connect(broker.url)
        channel = await connection.channel()
        name = broker.name("s")
        queue = await channel.declare_queue(name, durable=True, arguments=STREAM)
        try:
            with pytest.raises(aiormq.exceptions.ConnectionNotImplemented) as refused:
                await queue.get()
            return str(refused.value)  # the class is aiormq's for 540
        finally:
            async with await aio_pika.connect(broker.url) as cleanup:
                await (await cleanup.channel()).queue_delete(name)
            await connection.close()

    assert run(scenario).startswith("NOT_IMPLEMENTED - basic.get not supported by stream queues queue 's-")


def test_a_consistent_hash_exchange_keeps_each_key_on_one_partition(broker: BrokerUnderTest) -> None:
    async def scenario() -> dict[str, set[str]]:
        async with await aio_pika.connect(broker.url) as connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.declare_exchange(broker.name("x"), "x-consistent-hash", auto_delete=True)
            partitions = [await channel.declare_queue(broker.name("p"), exclusive=True) for _ in range(3)]
            for partition in partitions:
                await partition.bind(exchange, "1")
            for _ in range(2):
                for n in range(60):
                    await exchange.publish(aio_pika.Message(b"k%d" % n), routing_key=f"k{n}")
            where: dict[str, set[str]] = {}
            for partition in partitions:
                while (message := await partition.get(no_ack=True, fail=False)) is not None:
                    where.setdefault(message.body.decode(), set()).add(partition.name)
            return where

    where = run(scenario)
    assert len(where) == 60 and all(len(queues) == 1 for queues in where.values())
