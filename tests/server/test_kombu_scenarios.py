"""Scenarios through kombu and py-amqp (the client Celery uses), against both brokers.

py-amqp authenticates with AMQPLAIN when the server offers it (both brokers
do), negotiates capabilities from the server's list, and decodes field
tables itself, so x-death's timestamp comes back as a ``datetime``.
"""

from __future__ import annotations

import datetime
import socket
import time
from typing import Any, Callable

import amqp
import kombu
import pytest
from kombu import Consumer, Exchange, Producer, Queue

from .conftest import BrokerUnderTest


def connect(broker: BrokerUnderTest, **options: Any) -> kombu.Connection:
    return kombu.Connection(broker.url, connect_timeout=5, **options)


def raw_connection(broker: BrokerUnderTest, password: str = "guest", **options: Any) -> amqp.Connection:
    return amqp.Connection(
        f"{broker.host}:{broker.port}", userid="guest", password=password, connect_timeout=5, **options
    )


def drain(connection: kombu.Connection, until: Callable[[], bool], timeout: float = 3.0) -> None:
    """Process events until ``until()`` holds."""
    deadline = time.monotonic() + timeout
    while not until():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError("condition not reached in time")
        try:
            connection.drain_events(timeout=min(remaining, 0.1))
        except socket.timeout:
            pass


def drain_quietly(connection: kombu.Connection, seconds: float) -> None:
    """Process whatever arrives during ``seconds``."""
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            connection.drain_events(timeout=remaining)
        except socket.timeout:
            return


def get_eventually(queue: Queue, timeout: float = 3.0) -> kombu.Message:
    deadline = time.monotonic() + timeout
    while (message := queue.get(no_ack=True)) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"no message on {queue.name} within {timeout}s")
        time.sleep(0.02)
    return message


def get_all(queue: Queue) -> list[bytes]:
    bodies = []
    while (message := queue.get(no_ack=True)) is not None:
        bodies.append(message.body)
    return bodies


def record_content_headers(connection: kombu.Connection) -> list[bytes]:
    """Payloads of the content-header frames py-amqp reads from now on (the raw
    field tables, where wire types are still visible)."""
    transport = connection.connection.transport
    read_frame = transport.read_frame
    headers: list[bytes] = []

    def recording(*args: Any, **kwargs: Any) -> Any:
        frame = read_frame(*args, **kwargs)
        if frame[0] == 2:
            headers.append(bytes(frame[2]))
        return frame

    transport.read_frame = recording
    return headers


def test_raw_py_amqp_handshake_amqplain_and_capabilities(broker: BrokerUnderTest) -> None:
    connection = raw_connection(broker)
    connection.connect()
    try:
        # py-amqp prefers AMQPLAIN over PLAIN when the server offers both (see the
        # wrong-password scenario, whose refusal names the mechanism).
        assert set(connection.mechanisms) == {b"PLAIN", b"AMQPLAIN"}
        capabilities = connection.server_capabilities
        for name in ("consumer_cancel_notify", "connection.blocked", "authentication_failure_close",
                     "publisher_confirms", "basic.nack", "exchange_exchange_bindings"):
            assert capabilities.get(name) is True, name
        # Negotiated: the client announces the ones the server supports.
        sent = connection.client_properties["capabilities"]
        assert sent["consumer_cancel_notify"] is True
        assert sent["connection.blocked"] is True
        assert sent["authentication_failure_close"] is True
        assert connection.frame_max == 131072
        assert connection.channel_max == 2047
        channel = connection.channel()
        name, count, consumers = channel.queue_declare("", exclusive=True)
        assert name.startswith("amq.gen-") and (count, consumers) == (0, 0)
        channel.close()
    finally:
        connection.close()


def test_kombu_connect_declare_exchange_types_and_route(broker: BrokerUnderTest) -> None:
    with connect(broker) as connection:
        connection.connect()
        assert connection.connected
        channel = connection.channel()
        names = {kind: broker.name(kind) for kind in ("direct", "fanout", "topic", "headers")}
        exchanges = {kind: Exchange(name, kind, auto_delete=True) for kind, name in names.items()}
        qa = Queue(broker.name("a"), exclusive=True, channel=channel)
        qb = Queue(broker.name("b"), exclusive=True, channel=channel)
        qa.declare()
        qb.declare()
        for exchange in exchanges.values():
            exchange(channel).declare()
        qa.bind_to(names["direct"], "red")
        qb.bind_to(names["direct"], "blue")
        qa.bind_to(names["fanout"])
        qb.bind_to(names["fanout"])
        qa.bind_to(names["topic"], "*.error")
        qb.bind_to(names["topic"], "app.#")
        qa.bind_to(names["headers"], arguments={"x-match": "all", "type": "report", "format": "pdf"})
        qb.bind_to(names["headers"], arguments={"x-match": "any", "type": "log", "format": "pdf"})

        producer = Producer(channel)
        producer.publish(b"d-red", exchange=exchanges["direct"], routing_key="red")
        producer.publish(b"d-none", exchange=exchanges["direct"], routing_key="green")
        producer.publish(b"fan", exchange=exchanges["fanout"], routing_key="ignored")
        producer.publish(b"t1", exchange=exchanges["topic"], routing_key="app.error")
        producer.publish(b"t2", exchange=exchanges["topic"], routing_key="app.db.warn")
        producer.publish(b"t3", exchange=exchanges["topic"], routing_key="x.y.error")
        producer.publish(b"h1", exchange=exchanges["headers"], headers={"type": "report", "format": "pdf"})
        producer.publish(b"h2", exchange=exchanges["headers"], headers={"type": "report", "format": "zip"})

        assert get_all(qa) == [b"d-red", b"fan", b"t1", b"h1"]
        assert get_all(qb) == [b"fan", b"t1", b"t2", b"h1"]


def test_kombu_queue_arguments_and_passive_declare(broker: BrokerUnderTest) -> None:
    with connect(broker) as connection:
        channel = connection.channel()
        name = broker.name("qargs")
        queue = Queue(
            name,
            exchange=Exchange(broker.name("ex"), "direct", auto_delete=True),
            routing_key="k",
            exclusive=True,
            queue_arguments={"x-max-length": 2, "x-overflow": "drop-head", "x-message-ttl": 60000},
            channel=channel,
        )
        queue.declare()
        producer = Producer(channel, exchange=queue.exchange, routing_key="k")
        for body in ("one", "two", "three"):
            producer.publish(body, serializer="json")
        declared = queue.queue_declare(passive=True)
        assert (declared.queue, declared.message_count) == (name, 2)
        message = queue.get()
        assert message.payload == "two" and message.content_type == "application/json"
        message.ack()
        # Redeclaring with other arguments is a channel error; the connection carries on.
        changed = Queue(name, exclusive=True, channel=channel, queue_arguments={
            "x-max-length": 5, "x-overflow": "drop-head", "x-message-ttl": 60000,
        })
        with pytest.raises(amqp.exceptions.PreconditionFailed) as caught:
            changed.queue_declare()
        assert caught.value.reply_code == 406
        assert caught.value.reply_text == (
            f"PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue '{name}' in vhost '/': "
            "received '5' but current is '2'"
        )
        channel = connection.channel()
        assert Queue(name, channel=channel).queue_declare(passive=True).message_count == 1


def test_kombu_confirm_publish_ack_and_nack(broker: BrokerUnderTest) -> None:
    with connect(broker, transport_options={"confirm_publish": True}) as connection:
        channel = connection.channel()
        queue = Queue(
            broker.name("confirm"), exclusive=True,
            queue_arguments={"x-max-length": 1, "x-overflow": "reject-publish"}, channel=channel,
        )
        queue.declare()
        producer = Producer(channel, routing_key=queue.name)
        producer.publish(b"accepted")  # returns once acked
        with pytest.raises(amqp.exceptions.MessageNacked):
            producer.publish(b"refused")
        # The channel is still in confirm mode and usable.
        other = Queue(broker.name("confirm-ok"), exclusive=True, channel=channel)
        other.declare()
        for i in range(20):
            producer.publish(b"%d" % i, routing_key=other.name)
        assert other.queue_declare(passive=True).message_count == 20
        assert get_all(queue) == [b"accepted"]


def test_kombu_consume_prefetch_manual_ack(broker: BrokerUnderTest) -> None:
    with connect(broker) as connection:
        channel = connection.channel()
        queue = Queue(broker.name("prefetch"), exclusive=True, channel=channel)
        queue.declare()
        producer = Producer(channel, routing_key=queue.name)
        for i in range(5):
            producer.publish({"n": i}, serializer="json", delivery_mode=2)
        received: list[kombu.Message] = []
        consumer = Consumer(channel, [queue], callbacks=[lambda body, message: received.append(message)],
                            prefetch_count=2)
        with consumer:
            drain(connection, lambda: len(received) == 2)
            drain_quietly(connection, 0.2)
            assert [m.payload["n"] for m in received] == [0, 1], "prefetch 2 allows two unacked"
            assert received[0].delivery_info["redelivered"] is False
            assert received[0].properties["delivery_mode"] == 2
            assert received[0].delivery_info["consumer_tag"] == consumer._active_tags[queue.name]
            received[0].ack()
            received[1].ack()
            drain(connection, lambda: len(received) == 4)
            drain_quietly(connection, 0.1)
            assert len(received) == 4
            for message in received[2:]:
                message.ack()
            drain(connection, lambda: len(received) == 5)
            received[4].ack()
            assert queue.queue_declare(passive=True).message_count == 0
        # kombu makes exclusive queues auto-delete: cancelling the last consumer removed it.
        with pytest.raises(amqp.exceptions.NotFound):
            queue.queue_declare(passive=True)


def test_kombu_reject_and_requeue_redelivered(broker: BrokerUnderTest) -> None:
    with connect(broker) as connection:
        channel = connection.channel()
        queue = Queue(broker.name("requeue"), exclusive=True, channel=channel)
        queue.declare()
        producer = Producer(channel, routing_key=queue.name)
        for body in (b"a", b"b", b"c"):
            producer.publish(body)
        a, b = queue.get(), queue.get()
        assert not a.delivery_info["redelivered"]
        a.requeue()  # basic.reject requeue=True (py-amqp has no basic.nack)
        b.requeue()
        again = [queue.get() for _ in range(3)]
        assert [(m.body, m.delivery_info["redelivered"]) for m in again] == [
            (b"a", True), (b"b", True), (b"c", False)
        ]
        again[0].reject()  # no requeue, no dead-letter exchange: gone
        again[1].ack()
        channel.basic_reject(again[2].delivery_tag, requeue=False)
        assert queue.get() is None
        # A second settlement of the same tag is a channel error (406 unknown delivery tag).
        with pytest.raises(amqp.exceptions.PreconditionFailed) as caught:
            channel.basic_ack(again[1].delivery_tag)
            channel.queue_declare(queue.name, passive=True)  # a round trip to see the close
        assert "unknown delivery tag" in caught.value.reply_text


def test_kombu_dead_letter_x_death_types(broker: BrokerUnderTest) -> None:
    with connect(broker) as connection:
        channel = connection.channel()
        dlx = Exchange(broker.name("dlx"), "fanout", auto_delete=True)
        dead = Queue(broker.name("dead"), exchange=dlx, exclusive=True, channel=channel)
        dead.declare()
        work = Queue(broker.name("work"), exclusive=True, channel=channel,
                     queue_arguments={"x-dead-letter-exchange": dlx.name})
        work.declare()
        producer = Producer(channel, routing_key=work.name)
        before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        producer.publish(b"job", headers={"attempt": 1}, expiration=30)
        message = work.get()
        message.reject()

        content_headers = record_content_headers(connection)
        died = get_eventually(dead)
        assert died.body == b"job"
        assert died.delivery_info["routing_key"] == work.name
        assert died.delivery_info["exchange"] == dlx.name
        assert "expiration" not in died.properties
        headers = died.headers
        assert headers["attempt"] == 1
        (death,) = headers["x-death"]
        assert isinstance(death["count"], int) and death["count"] == 1
        assert isinstance(death["time"], datetime.datetime)
        now = datetime.datetime.now(datetime.timezone.utc)
        time_of_death = death["time"]
        if time_of_death.tzinfo is None:
            time_of_death = time_of_death.replace(tzinfo=datetime.timezone.utc)
        assert before - datetime.timedelta(seconds=1) <= time_of_death <= now
        assert death["reason"] == "rejected"
        assert death["queue"] == work.name
        assert death["exchange"] == ""
        assert death["routing-keys"] == [work.name]
        assert death["original-expiration"] == "30000"
        assert headers["x-first-death-reason"] == "rejected"
        assert headers["x-first-death-queue"] == work.name
        # On the wire: count is a 64-bit long (Java's (Long), Go's .(int64)), time a timestamp.
        assert b"\x05countl" + (1).to_bytes(8, "big") in content_headers[-1]
        assert b"\x04timeT" in content_headers[-1]

        # Back to the work queue and dead again: the same (queue, reason) entry counts up.
        producer.publish(died.body, headers=died.headers, routing_key=work.name)
        work.get().reject()
        twice = get_eventually(dead)
        (death,) = twice.headers["x-death"]
        assert death["count"] == 2 and isinstance(death["count"], int)
        assert b"\x05countl" + (2).to_bytes(8, "big") in content_headers[-1]
        assert isinstance(death["time"], datetime.datetime)


def test_kombu_ttl_and_priority(broker: BrokerUnderTest) -> None:
    with connect(broker) as connection:
        channel = connection.channel()
        expired = Queue(broker.name("expired"), exclusive=True, channel=channel)
        expired.declare()
        ttl = Queue(broker.name("ttl"), exclusive=True, channel=channel, queue_arguments={
            "x-message-ttl": 80, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": expired.name,
        })
        ttl.declare()
        producer = Producer(channel)
        producer.publish(b"per-message", routing_key=ttl.name, expiration=0.03)
        producer.publish(b"queue-ttl", routing_key=ttl.name)
        first, second = get_eventually(expired), get_eventually(expired)
        assert (first.body, second.body) == (b"per-message", b"queue-ttl")
        assert first.headers["x-death"][0]["reason"] == "expired"
        assert first.headers["x-death"][0]["original-expiration"] == "30"

        prio = Queue(broker.name("prio"), exclusive=True, channel=channel, max_priority=10)
        prio.declare()
        for body, priority in ((b"p0", 0), (b"p7", 7), (b"p3", 3), (b"p7b", 7), (b"p99", 99)):
            producer.publish(body, routing_key=prio.name, priority=priority)
        assert get_all(prio) == [b"p99", b"p7", b"p7b", b"p3", b"p0"]


def test_kombu_mandatory_return(broker: BrokerUnderTest) -> None:
    returned: list[tuple[Any, ...]] = []

    def on_return(exception: Exception, exchange: str, routing_key: str, message: Any) -> None:
        returned.append((exception, exchange, routing_key, message))

    with connect(broker, transport_options={"confirm_publish": True}) as connection:
        channel = connection.channel()
        exchange = Exchange(broker.name("ret"), "direct", auto_delete=True)
        queue = Queue(broker.name("bound"), exchange=exchange, routing_key="yes", exclusive=True, channel=channel)
        queue.declare()
        producer = Producer(channel, exchange=exchange, on_return=on_return)
        producer.publish(b"lost", routing_key="no", mandatory=True, headers={"h": "v"})
        producer.publish(b"kept", routing_key="yes", mandatory=True)
        producer.publish(b"dropped", routing_key="no", mandatory=False)
        # The return precedes the confirm, so it was handled during the publish.
        assert len(returned) == 1
        exception, exchange_name, routing_key, message = returned[0]
        assert isinstance(exception, amqp.exceptions.ChannelError)
        assert exception.reply_code == 312 and exception.reply_text == "NO_ROUTE"
        assert (exchange_name, routing_key) == (exchange.name, "no")
        assert message.body == b"lost" and message.headers == {"h": "v"}
        assert get_all(queue) == [b"kept"]


def test_kombu_basic_get_purge_delete(broker: BrokerUnderTest) -> None:
    with connect(broker) as connection:
        channel = connection.channel()
        queue = Queue(broker.name("get"), channel=channel, auto_delete=False)
        queue.declare()
        try:
            assert queue.get() is None
            producer = Producer(channel, routing_key=queue.name)
            for i in range(4):
                producer.publish(b"m%d" % i)
            message = queue.get()
            assert message.body == b"m0"
            assert message.delivery_info["message_count"] == 3
            assert message.delivery_info["redelivered"] is False
            assert queue.purge() == 3
            message.requeue()  # unacked survives the purge
            # basic.reject has no reply: RabbitMQ may answer the declare before requeueing.
            deadline = time.monotonic() + 2
            while queue.queue_declare(passive=True).message_count == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert queue.queue_declare(passive=True).message_count == 1
            with pytest.raises(amqp.exceptions.PreconditionFailed):
                queue.delete(if_empty=True)
            channel = connection.channel()
            queue = queue.bind(channel)
            assert channel.queue_delete(queue.name) == 1
            with pytest.raises(amqp.exceptions.NotFound):
                queue.queue_declare(passive=True)
            channel = connection.channel()
            assert channel.queue_delete(queue.name) == 0
        finally:
            connection.channel().queue_delete(queue.name)


def test_kombu_exclusive_queue(broker: BrokerUnderTest) -> None:
    with connect(broker) as owner, connect(broker) as other:
        owner_channel = owner.channel()
        queue = Queue(broker.name("excl"), exclusive=True, channel=owner_channel)
        queue.declare()
        with pytest.raises(amqp.exceptions.ResourceLocked) as caught:
            Queue(queue.name, channel=other.channel()).queue_declare(passive=True)
        assert caught.value.reply_code == 405
        assert "cannot obtain exclusive access to locked queue" in caught.value.reply_text
        owner.release()
        with pytest.raises(amqp.exceptions.NotFound):
            Queue(queue.name, channel=other.channel()).queue_declare(passive=True)


def test_consumer_cancel_notify_when_queue_deleted(broker: BrokerUnderTest) -> None:
    # kombu's Consumer registers no on_cancel, so py-amqp raises ConsumerCancelled.
    with connect(broker) as connection, connect(broker) as admin:
        channel = connection.channel()
        queue = Queue(broker.name("doomed"), channel=channel)
        queue.declare()
        with Consumer(channel, [queue], callbacks=[lambda body, message: None]) as consumer:
            tag = consumer._active_tags[queue.name]
            admin.channel().queue_delete(queue.name)
            with pytest.raises(amqp.exceptions.ConsumerCancelled):
                drain(connection, lambda: False)
    # py-amqp with an on_cancel callback: the callback gets the tag and the channel stays open.
    connection = raw_connection(broker)
    connection.connect()
    try:
        channel = connection.channel()
        name = broker.name("doomed-raw")
        channel.queue_declare(name)
        cancelled: list[str] = []
        tag = channel.basic_consume(name, callback=lambda message: None, on_cancel=cancelled.append)
        connection.channel().queue_delete(name)
        deadline = time.monotonic() + 3
        while not cancelled and time.monotonic() < deadline:
            try:
                connection.drain_events(timeout=0.1)
            except socket.timeout:
                pass
        assert cancelled == [tag]
        assert channel.is_open
        assert channel.queue_declare("", exclusive=True).queue.startswith("amq.gen-")
    finally:
        connection.close()


def test_no_cancel_notify_without_the_capability(broker: BrokerUnderTest) -> None:
    # A client that does not announce consumer_cancel_notify is not sent basic.cancel.
    connection = raw_connection(broker)
    connection.negotiate_capabilities = {**connection.negotiate_capabilities, "consumer_cancel_notify": False}
    connection.connect()
    try:
        assert connection.client_properties["capabilities"]["consumer_cancel_notify"] is False
        channel = connection.channel()
        name = broker.name("quiet")
        channel.queue_declare(name)
        channel.basic_consume(name, callback=lambda message: None)  # no on_cancel: a cancel would raise
        connection.channel().queue_delete(name)
        deadline = time.monotonic() + 0.3
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                connection.drain_events(timeout=remaining)
            except socket.timeout:
                break
        assert channel.is_open
        assert channel.queue_declare("", exclusive=True).queue.startswith("amq.gen-")
    finally:
        connection.close()


def test_kombu_heartbeat_negotiated_idle_connection_survives(broker: BrokerUnderTest) -> None:
    with connect(broker, heartbeat=2) as connection:
        connection.connect()
        assert connection.connection.heartbeat == 2  # the client's smaller value wins
        channel = connection.channel()
        queue = Queue(broker.name("hb"), exclusive=True, channel=channel)
        queue.declare()
        if broker.kind == "amqlite":  # idle past two intervals, on amqlite only to keep the suite fast
            (server_side,) = broker.server.call(lambda: list(broker.server.server.connections))
            assert server_side.heartbeat == 2
            # py-amqp sends heartbeats only when asked to; a kombu worker loop does this.
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                connection.heartbeat_check()
                drain_quietly(connection, 0.25)
        Producer(channel, routing_key=queue.name).publish(b"alive")
        assert get_all(queue) == [b"alive"]


def test_wrong_password_refused_403(broker: BrokerUnderTest) -> None:
    connection = raw_connection(broker, password="wrong")
    with pytest.raises(amqp.exceptions.AccessRefused) as caught:
        connection.connect()
    assert caught.value.reply_code == 403
    assert caught.value.reply_text == (
        "ACCESS_REFUSED - Login was refused using authentication mechanism AMQPLAIN. "
        "For details see the broker logfile."
    )
    with pytest.raises(amqp.exceptions.AccessRefused):
        kombu.Connection(broker.url.replace("guest:guest@", "guest:nope@"), connect_timeout=5).connect()


def test_wrong_password_without_authentication_failure_close(broker: BrokerUnderTest) -> None:
    connection = raw_connection(broker, password="wrong")
    connection.negotiate_capabilities = {**connection.negotiate_capabilities, "authentication_failure_close": False}
    if broker.kind == "amqlite":
        # Documented difference (docs/concepts.md, Errors): amqlite always says why.
        with pytest.raises(amqp.exceptions.AccessRefused):
            connection.connect()
    else:
        with pytest.raises(OSError):  # RabbitMQ drops the socket after 3 s
            connection.connect()


def test_kombu_channel_error_keeps_connection_usable(broker: BrokerUnderTest) -> None:
    with connect(broker) as connection:
        channel = connection.channel()
        with pytest.raises(amqp.exceptions.NotFound) as caught:
            channel.queue_declare(broker.name("missing"), passive=True)
        assert caught.value.reply_code == 404
        # py-amqp reopens a channel the server closed; the same object carries on.
        assert channel.is_open
        assert channel.queue_declare("", exclusive=True).queue.startswith("amq.gen-")
        with pytest.raises(amqp.exceptions.NotFound) as caught:
            channel.basic_publish(amqp.Message(b"x"), exchange=broker.name("no-exchange"), routing_key="")
            channel.queue_declare("", exclusive=True)  # a round trip to see the close
        assert "no exchange" in caught.value.reply_text
        channel = connection.channel()
        with pytest.raises(amqp.exceptions.AccessRefused):
            channel.exchange_declare("amq.mine", "direct")
        assert connection.connected
        channel = connection.channel()
        queue = Queue(broker.name("fine"), exclusive=True, channel=channel)
        queue.declare()
        Producer(channel, routing_key=queue.name).publish(b"ok")
        assert get_all(queue) == [b"ok"]


def test_kombu_simple_queue_round_trip(broker: BrokerUnderTest) -> None:
    with connect(broker) as connection:
        name = broker.name("simple")
        simple = connection.SimpleQueue(name, queue_opts={"exclusive": True})
        try:
            simple.put({"hello": "world"}, serializer="json")
            simple.put("second", serializer="json")
            deadline = time.monotonic() + 2
            while simple.qsize() < 2 and time.monotonic() < deadline:  # published without confirms
                time.sleep(0.01)
            assert simple.qsize() == 2
            message = simple.get(block=True, timeout=2)
            assert message.payload == {"hello": "world"}
            message.ack()
            message = simple.get(block=True, timeout=2)
            assert message.payload == "second"
            message.ack()
            with pytest.raises(simple.Empty):
                simple.get(block=True, timeout=0.2)
        finally:
            simple.close()
            # SimpleQueue declares a durable direct exchange of the queue's name; don't leave it behind.
            connection.channel().exchange_delete(name)


def test_py_amqp_transactions_and_recover(broker: BrokerUnderTest) -> None:
    with connect(broker) as connection:
        channel = connection.channel()
        queue = Queue(broker.name("tx"), exclusive=True, channel=channel)
        queue.declare()
        channel.tx_select()
        channel.basic_publish(amqp.Message(b"rolled-back"), routing_key=queue.name)
        assert queue.queue_declare(passive=True).message_count == 0  # held until commit
        channel.tx_rollback()
        channel.basic_publish(amqp.Message(b"committed"), routing_key=queue.name)
        channel.tx_commit()
        assert queue.queue_declare(passive=True).message_count == 1
        with pytest.raises(amqp.exceptions.PreconditionFailed) as caught:
            channel.confirm_select()
        assert caught.value.reply_text == "PRECONDITION_FAILED - cannot switch from tx to confirm mode"

        channel = connection.channel()
        queue = queue.bind(channel)
        Producer(channel, routing_key=queue.name).publish(b"second")
        first, second = queue.get(), queue.get()
        assert (first.body, second.body) == (b"committed", b"second")
        channel.basic_recover(requeue=True)  # both unacked ones come back, redelivered, in order
        again = [queue.get(no_ack=True) for _ in range(2)]
        assert [(m.body, m.delivery_info["redelivered"]) for m in again] == [(b"committed", True), (b"second", True)]
        assert again[0].delivery_tag == 3  # tags go on counting on the channel


def test_kombu_queue_expires_and_global_qos(broker: BrokerUnderTest) -> None:
    with connect(broker) as connection:
        channel = connection.channel()
        # kombu turns expires (s) into x-expires (ms).
        expiring = Queue(broker.name("expires"), expires=0.15, channel=channel)
        expiring.declare()
        assert expiring.queue_declare(passive=True).queue == expiring.name
        time.sleep(0.4)
        with pytest.raises(amqp.exceptions.NotFound):
            expiring.queue_declare(passive=True)

        channel = connection.channel()
        queue = Queue(broker.name("global-qos"), exclusive=True, channel=channel)
        queue.declare()
        producer = Producer(channel, routing_key=queue.name)
        for i in range(4):
            producer.publish(b"%d" % i)
        channel.basic_qos(0, 1, True)  # global: one unacked for the whole channel
        received: list[kombu.Message] = []
        with Consumer(channel, [queue], callbacks=[lambda body, message: received.append(message)]), \
                Consumer(channel, [queue], callbacks=[lambda body, message: received.append(message)]):
            drain(connection, lambda: len(received) == 1)
            drain_quietly(connection, 0.2)
            assert len(received) == 1
            received[0].ack()
            drain(connection, lambda: len(received) == 2)
            drain_quietly(connection, 0.1)
            assert [m.body for m in received] == [b"0", b"1"]
            received[1].ack()
