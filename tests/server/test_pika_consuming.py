"""Consumers as a pika client sees them: round-robin, prefetch, priorities,
single active consumer, exclusive consumers, cancel (by the client and by
the server when the queue goes away), basic.get."""

from __future__ import annotations

import pika
import pika.spec

from .pika_support import (
    Client,
    Collector,
    channel_error,
    consumer_count,
    exists,
    get,
    get_bodies,
    pump_until,
)


def test_round_robin_between_consumers(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, exclusive=True)
    c = Collector(ch)
    first = c.consume(q, auto_ack=True)
    second = c.consume(q, auto_ack=True)
    for i in range(6):
        ch.basic_publish("", q, b"%d" % i)
    deliveries = c.wait(6)
    tags = [d[0] for d in deliveries]
    assert tags == [first, second] * 3
    assert c.bodies == [b"%d" % i for i in range(6)]


def test_consume_delivers_what_was_waiting_and_keeps_order(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, exclusive=True)
    for i in range(20):
        ch.basic_publish("", q, b"%d" % i)
    c = Collector(ch)
    tag = c.consume(q)
    deliveries = c.wait(20)
    assert c.bodies == [b"%d" % i for i in range(20)]
    assert [d[1].delivery_tag for d in deliveries] == list(range(1, 21))
    assert all(d[1].consumer_tag == tag and not d[1].redelivered for d in deliveries)
    ch.basic_ack(20, multiple=True)


def test_prefetch_limits_unacked_per_consumer(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, exclusive=True)
    for i in range(5):
        ch.basic_publish("", q, b"%d" % i)
    ch.basic_qos(prefetch_count=2)
    c = Collector(ch)
    c.consume(q)
    c.wait(2)
    c.pump(0.15)
    assert c.bodies == [b"0", b"1"]
    ch.basic_ack(c.deliveries[0][1].delivery_tag)
    c.wait(3)
    c.pump(0.1)
    assert c.bodies == [b"0", b"1", b"2"]
    ch.basic_ack(c.deliveries[2][1].delivery_tag, multiple=True)
    c.wait(5)
    assert c.bodies == [b"%d" % i for i in range(5)]


def test_prefetch_change_and_running_consumers(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, exclusive=True)
    ch.basic_qos(prefetch_count=1)
    c = Collector(ch)
    c.consume(q)
    ch.basic_qos(prefetch_count=0)
    for i in range(3):
        ch.basic_publish("", q, b"%d" % i)
    c.wait(1)
    c.pump(0.15)
    if client.broker.kind == "rabbitmq":
        assert c.bodies == [b"0"]  # RabbitMQ: the running consumer keeps its limit of 1
    else:
        # Documented difference (docs/concepts.md, Consumers and credit): the new
        # prefetch applies to the channel's running consumers too, as in LavinMQ.
        c.wait(3)
        assert c.bodies == [b"0", b"1", b"2"]


def test_global_prefetch_limits_the_channel(client: Client) -> None:
    ch = client.channel()
    a = client.queue(ch, exclusive=True)
    b = client.queue(ch, exclusive=True)
    for i in range(3):
        ch.basic_publish("", a, b"a%d" % i)
        ch.basic_publish("", b, b"b%d" % i)
    ch.basic_qos(prefetch_count=3, global_qos=True)
    c = Collector(ch)
    c.consume(a)
    c.consume(b)
    c.wait(3)
    c.pump(0.15)
    assert len(c.deliveries) == 3
    ch.basic_ack(0, multiple=True)
    c.wait(6)


def test_consumer_and_channel_prefetch_together(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, exclusive=True)
    for i in range(4):
        ch.basic_publish("", q, b"%d" % i)
    ch.basic_qos(prefetch_count=3)
    ch.basic_qos(prefetch_count=2, global_qos=True)  # the smaller limit wins
    c = Collector(ch)
    c.consume(q)
    c.wait(2)
    c.pump(0.15)
    assert len(c.deliveries) == 2


def test_prefetch_zero_means_unlimited(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, exclusive=True)
    ch.basic_qos(prefetch_count=0)
    for i in range(50):
        ch.basic_publish("", q, b"%d" % i)
    c = Collector(ch)
    c.consume(q)
    assert len(c.wait(50)) == 50  # all at once, none acked


def test_consumer_priorities(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, exclusive=True)
    ch.basic_qos(prefetch_count=2)
    c = Collector(ch)
    low = c.consume(q, arguments={"x-priority": 1})
    high = c.consume(q, arguments={"x-priority": 10})
    for i in range(3):
        ch.basic_publish("", q, b"%d" % i)
    c.wait(3)
    # The high-priority consumer takes messages until it is full.
    assert [d[0] for d in c.deliveries] == [high, high, low]


def test_single_active_consumer(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, arguments={"x-single-active-consumer": True})
    c = Collector(ch)
    first = c.consume(q)
    second = c.consume(q)
    for i in range(4):
        ch.basic_publish("", q, b"%d" % i)
    c.wait(4)
    assert {d[0] for d in c.deliveries} == {first}
    ch.basic_cancel(first)  # its unacked messages stay with it until the channel closes
    ch.basic_publish("", q, b"4")
    c.wait(5)
    assert c.deliveries[4][0] == second and c.deliveries[4][3] == b"4"
    ch.basic_ack(0, multiple=True)


def test_exclusive_consumer(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch)
    ch.basic_consume(q, lambda *a: None, exclusive=True)
    other = client.channel()
    error = channel_error(lambda: other.basic_consume(q, lambda *a: None))
    assert error.reply_code == 403
    assert error.reply_text == f"ACCESS_REFUSED - queue '{q}' in vhost '/' in exclusive use"
    ch2 = client.channel()
    ch2.basic_consume(client.queue(ch2), lambda *a: None)  # other queues are unaffected
    # exclusive=true while the queue already has a consumer is refused too.
    q2 = client.queue(ch)
    ch.basic_consume(q2, lambda *a: None)
    third = client.channel()
    error = channel_error(lambda: third.basic_consume(q2, lambda *a: None, exclusive=True))
    assert error.reply_code == 403


def test_consumer_priority_must_be_an_integer(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, exclusive=True)
    error = channel_error(lambda: ch.basic_consume(q, lambda *a: None, arguments={"x-priority": "high"}))
    assert (error.reply_code, error.reply_text) == (
        406, f"PRECONDITION_FAILED - invalid arg 'x-priority' for queue '{q}' in vhost '/': "
             '"expected integer, got longstr"')


def test_no_ack_consumer_ignores_prefetch(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, exclusive=True)
    ch.basic_qos(prefetch_count=1)
    for i in range(5):
        ch.basic_publish("", q, b"%d" % i)
    c = Collector(ch)
    c.consume(q, auto_ack=True)
    assert [d[3] for d in c.wait(5)] == [b"0", b"1", b"2", b"3", b"4"]


def test_cancel_of_unknown_consumer_tag_is_fine(client: Client) -> None:
    ch = client.channel()
    # pika would not send it; the broker answers cancel-ok, no error.
    ch._impl._send_method(pika.spec.Basic.Cancel(consumer_tag="never-used"))
    ch.basic_qos(prefetch_count=0)
    assert ch.is_open


def test_cancel_stops_deliveries(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, exclusive=True)
    c = Collector(ch)
    tag = c.consume(q, auto_ack=True)
    ch.basic_publish("", q, b"1")
    c.wait(1)
    assert ch.basic_cancel(tag) == []
    ch.basic_publish("", q, b"2")
    c.pump(0.1)
    assert c.bodies == [b"1"]
    assert get_bodies(ch, q) == [b"2"]
    assert consumer_count(ch, q) == 0


def test_unacked_messages_of_a_cancelled_consumer_return_when_channel_closes(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, exclusive=True)
    for i in range(2):
        ch.basic_publish("", q, b"%d" % i)
    c = Collector(ch)
    tag = c.consume(q)
    c.wait(2)
    ch.basic_cancel(tag)
    other = client.channel()
    assert get(other, q) is None  # still unacked, not back in the queue
    ch.basic_ack(1)  # acks still work after cancel
    ch.close()
    method, _, body = get(other, q)
    assert body == b"1" and method.redelivered


def test_no_ack_consumer(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, exclusive=True)
    c = Collector(ch)
    c.consume(q, auto_ack=True)
    for i in range(3):
        ch.basic_publish("", q, b"%d" % i)
    c.wait(3)
    ch.close()
    other = client.channel()
    assert get(other, q) is None  # nothing to requeue


def test_server_cancels_consumer_when_queue_is_deleted(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch)
    cancelled = []
    ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
    c = Collector(ch)
    tag = c.consume(q)
    client.channel().queue_delete(q)
    pump_until(ch.connection, lambda: cancelled)
    assert cancelled == [tag]
    # The channel is still open and usable.
    q2 = client.queue(ch, exclusive=True)
    ch.basic_publish("", q2, b"ok")
    assert get_bodies(ch, q2) == [b"ok"]


def test_consume_on_missing_queue_is_404(client: Client) -> None:
    ch = client.channel()
    missing = client.broker.name("missing")
    error = channel_error(lambda: ch.basic_consume(missing, lambda *a: None))
    assert error.reply_code == 404
    assert error.reply_text == f"NOT_FOUND - no queue '{missing}' in vhost '/'"


def test_basic_get(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, exclusive=True)
    assert get(ch, q) is None
    for i in range(3):
        ch.basic_publish("", q, b"%d" % i, pika.BasicProperties(content_type="text/plain"))
    method, props, body = get(ch, q, auto_ack=False)
    assert (body, method.message_count, method.delivery_tag, method.redelivered) == (b"0", 2, 1, False)
    assert method.exchange == "" and method.routing_key == q
    assert props.content_type == "text/plain"
    ch.basic_reject(method.delivery_tag, requeue=True)
    method, _, body = get(ch, q, auto_ack=False)
    assert (body, method.message_count, method.delivery_tag, method.redelivered) == (b"0", 2, 2, True)
    ch.basic_ack(2)
    assert get_bodies(ch, q) == [b"1", b"2"]


def test_consumer_tags_generated_and_chosen(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, exclusive=True)
    generated = ch.basic_consume(q, lambda *a: None)
    assert generated.startswith("ctag") or generated.startswith("amq.ctag-")  # pika chooses its own
    chosen = ch.basic_consume(q, lambda *a: None, consumer_tag="mine")
    assert chosen == "mine"
    assert consumer_count(ch, q) == 2
    ch.basic_cancel("mine")
    assert consumer_count(ch, q) == 1


def test_auto_delete_queue_goes_with_last_consumer(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, auto_delete=True)
    first = ch.basic_consume(q, lambda *a: None)
    second = ch.basic_consume(q, lambda *a: None)
    ch.basic_cancel(first)
    assert exists(client, "queue", q)
    ch.basic_cancel(second)
    assert not exists(client, "queue", q)


def test_auto_delete_queue_goes_when_consumer_channel_closes(client: Client) -> None:
    setup = client.channel()
    q = client.queue(setup, auto_delete=True)
    ch = client.channel()
    ch.basic_consume(q, lambda *a: None)
    ch.close()
    assert not exists(client, "queue", q)


def test_redelivery_after_connection_closes(client: Client) -> None:
    publisher = client.channel()
    q = client.queue(publisher)
    for i in range(3):
        publisher.basic_publish("", q, b"%d" % i)
    conn = client.connect()
    ch = conn.channel()
    c = Collector(ch)
    c.consume(q)
    c.wait(3)
    ch.basic_ack(c.deliveries[1][1].delivery_tag)
    conn.close()
    messages = [get(publisher, q) for _ in range(2)]
    assert [(m[2], m[0].redelivered) for m in messages] == [(b"0", True), (b"2", True)]
