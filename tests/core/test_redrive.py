"""Dead-letter redrive: an amqlite extension (RabbitMQ needs a shovel)."""

from __future__ import annotations

from support import dead_letter_broker as _setup
from support import props
from support import reject_all as _reject_all


def test_redrive_moves_each_message_back_to_the_queue_it_died_in_in_order():
    broker, ch = _setup()
    for body, key in ((b"a1", "a"), (b"b1", "b"), (b"a2", "a")):
        ch.publish(body, exchange="work", routing_key=key, properties=props(headers={"n": 1}), now=0)
    _reject_all(ch, "a")
    _reject_all(ch, "b")
    queues = broker.vhosts["/"].queues
    assert queues["dlq"].message_count == 3

    assert ch.redrive_queue("dlq", now=1) == 3
    assert queues["dlq"].message_count == 0
    first = ch.get("a", now=1)
    assert first.message.body == b"a1" and first.delivery_count == 0
    # The original exchange and key come back; the history stays.
    assert (first.message.exchange, first.message.routing_key) == ("work", "a")
    assert first.message.headers["x-death"][0]["queue"] == "a" and first.message.headers["n"] == 1
    assert ch.get("a", now=1).message.body == b"a2"
    assert ch.get("b", now=1).message.body == b"b1"


def test_redrive_with_a_limit_and_an_explicit_target():
    broker, ch = _setup()
    for i in range(3):
        ch.publish(b"%d" % i, exchange="work", routing_key="a", now=0)
    _reject_all(ch, "a")
    assert ch.redrive_queue("dlq", to="b", limit=2, now=1) == 2
    queues = broker.vhosts["/"].queues
    assert (queues["b"].message_count, queues["dlq"].message_count) == (2, 1)
    assert ch.get("dlq", now=1).message.body == b"2"  # the one left is still first in line


def test_messages_without_an_origin_stay_in_place_and_in_order():
    broker, ch = _setup()
    ch.publish(b"x", exchange="work", routing_key="a", now=0)
    _reject_all(ch, "a")
    ch.publish(b"plain", routing_key="dlq", now=0)  # never died anywhere
    ch.publish(b"y", exchange="work", routing_key="b", now=0)
    _reject_all(ch, "b")
    ch.delete_queue("b", now=0)  # its origin is gone

    assert ch.redrive_queue("dlq", now=1) == 1
    left = [ch.get("dlq", now=1, no_ack=True).message.body for _ in range(2)]
    assert left == [b"plain", b"y"]
    assert broker.vhosts["/"].queues["a"].message_count == 1


def test_a_full_origin_keeps_the_message_in_the_dead_letter_queue():
    broker, ch = _setup()
    ch.declare_queue("small", now=0, arguments={"x-dead-letter-exchange": "dlx", "x-max-length": 1,
                                               "x-overflow": "reject-publish"})
    for body in (b"1", b"2"):
        ch.publish(body, routing_key="small", now=0)
        _reject_all(ch, "small")
    assert ch.redrive_queue("dlq", now=1) == 1  # the second does not fit
    queues = broker.vhosts["/"].queues
    assert (queues["small"].message_count, queues["dlq"].message_count) == (1, 1)


async def test_embedded_queue_redrive(autojump_clock):
    import amqlite

    async with amqlite.open_broker() as broker:
        ch = await broker.channel()
        await ch.exchange_declare("dlx", "fanout")
        await ch.queue_declare("dlq")
        await ch.queue_bind("dlq", "dlx")
        await ch.queue_declare("jobs", arguments={"x-dead-letter-exchange": "dlx"})
        await ch.publish(b"job", routing_key="jobs")
        (await ch.get("jobs")).reject(requeue=False)
        assert await ch.queue_redrive("dlq") == 1
        again = await ch.get("jobs")
        assert again.body == b"job" and again.headers["x-death"][0]["reason"] == "rejected"
