"""A task worker queue: competing workers, at-least-once, retries with
backoff, and a dead-letter queue after the maximum receive count.

Three workers share the ``tasks`` queue with prefetch 2. A task that fails is
rejected with requeue; the broker brings it back after 50 ms, then 100 ms,
then 200 ms (``x-delayed-retry-*``). After three redeliveries it goes to
``tasks.dlq`` with an ``x-death`` header saying why. Run it:
``python examples/task_queue.py``.
"""

from __future__ import annotations

import trio

import amqlite

TASKS = 12
FLAKY = {3, 7}  # fail once, then succeed
BROKEN = {5}  # always fail


async def worker(name: str, channel: amqlite.Channel, done: dict[int, str], log: list[str]) -> None:
    async with await channel.consume("tasks", prefetch=2) as deliveries:
        async for delivery in deliveries:
            task = int(delivery.body)
            await trio.sleep(0.01)  # the work
            if task in BROKEN or (task in FLAKY and delivery.delivery_count == 0):
                log.append(f"{name}: task {task} failed (attempt {delivery.delivery_count + 1})")
                delivery.reject(requeue=True)
            else:
                done[task] = name
                delivery.ack()


async def main() -> dict[str, object]:
    async with amqlite.open_broker() as broker:
        channel = await broker.channel()
        await channel.exchange_declare("tasks.dlx", "fanout")
        await channel.queue_declare("tasks.dlq")
        await channel.queue_bind("tasks.dlq", "tasks.dlx")
        await channel.queue_declare(
            "tasks",
            durable=True,
            arguments={
                "x-delayed-retry-min": 50,
                "x-delayed-retry-multiplier": 2,
                "x-delivery-limit": 3,
                "x-dead-letter-exchange": "tasks.dlx",
            },
        )
        for task in range(TASKS):
            await channel.publish(str(task).encode(), routing_key="tasks")

        done: dict[int, str] = {}
        log: list[str] = []
        async with trio.open_nursery() as nursery:
            for n in range(3):
                nursery.start_soon(worker, f"worker-{n}", await broker.channel(), done, log)
            with trio.move_on_after(2):
                while len(done) < TASKS - len(BROKEN):
                    await trio.sleep(0.01)
                # Let the broken task exhaust its retries.
                while (await channel.queue_declare("tasks.dlq", passive=True)).message_count == 0:
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()

        dead = await channel.get("tasks.dlq")
        assert dead is not None
        death = dead.headers["x-death"][0]
        dead.ack()
        print("\n".join(log))
        print(f"done: {sorted(done)} by {sorted(set(done.values()))}")
        print(f"dead-lettered: task {dead.body.decode()} after {death['count']} x {death['reason']}")
        return {"done": done, "dead": int(dead.body), "reason": death["reason"], "log": log}


if __name__ == "__main__":
    trio.run(main)
