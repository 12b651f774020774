"""Consumer timeouts (x-consumer-timeout, RabbitMQ 3.12+): a delivery left
unacked past its timeout closes its channel with 406 and is requeued.
Time is passed in; the broker's timers say when to look again."""

from __future__ import annotations

import pytest
from support import deliveries

from amqlite.core.broker import Broker
from amqlite.core.errors import PreconditionFailed
from amqlite.core.events import AckTimedOut


def _timed_out(ch):
    return [e for e in ch.outbox if isinstance(e, AckTimedOut)]


def test_unacked_past_the_queue_timeout_closes_the_channel_and_requeues(broker, conn, ch):
    ch.declare_queue("q", arguments={"x-consumer-timeout": 2000}, now=0)
    ch.publish(b"a", routing_key="q", now=0)
    ch.consume("q", consumer_tag="slow", now=0)
    [delivery] = deliveries(ch)
    assert broker.next_deadline() == 2.0
    broker.tick(1.999)
    assert not ch.closed
    broker.tick(2.0)
    assert ch.closed
    [event] = _timed_out(ch)
    assert event.error.reply_code == 406
    assert event.error.reply_text == (
        "PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out. Timeout value used: 2000 ms. "
        "This timeout value can be configured, see consumers doc guide to learn more")
    assert (event.consumer_tag, event.queue, event.delivery_tag) == ("slow", "q", delivery.delivery_tag)
    other = conn.open_channel()
    got = other.get("q", now=2.0)
    assert got.message.body == b"a" and got.redelivered


def test_an_ack_in_time_keeps_the_channel(broker, ch):
    ch.declare_queue("q", arguments={"x-consumer-timeout": 1000}, now=0)
    ch.consume("q", now=0)
    for at in range(5):
        ch.publish(b"x", routing_key="q", now=at)
        [delivery] = deliveries(ch)
        ch.ack(delivery.delivery_tag, now=at + 0.9)
        broker.tick(at + 1)
    assert not ch.closed and not _timed_out(ch)
    # Nothing unacked: no deadline left that matters, and nothing fires.
    broker.tick(100)
    assert not ch.closed


def test_each_delivery_has_its_own_deadline(broker, ch):
    ch.declare_queue("q", arguments={"x-consumer-timeout": 1000}, now=0)
    ch.consume("q", now=0)
    ch.publish(b"first", routing_key="q", now=0)
    ch.publish(b"second", routing_key="q", now=0.5)
    first, second = deliveries(ch)
    ch.ack(first.delivery_tag, now=0.9)
    broker.tick(1.0)
    assert not ch.closed
    assert broker.next_deadline() == 1.5
    broker.tick(1.5)
    assert ch.closed and _timed_out(ch)[0].delivery_tag == second.delivery_tag


def test_no_timeout_by_default(broker, ch):
    ch.declare_queue("q", now=0)
    ch.publish(b"a", routing_key="q", now=0)
    ch.consume("q", now=0)
    deliveries(ch)
    assert broker.next_deadline() is None
    broker.tick(10 * 3600)
    assert not ch.closed


def test_the_broker_default_applies_where_the_queue_sets_none():
    broker = Broker(consumer_timeout=30.0)
    ch = broker.connect().open_channel()
    ch.declare_queue("default", now=0)
    ch.declare_queue("own", arguments={"x-consumer-timeout": 60_000}, now=0)
    assert broker.vhosts["/"].queues["default"].consumer_timeout == 30.0
    assert broker.vhosts["/"].queues["own"].consumer_timeout == 60.0
    ch.publish(b"a", routing_key="own", now=0)
    ch.consume("own", now=0)
    deliveries(ch)
    broker.tick(59)
    assert not ch.closed
    broker.tick(60)
    assert ch.closed


def test_a_consumer_may_lower_the_timeout_but_not_raise_it(broker, conn):
    low, high = conn.open_channel(), conn.open_channel()
    low.declare_queue("q", arguments={"x-consumer-timeout": 5000}, now=0)
    low.consume("q", consumer_tag="low", arguments={"x-consumer-timeout": 1000}, now=0)
    high.consume("q", consumer_tag="high", arguments={"x-consumer-timeout": 60_000}, now=0)
    assert low.consumers["low"].timeout == 1.0
    assert high.consumers["high"].timeout == 5.0
    low.declare_queue("open", now=0)
    low.consume("open", consumer_tag="own", arguments={"x-consumer-timeout": 250}, now=0)
    assert low.consumers["own"].timeout == 0.25


@pytest.mark.parametrize("value", [-1, "60000", 1.5, True])
def test_a_bad_consumer_argument_is_refused(ch, value):
    ch.declare_queue("q", now=0)
    with pytest.raises(PreconditionFailed, match="x-consumer-timeout"):
        ch.consume("q", arguments={"x-consumer-timeout": value}, now=0)
    assert not ch.consumers


@pytest.mark.parametrize("value", [-1, "60000"])
def test_a_bad_queue_argument_is_refused(ch, value):
    with pytest.raises(PreconditionFailed, match="x-consumer-timeout"):
        ch.declare_queue("q", arguments={"x-consumer-timeout": value}, now=0)


def test_basic_get_is_held_to_the_queue_timeout(broker, ch):
    ch.declare_queue("q", arguments={"x-consumer-timeout": 1000}, now=0)
    ch.publish(b"a", routing_key="q", now=0)
    got = ch.get("q", now=0)
    broker.tick(1.0)
    assert ch.closed and _timed_out(ch)[0].consumer_tag is None
    assert _timed_out(ch)[0].delivery_tag == got.delivery_tag


def test_no_ack_deliveries_have_no_deadline(broker, ch):
    ch.declare_queue("q", arguments={"x-consumer-timeout": 1000}, now=0)
    ch.publish(b"a", routing_key="q", now=0)
    ch.consume("q", no_ack=True, now=0)
    deliveries(ch)
    assert broker.next_deadline() is None


def test_timeout_requeues_at_the_original_position_for_the_next_consumer(broker, conn):
    slow, fast = conn.open_channel(), conn.open_channel()
    slow.declare_queue("q", arguments={"x-consumer-timeout": 1000}, now=0)
    slow.qos(1, now=0)
    for body in (b"1", b"2", b"3"):
        slow.publish(body, routing_key="q", now=0)
    slow.consume("q", now=0)
    [held] = deliveries(slow)
    assert held.message.body == b"1"
    broker.tick(1.0)
    assert slow.closed
    fast.consume("q", no_ack=True, now=1.0)
    assert [e.message.body for e in deliveries(fast)] == [b"1", b"2", b"3"]


def test_the_deadline_heap_stays_bounded(broker, ch):
    ch.declare_queue("q", arguments={"x-consumer-timeout": 3_600_000}, now=0)
    ch.consume("q", now=0)
    for n in range(10_000):
        ch.publish(b"x", routing_key="q", now=n / 1000)
        [delivery] = deliveries(ch)
        ch.ack(delivery.delivery_tag, now=n / 1000)
    assert len(ch._deadlines) <= 2 * len(ch.unacked) + 1024 + 1


def test_oldest_unacked_of_queues_and_consumers(broker, conn):
    from amqlite.core.inflight import consumer_oldest, queue_oldest

    first, second, getter = conn.open_channel(), conn.open_channel(), conn.open_channel()
    first.declare_queue("q", now=0)
    first.declare_queue("other", now=0)
    queue = broker.vhosts["/"].queues["q"]
    assert queue_oldest(broker, queue) is None
    first.publish(b"1", routing_key="other", now=0)
    first.consume("other", consumer_tag="o", now=1)  # holds a delivery of another queue, older
    for at in (2, 3, 4):
        first.publish(b"x", routing_key="q", now=at)
    first.qos(1, now=5)
    first.consume("q", consumer_tag="a", now=5)
    second.qos(1, now=6)
    second.consume("q", consumer_tag="b", now=6)
    deliveries(first), deliveries(second)
    a, b = first.consumers["a"], second.consumers["b"]
    assert (consumer_oldest(a), consumer_oldest(b)) == (5, 6)
    assert queue_oldest(broker, queue) == 5
    got = getter.get("q", now=7)  # the third, held by no consumer
    first.cancel("a", now=8)  # its delivery stays unacked on the channel
    assert queue_oldest(broker, queue) == 5
    tag = next(tag for tag, record in first.unacked.items() if record[2] is a)
    first.ack(tag, now=9)
    assert queue_oldest(broker, queue) == 6
    second.ack(0, multiple=True, now=9)
    assert queue_oldest(broker, queue) == 7
    getter.ack(got.delivery_tag, now=10)
    assert queue_oldest(broker, queue) is None and consumer_oldest(b) is None


def test_streams_have_no_consumer_timeout():
    broker = Broker(consumer_timeout=1.0)
    ch = broker.connect().open_channel()
    ch.declare_queue("s", durable=True, arguments={"x-queue-type": "stream"}, now=0)
    ch.publish(b"a", routing_key="s", now=0)
    ch.qos(10, now=0)
    ch.consume("s", arguments={"x-stream-offset": "first", "x-consumer-timeout": 500}, now=0)
    assert len(deliveries(ch)) == 1
    broker.tick(60)
    assert not ch.closed
