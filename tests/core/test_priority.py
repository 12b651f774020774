"""Priority queues (x-max-priority) and where requeued messages go back."""

from __future__ import annotations

from support import bodies, deliveries, drain_get, props


def _pq(ch, max_priority=10):
    ch.declare_queue("pq", arguments={"x-max-priority": max_priority}, now=0)


def _pub(ch, body, priority=None, queue="pq"):
    ch.publish(body, routing_key=queue, properties=props(priority=priority), now=0)


def test_priority_descending_then_fifo(ch):
    _pq(ch)
    for body, priority in [(b"low1", 1), (b"high1", 9), (b"none", None), (b"low2", 1), (b"high2", 9), (b"mid", 5)]:
        _pub(ch, body, priority)
    assert drain_get(ch, "pq") == [b"high1", b"high2", b"mid", b"low1", b"low2", b"none"]


def test_priority_order_applies_to_consumer_deliveries(ch):
    _pq(ch)
    _pub(ch, b"low", 1)
    _pub(ch, b"high", 8)
    ch.consume("pq", no_ack=True, now=0)
    assert bodies(deliveries(ch)) == [b"high", b"low"]


def test_priority_above_max_is_clamped_to_max(ch):
    _pq(ch, max_priority=5)
    _pub(ch, b"first-at-5", 5)
    _pub(ch, b"asked-for-9", 9)
    _pub(ch, b"at-4", 4)
    # Clamped to 5, "asked-for-9" queues behind the earlier priority-5 message.
    assert drain_get(ch, "pq") == [b"first-at-5", b"asked-for-9", b"at-4"]


def test_queue_without_max_priority_ignores_priority(ch):
    ch.declare_queue("plain", now=0)
    _pub(ch, b"a", 1, queue="plain")
    _pub(ch, b"b", 9, queue="plain")
    assert drain_get(ch, "plain") == [b"a", b"b"]


def test_requeued_message_goes_back_to_original_position(ch):
    ch.declare_queue("q", now=0)
    for body in (b"a", b"b", b"c", b"d"):
        _pub(ch, body, queue="q")
    a = ch.get("q", now=0)
    b = ch.get("q", now=0)
    # Requeue in reverse order: positions, not requeue order, decide.
    ch.nack(b.delivery_tag, requeue=True, now=0)
    ch.nack(a.delivery_tag, requeue=True, now=0)
    _pub(ch, b"e", queue="q")
    assert drain_get(ch, "q") == [b"a", b"b", b"c", b"d", b"e"]


def test_requeued_message_keeps_its_priority_level_position(ch):
    _pq(ch)
    _pub(ch, b"m1", 5)
    _pub(ch, b"m2", 5)
    got = ch.get("pq", now=0)
    assert got.message.body == b"m1"
    _pub(ch, b"m3", 5)
    _pub(ch, b"hi", 9)
    _pub(ch, b"lo", 1)
    ch.reject(got.delivery_tag, requeue=True, now=0)
    assert drain_get(ch, "pq") == [b"hi", b"m1", b"m2", b"m3", b"lo"]


def test_requeued_clamped_message_returns_to_clamped_level(ch):
    _pq(ch, max_priority=3)
    _pub(ch, b"over", 200)
    got = ch.get("pq", now=0)
    _pub(ch, b"three", 3)
    ch.nack(got.delivery_tag, requeue=True, now=0)
    _pub(ch, b"two", 2)
    assert drain_get(ch, "pq") == [b"over", b"three", b"two"]


def test_redelivered_flag_after_requeue(ch):
    _pq(ch)
    _pub(ch, b"x", 3)
    got = ch.get("pq", now=0)
    assert not got.redelivered
    ch.nack(got.delivery_tag, requeue=True, now=0)
    again = ch.get("pq", now=0)
    assert again.redelivered and again.message.body == b"x"
