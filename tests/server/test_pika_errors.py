"""Errors as a pika client sees them: reply codes and texts, and what each
kind of error closes. Channel errors (403/404/405/406) close one channel and
leave the connection and its other channels working; connection errors
(503/530/540) close everything."""

from __future__ import annotations

from typing import Any, Callable

import pika
import pika.exceptions
import pika.spec
import pytest

from .pika_support import (
    Client,
    Collector,
    channel_error,
    connection_error,
    get,
    get_bodies,
    wait_count,
)


def _still_works(client: Client, *channels: Any) -> None:
    """The connection and the given channels still route and deliver."""
    for ch in channels:
        assert ch.is_open
        q = client.queue(ch, exclusive=True)
        ch.basic_publish("", q, b"alive")
        assert get_bodies(ch, q) == [b"alive"]
    assert client.connection.is_open


def test_channel_errors_leave_connection_and_other_channels_working(client: Client) -> None:
    bystander = client.channel()
    owner = client.connect().channel()
    locked = client.queue(owner, exclusive=True)
    existing = client.queue(bystander, arguments={"x-message-ttl": 1000})
    missing = client.broker.name("missing")

    cases: list[tuple[int, str, Callable[[Any], Any], bool]] = [
        (404, f"NOT_FOUND - no exchange '{missing}' in vhost '/'",
         lambda ch: ch.basic_publish(missing, "k", b"x"), True),
        (404, f"NOT_FOUND - no queue '{missing}' in vhost '/'",
         lambda ch: ch.queue_declare(missing, passive=True), False),
        (405, f"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{locked}' in vhost '/'. "
              "It could be originally declared on another connection or the exclusive property value does not "
              "match that of the original declaration.",
         lambda ch: ch.queue_declare(locked, passive=True), False),
        (406, f"PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue '{existing}' in vhost '/': "
              "received '2000' but current is '1000'",
         lambda ch: ch.queue_declare(existing, arguments={"x-message-ttl": 2000}), False),
        (403, "ACCESS_REFUSED - queue name 'amq.mine' contains reserved prefix 'amq.*'",
         lambda ch: ch.queue_declare("amq.mine"), False),
        (406, "PRECONDITION_FAILED - unknown delivery tag 7",
         lambda ch: ch.basic_ack(7), True),
    ]
    for code, text, provoke, asynchronous in cases:
        ch = client.channel()
        error = channel_error(lambda: provoke(ch), ch if asynchronous else None)
        assert (error.reply_code, error.reply_text) == (code, text)
        assert ch.is_closed
        _still_works(client, bystander)
    # A fresh channel on the same connection works too.
    _still_works(client, client.channel())


def test_channel_error_requeues_that_channels_unacked_messages(client: Client) -> None:
    bystander = client.channel()
    q = client.queue(bystander, exclusive=True)
    for i in range(2):
        bystander.basic_publish("", q, b"%d" % i)
    ch = client.channel()
    c = Collector(ch)
    c.consume(q)
    c.wait(2)
    channel_error(lambda: ch.queue_declare(client.broker.name("missing"), passive=True))
    wait_count(bystander, q, 2)
    messages = [get(bystander, q) for _ in range(2)]
    assert [(m[2], m[0].redelivered) for m in messages] == [(b"0", True), (b"1", True)]


@pytest.mark.parametrize("method", ["ack", "nack", "reject"])
def test_unknown_delivery_tag(client: Client, method: str) -> None:
    ch = client.channel()
    q = client.queue(ch, exclusive=True)
    ch.basic_publish("", q, b"x")
    get(ch, q, auto_ack=False)
    settle = {"ack": lambda: ch.basic_ack(42), "nack": lambda: ch.basic_nack(42),
              "reject": lambda: ch.basic_reject(42)}[method]
    error = channel_error(settle, ch)
    assert (error.reply_code, error.reply_text) == (406, "PRECONDITION_FAILED - unknown delivery tag 42")
    _still_works(client, client.channel())


def test_consumer_tag_reuse_closes_the_connection(client: Client) -> None:
    conn = client.connect()
    ch = conn.channel()
    other = conn.channel()
    q = client.queue(ch, exclusive=True)
    ch.basic_consume(q, lambda *a: None, consumer_tag="dup")
    other.basic_consume(q, lambda *a: None, consumer_tag="dup")  # tags are per channel: fine

    def consume_again() -> None:
        # pika refuses a duplicate tag itself; send the method as the wire has it.
        ch._impl._send_method(pika.spec.Basic.Consume(queue=q, consumer_tag="dup"))
        ch.queue_declare(q, passive=True)

    error = connection_error(consume_again, conn)
    assert (error.reply_code, error.reply_text) == (530, "NOT_ALLOWED - attempt to reuse consumer tag 'dup'")
    assert conn.is_closed and ch.is_closed and other.is_closed
    _still_works(client, client.channel())  # other connections are unaffected


def test_publish_immediate_is_not_implemented(client: Client) -> None:
    conn = client.connect()
    ch = conn.channel()
    q = client.queue(ch, exclusive=True)

    def publish_immediate() -> None:
        # pika has no immediate parameter; send the method as the wire has it.
        method = pika.spec.Basic.Publish(exchange="", routing_key=q, immediate=True)
        ch._impl._send_method(method, (pika.BasicProperties(), b"now"))
        ch.queue_declare(q, passive=True)

    error = connection_error(publish_immediate, conn)
    assert (error.reply_code, error.reply_text) == (540, "NOT_IMPLEMENTED - immediate=true")
    assert conn.is_closed


def test_prefetch_size_is_not_implemented(client: Client) -> None:
    conn = client.connect()
    ch = conn.channel()
    error = connection_error(lambda: ch.basic_qos(prefetch_size=1000), conn)
    assert (error.reply_code, error.reply_text) == (540, "NOT_IMPLEMENTED - prefetch_size!=0 (1000)")


def test_recover_without_requeue_is_not_implemented(client: Client) -> None:
    conn = client.connect()
    ch = conn.channel()
    error = connection_error(lambda: ch.basic_recover(requeue=False), conn)
    assert (error.reply_code, error.reply_text) == (540, "NOT_IMPLEMENTED - requeue=false")


def test_unknown_exchange_type_closes_the_channel(client: Client) -> None:
    conn = client.connect()
    ch = conn.channel()
    name = client.broker.name("x")
    if client.broker.kind == "rabbitmq":
        # 3.10 closes the whole connection with 503; 3.12 made it a channel
        # error (rabbitmq-server #11214), which amqlite follows.
        error = connection_error(lambda: ch.exchange_declare(name, "no-such-type"), conn)
        assert (error.reply_code, error.reply_text) == (503, "COMMAND_INVALID - unknown exchange type 'no-such-type'")
        return
    error = channel_error(lambda: ch.exchange_declare(name, "no-such-type"), ch)
    assert (error.reply_code, error.reply_text) == (406, "PRECONDITION_FAILED - unknown exchange type 'no-such-type'")
    assert conn.is_open and conn.channel().is_open


def test_default_exchange_cannot_be_touched(client: Client) -> None:
    q = client.queue(client.channel(), exclusive=True)
    x = client.exchange(client.channel(), "fanout")
    text = "ACCESS_REFUSED - operation not permitted on the default exchange"
    cases = [
        lambda ch: ch.queue_bind(q, "", "k"),
        lambda ch: ch.queue_unbind(q, "", q),
        lambda ch: ch.exchange_bind(x, "", "k"),
        lambda ch: ch.exchange_bind("", x, "k"),
        lambda ch: ch.exchange_delete(""),
        lambda ch: ch.exchange_declare("", "direct"),
        lambda ch: ch.exchange_declare("", passive=True),
    ]
    for provoke in cases:
        ch = client.channel()
        error = channel_error(lambda: provoke(ch))
        assert (error.reply_code, error.reply_text) == (403, text)
    _still_works(client, client.channel())


def test_reserved_exchange_names(client: Client) -> None:
    ch = client.channel()
    error = channel_error(lambda: ch.exchange_declare("amq.mine", "direct"))
    assert (error.reply_code, error.reply_text) == (
        403, "ACCESS_REFUSED - exchange name 'amq.mine' contains reserved prefix 'amq.*'")
    ch = client.channel()
    error = channel_error(lambda: ch.exchange_delete("amq.direct"))
    assert error.reply_code == 403


def test_bind_missing_exchange_or_queue(client: Client) -> None:
    q = client.queue(client.channel(), exclusive=True)
    x = client.exchange(client.channel(), "direct")
    missing = client.broker.name("missing")
    ch = client.channel()
    error = channel_error(lambda: ch.queue_bind(q, missing, "k"))
    assert (error.reply_code, error.reply_text) == (404, f"NOT_FOUND - no exchange '{missing}' in vhost '/'")
    ch = client.channel()
    error = channel_error(lambda: ch.queue_bind(missing, x, "k"))
    assert (error.reply_code, error.reply_text) == (404, f"NOT_FOUND - no queue '{missing}' in vhost '/'")
    ch = client.channel()
    error = channel_error(lambda: ch.exchange_bind(x, missing, "k"))
    assert error.reply_code == 404
    ch = client.channel()
    error = channel_error(lambda: ch.exchange_bind(missing, x, "k"))
    assert error.reply_code == 404


@pytest.mark.parametrize(
    "arguments",
    [
        {"x-message-ttl": -1},
        {"x-expires": 0},
        {"x-max-length": -1},
        {"x-max-priority": 256},
        {"x-overflow": "drop-tail"},
        {"x-dead-letter-routing-key": "k"},  # without an exchange
        {"x-message-ttl": "soon"},
    ],
    ids=lambda a: ",".join(f"{k}={v}" for k, v in a.items()),
)
def test_invalid_queue_arguments(client: Client, arguments: dict[str, Any]) -> None:
    ch = client.channel()
    name = client.broker.name("q")
    client.forget_queue(name)
    error = channel_error(lambda: ch.queue_declare(name, arguments=arguments))
    assert error.reply_code == 406
    assert error.reply_text.startswith("PRECONDITION_FAILED - ")
    _still_works(client, client.channel())


def test_invalid_expiration_property(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, exclusive=True)
    for expiration in ("soon", "-5"):
        ch = client.channel()
        error = channel_error(
            lambda: ch.basic_publish("", q, b"x", pika.BasicProperties(expiration=expiration)), ch)
        assert error.reply_code == 406, expiration


def test_user_id_must_match_the_connection(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, exclusive=True)
    ch.basic_publish("", q, b"me", pika.BasicProperties(user_id="guest"))
    _, props, _ = get(ch, q)
    assert props.user_id == "guest"
    error = channel_error(lambda: ch.basic_publish("", q, b"x", pika.BasicProperties(user_id="bob")), ch)
    assert (error.reply_code, error.reply_text) == (
        406, "PRECONDITION_FAILED - user_id property set to 'bob' but authenticated user was 'guest'")


def test_connection_error_releases_exclusive_queues_and_unacked(client: Client) -> None:
    watcher = client.channel()
    shared = client.queue(watcher)
    watcher.basic_publish("", shared, b"held")
    conn = client.connect()
    ch = conn.channel()
    exclusive = client.queue(ch, exclusive=True)
    get(ch, shared, auto_ack=False)
    connection_error(lambda: ch.basic_qos(prefetch_size=1), conn)
    wait_count(watcher, shared, 1)
    method, _, body = get(watcher, shared)
    assert body == b"held" and method.redelivered
    # The exclusive queue went with its connection.
    error = channel_error(lambda: client.channel().queue_declare(exclusive, passive=True))
    assert error.reply_code == 404
