"""Exchange types, bindings between exchanges, and exchange lifecycle."""

from __future__ import annotations

import pytest
from support import drain_get, props

from amqlite.core.errors import AccessRefused, NotFound, PreconditionFailed


def _queues(ch, *names):
    for name in names:
        ch.declare_queue(name, now=0)


def test_default_exchange_routes_by_queue_name(ch):
    _queues(ch, "a", "b")
    outcome = ch.publish(b"x", exchange="", routing_key="b", now=0)
    assert outcome.routed == 1
    assert drain_get(ch, "a") == []
    assert drain_get(ch, "b") == [b"x"]


def test_default_exchange_cannot_be_bound_declared_or_deleted(ch):
    _queues(ch, "q")
    with pytest.raises(AccessRefused):
        ch.bind_queue("q", "", "q")
    with pytest.raises(AccessRefused):
        ch.declare_exchange("", "direct")
    with pytest.raises(AccessRefused):
        ch.delete_exchange("")


def test_direct_routes_on_exact_key(ch):
    _queues(ch, "a", "b")
    ch.declare_exchange("d", "direct")
    ch.bind_queue("a", "d", "red")
    ch.bind_queue("b", "d", "green")
    ch.bind_queue("b", "d", "red")
    ch.publish(b"r", exchange="d", routing_key="red", now=0)
    ch.publish(b"g", exchange="d", routing_key="green", now=0)
    ch.publish(b"n", exchange="d", routing_key="red.x", now=0)
    assert drain_get(ch, "a") == [b"r"]
    assert drain_get(ch, "b") == [b"r", b"g"]


def test_fanout_ignores_routing_key_and_delivers_one_copy_per_queue(ch):
    _queues(ch, "a", "b")
    ch.declare_exchange("f", "fanout")
    ch.bind_queue("a", "f", "")
    ch.bind_queue("b", "f", "k1")
    ch.bind_queue("b", "f", "k2")  # bound twice: still one copy
    outcome = ch.publish(b"x", exchange="f", routing_key="whatever", now=0)
    assert outcome.routed == 2
    assert drain_get(ch, "a") == [b"x"]
    assert drain_get(ch, "b") == [b"x"]


def test_fanout_unbind_one_of_two_bindings_keeps_routing(ch):
    _queues(ch, "b")
    ch.declare_exchange("f", "fanout")
    ch.bind_queue("b", "f", "k1")
    ch.bind_queue("b", "f", "k2")
    ch.unbind_queue("b", "f", "k1")
    assert ch.publish(b"x", exchange="f", now=0).routed == 1
    ch.unbind_queue("b", "f", "k2")
    assert ch.publish(b"y", exchange="f", now=0).routed == 0


@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [
        ("a.*.c", "a.b.c", True),
        ("a.*.c", "a.c", False),
        ("a.*.c", "a.b.b.c", False),
        ("a.#", "a", True),
        ("a.#", "a.b.c", True),
        ("#.c", "a.b.c", True),
        ("#", "", True),
        ("*", "", False),
        ("a.#.c", "a.c", True),
        ("a.b", "a.b.c", False),
    ],
)
def test_topic_wildcards(ch, pattern, key, matches):
    _queues(ch, "q")
    ch.declare_exchange("t", "topic")
    ch.bind_queue("q", "t", pattern)
    assert ch.publish(b"x", exchange="t", routing_key=key, now=0).routed == int(matches)


def test_topic_overlapping_patterns_deliver_once(ch):
    _queues(ch, "q")
    ch.declare_exchange("t", "topic")
    ch.bind_queue("q", "t", "a.*")
    ch.bind_queue("q", "t", "#")
    ch.publish(b"x", exchange="t", routing_key="a.b", now=0)
    assert drain_get(ch, "q") == [b"x"]


def test_headers_all_and_any(ch):
    _queues(ch, "all", "any")
    ch.declare_exchange("h", "headers")
    ch.bind_queue("all", "h", "", {"x-match": "all", "a": 1, "b": "two"})
    ch.bind_queue("any", "h", "", {"x-match": "any", "a": 1, "b": "two"})
    ch.publish(b"both", exchange="h", properties=props(headers={"a": 1, "b": "two"}), now=0)
    ch.publish(b"one", exchange="h", properties=props(headers={"a": 1, "b": "three"}), now=0)
    ch.publish(b"none", exchange="h", properties=props(headers={"c": 1}), now=0)
    ch.publish(b"noheaders", exchange="h", now=0)
    assert drain_get(ch, "all") == [b"both"]
    assert drain_get(ch, "any") == [b"both", b"one"]


def test_headers_default_x_match_is_all_and_ignores_routing_key(ch):
    _queues(ch, "q")
    ch.declare_exchange("h", "headers")
    ch.bind_queue("q", "h", "ignored", {"a": 1, "b": 2})
    assert ch.publish(b"x", exchange="h", routing_key="other", properties=props(headers={"a": 1}), now=0).routed == 0
    assert ch.publish(b"y", exchange="h", properties=props(headers={"a": 1, "b": 2}), now=0).routed == 1


def test_headers_invalid_x_match_is_rejected_at_bind(ch):
    _queues(ch, "q")
    ch.declare_exchange("h", "headers")
    with pytest.raises(PreconditionFailed):
        ch.bind_queue("q", "h", "", {"x-match": "some"})


def test_exchange_to_exchange_binding(ch):
    _queues(ch, "q")
    ch.declare_exchange("src", "topic")
    ch.declare_exchange("dst", "direct")
    ch.bind_exchange("dst", "src", "logs.#")
    ch.bind_queue("q", "dst", "logs.error")
    ch.publish(b"e", exchange="src", routing_key="logs.error", now=0)
    ch.publish(b"i", exchange="src", routing_key="logs.info", now=0)
    ch.publish(b"o", exchange="src", routing_key="other", now=0)
    assert drain_get(ch, "q") == [b"e"]
    ch.unbind_exchange("dst", "src", "logs.#")
    assert ch.publish(b"e2", exchange="src", routing_key="logs.error", now=0).routed == 0


def test_exchange_binding_cycle_does_not_loop_or_duplicate(ch):
    _queues(ch, "q")
    for name in ("e1", "e2", "e3"):
        ch.declare_exchange(name, "fanout")
    ch.bind_exchange("e2", "e1")
    ch.bind_exchange("e3", "e2")
    ch.bind_exchange("e1", "e3")
    ch.bind_exchange("e1", "e1")  # a self-loop too
    ch.bind_queue("q", "e2")
    ch.bind_queue("q", "e3")
    assert ch.publish(b"x", exchange="e1", now=0).routed == 1
    assert drain_get(ch, "q") == [b"x"]


def test_diamond_of_exchanges_delivers_one_copy(ch):
    _queues(ch, "q")
    for name in ("top", "left", "right"):
        ch.declare_exchange(name, "fanout")
    ch.bind_exchange("left", "top")
    ch.bind_exchange("right", "top")
    ch.bind_queue("q", "left")
    ch.bind_queue("q", "right")
    ch.publish(b"x", exchange="top", now=0)
    assert drain_get(ch, "q") == [b"x"]


def test_alternate_exchange_takes_unroutable_messages(ch):
    _queues(ch, "main", "unrouted")
    ch.declare_exchange("ae", "fanout")
    ch.bind_queue("unrouted", "ae")
    ch.declare_exchange("d", "direct", arguments={"alternate-exchange": "ae"})
    ch.bind_queue("main", "d", "k")
    routed = ch.publish(b"ok", exchange="d", routing_key="k", mandatory=True, now=0)
    lost = ch.publish(b"lost", exchange="d", routing_key="nope", mandatory=True, now=0)
    assert routed.routed == 1
    assert lost.routed == 1 and not lost.returned
    assert drain_get(ch, "main") == [b"ok"]
    assert drain_get(ch, "unrouted") == [b"lost"]


def test_alternate_exchange_cycle_terminates(ch):
    ch.declare_exchange("a", "direct", arguments={"alternate-exchange": "b"})
    ch.declare_exchange("b", "direct", arguments={"alternate-exchange": "a"})
    outcome = ch.publish(b"x", exchange="a", routing_key="k", mandatory=True, now=0)
    assert outcome.routed == 0 and outcome.returned


def test_missing_alternate_exchange_means_unroutable(ch):
    ch.declare_exchange("d", "direct", arguments={"alternate-exchange": "missing"})
    assert ch.publish(b"x", exchange="d", routing_key="k", mandatory=True, now=0).returned


def test_internal_exchange_refuses_publish_but_routes_from_other_exchanges(ch):
    _queues(ch, "q")
    ch.declare_exchange("inner", "fanout", internal=True)
    ch.declare_exchange("outer", "fanout")
    ch.bind_exchange("inner", "outer")
    ch.bind_queue("q", "inner")
    with pytest.raises(AccessRefused) as info:
        ch.publish(b"x", exchange="inner", now=0)
    assert info.value.reply_code == 403
    ch.publish(b"y", exchange="outer", now=0)
    assert drain_get(ch, "q") == [b"y"]


def test_auto_delete_exchange_removed_after_last_queue_unbind(ch, broker):
    _queues(ch, "a", "b")
    ch.declare_exchange("ad", "fanout", auto_delete=True)
    ch.bind_queue("a", "ad")
    ch.bind_queue("b", "ad")
    ch.unbind_queue("a", "ad")
    assert "ad" in broker.vhosts["/"].exchanges
    ch.unbind_queue("b", "ad")
    assert "ad" not in broker.vhosts["/"].exchanges


def test_auto_delete_exchange_removed_when_its_last_queue_is_deleted(ch, broker):
    _queues(ch, "a")
    ch.declare_exchange("ad", "fanout", auto_delete=True)
    ch.bind_queue("a", "ad")
    ch.delete_queue("a", now=0)
    assert "ad" not in broker.vhosts["/"].exchanges


def test_auto_delete_exchange_removed_after_last_exchange_unbind(ch, broker):
    ch.declare_exchange("ad", "fanout", auto_delete=True)
    ch.declare_exchange("dst", "fanout")
    ch.bind_exchange("dst", "ad")
    ch.unbind_exchange("dst", "ad")
    assert "ad" not in broker.vhosts["/"].exchanges


def test_auto_delete_exchange_survives_until_first_binding(ch, broker):
    ch.declare_exchange("ad", "fanout", auto_delete=True)
    assert "ad" in broker.vhosts["/"].exchanges


@pytest.mark.parametrize(
    ("name", "type"),
    [
        ("", "direct"),
        ("amq.direct", "direct"),
        ("amq.fanout", "fanout"),
        ("amq.topic", "topic"),
        ("amq.headers", "headers"),
        ("amq.match", "headers"),
    ],
)
def test_predeclared_exchanges_exist(ch, name, type):
    exchange = ch.vhost.get_exchange(name)
    assert exchange.type == type
    assert exchange.durable


def test_predeclared_exchange_routes(ch):
    _queues(ch, "q")
    ch.bind_queue("q", "amq.topic", "a.*")
    ch.publish(b"x", exchange="amq.topic", routing_key="a.b", now=0)
    assert drain_get(ch, "q") == [b"x"]


def test_predeclared_exchange_cannot_be_deleted(ch):
    with pytest.raises(AccessRefused):
        ch.delete_exchange("amq.direct")


def test_redeclaring_predeclared_exchange_with_same_type_is_fine(ch):
    assert ch.declare_exchange("amq.direct", "direct", durable=True).name == "amq.direct"


def test_declaring_new_amq_exchange_is_refused(ch):
    with pytest.raises(AccessRefused) as info:
        ch.declare_exchange("amq.mine", "direct")
    assert info.value.reply_code == 403
    assert "reserved prefix 'amq.*'" in info.value.reply_text


def test_redeclare_with_different_type_is_406(ch):
    ch.declare_exchange("e", "direct")
    with pytest.raises(PreconditionFailed) as info:
        ch.declare_exchange("e", "fanout")
    assert info.value.reply_code == 406
    assert "inequivalent arg 'type' for exchange 'e' in vhost '/'" in info.value.reply_text


def test_redeclare_with_different_durable_is_406(ch):
    ch.declare_exchange("e", "direct")
    with pytest.raises(PreconditionFailed) as info:
        ch.declare_exchange("e", "direct", durable=True)
    assert "received 'true' but current is 'false'" in info.value.reply_text


def test_redeclare_with_different_alternate_exchange_is_406(ch):
    ch.declare_exchange("e", "direct", arguments={"alternate-exchange": "a"})
    with pytest.raises(PreconditionFailed):
        ch.declare_exchange("e", "direct", arguments={"alternate-exchange": "b"})


def test_identical_redeclare_returns_the_same_exchange(ch):
    first = ch.declare_exchange("e", "topic", durable=True)
    assert ch.declare_exchange("e", "topic", durable=True) is first


def test_passive_declare_of_missing_exchange_is_404(ch):
    with pytest.raises(NotFound) as info:
        ch.declare_exchange("missing", "direct", passive=True)
    assert info.value.reply_code == 404
    assert "no exchange 'missing' in vhost '/'" in info.value.reply_text


def test_passive_declare_ignores_type(ch):
    ch.declare_exchange("e", "fanout")
    assert ch.declare_exchange("e", "direct", passive=True).type == "fanout"


def test_unknown_exchange_type_is_a_406_channel_error(ch):
    with pytest.raises(PreconditionFailed) as info:
        ch.declare_exchange("e", "x-nonsense")
    assert info.value.reply_code == 406 and not info.value.connection_level


def test_exchange_delete_is_idempotent(ch, broker):
    ch.declare_exchange("e", "direct")
    ch.delete_exchange("e")
    ch.delete_exchange("e")
    ch.delete_exchange("never-existed")
    assert "e" not in broker.vhosts["/"].exchanges


def test_exchange_delete_removes_its_bindings(ch):
    _queues(ch, "q")
    ch.declare_exchange("e", "fanout")
    ch.bind_queue("q", "e")
    ch.delete_exchange("e")
    ch.declare_exchange("e", "fanout")
    assert ch.publish(b"x", exchange="e", now=0).routed == 0


def test_exchange_delete_removes_incoming_exchange_bindings(ch):
    _queues(ch, "q")
    ch.declare_exchange("src", "fanout")
    ch.declare_exchange("mid", "fanout")
    ch.bind_exchange("mid", "src")
    ch.bind_queue("q", "mid")
    ch.delete_exchange("mid")
    assert ch.publish(b"x", exchange="src", mandatory=True, now=0).returned


def test_exchange_delete_if_unused(ch, broker):
    _queues(ch, "q")
    ch.declare_exchange("e", "direct")
    ch.bind_queue("q", "e", "k")
    with pytest.raises(PreconditionFailed) as info:
        ch.delete_exchange("e", if_unused=True)
    assert info.value.reply_code == 406
    assert "e" in broker.vhosts["/"].exchanges
    ch.unbind_queue("q", "e", "k")
    ch.delete_exchange("e", if_unused=True)
    assert "e" not in broker.vhosts["/"].exchanges


def test_exchange_only_bound_as_destination_is_unused(ch, broker):
    ch.declare_exchange("src", "fanout")
    ch.declare_exchange("dst", "fanout")
    ch.bind_exchange("dst", "src")
    ch.delete_exchange("dst", if_unused=True)
    assert "dst" not in broker.vhosts["/"].exchanges


def test_publish_to_missing_exchange_is_404(ch):
    with pytest.raises(NotFound):
        ch.publish(b"x", exchange="missing", now=0)


def test_bind_to_missing_exchange_or_queue_is_404(ch):
    _queues(ch, "q")
    with pytest.raises(NotFound):
        ch.bind_queue("q", "missing")
    ch.declare_exchange("e", "direct")
    with pytest.raises(NotFound):
        ch.bind_queue("missing", "e")
    with pytest.raises(NotFound):
        ch.bind_exchange("missing", "e")


def test_unbind_is_idempotent_even_for_missing_queue_or_exchange(ch):
    _queues(ch, "q")
    ch.declare_exchange("e", "direct")
    ch.unbind_queue("q", "e", "never-bound")
    ch.unbind_queue("q", "missing-exchange", "k")
    ch.unbind_queue("missing-queue", "e", "k")
    ch.unbind_exchange("missing", "e", "k")
    ch.unbind_exchange("e", "missing", "k")
    with pytest.raises(AccessRefused):
        ch.unbind_queue("q", "", "q")
    assert ch.publish(b"x", routing_key="q", now=0).routed == 1
