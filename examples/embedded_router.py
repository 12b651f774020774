"""An embedded routing engine: headers and topic routing inside one app.

No network and no server: the application routes its own messages through
a headers exchange (by attributes) and a topic exchange (by subject), and
handlers pull from their queues. A priority queue makes urgent jobs jump
the line, and a delayed exchange schedules a reminder.
Run it: ``python examples/embedded_router.py``.
"""

from __future__ import annotations

import trio

import amqlite
from amqlite import Properties


async def drain(channel: amqlite.Channel, queue: str) -> list[str]:
    bodies = []
    while (delivery := await channel.get(queue, no_ack=True)) is not None:
        bodies.append(delivery.body.decode())
    return bodies


async def main() -> dict[str, list[str]]:
    async with amqlite.open_broker() as broker:
        ch = await broker.channel()

        # Headers routing: match on message attributes, not on a key.
        await ch.exchange_declare("by-attrs", "headers")
        await ch.queue_declare("pdf-reports", arguments={"x-max-priority": 9})
        await ch.queue_declare("anything-urgent")
        await ch.queue_bind("pdf-reports", "by-attrs", arguments={"x-match": "all", "format": "pdf", "kind": "report"})
        await ch.queue_bind("anything-urgent", "by-attrs", arguments={"x-match": "any", "urgent": True})

        # Topic routing: subjects with wildcards.
        await ch.exchange_declare("subjects", "topic")
        await ch.queue_declare("sensor-alerts")
        await ch.queue_bind("sensor-alerts", "subjects", "sensor.*.alert")

        # A delayed exchange: the reminder is routed 2 s after publishing.
        await ch.exchange_declare("later", "x-delayed-message", arguments={"x-delayed-type": "direct"})
        await ch.queue_declare("reminders")
        await ch.queue_bind("reminders", "later", "remind")

        def attrs(priority: int = 0, **headers: object) -> Properties:
            return Properties(headers=headers, priority=priority)

        await ch.publish(b"weekly", exchange="by-attrs", properties=attrs(format="pdf", kind="report"))
        await ch.publish(b"incident", exchange="by-attrs", properties=attrs(7, format="pdf", kind="report", urgent=True))
        await ch.publish(b"csv-export", exchange="by-attrs", properties=attrs(format="csv", kind="report"))
        for subject in ("sensor.kitchen.alert", "sensor.kitchen.reading", "sensor.garage.alert"):
            await ch.publish(subject.encode(), exchange="subjects", routing_key=subject)
        await ch.publish(b"water the plants", exchange="later", routing_key="remind", properties=Properties(headers={"x-delay": 2_000}))

        routed = {q: await drain(ch, q) for q in ("pdf-reports", "anything-urgent", "sensor-alerts", "reminders")}
        await trio.sleep(2)
        routed["reminders after 2s"] = await drain(ch, "reminders")
        for queue, bodies in routed.items():
            print(f"{queue:20} {bodies}")
        return routed


if __name__ == "__main__":
    trio.run(main)
