"""Conservation: nothing lost, nothing duplicated.

A hypothesis state machine drives one broker through random interleavings of
publishes (direct and x-delayed-message exchanges), consumers, basic.get,
ack/nack/reject/recover, purge, queue deletion and redeclaration, channel
close, exchange deletion and the passage of time. Every published message
carries a unique id in its body.

A *copy* is one message in one queue: ``(id, queue, None)`` for a routed
copy, ``(id, "dlq", queue)`` for the dead-lettered copy of a message that
died in ``queue``, ``("X", id)`` for a message not yet routed (pending in a
delayed exchange) or dropped before reaching any queue. After every step
each copy the topology says must exist is found in exactly one place:

* ready in its queue (found by walking the ready list's priority levels),
* waiting out a retry delay (the queue's retry heap),
* unacked on a channel (tracked from Deliver events and get results, and
  cross-checked against ``channel.unacked``),
* pending in a delayed exchange,
* acked (by us, or delivered to a no-ack consumer),
* dropped, as reported by ``broker.on_drop`` with a plausible reason,
* dead-lettered, i.e. its DLQ copy exists (which must itself be in exactly
  one of the places above).

Nothing else may appear anywhere. Counters (message_count, bytes,
delayed_count, unacked on queues and consumers, the ready list's level
counts, broker.drops) must agree with what the walk finds and never go
negative; redelivered/delivery_count must match how often we gave the copy
back; nothing due may be left behind after a tick; and no ready message may
sit in a queue while one of its consumers has credit.

``AMQLITE_FUZZ_EXAMPLES`` (and optionally ``AMQLITE_FUZZ_STEPS``) turn this
into a longer campaign, e.g. ``AMQLITE_FUZZ_EXAMPLES=20000 pytest
tests/core/test_conservation.py``.
"""

from __future__ import annotations

import os
from collections import Counter, OrderedDict
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from amqlite.core.broker import Broker
from amqlite.core.errors import PreconditionFailed
from amqlite.core.events import ConsumerCancelled, Deliver
from amqlite.core.message import DELAYED, GONE, READY, UNACKED, Message, Properties

# --------------------------------------------------------------------------
# Topology
# --------------------------------------------------------------------------

EX = "ex"  # direct
DEX = "dex"  # x-delayed-message, x-delayed-type direct
DLX = "dlx"  # fanout, bound to DLQ
DLQ = "dlq"
QUEUES = ("q1", "q2")
ALL_QUEUES = ("q1", "q2", DLQ)
EXCHANGES = (EX, DEX, DLX)
#: Routing key -> queues bound with it (on both ex and dex).
BINDINGS = {"k1": ("q1",), "k2": ("q2",), "k12": ("q1", "q2"), "none": ()}

BASE_REASONS = {
    "unroutable",
    "exchange-deleted",
    "expired",
    "maxlen",
    "rejected",
    "delivery_limit",
    "rejected-publish",
    "purged",
    "queue-deleted",
}
DL_SUFFIXES = ("", ":no-dead-letter-exchange", ":dead-letter-unroutable")


def _mid(message: Message) -> str:
    return message.body.decode()


def copy_key(message: Message, where: str) -> tuple:
    """Which copy ``message`` is, seen at ``where`` (a queue or exchange)."""
    if where in EXCHANGES:
        return ("X", _mid(message))
    last = message.headers.get("x-last-death-queue")
    # A dead-letter that went nowhere is reported by the queue it died in.
    if last is None or last == where:
        return (_mid(message), where, None)
    return (_mid(message), where, last)


def walk_ready(queue: Any) -> list:
    """Every READY entry of ``queue``, level by level, checking the ready
    list's own bookkeeping (live/dead per level, count, bytes) on the way."""
    ready = queue.ready
    assert ready._order == sorted(ready._levels, reverse=True), "priority levels out of order"
    found = []
    for priority in ready._order:
        level = ready._levels[priority]
        held = [e for _, e in level.requeued] + list(level.fresh)
        live = [e for e in held if e.state == READY]
        for e in held:
            assert e.state in (READY, GONE), f"entry in state {e.state} left in ready list of {queue.name}"
        assert level.live == len(live) >= 0, (queue.name, priority, level.live, len(live))
        assert level.dead == len(held) - len(live) >= 0, (queue.name, priority, level.dead, len(held) - len(live))
        assert all(e.priority == priority for e in live)
        for seq, e in level.requeued:
            assert seq == e.seq
        found.extend(live)
    assert len({id(e) for e in found}) == len(found), f"an entry is twice in {queue.name}'s ready list"
    assert ready.count == len(found) >= 0, (queue.name, ready.count, len(found))
    assert queue.message_count == len(found)
    assert ready.bytes == sum(e.size for e in found) >= 0
    return found


def walk_delayed(queue: Any) -> list:
    """Every entry of ``queue`` waiting out a retry delay."""
    retries = queue.retries
    items = retries.page(after=-1, limit=len(retries) + 1)
    entries = [e for _, _, e in items]
    assert all(e.state == DELAYED for e in entries), f"stale item in {queue.name}'s retries"
    assert len({id(e) for e in entries}) == len(entries), f"an entry is twice in {queue.name}'s retries"
    assert all(seq == e.seq for seq, _, e in items), f"an entry under another seq in {queue.name}'s retries"
    assert queue.delayed_count == len(entries) == len(retries) >= 0
    return [(due, e) for _, due, e in items]


# --------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------

queue_args = st.fixed_dictionaries(
    {},
    optional={
        "x-message-ttl": st.sampled_from([0, 200, 1000, 3000]),
        "x-max-length": st.integers(0, 4),
        "x-overflow": st.sampled_from(["drop-head", "reject-publish", "reject-publish-dlx"]),
        "x-max-priority": st.integers(1, 3),
        "x-delivery-limit": st.integers(0, 3),
        "x-delayed-retry-min": st.sampled_from([100, 500]),
        "x-dead-letter-exchange": st.sampled_from([DLX, DLX, DLX, "missing"]),
    },
)
dlq_args = st.fixed_dictionaries(
    {},
    optional={
        "x-message-ttl": st.sampled_from([0, 1000]),
        "x-max-length": st.integers(0, 3),
        "x-overflow": st.sampled_from(["drop-head", "reject-publish", "reject-publish-dlx"]),
    },
)
expirations = st.one_of(st.none(), st.sampled_from(["0", "100", "500", "2000"]))
priorities = st.one_of(st.none(), st.integers(0, 4))
routing_keys = st.sampled_from(["k1", "k2", "k12", "k12", "none"])
delays = st.sampled_from([-5, 0, 1, 100, 300, 1000, 2500])
dt = st.sampled_from([0.0, 0.001, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0])
slot = st.integers(0, 2)
manual_mostly = st.sampled_from([False, False, False, True])
admin_ops = st.sampled_from(["purge", "delete", "delete+redeclare", "delete+redeclare", "redeclare", "delayed-exchange"])
index = st.integers(0, 30)


class _Chan:
    """What we know of one channel, from its events and our own calls."""

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        #: tag -> (copy key, queue object, consumer tag or None)
        self.unacked: OrderedDict[int, tuple[tuple, Any, str | None]] = OrderedDict()
        #: consumer tag -> (queue name, no_ack)
        self.consumers: dict[str, tuple[str, bool]] = {}
        self.undelivered = 0  # events taken from the outbox, not yet handed on


# --------------------------------------------------------------------------
# The state machine
# --------------------------------------------------------------------------


class Conservation(RuleBasedStateMachine):
    @initialize(
        q1=queue_args,
        q2=queue_args,
        dlq=dlq_args,
        limits=st.lists(st.sampled_from([1, 2, 1000]), min_size=3, max_size=3),
        consumers=st.lists(st.tuples(slot, st.sampled_from(ALL_QUEUES), manual_mostly, st.integers(0, 3)), max_size=3),
    )
    def setup(self, q1: dict, q2: dict, dlq: dict, limits: list[int], consumers: list) -> None:
        self.now = 0.0
        self.broker = Broker()
        self.drop_log: list[tuple[str, Message, str]] = []
        self.broker.on_drop = lambda where, message, reason: self.drop_log.append((where, message, reason))
        self.conn = self.broker.connect()
        self.admin = self.conn.open_channel()
        self.args = {"q1": q1, "q2": q2, DLQ: dlq}
        self.queues: dict[str, Any] = {}
        self.every_queue: list[Any] = []
        self.admin.declare_exchange(EX, "direct")
        self.admin.declare_exchange(DLX, "fanout")
        self._declare_dex()
        for name in ALL_QUEUES:
            self._declare_queue(name)
        self.limits = limits
        self.chans = [self._open(i) for i in range(3)]
        self.next_id = 0
        #: id -> how it was published: {"via", "routed": tuple|None, "due", "gone"}
        self.published: dict[str, dict[str, Any]] = {}
        self.acked: list[tuple[tuple, Message]] = []
        self.acked_entries: list[Any] = []
        #: copy key -> how often it was given back with requeue (delivery_count).
        self.returns: Counter[tuple] = Counter()
        #: copies we nacked or rejected without requeue.
        self.rejected: set[tuple] = set()
        #: copies we purged, or whose queue we deleted.
        self.purged: set[tuple] = set()
        for ch, name, no_ack, prefetch in consumers:
            self.consume(ch, name, no_ack, prefetch)

    # -- plumbing -------------------------------------------------------

    def _open(self, i: int) -> _Chan:
        channel = self.conn.open_channel()
        channel.buffer_limit = self.limits[i]
        return _Chan(channel)

    def _declare_dex(self) -> None:
        self.admin.declare_exchange(DEX, "x-delayed-message", arguments={"x-delayed-type": "direct"})
        for key, names in BINDINGS.items():
            for name in names:
                if name in self.queues:
                    self.admin.bind_queue(name, DEX, key)

    def _declare_queue(self, name: str) -> None:
        queue = self.admin.declare_queue(name, now=self.now, arguments=self.args[name])
        self.queues[name] = queue
        self.every_queue.append(queue)
        if name == DLQ:
            self.admin.bind_queue(DLQ, DLX)
            return
        for key, names in BINDINGS.items():
            if name in names:
                self.admin.bind_queue(name, EX, key)
                if DEX in self.broker.vhosts["/"].exchanges:
                    self.admin.bind_queue(name, DEX, key)

    def _routes(self, key: str) -> tuple[str, ...]:
        return tuple(name for name in BINDINGS[key] if name in self.queues)

    def _new_id(self) -> str:
        self.next_id += 1
        return f"m{self.next_id}"

    def _drain(self) -> None:
        """Take every event the broker pushed, as a driver would."""
        for chan in self.chans:
            outbox = chan.channel.outbox
            while outbox:
                event = outbox.popleft()
                if isinstance(event, ConsumerCancelled):
                    assert event.consumer_tag in chan.consumers
                    del chan.consumers[event.consumer_tag]
                    continue
                assert isinstance(event, Deliver)
                chan.undelivered += 1
                qname, no_ack = chan.consumers[event.consumer_tag]
                key = copy_key(event.message, qname)
                self._check_redelivery(key, event.redelivered, event.delivery_count)
                if no_ack:
                    self.acked.append((key, event.message))
                else:
                    assert event.delivery_tag not in chan.unacked
                    queue = chan.channel.unacked[event.delivery_tag][1]
                    chan.unacked[event.delivery_tag] = (key, queue, event.consumer_tag)

    def _check_redelivery(self, key: tuple, redelivered: bool, delivery_count: int) -> None:
        returns = self.returns[key]
        assert delivery_count == returns, f"{key}: delivery_count {delivery_count}, given back {returns} times"
        assert redelivered == (returns > 0), f"{key}: redelivered={redelivered} after {returns} returns"

    def _tick(self) -> None:
        """Release what the delayed exchange holds, as the model predicts,
        then run the broker's timers like a driver does."""
        dex = self.broker.vhosts["/"].exchanges.get(DEX)
        for info in self.published.values():
            if info["via"] == DEX and info["routed"] is None and not info["gone"] and info["due"] <= self.now:
                assert dex is not None
                info["routed"] = tuple(n for n in self._routes(info["key"]))
        for _ in range(20):
            deadline = self.broker.next_deadline()
            if deadline is None or deadline > self.now:
                break
            self.broker.tick(self.now)
            self._drain()
        else:
            raise AssertionError("timers keep firing at the same instant")

    # -- observation ----------------------------------------------------

    def observe(self) -> dict[tuple, list[tuple[str, Message]]]:
        """Where every copy is, from the broker's own structures."""
        places: dict[tuple, list[tuple[str, Message]]] = {}

        def put(key: tuple, place: str, message: Message) -> None:
            places.setdefault(key, []).append((place, message))

        vhost = self.broker.vhosts["/"]
        for queue in self.every_queue:
            ready = walk_ready(queue)
            delayed = walk_delayed(queue)
            assert queue.unacked >= 0
            if queue.deleted:
                assert not ready and not delayed, f"deleted {queue.name} still holds messages"
                assert vhost.queues.get(queue.name) is not queue
                continue
            assert vhost.queues[queue.name] is queue
            for entry in ready:
                put(copy_key(entry.message, queue.name), f"ready:{queue.name}", entry.message)
            for _, entry in delayed:
                put(copy_key(entry.message, queue.name), f"delayed:{queue.name}", entry.message)
            with_expiry = [e for e in ready if e.expires_at is not None]
            assert queue._expiring == len(with_expiry), (queue.name, queue._expiring, len(with_expiry))
            indexed = {id(e) for when, _, e in queue._expiry if when == e.expires_at}
            assert all(id(e) in indexed for e in with_expiry), f"{queue.name}: expiring entry not indexed"
        dex = vhost.exchanges.get(DEX)
        if dex is not None:
            assert dex.pending_count == len(list(dex.held.in_memory()))
            for message in dex.held.in_memory().values():
                put(copy_key(message, DEX), "pending", message)
        for i, chan in enumerate(self.chans):
            channel = chan.channel
            assert channel.buffered >= 0
            assert list(channel.unacked) == list(chan.unacked), f"channel {i}: unacked tags differ from deliveries"
            for tag, (entry, queue, consumer, _) in channel.unacked.items():
                key, model_queue, ctag = chan.unacked[tag]
                assert entry.state == UNACKED, f"unacked {key} in state {entry.state}"
                assert queue is model_queue
                assert copy_key(entry.message, queue.name) == key
                assert (consumer.tag if consumer is not None else None) == ctag
                put(key, f"unacked:{i}", entry.message)
            for ctag, consumer in channel.consumers.items():
                assert ctag in chan.consumers
                assert consumer.unacked == sum(1 for _, _, c, _ in channel.unacked.values() if c is consumer) >= 0
            assert set(channel.consumers) == set(chan.consumers)
        for queue in self.every_queue:
            held = sum(1 for chan in self.chans for _, q, _, _ in chan.channel.unacked.values() if q is queue)
            assert queue.unacked == held, (queue.name, queue.unacked, held)
        for key, message in self.acked:
            put(key, "acked", message)
        for where, message, reason in self.drop_log:
            put(copy_key(message, where), f"drop:{reason}", message)
        assert sum(self.broker.drops.values()) == len(self.drop_log)
        for entry in self.acked_entries:
            assert entry.state == GONE, "an acked message came back"
        return places

    def fates(self, places: dict, key: tuple) -> list[str]:
        """Every place ``key`` is in; a dead-lettered copy is where its DLQ copy is."""
        found = [place for place, _ in places.get(key, [])]
        if len(key) == 3 and key[2] is None and key[1] != DLQ:
            child = (key[0], DLQ, key[1])
            for _, message in places.get(child, [])[:1]:
                found.append("dead-lettered:" + message.headers["x-last-death-reason"])
        return found

    @invariant()
    def conserved(self) -> None:
        places = self.observe()
        expected: set[tuple] = set()
        for mid, info in self.published.items():
            root = ("X", mid)
            expected.add(root)
            routed = info["routed"]
            if routed is None:
                want = "drop:exchange-deleted" if info["gone"] else "pending"
                assert self.fates(places, root) == [want], (root, self.fates(places, root))
                continue
            if not routed:
                assert self.fates(places, root) == ["drop:unroutable"], (root, self.fates(places, root))
                continue
            assert self.fates(places, root) == [], (root, self.fates(places, root))
            for name in routed:
                key = (mid, name, None)
                expected.add(key)
                fates = self.fates(places, key)
                assert len(fates) == 1, f"{key} is in {len(fates)} places: {fates}"
                self._check_reason(key, fates[0], places)
                child = (mid, DLQ, name)
                if child in places:
                    expected.add(child)
                    assert self.args[name].get("x-dead-letter-exchange") == DLX, f"{child} from a queue without DLX"
                    child_fates = self.fates(places, child)
                    assert len(child_fates) == 1, f"{child} is in {len(child_fates)} places: {child_fates}"
                    self._check_reason(child, child_fates[0], places)
        ghosts = set(places) - expected
        assert not ghosts, f"copies nobody published: {sorted(ghosts)[:5]}"

    def _check_reason(self, key: tuple, fate: str, places: dict) -> None:
        """A drop or dead-letter reason must fit the queue and what we did."""
        kind, _, reason = fate.partition(":")
        if kind not in ("drop", "dead-lettered"):
            return
        base, suffix = reason, ""
        if ":" in reason:
            base, _, rest = reason.partition(":")
            suffix = ":" + rest
        assert base in BASE_REASONS and suffix in DL_SUFFIXES, f"{key}: odd reason {reason!r}"
        qname = key[1]
        args = self.args[qname]
        if suffix or kind == "dead-lettered":
            assert args.get("x-dead-letter-exchange") is not None, f"{key}: dead-lettered from a queue without DLX"
        if base == "expired":
            if qname != DLQ:
                info = self.published[key[0]]
                assert "x-message-ttl" in args or info["expiration"] is not None, f"{key} expired without a TTL"
            else:
                assert "x-message-ttl" in args, f"{key} expired in the DLQ without a TTL"
        elif base == "maxlen":
            assert "x-max-length" in args, f"{key}: maxlen without x-max-length"
        elif base == "rejected-publish":
            assert args.get("x-overflow") in ("reject-publish", "reject-publish-dlx"), f"{key}: rejected-publish"
        elif base == "delivery_limit":
            assert "x-delivery-limit" in args or "x-delayed-retry-min" in args
            limit = args.get("x-delivery-limit", 20)
            assert self.returns[key] > limit, f"{key}: delivery limit {limit} hit after {self.returns[key]} returns"
        elif base == "rejected":
            assert key in self.rejected, f"{key}: dead-lettered as rejected, but we never rejected it"
        elif base in ("purged",):
            assert key in self.purged, f"{key}: purged, but we never purged or deleted its queue"
        elif base == "queue-deleted":
            assert key in self.purged, f"{key}: dropped as queue-deleted, but its queue was never deleted"

    @invariant()
    def nothing_overdue(self) -> None:
        """Anything with a deadline is in the broker's timers no later than
        that deadline, and nothing due at ``now`` is left after a tick."""
        heap = {(when, id(target)) for when, _, target in self.broker.timers._heap}

        def registered(target: Any, earliest: float) -> None:
            assert target.timer_at is not None and target.timer_at <= earliest, (target.name, target.timer_at, earliest)
            assert (target.timer_at, id(target)) in heap

        for queue in self.queues.values():
            deadlines = [e.expires_at for e in walk_ready(queue) if e.expires_at is not None]
            deadlines += [due for due, _ in walk_delayed(queue)]
            if deadlines:
                registered(queue, min(deadlines))
        dex = self.broker.vhosts["/"].exchanges.get(DEX)
        if dex is not None and dex.pending_count:
            registered(dex, min(dex.held.due_of(i) for i in dex.held.in_memory()))

    @invariant()
    def consumers_served(self) -> None:
        """No ready message waits while a consumer of its queue has credit."""
        for queue in self.queues.values():
            if queue.message_count:
                hungry = [c.tag for c in queue.consumers if c.has_credit()]
                assert not hungry, f"{queue.name} holds {queue.message_count} ready but {hungry} have credit"

    # -- publishing -----------------------------------------------------

    @rule(batch=st.lists(st.tuples(routing_keys, priorities, expirations, st.booleans()), min_size=1, max_size=4))
    def publish(self, batch: list[tuple[str, int | None, str | None, bool]]) -> None:
        for key, priority, expiration, mandatory in batch:
            self._publish(key, priority, expiration, mandatory)

    def _publish(self, key: str, priority: int | None, expiration: str | None, mandatory: bool) -> None:
        mid = self._new_id()
        routed = self._routes(key)
        self.published[mid] = {"via": EX, "routed": routed, "key": key, "expiration": expiration, "gone": False}
        props = Properties(priority=priority, expiration=expiration)
        outcome = self.admin.publish(mid.encode(), now=self.now, exchange=EX, routing_key=key, properties=props, mandatory=mandatory)
        assert outcome is not None
        assert outcome.returned == (mandatory and not routed)
        assert 0 <= outcome.routed <= len(routed)
        assert outcome.rejected == (outcome.routed < len(routed))
        self._drain()

    @precondition(lambda self: DEX in self.broker.vhosts["/"].exchanges)
    @rule(batch=st.lists(st.tuples(routing_keys, delays, expirations, priorities), min_size=1, max_size=3))
    def publish_delayed(self, batch: list[tuple[str, int, str | None, int | None]]) -> None:
        for key, delay, expiration, priority in batch:
            self._publish_delayed(key, delay, expiration, priority)

    def _publish_delayed(self, key: str, delay: int, expiration: str | None, priority: int | None) -> None:
        mid = self._new_id()
        info = {"via": DEX, "routed": None, "key": key, "expiration": expiration, "gone": False, "due": None}
        if delay > 0:
            info["due"] = self.now + delay / 1000
        else:
            info["routed"] = self._routes(key)
        self.published[mid] = info
        props = Properties(priority=priority, expiration=expiration, headers={"x-delay": delay})
        outcome = self.admin.publish(mid.encode(), now=self.now, exchange=DEX, routing_key=key, properties=props)
        assert outcome is not None and outcome.delayed == (delay > 0)
        self._drain()

    # -- consuming ------------------------------------------------------

    @rule(ch=slot, name=st.sampled_from(ALL_QUEUES), no_ack=manual_mostly, prefetch=st.integers(0, 3))
    def consume(self, ch: int, name: str, no_ack: bool, prefetch: int) -> None:
        if name not in self.queues:
            return
        chan = self.chans[ch]
        chan.channel.qos(prefetch, now=self.now)
        # Register first: the consume itself may deliver.
        tag = self.broker.new_name("ctag-", chan.channel.consumers)
        chan.consumers[tag] = (name, no_ack)
        assert chan.channel.consume(name, now=self.now, consumer_tag=tag, no_ack=no_ack) == tag
        self._drain()

    @precondition(lambda self: any(chan.consumers for chan in self.chans))
    @rule(ch=slot, i=index)
    def cancel(self, ch: int, i: int) -> None:
        chan = [chan for chan in self.chans if chan.consumers][ch % sum(1 for c in self.chans if c.consumers)]
        tag = sorted(chan.consumers)[i % len(chan.consumers)]
        assert chan.channel.cancel(tag, now=self.now)
        del chan.consumers[tag]
        self._drain()

    @rule(ch=slot, name=st.sampled_from(ALL_QUEUES), no_ack=manual_mostly)
    def get(self, ch: int, name: str, no_ack: bool) -> None:
        if name not in self.queues:
            return
        chan = self.chans[ch]
        queue = self.queues[name]
        result = chan.channel.get(name, now=self.now, no_ack=no_ack)
        if result is not None:
            key = copy_key(result.message, name)
            self._check_redelivery(key, result.redelivered, result.delivery_count)
            assert result.message_count == queue.message_count
            if no_ack:
                self.acked.append((key, result.message))
            else:
                chan.unacked[result.delivery_tag] = (key, queue, None)
        self._drain()
        assert result is not None or queue.message_count == 0

    @rule(op=st.sampled_from(["hand-on", "hand-on", "global-qos", "unknown-tag"]), ch=slot, n=st.integers(0, 3))
    def client(self, op: str, ch: int, n: int) -> None:
        """Less central client and driver actions, folded into one rule."""
        chan = self.chans[ch]
        if op == "hand-on":
            # The driver passed the buffered deliveries to the client.
            count, chan.undelivered = chan.undelivered, 0
            chan.channel.delivered(count, now=self.now)
        elif op == "global-qos":
            chan.channel.qos(n, global_=True, now=self.now)
        else:
            # A tag that is not (or no longer) unacked is refused and changes nothing.
            with pytest.raises(PreconditionFailed):
                chan.channel.ack(chan.channel._next_tag + 1 + n, now=self.now)
        self._drain()

    # -- settling -------------------------------------------------------

    def _holding(self, ch: int) -> _Chan:
        """The ``ch``-th channel among those holding unacked messages."""
        holding = [chan for chan in self.chans if chan.unacked]
        return holding[ch % len(holding)]

    def _has_unacked(self) -> bool:
        return any(chan.unacked for chan in self.chans)

    def _settle(self, ch: int, i: int, how: str, multiple: bool, requeue: bool, everything: bool = False) -> None:
        chan = self._holding(ch)
        tags = list(chan.unacked)
        tag = 0 if everything else tags[i % len(tags)]
        taken = [t for t in tags if t <= tag or tag == 0] if (multiple or everything) else [tag]
        expectations = []
        for t in taken:
            key, queue, _ = chan.unacked.pop(t)
            entry = chan.channel.unacked[t][0]
            if how == "ack":
                self.acked.append((key, entry.message))
                self.acked_entries.append(entry)
            else:
                if queue.deleted:
                    self.purged.add(key)
                elif requeue:
                    self.returns[key] += 1
                else:
                    self.rejected.add(key)
            expectations.append((key, queue.deleted))
        if how == "ack":
            chan.channel.ack(tag, now=self.now, multiple=multiple or everything)
        elif how == "nack":
            chan.channel.nack(tag, now=self.now, multiple=multiple or everything, requeue=requeue)
        elif how == "reject":
            chan.channel.reject(tag, now=self.now, requeue=requeue)
        else:
            chan.channel.recover(now=self.now)
        self._drain()
        places = self.observe()
        for key, deleted in expectations:
            fates = self.fates(places, key)
            assert len(fates) == 1, f"{key} after {how}: {fates}"
            self._check_settled(key, fates[0], how, requeue, deleted)

    @staticmethod
    def _check_settled(key: tuple, fate: str, how: str, requeue: bool, deleted: bool) -> None:
        kind, _, reason = fate.partition(":")
        base = reason.split(":")[0]
        if how == "ack":
            assert fate == "acked", f"{key} acked but {fate}"
        elif deleted:
            assert fate == "drop:queue-deleted", f"{key} given back to a deleted queue but {fate}"
        elif not requeue:
            assert kind in ("drop", "dead-lettered") and base == "rejected", f"{key} rejected but {fate}"
        else:
            assert kind not in ("drop", "dead-lettered") or base in ("delivery_limit", "expired"), (
                f"{key} requeued but {fate}"
            )

    @precondition(_has_unacked)
    @rule(ch=slot, i=index, multiple=st.booleans())
    def ack(self, ch: int, i: int, multiple: bool) -> None:
        self._settle(ch, i, "ack", multiple, False)

    @precondition(_has_unacked)
    @rule(ch=slot, i=index, multiple=st.booleans(), requeue=st.booleans())
    def nack(self, ch: int, i: int, multiple: bool, requeue: bool) -> None:
        self._settle(ch, i, "nack", multiple, requeue)

    @precondition(_has_unacked)
    @rule(ch=slot, requeue=st.booleans())
    def nack_all(self, ch: int, requeue: bool) -> None:
        self._settle(ch, 0, "nack", True, requeue, everything=True)

    @precondition(_has_unacked)
    @rule(ch=slot, i=index, requeue=st.booleans())
    def reject(self, ch: int, i: int, requeue: bool) -> None:
        self._settle(ch, i, "reject", False, requeue)

    @precondition(_has_unacked)
    @rule(ch=slot)
    def recover(self, ch: int) -> None:
        self._settle(ch, 0, "recover", True, True, everything=True)

    @rule(ch=slot)
    def close_channel(self, ch: int) -> None:
        chan = self.chans[ch]
        for key, queue, _ in chan.unacked.values():
            if queue.deleted:
                self.purged.add(key)
            else:
                self.returns[key] += 1
        chan.channel.close(now=self.now)
        assert not chan.channel.unacked
        self.chans[ch] = self._open(ch)
        self._drain()

    # -- time -----------------------------------------------------------

    @rule(delta=dt)
    def advance(self, delta: float) -> None:
        self.now += delta
        self._tick()
        for queue in self.queues.values():
            for entry in walk_ready(queue):
                assert entry.expires_at is None or entry.expires_at > self.now, f"{queue.name}: expired entry left"
            for due, _ in walk_delayed(queue):
                assert due > self.now, f"{queue.name}: retry left behind"
        dex = self.broker.vhosts["/"].exchanges.get(DEX)
        if dex is not None:
            assert all(dex.held.due_of(i) > self.now for i in dex.held.in_memory()), "delayed message left behind"

    # -- administration -------------------------------------------------

    # Administration is one rule, so that destructive operations stay rare
    # next to publishing and consuming (hypothesis picks rules uniformly).
    @rule(op=admin_ops, name=st.sampled_from(ALL_QUEUES))
    def admin(self, op: str, name: str) -> None:
        if op == "delayed-exchange":
            self._toggle_delayed_exchange()
        elif op == "redeclare" or name not in self.queues:
            if name not in self.queues:
                self._declare_queue(name)
        elif op == "purge":
            self._purge(name)
        else:
            self._delete_queue(name)
            if op == "delete+redeclare":
                self._declare_queue(name)
        self._drain()

    def _purge(self, name: str) -> None:
        queue = self.queues[name]
        held = walk_ready(queue) + [e for _, e in walk_delayed(queue)]
        for entry in held:
            self.purged.add(copy_key(entry.message, name))
        assert self.admin.purge_queue(name) == len(held)
        assert queue.message_count == 0 and queue.delayed_count == 0

    def _delete_queue(self, name: str) -> None:
        queue = self.queues.pop(name)
        ready = walk_ready(queue)
        for entry in ready + [e for _, e in walk_delayed(queue)]:
            self.purged.add(copy_key(entry.message, name))
        assert self.admin.delete_queue(name, now=self.now) == len(ready)
        assert queue.deleted
        self._drain()
        assert not any(q == name for chan in self.chans for q, _ in chan.consumers.values())

    def _toggle_delayed_exchange(self) -> None:
        """Delete the delayed exchange (dropping what it holds), or bring it back."""
        if DEX not in self.broker.vhosts["/"].exchanges:
            self._declare_dex()
            return
        for info in self.published.values():
            if info["via"] == DEX and info["routed"] is None:
                info["gone"] = True
        self.admin.delete_exchange(DEX)


_fuzz = os.environ.get("AMQLITE_FUZZ_EXAMPLES")
_steps = os.environ.get("AMQLITE_FUZZ_STEPS")
Conservation.TestCase.settings = settings(
    max_examples=int(_fuzz) if _fuzz else 150,
    stateful_step_count=int(_steps) if _steps else 40,
    deadline=None,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestConservation = Conservation.TestCase


# --------------------------------------------------------------------------
# Regressions: bugs the state machine found, pinned deterministically
# --------------------------------------------------------------------------


def _broker(**queues: dict) -> tuple[Broker, Any, list[tuple[str, str, str]]]:
    """A broker with the given queues (name -> arguments), a dlx fanout
    exchange bound to any queue named dlq, and a log of drops."""
    broker = Broker()
    drops: list[tuple[str, str, str]] = []
    broker.on_drop = lambda where, message, reason: drops.append((where, message.body.decode(), reason))
    channel = broker.connect().open_channel()
    channel.declare_exchange(DLX, "fanout")
    for name, arguments in queues.items():
        channel.declare_queue(name, now=0.0, arguments=arguments)
        if name == DLQ:
            channel.bind_queue(DLQ, DLX)
    return broker, channel, drops


@pytest.mark.parametrize("settle", ["nack-requeue", "nack-discard", "close"])
def test_message_given_back_to_a_deleted_queue_is_reported_dropped(settle: str) -> None:
    broker, channel, drops = _broker(q={})
    channel.publish(b"m1", now=0.0, routing_key="q")
    got = channel.get("q", now=0.0)
    assert got is not None
    channel.delete_queue("q", now=0.0)
    if settle == "close":
        channel.close(now=0.0)
    else:
        channel.nack(got.delivery_tag, now=0.0, requeue=settle == "nack-requeue")
    assert drops == [("q", "m1", "queue-deleted")]
    assert broker.drops["queue-deleted"] == 1


def test_ack_after_queue_delete_is_not_a_drop() -> None:
    broker, channel, drops = _broker(q={})
    channel.publish(b"m1", now=0.0, routing_key="q")
    got = channel.get("q", now=0.0)
    assert got is not None
    channel.delete_queue("q", now=0.0)
    channel.ack(got.delivery_tag, now=0.0)
    assert drops == []


@pytest.mark.parametrize("dlx", [DLX, None])
def test_reject_publish_dlx_dead_letters_the_refused_message_once(dlx: str | None) -> None:
    args: dict[str, Any] = {"x-max-length": 1, "x-overflow": "reject-publish-dlx"}
    if dlx is not None:
        args["x-dead-letter-exchange"] = dlx
    broker, channel, drops = _broker(q=args, dlq={})
    channel.publish(b"m1", now=0.0, routing_key="q")
    outcome = channel.publish(b"m2", now=0.0, routing_key="q")
    assert outcome is not None and outcome.rejected and outcome.routed == 0
    dlq = broker.vhosts["/"].queues[DLQ]
    if dlx is None:
        # Nowhere to dead-letter it: one drop, for the reason it died.
        assert drops == [("q", "m2", "maxlen")]
        assert dlq.message_count == 0
    else:
        assert drops == []
        assert [e.message.body for e in walk_ready(dlq)] == [b"m2"]
        assert walk_ready(dlq)[0].message.headers["x-last-death-reason"] == "maxlen"
    assert [e.message.body for e in walk_ready(broker.vhosts["/"].queues["q"])] == [b"m1"]


def test_dead_letter_refused_by_the_dead_letter_queue_is_dropped_once() -> None:
    broker, channel, drops = _broker(
        q={"x-dead-letter-exchange": DLX},
        dlq={"x-max-length": 0, "x-overflow": "reject-publish"},
    )
    channel.publish(b"m1", now=0.0, routing_key="q")
    got = channel.get("q", now=0.0)
    assert got is not None
    channel.reject(got.delivery_tag, now=0.0, requeue=False)
    assert drops == [(DLQ, "m1", "rejected-publish")]
    assert sum(broker.drops.values()) == 1


@pytest.mark.parametrize("give_back", ["close", "nack", "reject", "recover"])
def test_requeued_message_goes_to_a_consumer_on_another_channel(give_back: str) -> None:
    broker, getter, drops = _broker(q={})
    consumer = broker.connect().open_channel()
    getter.publish(b"m1", now=0.0, routing_key="q")
    got = getter.get("q", now=0.0)
    assert got is not None
    tag = consumer.consume("q", now=0.0)
    assert not consumer.outbox  # nothing ready yet
    if give_back == "close":
        getter.close(now=0.0)
    elif give_back == "nack":
        getter.nack(got.delivery_tag, now=0.0)
    elif give_back == "reject":
        getter.reject(got.delivery_tag, now=0.0)
    else:
        getter.recover(now=0.0)
    assert broker.vhosts["/"].queues["q"].message_count == 0
    [event] = consumer.outbox
    assert isinstance(event, Deliver) and event.consumer_tag == tag
    assert event.message.body == b"m1" and event.redelivered and event.delivery_count == 1
    assert drops == []

