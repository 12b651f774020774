"""Scenarios through aio-pika (asyncio, on aiormq/pamqp), against both brokers.

The suite runs in trio mode, so every scenario is a sync test that drives
its asyncio code with :func:`asyncio.run`.
"""

from __future__ import annotations

import asyncio
import datetime
from typing import Any, Awaitable, Callable

import aio_pika
import aiormq
import pytest
from aio_pika import DeliveryMode, ExchangeType, Message
from aio_pika.abc import AbstractIncomingMessage

from .conftest import BrokerUnderTest

# Every scenario is over in well under this; a hang fails instead of blocking the suite.
SCENARIO_TIMEOUT = 15


def run(scenario: Callable[[], Awaitable[Any]]) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(scenario(), SCENARIO_TIMEOUT)

    return asyncio.run(bounded())


async def ignore(message: AbstractIncomingMessage) -> None:
    pass


async def get_all(queue: aio_pika.abc.AbstractQueue) -> list[bytes]:
    """Drain ``queue`` with basic.get (no_ack) and return the bodies in order."""
    bodies = []
    while (message := await queue.get(no_ack=True, fail=False)) is not None:
        bodies.append(message.body)
    return bodies


async def get_eventually(queue: aio_pika.abc.AbstractQueue, timeout: float = 3.0) -> AbstractIncomingMessage:
    """basic.get until a message arrives (dead-lettering and TTL are asynchronous)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        message = await queue.get(no_ack=True, fail=False)
        if message is not None:
            return message
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"no message on {queue.name} within {timeout}s")
        await asyncio.sleep(0.02)


def test_connect_handshake_and_capabilities(broker: BrokerUnderTest) -> None:
    async def scenario() -> None:
        connection = await aio_pika.connect(broker.url)
        async with connection:
            amqp = connection.transport.connection  # the aiormq connection
            capabilities = amqp.server_capabilities
            # aiormq reads these to decide what it may use.
            for name in ("publisher_confirms", "basic.nack", "consumer_cancel_notify",
                         "exchange_exchange_bindings", "connection.blocked",
                         "authentication_failure_close", "per_consumer_qos", "consumer_priorities"):
                assert capabilities.get(name) is True, name
            assert amqp.basic_nack and amqp.consumer_cancel_notify and amqp.exchange_exchange_bindings
            assert amqp.publisher_confirms
            assert amqp.connection_tune.frame_max == 131072
            channel = await connection.channel()
            assert not channel.is_closed
            await channel.close()
        assert connection.is_closed

    run(scenario)


def test_exchange_types_route(broker: BrokerUnderTest) -> None:
    async def scenario() -> None:
        async with await aio_pika.connect(broker.url) as connection:
            channel = await connection.channel()
            queues = {}
            for tag in ("a", "b"):
                queues[tag] = await channel.declare_queue(broker.name(f"q{tag}"), exclusive=True)

            direct = await channel.declare_exchange(broker.name("direct"), ExchangeType.DIRECT, auto_delete=True)
            fanout = await channel.declare_exchange(broker.name("fanout"), ExchangeType.FANOUT, auto_delete=True)
            topic = await channel.declare_exchange(broker.name("topic"), ExchangeType.TOPIC, auto_delete=True)
            headers = await channel.declare_exchange(broker.name("headers"), ExchangeType.HEADERS, auto_delete=True)

            await queues["a"].bind(direct, "red")
            await queues["b"].bind(direct, "blue")
            await queues["a"].bind(fanout)
            await queues["b"].bind(fanout)
            await queues["a"].bind(topic, "stock.*.nyse")
            await queues["b"].bind(topic, "stock.#")
            await queues["a"].bind(headers, arguments={"x-match": "all", "kind": "order", "v": 1})
            await queues["b"].bind(headers, arguments={"x-match": "any", "kind": "order", "region": "eu"})

            await direct.publish(Message(b"d-red"), "red")
            await direct.publish(Message(b"d-green"), "green")
            await fanout.publish(Message(b"f"), "whatever")
            await topic.publish(Message(b"t-ibm"), "stock.ibm.nyse")
            await topic.publish(Message(b"t-deep"), "stock.a.b.c")
            await topic.publish(Message(b"t-none"), "bond.ibm.nyse")
            await headers.publish(Message(b"h-both", headers={"kind": "order", "v": 1}), "")
            await headers.publish(Message(b"h-eu", headers={"region": "eu"}), "")
            await headers.publish(Message(b"h-wrongtype", headers={"kind": "order", "v": "1"}), "")

            # Exchange-to-exchange: fanout -> a second direct exchange.
            inner = await channel.declare_exchange(broker.name("inner"), ExchangeType.DIRECT, auto_delete=True)
            await inner.bind(fanout, "")
            await queues["a"].bind(inner, "k")
            await fanout.publish(Message(b"e2e"), "k")

            # A basic.get round trip orders after every publish on this channel.
            assert await get_all(queues["a"]) == [b"d-red", b"f", b"t-ibm", b"h-both", b"e2e"]
            assert await get_all(queues["b"]) == [b"f", b"t-ibm", b"t-deep", b"h-both", b"h-eu", b"h-wrongtype", b"e2e"]

    run(scenario)


def test_queue_arguments_and_inequivalent_redeclare(broker: BrokerUnderTest) -> None:
    async def scenario() -> None:
        async with await aio_pika.connect(broker.url) as connection:
            channel = await connection.channel()
            name = broker.name("args")
            arguments = {"x-max-length": 2, "x-message-ttl": 60000, "x-max-priority": 5}
            queue = await channel.declare_queue(name, exclusive=True, arguments=arguments)
            for i in range(4):
                await channel.default_exchange.publish(Message(b"m%d" % i), name)
            # Redeclare with the same arguments reports the count (drop-head kept the newest two).
            again = await channel.declare_queue(name, exclusive=True, arguments=arguments)
            assert again.declaration_result.message_count == 2
            with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed) as caught:
                await channel.declare_queue(name, exclusive=True, arguments={**arguments, "x-max-length": 3})
            # RabbitMQ's wording: plain values when both sides have the argument.
            assert caught.value.args[-1] == (
                f"PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue '{name}' in vhost '/': "
                "received '3' but current is '2'"
            )
            assert channel.is_closed
            # The connection survives a channel error.
            channel = await connection.channel()
            queue = await channel.declare_queue(name, passive=True)
            assert await get_all(queue) == [b"m2", b"m3"]

    run(scenario)


def test_publisher_confirms_ack_and_nack(broker: BrokerUnderTest) -> None:
    async def scenario() -> None:
        async with await aio_pika.connect(broker.url) as connection:
            channel = await connection.channel(publisher_confirms=True)
            name = broker.name("confirm")
            await channel.declare_queue(
                name, exclusive=True, arguments={"x-max-length": 1, "x-overflow": "reject-publish"}
            )
            confirmation = await channel.default_exchange.publish(Message(b"first"), name)
            assert isinstance(confirmation, aiormq.spec.Basic.Ack)
            # The queue is full: reject-publish nacks, which aio-pika raises.
            with pytest.raises(aio_pika.exceptions.DeliveryError) as caught:
                await channel.default_exchange.publish(Message(b"second"), name)
            assert isinstance(caught.value.frame, aiormq.spec.Basic.Nack)
            # Many in flight at once are all confirmed.
            other = broker.name("confirm-many")
            await channel.declare_queue(other, exclusive=True)
            results = await asyncio.gather(
                *(channel.default_exchange.publish(Message(b"%d" % i), other) for i in range(50))
            )
            assert all(isinstance(result, aiormq.spec.Basic.Ack) for result in results)
            queue = await channel.declare_queue(other, passive=True)
            assert queue.declaration_result.message_count == 50

    run(scenario)


def test_consume_prefetch_and_manual_ack(broker: BrokerUnderTest) -> None:
    async def scenario() -> None:
        async with await aio_pika.connect(broker.url) as connection:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=2)
            queue = await channel.declare_queue(broker.name("prefetch"), exclusive=True)
            for i in range(5):
                await channel.default_exchange.publish(
                    Message(b"m%d" % i, delivery_mode=DeliveryMode.PERSISTENT, content_type="text/plain"),
                    queue.name,
                )
            received: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
            tag = await queue.consume(received.put)
            first = [await received.get(), await received.get()]
            await asyncio.sleep(0.2)
            assert received.empty(), "prefetch 2 allows only two unacked deliveries"
            assert [m.body for m in first] == [b"m0", b"m1"]
            assert first[0].content_type == "text/plain" and first[0].delivery_mode == DeliveryMode.PERSISTENT
            assert first[0].consumer_tag == tag and first[0].redelivered is False
            await first[0].ack()
            assert (await received.get()).body == b"m2"
            await asyncio.sleep(0.1)
            assert received.empty()
            await queue.cancel(tag)
            # Unacked messages stay unacked after cancel; closing the channel requeues them.
            await channel.close()
            channel = await connection.channel()
            queue = await channel.declare_queue(queue.name, passive=True)
            messages = []
            while (message := await queue.get(fail=False)) is not None:
                messages.append(message)
            assert [(m.body, m.redelivered) for m in messages] == [
                (b"m1", True), (b"m2", True), (b"m3", False), (b"m4", False)
            ]
            for message in messages:
                await message.ack()

    run(scenario)


def test_nack_and_reject_requeue_redelivered(broker: BrokerUnderTest) -> None:
    async def scenario() -> None:
        async with await aio_pika.connect(broker.url) as connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(broker.name("requeue"), exclusive=True)
            for body in (b"a", b"b", b"c"):
                await channel.default_exchange.publish(Message(body), queue.name)
            a = await queue.get()
            b = await queue.get()
            assert (a.redelivered, b.redelivered) == (False, False)
            await a.nack(requeue=True)
            await b.reject(requeue=True)
            # Requeued messages go back to their original positions, flagged redelivered.
            again = [await queue.get() for _ in range(3)]
            assert [(m.body, m.redelivered) for m in again] == [(b"a", True), (b"b", True), (b"c", False)]
            # nack multiple without requeue drops all three (no dead-letter exchange).
            await again[2].nack(multiple=True, requeue=False)
            assert await queue.get(fail=False) is None
            assert (await channel.declare_queue(queue.name, passive=True)).declaration_result.message_count == 0

    run(scenario)


def test_dead_letter_x_death_decodes(broker: BrokerUnderTest) -> None:
    async def scenario() -> None:
        async with await aio_pika.connect(broker.url) as connection:
            channel = await connection.channel()
            dlx = await channel.declare_exchange(broker.name("dlx"), ExchangeType.TOPIC, auto_delete=True)
            dead = await channel.declare_queue(broker.name("dead"), exclusive=True)
            await dead.bind(dlx, "#")
            work = await channel.declare_queue(
                broker.name("work"), exclusive=True, arguments={"x-dead-letter-exchange": dlx.name}
            )
            source = await channel.declare_exchange(broker.name("src"), ExchangeType.DIRECT, auto_delete=True)
            await work.bind(source, "job")
            before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0, tzinfo=None)
            await source.publish(
                Message(b"payload", headers={"trace": "t1", "CC": ["job"]}, message_id="id-1"), "job"
            )
            message = await work.get()
            await message.reject(requeue=False)

            died = await get_eventually(dead)
            assert died.body == b"payload" and died.message_id == "id-1"
            assert died.routing_key == "job" and died.exchange == dlx.name
            headers = died.headers
            assert headers["trace"] == "t1"
            (death,) = headers["x-death"]
            assert death["count"] == 1 and type(death["count"]) is int
            assert death["reason"] == "rejected"
            assert death["queue"] == work.name
            assert death["exchange"] == source.name
            assert death["routing-keys"] == ["job", "job"]
            # A timestamp field: pamqp decodes it as a datetime, to the second.
            assert isinstance(death["time"], datetime.datetime)
            now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
            assert before - datetime.timedelta(seconds=1) <= death["time"].replace(tzinfo=None) <= now
            assert headers["x-first-death-queue"] == work.name
            assert headers["x-first-death-reason"] == "rejected"
            assert headers["x-first-death-exchange"] == source.name

    run(scenario)


def test_ttl_expiry_dead_letters_with_original_expiration(broker: BrokerUnderTest) -> None:
    async def scenario() -> None:
        async with await aio_pika.connect(broker.url) as connection:
            channel = await connection.channel()
            dead = await channel.declare_queue(broker.name("expired"), exclusive=True)
            ttl_queue = await channel.declare_queue(
                broker.name("ttl"),
                exclusive=True,
                arguments={"x-message-ttl": 100, "x-dead-letter-exchange": "",
                           "x-dead-letter-routing-key": dead.name},
            )
            # Per-message expiration, smaller than the queue's TTL.
            await channel.default_exchange.publish(Message(b"short", expiration=0.05), ttl_queue.name)
            await channel.default_exchange.publish(Message(b"queue-ttl"), ttl_queue.name)
            first = await get_eventually(dead)
            second = await get_eventually(dead)
            assert (first.body, second.body) == (b"short", b"queue-ttl")
            assert first.expiration is None  # removed on dead-lettering
            (death,) = first.headers["x-death"]
            assert death["reason"] == "expired" and death["count"] == 1
            assert death["original-expiration"] == "50"
            assert death["routing-keys"] == [ttl_queue.name]
            assert "original-expiration" not in second.headers["x-death"][0]
            assert await ttl_queue.get(fail=False) is None

            # Without a dead-letter exchange expired messages are simply dropped.
            plain = await channel.declare_queue(broker.name("ttl-plain"), exclusive=True)
            await channel.default_exchange.publish(Message(b"gone", expiration=0.02), plain.name)
            await channel.default_exchange.publish(Message(b"stays"), plain.name)
            await asyncio.sleep(0.1)
            assert await get_all(plain) == [b"stays"]

    run(scenario)


def test_priority_queue_orders_by_priority(broker: BrokerUnderTest) -> None:
    async def scenario() -> None:
        async with await aio_pika.connect(broker.url) as connection:
            channel = await connection.channel(publisher_confirms=True)
            queue = await channel.declare_queue(
                broker.name("prio"), exclusive=True, arguments={"x-max-priority": 5}
            )
            for body, priority in ((b"low", 1), (b"none", None), (b"high", 5), (b"over", 9), (b"mid", 3)):
                await channel.default_exchange.publish(Message(body, priority=priority), queue.name)
            # Above the maximum counts as the maximum (FIFO among equals); none counts as 0.
            assert await get_all(queue) == [b"high", b"over", b"mid", b"low", b"none"]

    run(scenario)


def test_mandatory_returns(broker: BrokerUnderTest) -> None:
    async def scenario() -> None:
        async with await aio_pika.connect(broker.url) as connection:
            raising = await connection.channel(publisher_confirms=True, on_return_raises=True)
            nowhere = broker.name("nowhere")
            with pytest.raises(aio_pika.exceptions.PublishError) as caught:
                await raising.default_exchange.publish(Message(b"lost"), nowhere, mandatory=True)
            returned = caught.value.message
            assert returned.body == b"lost"
            assert isinstance(caught.value.frame, aiormq.spec.Basic.Return)
            assert caught.value.frame.reply_code == 312 and caught.value.frame.reply_text == "NO_ROUTE"
            assert caught.value.frame.routing_key == nowhere
            # DeliveryError is the base class callers usually catch.
            assert isinstance(caught.value, aio_pika.exceptions.DeliveryError)

            callback_channel = await connection.channel(publisher_confirms=True)
            returns: list[AbstractIncomingMessage] = []
            callback_channel.return_callbacks.add(lambda _channel, message: returns.append(message))
            exchange = await callback_channel.declare_exchange(broker.name("x"), ExchangeType.DIRECT, auto_delete=True)
            queue = await callback_channel.declare_queue(broker.name("bound"), exclusive=True)
            await queue.bind(exchange, "yes")
            await exchange.publish(Message(b"back", headers={"h": 1}), "no", mandatory=True)
            routed = await exchange.publish(Message(b"routed"), "yes", mandatory=True)
            assert isinstance(routed, aiormq.spec.Basic.Ack)
            # Without mandatory an unroutable message is confirmed and dropped.
            assert isinstance(await exchange.publish(Message(b"drop"), "no", mandatory=False), aiormq.spec.Basic.Ack)
            assert [m.body for m in returns] == [b"back"]
            assert returns[0].headers == {"h": 1} and returns[0].routing_key == "no"
            assert returns[0].exchange == exchange.name
            assert await get_all(queue) == [b"routed"]

    run(scenario)


def test_basic_get_purge_delete(broker: BrokerUnderTest) -> None:
    async def scenario() -> None:
        async with await aio_pika.connect(broker.url) as connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(broker.name("get"), auto_delete=False)
            try:
                assert await queue.get(fail=False) is None
                with pytest.raises(aio_pika.exceptions.QueueEmpty):
                    await queue.get()
                for i in range(4):
                    await channel.default_exchange.publish(Message(b"m%d" % i), queue.name)
                message = await queue.get(no_ack=False)
                assert message.body == b"m0" and message.message_count == 3 and message.delivery_tag == 1
                purged = await queue.purge()
                assert purged.message_count == 3
                # The unacked message survives the purge and comes back on reject.
                await message.reject(requeue=True)
                deleted = await queue.delete(if_unused=True, if_empty=False)
                assert deleted.message_count == 1
                with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity):
                    await channel.declare_queue(queue.name, passive=True)
                # Deleting a missing queue succeeds with a count of zero.
                channel = await connection.channel()
                assert (await channel.queue_delete(queue.name)).message_count == 0
            finally:
                if not channel.is_closed:
                    await channel.queue_delete(queue.name)

    run(scenario)


def test_exclusive_queue_is_locked_and_goes_with_its_connection(broker: BrokerUnderTest) -> None:
    async def scenario() -> None:
        owner = await aio_pika.connect(broker.url)
        other = await aio_pika.connect(broker.url)
        try:
            owner_channel = await owner.channel()
            queue = await owner_channel.declare_queue(broker.name("excl"), exclusive=True)
            await owner_channel.default_exchange.publish(Message(b"x"), queue.name)
            other_channel = await other.channel()
            with pytest.raises(aiormq.exceptions.ChannelLockedResource) as caught:
                await other_channel.declare_queue(queue.name, passive=True)
            assert "exclusive" in str(caught.value)
            other_channel = await other.channel()
            with pytest.raises(aiormq.exceptions.ChannelLockedResource):
                await (await other_channel.get_queue(queue.name, ensure=False)).consume(ignore)
            await owner.close()
            other_channel = await other.channel()
            with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity):
                await other_channel.declare_queue(queue.name, passive=True)
        finally:
            await other.close()
            await owner.close()

    run(scenario)


def test_consumer_cancelled_when_queue_deleted(broker: BrokerUnderTest) -> None:
    async def scenario() -> None:
        async with await aio_pika.connect(broker.url) as connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(broker.name("doomed"))
            cancelled: asyncio.Future[aiormq.spec.Basic.Cancel] = asyncio.get_running_loop().create_future()
            underlay = await channel.get_underlay_channel()
            underlay.on_consumer_cancel_callbacks.add(lambda frame: cancelled.set_result(frame))
            tag = await queue.consume(ignore)
            assert tag in underlay.consumers
            admin = await connection.channel()
            await admin.queue_delete(queue.name)
            frame = await asyncio.wait_for(cancelled, 3)
            assert isinstance(frame, aiormq.spec.Basic.Cancel) and frame.consumer_tag == tag
            assert tag not in underlay.consumers
            # The channel stays open and usable.
            assert not channel.is_closed
            assert (await channel.declare_queue(broker.name("after"), exclusive=True)).name

    run(scenario)


def test_heartbeat_negotiated_idle_connection_survives(broker: BrokerUnderTest) -> None:
    async def scenario() -> None:
        connection = await aio_pika.connect(broker.url + "?heartbeat=2")
        async with connection:
            # The client's smaller value wins the tune negotiation on both brokers.
            assert connection.transport.connection.connection_tune.heartbeat == 2
            channel = await connection.channel()
            queue = await channel.declare_queue(broker.name("hb"), exclusive=True)
            if broker.kind == "amqlite":
                (server_side,) = broker.server.call(lambda: list(broker.server.server.connections))
                assert server_side.heartbeat == 2
                # Idle well past two intervals (only against amqlite, to keep the suite fast):
                # heartbeats both ways keep it open.
                await asyncio.sleep(5)
            assert not connection.is_closed
            await channel.default_exchange.publish(Message(b"alive"), queue.name)
            assert await get_all(queue) == [b"alive"]

    run(scenario)


def test_wrong_password_is_refused_with_403(broker: BrokerUnderTest) -> None:
    async def scenario() -> None:
        url = broker.url.replace("guest:guest@", "guest:wrong@")
        with pytest.raises(aiormq.exceptions.ProbableAuthenticationError) as caught:
            await aio_pika.connect(url)
        assert "ACCESS_REFUSED" in str(caught.value) or "Login was refused" in str(caught.value)
        assert "PLAIN" in str(caught.value)

    run(scenario)


def test_channel_error_keeps_connection_usable(broker: BrokerUnderTest) -> None:
    async def scenario() -> None:
        async with await aio_pika.connect(broker.url) as connection:
            channel = await connection.channel()
            with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity) as caught:
                await channel.declare_queue(broker.name("missing"), passive=True)
            assert "NOT_FOUND - no queue" in str(caught.value)
            assert channel.is_closed
            channel = await connection.channel()
            with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
                await channel.declare_exchange("amq.custom", ExchangeType.DIRECT)
            channel = await connection.channel()
            with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed):
                await channel.declare_exchange("amq.direct", ExchangeType.FANOUT)
            for system in ("amq.direct", "amq.missing"):  # refused whether it exists or not
                channel = await connection.channel()
                with pytest.raises(aiormq.exceptions.ChannelAccessRefused) as caught:
                    await channel.exchange_delete(system)
                assert caught.value.args[-1] == (
                    f"ACCESS_REFUSED - deletion of system exchange '{system}' in vhost '/' not allowed"
                )
            channel = await connection.channel()
            queue = await channel.declare_queue(broker.name("ok"), exclusive=True)
            await channel.default_exchange.publish(Message(b"fine"), queue.name)
            assert await get_all(queue) == [b"fine"]
            assert not connection.is_closed

    run(scenario)


def test_delivery_limit_dead_letters(broker: BrokerUnderTest) -> None:
    async def scenario() -> None:
        async with await aio_pika.connect(broker.url) as connection:
            channel = await connection.channel()
            dead = await channel.declare_queue(broker.name("limit-dead"), exclusive=True)
            # x-delivery-limit is a quorum-queue feature in RabbitMQ: durable, not exclusive.
            name = broker.name("limit")
            queue = await channel.declare_queue(name, durable=True, arguments={
                "x-queue-type": "quorum", "x-delivery-limit": 1,
                "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead.name,
            })
            try:
                await channel.default_exchange.publish(Message(b"poison", headers={"a": 1}), name)
                first = await queue.get()
                # basic.get from a quorum queue counts from 0 (a consumer's first delivery has no count).
                assert first.headers == {"a": 1, "x-delivery-count": 0}
                assert first.redelivered is False
                await first.nack(requeue=True)
                second = await queue.get()
                assert second.redelivered is True
                assert second.headers["x-delivery-count"] == 1
                await second.nack(requeue=True)  # over the limit: dead-lettered, not requeued
                died = await get_eventually(dead)
                assert died.body == b"poison"
                (death,) = died.headers["x-death"]
                assert death["reason"] == "delivery_limit" and death["count"] == 1
                assert death["queue"] == name and isinstance(death["time"], datetime.datetime)
                assert await queue.get(fail=False) is None
            finally:
                # aio-pika's Queue.delete sends if_unused, which quorum queues refuse (540).
                await channel.queue_delete(name)

    run(scenario)


def test_exclusive_consumer_and_consumer_priority(broker: BrokerUnderTest) -> None:
    async def scenario() -> None:
        async with await aio_pika.connect(broker.url) as connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(broker.name("exclusive-consumer"), exclusive=True)
            await queue.consume(ignore, exclusive=True)
            with pytest.raises(aiormq.exceptions.ChannelAccessRefused) as caught:
                await queue.consume(ignore)
            assert f"queue '{queue.name}' in vhost '/' in exclusive use" in str(caught.value)

            channel = await connection.channel()
            await channel.set_qos(prefetch_count=1)
            queue = await channel.declare_queue(broker.name("priorities"), exclusive=True)
            low: list[AbstractIncomingMessage] = []
            high: list[AbstractIncomingMessage] = []

            async def to_low(message: AbstractIncomingMessage) -> None:
                low.append(message)

            async def to_high(message: AbstractIncomingMessage) -> None:
                high.append(message)

            await queue.consume(to_low, arguments={"x-priority": 1})
            await queue.consume(to_high, arguments={"x-priority": 10})
            for i in range(3):
                await channel.default_exchange.publish(Message(b"%d" % i), queue.name)
            while len(low) + len(high) < 2:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)
            # The high-priority consumer gets the first; the low one only while it is full.
            assert [m.body for m in high] == [b"0"] and [m.body for m in low] == [b"1"]
            await high[0].ack()
            while len(high) < 2:
                await asyncio.sleep(0.01)
            assert high[1].body == b"2"

    run(scenario)


def test_publish_to_missing_exchange_closes_channel_only(broker: BrokerUnderTest) -> None:
    async def scenario() -> None:
        async with await aio_pika.connect(broker.url) as connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.get_exchange(broker.name("absent"), ensure=False)
            with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity) as caught:
                await exchange.publish(Message(b"x"), "k")
            assert f"NOT_FOUND - no exchange '{exchange.name}' in vhost '/'" in str(caught.value)
            assert channel.is_closed and not connection.is_closed
            channel = await connection.channel(publisher_confirms=True)
            queue = await channel.declare_queue(broker.name("after"), exclusive=True)
            assert isinstance(await channel.default_exchange.publish(Message(b"y"), queue.name), aiormq.spec.Basic.Ack)

    run(scenario)


def test_large_message_and_unacked_requeued_on_connection_close(broker: BrokerUnderTest) -> None:
    async def scenario() -> None:
        body = bytes(range(256)) * 4096  # 1 MiB: many body frames at frame_max 131072
        async with await aio_pika.connect(broker.url) as connection:
            channel = await connection.channel(publisher_confirms=True)
            queue = await channel.declare_queue(broker.name("large"))
            try:
                await channel.default_exchange.publish(Message(body, message_id="big"), queue.name)
                await channel.default_exchange.publish(Message(b"small"), queue.name)
                taker = await aio_pika.connect(broker.url)
                try:
                    taker_queue = await (await taker.channel()).declare_queue(queue.name, passive=True)
                    held = await taker_queue.get()  # unacked when its connection goes
                    assert held.body == body and held.message_id == "big" and held.body_size == len(body)
                finally:
                    await taker.close()
                again = await queue.get()
                assert (again.body == body, again.redelivered) == (True, True)  # at its original position
                assert (await queue.get(no_ack=True)).body == b"small"
                await again.ack()
            finally:
                await channel.queue_delete(queue.name)

    run(scenario)


def test_internal_error_drops_one_connection_not_the_broker(broker: BrokerUnderTest) -> None:
    if broker.kind == "rabbitmq":
        pytest.skip("needs a fault injected inside the broker")
    server = broker.server
    assert server is not None
    vhost = server.call(lambda: server.server.core.vhosts["/"])
    declare_queue = vhost.declare_queue

    def faulty(name: str, **options: Any) -> Any:
        if name == "boom":
            raise RuntimeError("injected fault")
        return declare_queue(name, **options)

    server.call(setattr, vhost, "declare_queue", faulty)

    async def scenario() -> None:
        async with await aio_pika.connect(broker.url) as bystander:
            bystander_channel = await bystander.channel()
            victim = await aio_pika.connect(broker.url)
            victim_channel = await victim.channel()
            with pytest.raises(aiormq.exceptions.AMQPConnectionError):
                await victim_channel.declare_queue("boom")
            await victim.close()
            # The other client and the listener carry on.
            queue = await bystander_channel.declare_queue(broker.name("still"), exclusive=True)
            await bystander_channel.default_exchange.publish(Message(b"alive"), queue.name)
            assert await get_all(queue) == [b"alive"]
            async with await aio_pika.connect(broker.url) as newcomer:
                assert not (await newcomer.channel()).is_closed

    run(scenario)


# Invalid queue arguments: RabbitMQ prints the reason as an Erlang term, and that
# text is what people search for. The type names of integers are left out: the
# broker sees the width the client chose (pamqp sends 5 as a byte).
INVALID_QUEUE_ARGUMENTS = [
    ({"x-message-ttl": -1}, "{value_negative,-1}"),
    ({"x-message-ttl": "10"}, '"expected integer, got longstr"'),
    ({"x-message-ttl": True}, '"expected integer, got bool"'),
    ({"x-message-ttl": 315360000001}, "{value_too_large,315360000001}"),
    ({"x-expires": 0}, "{value_zero,0}"),
    ({"x-expires": -5}, "{value_negative,-5}"),
    ({"x-max-length": -1}, "{value_negative,-1}"),
    ({"x-max-length-bytes": -1}, "{value_negative,-1}"),
    ({"x-max-priority": 300}, "{max_value_exceeded,300}"),
    ({"x-max-priority": "5"}, '"expected integer, got longstr"'),
    ({"x-overflow": "nope"}, "invalid_overflow"),
    ({"x-overflow": 5}, "{unacceptable_type,"),
    ({"x-dead-letter-routing-key": "k"}, "routing_key_but_no_dlx_defined"),
    ({"x-single-active-consumer": "yes"}, "{unacceptable_type,longstr}"),
    ({"x-queue-type": "bogus"}, "\"unsupported queue type 'bogus'\""),
]


def test_invalid_queue_arguments_in_rabbitmq_wording(broker: BrokerUnderTest) -> None:
    async def scenario() -> None:
        async with await aio_pika.connect(broker.url) as connection:
            name = broker.name("invalid")
            for arguments, reason in INVALID_QUEUE_ARGUMENTS:
                channel = await connection.channel()
                with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed) as caught:
                    await channel.declare_queue(name, exclusive=True, arguments=arguments)
                text = caught.value.args[-1]
                prefix = f"PRECONDITION_FAILED - invalid arg '{next(iter(arguments))}' for queue '{name}' in vhost '/': "
                assert text.startswith(prefix + reason), (arguments, text)
            channel = await connection.channel()
            with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed) as caught:
                await channel.declare_queue(name, exclusive=True, arguments={"x-dead-letter-exchange": 5})
            assert caught.value.args[-1].startswith(
                "PRECONDITION_FAILED - invalid type '"
            ) and caught.value.args[-1].endswith(f"' for arg 'x-dead-letter-exchange' in queue '{name}' in vhost '/'")
            # x-max-priority 0 is accepted: one priority level, FIFO.
            channel = await connection.channel()
            queue = await channel.declare_queue(name, exclusive=True, arguments={"x-max-priority": 0})
            for body, priority in ((b"a", 0), (b"b", 9)):
                await channel.default_exchange.publish(Message(body, priority=priority), queue.name)
            assert await get_all(queue) == [b"a", b"b"]

    run(scenario)


INVALID_EXPIRATIONS = [
    ("-1", "{value_negative,-1}"),
    ("1.5", '{leftover_string,".5"}'),
    ("5abc", '{leftover_string,"abc"}'),
    (" 5", "no_integer"),
    ("soon", "no_integer"),
    ("315360000001", "{value_too_large,315360000001}"),
]


def test_invalid_expiration_fails_the_publish(broker: BrokerUnderTest) -> None:
    async def scenario() -> None:
        async with await aio_pika.connect(broker.url) as connection:
            queue_name = broker.name("expiration")
            keeper = await connection.channel()
            queue = await keeper.declare_queue(queue_name, exclusive=True)
            for expiration, reason in INVALID_EXPIRATIONS:
                channel = await connection.channel(publisher_confirms=True)
                underlay = await channel.get_underlay_channel()
                with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed) as caught:
                    await underlay.basic_publish(
                        b"x", routing_key=queue_name, properties=aiormq.spec.Basic.Properties(expiration=expiration)
                    )
                assert caught.value.args[-1] == f"PRECONDITION_FAILED - invalid expiration '{expiration}': {reason}"
            channel = await connection.channel(publisher_confirms=True)
            underlay = await channel.get_underlay_channel()
            for expiration in ("+60000", "00060000", "315360000000"):  # accepted as RabbitMQ does
                await underlay.basic_publish(
                    b"ok", routing_key=queue_name, properties=aiormq.spec.Basic.Properties(expiration=expiration)
                )
            assert await get_all(queue) == [b"ok"] * 3

    run(scenario)
