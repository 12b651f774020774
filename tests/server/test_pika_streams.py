"""Stream queues over AMQP 0-9-1 through pika, against amqlite and the
reference RabbitMQ: the same declarations refused with the same words,
the same offsets from every x-stream-offset form, the same refusals of
basic.get, purge, automatic acks and nacks, and messages that stay after
they are consumed."""

from __future__ import annotations

import datetime

import pika
import pytest

from .conftest import BrokerUnderTest
from .pika_support import Client, Collector, channel_error, connection_error, pump_until, wait_for

STREAM = {"x-queue-type": "stream"}


def stream(client: Client, channel: pika.adapters.blocking_connection.BlockingChannel, **arguments: object) -> str:
    return client.queue(channel, "s", durable=True, arguments={**STREAM, **arguments})


def publish(client: Client, queue: str, count: int) -> None:
    channel = client.channel()
    channel.confirm_delivery()
    for n in range(count):
        channel.basic_publish("", queue, b"m%d" % n)


def read(client: Client, queue: str, offset: object, expect: int, prefetch: int = 3) -> list[tuple[bytes, int]]:
    """(body, x-stream-offset) of what a consumer starting at ``offset``
    receives: ``expect`` messages, then nothing more for a moment."""
    channel = client.channel()
    channel.basic_qos(prefetch_count=prefetch)
    collector = Collector(channel)
    arguments = None if offset is None else {"x-stream-offset": offset}
    channel.basic_consume(queue, lambda ch, method, props, body: (
        collector.deliveries.append(("", method, props, body)), ch.basic_ack(method.delivery_tag)),
        arguments=arguments)
    if expect:
        collector.wait(expect)
    collector.pump(0.3)
    return [(body, props.headers["x-stream-offset"]) for _, _, props, body in collector.deliveries]


@pytest.mark.parametrize(("options", "text"), [
    ({"durable": False}, "invalid property 'non-durable' for queue '{q}' in vhost '/'"),
    ({"exclusive": True}, "invalid property 'exclusive-owner' for queue '{q}' in vhost '/'"),
    ({"auto_delete": True}, "invalid property 'auto-delete' for queue '{q}' in vhost '/'"),
    ({"arguments": {**STREAM, "x-message-ttl": 1000}},
     "invalid arg 'x-message-ttl' for queue '{q}' in vhost '/' of queue type rabbit_stream_queue"),
    ({"arguments": {**STREAM, "x-max-length": 10}},
     "invalid arg 'x-max-length' for queue '{q}' in vhost '/' of queue type rabbit_stream_queue"),
    ({"arguments": {**STREAM, "x-dead-letter-exchange": "x"}},
     "invalid arg 'x-dead-letter-exchange' for queue '{q}' in vhost '/' of queue type rabbit_stream_queue"),
    ({"arguments": {**STREAM, "x-max-age": "1x"}}, "invalid arg 'x-max-age' for queue '{q}' in vhost '/': invalid_max_age"),
    ({"arguments": {"x-max-age": "1h"}},
     "invalid arg 'x-max-age' for queue '{q}' in vhost '/' of queue type rabbit_classic_queue"),
    ({"arguments": {"x-stream-max-segment-size-bytes": 1000}},
     "invalid arg 'x-stream-max-segment-size-bytes' for queue '{q}' in vhost '/' of queue type rabbit_classic_queue"),
])
def test_declarations_refused_with_rabbitmqs_words(broker: BrokerUnderTest, client: Client,
                                                   options: dict[str, object], text: str) -> None:
    name = broker.name("s")
    declared = {"durable": True, "arguments": STREAM, **options}
    error = channel_error(lambda: client.channel().queue_declare(name, **declared))
    assert (error.reply_code, error.reply_text) == (406, "PRECONDITION_FAILED - " + text.format(q=name))


def test_every_offset_form_starts_where_rabbitmq_starts(broker: BrokerUnderTest, client: Client) -> None:
    queue = stream(client, client.channel(), **{"x-max-age": "7D"})
    publish(client, queue, 5)
    everything = [(b"m%d" % n, n) for n in range(5)]
    assert read(client, queue, "first", 5) == everything
    assert read(client, queue, 0, 5) == everything
    assert read(client, queue, -1, 5) == everything
    assert read(client, queue, 2, 3) == everything[2:]
    assert read(client, queue, 100, 0) == []
    assert read(client, queue, "next", 0) == []
    assert read(client, queue, None, 0) == []
    assert read(client, queue, "last", 1) == everything[4:]
    assert read(client, queue, datetime.datetime(2000, 1, 1), 5) == everything
    assert read(client, queue, "10m", 5) == everything


def test_messages_stay_after_they_are_consumed_and_new_ones_reach_live_readers(
        broker: BrokerUnderTest, client: Client) -> None:
    channel = client.channel()
    queue = stream(client, channel)
    publish(client, queue, 3)
    assert read(client, queue, "first", 3) == [(b"m0", 0), (b"m1", 1), (b"m2", 2)]
    # A reader that waits at the end gets what comes next.
    live = client.channel(client.connect())
    live.basic_qos(prefetch_count=10)
    collector = Collector(live)
    collector.consume(queue, arguments={"x-stream-offset": "next"})
    collector.pump(0.2)
    publish(client, queue, 1)
    collector.wait(1)
    assert collector.deliveries[0][2].headers == {"x-stream-offset": 3}
    assert len(read(client, queue, "first", 4)) == 4
    # RabbitMQ counts what is retained, consumed or not, with its periodic
    # stats (up to several seconds later); amqlite at once.
    wait_for(lambda: channel.queue_declare(queue, passive=True).method.message_count == 4,
             timeout=15.0 if broker.kind == "rabbitmq" else 0.5)


def test_prefetch_bounds_what_a_reader_holds_unacked(broker: BrokerUnderTest, client: Client) -> None:
    queue = stream(client, client.channel())
    publish(client, queue, 10)
    channel = client.channel(client.connect())
    channel.basic_qos(prefetch_count=2)
    collector = Collector(channel)
    collector.consume(queue, arguments={"x-stream-offset": "first"})
    collector.wait(2)
    collector.pump(0.3)
    assert collector.bodies == [b"m0", b"m1"]
    channel.basic_ack(collector.deliveries[1][1].delivery_tag, multiple=True)
    collector.wait(4)
    collector.pump(0.2)
    assert collector.bodies == [b"m0", b"m1", b"m2", b"m3"]


def test_a_consumer_without_prefetch_is_refused(broker: BrokerUnderTest, client: Client) -> None:
    channel = client.channel()
    queue = stream(client, channel)
    error = channel_error(lambda: channel.basic_consume(queue, lambda *a: None))
    assert (error.reply_code, error.reply_text) == (
        406, f"PRECONDITION_FAILED - consumer prefetch count is not set for 'queue '{queue}' in vhost '/''")


@pytest.mark.parametrize("operation", ["get", "purge", "auto_ack", "nack", "reject"])
def test_what_streams_do_not_support_closes_the_connection_with_540(broker: BrokerUnderTest, client: Client,
                                                                     operation: str) -> None:
    queue = stream(client, client.channel())
    publish(client, queue, 1)
    connection = client.connect()
    channel = client.channel(connection)
    channel.basic_qos(prefetch_count=5)
    what = {"get": "basic.get", "purge": "queue.purge", "auto_ack": "automatic acknowledgement",
            "nack": "basic.nack and basic.reject", "reject": "basic.nack and basic.reject"}[operation]
    if operation == "get":
        error = connection_error(lambda: channel.basic_get(queue), connection)
    elif operation == "purge":
        error = connection_error(lambda: channel.queue_purge(queue), connection)
    elif operation == "auto_ack":
        error = connection_error(lambda: channel.basic_consume(queue, lambda *a: None, auto_ack=True), connection)
    else:
        collector = Collector(channel)
        collector.consume(queue, arguments={"x-stream-offset": "first"})
        tag = collector.wait(1)[0][1].delivery_tag
        settle = channel.basic_nack if operation == "nack" else channel.basic_reject
        error = connection_error(lambda: settle(tag), connection)
    assert (error.reply_code, error.reply_text) == (
        540, f"NOT_IMPLEMENTED - {what} not supported by stream queues queue '{queue}' in vhost '/'")


def test_redeclaring_with_another_max_age_is_406(broker: BrokerUnderTest, client: Client) -> None:
    channel = client.channel()
    queue = stream(client, channel, **{"x-max-age": "7D"})
    error = channel_error(lambda: client.channel().queue_declare(
        queue, durable=True, arguments={**STREAM, "x-max-age": "1D"}))
    assert (error.reply_code, error.reply_text) == (
        406, f"PRECONDITION_FAILED - inequivalent arg 'x-max-age' for queue '{queue}' in vhost '/': "
             "received '1D' but current is '7D'")


def test_a_stream_reached_through_an_exchange_keeps_routing_key_and_headers(
        broker: BrokerUnderTest, client: Client) -> None:
    channel = client.channel()
    queue = stream(client, channel)
    exchange = client.exchange(channel, "topic")
    channel.queue_bind(queue, exchange, "user.*")
    channel.confirm_delivery()
    channel.basic_publish(exchange, "user.signup", b"alice", pika.BasicProperties(headers={"plan": "pro"}))
    reader = client.channel(client.connect())
    reader.basic_qos(prefetch_count=1)
    collector = Collector(reader)
    collector.consume(queue, arguments={"x-stream-offset": "first"})
    _, method, props, body = pump_until(reader.connection, lambda: collector.deliveries)[0]
    assert (method.exchange, method.routing_key, body) == (exchange, "user.signup", b"alice")
    assert props.headers == {"plan": "pro", "x-stream-offset": 0}


def test_a_publishers_own_x_stream_offset_header_gives_way_to_the_streams(
        broker: BrokerUnderTest, client: Client) -> None:
    """The offset a delivery carries is the stream's, whatever header of
    that name the publisher sent (RabbitMQ sets the table value)."""
    channel = client.channel()
    queue = stream(client, channel)
    channel.confirm_delivery()
    channel.basic_publish("", queue, b"m0")
    channel.basic_publish("", queue, b"m1", pika.BasicProperties(headers={"x-stream-offset": 99, "k": "v"}))
    reader = client.channel(client.connect())
    reader.basic_qos(prefetch_count=5)
    collector = Collector(reader)
    collector.consume(queue, arguments={"x-stream-offset": "first"})
    delivered = pump_until(reader.connection, lambda: len(collector.deliveries) == 2 and collector.deliveries)
    assert [(body, props.headers) for _, _, props, body in delivered] == [
        (b"m0", {"x-stream-offset": 0}), (b"m1", {"x-stream-offset": 1, "k": "v"})]
