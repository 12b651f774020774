"""Consumer timeouts through pika: a consumer that holds a delivery past
x-consumer-timeout has its channel closed with RabbitMQ 3.12+'s 406, and
the message goes to another consumer. amqlite only: the reference
RabbitMQ (3.10) has no x-consumer-timeout argument."""

from __future__ import annotations

import time

import pika
import pika.exceptions
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from .conftest import ServerThread, start_amqlite
from .pika_support import Collector, wait_for


def closed_by_broker(channel: BlockingChannel) -> pika.exceptions.ChannelClosedByBroker:
    """Consume until the broker closes the channel (within 5 s); the close,
    as pika raises it out of start_consuming."""
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        channel.connection.call_later(5, channel.stop_consuming)
        channel.start_consuming()
    return info.value


def test_held_delivery_closes_the_channel_with_406_and_goes_to_another_consumer(amqlite_server: ServerThread) -> None:
    slow_conn, fast_conn = amqlite_server.connect(), amqlite_server.connect()
    slow, fast = slow_conn.channel(), fast_conn.channel()
    slow.queue_declare("work", arguments={"x-consumer-timeout": 300})
    slow.basic_qos(prefetch_count=1)
    slow.basic_publish("", "work", b"long task")
    held = Collector(slow)
    held.consume("work")
    held.wait(1)
    _, method, _, _ = held.deliveries[0]
    assert not method.redelivered
    # The slow consumer never acks; another consumer joins.
    other = Collector(fast)
    other.consume("work")
    closed = closed_by_broker(slow)
    assert closed.reply_code == 406
    assert closed.reply_text == (
        "PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out. Timeout value used: 300 ms. "
        "This timeout value can be configured, see consumers doc guide to learn more")
    [(_, method, _, body)] = other.wait(1)
    assert body == b"long task" and method.redelivered
    fast.basic_ack(method.delivery_tag)
    # The connection lives on: a new channel works.
    assert slow_conn.is_open
    assert slow_conn.channel().queue_declare("work", passive=True).method.message_count == 0
    slow_conn.close()
    fast_conn.close()


def test_a_consumer_argument_lowers_the_timeout(amqlite_server: ServerThread) -> None:
    connection = amqlite_server.connect()
    channel = connection.channel()
    channel.queue_declare("lowered", arguments={"x-consumer-timeout": 3_600_000})
    channel.basic_publish("", "lowered", b"x")
    held = Collector(channel)
    held.consume("lowered", arguments={"x-consumer-timeout": 200})
    held.wait(1)
    closed = closed_by_broker(channel)
    assert closed.reply_code == 406 and "200 ms" in closed.reply_text
    assert connection.channel().queue_declare("lowered", passive=True).method.message_count == 1
    connection.close()


def test_the_broker_default_is_off_and_a_setting_turns_it_on() -> None:
    server = start_amqlite(consumer_timeout=250)
    try:
        connection = server.connect()
        channel = connection.channel()
        channel.queue_declare("defaulted")
        channel.basic_publish("", "defaulted", b"x")
        held = Collector(channel)
        held.consume("defaulted")
        held.wait(1)
        assert "250 ms" in closed_by_broker(channel).reply_text
        connection.close()
    finally:
        server.stop()


def test_acks_racing_the_timeout_do_not_close_the_connection(amqlite_server: ServerThread) -> None:
    """Frames the client sent before it heard of the close are ignored, as
    on any closing channel; the connection stays up."""
    connection = amqlite_server.connect()
    channel = connection.channel()
    channel.queue_declare("race", arguments={"x-consumer-timeout": 100})
    for _ in range(3):
        channel.basic_publish("", "race", b"x")
    held = Collector(channel)
    held.consume("race")
    held.wait(3)
    time.sleep(0.3)  # past the timeout, before reading the close
    with pytest.raises(pika.exceptions.ChannelClosedByBroker):
        for _, method, _, _ in held.deliveries:
            channel.basic_ack(method.delivery_tag)  # pika raises once it reads the close
        closed_by_broker(channel)
    connection.process_data_events(time_limit=0.2)
    assert connection.is_open
    fresh = connection.channel()
    assert wait_for(lambda: fresh.queue_declare("race", passive=True).method.message_count == 3)
    connection.close()
