"""The x-delayed-message exchange: x-delay (ms) holds a message, then it routes
with the x-delayed-type."""

from __future__ import annotations

import pytest
import trio
from support import drain_get, props

import amqlite
from amqlite.core.errors import PreconditionFailed


def _delayed(ch, inner="direct"):
    ch.declare_exchange("delayed", "x-delayed-message", arguments={"x-delayed-type": inner})


def _pub(ch, body, delay, *, routing_key="k", now=0.0, **headers):
    if delay is not None:
        headers["x-delay"] = delay
    return ch.publish(body, exchange="delayed", routing_key=routing_key, properties=props(headers=headers), now=now)


def test_message_held_until_due(broker, ch):
    _delayed(ch)
    ch.declare_queue("q", now=0)
    ch.bind_queue("q", "delayed", "k")
    outcome = _pub(ch, b"later", 1500, now=10)
    assert outcome.delayed and outcome.routed == 0
    assert broker.vhosts["/"].exchanges["delayed"].pending_count == 1
    assert broker.next_deadline() == pytest.approx(11.5)
    broker.tick(11.499)
    assert drain_get(ch, "q") == []
    broker.tick(11.5)
    assert drain_get(ch, "q") == [b"later"]
    assert broker.next_deadline() is None


def test_delays_release_in_due_order_not_publish_order(broker, ch):
    _delayed(ch)
    ch.declare_queue("q", now=0)
    ch.bind_queue("q", "delayed", "k")
    _pub(ch, b"3s", 3000)
    _pub(ch, b"1s", 1000)
    _pub(ch, b"2s", 2000)
    _pub(ch, b"1s-second", 1000)
    broker.tick(1)
    assert drain_get(ch, "q") == [b"1s", b"1s-second"]
    broker.tick(5)
    assert drain_get(ch, "q") == [b"2s", b"3s"]


@pytest.mark.parametrize("delay", [0, -500, None, "1000"])
def test_no_positive_delay_routes_at_once(ch, delay):
    _delayed(ch)
    ch.declare_queue("q", now=0)
    ch.bind_queue("q", "delayed", "k")
    outcome = _pub(ch, b"now", delay)
    assert outcome.routed == 1 and not outcome.delayed
    assert drain_get(ch, "q") == [b"now"]


def test_inner_type_topic_routes_on_release(broker, ch):
    _delayed(ch, "topic")
    ch.declare_queue("orders", now=0)
    ch.declare_queue("all", now=0)
    ch.bind_queue("orders", "delayed", "orders.*")
    ch.bind_queue("all", "delayed", "#")
    _pub(ch, b"o", 100, routing_key="orders.new")
    _pub(ch, b"p", 100, routing_key="payments.new")
    broker.tick(0.1)
    assert drain_get(ch, "orders") == [b"o"]
    assert drain_get(ch, "all") == [b"o", b"p"]


def test_inner_type_fanout(broker, ch):
    _delayed(ch, "fanout")
    ch.declare_queue("q", now=0)
    ch.bind_queue("q", "delayed", "ignored")
    _pub(ch, b"x", 100, routing_key="anything")
    broker.tick(0.1)
    assert drain_get(ch, "q") == [b"x"]


def test_bindings_at_release_time_decide(broker, ch):
    _delayed(ch)
    ch.declare_queue("q", now=0)
    _pub(ch, b"x", 100)
    ch.bind_queue("q", "delayed", "k")  # bound after publish, before release
    broker.tick(0.1)
    assert drain_get(ch, "q") == [b"x"]


def test_released_message_keeps_x_delay_header_and_gets_queue_ttl(broker, ch):
    _delayed(ch)
    ch.declare_queue("q", arguments={"x-message-ttl": 1000}, now=0)
    ch.bind_queue("q", "delayed", "k")
    _pub(ch, b"x", 5000)
    broker.tick(5)
    assert ch.declare_queue("q", passive=True, now=5).message_count == 1  # TTL counts from release
    got = ch.get("q", now=5.5)
    assert got.message.headers["x-delay"] == 5000


def test_missing_delayed_type_is_406(ch):
    with pytest.raises(PreconditionFailed) as info:
        ch.declare_exchange("d", "x-delayed-message")
    assert info.value.reply_code == 406
    with pytest.raises(PreconditionFailed):
        ch.declare_exchange("d", "x-delayed-message", arguments={"x-delayed-type": "x-delayed-message"})


def test_deleting_delayed_exchange_drops_pending(broker, ch):
    _delayed(ch)
    ch.declare_queue("q", now=0)
    ch.bind_queue("q", "delayed", "k")
    _pub(ch, b"x", 100)
    ch.delete_exchange("delayed")
    broker.tick(1)
    assert drain_get(ch, "q") == []
    assert broker.drops["exchange-deleted"] == 1


def test_many_delays_scheduled_as_one_timer(broker, ch):
    _delayed(ch)
    for i in range(100):
        _pub(ch, b"x", 1000 + i)
    # One deadline entry per exchange, however many messages it holds.
    assert len(broker.timers) == 1


async def test_delay_through_embedded_api(autojump_clock):
    async with amqlite.open_broker() as broker:
        ch = await broker.channel()
        await ch.exchange_declare("delayed", "x-delayed-message", arguments={"x-delayed-type": "direct"})
        await ch.queue_declare("q")
        await ch.queue_bind("q", "delayed", "k")
        consumer = await ch.consume("q")
        started = trio.current_time()
        await ch.publish(b"x", exchange="delayed", routing_key="k", properties=props(headers={"x-delay": 2500}))
        delivery = await consumer.__anext__()
        assert delivery.body == b"x"
        assert trio.current_time() - started == pytest.approx(2.5, abs=1e-3)


def test_a_delayed_exchange_reached_through_an_exchange_binding_still_delays():
    """As in the plugin: the delay applies wherever the message meets the exchange."""
    from amqlite.core.broker import Broker
    from amqlite.core.message import Properties

    broker = Broker()
    ch = broker.connect().open_channel()
    ch.declare_exchange("front", "fanout")
    ch.declare_exchange("later", "x-delayed-message", arguments={"x-delayed-type": "fanout"})
    ch.bind_exchange("later", "front")
    ch.declare_queue("now", now=0)
    ch.declare_queue("delayed", now=0)
    ch.bind_queue("now", "front")
    ch.bind_queue("delayed", "later")
    outcome = ch.publish(b"m", exchange="front", properties=Properties(headers={"x-delay": 5000}), now=0)
    assert outcome.routed == 1 and outcome.delayed
    queues = broker.vhosts["/"].queues
    assert (queues["now"].message_count, queues["delayed"].message_count) == (1, 0)
    broker.tick(4.9)
    assert queues["delayed"].message_count == 0
    broker.tick(5.0)
    assert queues["delayed"].message_count == 1

