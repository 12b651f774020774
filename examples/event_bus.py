"""A fanout event bus: one event, many independent subscribers.

``orders`` is a fanout exchange: billing and shipping each get every order
event on their own queue, at their own pace. ``audit`` is a topic exchange
bound to ``orders``: the EU auditor sees ``order.eu.*`` only, the archive
sees everything (``#``). Run it: ``python examples/event_bus.py``.
"""

from __future__ import annotations

import trio

import amqlite

EVENTS = [("order.eu.created", b"o-1"), ("order.us.created", b"o-2"), ("order.eu.cancelled", b"o-3")]


async def subscriber(channel: amqlite.Channel, queue: str, expected: int, seen: dict[str, list[str]]) -> None:
    async with await channel.consume(queue, prefetch=10) as deliveries:
        async for delivery in deliveries:
            seen.setdefault(queue, []).append(f"{delivery.routing_key}:{delivery.body.decode()}")
            delivery.ack()
            if len(seen[queue]) == expected:
                return


async def main() -> dict[str, list[str]]:
    async with amqlite.open_broker() as broker:
        channel = await broker.channel()
        await channel.exchange_declare("orders", "fanout")
        await channel.exchange_declare("audit", "topic")
        await channel.exchange_bind("audit", "orders")  # exchange-to-exchange
        subscriptions = {
            "billing": ("orders", ""),
            "shipping": ("orders", ""),
            "audit.eu": ("audit", "order.eu.*"),
            "audit.archive": ("audit", "#"),
        }
        for queue, (exchange, pattern) in subscriptions.items():
            await channel.queue_declare(queue)
            await channel.queue_bind(queue, exchange, pattern)

        seen: dict[str, list[str]] = {}
        expected = {"billing": 3, "shipping": 3, "audit.eu": 2, "audit.archive": 3}
        async with trio.open_nursery() as nursery:
            for queue, count in expected.items():
                nursery.start_soon(subscriber, await broker.channel(), queue, count, seen)
            for routing_key, body in EVENTS:
                await channel.publish(body, exchange="orders", routing_key=routing_key)
        for queue, events in seen.items():
            print(f"{queue:14} {events}")
        return seen


if __name__ == "__main__":
    trio.run(main)
