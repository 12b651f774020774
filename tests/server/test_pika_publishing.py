"""Publishing as a pika client sees it: properties and bodies round-trip,
publisher confirms, mandatory returns, transactions."""

from __future__ import annotations

import datetime
import decimal

import pika
import pika.exceptions
import pytest

from .pika_support import Client, Collector, channel_error, get, get_bodies, pump_until, wait_get


def test_properties_and_headers_round_trip(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, exclusive=True)
    stamp = datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.timezone.utc)
    headers = {
        "str": "text ü",
        "int": 42,
        "big": 1 << 40,
        "neg": -7,
        "bool": True,
        "none": None,
        "list": [1, "two", [3], {"four": 4}],
        "table": {"nested": {"deep": "yes"}},
        "decimal": decimal.Decimal("3.14"),
        "when": stamp,
    }
    props = pika.BasicProperties(
        content_type="application/json",
        content_encoding="utf-8",
        headers=headers,
        delivery_mode=2,
        priority=3,
        correlation_id="corr",
        reply_to="replies",
        message_id="mid-1",
        timestamp=1700000000,
        type="kind",
        user_id="guest",
        app_id="tests",
    )
    ch.basic_publish("", q, b'{"a": 1}', props)
    _, got, body = get(ch, q)
    assert body == b'{"a": 1}'
    for field in ("content_type", "content_encoding", "delivery_mode", "priority", "correlation_id",
                  "reply_to", "message_id", "timestamp", "type", "user_id", "app_id"):
        assert getattr(got, field) == getattr(props, field), field
    # pika encodes no floats; it decodes long strings as str or bytes: compare as text.
    normalised = dict(got.headers)
    assert set(normalised) == set(headers)
    assert normalised["int"] == 42 and normalised["big"] == 1 << 40 and normalised["neg"] == -7
    assert normalised["bool"] is True and normalised["none"] is None
    assert normalised["decimal"] == decimal.Decimal("3.14") and normalised["when"] == stamp
    assert _text(normalised["str"]) == "text ü"
    assert _text(normalised["list"][1]) == "two" and normalised["list"][0] == 1
    assert normalised["list"][2] == [3] and normalised["list"][3] == {"four": 4}
    assert _text(normalised["table"]["nested"]["deep"]) == "yes"


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def test_no_properties_and_empty_body(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, exclusive=True)
    ch.basic_publish("", q, b"")
    _, props, body = get(ch, q)
    assert body == b""
    assert props.headers is None and props.content_type is None and props.delivery_mode is None


@pytest.mark.parametrize("size", [131072 - 8, 131072 - 7, 1_000_003])
def test_bodies_spanning_frames(client: Client, size: int) -> None:
    ch = client.channel()
    q = client.queue(ch, exclusive=True)
    body = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    ch.basic_publish("", q, body)
    c = Collector(ch)
    c.consume(q, auto_ack=True)
    c.wait(1)
    assert c.bodies == [body]
    assert get(ch, q) is None


def test_confirms_ack_routed_and_unroutable(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, exclusive=True)
    x = client.exchange(ch, "direct")
    ch.confirm_delivery()
    for i in range(20):
        ch.basic_publish("", q, b"%d" % i)  # raises NackError/UnroutableError if refused
    ch.basic_publish(x, "nobody", b"unroutable, not mandatory: acked")
    assert len(get_bodies(ch, q)) == 20


def test_confirm_select_is_idempotent_and_numbers_from_one(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, exclusive=True)
    acks = []
    impl = ch._impl
    impl.confirm_delivery(lambda frame: acks.append((type(frame.method).__name__, frame.method.delivery_tag,
                                                     frame.method.multiple)))
    ch.connection.process_data_events(time_limit=0.05)
    for i in range(3):
        ch.basic_publish("", q, b"%d" % i)
    pump_until(ch.connection, lambda: acks and max(a[1] for a in acks) >= 3)
    assert all(name == "Ack" for name, _, _ in acks)
    # Tags are 1, 2, 3; a multiple ack may cover several.
    covered: set[int] = set()
    for _, tag, multiple in acks:
        covered |= set(range(1, tag + 1)) if multiple else {tag}
    assert covered == {1, 2, 3}


def test_mandatory_return_without_confirms(client: Client) -> None:
    ch = client.channel()
    x = client.exchange(ch, "topic")
    q = client.queue(ch, exclusive=True)
    ch.queue_bind(q, x, "a.*")
    returned = []
    ch.add_on_return_callback(lambda ch_, method, props, body: returned.append((method, props, body)))
    ch.basic_publish(x, "a.b", b"routed", mandatory=True)
    ch.basic_publish(x, "b.a", b"lost", pika.BasicProperties(message_id="m1", headers={"h": 1}), mandatory=True)
    ch.basic_publish(x, "b.a", b"dropped silently", mandatory=False)
    ch.basic_publish(x, "b.a", b"sentinel", mandatory=True)
    pump_until(ch.connection, lambda: len(returned) >= 2)
    assert [r[2] for r in returned] == [b"lost", b"sentinel"]
    method, props, body = returned[0]
    assert (method.reply_code, method.reply_text, method.exchange, method.routing_key) == (312, "NO_ROUTE", x, "b.a")
    assert body == b"lost" and props.message_id == "m1" and props.headers == {"h": 1}
    assert get_bodies(ch, q) == [b"routed"]


def test_mandatory_unroutable_with_confirms_raises_unroutable(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, exclusive=True)
    ch.confirm_delivery()
    ch.basic_publish("", q, b"ok", mandatory=True)
    with pytest.raises(pika.exceptions.UnroutableError) as info:
        ch.basic_publish("", client.broker.name("nobody"), b"lost", mandatory=True)
    (returned,) = info.value.messages
    assert returned.body == b"lost" and returned.method.reply_code == 312
    ch.basic_publish("", q, b"still fine", mandatory=True)
    assert get_bodies(ch, q) == [b"ok", b"still fine"]


def test_publish_to_missing_exchange_in_confirm_mode(client: Client) -> None:
    ch = client.channel()
    ch.confirm_delivery()
    missing = client.broker.name("missing")
    error = channel_error(lambda: ch.basic_publish(missing, "k", b"x"))
    assert error.reply_code == 404


def test_tx_publishes_wait_for_commit(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, exclusive=True)
    observer = client.channel()
    ch.tx_select()
    ch.basic_publish("", q, b"1")
    ch.basic_publish("", q, b"2")
    assert get(observer, q) is None
    ch.tx_commit()
    assert get_bodies(observer, q) == [b"1", b"2"]
    ch.basic_publish("", q, b"3")  # still transactional after a commit
    assert get(observer, q) is None
    ch.tx_rollback()
    ch.tx_commit()
    assert get(observer, q) is None


def test_tx_acks_apply_on_commit_and_rollback_keeps_them_unacked(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, exclusive=True)
    for i in range(3):
        ch.basic_publish("", q, b"%d" % i)
    ch.tx_select()
    c = Collector(ch)
    tag = c.consume(q)
    c.wait(3)
    ch.basic_ack(1)
    ch.tx_commit()
    ch.basic_ack(2)
    ch.basic_reject(3, requeue=False)
    ch.tx_rollback()  # the ack of 2 and reject of 3 never happened
    ch.basic_cancel(tag)
    observer = client.channel()
    assert get(observer, q) is None  # 2 and 3 are unacked again, not requeued
    ch.basic_ack(3, multiple=True)  # tag 2 and 3 are still valid
    ch.tx_commit()
    ch.close()
    assert get(observer, q) is None


def test_tx_requeue_happens_at_commit(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, exclusive=True)
    ch.basic_publish("", q, b"m")
    ch.tx_select()
    method, _, _ = get(ch, q, auto_ack=False)
    ch.basic_reject(method.delivery_tag, requeue=True)
    assert get(client.channel(), q) is None
    ch.tx_commit()
    method, _, body = wait_get(ch, q)
    assert body == b"m" and method.redelivered


def test_tx_mandatory_return_at_commit(client: Client) -> None:
    ch = client.channel()
    returned = []
    ch.add_on_return_callback(lambda ch_, method, props, body: returned.append(body))
    ch.tx_select()
    ch.basic_publish("", client.broker.name("nobody"), b"lost", mandatory=True)
    ch.tx_commit()
    pump_until(ch.connection, lambda: returned)
    assert returned == [b"lost"]


def test_tx_and_confirm_exclude_each_other(client: Client) -> None:
    ch = client.channel()
    ch.tx_select()
    error = channel_error(lambda: ch.confirm_delivery())
    assert (error.reply_code, error.reply_text) == (406, "PRECONDITION_FAILED - cannot switch from tx to confirm mode")
    ch = client.channel()
    ch.confirm_delivery()
    error = channel_error(lambda: ch.tx_select())
    assert (error.reply_code, error.reply_text) == (406, "PRECONDITION_FAILED - cannot switch from confirm to tx mode")


def test_commit_or_rollback_without_select(client: Client) -> None:
    ch = client.channel()
    error = channel_error(lambda: ch.tx_commit())
    assert (error.reply_code, error.reply_text) == (406, "PRECONDITION_FAILED - channel is not transactional")
    ch = client.channel()
    error = channel_error(lambda: ch.tx_rollback())
    assert (error.reply_code, error.reply_text) == (406, "PRECONDITION_FAILED - channel is not transactional")


def test_tx_uncommitted_publishes_vanish_with_the_channel(client: Client) -> None:
    observer = client.channel()
    q = client.queue(observer, exclusive=True)
    ch = client.channel()
    ch.tx_select()
    ch.basic_publish("", q, b"never")
    ch.close()
    assert get(observer, q) is None


def test_persistent_flag_and_priority_are_kept_through_a_queue(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, exclusive=True)
    ch.basic_publish("", q, b"p", pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent, priority=200))
    _, props, _ = get(ch, q)
    assert props.delivery_mode == 2 and props.priority == 200
