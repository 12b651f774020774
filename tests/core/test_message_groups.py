"""Message groups (x-message-group-header): per-key order with competing
consumers. The interleavings are in tests/store/test_message_groups_machine.py;
these are the rules one by one."""

from __future__ import annotations

import pytest
from support import bodies, deliveries

from amqlite.core.errors import PreconditionFailed
from amqlite.core.message import Properties

GROUPED = {"x-message-group-header": "customer"}


def publish(ch, body, customer=None, *, now=0.0, **properties):
    headers = {"customer": customer} if customer is not None else None
    ch.publish(body.encode(), routing_key="q", properties=Properties(headers=headers, **properties), now=now)


def queue(broker):
    return broker.vhosts["/"].queues["q"]


def test_one_message_of_a_group_out_at_a_time_others_in_parallel(ch, conn):
    ch.declare_queue("q", arguments=GROUPED, now=0)
    for body, customer in [("a1", "a"), ("a2", "a"), ("b1", "b"), ("a3", "a"), ("b2", "b"), ("free", None)]:
        publish(ch, body, customer)
    workers = [conn.open_channel() for _ in range(4)]
    for worker in workers:
        worker.consume("q", now=0)
    got = {body for worker in workers for body in bodies(deliveries(worker))}
    assert got == {b"a1", b"b1", b"free"}
    assert queue(ch.broker).message_count == 3


def test_an_ack_lets_the_next_of_the_group_go_in_publish_order(ch):
    ch.declare_queue("q", arguments=GROUPED, now=0)
    for n in range(5):
        publish(ch, f"a{n}", "a")
    ch.consume("q", now=0)
    seen = []
    for _ in range(5):
        [event] = deliveries(ch)
        seen.append(event.message.body)
        ch.ack(event.delivery_tag, now=0)
    assert seen == [b"a0", b"a1", b"a2", b"a3", b"a4"]
    assert queue(ch.broker).message_count == 0 and not queue(ch.broker).groups.groups


def test_in_flight_n(ch):
    ch.declare_queue("q", arguments={**GROUPED, "x-message-group-in-flight": 2}, now=0)
    for n in range(4):
        publish(ch, f"a{n}", "a")
    ch.consume("q", now=0)
    first = deliveries(ch)
    assert bodies(first) == [b"a0", b"a1"]
    ch.ack(first[1].delivery_tag, now=0)
    assert bodies(deliveries(ch)) == [b"a2"]


def test_a_nack_requeues_at_the_head_of_its_group_and_holds_only_it(ch, conn):
    ch.declare_queue("q", arguments=GROUPED, now=0)
    for body, customer in [("a1", "a"), ("a2", "a"), ("b1", "b"), ("b2", "b")]:
        publish(ch, body, customer)
    ch.qos(1, now=0)
    other = conn.open_channel()
    ch.consume("q", now=0)
    [a1] = deliveries(ch)
    other.consume("q", now=0)
    [b1] = deliveries(other)
    assert (a1.message.body, b1.message.body) == (b"a1", b"b1")
    ch.nack(a1.delivery_tag, requeue=True, now=0)
    [again] = deliveries(ch)
    assert again.message.body == b"a1" and again.redelivered
    other.ack(b1.delivery_tag, now=0)
    assert bodies(deliveries(other)) == [b"b2"]


def test_a_consumer_dying_returns_its_message_to_the_head_of_its_group(ch, conn):
    ch.declare_queue("q", arguments=GROUPED, now=0)
    for n in range(3):
        publish(ch, f"a{n}", "a")
    dying = conn.open_channel()
    dying.consume("q", now=0)
    assert bodies(deliveries(dying)) == [b"a0"]
    ch.consume("q", now=0)
    assert deliveries(ch) == []
    dying.close(now=1)
    [event] = deliveries(ch)
    assert event.message.body == b"a0" and event.redelivered


def test_a_retry_backoff_holds_its_group_while_others_flow(ch, broker):
    ch.declare_queue("q", arguments={**GROUPED, "x-delayed-retry-min": 1000}, now=0)
    for body, customer in [("a1", "a"), ("a2", "a"), ("b1", "b"), ("b2", "b")]:
        publish(ch, body, customer)
    ch.consume("q", now=0)
    a1, b1 = deliveries(ch)
    ch.nack(a1.delivery_tag, requeue=True, now=0)  # a waits out a second
    ch.ack(b1.delivery_tag, now=0)
    assert bodies(deliveries(ch)) == [b"b2"]
    assert queue(broker).delayed_count == 1
    broker.tick(1.0)
    [again] = deliveries(ch)
    assert again.message.body == b"a1" and again.delivery_count == 1  # a1 before a2, though a2 was ready
    ch.ack(again.delivery_tag, now=1)
    assert bodies(deliveries(ch)) == [b"a2"]


def test_at_the_delivery_limit_it_is_dead_lettered_and_the_group_moves_on(ch):
    ch.declare_queue("dlq", now=0)
    ch.declare_queue("q", arguments={**GROUPED, "x-delivery-limit": 1, "x-dead-letter-exchange": "",
                                     "x-dead-letter-routing-key": "dlq"}, now=0)
    publish(ch, "a1", "a")
    publish(ch, "a2", "a")
    ch.consume("q", now=0)
    for _ in range(2):
        [event] = deliveries(ch)
        assert event.message.body == b"a1"
        ch.nack(event.delivery_tag, requeue=True, now=0)
    assert bodies(deliveries(ch)) == [b"a2"]
    assert ch.get("dlq", now=0).message.body == b"a1"


def test_ttl_expires_a_waiting_member_and_the_group_goes_on(ch, broker):
    ch.declare_queue("q", arguments=GROUPED, now=0)
    publish(ch, "a1", "a")
    publish(ch, "a2", "a", expiration="500")
    publish(ch, "a3", "a")
    ch.consume("q", now=0)
    [a1] = deliveries(ch)
    broker.tick(0.5)  # a2 expires while parked behind a1
    assert queue(broker).message_count == 1
    ch.ack(a1.delivery_tag, now=1)
    assert bodies(deliveries(ch)) == [b"a3"]


def test_within_a_group_order_beats_priority(ch, conn):
    ch.declare_queue("q", arguments={**GROUPED, "x-max-priority": 5}, now=0)
    publish(ch, "a-low", "a", priority=0)
    publish(ch, "b-low", "b", priority=0)
    publish(ch, "a-high", "a", priority=5)
    ch.consume("q", now=0)
    first = bodies(deliveries(ch))
    assert first == [b"a-low", b"b-low"]  # a-high waits for a-low


def test_basic_get_respects_groups(ch):
    ch.declare_queue("q", arguments=GROUPED, now=0)
    publish(ch, "a1", "a")
    publish(ch, "a2", "a")
    publish(ch, "b1", "b")
    first = ch.get("q", now=0)
    second = ch.get("q", now=0)
    assert (first.message.body, second.message.body) == (b"a1", b"b1")
    assert ch.get("q", now=0) is None
    ch.ack(first.delivery_tag, now=0)
    assert ch.get("q", now=0).message.body == b"a2"


def test_purge_drops_parked_members_too(ch):
    ch.declare_queue("q", arguments=GROUPED, now=0)
    for n in range(3):
        publish(ch, f"a{n}", "a")
    ch.consume("q", now=0)
    deliveries(ch)
    assert queue(ch.broker).message_count == 2
    assert ch.purge_queue("q") == 2
    assert queue(ch.broker).message_count == 0


def test_max_length_counts_parked_members(ch):
    ch.declare_queue("q", arguments={**GROUPED, "x-max-length": 2, "x-overflow": "reject-publish"}, now=0)
    ch.consume("q", now=0)
    for n in range(4):
        publish(ch, f"a{n}", "a")
    assert bodies(deliveries(ch)) == [b"a0"]
    assert queue(ch.broker).message_count == 2  # a3 was refused


def test_redrive_into_a_grouped_queue_keeps_groups(ch):
    ch.declare_queue("dlq", now=0)
    ch.declare_queue("q", arguments={**GROUPED, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dlq"},
                     now=0)
    publish(ch, "a1", "a")
    publish(ch, "a2", "a")
    for _ in range(2):
        got = ch.get("q", now=0)
        ch.reject(got.delivery_tag, requeue=False, now=0)
    assert ch.redrive_queue("dlq", now=1) == 2
    ch.consume("q", now=1)
    assert bodies(deliveries(ch)) == [b"a1"]


@pytest.mark.parametrize("arguments, text", [
    ({"x-message-group-header": ""}, "x-message-group-header"),
    ({"x-message-group-header": 5}, "x-message-group-header"),
    ({"x-message-group-header": "c", "x-message-group-in-flight": 0}, "x-message-group-in-flight"),
    ({"x-message-group-in-flight": 2}, "group_in_flight_but_no_group_header"),
])
def test_bad_arguments_are_refused(ch, arguments, text):
    with pytest.raises(PreconditionFailed, match=text):
        ch.declare_queue("q", arguments=arguments, now=0)


def test_a_stream_refuses_groups(ch):
    with pytest.raises(PreconditionFailed, match="x-message-group-header"):
        ch.declare_queue("s", durable=True, arguments={"x-queue-type": "stream", **GROUPED}, now=0)


def test_an_ack_on_another_channel_lets_the_group_move_on(ch, conn):
    """The ack of a basic.get on a channel without consumers still lets
    the next of the group go to a waiting consumer elsewhere."""
    ch.declare_queue("q", arguments=GROUPED, now=0)
    publish(ch, "a1", "a")
    publish(ch, "a2", "a")
    got = ch.get("q", now=0)
    waiting = conn.open_channel()
    waiting.consume("q", now=0)
    assert deliveries(waiting) == []
    ch.ack(got.delivery_tag, now=0)
    assert bodies(deliveries(waiting)) == [b"a2"]


def test_a_dead_letter_on_another_channel_lets_the_group_move_on(ch, conn):
    ch.declare_queue("q", arguments=GROUPED, now=0)
    publish(ch, "a1", "a")
    publish(ch, "a2", "a")
    got = ch.get("q", now=0)
    waiting = conn.open_channel()
    waiting.consume("q", now=0)
    ch.reject(got.delivery_tag, requeue=False, now=0)
    assert bodies(deliveries(waiting)) == [b"a2"]
