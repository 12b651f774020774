"""Consumers: prefetch, round-robin, priorities, single active, exclusive, cancel."""

from __future__ import annotations

import pytest
from support import bodies, cancellations, deliveries

from amqlite.core.errors import AccessRefused, NotFound, NotImplemented_, PreconditionFailed


def _fill(ch, n, queue="q"):
    for i in range(n):
        ch.publish(b"%d" % i, routing_key=queue, now=0)


def _tags(events):
    return [e.consumer_tag for e in events]


def test_prefetch_is_per_consumer(ch):
    ch.declare_queue("q", now=0)
    ch.qos(2, now=0)
    ch.consume("q", consumer_tag="a", now=0)
    ch.consume("q", consumer_tag="b", now=0)
    _fill(ch, 10)
    events = deliveries(ch)
    assert sorted(_tags(events)) == ["a", "a", "b", "b"]
    ch.ack(events[0].delivery_tag, now=0)
    more = deliveries(ch)
    assert _tags(more) == [events[0].consumer_tag]


def test_prefetch_applies_to_running_and_later_consumers(ch):
    """Differs from RabbitMQ on purpose (docs/concepts.md): a new per-consumer
    prefetch also binds the channel's running consumers, so Celery's raise of
    its worker's prefetch during countdowns takes effect."""
    ch.declare_queue("q", now=0)
    ch.qos(5, now=0)
    ch.consume("q", consumer_tag="running", now=0)
    ch.qos(1, now=0)
    ch.consume("q", consumer_tag="later", now=0)
    _fill(ch, 6)
    tags = _tags(deliveries(ch))
    assert tags.count("running") == 1 and tags.count("later") == 1
    ch.qos(3, now=0)
    assert len(deliveries(ch)) == 4  # both consumers may now hold 3


def test_global_prefetch_limits_the_whole_channel(ch):
    ch.declare_queue("q1", now=0)
    ch.declare_queue("q2", now=0)
    ch.qos(3, global_=True, now=0)
    ch.consume("q1", now=0)
    ch.consume("q2", now=0)
    _fill(ch, 5, "q1")
    _fill(ch, 5, "q2")
    events = deliveries(ch)
    assert len(events) == 3
    ch.ack(events[0].delivery_tag, now=0)
    assert len(deliveries(ch)) == 1


def test_raising_global_prefetch_delivers_more_at_once(ch):
    ch.declare_queue("q", now=0)
    ch.qos(1, global_=True, now=0)
    ch.consume("q", now=0)
    _fill(ch, 5)
    assert len(deliveries(ch)) == 1
    ch.qos(4, global_=True, now=0)
    assert len(deliveries(ch)) == 3


def test_global_and_per_consumer_prefetch_both_apply(ch):
    ch.declare_queue("q", now=0)
    ch.qos(10, global_=True, now=0)
    ch.qos(2, now=0)
    ch.consume("q", now=0)
    _fill(ch, 5)
    assert len(deliveries(ch)) == 2


def test_no_ack_consumer_ignores_prefetch(ch):
    ch.declare_queue("q", now=0)
    ch.qos(1, now=0)
    ch.consume("q", no_ack=True, now=0)
    _fill(ch, 5)
    assert len(deliveries(ch)) == 5
    assert not ch.unacked


def test_prefetch_size_is_not_implemented(ch):
    with pytest.raises(NotImplemented_) as info:
        ch.qos(1, prefetch_size=1000, now=0)
    assert info.value.reply_code == 540


def test_round_robin_among_consumers_with_credit(ch, conn):
    other = conn.open_channel()
    ch.declare_queue("q", now=0)
    ch.consume("q", consumer_tag="a", now=0)
    other.consume("q", consumer_tag="b", now=0)
    ch.consume("q", consumer_tag="c", now=0)
    _fill(ch, 6)
    mine, theirs = deliveries(ch), deliveries(other)
    assert sorted(_tags(mine)) == ["a", "a", "c", "c"]
    assert _tags(theirs) == ["b", "b"]
    order = sorted(mine + theirs, key=lambda e: int(e.message.body))
    assert _tags(order) == ["a", "b", "c", "a", "b", "c"]


def test_round_robin_skips_consumers_without_credit(ch):
    ch.declare_queue("q", now=0)
    ch.qos(1, now=0)
    ch.consume("q", consumer_tag="a", now=0)
    ch.consume("q", consumer_tag="b", now=0)
    _fill(ch, 3)
    events = deliveries(ch)
    assert _tags(events) == ["a", "b"]
    ch.ack(events[1].delivery_tag, now=0)  # only b has credit now
    assert _tags(deliveries(ch)) == ["b"]


def test_consumer_priority_served_first_while_it_has_credit(ch):
    ch.declare_queue("q", now=0)
    ch.qos(2, now=0)
    ch.consume("q", consumer_tag="low", now=0)
    ch.consume("q", consumer_tag="high", arguments={"x-priority": 10}, now=0)
    ch.consume("q", consumer_tag="lower", arguments={"x-priority": -5}, now=0)
    _fill(ch, 5)
    assert _tags(deliveries(ch)) == ["high", "high", "low", "low", "lower"]


def test_consumer_priority_must_be_integer(ch):
    ch.declare_queue("q", now=0)
    with pytest.raises(PreconditionFailed):
        ch.consume("q", arguments={"x-priority": "high"}, now=0)
    assert not ch.consumers


def test_single_active_consumer_only_first_gets_messages(ch, conn):
    other = conn.open_channel()
    ch.declare_queue("sac", arguments={"x-single-active-consumer": True}, now=0)
    ch.consume("sac", now=0)
    other.consume("sac", now=0)
    _fill(ch, 3, "sac")
    assert len(deliveries(ch)) == 3
    assert deliveries(other) == []


def test_single_active_consumer_waits_for_credit_instead_of_switching(ch, conn):
    other = conn.open_channel()
    ch.declare_queue("sac", arguments={"x-single-active-consumer": True}, now=0)
    ch.qos(1, now=0)
    ch.consume("sac", now=0)
    other.consume("sac", now=0)
    _fill(ch, 3, "sac")
    assert len(deliveries(ch)) == 1
    assert deliveries(other) == []


def test_single_active_consumer_next_takes_over_on_cancel(ch, conn):
    other = conn.open_channel()
    ch.declare_queue("sac", arguments={"x-single-active-consumer": True}, now=0)
    ch.qos(1, now=0)
    first = ch.consume("sac", now=0)
    other.consume("sac", consumer_tag="second", now=0)
    _fill(ch, 3, "sac")
    [held] = deliveries(ch)
    ch.cancel(first, now=0)
    assert _tags(deliveries(other)) == ["second", "second"]
    ch.ack(held.delivery_tag, now=0)  # still ackable after cancel
    assert held.message.body == b"0"


def test_single_active_consumer_takes_over_when_channel_closes(ch, conn):
    other = conn.open_channel()
    ch.declare_queue("sac", arguments={"x-single-active-consumer": True}, now=0)
    ch.consume("sac", now=0)
    other.consume("sac", now=0)
    _fill(ch, 2, "sac")
    deliveries(ch)
    ch.close(now=0)
    # The unacked messages come back and go to the new active consumer.
    events = deliveries(other)
    assert bodies(events) == [b"0", b"1"]
    assert all(e.redelivered for e in events)


def test_exclusive_consumer_refuses_second_consumer(ch, conn):
    other = conn.open_channel()
    ch.declare_queue("q", now=0)
    ch.consume("q", exclusive=True, now=0)
    with pytest.raises(AccessRefused) as info:
        other.consume("q", now=0)
    assert info.value.reply_code == 403
    assert "in exclusive use" in info.value.reply_text
    assert not other.consumers


def test_exclusive_consume_refused_when_queue_has_consumers(ch):
    ch.declare_queue("q", now=0)
    ch.consume("q", now=0)
    with pytest.raises(AccessRefused):
        ch.consume("q", exclusive=True, now=0)


def test_exclusive_consumer_released_by_cancel(ch):
    ch.declare_queue("q", now=0)
    tag = ch.consume("q", exclusive=True, now=0)
    ch.cancel(tag, now=0)
    assert ch.consume("q", now=0)


def test_cancel_stops_deliveries(ch):
    ch.declare_queue("q", now=0)
    tag = ch.consume("q", now=0)
    _fill(ch, 1)
    assert len(deliveries(ch)) == 1
    assert ch.cancel(tag, now=0) is True
    _fill(ch, 1)
    assert deliveries(ch) == []
    assert ch.declare_queue("q", now=0).message_count == 1
    assert ch.cancel(tag, now=0) is False  # unknown tags are ignored


def test_consume_from_missing_queue_is_404(ch):
    with pytest.raises(NotFound):
        ch.consume("missing", now=0)


def test_server_generated_consumer_tags_are_unique(ch):
    ch.declare_queue("q", now=0)
    a, b = ch.consume("q", now=0), ch.consume("q", now=0)
    assert a.startswith("amq.ctag-") and b.startswith("amq.ctag-") and a != b


def test_server_cancel_event_when_queue_deleted(ch, conn):
    other = conn.open_channel()
    ch.declare_queue("q", now=0)
    tag = ch.consume("q", now=0)
    other.delete_queue("q", now=0)
    assert cancellations(ch) == [tag]
    assert tag not in ch.consumers


def test_consumer_gets_backlog_on_start(ch):
    ch.declare_queue("q", now=0)
    _fill(ch, 3)
    ch.consume("q", no_ack=True, now=0)
    assert bodies(deliveries(ch)) == [b"0", b"1", b"2"]


def test_channel_buffer_limit_bounds_undrained_deliveries(ch):
    ch.declare_queue("q", now=0)
    ch.buffer_limit = 3
    ch.consume("q", no_ack=True, now=0)
    _fill(ch, 10)
    assert len(ch.outbox) == 3
    deliveries(ch)  # the driver takes them and reports it
    assert len(ch.outbox) == 3


def test_global_prefetch_does_not_count_basic_get():
    """basic.get is not subject to prefetch (RabbitMQ): a message taken by get
    and not yet acked leaves the channel's consumers their full allowance."""
    from amqlite.core.broker import Broker

    broker = Broker()
    ch = broker.connect().open_channel()
    ch.declare_queue("q", now=0)
    for i in range(5):
        ch.publish(b"%d" % i, routing_key="q", now=0)
    assert ch.get("q", now=0) is not None
    ch.qos(2, global_=True, now=0)
    ch.consume("q", now=0)
    assert len(ch.outbox) == 2


def test_a_lone_consumer_takes_its_credit_at_once_but_dead_letters_on_the_way_take_theirs(ch):
    """A lone consumer is given what its credit allows in one go
    (Queue.dispatch). Expired messages met on the way are dead-lettered,
    here to two queues this channel also consumes, each copy taking the
    channel's global prefetch: the consumers together never hold more."""
    from amqlite.core.message import Properties

    ch.declare_exchange("dlx", "fanout")
    for name in ("dead1", "dead2"):
        ch.declare_queue(name, now=0)
        ch.bind_queue(name, "dlx")
    ch.declare_queue("q", now=0, arguments={"x-dead-letter-exchange": "dlx"})
    for i in range(2):
        ch.publish(b"old%d" % i, routing_key="q", properties=Properties(expiration="1000"), now=0)
    _fill(ch, 6)
    ch.qos(4, global_=True, now=0)
    ch.consume("dead1", consumer_tag="dead1", now=0)
    ch.consume("dead2", consumer_tag="dead2", now=0)
    ch.consume("q", consumer_tag="q", now=5)  # the two old ones expired at 1
    events = deliveries(ch)
    # (A fanout's queues come in no set order.)
    assert sorted((e.consumer_tag, e.message.body) for e in events) == [
        ("dead1", b"old0"), ("dead1", b"old1"), ("dead2", b"old0"), ("dead2", b"old1")]
    for event in events:
        ch.ack(event.delivery_tag, now=5)
    assert [(e.consumer_tag, e.message.body) for e in deliveries(ch)] == [("q", b"%d" % i) for i in range(4)]
