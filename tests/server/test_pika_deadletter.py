"""Dead-lettering as a pika client sees it: every reason, the x-death header,
routing-key overrides, CC/BCC, repeated deaths, the cycle rule, and the
delivery limit."""

from __future__ import annotations

import datetime
import time
from typing import Any

import pika
import pika.exceptions
import pytest

from .conftest import BrokerUnderTest
from .pika_support import (
    Client,
    Collector,
    channel_error,
    get,
    get_bodies,
    message_count,
    wait_count,
    wait_get,
)

TTL_MS = 100


def _text(value: Any) -> Any:
    """pika decodes long strings as str or bytes depending on content: normalise."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list):
        return [_text(v) for v in value]
    if isinstance(value, dict):
        return {k: _text(v) for k, v in value.items()}
    return value


def _death_headers(props: pika.BasicProperties, broker: BrokerUnderTest) -> dict[str, Any]:
    headers = _text(dict(props.headers or {}))
    last = {k: headers.pop(k) for k in list(headers) if k.startswith("x-last-death-")}
    if broker.kind == "amqlite":
        # Documented difference (docs/concepts.md, Dead-lettering): amqlite sets
        # x-last-death-* on every death, as RabbitMQ 3.13+; 3.10 does not.
        death = headers["x-death"][0]
        assert last == {"x-last-death-queue": death["queue"], "x-last-death-reason": death["reason"],
                        "x-last-death-exchange": death["exchange"]}
    else:
        assert last == {}
    return headers


def _check_time(death: dict[str, Any]) -> None:
    when = death.pop("time")
    assert isinstance(when, datetime.datetime)
    now = datetime.datetime.now(datetime.timezone.utc)
    assert abs((now - when.replace(tzinfo=datetime.timezone.utc)).total_seconds()) < 10


def _dlq(client: Client, ch: Any, **source_args: Any) -> tuple[str, str, str]:
    """A source queue dead-lettering through a fanout exchange into a DLQ."""
    dlx = client.exchange(ch, "fanout", prefix="dlx")
    dlq = client.queue(ch, prefix="dlq", exclusive=True)
    ch.queue_bind(dlq, dlx)
    source = client.queue(ch, exclusive=True, arguments={"x-dead-letter-exchange": dlx, **source_args})
    return source, dlx, dlq


def test_rejected_message_carries_x_death(client: Client, broker: BrokerUnderTest) -> None:
    ch = client.channel()
    source, dlx, dlq = _dlq(client, ch)
    props = pika.BasicProperties(message_id="m-1", headers={"app": "kept"}, content_type="text/plain")
    ch.basic_publish("", source, b"body", props)
    method, _, _ = get(ch, source, auto_ack=False)
    ch.basic_reject(method.delivery_tag, requeue=False)
    method, got, body = wait_get(ch, dlq)
    assert body == b"body" and not method.redelivered
    assert method.exchange == dlx and method.routing_key == source  # the original key
    assert got.message_id == "m-1" and got.content_type == "text/plain"
    headers = _death_headers(got, broker)
    (death,) = headers.pop("x-death")
    _check_time(death)
    assert death == {"count": 1, "reason": "rejected", "queue": source, "exchange": "",
                     "routing-keys": [source]}
    assert headers == {"app": "kept", "x-first-death-queue": source, "x-first-death-reason": "rejected",
                       "x-first-death-exchange": ""}


def test_nack_multiple_without_requeue_dead_letters_in_order(client: Client) -> None:
    ch = client.channel()
    source, dlx, dlq = _dlq(client, ch)
    for i in range(3):
        ch.basic_publish("", source, b"%d" % i)
    c = Collector(ch)
    c.consume(source)
    c.wait(3)
    ch.basic_nack(0, multiple=True, requeue=False)
    wait_count(ch, dlq, 3)
    assert get_bodies(ch, dlq) == [b"0", b"1", b"2"]


def test_dead_letter_routing_key_override(client: Client) -> None:
    ch = client.channel()
    dlx = client.exchange(ch, "direct", prefix="dlx")
    dlq = client.queue(ch, exclusive=True)
    ch.queue_bind(dlq, dlx, "dead")
    x = client.exchange(ch, "direct")
    source = client.queue(ch, exclusive=True,
                          arguments={"x-dead-letter-exchange": dlx, "x-dead-letter-routing-key": "dead"})
    ch.queue_bind(source, x, "orig")
    ch.basic_publish(x, "orig", b"m", pika.BasicProperties(headers={"CC": ["orig"], "BCC": ["dead"], "h": 1}))
    method, _, _ = get(ch, source, auto_ack=False)
    ch.basic_nack(method.delivery_tag, requeue=False)
    method, props, _ = wait_get(ch, dlq)
    assert method.routing_key == "dead"
    death = _text(props.headers["x-death"][0])
    assert death["exchange"] == x and death["routing-keys"] == ["orig", "orig"]
    # The override replaces CC and BCC: the CC header goes too (RabbitMQ).
    assert "CC" not in props.headers and "BCC" not in props.headers and props.headers["h"] == 1
    time.sleep(0.05)
    assert get(ch, dlq) is None  # once, though BCC named the same key


def test_expired_message_is_dead_lettered(client: Client, broker: BrokerUnderTest) -> None:
    ch = client.channel()
    source, dlx, dlq = _dlq(client, ch)
    ch.basic_publish("", source, b"late", pika.BasicProperties(expiration=str(TTL_MS)))
    method, props, body = wait_get(ch, dlq)
    assert body == b"late"
    assert props.expiration is None  # removed, so the copy does not expire again
    headers = _death_headers(props, broker)
    (death,) = headers["x-death"]
    _check_time(death)
    assert death == {"count": 1, "reason": "expired", "queue": source, "exchange": "",
                     "routing-keys": [source], "original-expiration": str(TTL_MS)}
    assert headers["x-first-death-reason"] == "expired"


def test_queue_ttl_expiry_is_dead_lettered_without_original_expiration(client: Client) -> None:
    ch = client.channel()
    source, dlx, dlq = _dlq(client, ch, **{"x-message-ttl": TTL_MS})
    ch.basic_publish("", source, b"late")
    _, props, _ = wait_get(ch, dlq)
    death = _text(props.headers["x-death"][0])
    assert death["reason"] == "expired" and "original-expiration" not in death


def test_max_length_drop_head_dead_letters_maxlen(client: Client) -> None:
    ch = client.channel()
    source, dlx, dlq = _dlq(client, ch, **{"x-max-length": 1})
    ch.basic_publish("", source, b"old")
    ch.basic_publish("", source, b"new")
    method, props, body = wait_get(ch, dlq)
    assert body == b"old"
    assert _text(props.headers["x-death"][0])["reason"] == "maxlen"
    assert get_bodies(ch, source) == [b"new"]


def test_reject_publish_dlx_nacks_and_dead_letters(client: Client) -> None:
    ch = client.channel()
    source, dlx, dlq = _dlq(client, ch, **{"x-max-length": 1, "x-overflow": "reject-publish-dlx"})
    ch.confirm_delivery()
    ch.basic_publish("", source, b"kept")
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", source, b"refused")
    _, props, body = wait_get(ch, dlq)
    assert body == b"refused"
    death = _text(props.headers["x-death"][0])
    assert (death["reason"], death["queue"]) == ("maxlen", source)
    assert get_bodies(ch, source) == [b"kept"]


def test_cc_and_bcc_through_dead_lettering(client: Client) -> None:
    ch = client.channel()
    x = client.exchange(ch, "direct")
    dlx = client.exchange(ch, "direct", prefix="dlx")
    source = client.queue(ch, exclusive=True, arguments={"x-dead-letter-exchange": dlx})
    ch.queue_bind(source, x, "main")
    by_key = {}
    for key in ("main", "cc", "bcc"):
        by_key[key] = client.queue(ch, exclusive=True)
        ch.queue_bind(by_key[key], dlx, key)
    headers = {"CC": ["cc"], "BCC": ["bcc"]}
    ch.basic_publish(x, "main", b"m", pika.BasicProperties(headers=headers))
    method, _, _ = get(ch, source, auto_ack=False)
    ch.basic_reject(method.delivery_tag, requeue=False)
    # The dead-lettered copy is routed with the original keys, CC and BCC included.
    for key in ("main", "cc", "bcc"):
        method, props, body = wait_get(ch, by_key[key])
        assert body == b"m" and method.routing_key == "main"
        death = _text(props.headers["x-death"][0])
        assert death["routing-keys"] == ["main", "cc"]  # BCC is not disclosed
        assert "BCC" not in props.headers and _text(props.headers["CC"]) == ["cc"]


def test_retry_loop_counts_repeated_deaths(client: Client, broker: BrokerUnderTest) -> None:
    ch = client.channel()
    work = broker.name("work")
    retry = broker.name("retry")
    client.forget_queue(work)
    client.forget_queue(retry)
    # work -(reject)-> retry -(50 ms TTL)-> work, both through the default exchange.
    ch.queue_declare(work, exclusive=True,
                     arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": retry})
    ch.queue_declare(retry, exclusive=True,
                     arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": work,
                                "x-message-ttl": 50})
    ch.basic_publish("", work, b"job")
    for _ in range(2):
        method, _, _ = wait_get(ch, work, auto_ack=False)
        ch.basic_reject(method.delivery_tag, requeue=False)
    method, props, body = wait_get(ch, work)
    assert body == b"job"
    headers = _death_headers(props, broker)
    deaths = headers["x-death"]
    for death in deaths:
        _check_time(death)
    assert deaths == [
        {"count": 2, "reason": "expired", "queue": retry, "exchange": "", "routing-keys": [retry]},
        {"count": 2, "reason": "rejected", "queue": work, "exchange": "", "routing-keys": [work]},
    ]
    assert (headers["x-first-death-queue"], headers["x-first-death-reason"]) == (work, "rejected")


def test_pure_ttl_cycle_is_broken(client: Client, broker: BrokerUnderTest) -> None:
    ch = client.channel()
    a = broker.name("a")
    b = broker.name("b")
    client.forget_queue(a)
    client.forget_queue(b)
    for this, other in ((a, b), (b, a)):
        ch.queue_declare(this, exclusive=True, arguments={
            "x-dead-letter-exchange": "", "x-dead-letter-routing-key": other, "x-message-ttl": 50})
    observer = client.queue(ch, exclusive=True)
    ch.basic_publish("", a, b"spin")
    time.sleep(0.4)
    # a -> b -> (back to a: dropped, it already expired there without a rejection in between)
    assert (message_count(ch, a), message_count(ch, b)) == (0, 0)
    assert get(ch, a) is None and get(ch, b) is None and get(ch, observer) is None


def test_missing_dead_letter_exchange_drops(client: Client) -> None:
    ch = client.channel()
    source = client.queue(ch, exclusive=True, arguments={"x-dead-letter-exchange": client.broker.name("none")})
    ch.basic_publish("", source, b"m")
    method, _, _ = get(ch, source, auto_ack=False)
    ch.basic_reject(method.delivery_tag, requeue=False)
    time.sleep(0.05)
    assert get(ch, source) is None
    assert ch.is_open


def test_purge_and_delete_do_not_dead_letter(client: Client) -> None:
    ch = client.channel()
    source, dlx, dlq = _dlq(client, ch)
    ch.basic_publish("", source, b"purged")
    wait_count(ch, source, 1)
    ch.queue_purge(source)
    ch.basic_publish("", source, b"deleted")
    wait_count(ch, source, 1)
    ch.queue_delete(source)
    time.sleep(0.05)
    assert get(ch, dlq) is None


def test_requeue_does_not_dead_letter(client: Client) -> None:
    ch = client.channel()
    source, dlx, dlq = _dlq(client, ch)
    ch.basic_publish("", source, b"m")
    method, _, _ = get(ch, source, auto_ack=False)
    ch.basic_nack(method.delivery_tag, requeue=True)
    method, _, _ = wait_get(ch, source)
    assert method.redelivered
    assert get(ch, dlq) is None


def _delivery_limit_queue(client: Client, ch: Any, dlx: str, quorum: bool) -> str:
    arguments = {"x-delivery-limit": 2, "x-dead-letter-exchange": dlx}
    if quorum:
        arguments["x-queue-type"] = "quorum"
        return client.queue(ch, durable=True, arguments=arguments)
    return client.queue(ch, exclusive=True, arguments=arguments)


def test_delivery_limit_quorum_queue(client: Client, broker: BrokerUnderTest) -> None:
    # Quorum queues on both brokers: RabbitMQ 3.10 honours x-delivery-limit only there.
    ch = client.channel()
    dlx = client.exchange(ch, "fanout", prefix="dlx")
    dlq = client.queue(ch, exclusive=True)
    ch.queue_bind(dlq, dlx)
    q = _delivery_limit_queue(client, ch, dlx, quorum=True)
    ch.basic_publish("", q, b"poison")
    counts = []
    c = Collector(ch)
    c.consume(q)
    for n in range(1, 4):  # a limit of 2 allows 3 deliveries
        c.wait(n)
        method, props = c.deliveries[-1][1], c.deliveries[-1][2]
        counts.append(((props.headers or {}).get("x-delivery-count"), method.redelivered))
        ch.basic_nack(method.delivery_tag, requeue=True)
    method, props, body = wait_get(ch, dlq)
    c.pump(0.1)
    assert len(c.deliveries) == 3
    assert counts == [(None, False), (1, True), (2, True)]
    assert body == b"poison"
    death = _text(props.headers["x-death"][0])
    assert (death["reason"], death["queue"], death["count"]) == ("delivery_limit", q, 1)


def test_quorum_queue_delivery_count(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, durable=True, arguments={"x-queue-type": "quorum"})
    ch.basic_publish("", q, b"m")
    other = client.channel()
    method, props, _ = wait_get(other, q, auto_ack=False)
    # basic.get from a quorum queue counts from 0 (a consumer's first delivery has no header).
    assert not method.redelivered and props.headers == {"x-delivery-count": 0}
    other.close()  # a message returned by a closed channel counts too
    method, props, _ = wait_get(ch, q, auto_ack=False)
    assert method.redelivered and props.headers == {"x-delivery-count": 1}
    ch.basic_recover(requeue=True)
    method, props, _ = wait_get(ch, q, auto_ack=False)
    assert method.redelivered and props.headers == {"x-delivery-count": 2}
    ch.basic_ack(method.delivery_tag)


def test_delivery_limit_classic_queue(client: Client, broker: BrokerUnderTest) -> None:
    ch = client.channel()
    dlx = client.exchange(ch, "fanout", prefix="dlx")
    dlq = client.queue(ch, exclusive=True)
    ch.queue_bind(dlq, dlx)
    if broker.kind == "rabbitmq":
        # RabbitMQ 3.10 has delivery limits on quorum queues only and refuses the
        # argument on a classic queue (see the quorum scenario above).
        error = channel_error(lambda: _delivery_limit_queue(client, ch, dlx, quorum=False))
        assert error.reply_code == 406 and "x-delivery-limit" in error.reply_text
        return
    # Documented difference (docs/concepts.md, Delivery limit / x-queue-type): amqlite
    # has one queue implementation, so classic queues honour x-delivery-limit and send
    # x-delivery-count too.
    q = _delivery_limit_queue(client, ch, dlx, quorum=False)
    ch.basic_publish("", q, b"poison")
    counts = []
    for _ in range(3):
        method, props, _ = wait_get(ch, q, auto_ack=False)
        counts.append((props.headers or {}).get("x-delivery-count"))
        ch.basic_reject(method.delivery_tag, requeue=True)
    assert counts == [None, 1, 2]
    _, props, _ = wait_get(ch, dlq)
    assert _text(props.headers["x-death"][0])["reason"] == "delivery_limit"
    assert get(ch, q) is None
