"""The broker's message counters (core/stats.py), RabbitMQ's global counters."""

from __future__ import annotations

import attrs
from support import deliveries, props

from amqlite.core.stats import AT_MOST_ONCE, DISABLED


def changed(broker, before) -> dict[str, object]:
    """The counters that differ from ``before`` (an attrs.asdict), with their new values."""
    now = attrs.asdict(broker.stats)
    dead = {key: value for key, value in now.pop("dead_lettered").items()
            if value != before["dead_lettered"][key]}
    result: dict[str, object] = {name: value for name, value in now.items() if value != before[name]}
    if dead:
        result["dead_lettered"] = dead
    return result


def test_publishes_count_received_and_routed_once_per_message(broker, ch):
    ch.declare_queue("a", now=0)
    ch.declare_queue("b", now=0)
    ch.bind_queue("a", "amq.fanout")
    ch.bind_queue("b", "amq.fanout")
    before = attrs.asdict(broker.stats)
    ch.publish(b"x", exchange="amq.fanout", now=0)  # two queues, one message routed
    ch.publish(b"x", routing_key="a", now=0)
    ch.publish(b"x", routing_key="nowhere", now=0)
    ch.publish(b"x", routing_key="nowhere", mandatory=True, now=0)
    assert changed(broker, before) == {"received": 4, "routed": 2, "unroutable_dropped": 1, "unroutable_returned": 1}


def test_confirm_mode_publishes_are_counted_apart(broker, ch):
    ch.declare_queue("q", now=0)
    ch.publish(b"x", routing_key="q", now=0)
    ch.confirm_select()
    ch.publish(b"x", routing_key="q", now=0)
    ch.publish(b"x", routing_key="q", now=0)
    assert (broker.stats.received, broker.stats.received_confirm) == (3, 2)


def test_a_transaction_routes_at_commit(broker, ch):
    ch.declare_queue("q", now=0)
    ch.tx_select()
    ch.publish(b"x", routing_key="q", now=0)
    assert (broker.stats.received, broker.stats.routed) == (1, 0)
    ch.tx_commit(now=0)
    assert (broker.stats.received, broker.stats.routed) == (1, 1)


def test_a_delayed_message_is_routed_when_released(broker, ch):
    ch.declare_exchange("later", "x-delayed-message", arguments={"x-delayed-type": "direct"})
    ch.declare_queue("q", now=0)
    ch.bind_queue("q", "later", "k")
    ch.publish(b"x", exchange="later", routing_key="k", properties=props(headers={"x-delay": 1000}), now=0)
    assert (broker.stats.received, broker.stats.routed, broker.stats.unroutable_dropped) == (1, 0, 0)
    broker.tick(1.0)
    assert (broker.stats.received, broker.stats.routed, broker.stats.unroutable_dropped) == (1, 1, 0)


def test_deliveries_are_split_by_consume_or_get_and_ack_mode(broker, ch):
    ch.declare_queue("q", now=0)
    for _ in range(6):
        ch.publish(b"x", routing_key="q", now=0)
    before = attrs.asdict(broker.stats)
    ch.get("q", no_ack=True, now=0)
    ch.get("q", now=0)
    ch.get("q", now=0)
    ch.qos(1, now=0)
    manual = ch.consume("q", now=0)
    assert len(deliveries(ch)) == 1
    ch.cancel(manual, now=0)
    ch.consume("q", no_ack=True, now=0)
    assert len(deliveries(ch)) == 2
    assert ch.get("q", now=0) is None
    assert changed(broker, before) == {
        "delivered_get_auto_ack": 1, "delivered_get_manual_ack": 2,
        "delivered_consume_manual_ack": 1, "delivered_consume_auto_ack": 2, "get_empty": 1,
    }
    assert broker.stats.delivered == 6


def test_acks_count_per_message_and_requeued_deliveries_as_redelivered(broker, ch):
    ch.declare_queue("q", now=0)
    for _ in range(4):
        ch.publish(b"x", routing_key="q", now=0)
    tags = [ch.get("q", now=0).delivery_tag for _ in range(4)]
    ch.ack(tags[1], multiple=True, now=0)  # two messages
    ch.nack(tags[2], requeue=True, now=0)  # not an ack
    assert broker.stats.acknowledged == 2
    again = ch.get("q", now=0)
    assert again.redelivered
    assert broker.stats.redelivered == 1
    ch.consume("q", now=0)  # nothing more to redeliver: the fourth is still unacked
    ch.recover(now=0)  # the fourth and the redelivered one come back to the consumer
    assert [event.redelivered for event in deliveries(ch)] == [True, True]
    assert broker.stats.redelivered == 3
    assert broker.stats.acknowledged == 2


def test_acks_in_a_transaction_count_at_commit(broker, ch):
    ch.declare_queue("q", now=0)
    ch.publish(b"x", routing_key="q", now=0)
    ch.tx_select()
    ch.ack(ch.get("q", now=0).delivery_tag, now=0)
    assert broker.stats.acknowledged == 0
    ch.tx_commit(now=0)
    assert broker.stats.acknowledged == 1


def test_dead_letters_count_by_reason_and_whether_a_dlx_took_them(broker, ch):
    ch.declare_queue("dead", now=0)
    dlx = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dead"}
    ch.declare_queue("rejecting", arguments=dlx, now=0)
    ch.declare_queue("expiring", arguments={"x-message-ttl": 1000}, now=0)  # no DLX
    ch.declare_queue("short", arguments={"x-max-length": 1, **dlx}, now=0)
    ch.declare_queue("limited", arguments={"x-delivery-limit": 0, **dlx}, now=0)
    before = attrs.asdict(broker.stats)
    ch.publish(b"x", routing_key="rejecting", now=0)
    ch.reject(ch.get("rejecting", now=0).delivery_tag, requeue=False, now=0)
    for _ in range(2):
        ch.publish(b"x", routing_key="expiring", now=0)
    broker.tick(1.0)
    for _ in range(3):
        ch.publish(b"x", routing_key="short", now=0)  # drops the head twice
    ch.publish(b"x", routing_key="limited", now=0)
    ch.nack(ch.get("limited", now=0).delivery_tag, requeue=True, now=0)
    assert changed(broker, before)["dead_lettered"] == {
        ("rejected", AT_MOST_ONCE): 1,
        ("expired", DISABLED): 2,
        ("maxlen", AT_MOST_ONCE): 2,
        ("delivery_limit", AT_MOST_ONCE): 1,
    }
    assert ch.declare_queue("dead", passive=True, now=1).message_count == 4


def test_each_queue_counts_its_own_share(broker, ch):
    for name in ("a", "b"):
        ch.declare_queue(name, now=0)
        ch.bind_queue(name, "amq.fanout")
    for _ in range(3):
        ch.publish(b"x", exchange="amq.fanout", now=0)
    got = ch.get("a", now=0)
    ch.nack(got.delivery_tag, requeue=True, now=0)
    again = ch.get("a", now=0)
    ch.ack(again.delivery_tag, now=0)
    a, b = (broker.vhosts["/"].queues[name].stats for name in ("a", "b"))
    assert (a.publish, a.deliver_get, a.redeliver, a.ack) == (3, 2, 1, 1)
    assert (b.publish, b.deliver_get, b.redeliver, b.ack) == (3, 0, 0, 0)
