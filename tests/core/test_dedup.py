"""Publisher deduplication (LavinMQ's arguments) in the pure core."""

from __future__ import annotations

import pytest

from amqlite.core.broker import Broker
from amqlite.core.channel import Channel
from amqlite.core.errors import PreconditionFailed
from amqlite.core.message import Properties

from support import drain_get

DEDUP = {"x-message-deduplication": True}


def with_id(value: object, **headers: object) -> Properties:
    return Properties(headers={"x-deduplication-header": value, **headers})


def test_a_queue_stores_each_id_once_and_confirms_the_duplicate(broker: Broker, ch: Channel) -> None:
    ch.declare_queue("q", arguments=DEDUP, now=0.0)
    first = ch.publish(b"a", routing_key="q", properties=with_id("order-1"), now=0.0)
    again = ch.publish(b"a again", routing_key="q", properties=with_id("order-1"), now=1.0)
    other = ch.publish(b"b", routing_key="q", properties=with_id("order-2"), now=1.0)
    anonymous = [ch.publish(b"c", routing_key="q", now=1.0) for _ in range(2)]  # no id: never a duplicate
    assert first is not None and first.routed == 1 and not first.duplicate
    assert again is not None and again.duplicate and not again.rejected  # an ack for the publisher
    assert other is not None and anonymous[1] is not None and other.routed == anonymous[1].routed == 1
    assert drain_get(ch, "q") == [b"a", b"b", b"c", b"c"]
    assert broker.drops["duplicate"] == 1


def test_an_exchange_does_not_route_a_duplicate_anywhere(broker: Broker, ch: Channel) -> None:
    ch.declare_exchange("events", "fanout", arguments=DEDUP)
    for name in ("a", "b"):
        ch.declare_queue(name, now=0.0)
        ch.bind_queue(name, "events")
    for body in (b"1", b"1 retried"):
        ch.publish(body, exchange="events", properties=with_id(7), now=0.0)
    ch.publish(b"2", exchange="events", properties=with_id("7"), now=0.0)  # a string is another id than 7
    assert drain_get(ch, "a") == drain_get(ch, "b") == [b"1", b"2"]


def test_the_window_forgets_the_oldest_past_its_size_and_ids_after_their_ttl(broker: Broker, ch: Channel) -> None:
    ch.declare_queue("q", arguments={**DEDUP, "x-cache-size": 2, "x-cache-ttl": 10_000}, now=0.0)
    for n in (1, 2, 3):
        ch.publish(b"%d" % n, routing_key="q", properties=with_id(n), now=0.0)
    ch.publish(b"1 again", routing_key="q", properties=with_id(1), now=1.0)  # pushed out by 3: stored
    ch.publish(b"3 again", routing_key="q", properties=with_id(3), now=1.0)  # still known
    ch.publish(b"3 late", routing_key="q", properties=with_id(3), now=11.0)  # past 10 s: stored
    # A message's own x-cache-ttl wins over the queue's.
    ch.publish(b"9", routing_key="q", properties=with_id(9, **{"x-cache-ttl": 500}), now=20.0)
    ch.publish(b"9 again", routing_key="q", properties=with_id(9), now=20.6)
    assert drain_get(ch, "q") == [b"1", b"2", b"3", b"1 again", b"3 late", b"9", b"9 again"]


def test_a_custom_header_names_the_id(broker: Broker, ch: Channel) -> None:
    ch.declare_queue("q", arguments={**DEDUP, "x-deduplication-header": "msg-id"}, now=0.0)
    for body in (b"x", b"y"):
        ch.publish(body, routing_key="q", properties=Properties(headers={"msg-id": "m"}), now=0.0)
    assert drain_get(ch, "q") == [b"x"]


def test_a_stream_with_deduplication_appends_each_id_once(broker: Broker, ch: Channel) -> None:
    stream = ch.declare_queue("s", durable=True, arguments={"x-queue-type": "stream", **DEDUP}, now=0.0)
    for n in (1, 2, 1, 3, 2):
        ch.publish(b"%d" % n, routing_key="s", properties=with_id(n), now=0.0)
    assert stream.message_count == 3


@pytest.mark.parametrize("arguments", [{"x-cache-size": 0}, {"x-cache-ttl": "1s"}, {"x-deduplication-header": ""}])
def test_bad_window_arguments_are_406(broker: Broker, ch: Channel, arguments: dict[str, object]) -> None:
    with pytest.raises(PreconditionFailed, match="invalid arg"):
        ch.declare_queue("q", arguments={**DEDUP, **arguments}, now=0.0)
    assert "q" not in broker.vhosts["/"].queues


@pytest.mark.parametrize("owner", ["queue", "exchange"])
def test_an_id_whose_message_a_full_queue_refused_is_not_remembered(broker: Broker, ch: Channel, owner: str) -> None:
    """x-overflow reject-publish nacks the message: the publisher retries,
    and the retry must be stored once there is room, not acked as a
    duplicate of a message that was never stored (issue 22, item 2)."""
    full = {"x-max-length": 1, "x-overflow": "reject-publish"}
    ch.declare_queue("q", arguments={**full, **(DEDUP if owner == "queue" else {})}, now=0.0)
    exchange = ""
    if owner == "exchange":
        exchange = "dedup"
        ch.declare_exchange(exchange, "fanout", arguments=DEDUP)
        ch.bind_queue("q", exchange)
    ch.publish(b"first", exchange=exchange, routing_key="q", properties=with_id(1), now=0.0)
    refused = ch.publish(b"second", exchange=exchange, routing_key="q", properties=with_id(2), now=0.0)
    assert refused is not None and refused.rejected
    assert drain_get(ch, "q") == [b"first"]
    retried = ch.publish(b"second", exchange=exchange, routing_key="q", properties=with_id(2), now=1.0)
    assert retried is not None and retried.routed == 1 and not retried.duplicate
    again = ch.publish(b"second", exchange=exchange, routing_key="q", properties=with_id(2), now=1.0)
    assert again is not None and again.duplicate  # taken now: remembered
    assert drain_get(ch, "q") == [b"second"]
