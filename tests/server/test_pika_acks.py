"""Acknowledgements as a pika client sees them: ack/nack/reject, multiple,
requeue to the original position, basic.recover, tags per channel."""

from __future__ import annotations

from .pika_support import (
    Client,
    Collector,
    channel_error,
    get,
    get_bodies,
    message_count,
    wait_count,
    wait_get,
)


def _deliver(client: Client, count: int, prefetch: int = 0):  # type: ignore[no-untyped-def]
    ch = client.channel()
    q = client.queue(ch, exclusive=True)
    for i in range(count):
        ch.basic_publish("", q, b"%d" % i)
    if prefetch:
        ch.basic_qos(prefetch_count=prefetch)
    c = Collector(ch)
    c.consume(q)
    c.wait(count if not prefetch else min(count, prefetch))
    return ch, q, c


def test_ack_single_and_multiple(client: Client) -> None:
    ch, q, c = _deliver(client, 5)
    ch.basic_ack(2)
    ch.basic_ack(4, multiple=True)  # 1, 3 and 4
    ch.close()
    other = client.channel()
    assert get_bodies(other, q) == [b"4"]  # tag 5 was never acked


def test_ack_multiple_zero_acks_everything(client: Client) -> None:
    ch, q, c = _deliver(client, 4)
    ch.basic_ack(0, multiple=True)
    ch.close()
    assert get_bodies(client.channel(), q) == []


def test_reject_requeue_returns_to_original_position(client: Client) -> None:
    ch, q, c = _deliver(client, 4)
    tags = [d[1].delivery_tag for d in c.deliveries]
    ch.basic_cancel(c.deliveries[0][0])
    ch.basic_reject(tags[2], requeue=True)
    ch.basic_reject(tags[0], requeue=True)
    other = client.channel()
    wait_count(other, q, 2)
    messages = [get(other, q) for _ in range(2)]
    assert [(m[2], m[0].redelivered) for m in messages] == [(b"0", True), (b"2", True)]
    assert get(other, q) is None


def test_reject_without_requeue_drops(client: Client) -> None:
    ch, q, c = _deliver(client, 2)
    ch.basic_reject(1, requeue=False)
    ch.basic_nack(2, requeue=False)
    ch.close()
    assert get_bodies(client.channel(), q) == []


def test_nack_multiple_requeue(client: Client) -> None:
    ch, q, c = _deliver(client, 4)
    ch.basic_cancel(c.deliveries[0][0])
    ch.basic_nack(3, multiple=True, requeue=True)  # 1..3 back, 4 stays unacked
    other = client.channel()
    wait_count(other, q, 3)
    assert get_bodies(other, q) == [b"0", b"1", b"2"]
    assert message_count(other, q) == 0


def test_nack_multiple_zero_requeues_everything(client: Client) -> None:
    ch, q, c = _deliver(client, 3)
    ch.basic_cancel(c.deliveries[0][0])
    ch.basic_nack(0, multiple=True, requeue=True)
    wait_count(ch, q, 3)
    assert message_count(ch, q) == 3


def test_requeued_message_is_redelivered_to_a_consumer(client: Client) -> None:
    ch, q, c = _deliver(client, 1)
    ch.basic_nack(1, requeue=True)
    c.wait(2)
    method = c.deliveries[1][1]
    assert c.deliveries[1][3] == b"0" and method.redelivered and method.delivery_tag == 2
    ch.basic_ack(2)


def test_prefetch_credit_returns_on_nack_and_reject(client: Client) -> None:
    ch, q, c = _deliver(client, 3, prefetch=1)
    ch.basic_reject(1, requeue=False)
    c.wait(2)
    ch.basic_nack(2, requeue=False)
    c.wait(3)
    assert c.bodies == [b"0", b"1", b"2"]


def test_basic_recover_requeues_unacked(client: Client) -> None:
    ch, q, c = _deliver(client, 3)
    ch.basic_ack(2)
    ch.basic_recover(requeue=True)
    c.wait(5)
    redelivered = c.deliveries[3:]
    assert [(d[3], d[1].redelivered) for d in redelivered] == [(b"0", True), (b"2", True)]
    assert [d[1].delivery_tag for d in redelivered] == [4, 5]  # new tags on the same channel
    ch.basic_ack(5, multiple=True)


def test_basic_recover_covers_basic_get_deliveries(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, exclusive=True)
    ch.basic_publish("", q, b"m")
    get(ch, q, auto_ack=False)
    ch.basic_recover(requeue=True)
    method, _, body = wait_get(ch, q)
    assert body == b"m" and method.redelivered


def test_settling_deliveries_of_a_deleted_queue_is_fine(client: Client) -> None:
    ch, q, c = _deliver(client, 3)
    client.channel().queue_delete(q)
    ch.basic_ack(1)
    ch.basic_nack(2, requeue=True)
    ch.basic_reject(3, requeue=False)
    ch.basic_qos(prefetch_count=0)  # a round trip: no channel error came back
    assert ch.is_open


def test_delivery_tags_are_per_channel(client: Client) -> None:
    a = client.channel()
    b = client.channel()
    q = client.queue(a, exclusive=True)
    for i in range(2):
        a.basic_publish("", q, b"%d" % i)
    ma = get(a, q, auto_ack=False)
    mb = get(b, q, auto_ack=False)
    assert ma[0].delivery_tag == mb[0].delivery_tag == 1
    b.basic_ack(1)
    a.close()  # a's message comes back (RabbitMQ requeues it a moment after the close-ok)
    assert wait_get(b, q)[2] == b"0"
    assert get_bodies(b, q) == []


def test_double_ack_is_unknown_delivery_tag(client: Client) -> None:
    ch, q, c = _deliver(client, 1)
    ch.basic_ack(1)
    error = channel_error(lambda: ch.basic_ack(1), ch)
    assert error.reply_code == 406
    assert error.reply_text == "PRECONDITION_FAILED - unknown delivery tag 1"


def test_ack_of_auto_ack_delivery_is_unknown_tag(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, exclusive=True)
    ch.basic_publish("", q, b"x")
    get(ch, q, auto_ack=True)
    error = channel_error(lambda: ch.basic_ack(1), ch)
    assert error.reply_code == 406


def test_ack_multiple_needs_the_tag_itself(client: Client) -> None:
    ch, q, c = _deliver(client, 2)
    ch.basic_ack(2)
    error = channel_error(lambda: ch.basic_ack(2, multiple=True), ch)
    assert error.reply_code == 406
    assert error.reply_text == "PRECONDITION_FAILED - unknown delivery tag 2"
    # The channel closed: tag 1 went back to the queue.
    other = client.channel()
    method, _, body = get(other, q)
    assert body == b"0" and method.redelivered
