"""Delayed delivery and retry with backoff, as a pika client sees them.

Both are amqlite features without a counterpart in the reference broker:
RabbitMQ 3.10 here has no delayed-message plugin, and RabbitMQ 3.x has no
broker-side retry backoff (docs/concepts.md, "Delayed delivery" and "Retry
with backoff", both marked Differs). Every scenario skips on RabbitMQ with
that reason. Delays are 50-300 ms of real time.
"""

from __future__ import annotations

import time
from typing import Iterator

import pika
import pytest

from .conftest import BrokerUnderTest
from .pika_support import Client, Collector, channel_error, get, get_bodies, wait_get


@pytest.fixture(autouse=True)
def amqlite_only(broker: BrokerUnderTest) -> Iterator[None]:
    if broker.kind == "rabbitmq":
        pytest.skip("documented difference: delayed exchange and retry backoff are amqlite-only "
                    "(no delayed-message plugin in the reference RabbitMQ 3.10; no retry backoff in RabbitMQ 3.x)")
    yield


def _delay(ms: int | None, **headers: object) -> pika.BasicProperties:
    if ms is not None:
        headers["x-delay"] = ms
    return pika.BasicProperties(headers=headers)


# -- delayed exchange ----------------------------------------------------------------


def test_delayed_exchange_holds_messages(client: Client) -> None:
    ch = client.channel()
    x = client.exchange(ch, "x-delayed-message", arguments={"x-delayed-type": "direct"})
    q = client.queue(ch, exclusive=True)
    ch.queue_bind(q, x, "k")
    started = time.monotonic()
    ch.basic_publish(x, "k", b"later", _delay(200))
    ch.basic_publish(x, "k", b"now", _delay(None))
    ch.basic_publish(x, "k", b"zero", _delay(0))
    ch.basic_publish(x, "k", b"negative", _delay(-5))
    ch.basic_publish(x, "other", b"wrong key", _delay(50))
    assert get_bodies(ch, q) == [b"now", b"zero", b"negative"]
    method, props, body = wait_get(ch, q, timeout=2)
    assert body == b"later" and time.monotonic() - started >= 0.19
    assert method.exchange == x and method.routing_key == "k"
    assert props.headers["x-delay"] == 200  # left as published
    time.sleep(0.1)
    assert get(ch, q) is None  # "wrong key" was unroutable at release


def test_delayed_messages_are_released_in_due_order(client: Client) -> None:
    ch = client.channel()
    x = client.exchange(ch, "x-delayed-message", arguments={"x-delayed-type": "fanout"})
    q = client.queue(ch, exclusive=True)
    ch.queue_bind(q, x)
    for delay in (250, 50, 150):
        ch.basic_publish(x, "", b"%d" % delay, _delay(delay))
    c = Collector(ch)
    c.consume(q, auto_ack=True)
    c.wait(3, timeout=2)
    assert c.bodies == [b"50", b"150", b"250"]


def test_delayed_topic_exchange_routes_as_topic(client: Client) -> None:
    ch = client.channel()
    x = client.exchange(ch, "x-delayed-message", arguments={"x-delayed-type": "topic"})
    q = client.queue(ch, exclusive=True)
    ch.queue_bind(q, x, "a.#")
    ch.basic_publish(x, "a.b.c", b"match", _delay(50))
    ch.basic_publish(x, "b.a", b"no match", _delay(50))
    assert wait_get(ch, q)[2] == b"match"
    time.sleep(0.1)
    assert get(ch, q) is None


def test_delayed_mandatory_is_not_returned_at_publish(client: Client) -> None:
    # Documented difference from the plugin: no false basic.return at publish time.
    ch = client.channel()
    x = client.exchange(ch, "x-delayed-message", arguments={"x-delayed-type": "direct"})
    q = client.queue(ch, exclusive=True)
    ch.queue_bind(q, x, "k")
    returned = []
    ch.add_on_return_callback(lambda *args: returned.append(args[3]))
    ch.confirm_delivery()
    ch.basic_publish(x, "k", b"routed later", _delay(50), mandatory=True)
    assert wait_get(ch, q)[2] == b"routed later"
    assert returned == []


def test_delayed_exchange_needs_a_delayed_type(client: Client) -> None:
    ch = client.channel()
    name = client.broker.name("x")
    client.forget_exchange(name)
    error = channel_error(lambda: ch.exchange_declare(name, "x-delayed-message"))
    assert error.reply_code == 406
    ch = client.channel()
    error = channel_error(lambda: ch.exchange_declare(name, "x-delayed-message",
                                                      arguments={"x-delayed-type": "nope"}))
    assert error.reply_code == 406


# -- retry with backoff ------------------------------------------------------------------


def test_retry_delays_a_rejected_message(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, exclusive=True, arguments={"x-delayed-retry-min": 100})
    ch.basic_publish("", q, b"job")
    method, props, _ = get(ch, q, auto_ack=False)
    assert (props.headers or {}).get("x-delivery-count") is None
    failed_at = time.monotonic()
    ch.basic_reject(method.delivery_tag, requeue=True)
    assert get(ch, q) is None  # parked, neither ready
    assert ch.queue_declare(q, passive=True).method.message_count == 0
    method, props, body = wait_get(ch, q, auto_ack=False)
    assert time.monotonic() - failed_at >= 0.09
    assert body == b"job" and method.redelivered and props.headers["x-delivery-count"] == 1
    ch.basic_ack(method.delivery_tag)


def test_retry_backoff_grows_linearly(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, exclusive=True, arguments={"x-delayed-retry-min": 60})
    ch.basic_publish("", q, b"job")
    waits = []
    method, _, _ = get(ch, q, auto_ack=False)
    for _ in range(2):
        failed_at = time.monotonic()
        ch.basic_nack(method.delivery_tag, requeue=True)
        method, _, _ = wait_get(ch, q, auto_ack=False)
        waits.append(time.monotonic() - failed_at)
    # 60 ms, then 120 ms.
    assert waits[0] >= 0.055 and waits[1] >= 0.115
    ch.basic_ack(method.delivery_tag)


def test_retried_message_returns_to_the_tail(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, exclusive=True, arguments={"x-delayed-retry-min": 50})
    ch.basic_publish("", q, b"a")
    method, _, _ = get(ch, q, auto_ack=False)
    ch.basic_reject(method.delivery_tag, requeue=True)
    ch.basic_publish("", q, b"b")
    time.sleep(0.15)
    assert get_bodies(ch, q) == [b"b", b"a"]


def test_retry_ends_in_dead_letter_at_the_delivery_limit(client: Client) -> None:
    ch = client.channel()
    dlq = client.queue(ch, exclusive=True)
    q = client.queue(ch, exclusive=True, arguments={
        "x-delayed-retry-min": 50, "x-delayed-retry-multiplier": 1, "x-delivery-limit": 1,
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq})
    ch.basic_publish("", q, b"poison")
    for _ in range(2):  # a limit of 1 allows 2 deliveries
        method, _, _ = wait_get(ch, q, auto_ack=False)
        ch.basic_reject(method.delivery_tag, requeue=True)
    _, props, body = wait_get(ch, dlq)
    assert body == b"poison"
    death = props.headers["x-death"][0]
    assert (death["reason"], death["queue"]) == ("delivery_limit", q)
    assert get(ch, q) is None


def test_broker_returned_messages_skip_the_retry_delay(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, arguments={"x-delayed-retry-min": 5000})
    consumer = client.channel()
    get(consumer, q)  # nothing yet
    ch.basic_publish("", q, b"m")
    assert get(consumer, q, auto_ack=False)[2] == b"m"
    consumer.close()  # returned by the broker, not failed by a consumer: back at once
    method, props, body = wait_get(ch, q, timeout=1)
    assert body == b"m" and method.redelivered and props.headers["x-delivery-count"] == 1


def test_purge_drops_messages_waiting_out_a_retry(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, exclusive=True, arguments={"x-delayed-retry-min": 100})
    ch.basic_publish("", q, b"m")
    method, _, _ = get(ch, q, auto_ack=False)
    ch.basic_reject(method.delivery_tag, requeue=True)
    ch.queue_purge(q)
    time.sleep(0.2)
    assert get(ch, q) is None
