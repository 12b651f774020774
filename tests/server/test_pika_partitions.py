"""x-consistent-hash through pika, against amqlite and the reference
RabbitMQ (rabbitmq_consistent_hash_exchange, enabled by .ci/run): the same
validation errors, one queue per message, the same key always to the same
queue, and weights sharing the keys. Which queue a key lands on is the
one thing that differs (amqlite does not hash with Erlang's phash2)."""

from __future__ import annotations

from collections import Counter

import pika
import pytest

from .conftest import BrokerUnderTest
from .pika_support import Client

KEYS = [f"order-{n}" for n in range(600)]


def partitions(client: Client, weights: tuple[str, ...], **arguments: str) -> tuple[str, list[str]]:
    channel = client.channel()
    exchange = client.exchange(channel, "x-consistent-hash", arguments=arguments or None)
    queues = [client.queue(channel) for _ in weights]
    for queue, weight in zip(queues, weights):
        channel.queue_bind(queue, exchange, weight)
    return exchange, queues


def drain(channel: pika.adapters.blocking_connection.BlockingChannel, queue: str) -> list[str]:
    keys = []
    while (got := channel.basic_get(queue, auto_ack=True))[0] is not None:
        keys.append(got[2].decode())
    return keys


def test_each_key_reaches_one_queue_the_same_every_time_with_weights(broker: BrokerUnderTest,
                                                                     client: Client) -> None:
    exchange, queues = partitions(client, ("1", "1", "2"))
    channel = client.channel()
    channel.confirm_delivery()
    for _ in range(2):
        for key in KEYS:
            channel.basic_publish(exchange, key, key.encode())
    where: dict[str, set[str]] = {}
    counts = Counter()
    for queue in queues:
        for key in drain(channel, queue):
            where.setdefault(key, set()).add(queue)
            counts[queue] += 1
    assert sum(counts.values()) == 2 * len(KEYS)  # one queue per message
    assert all(len(reached) == 1 for reached in where.values())  # each key: always the same queue
    light_a, light_b, heavy = (counts[q] for q in queues)
    assert heavy > 1.3 * max(light_a, light_b)  # weight 2 against weight 1 each


def test_hash_header_routes_by_the_header_not_the_routing_key(broker: BrokerUnderTest, client: Client) -> None:
    exchange, queues = partitions(client, ("1", "1", "1", "1"), **{"hash-header": "customer"})
    channel = client.channel()
    channel.confirm_delivery()
    for n in range(40):
        channel.basic_publish(exchange, f"random-{n}", b"alice",
                              pika.BasicProperties(headers={"customer": "alice"}))
    assert sorted(len(drain(channel, q)) for q in queues) == [0, 0, 0, 40]


@pytest.mark.parametrize(("arguments", "text"), [
    ({"hash-header": "h", "hash-property": "message_id"}, "hash-header and hash-property are mutually exclusive"),
    ({"hash-property": "app_id"}, "Unsupported property: app_id"),
])
def test_bad_arguments_are_406_with_the_plugins_words(broker: BrokerUnderTest, client: Client,
                                                      arguments: dict[str, str], text: str) -> None:
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
        client.exchange(client.channel(), "x-consistent-hash", arguments=arguments)
    assert (refused.value.reply_code, refused.value.reply_text) == (406, f"PRECONDITION_FAILED - {text}")


@pytest.mark.parametrize(("weight", "text"), [("abc", 'The binding key must be an integer: <<"abc">>'),
                                              ("0", "The binding key must be greater than 0")])
def test_a_weight_that_is_not_a_positive_integer_is_406(broker: BrokerUnderTest, client: Client,
                                                        weight: str, text: str) -> None:
    channel = client.channel()
    exchange = client.exchange(channel, "x-consistent-hash")
    queue = client.queue(channel)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
        channel.queue_bind(queue, exchange, weight)
    assert (refused.value.reply_code, refused.value.reply_text) == (406, f"PRECONDITION_FAILED - {text}")
