"""What survives a restart, seen through pika: definitions of every kind,
persistent messages on durable queues (in order, by priority), delayed
messages and retry schedules (released at the right time), delivery counts
(x-delivery-limit keeps counting) and message deadlines (TTL keeps running
while the broker is down). Transient things do not survive.

Times are real and short (a second or two); a "crash" stops all writes and
then the server, so only what was synced survives."""

from __future__ import annotations

import time

import pika
import pika.exceptions
import pytest

from .durability_support import Durable, bodies, durable, persistent  # noqa: F401


def _closed_with(code: int, fn, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as error:
        fn(*args, **kwargs)
    assert error.value.reply_code == code


def test_definitions_of_every_kind(durable: Durable) -> None:
    ch = durable.channel()
    ch.exchange_declare("d.direct", "direct", durable=True)
    ch.exchange_declare("d.fanout", "fanout", durable=True)
    ch.exchange_declare("d.topic", "topic", durable=True)
    ch.exchange_declare("d.headers", "headers", durable=True)
    ch.exchange_declare("d.delayed", "x-delayed-message", durable=True, arguments={"x-delayed-type": "topic"})
    ch.exchange_declare("d.ae", "fanout", durable=True)
    ch.exchange_declare("d.with-ae", "direct", durable=True, arguments={"alternate-exchange": "d.ae"})
    ch.exchange_declare("t.direct", "direct")  # transient
    queue_args = {
        "prio": {"x-max-priority": 9},
        "ttl": {"x-message-ttl": 60000, "x-dead-letter-exchange": "d.fanout", "x-dead-letter-routing-key": "dl"},
        "limits": {"x-max-length": 100, "x-overflow": "reject-publish", "x-delivery-limit": 4},
        "retry": {"x-delayed-retry-min": 100, "x-delayed-retry-max": 1000, "x-delayed-retry-multiplier": 2},
        "plain": {},
        "caught": {},
    }
    for name, args in queue_args.items():
        ch.queue_declare(name, durable=True, arguments=args)
    ch.queue_declare("transient-q")
    ch.queue_bind("plain", "d.direct", "k")
    ch.queue_bind("plain", "d.topic", "a.*.z")
    ch.queue_bind("prio", "d.headers", arguments={"x-match": "all", "kind": "prio", "n": 1})
    ch.queue_bind("ttl", "d.headers", arguments={"x-match": "any", "kind": "ttl", "other": "x"})
    ch.queue_bind("caught", "d.ae")
    ch.exchange_bind("d.fanout", "d.topic", "fan.#")  # e2e
    ch.exchange_bind("d.topic", "d.delayed", "#")
    ch.queue_bind("limits", "d.fanout")
    ch.queue_bind("transient-q", "d.direct", "k")
    ch.exchange_bind("t.direct", "d.direct", "k")
    durable.restart()

    ch = durable.channel()
    for name, kind in (("d.direct", "direct"), ("d.fanout", "fanout"), ("d.topic", "topic"),
                       ("d.headers", "headers"), ("d.ae", "fanout")):
        ch.exchange_declare(name, kind, durable=True)  # equivalent: no error
    ch.exchange_declare("d.delayed", "x-delayed-message", durable=True, arguments={"x-delayed-type": "topic"})
    ch.exchange_declare("d.with-ae", "direct", durable=True, arguments={"alternate-exchange": "d.ae"})
    for name, args in queue_args.items():
        assert ch.queue_declare(name, durable=True, arguments=args).method.message_count == 0
    _closed_with(406, ch.queue_declare, "prio", durable=True, arguments={"x-max-priority": 3})
    ch = durable.channel()
    _closed_with(406, ch.exchange_declare, "d.topic", "direct", durable=True)
    ch = durable.channel()
    _closed_with(404, ch.queue_declare, "transient-q", passive=True)
    ch = durable.channel()
    _closed_with(404, ch.exchange_declare, "t.direct", passive=True)

    # The bindings route as before.
    ch = durable.channel()
    ch.basic_publish("d.direct", "k", b"direct")
    ch.basic_publish("d.topic", "a.b.z", b"topic")
    ch.basic_publish("d.topic", "fan.out", b"e2e")
    ch.basic_publish("d.delayed", "fan.x", b"delayed e2e e2e")  # no x-delay: routed now
    ch.basic_publish("d.headers", "", b"all", pika.BasicProperties(headers={"kind": "prio", "n": 1}))
    ch.basic_publish("d.headers", "", b"not all", pika.BasicProperties(headers={"kind": "prio"}))
    ch.basic_publish("d.headers", "", b"any", pika.BasicProperties(headers={"other": "x"}))
    ch.basic_publish("d.with-ae", "nowhere", b"alternate")
    assert bodies(ch, "plain") == [b"direct", b"topic"]
    assert bodies(ch, "limits") == [b"e2e", b"delayed e2e e2e"]
    assert bodies(ch, "prio") == [b"all"]
    assert bodies(ch, "ttl") == [b"any"]
    assert bodies(ch, "caught") == [b"alternate"]
    # Queue arguments are in force: priorities, max-length with reject-publish.
    ch.confirm_delivery()
    for i in range(100):
        ch.basic_publish("", "limits", b"%d" % i, persistent())
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", "limits", b"one too many")
    # Unbinding and deleting survive too.
    ch.queue_unbind("prio", "d.headers", arguments={"n": 1, "kind": "prio", "x-match": "all"})
    ch.exchange_unbind("d.fanout", "d.topic", "fan.#")
    ch.exchange_delete("d.ae")
    ch.queue_delete("caught")
    durable.restart()
    ch = durable.channel()
    ch.basic_publish("d.headers", "", b"unbound", pika.BasicProperties(headers={"kind": "prio", "n": 1}))
    ch.basic_publish("d.topic", "fan.out", b"unbound e2e")
    assert bodies(ch, "prio") == [] and ch.queue_declare("limits", passive=True).method.message_count == 100
    _closed_with(404, ch.exchange_declare, "d.ae", passive=True)
    ch = durable.channel()
    _closed_with(404, ch.queue_declare, "caught", passive=True)


def test_persistent_messages_priorities_and_order(durable: Durable) -> None:
    ch = durable.channel(confirm=True)
    ch.queue_declare("fifo", durable=True)
    ch.queue_declare("prio", durable=True, arguments={"x-max-priority": 5})
    ch.queue_declare("temp", durable=False)
    for i in range(30):
        ch.basic_publish("", "fifo", b"p%02d" % i, persistent())
        if i % 3 == 0:
            ch.basic_publish("", "fifo", b"transient %d" % i)  # delivery_mode 1: gone after restart
        ch.basic_publish("", "prio", b"%d:%02d" % (i % 7, i), persistent(priority=i % 7))
        ch.basic_publish("", "temp", b"t", persistent())
    durable.restart()
    ch = durable.channel()
    assert bodies(ch, "fifo") == [b"p%02d" % i for i in range(30)]
    expected = sorted((b"%d:%02d" % (i % 7, i) for i in range(30)),
                      key=lambda b: (-min(int(b[:1]), 5), b[2:]))
    assert bodies(ch, "prio") == expected
    _closed_with(404, ch.queue_declare, "temp", passive=True)


def test_unacked_come_back_redelivered_after_a_crash(durable: Durable) -> None:
    ch = durable.channel(confirm=True)
    ch.queue_declare("q", durable=True)
    for i in range(10):
        ch.basic_publish("", "q", b"%d" % i, persistent())
    ch.basic_qos(prefetch_count=4)
    got = []
    ch.basic_consume("q", lambda c, m, p, b: got.append((m.delivery_tag, b)))
    while len(got) < 4:
        ch.connection.process_data_events(time_limit=0.05)
    ch.basic_ack(got[1][0])  # "1"
    ch.basic_ack(got[3][0])  # "3"; the credit freed sends "4" and "5"
    # Acks are not confirmed to the client: give them a moment to reach the disk.
    time.sleep(0.3)
    durable.crash_and_restart()
    ch = durable.channel()
    out = []
    while (item := ch.basic_get("q", auto_ack=True))[0] is not None:
        out.append((item[2], item[0].redelivered))
    delivered = [(b"%d" % i, True) for i in (0, 2, 4, 5)]
    assert out == delivered + [(b"%d" % i, False) for i in range(6, 10)]


def test_unsynced_is_lost_in_a_crash_synced_is_not(durable: Durable) -> None:
    ch = durable.channel(confirm=True)
    ch.queue_declare("q", durable=True)
    ch.basic_publish("", "q", b"confirmed", persistent())
    durable.fs.dead = True  # from here on nothing reaches the disk...
    plain = durable.channel()  # ...so this publish (no confirm asked) is lost
    plain.basic_publish("", "q", b"unconfirmed", persistent())
    plain.queue_declare("q", passive=True)  # a round trip: the publish was processed
    durable.crash_and_restart()
    assert bodies(durable.channel(), "q") == [b"confirmed"]


def test_delayed_messages_across_a_restart(durable: Durable) -> None:
    ch = durable.channel(confirm=True)
    ch.exchange_declare("delay", "x-delayed-message", durable=True, arguments={"x-delayed-type": "direct"})
    ch.queue_declare("q", durable=True)
    ch.queue_bind("q", "delay", "k")
    started = time.monotonic()
    for ms in (1500, 300):
        ch.basic_publish("delay", "k", b"after %d" % ms, persistent(headers={"x-delay": ms}))
    ch.basic_publish("delay", "k", b"transient", pika.BasicProperties(headers={"x-delay": 300}))
    durable.crash_and_restart()  # confirmed, so on disk
    ch = durable.channel()
    # The 300 ms one fell due while the broker was down (or just after): released at start.
    deadline = time.monotonic() + 3
    got: list[bytes] = []
    while len(got) < 2 and time.monotonic() < deadline:
        item = ch.basic_get("q", auto_ack=True)
        if item[0] is not None:
            got.append(item[2])
            if item[2] == b"after 300":
                assert time.monotonic() - started >= 0.3
            else:
                assert time.monotonic() - started >= 1.5, "released before its time"
        else:
            time.sleep(0.02)
    assert got == [b"after 300", b"after 1500"]
    time.sleep(0.3)
    assert bodies(ch, "q") == []  # the transient one did not survive
    durable.restart()
    assert bodies(durable.channel(), "q") == []  # and released ones are not held again


def test_retry_schedule_across_a_restart(durable: Durable) -> None:
    ch = durable.channel(confirm=True)
    ch.queue_declare("q", durable=True, arguments={"x-delayed-retry-min": 1000, "x-delivery-limit": 5})
    ch.basic_publish("", "q", b"job", persistent())
    method, _, _ = ch.basic_get("q")
    failed_at = time.monotonic()
    ch.basic_nack(method.delivery_tag, requeue=True)  # retried in 1 s
    ch.queue_declare("q", passive=True)  # round trip
    time.sleep(0.2)
    durable.crash_and_restart()
    ch = durable.channel()
    item = ch.basic_get("q")
    while item[0] is None:
        time.sleep(0.02)
        item = ch.basic_get("q")
    assert time.monotonic() - failed_at >= 0.95, "retried before its delay"
    method, props, body = item
    assert body == b"job" and method.redelivered and props.headers["x-delivery-count"] == 1


def test_delivery_limit_keeps_counting_across_restarts(durable: Durable) -> None:
    ch = durable.channel(confirm=True)
    ch.exchange_declare("dlx", "fanout", durable=True)
    ch.queue_declare("dead", durable=True)
    ch.queue_bind("dead", "dlx")
    ch.queue_declare("q", durable=True, arguments={"x-delivery-limit": 2, "x-dead-letter-exchange": "dlx"})
    ch.basic_publish("", "q", b"poison", persistent())
    for attempt in range(3):
        method, props, body = ch.basic_get("q")
        assert body == b"poison"
        assert (props.headers or {}).get("x-delivery-count", 0) == attempt
        ch.basic_nack(method.delivery_tag, requeue=True)
        ch.queue_declare("q", passive=True)  # round trip: the nack was processed
        time.sleep(0.1)
        durable.crash_and_restart() if attempt % 2 else durable.restart()
        ch = durable.channel()
    assert ch.basic_get("q")[0] is None
    method, props, body = ch.basic_get("dead", auto_ack=True)
    assert body == b"poison" and props.headers["x-death"][0]["reason"] == "delivery_limit"


def test_message_ttl_keeps_running_while_down(durable: Durable) -> None:
    ch = durable.channel(confirm=True)
    ch.exchange_declare("dlx", "fanout", durable=True)
    ch.queue_declare("expired", durable=True)
    ch.queue_bind("expired", "dlx")
    ch.queue_declare("q", durable=True, arguments={"x-message-ttl": 1200, "x-dead-letter-exchange": "dlx"})
    ch.queue_declare("no-ttl", durable=True)
    published = time.monotonic()
    ch.basic_publish("", "q", b"queue ttl", persistent())
    ch.basic_publish("", "q", b"message ttl", persistent(expiration="400"))
    ch.basic_publish("", "no-ttl", b"long", persistent(expiration="60000"))
    durable.restart()
    ch = durable.channel()
    time.sleep(max(0.0, published + 0.5 - time.monotonic()))
    assert ch.queue_declare("q", passive=True).method.message_count == 1  # "message ttl" expired
    durable.crash_and_restart()  # the queue TTL runs on across this restart too
    ch = durable.channel()
    time.sleep(max(0.0, published + 1.3 - time.monotonic()))
    assert bodies(ch, "q") == []
    assert bodies(ch, "expired") == [b"message ttl", b"queue ttl"]
    assert bodies(ch, "no-ttl") == [b"long"]
