"""Message groups under any interleaving (issue 25 part 1): publishes,
acks, nacks, consumers dying and the broker restarting (kill -9 after a
sync) on a durable queue with x-message-group-header. Each group's
deliveries never overlap and go in publish order (a message goes out only
once every earlier one of its group is acked), other groups keep flowing,
and no message is lost."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from amqlite.core.channel import Channel
from amqlite.core.events import Deliver
from amqlite.core.message import Properties

from .support import Store

#: A short slice in make test; AMQLITE_FUZZ_EXAMPLES (make fuzz) for a campaign.
SETTINGS = settings(max_examples=int(os.environ.get("AMQLITE_FUZZ_EXAMPLES", "30")),
                    stateful_step_count=int(os.environ.get("AMQLITE_FUZZ_STEPS", "40")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
QUEUE = "orders"
DEAD = "orders.dead"
GROUPS = ("a", "b", "c", None)
CONSUMERS = 3


class GroupMachine(RuleBasedStateMachine):
    #: Extra queue arguments.
    arguments: dict[str, object] = {}

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="amqlite-groups-"))
        self.store = Store(self.directory)
        self.store.ch.declare_queue(DEAD, durable=True, now=0)
        self.store.ch.declare_queue(QUEUE, durable=True, now=0,
                                    arguments={"x-message-group-header": "customer", **self.arguments})
        self.now = 0.0
        self.published: dict[int, str | None] = {}  # message number -> group
        #: Finished: acked, or dead-lettered (at the delivery limit).
        self.acked: set[int] = set()
        #: Deliveries a consumer holds: (channel index, delivery tag) -> message number.
        self.held: dict[tuple[int, int], int] = {}
        self.channels: list[Channel] = []
        self._open_consumers()

    def _open_consumers(self) -> None:
        self.dead = self.store.broker.connect().open_channel()
        self.dead.consume(DEAD, no_ack=True, now=self.now)
        self.channels = []
        for _ in range(CONSUMERS):
            channel = self.store.broker.connect().open_channel()
            channel.qos(2, now=self.now)
            channel.consume(QUEUE, now=self.now)
            self.channels.append(channel)
        self._collect()

    def _collect(self) -> None:
        """Take every delivery the channels were given, checking each."""
        dead = [e for e in self.dead.outbox if isinstance(e, Deliver)]
        self.dead.outbox.clear()
        self.dead.delivered(len(dead), now=self.now)
        for event in dead:
            number = int(event.message.body)
            assert number not in self.acked, f"message {number} dead-lettered after it finished"
            self.acked.add(number)
        for i, channel in enumerate(self.channels):
            events = [e for e in channel.outbox if isinstance(e, Deliver)]
            channel.outbox.clear()
            for event in events:
                number = int(event.message.body)
                group = self.published[number]
                assert number not in self.acked, f"message {number} delivered after its ack"
                if group is not None:
                    earlier = [n for n, g in self.published.items() if g == group and n < number]
                    assert all(n in self.acked for n in earlier), (
                        f"group {group}: {number} delivered before {[n for n in earlier if n not in self.acked]}")
                    out = [n for n in self.held.values() if self.published[n] == group]
                    assert not out, f"group {group}: {number} delivered while {out} is out"
                self.held[i, event.delivery_tag] = number
            if events:
                channel.delivered(len(events), now=self.now)

    def teardown(self) -> None:
        try:
            self.drain()
        finally:
            self.store.close()
            shutil.rmtree(self.directory, ignore_errors=True)

    @rule(group=st.sampled_from(GROUPS), priority=st.integers(0, 2))
    def publish(self, group: str | None, priority: int) -> None:
        number = len(self.published)
        self.published[number] = group
        headers = {"customer": group} if group is not None else None
        self.store.ch.publish(str(number).encode(), routing_key=QUEUE, now=self.now,
                              properties=Properties(delivery_mode=2, headers=headers, priority=priority))
        self._collect()

    def _pick(self, data: st.DataObject) -> tuple[int, int]:
        return data.draw(st.sampled_from(sorted(self.held)))

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        i, tag = self._pick(data)
        self.acked.add(self.held.pop((i, tag)))
        self.channels[i].ack(tag, now=self.now)
        self._collect()

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def nack(self, data: st.DataObject) -> None:
        i, tag = self._pick(data)
        del self.held[i, tag]
        self.channels[i].nack(tag, requeue=True, now=self.now)
        self._collect()

    @rule(i=st.integers(0, CONSUMERS - 1))
    def consumer_dies(self, i: int) -> None:
        for key in [key for key in self.held if key[0] == i]:
            del self.held[key]
        self.channels[i].connection.close(now=self.now)
        channel = self.store.broker.connect().open_channel()
        channel.qos(2, now=self.now)
        channel.consume(QUEUE, now=self.now)
        self.channels[i] = channel
        self._collect()

    @rule()
    def restart(self) -> None:
        """kill -9 once everything is on disk; consumers reconnect."""
        self.store.sync()
        self.store = self.store.restart(now=self.now, crash=True)
        self.held.clear()
        self._open_consumers()

    @rule()
    def tick(self) -> None:
        self.now += 1
        self.store.broker.tick(self.now)
        self._collect()

    @invariant()
    def nothing_lost(self) -> None:
        queue = self.store.queue(QUEUE)
        out = queue.message_count + queue.unacked + queue.delayed_count
        assert out == len(self.published) - len(self.acked)
        assert queue.unacked == len(self.held)

    def drain(self) -> None:
        """In the end, ack whatever comes until nothing is held: every
        message published comes, and is acked."""
        for _ in range(4 * len(self.published) + 10):
            while not self.held and self.store.queue(QUEUE).delayed_count:
                self.tick()  # a message waiting out its backoff comes back
            if not self.held:
                break
            (i, tag), number = next(iter(self.held.items()))
            del self.held[i, tag]
            self.acked.add(number)
            self.channels[i].ack(tag, now=self.now)
            self._collect()
        assert self.acked == set(self.published)


class TestGroups(GroupMachine.TestCase):  # type: ignore[name-defined,misc]
    settings = SETTINGS



class PriorityGroupMachine(GroupMachine):
    """Within a group, publish order beats priority; across groups priority holds."""

    arguments = {"x-max-priority": 2}


class TestPriorityGroups(PriorityGroupMachine.TestCase):  # type: ignore[name-defined,misc]
    settings = SETTINGS


class RetryGroupMachine(GroupMachine):
    """A failure waits out its backoff holding only its group; at the
    delivery limit it is dead-lettered and the group moves on."""

    arguments = {"x-delayed-retry-min": 1000, "x-delivery-limit": 2, "x-dead-letter-exchange": "",
                 "x-dead-letter-routing-key": DEAD}


class TestRetryGroups(RetryGroupMachine.TestCase):  # type: ignore[name-defined,misc]
    settings = SETTINGS
