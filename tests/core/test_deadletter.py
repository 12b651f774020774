"""Dead-lettering: routing, x-death bookkeeping and cycle detection."""

from __future__ import annotations

import datetime

from support import drain_get, headers_of, props


def _reject(ch, queue, *, now=0.0):
    got = ch.get(queue, now=now)
    assert got is not None
    ch.reject(got.delivery_tag, requeue=False, now=now)
    return got


def test_dead_letter_exchange_and_routing_key(ch):
    ch.declare_exchange("dlx", "direct")
    ch.declare_queue("dead", now=0)
    ch.bind_queue("dead", "dlx", "dead-key")
    ch.declare_queue("q", arguments={"x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": "dead-key"}, now=0)
    ch.publish(b"x", routing_key="q", now=0)
    _reject(ch, "q")
    got = ch.get("dead", now=0)
    assert got.message.body == b"x"
    assert got.message.exchange == "dlx"
    assert got.message.routing_key == "dead-key"


def test_dead_letter_keeps_original_routing_key_when_none_given(ch):
    ch.declare_exchange("dlx", "topic")
    ch.declare_queue("dead", now=0)
    ch.bind_queue("dead", "dlx", "orders.#")
    ch.declare_queue("q", arguments={"x-dead-letter-exchange": "dlx"}, now=0)
    ch.bind_queue("q", "amq.direct", "orders.new")
    ch.publish(b"x", exchange="amq.direct", routing_key="orders.new", now=0)
    _reject(ch, "q")
    got = ch.get("dead", now=0)
    assert got.message.routing_key == "orders.new"


def test_dead_letter_without_matching_binding_is_dropped(broker, ch):
    ch.declare_exchange("dlx", "direct")
    ch.declare_queue("q", arguments={"x-dead-letter-exchange": "dlx"}, now=0)
    ch.publish(b"x", routing_key="q", now=0)
    _reject(ch, "q")
    assert broker.drops["rejected:dead-letter-unroutable"] == 1


def test_dead_letter_to_missing_exchange_is_dropped(broker, ch):
    ch.declare_queue("q", arguments={"x-dead-letter-exchange": "nope"}, now=0)
    ch.publish(b"x", routing_key="q", now=0)
    _reject(ch, "q")
    assert broker.drops["rejected:no-dead-letter-exchange"] == 1


def test_nack_requeue_false_without_dlx_drops(broker, ch):
    ch.declare_queue("q", now=0)
    ch.publish(b"x", routing_key="q", now=0)
    got = ch.get("q", now=0)
    ch.nack(got.delivery_tag, requeue=False, now=0)
    assert broker.drops["rejected"] == 1
    assert drain_get(ch, "q") == []


def test_x_death_fields(ch):
    ch.declare_queue("dead", now=0)
    ch.declare_queue(
        "q", arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dead"}, now=0
    )
    ch.bind_queue("q", "amq.direct", "k")
    headers = {"CC": ["q"], "BCC": ["q"], "app": "kept"}
    ch.publish(b"x", exchange="amq.direct", routing_key="k", properties=props(headers=headers), now=1_700_000_000.7)
    _reject(ch, "q", now=1_700_000_100)
    h = headers_of(ch.get("dead", now=0).message)
    [death] = h["x-death"]
    assert death["count"] == 1
    assert death["reason"] == "rejected"
    assert death["queue"] == "q"
    assert death["exchange"] == "amq.direct"
    # CC keys are listed, BCC keys never are.
    assert death["routing-keys"] == ["k", "q"]
    assert death["time"] == datetime.datetime.fromtimestamp(1_700_000_100, tz=datetime.timezone.utc)
    assert "original-expiration" not in death
    assert h["app"] == "kept"
    assert "BCC" not in h
    assert (h["x-first-death-queue"], h["x-first-death-reason"], h["x-first-death-exchange"]) == (
        "q",
        "rejected",
        "amq.direct",
    )
    assert (h["x-last-death-queue"], h["x-last-death-reason"], h["x-last-death-exchange"]) == (
        "q",
        "rejected",
        "amq.direct",
    )


def _reject_expire_loop(ch):
    """work --reject--> retry (TTL 1 s) --expire--> work, through the default exchange."""
    ch.declare_queue(
        "work", arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "retry"}, now=0
    )
    ch.declare_queue(
        "retry",
        arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "work", "x-message-ttl": 1000},
        now=0,
    )


def test_cycle_with_reject_is_allowed_and_x_death_accumulates(broker, ch):
    _reject_expire_loop(ch)
    ch.publish(b"job", routing_key="work", now=0)
    _reject(ch, "work", now=100)
    broker.tick(101)  # expires in retry, back to work
    h = headers_of(ch.get("work", now=101, no_ack=True).message)
    assert [(d["queue"], d["reason"], d["count"]) for d in h["x-death"]] == [
        ("retry", "expired", 1),
        ("work", "rejected", 1),
    ]
    assert h["x-first-death-queue"] == "work" and h["x-first-death-reason"] == "rejected"
    assert h["x-last-death-queue"] == "retry" and h["x-last-death-reason"] == "expired"
    assert h["x-last-death-exchange"] == ""


def test_repeat_death_increments_count_moves_to_front_and_keeps_first_time(broker, ch):
    _reject_expire_loop(ch)
    ch.publish(b"job", routing_key="work", now=0)
    _reject(ch, "work", now=100)
    broker.tick(101)
    _reject(ch, "work", now=200)
    h = headers_of(ch.get("retry", now=200).message)
    deaths = h["x-death"]
    assert [(d["queue"], d["reason"], d["count"]) for d in deaths] == [
        ("work", "rejected", 2),
        ("retry", "expired", 1),
    ]
    assert deaths[0]["time"] == datetime.datetime.fromtimestamp(100, tz=datetime.timezone.utc)
    assert h["x-first-death-queue"] == "work"
    assert h["x-last-death-queue"] == "work"


def test_same_queue_different_reasons_get_separate_entries(ch):
    ch.declare_queue("dead", now=0)
    ch.declare_queue("q", arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dead"}, now=0)
    earlier = {"count": 1, "reason": "maxlen", "queue": "q", "exchange": "", "routing-keys": ["q"]}
    ch.publish(b"x", routing_key="q", properties=props(headers={"x-death": [earlier]}), now=0)
    _reject(ch, "q")
    deaths = headers_of(ch.get("dead", now=0).message)["x-death"]
    assert [(d["queue"], d["reason"], d["count"]) for d in deaths] == [("q", "rejected", 1), ("q", "maxlen", 1)]


def test_ttl_cycle_is_dropped(broker, ch):
    ch.declare_queue(
        "a", arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "b", "x-message-ttl": 100}, now=0
    )
    ch.declare_queue(
        "b", arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "a", "x-message-ttl": 100}, now=0
    )
    ch.publish(b"x", routing_key="a", now=0)
    broker.tick(0.1)
    assert ch.declare_queue("b", passive=True, now=0.1).message_count == 1
    broker.tick(0.2)
    assert ch.declare_queue("a", passive=True, now=0.2).message_count == 0
    assert ch.declare_queue("b", passive=True, now=0.2).message_count == 0
    assert broker.drops["expired:dead-letter-unroutable"] == 1
    assert broker.next_deadline() is None


def test_self_dead_lettering_on_expiry_is_a_cycle(broker, ch):
    ch.declare_queue(
        "a", arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "a", "x-message-ttl": 100}, now=0
    )
    ch.publish(b"x", routing_key="a", now=0)
    broker.tick(0.1)
    assert ch.declare_queue("a", passive=True, now=0.1).message_count == 0


def test_cycle_drop_only_skips_the_queue_already_visited(broker, ch):
    ch.declare_exchange("dlx", "fanout")
    ch.declare_queue("a", arguments={"x-dead-letter-exchange": "dlx", "x-message-ttl": 100}, now=0)
    ch.declare_queue("other", now=0)
    ch.bind_queue("a", "dlx")
    ch.bind_queue("other", "dlx")
    ch.publish(b"x", routing_key="a", now=0)
    broker.tick(0.1)
    assert drain_get(ch, "other", now=0.1) == [b"x"]
    assert drain_get(ch, "a", now=0.1) == []


def test_dead_lettered_copy_reaches_every_bound_queue(ch):
    ch.declare_exchange("dlx", "fanout")
    ch.declare_queue("d1", now=0)
    ch.declare_queue("d2", now=0)
    ch.bind_queue("d1", "dlx")
    ch.bind_queue("d2", "dlx")
    ch.declare_queue("q", arguments={"x-dead-letter-exchange": "dlx"}, now=0)
    ch.publish(b"x", routing_key="q", now=0)
    _reject(ch, "q")
    assert drain_get(ch, "d1") == [b"x"]
    assert drain_get(ch, "d2") == [b"x"]


def test_dead_letter_routes_with_cc_keys_when_no_dl_routing_key(ch):
    ch.declare_exchange("dlx", "direct")
    ch.declare_queue("by-key", now=0)
    ch.declare_queue("by-cc", now=0)
    ch.bind_queue("by-key", "dlx", "k")
    ch.bind_queue("by-cc", "dlx", "cc")
    ch.declare_queue("q", arguments={"x-dead-letter-exchange": "dlx"}, now=0)
    ch.bind_queue("q", "amq.direct", "k")
    ch.publish(b"x", exchange="amq.direct", routing_key="k", properties=props(headers={"CC": ["cc"]}), now=0)
    _reject(ch, "q")
    assert drain_get(ch, "by-key") == [b"x"]
    assert drain_get(ch, "by-cc") == [b"x"]
