"""Queue and exchange lifecycles as a pika client sees them: exclusive,
auto-delete, server-named, x-expires, redeclare, passive, delete with
if-unused/if-empty, purge."""

from __future__ import annotations

import time
from typing import Any

import pytest

from .pika_support import (
    Client,
    channel_error,
    consumer_count,
    exists,
    get,
    get_bodies,
    message_count,
    wait_for,
)

LOCKED = (
    "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{}' in vhost '/'. It could be originally "
    "declared on another connection or the exclusive property value does not match that of the original declaration."
)


def test_exclusive_queue_is_owned_by_its_connection(client: Client) -> None:
    owner = client.connect()
    ch = owner.channel()
    q = client.queue(ch, exclusive=True)
    x = client.exchange(ch, "fanout")
    # Other channels of the owning connection may use it.
    other_channel = owner.channel()
    other_channel.basic_publish("", q, b"1")
    assert get_bodies(other_channel, q) == [b"1"]
    # Other connections may publish to it but not touch it.
    stranger = client.connect()
    stranger.channel().basic_publish("", q, b"from a stranger")
    attempts: list[Any] = [
        lambda c: c.queue_declare(q, exclusive=True),
        lambda c: c.queue_declare(q),
        lambda c: c.queue_declare(q, passive=True),
        lambda c: c.basic_consume(q, lambda *a: None),
        lambda c: c.basic_get(q),
        lambda c: c.queue_purge(q),
        lambda c: c.queue_delete(q),
        lambda c: c.queue_bind(q, x),
    ]
    for attempt in attempts:
        c = stranger.channel()
        error = channel_error(lambda: attempt(c))
        assert (error.reply_code, error.reply_text) == (405, LOCKED.format(q))
    assert stranger.is_open
    assert get_bodies(ch, q) == [b"from a stranger"]
    # It outlives its declaring channel, and goes with the connection.
    ch.close()
    other_channel.queue_declare(q, passive=True)
    owner.close()
    assert not exists(client, "queue", q)


def test_non_exclusive_queue_cannot_be_redeclared_exclusive(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch)
    error = channel_error(lambda: client.connect().channel().queue_declare(q, exclusive=True))
    assert (error.reply_code, error.reply_text) == (405, LOCKED.format(q))


def test_auto_delete_queue_without_consumers_stays(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, auto_delete=True)
    ch.basic_publish("", q, b"1")
    get(ch, q)  # basic.get does not make it a consumer
    assert exists(client, "queue", q)


def test_server_named_queue(client: Client) -> None:
    ch = client.channel()
    first = ch.queue_declare("", exclusive=True).method
    second = ch.queue_declare("", exclusive=True).method
    assert first.queue.startswith("amq.gen-") and second.queue.startswith("amq.gen-")
    assert first.queue != second.queue
    assert (first.message_count, first.consumer_count) == (0, 0)
    ch.basic_publish("", first.queue, b"to the generated name")
    assert get_bodies(ch, first.queue) == [b"to the generated name"]
    ch.queue_declare(first.queue, passive=True)
    # Only a passive declare may name it: amq.* is reserved even for an existing queue.
    error = channel_error(lambda: ch.queue_declare(first.queue, exclusive=True))
    assert (error.reply_code, error.reply_text) == (
        403, f"ACCESS_REFUSED - queue name '{first.queue}' contains reserved prefix 'amq.*'")


def test_empty_queue_name_means_the_last_declared_on_the_channel(client: Client) -> None:
    # AMQP 0-9-1: an empty queue name in bind/unbind/purge/delete/consume/get names the
    # queue last declared on the channel; in bind/unbind an empty routing key then
    # means that queue's name too.
    ch = client.channel()
    x = client.exchange(ch, "direct")
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind("", x)
    ch.basic_publish(x, q, b"by name")
    ch.basic_publish(x, "", b"by empty key")
    method, _, body = ch.basic_get("", auto_ack=True)
    assert body == b"by name" and method.message_count == 0
    ch.queue_unbind("", x)
    ch.basic_publish(x, q, b"unbound")
    ch.basic_publish("", q, b"1")
    assert ch.queue_purge("").method.message_count == 1
    ch.queue_declare(q, passive=True)  # a passive declare counts as a declaration
    tag = ch.basic_consume("", lambda *a: None)
    assert consumer_count(ch, q) == 1
    ch.basic_cancel(tag)
    ch.queue_delete("")
    assert not exists(client, "queue", q)
    fresh = client.channel()
    error = channel_error(lambda: fresh.basic_get("", auto_ack=True))
    assert (error.reply_code, error.reply_text) == (404, "NOT_FOUND - no previously declared queue")
    error = channel_error(lambda: client.channel().queue_declare("", passive=True))
    assert (error.reply_code, error.reply_text) == (404, "NOT_FOUND - no queue '' in vhost '/'")


def test_redeclare_equivalent_returns_counts(client: Client) -> None:
    ch = client.channel()
    args = {"x-message-ttl": 60000, "x-max-length": 10}
    q = client.queue(ch, durable=False, arguments=args)
    for i in range(3):
        ch.basic_publish("", q, b"%d" % i)
    get(ch, q, auto_ack=False)  # one unacked: not counted
    ch.basic_consume(client.queue(ch), lambda *a: None)
    other = client.channel()
    other.basic_consume(q, lambda *a: None, auto_ack=False)
    wait_for(lambda: message_count(ch, q) == 0)
    ok = ch.queue_declare(q, arguments=dict(args, **{"x-unknown-thing": "ignored"})).method
    assert (ok.queue, ok.message_count, ok.consumer_count) == (q, 0, 1)


@pytest.mark.parametrize(
    "change,arg",
    [
        ({"durable": True}, "durable"),
        ({"arguments": {"x-message-ttl": 1000, "x-max-length": 5}}, "x-max-length"),
        ({"arguments": {"x-message-ttl": 2000}}, "x-message-ttl"),
        ({"arguments": {}}, "x-message-ttl"),
        ({"arguments": {"x-message-ttl": 1000, "x-dead-letter-exchange": "dlx"}}, "x-dead-letter-exchange"),
    ],
    ids=["durable", "added-arg", "changed-arg", "dropped-arg", "added-dlx"],
)
def test_redeclare_inequivalent_queue(client: Client, change: dict[str, Any], arg: str) -> None:
    ch = client.channel()
    q = client.queue(ch, arguments={"x-message-ttl": 1000})
    other = client.channel()
    error = channel_error(lambda: other.queue_declare(q, **change))
    assert error.reply_code == 406
    assert error.reply_text.startswith(f"PRECONDITION_FAILED - inequivalent arg '{arg}' for queue '{q}' in vhost '/': ")
    ch.queue_declare(q, arguments={"x-message-ttl": 1000})  # the queue is unchanged


def test_passive_declare(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch)
    ch.basic_publish("", q, b"1")
    ch.basic_publish("", q, b"2")
    # RabbitMQ may answer a declare straight after a publish with a stale count.
    wait_for(lambda: message_count(ch, q) == 2)
    ok = ch.queue_declare(q, passive=True, durable=True, arguments={"x-anything": 1}).method
    assert (ok.queue, ok.message_count, ok.consumer_count) == (q, 2, 0)  # other fields ignored
    missing = client.broker.name("missing")
    error = channel_error(lambda: ch.queue_declare(missing, passive=True))
    assert (error.reply_code, error.reply_text) == (404, f"NOT_FOUND - no queue '{missing}' in vhost '/'")


def test_delete_if_unused_and_if_empty(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch)
    tag = ch.basic_consume(q, lambda *a: None)
    error = channel_error(lambda: client.channel().queue_delete(q, if_unused=True))
    assert (error.reply_code, error.reply_text) == (406, f"PRECONDITION_FAILED - queue '{q}' in vhost '/' in use")
    ch.basic_cancel(tag)
    ch.basic_publish("", q, b"1")
    ch.basic_publish("", q, b"2")
    error = channel_error(lambda: client.channel().queue_delete(q, if_empty=True))
    assert (error.reply_code, error.reply_text) == (406, f"PRECONDITION_FAILED - queue '{q}' in vhost '/' not empty")
    ok = ch.queue_delete(q, if_unused=True).method
    assert ok.message_count == 2
    assert not exists(client, "queue", q)
    assert ch.queue_delete(q).method.message_count == 0  # deleting a missing queue succeeds


def test_delete_if_empty_ignores_unacked(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch)
    ch.basic_publish("", q, b"1")
    get(ch, q, auto_ack=False)
    assert ch.queue_delete(q, if_empty=True).method.message_count == 0


def test_deleted_queue_loses_its_bindings(client: Client) -> None:
    ch = client.channel()
    x = client.exchange(ch, "direct")
    q = client.queue(ch)
    ch.queue_bind(q, x, "k")
    ch.queue_delete(q)
    ch.queue_declare(q)
    ch.basic_publish(x, "k", b"lost")
    assert get(ch, q) is None


def test_purge(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, exclusive=True)
    for i in range(4):
        ch.basic_publish("", q, b"%d" % i)
    held = get(ch, q, auto_ack=False)
    assert ch.queue_purge(q).method.message_count == 3
    assert get(ch, q) is None
    ch.basic_reject(held[0].delivery_tag, requeue=True)  # unacked messages survive a purge
    wait_for(lambda: message_count(ch, q) == 1)
    assert get_bodies(ch, q) == [b"0"]
    missing = client.broker.name("missing")
    error = channel_error(lambda: ch.queue_purge(missing))
    assert error.reply_code == 404


def test_queue_x_expires(client: Client) -> None:
    ch = client.channel()
    idle = client.queue(ch, arguments={"x-expires": 150})
    used = client.queue(ch, arguments={"x-expires": 150})
    consumer = client.channel()
    consumer.basic_consume(used, lambda *a: None)
    time.sleep(0.4)
    assert not exists(client, "queue", idle)
    assert exists(client, "queue", used)  # a consumer keeps it alive
    consumer.close()
    # Not polled: a (passive) declare is a use and would renew the lease.
    time.sleep(0.4)
    assert not exists(client, "queue", used)


def test_exchange_redeclare_and_passive(client: Client) -> None:
    ch = client.channel()
    x = client.exchange(ch, "direct")
    ch.exchange_declare(x, "direct")
    ch.exchange_declare(x, "fanout", passive=True)  # passive ignores the type
    error = channel_error(lambda: ch.exchange_declare(x, "fanout"))
    assert (error.reply_code, error.reply_text) == (
        406, f"PRECONDITION_FAILED - inequivalent arg 'type' for exchange '{x}' in vhost '/': "
             "received 'fanout' but current is 'direct'")
    for change, arg in (({"durable": True}, "durable"), ({"auto_delete": True}, "auto_delete"),
                        ({"internal": True}, "internal"),
                        ({"arguments": {"alternate-exchange": "ae"}}, "alternate-exchange")):
        other = client.channel()
        error = channel_error(lambda: other.exchange_declare(x, "direct", **change))
        assert error.reply_code == 406
        assert error.reply_text.startswith(f"PRECONDITION_FAILED - inequivalent arg '{arg}' for exchange '{x}'")
    missing = client.broker.name("missing")
    other = client.channel()
    error = channel_error(lambda: other.exchange_declare(missing, "direct", passive=True))
    assert (error.reply_code, error.reply_text) == (404, f"NOT_FOUND - no exchange '{missing}' in vhost '/'")


def test_exchange_redeclare_alternate_exchange(client: Client) -> None:
    ch = client.channel()
    x = client.exchange(ch, "direct", arguments={"alternate-exchange": "a1"})
    ch.exchange_declare(x, "direct", arguments={"alternate-exchange": "a1", "x-other": 1})
    error = channel_error(lambda: ch.exchange_declare(x, "direct", arguments={"alternate-exchange": "a2"}))
    assert (error.reply_code, error.reply_text) == (
        406, f"PRECONDITION_FAILED - inequivalent arg 'alternate-exchange' for exchange '{x}' in vhost '/': "
             "received 'a2' but current is 'a1'")
    ch = client.channel()
    error = channel_error(lambda: ch.exchange_declare(x, "direct"))
    assert (error.reply_code, error.reply_text) == (
        406, f"PRECONDITION_FAILED - inequivalent arg 'alternate-exchange' for exchange '{x}' in vhost '/': "
             "received none but current is the value 'a1' of type 'longstr'")


def test_redeclare_without_single_active_consumer(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, arguments={"x-single-active-consumer": True})
    error = channel_error(lambda: ch.queue_declare(q))
    assert (error.reply_code, error.reply_text) == (
        406, f"PRECONDITION_FAILED - inequivalent arg 'x-single-active-consumer' for queue '{q}' in vhost '/': "
             "received none but current is the value 'true' of type 'bool'")


def test_publishing_does_not_keep_an_x_expires_queue_alive(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, arguments={"x-expires": 200})
    for _ in range(6):
        ch.basic_publish("", q, b"x")
        time.sleep(0.05)
    time.sleep(0.15)
    assert not exists(client, "queue", q)


def test_exchange_delete(client: Client) -> None:
    ch = client.channel()
    x = client.exchange(ch, "fanout")
    dest = client.exchange(ch, "fanout")
    q = client.queue(ch)
    ch.queue_bind(q, x)
    error = channel_error(lambda: client.channel().exchange_delete(x, if_unused=True))
    assert (error.reply_code, error.reply_text) == (406, f"PRECONDITION_FAILED - exchange '{x}' in vhost '/' in use")
    ch.queue_unbind(q, x)
    ch.exchange_bind(dest, x)  # an exchange-to-exchange binding also makes it used
    error = channel_error(lambda: client.channel().exchange_delete(x, if_unused=True))
    assert error.reply_code == 406
    ch.exchange_unbind(dest, x)
    ch.exchange_delete(x, if_unused=True)
    assert not exists(client, "exchange", x)
    ch.exchange_delete(x)  # deleting a missing exchange succeeds
    # Deleting an exchange removes its bindings, also as a destination.
    source = client.exchange(ch, "fanout")
    ch.exchange_bind(dest, source)
    ch.queue_bind(q, dest)
    ch.exchange_delete(dest)
    ch.exchange_declare(dest, "fanout")
    ch.basic_publish(source, "", b"lost")
    assert get(ch, q) is None


def test_unbind_missing_binding_is_fine(client: Client) -> None:
    ch = client.channel()
    x = client.exchange(ch, "direct")
    q = client.queue(ch, exclusive=True)
    ch.queue_unbind(q, x, "never-bound")
    ch.exchange_unbind(client.exchange(ch, "direct"), x, "never-bound")
    # Even when the exchange or queue named does not exist (RabbitMQ 3.10).
    missing = client.broker.name("missing")
    ch.queue_unbind(q, missing, "k")
    ch.queue_unbind(missing, x, "k")
    ch.exchange_unbind(x, missing, "k")
    ch.exchange_unbind(missing, x, "k")
    assert ch.is_open


def test_auto_delete_exchange_and_exchange_bindings(client: Client) -> None:
    ch = client.channel()
    source = client.exchange(ch, "fanout", auto_delete=True)
    dest = client.exchange(ch, "fanout")
    ch.exchange_bind(dest, source)
    ch.exchange_delete(dest)  # the source loses its last binding
    assert not exists(client, "exchange", source)
    source = client.exchange(ch, "fanout", auto_delete=True)
    dest = client.exchange(ch, "fanout", auto_delete=True)
    ch.exchange_bind(dest, source)
    ch.exchange_unbind(dest, source)
    # Only bindings where it is the source count: the destination stays.
    assert not exists(client, "exchange", source)
    assert exists(client, "exchange", dest)


def test_exclusive_auto_delete_queue_goes_with_its_consumer(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, exclusive=True, auto_delete=True)
    tag = ch.basic_consume(q, lambda *a: None)
    ch.basic_cancel(tag)
    assert not exists(client, "queue", q)
