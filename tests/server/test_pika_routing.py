"""Routing as a pika client sees it: every exchange type, exchange-to-exchange
bindings, alternate exchanges, sender-selected distribution (CC/BCC)."""

from __future__ import annotations

import pika
import pika.exceptions

from .conftest import BrokerUnderTest
from .pika_support import Client, channel_error, exists, get, get_bodies, pump_until


def test_default_exchange_routes_by_queue_name(client: Client) -> None:
    ch = client.channel()
    q = client.queue(ch, exclusive=True)
    ch.basic_publish("", q, b"hello")
    ch.basic_publish("", q + "-nobody", b"lost")
    method, _, body = get(ch, q)
    assert body == b"hello"
    assert method.exchange == "" and method.routing_key == q
    assert get(ch, q) is None


def test_direct_exchange(client: Client) -> None:
    ch = client.channel()
    x = client.exchange(ch, "direct")
    a = client.queue(ch, exclusive=True)
    b = client.queue(ch, exclusive=True)
    ch.queue_bind(a, x, "red")
    ch.queue_bind(b, x, "red")
    ch.queue_bind(b, x, "green")
    ch.queue_bind(b, x, "green")  # binding twice is one binding
    for key in ("red", "green", "blue", "RED", ""):
        ch.basic_publish(x, key, key.encode())
    assert get_bodies(ch, a) == [b"red"]
    assert get_bodies(ch, b) == [b"red", b"green"]
    ch.queue_unbind(b, x, "red")
    ch.basic_publish(x, "red", b"again")
    assert get_bodies(ch, a) == [b"again"]
    assert get_bodies(ch, b) == []


def test_fanout_exchange_ignores_key_and_delivers_once(client: Client) -> None:
    ch = client.channel()
    x = client.exchange(ch, "fanout")
    queues = [client.queue(ch, exclusive=True) for _ in range(3)]
    for q in queues:
        ch.queue_bind(q, x, "")
    ch.queue_bind(queues[0], x, "other-key")  # a second binding does not duplicate
    ch.basic_publish(x, "anything", b"m")
    for q in queues:
        method, _, body = get(ch, q)
        assert body == b"m" and method.routing_key == "anything" and method.exchange == x
        assert get(ch, q) is None


TOPIC_CASES = [
    # (binding pattern, routing key, matches)
    ("a.b.c", "a.b.c", True),
    ("a.b.c", "a.b", False),
    ("a.*.c", "a.b.c", True),
    ("a.*.c", "a.c", False),
    ("a.*.c", "a.b.b.c", False),
    ("a.#.c", "a.c", True),
    ("a.#.c", "a.b.b.c", True),
    ("a.#", "a", True),
    ("a.#", "a.b.c", True),
    ("#", "", True),
    ("#", "x.y", True),
    ("*", "", False),
    ("*", "x", True),
    ("*", "x.y", False),
    ("", "", True),
    ("a..b", "a..b", True),
    ("a.*.b", "a..b", True),
    ("#.#", "a", True),
    ("*.#", "", False),
    ("#.b", "b", True),
    ("#.b", "a.b.b", True),
    ("a.*", "a.", True),
    ("a.b", "A.B", False),
]


def test_topic_exchange_patterns(client: Client) -> None:
    ch = client.channel()
    x = client.exchange(ch, "topic")
    queues = []
    for pattern, _, _ in TOPIC_CASES:
        q = client.queue(ch, exclusive=True)
        ch.queue_bind(q, x, pattern)
        queues.append(q)
    keys = sorted({key for _, key, _ in TOPIC_CASES})
    for key in keys:
        ch.basic_publish(x, key, key.encode())
    for q, (pattern, key, matches) in zip(queues, TOPIC_CASES):
        got = get_bodies(ch, q)
        assert (key.encode() in got) is matches, (pattern, key, got)


HEADERS_CASES = [
    # (binding arguments, message headers, matches)
    ({"x-match": "all", "a": 1, "b": "two"}, {"a": 1, "b": "two", "c": 3}, True),
    ({"x-match": "all", "a": 1, "b": "two"}, {"a": 1}, False),
    ({"a": 1, "b": "two"}, {"a": 1, "b": "two"}, True),  # all is the default
    ({"x-match": "any", "a": 1, "b": "two"}, {"b": "two"}, True),
    ({"x-match": "any", "a": 1, "b": "two"}, {"a": 2, "c": 1}, False),
    ({"x-match": "all", "a": 1}, {"a": "1"}, False),  # types must agree
    ({"x-match": "all", "a": True}, {"a": 1}, False),
    ({"x-match": "all", "a": 1}, {"a": 1 << 40}, False),
    ({"x-match": "all", "a": 7}, {"a": 7}, True),
    ({"x-match": "all", "a": None}, {"a": "whatever"}, True),  # void: presence only
    ({"x-match": "all", "a": None}, {"b": 1}, False),
    ({"x-match": "all"}, {}, True),  # all with no keys matches everything
    ({"x-match": "all"}, {"z": 1}, True),
    ({"x-match": "any"}, {"z": 1}, False),  # any with no keys matches nothing
    ({"x-match": "all", "x-tag": "t"}, {}, True),  # x- keys ignored in all/any
    ({"x-match": "any", "x-tag": "t"}, {"x-tag": "t"}, False),
    ({"x-match": "all", "a": 1}, {"a": 1, "x-tag": "zz"}, True),
    ({"x-match": "all-with-x", "x-tag": "t"}, {"x-tag": "t"}, True),
    ({"x-match": "all-with-x", "x-tag": "t"}, {"x-tag": "u"}, False),
    ({"x-match": "any-with-x", "x-tag": "t", "a": 1}, {"x-tag": "t"}, True),
    ({"x-match": "any-with-x", "x-tag": "t"}, {"a": 1}, False),
    ({"a": {"b": 1}}, {"a": {"b": 1}}, True),  # tables and arrays compare by value
    ({"a": [1, "x"]}, {"a": [1, "x"]}, True),
    ({"a": [1, "x"]}, {"a": [1, "y"]}, False),
    ({"a": 1 << 40}, {"a": 1 << 40}, True),
    ({"x-match": "any", "a": 5, "b": None}, {"b": None}, True),
    ({"x-match": "any", "a": 5, "b": None}, {"b": "s"}, True),
]


def test_headers_exchange_matching(client: Client) -> None:
    ch = client.channel()
    x = client.exchange(ch, "headers")
    queues = []
    for arguments, _, _ in HEADERS_CASES:
        q = client.queue(ch, exclusive=True)
        ch.queue_bind(q, x, "", arguments=arguments)
        queues.append(q)
    for i, (_, headers, _) in enumerate(HEADERS_CASES):
        ch.basic_publish(x, "", b"%d" % i, pika.BasicProperties(headers=headers))
    for i, (q, (arguments, headers, matches)) in enumerate(zip(queues, HEADERS_CASES)):
        got = get_bodies(ch, q)
        assert (b"%d" % i in got) is matches, (arguments, headers, got)


def test_headers_exchange_without_headers_and_unbind(client: Client) -> None:
    ch = client.channel()
    x = client.exchange(ch, "headers")
    everything = client.queue(ch, exclusive=True)
    some = client.queue(ch, exclusive=True)
    ch.queue_bind(everything, x, "", arguments={"x-match": "all"})
    ch.queue_bind(some, x, "", arguments={"x-match": "any", "k": "v"})
    ch.basic_publish(x, "", b"no-headers")
    ch.basic_publish(x, "", b"k", pika.BasicProperties(headers={"k": "v"}))
    assert get_bodies(ch, everything) == [b"no-headers", b"k"]
    assert get_bodies(ch, some) == [b"k"]
    ch.queue_unbind(some, x, "", arguments={"x-match": "any", "k": "v"})
    ch.basic_publish(x, "", b"k2", pika.BasicProperties(headers={"k": "v"}))
    assert get_bodies(ch, some) == []


def test_headers_exchange_refuses_unknown_x_match(client: Client) -> None:
    ch = client.channel()
    x = client.exchange(ch, "headers")
    q = client.queue(ch)
    error = channel_error(lambda: ch.queue_bind(q, x, "", arguments={"x-match": "some"}))
    assert error.reply_code == 406


def test_exchange_to_exchange_bindings(client: Client) -> None:
    ch = client.channel()
    top = client.exchange(ch, "topic")
    left = client.exchange(ch, "direct")
    right = client.exchange(ch, "fanout")
    q = client.queue(ch, exclusive=True)
    only_left = client.queue(ch, exclusive=True)
    # A diamond: top -> left -> q and top -> right -> q; q gets each message once.
    ch.exchange_bind(left, top, "ev.#")
    ch.exchange_bind(right, top, "ev.*")
    ch.queue_bind(q, left, "ev.a")
    ch.queue_bind(q, right)
    ch.queue_bind(only_left, left, "ev.a.b")
    for key in ("ev.a", "ev.a.b", "ev.c", "other"):
        ch.basic_publish(top, key, key.encode())
    assert get_bodies(ch, q) == [b"ev.a", b"ev.c"]
    assert get_bodies(ch, only_left) == [b"ev.a.b"]
    # Deliveries keep the exchange the message was published to.
    ch.basic_publish(top, "ev.a", b"again")
    method, _, _ = get(ch, q)
    assert method.exchange == top
    ch.exchange_unbind(right, top, "ev.*")
    ch.basic_publish(top, "ev.c", b"cut")
    assert get_bodies(ch, q) == []


def test_exchange_binding_cycle_delivers_once(client: Client) -> None:
    ch = client.channel()
    a = client.exchange(ch, "fanout")
    b = client.exchange(ch, "fanout")
    q = client.queue(ch, exclusive=True)
    ch.exchange_bind(b, a)
    ch.exchange_bind(a, b)
    ch.queue_bind(q, a)
    ch.queue_bind(q, b)
    ch.basic_publish(a, "", b"1")
    ch.basic_publish(b, "", b"2")
    assert get_bodies(ch, q) == [b"1", b"2"]


def test_alternate_exchange(client: Client) -> None:
    ch = client.channel()
    ae = client.exchange(ch, "fanout")
    x = client.exchange(ch, "direct", arguments={"alternate-exchange": ae})
    routed = client.queue(ch, exclusive=True)
    unrouted = client.queue(ch, exclusive=True)
    ch.queue_bind(routed, x, "k")
    ch.queue_bind(unrouted, ae)
    returned = []
    ch.add_on_return_callback(lambda *args: returned.append(args[3]))
    ch.basic_publish(x, "k", b"routed", mandatory=True)
    ch.basic_publish(x, "nope", b"alternate", mandatory=True)  # routed via AE: not returned
    assert get_bodies(ch, routed) == [b"routed"]
    method, _, body = get(ch, unrouted)
    assert body == b"alternate" and method.exchange == x and method.routing_key == "nope"
    ch.basic_publish("", client.broker.name("nobody"), b"sentinel", mandatory=True)
    pump_until(ch.connection, lambda: returned)
    assert returned == [b"sentinel"]  # returns come in order: nothing before it


def test_alternate_exchange_that_routes_nowhere_returns_mandatory(client: Client) -> None:
    ch = client.channel()
    ae = client.exchange(ch, "direct")
    x = client.exchange(ch, "direct", arguments={"alternate-exchange": ae})
    missing_ae = client.exchange(ch, "direct", arguments={"alternate-exchange": client.broker.name("no-such")})
    returned = []
    ch.add_on_return_callback(lambda ch_, method, props, body: returned.append((method.reply_code, body)))
    ch.basic_publish(x, "k", b"nowhere", mandatory=True)
    ch.basic_publish(missing_ae, "k", b"missing-ae", mandatory=True)
    pump_until(ch.connection, lambda: len(returned) >= 2)
    assert returned == [(312, b"nowhere"), (312, b"missing-ae")]


def test_alternate_exchange_of_an_exchange_bound_to_another(client: Client) -> None:
    # The alternate exchange applies wherever in the graph an exchange routes nowhere.
    ch = client.channel()
    ae = client.exchange(ch, "fanout")
    inner = client.exchange(ch, "direct", arguments={"alternate-exchange": ae})
    top = client.exchange(ch, "fanout")
    ch.exchange_bind(inner, top)
    q = client.queue(ch, exclusive=True)
    ch.queue_bind(q, ae)
    ch.basic_publish(top, "k", b"m")
    assert get_bodies(ch, q) == [b"m"]


def test_sender_selected_distribution(client: Client) -> None:
    ch = client.channel()
    x = client.exchange(ch, "direct")
    main, cc, bcc = (client.queue(ch, exclusive=True) for _ in range(3))
    ch.queue_bind(main, x, "main")
    ch.queue_bind(cc, x, "cc")
    ch.queue_bind(bcc, x, "bcc")
    headers = {"CC": ["cc"], "BCC": ["bcc"], "other": "kept"}
    ch.basic_publish(x, "main", b"m", pika.BasicProperties(headers=headers))
    for q in (main, cc, bcc):
        method, props, body = get(ch, q)
        assert body == b"m" and method.routing_key == "main"
        assert props.headers == {"CC": ["cc"], "other": "kept"}  # BCC removed


def test_internal_exchange_refuses_direct_publish(client: Client) -> None:
    ch = client.channel()
    internal = client.exchange(ch, "fanout", internal=True)
    front = client.exchange(ch, "fanout")
    q = client.queue(ch, exclusive=True)
    ch.exchange_bind(internal, front)
    ch.queue_bind(q, internal)
    ch.basic_publish(front, "", b"through")
    assert get_bodies(ch, q) == [b"through"]
    error = channel_error(lambda: ch.basic_publish(internal, "", b"direct"), ch)
    assert error.reply_code == 403
    assert error.reply_text == f"ACCESS_REFUSED - cannot publish to internal exchange '{internal}' in vhost '/'"


def test_auto_delete_exchange_goes_with_its_last_binding(client: Client) -> None:
    ch = client.channel()
    x = client.exchange(ch, "direct", auto_delete=True)
    q = client.queue(ch, exclusive=True)
    ch.queue_bind(q, x, "a")
    ch.queue_bind(q, x, "b")
    ch.queue_unbind(q, x, "a")
    assert exists(client, "exchange", x)
    ch.queue_unbind(q, x, "b")
    assert not exists(client, "exchange", x)


def test_auto_delete_exchange_goes_when_bound_queue_is_deleted(client: Client) -> None:
    ch = client.channel()
    x = client.exchange(ch, "fanout", auto_delete=True)
    q = client.queue(ch)
    ch.queue_bind(q, x)
    ch.queue_delete(q)
    assert not exists(client, "exchange", x)


def test_unbound_exchange_without_auto_delete_stays(client: Client) -> None:
    ch = client.channel()
    x = client.exchange(ch, "fanout", auto_delete=True)
    # Never bound: an auto-delete exchange only goes when a binding goes.
    assert exists(client, "exchange", x)


def test_predeclared_exchanges(client: Client, broker: BrokerUnderTest) -> None:
    ch = client.channel()
    for name, kind in (("amq.direct", "direct"), ("amq.fanout", "fanout"), ("amq.topic", "topic"),
                       ("amq.headers", "headers"), ("amq.match", "headers")):
        ch.exchange_declare(name, kind, passive=True)
        ch.exchange_declare(name, kind, durable=True)  # an equivalent redeclare is fine
    q = client.queue(ch, exclusive=True)
    ch.queue_bind(q, "amq.topic", broker.name("k") + ".#")
    ch.basic_publish("amq.topic", q, b"no")
    assert get_bodies(ch, q) == []
