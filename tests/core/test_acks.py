"""Acknowledgements: ack, nack, reject, recover, delivery tags, get, closing."""

from __future__ import annotations

import pytest
from support import bodies, deliveries, drain_get

from amqlite.core.errors import NotImplemented_, PreconditionFailed


def _fill(ch, n, queue="q"):
    for i in range(n):
        ch.publish(b"%d" % i, routing_key=queue, now=0)


@pytest.fixture
def q(ch):
    return ch.declare_queue("q", now=0)


def _consume_all(ch, n):
    _fill(ch, n)
    ch.consume("q", now=0)
    return deliveries(ch)


def test_ack_settles(ch, q):
    events = _consume_all(ch, 2)
    ch.ack(events[0].delivery_tag, now=0)
    assert list(ch.unacked) == [events[1].delivery_tag]
    assert q.unacked == 1


def test_ack_multiple_settles_up_to_tag(ch, q):
    events = _consume_all(ch, 4)
    ch.ack(events[2].delivery_tag, multiple=True, now=0)
    assert list(ch.unacked) == [events[3].delivery_tag]


def test_ack_multiple_with_tag_zero_acks_everything(ch, q):
    _consume_all(ch, 4)
    ch.ack(0, multiple=True, now=0)
    assert not ch.unacked and q.unacked == 0


def test_nack_requeue_redelivers_with_flag(ch, q):
    [event] = _consume_all(ch, 1)
    assert not event.redelivered
    ch.nack(event.delivery_tag, requeue=True, now=0)
    [again] = deliveries(ch)
    assert again.redelivered and again.message.body == b"0"
    assert again.delivery_tag != event.delivery_tag


def test_nack_multiple_requeue_keeps_order(ch, q):
    events = _consume_all(ch, 3)
    ch.nack(events[-1].delivery_tag, multiple=True, requeue=True, now=0)
    again = deliveries(ch)
    assert bodies(again) == [b"0", b"1", b"2"]
    assert all(e.redelivered for e in again)


def test_nack_multiple_without_requeue_drops_all(broker, ch, q):
    _consume_all(ch, 3)
    ch.nack(0, multiple=True, requeue=False, now=0)
    assert not ch.unacked
    assert broker.drops["rejected"] == 3


def test_reject_requeue_and_discard(broker, ch, q):
    first, second = _consume_all(ch, 2)
    ch.reject(first.delivery_tag, requeue=False, now=0)
    ch.reject(second.delivery_tag, requeue=True, now=0)
    [again] = deliveries(ch)
    assert again.message.body == b"1" and again.redelivered
    assert broker.drops["rejected"] == 1


def test_delivery_tags_are_per_channel(ch, conn, q):
    other = conn.open_channel()
    _fill(ch, 2)
    a = ch.get("q", now=0)
    b = other.get("q", now=0)
    assert a.delivery_tag == 1 and b.delivery_tag == 1
    other.ack(1, now=0)
    assert 1 in ch.unacked


def test_delivery_tags_increase_across_get_and_consume(ch, q):
    _fill(ch, 3)
    first = ch.get("q", now=0)
    ch.consume("q", now=0)
    assert [first.delivery_tag] + [e.delivery_tag for e in deliveries(ch)] == [1, 2, 3]


@pytest.mark.parametrize(
    "settle",
    [
        lambda ch: ch.ack(99, now=0),
        lambda ch: ch.nack(99, now=0),
        lambda ch: ch.reject(99, now=0),
        lambda ch: ch.ack(0, now=0),
    ],
)
def test_unknown_delivery_tag_is_406(ch, q, settle):
    with pytest.raises(PreconditionFailed) as info:
        settle(ch)
    assert info.value.reply_code == 406 and not info.value.connection_level
    assert "unknown delivery tag" in info.value.reply_text


def test_double_ack_is_406(ch, q):
    [event] = _consume_all(ch, 1)
    ch.ack(event.delivery_tag, now=0)
    with pytest.raises(PreconditionFailed):
        ch.ack(event.delivery_tag, now=0)


def test_ack_multiple_with_unknown_tag_is_406_and_acks_nothing(ch, q):
    """RabbitMQ walks the unacked list looking for the tag itself and fails
    if it is not there, even when smaller tags are."""
    events = _consume_all(ch, 3)
    ch.ack(events[1].delivery_tag, now=0)
    with pytest.raises(PreconditionFailed):
        ch.ack(events[1].delivery_tag, multiple=True, now=0)
    with pytest.raises(PreconditionFailed):
        ch.ack(99, multiple=True, now=0)
    assert list(ch.unacked) == [events[0].delivery_tag, events[2].delivery_tag]


def test_ack_on_another_channel_is_unknown(ch, conn, q):
    [event] = _consume_all(ch, 1)
    with pytest.raises(PreconditionFailed):
        conn.open_channel().ack(event.delivery_tag, now=0)


def test_no_ack_delivery_needs_no_ack(ch, q):
    _fill(ch, 1)
    got = ch.get("q", now=0, no_ack=True)
    assert not ch.unacked and q.unacked == 0
    with pytest.raises(PreconditionFailed):
        ch.ack(got.delivery_tag, now=0)


def test_get_reports_remaining_message_count(ch, q):
    _fill(ch, 3)
    counts = [ch.get("q", now=0).message_count for _ in range(3)]
    assert counts == [2, 1, 0]
    assert ch.get("q", now=0) is None


def test_get_unacked_then_ack(ch, q):
    _fill(ch, 1)
    got = ch.get("q", now=0)
    assert got.message.body == b"0" and q.unacked == 1
    ch.ack(got.delivery_tag, now=0)
    assert q.unacked == 0 and drain_get(ch, "q") == []


def test_recover_requeue_redelivers_everything_unacked(ch, q):
    events = _consume_all(ch, 2)
    ch.ack(events[0].delivery_tag, now=0)
    ch.recover(requeue=True, now=0)
    [again] = deliveries(ch)
    assert again.message.body == b"1" and again.redelivered


def test_recover_requeue_false_is_540(ch, q):
    with pytest.raises(NotImplemented_) as info:
        ch.recover(requeue=False, now=0)
    assert info.value.reply_code == 540 and info.value.connection_level


def test_channel_close_requeues_unacked(ch, conn, q):
    _consume_all(ch, 2)
    ch.close(now=0)
    assert q.unacked == 0
    got = conn.open_channel().get("q", now=0)
    assert got.message.body == b"0" and got.redelivered


def test_channel_close_hands_unacked_to_consumer_on_another_channel(ch, conn, q):
    other = conn.open_channel()
    _fill(ch, 2)
    ch.consume("q", now=0)
    taken = deliveries(ch)
    other.consume("q", now=0)
    assert deliveries(other) == []
    ch.close(now=0)
    again = deliveries(other)
    assert bodies(again) == bodies(taken)
    assert all(e.redelivered for e in again)


def test_nack_of_get_message_goes_to_waiting_consumer(ch, conn, q):
    other = conn.open_channel()
    _fill(ch, 1)
    got = ch.get("q", now=0)
    other.consume("q", now=0)
    ch.nack(got.delivery_tag, requeue=True, now=0)
    [event] = deliveries(other)
    assert event.message.body == b"0" and event.redelivered


def test_connection_close_requeues_and_deletes_exclusive_queues(broker, q):
    client = broker.connect()
    cch = client.open_channel()
    cch.declare_queue("mine", exclusive=True, now=0)
    _fill(cch, 1)
    cch.get("q", now=0)
    client.close(now=0)
    assert "mine" not in broker.vhosts["/"].queues
    assert q.message_count == 1 and q.unacked == 0
    assert client not in broker.connections


def test_closed_channel_does_not_take_back_its_requeues(ch, q):
    """While a channel closes, it must not be handed the messages it returns."""
    ch.qos(1, now=0)
    _consume_all(ch, 2)
    ch.close(now=0)
    assert not ch.outbox and q.message_count == 2
