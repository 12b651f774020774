"""Orders partitioned by customer, handled by a group of three workers.

``orders`` is an ``x-consistent-hash`` exchange over three streams,
``orders-0`` to ``orders-2``: the customer id is the routing key, so all of
one customer's orders land on one partition, in order. The ``fulfilment``
group has three workers (three connections); each consumes every partition,
and the broker makes each worker active on one of them, so the partitions
are processed in parallel and each customer's orders in sequence. When a
worker leaves, the broker hands its partition to another, which resumes at
the group's committed offset.

Run it: ``python examples/partitioned_orders.py``.
"""

from __future__ import annotations

import trio

import amqlite

PARTITIONS = [f"orders-{n}" for n in range(3)]
CUSTOMERS = [f"customer-{n}" for n in range(12)]
ORDERS_EACH = 5
GROUP = {"x-stream-group": "fulfilment"}


async def worker(broker: amqlite.Broker, name: str, handled: dict[str, list[tuple[str, str, int]]],
                 total: int, done: trio.Event) -> None:
    """Consume every partition as a member of the group; record what this
    worker handled: (partition, customer, order number)."""
    connection = await broker.connection()
    channel = await connection.channel()
    handled[name] = []

    async def partition(queue: str) -> None:
        async with await channel.consume(queue, prefetch=20, offset="first", arguments=GROUP) as deliveries:
            async for delivery in deliveries:
                customer, number = delivery.body.decode().split("#")
                handled[name].append((queue, customer, int(number)))
                delivery.ack()
                if sum(len(orders) for orders in handled.values()) == total:
                    done.set()

    async with trio.open_nursery() as nursery:
        for queue in PARTITIONS:
            nursery.start_soon(partition, queue)
        await done.wait()
        nursery.cancel_scope.cancel()
    await connection.close()


async def main() -> dict[str, object]:
    async with amqlite.open_broker() as broker:
        channel = await broker.channel()
        await channel.exchange_declare("orders", "x-consistent-hash", durable=True)
        for queue in PARTITIONS:
            await channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "stream"})
            await channel.queue_bind(queue, "orders", "1")  # equal weights
        handled: dict[str, list[tuple[str, str, int]]] = {}
        done = trio.Event()
        total = len(CUSTOMERS) * ORDERS_EACH
        async with trio.open_nursery() as nursery:
            for name in ("worker-a", "worker-b", "worker-c"):
                nursery.start_soon(worker, broker, name, handled, total, done)
            group = broker.core.vhosts["/"].groups
            while "fulfilment" not in group or len(group["fulfilment"].members) < 3:
                await trio.sleep(0.01)  # until the three have joined
            for number in range(ORDERS_EACH):
                for customer in CUSTOMERS:
                    await channel.publish(f"{customer}#{number}".encode(), exchange="orders", routing_key=customer)

        partitions_of = {name: sorted({queue for queue, _, _ in orders}) for name, orders in handled.items()}
        sequence: dict[str, list[int]] = {}
        for orders in handled.values():
            for _, customer, number in orders:
                sequence.setdefault(customer, []).append(number)
        for name, queues in partitions_of.items():
            print(f"{name}: partitions {queues}, {len(handled[name])} orders")
        in_order = all(numbers == list(range(ORDERS_EACH)) for numbers in sequence.values())
        print(f"every customer's orders handled once, in order: {in_order}")
        return {"partitions": partitions_of, "sequence": sequence, "handled": handled}


if __name__ == "__main__":
    trio.run(main)
