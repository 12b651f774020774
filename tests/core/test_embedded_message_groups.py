"""Message groups in the embedded API, on the autojump clock: workers
share a grouped queue, each group in order, a failing message holding up
only its own group through its retry backoff."""

from __future__ import annotations

import trio

import amqlite
from amqlite.core.message import Properties


async def test_workers_keep_each_group_in_order_while_a_failure_backs_off(autojump_clock):
    async with amqlite.open_broker() as broker:
        channel = await broker.channel()
        await channel.queue_declare("jobs", arguments={"x-message-group-header": "tenant",
                                                       "x-delayed-retry-min": 30_000})
        for n in range(4):
            for tenant in ("red", "blue"):
                await channel.publish(f"{tenant}-{n}".encode(), routing_key="jobs",
                                      properties=Properties(headers={"tenant": tenant}))
        done: list[tuple[float, str]] = []
        failed = set()

        async def worker() -> None:
            ch = await broker.channel()
            async with await ch.consume("jobs", prefetch=1) as deliveries:
                async for delivery in deliveries:
                    body = delivery.body.decode()
                    await trio.sleep(1)
                    if body == "red-1" and body not in failed:
                        failed.add(body)
                        delivery.nack(requeue=True)  # red waits out 30 s; blue goes on
                        continue
                    done.append((trio.current_time(), body))
                    delivery.ack()

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(worker)
            with trio.move_on_after(120):
                while len(done) < 8:
                    await trio.sleep(0.5)
            nursery.cancel_scope.cancel()
        order = [body for _, body in done]
        assert [b for b in order if b.startswith("red")] == ["red-0", "red-1", "red-2", "red-3"]
        assert [b for b in order if b.startswith("blue")] == ["blue-0", "blue-1", "blue-2", "blue-3"]
        finished = dict((body, at) for at, body in done)
        # Blue finished long before red's backoff ended; red-1 came back after about 30 s.
        assert finished["blue-3"] < finished["red-1"] - 20
