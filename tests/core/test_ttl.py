"""Message TTL: per queue, per message, and expiry wherever a message sits."""

from __future__ import annotations

import pytest
from support import bodies, deliveries, drain_get, headers_of, props

from amqlite.core.errors import PreconditionFailed


def _dlq(ch, name="q", **arguments):
    """A queue dead-lettering into 'dlq' through the default exchange."""
    ch.declare_queue("dlq", now=0)
    args = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dlq", **arguments}
    return ch.declare_queue(name, arguments=args, now=0)


def _count(ch, name):
    return ch.declare_queue(name, passive=True, now=0).message_count


def test_queue_message_ttl(broker, ch):
    ch.declare_queue("q", arguments={"x-message-ttl": 1000}, now=0)
    ch.publish(b"a", routing_key="q", now=0)
    ch.publish(b"b", routing_key="q", now=0.5)
    broker.tick(0.999)
    assert _count(ch, "q") == 2
    broker.tick(1.0)
    assert _count(ch, "q") == 1
    broker.tick(1.5)
    assert _count(ch, "q") == 0


def test_per_message_expiration(broker, ch):
    ch.declare_queue("q", now=0)
    ch.publish(b"short", routing_key="q", properties=props(expiration="100"), now=0)
    ch.publish(b"forever", routing_key="q", now=0)
    broker.tick(0.1)
    assert drain_get(ch, "q", now=0.1) == [b"forever"]


@pytest.mark.parametrize(("queue_ttl", "message_ttl", "expected"), [(1000, "300", 0.3), (300, "1000", 0.3)])
def test_effective_ttl_is_min_of_queue_and_message(broker, ch, queue_ttl, message_ttl, expected):
    ch.declare_queue("q", arguments={"x-message-ttl": queue_ttl}, now=0)
    ch.publish(b"x", routing_key="q", properties=props(expiration=message_ttl), now=0)
    assert broker.next_deadline() == pytest.approx(expected)
    broker.tick(expected - 0.001)
    assert _count(ch, "q") == 1
    broker.tick(expected)
    assert _count(ch, "q") == 0


def test_short_ttl_behind_long_ttl_expires_on_time_unlike_rabbitmq(broker, ch):
    """RabbitMQ expires only at the head (rabbitmq-server #2007); amqlite
    expires each message at its own time wherever it sits."""
    _dlq(ch)
    ch.publish(b"long", routing_key="q", properties=props(expiration="60000"), now=0)
    ch.publish(b"short", routing_key="q", properties=props(expiration="1000"), now=0)
    ch.publish(b"none", routing_key="q", now=0)
    broker.tick(1.0)
    assert drain_get(ch, "dlq", now=1.0) == [b"short"]
    assert drain_get(ch, "q", now=1.0) == [b"long", b"none"]


def test_expired_message_is_skipped_by_get_even_without_tick(ch):
    ch.declare_queue("q", now=0)
    ch.publish(b"old", routing_key="q", properties=props(expiration="10"), now=0)
    ch.publish(b"new", routing_key="q", now=0)
    assert drain_get(ch, "q", now=5) == [b"new"]


def test_expired_message_not_delivered_to_late_consumer(ch):
    ch.declare_queue("q", arguments={"x-message-ttl": 100}, now=0)
    ch.publish(b"old", routing_key="q", now=0)
    ch.publish(b"new", routing_key="q", now=0.5)
    ch.consume("q", no_ack=True, now=0.55)
    assert bodies(deliveries(ch)) == [b"new"]


def test_ttl_zero_delivered_when_consumer_ready(ch):
    ch.declare_queue("q", arguments={"x-message-ttl": 0}, now=0)
    ch.consume("q", now=0)
    ch.publish(b"x", routing_key="q", now=1)
    assert bodies(deliveries(ch)) == [b"x"]


def test_ttl_zero_dropped_without_ready_consumer(broker, ch):
    _dlq(ch, **{"x-message-ttl": 0})
    ch.publish(b"nobody", routing_key="q", now=1)
    broker.tick(1)
    ch.consume("q", now=1)
    assert deliveries(ch) == []
    assert drain_get(ch, "dlq", now=1) == [b"nobody"]


def test_ttl_zero_dropped_when_consumer_has_no_credit(broker, ch):
    ch.declare_queue("q", arguments={"x-message-ttl": 0}, now=0)
    ch.qos(1, now=0)
    ch.consume("q", now=0)
    ch.publish(b"taken", routing_key="q", now=1)
    ch.publish(b"no-credit", routing_key="q", now=1)
    broker.tick(1)
    [first] = deliveries(ch)
    ch.ack(first.delivery_tag, now=2)
    assert deliveries(ch) == []
    assert _count(ch, "q") == 0


def test_expired_message_dead_lettered_with_reason_and_original_expiration(broker, ch):
    _dlq(ch)
    ch.publish(b"x", routing_key="q", properties=props(expiration="250"), now=0)
    broker.tick(0.25)
    got = ch.get("dlq", now=0.25)
    headers = headers_of(got.message)
    [death] = headers["x-death"]
    assert death["reason"] == "expired"
    assert death["queue"] == "q"
    assert death["original-expiration"] == "250"
    assert headers["x-first-death-reason"] == "expired"
    # The copy loses its expiration, so it does not expire again in the DLQ.
    assert got.message.properties.expiration is None


def test_queue_ttl_death_has_no_original_expiration(broker, ch):
    _dlq(ch, **{"x-message-ttl": 100})
    ch.publish(b"x", routing_key="q", now=0)
    broker.tick(0.1)
    [death] = headers_of(ch.get("dlq", now=0.1).message)["x-death"]
    assert death["reason"] == "expired"
    assert "original-expiration" not in death


def test_unacked_message_does_not_expire_until_requeued(broker, ch):
    _dlq(ch, **{"x-message-ttl": 1000})
    ch.publish(b"x", routing_key="q", now=0)
    got = ch.get("q", now=0.5)
    broker.tick(2)
    assert drain_get(ch, "dlq", now=2) == []
    ch.nack(got.delivery_tag, requeue=True, now=3)
    assert drain_get(ch, "q", now=3) == []
    assert drain_get(ch, "dlq", now=3) == [b"x"]


def test_requeued_message_keeps_its_original_deadline(broker, ch):
    ch.declare_queue("q", arguments={"x-message-ttl": 1000}, now=0)
    ch.publish(b"x", routing_key="q", now=0)
    got = ch.get("q", now=0.2)
    ch.nack(got.delivery_tag, requeue=True, now=0.4)
    broker.tick(0.999)
    assert _count(ch, "q") == 1
    broker.tick(1.0)
    assert _count(ch, "q") == 0


def test_ttl_applies_per_queue_for_fanned_out_message(broker, ch):
    ch.declare_queue("short", arguments={"x-message-ttl": 100}, now=0)
    ch.declare_queue("long", now=0)
    ch.bind_queue("short", "amq.fanout")
    ch.bind_queue("long", "amq.fanout")
    ch.publish(b"x", exchange="amq.fanout", now=0)
    broker.tick(1)
    assert drain_get(ch, "short", now=1) == []
    assert drain_get(ch, "long", now=1) == [b"x"]


@pytest.mark.parametrize("expiration", ["abc", "-1", "1.5"])
def test_invalid_expiration_is_406(ch, expiration):
    ch.declare_queue("q", now=0)
    with pytest.raises(PreconditionFailed) as info:
        ch.publish(b"x", routing_key="q", properties=props(expiration=expiration), now=0)
    assert info.value.reply_code == 406
    assert not info.value.connection_level
    assert ch.declare_queue("q", now=0).message_count == 0


def test_expiry_in_any_priority_level(broker, ch):
    ch.declare_queue("pq", arguments={"x-max-priority": 9}, now=0)
    ch.publish(b"high-long", routing_key="pq", properties=props(priority=9, expiration="10000"), now=0)
    ch.publish(b"mid-short", routing_key="pq", properties=props(priority=5, expiration="100"), now=0)
    ch.publish(b"low-long", routing_key="pq", properties=props(priority=1, expiration="10000"), now=0)
    broker.tick(0.1)
    assert _count(ch, "pq") == 2
    assert drain_get(ch, "pq", now=0.1) == [b"high-long", b"low-long"]


def test_many_interleaved_expiries_keep_order_and_counts(broker, ch):
    """Enough tombstones to make the ready list and expiry index compact."""
    ch.declare_queue("q", now=0)
    for i in range(3000):
        ttl = "100" if i % 3 else "100000"
        ch.publish(b"%d" % i, routing_key="q", properties=props(expiration=ttl), now=0)
    broker.tick(0.1)
    assert _count(ch, "q") == 1000
    assert drain_get(ch, "q", now=0.1) == [b"%d" % i for i in range(0, 3000, 3)]
    assert broker.next_deadline() is None or broker.next_deadline() > 0.1
