"""Message TTL, priority queues and length limits as a pika client sees them.

TTLs are tiny (real time over the network): 100 ms, checked after ~250 ms.
"""

from __future__ import annotations

import time

import pika
import pika.exceptions
import pytest

from .conftest import BrokerUnderTest
from .pika_support import (
    Client,
    Collector,
    get,
    get_bodies,
    message_count,
    wait_count,
    wait_get,
)

TTL_MS = 100
PAST_TTL = 0.25  # seconds: comfortably after TTL_MS


def _props(**fields: object) -> pika.BasicProperties:
    return pika.BasicProperties(**fields)  # type: ignore[arg-type]


# -- TTL -----------------------------------------------------------------------


def test_queue_message_ttl(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, exclusive=True, arguments={"x-message-ttl": TTL_MS})
    for i in range(3):
        ch.basic_publish("", q, b"%d" % i)
    wait_count(ch, q, 3)
    time.sleep(PAST_TTL)
    assert message_count(ch, q) == 0
    assert get(ch, q) is None
    ch.basic_publish("", q, b"fresh")
    assert get_bodies(ch, q) == [b"fresh"]  # a fresh message is not expired


def test_per_message_expiration(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, exclusive=True)
    ch.basic_publish("", q, b"short", _props(expiration=str(TTL_MS)))
    ch.basic_publish("", q, b"long", _props(expiration="60000"))
    time.sleep(PAST_TTL)
    _, props, body = get(ch, q)
    assert body == b"long" and props.expiration == "60000"  # the property is delivered as published
    assert get(ch, q) is None


@pytest.mark.parametrize("queue_ttl,expiration", [(TTL_MS, "60000"), (60000, str(TTL_MS))])
def test_effective_ttl_is_the_smaller(client: Client, queue_ttl: int, expiration: str) -> None:
    ch = client.channel()
    q = client.queue(ch, exclusive=True, arguments={"x-message-ttl": queue_ttl})
    ch.basic_publish("", q, b"m", _props(expiration=expiration))
    time.sleep(PAST_TTL)
    assert get(ch, q) is None


def test_each_queue_applies_its_own_ttl(client: Client) -> None:
    ch = client.channel()
    x = client.exchange(ch, "fanout")
    short = client.queue(ch, exclusive=True, arguments={"x-message-ttl": 50})
    long = client.queue(ch, exclusive=True, arguments={"x-message-ttl": 5000})
    ch.queue_bind(short, x)
    ch.queue_bind(long, x)
    ch.basic_publish(x, "", b"m", _props(expiration="1000"))
    time.sleep(0.2)
    assert get_bodies(ch, short) == []
    assert get_bodies(ch, long) == [b"m"]


def test_expiry_behind_a_message_without_ttl(client: Client, broker: BrokerUnderTest) -> None:
    ch = client.channel()
    q = client.queue(ch, exclusive=True)
    ch.basic_publish("", q, b"a")
    ch.basic_publish("", q, b"b", _props(expiration=str(TTL_MS)))
    ch.basic_publish("", q, b"c")
    time.sleep(PAST_TTL)
    if broker.kind == "amqlite":
        # Documented difference (docs/concepts.md, "TTL is enforced anywhere in the
        # queue"): the expired message left at its deadline and counts are exact.
        assert message_count(ch, q) == 2
    else:
        # RabbitMQ only expires messages at the head; "b" still counts.
        assert message_count(ch, q) == 3
    # Either way it is never delivered.
    assert get_bodies(ch, q) == [b"a", b"c"]


def test_ttl_zero_delivers_only_to_a_waiting_consumer(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, exclusive=True)
    ch.basic_publish("", q, b"nobody waiting", _props(expiration="0"))
    assert get(ch, q) is None  # expired at once, even for a basic.get right behind it
    c = Collector(ch)
    c.consume(q, auto_ack=True)
    ch.basic_publish("", q, b"taken at once", _props(expiration="0"))
    c.wait(1)
    assert c.bodies == [b"taken at once"]


def test_queue_ttl_zero(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, exclusive=True, arguments={"x-message-ttl": 0})
    ch.basic_publish("", q, b"gone")
    assert get(ch, q) is None
    c = Collector(ch)
    c.consume(q, auto_ack=True)
    ch.basic_publish("", q, b"delivered")
    c.wait(1)
    assert c.bodies == [b"delivered"]


def test_unacked_message_does_not_expire_until_requeued(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, exclusive=True, arguments={"x-message-ttl": TTL_MS})
    ch.basic_publish("", q, b"held")
    ch.basic_publish("", q, b"acked late")
    held = get(ch, q, auto_ack=False)
    late = get(ch, q, auto_ack=False)
    time.sleep(PAST_TTL)
    ch.basic_ack(late[0].delivery_tag)  # acking after the TTL is fine
    ch.basic_reject(held[0].delivery_tag, requeue=True)  # requeued past its deadline: expires now
    time.sleep(0.05)
    assert get(ch, q) is None


def test_requeued_message_before_its_deadline_survives(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, exclusive=True, arguments={"x-message-ttl": 2000})
    ch.basic_publish("", q, b"m")
    method, _, _ = get(ch, q, auto_ack=False)
    ch.basic_reject(method.delivery_tag, requeue=True)
    method, _, body = wait_get(ch, q)
    assert body == b"m" and method.redelivered


# -- priority --------------------------------------------------------------------


def test_priority_queue_order(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, exclusive=True, arguments={"x-max-priority": 10})
    priorities = [None, 1, 5, 9, 5, 200, 0]
    for i, priority in enumerate(priorities):
        ch.basic_publish("", q, b"%d" % i, _props(priority=priority))
    # 200 counts as the maximum (10); no priority counts as 0; FIFO within a level.
    assert get_bodies(ch, q) == [b"5", b"3", b"2", b"4", b"1", b"0", b"6"]


def test_priority_order_reaches_consumers(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, exclusive=True, arguments={"x-max-priority": 5})
    for i, priority in enumerate([1, 3, 2, 5]):
        ch.basic_publish("", q, b"%d" % i, _props(priority=priority))
    wait_count(ch, q, 4)
    ch.basic_qos(prefetch_count=1)
    c = Collector(ch)
    c.consume(q)
    for n in range(1, 5):
        c.wait(n)
        ch.basic_ack(c.deliveries[-1][1].delivery_tag)
    assert c.bodies == [b"3", b"1", b"2", b"0"]


def test_requeue_keeps_priority_position(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, exclusive=True, arguments={"x-max-priority": 5})
    for i, priority in enumerate([5, 1, 5, 3]):
        ch.basic_publish("", q, b"%d" % i, _props(priority=priority))
    first = get(ch, q, auto_ack=False)
    assert first[2] == b"0"
    ch.basic_reject(first[0].delivery_tag, requeue=True)
    wait_count(ch, q, 4)
    assert get_bodies(ch, q) == [b"0", b"2", b"3", b"1"]


def test_priority_ignored_without_max_priority(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, exclusive=True)
    for i, priority in enumerate([1, 9, 5]):
        ch.basic_publish("", q, b"%d" % i, _props(priority=priority))
    assert get_bodies(ch, q) == [b"0", b"1", b"2"]


# -- length limits ------------------------------------------------------------------


def test_max_length_drop_head(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, exclusive=True, arguments={"x-max-length": 3})
    for i in range(5):
        ch.basic_publish("", q, b"%d" % i)
    wait_count(ch, q, 3)
    assert get_bodies(ch, q) == [b"2", b"3", b"4"]


def test_max_length_drop_head_in_a_priority_queue(client: Client) -> None:
    # drop-head drops the message that would be delivered next: the highest priority.
    ch = client.channel()
    q = client.queue(ch, exclusive=True, arguments={"x-max-priority": 10, "x-max-length": 2})
    for body, priority in ((b"a", 1), (b"b", 9), (b"c", 5)):
        ch.basic_publish("", q, body, _props(priority=priority))
    wait_count(ch, q, 2)
    assert get_bodies(ch, q) == [b"c", b"a"]


def test_max_length_bytes_drop_head(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, exclusive=True, arguments={"x-max-length-bytes": 10})
    for i in range(4):
        ch.basic_publish("", q, b"abc%d" % i)  # 4 bytes each
    wait_count(ch, q, 2)
    assert get_bodies(ch, q) == [b"abc2", b"abc3"]


def test_max_length_counts_ready_messages_only(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, exclusive=True, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    ch.confirm_delivery()
    ch.basic_publish("", q, b"0")
    held = get(ch, q, auto_ack=False)
    ch.basic_publish("", q, b"1")  # the unacked one does not count
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", q, b"2")
    ch.basic_ack(held[0].delivery_tag)
    assert get_bodies(ch, q) == [b"1"]


def test_reject_publish_nacks_confirms(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, exclusive=True, arguments={"x-max-length": 2, "x-overflow": "reject-publish"})
    ch.confirm_delivery()
    ch.basic_publish("", q, b"0")
    ch.basic_publish("", q, b"1")
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", q, b"2")
    assert get(ch, q)[2] == b"0"
    ch.basic_publish("", q, b"3")  # room again
    assert get_bodies(ch, q) == [b"1", b"3"]


def test_reject_publish_is_nacked_not_returned(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, exclusive=True, arguments={"x-max-length": 0, "x-overflow": "reject-publish"})
    ch.confirm_delivery()
    with pytest.raises(pika.exceptions.NackError) as info:
        ch.basic_publish("", q, b"refused", mandatory=True)
    assert info.value.messages == []  # it was routed: no basic.return came before the nack


def test_reject_publish_without_confirms_drops_silently(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, exclusive=True, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    ch.basic_publish("", q, b"0")
    ch.basic_publish("", q, b"1")
    wait_count(ch, q, 1)
    assert get_bodies(ch, q) == [b"0"]
    assert ch.is_open


def test_reject_publish_nack_only_when_every_queue_refuses(client: Client) -> None:
    ch = client.channel()
    x = client.exchange(ch, "fanout")
    full = client.queue(ch, exclusive=True, arguments={"x-max-length": 0, "x-overflow": "reject-publish"})
    roomy = client.queue(ch, exclusive=True)
    ch.queue_bind(full, x)
    ch.queue_bind(roomy, x)
    ch.confirm_delivery()
    # RabbitMQ nacks when any queue refused the message.
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish(x, "", b"m")
    assert get_bodies(ch, roomy) == [b"m"]
    assert get(ch, full) is None
