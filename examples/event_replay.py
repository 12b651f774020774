"""A stream of user signups, read four ways.

``signups`` is a stream: consuming does not remove anything. Three hours of
signups arrive (one every ten minutes), then:

- a new service (recommendations) reads from day one: ``offset="first"``;
- a service that had a bug is fixed and replays the last hour: ``offset="1h"``;
- two consumer groups, ``welcome-mail`` and ``analytics``, each read
  everything independently, with the broker keeping each group's place.
  The mailer's worker dies half-way; its replacement resumes right after
  the last signup the group acked.

Run it: ``python examples/event_replay.py``. The three hours pass on
trio's mock clock, which jumps ahead whenever every task sleeps, so it
takes no time; the broker's clock is trio's, so offsets by time follow.
"""

from __future__ import annotations

import trio
import trio.testing

import amqlite

STREAM = {"x-queue-type": "stream"}
SIGNUPS = [f"user-{n:02d}" for n in range(18)]
#: Between two signups: ten minutes in the tests' virtual time.
INTERVAL = 600.0


async def read(broker: amqlite.Broker, count: int, **consume: object) -> list[str]:
    """What a reader gets: ``count`` signups, each acked."""
    connection = await broker.connection()  # a group member is a connection
    channel = await connection.channel()
    seen = []
    async with await channel.consume("signups", prefetch=10, **consume) as deliveries:  # type: ignore[arg-type]
        async for delivery in deliveries:
            seen.append(delivery.body.decode())
            delivery.ack()
            if len(seen) == count:
                break
    await connection.close()
    return seen


async def main() -> dict[str, list[str]]:
    async with amqlite.open_broker() as broker:
        channel = await broker.channel()
        await channel.queue_declare("signups", durable=True, arguments={**STREAM, "x-max-age": "7D"})
        for user in SIGNUPS:
            await channel.publish(user.encode(), routing_key="signups")
            await trio.sleep(INTERVAL)

        results = {
            "recommendations (from day one)": await read(broker, len(SIGNUPS), offset="first"),
            # The last hour: the signups of the last six intervals.
            "fixed service (last hour)": await read(broker, 6, offset="1h"),
            "analytics (group)": await read(broker, len(SIGNUPS), offset="first",
                                            arguments={"x-stream-group": "analytics"}),
        }
        # The mailer's first worker handles 7 signups, then its connection dies.
        first = await read(broker, 7, offset="first", arguments={"x-stream-group": "welcome-mail"})
        # Its replacement names no offset: it resumes after the group's last ack.
        rest = await read(broker, len(SIGNUPS) - 7, arguments={"x-stream-group": "welcome-mail"})
        results["welcome-mail (group, first worker)"] = first
        results["welcome-mail (group, replacement)"] = rest
        stream = broker.core.vhosts["/"].queues["signups"]
        results["committed offsets"] = [f"{name}={offset.committed}"
                                        for name, offset in sorted(stream.group_offsets.items())]  # type: ignore[attr-defined]
        for reader, users in results.items():
            print(f"{reader:36} {', '.join(users)}")
        return results


if __name__ == "__main__":
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
