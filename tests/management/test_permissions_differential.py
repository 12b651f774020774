"""Permissions against the reference RabbitMQ: the same user, vhost and
regular expressions set through each broker's management API, the same
matrix of AMQP operations through pika, and the same refusals (reply code
and text) on both."""

from __future__ import annotations

import re
import uuid
from typing import Any, Callable
from urllib.parse import quote

import httpx
import pika
import pytest
from pika.exceptions import AMQPChannelError, AMQPConnectionError, ChannelClosedByBroker

from .conftest import ManagedServerThread
from .test_differential import NO_REFERENCE, REFERENCE, _reference_up

pytestmark = pytest.mark.skipif(not _reference_up(), reason=NO_REFERENCE)

PERMISSIONS = {"configure": "^c-", "write": "^w-", "read": "^r-"}
#: Writes to w-topic only under the user's own name; binds from r-topic only to public keys.
TOPIC_PERMISSIONS = [{"exchange": "w-topic", "write": "^{username}\\.", "read": ".*"},
                     {"exchange": "r-topic", "write": ".*", "read": "^public\\."}]

Operation = Callable[[Any, str], Any]


def _publish(exchange: str, key: str) -> Operation:
    def publish(ch: Any, user: str) -> None:
        ch.confirm_delivery()
        ch.basic_publish(exchange, key.format(user=user), b"x")
    return publish


#: Each runs on a fresh channel of the restricted user; the admin made
#: queues c-q, r-q, w-q and exchanges r-x, w-x, r-topic, w-topic first.
MATRIX: list[tuple[str, Operation]] = [
    ("queue.declare c-new", lambda ch, u: ch.queue_declare("c-new")),
    ("queue.declare r-new", lambda ch, u: ch.queue_declare("r-new")),
    ("queue.declare passive r-q", lambda ch, u: ch.queue_declare("r-q", passive=True)),
    ("queue.declare server-named", lambda ch, u: ch.queue_declare("")),
    ("queue.declare c-dlx with a dead-letter exchange", lambda ch, u: ch.queue_declare(
        "c-dlx", arguments={"x-dead-letter-exchange": "w-x"})),
    ("queue.purge r-q", lambda ch, u: ch.queue_purge("r-q")),
    ("queue.purge w-q", lambda ch, u: ch.queue_purge("w-q")),
    ("basic.get r-q", lambda ch, u: ch.basic_get("r-q")),
    ("basic.get w-q", lambda ch, u: ch.basic_get("w-q")),
    ("basic.consume r-q", lambda ch, u: ch.basic_consume("r-q", lambda *a: None)),
    ("basic.consume w-q", lambda ch, u: ch.basic_consume("w-q", lambda *a: None)),
    ("queue.bind w-q to r-x", lambda ch, u: ch.queue_bind("w-q", "r-x", "k")),
    ("queue.bind r-q to r-x", lambda ch, u: ch.queue_bind("r-q", "r-x", "k")),
    ("queue.bind w-q to w-x", lambda ch, u: ch.queue_bind("w-q", "w-x", "k")),
    ("queue.unbind w-q from r-x", lambda ch, u: ch.queue_unbind("w-q", "r-x", "k")),
    ("basic.publish to w-x", _publish("w-x", "k")),
    ("basic.publish to r-x", _publish("r-x", "k")),
    ("basic.publish to the default exchange", _publish("", "w-q")),
    ("exchange.declare c-x", lambda ch, u: ch.exchange_declare("c-x", "direct")),
    ("exchange.declare w-new", lambda ch, u: ch.exchange_declare("w-new", "direct")),
    ("exchange.declare passive w-x", lambda ch, u: ch.exchange_declare("w-x", "direct", passive=True)),
    ("exchange.declare c-ae with an alternate exchange", lambda ch, u: ch.exchange_declare(
        "c-ae", "direct", arguments={"alternate-exchange": "w-x"})),
    ("exchange.delete w-x", lambda ch, u: ch.exchange_delete("w-x")),
    ("exchange.bind w-x to r-x", lambda ch, u: ch.exchange_bind("w-x", "r-x", "k")),
    ("exchange.bind r-x to w-x", lambda ch, u: ch.exchange_bind("r-x", "w-x", "k")),
    ("topic publish under the user's name", _publish("w-topic", "{user}.news")),
    ("topic publish under another name", _publish("w-topic", "someone.news")),
    ("topic bind on a public key", lambda ch, u: ch.queue_bind("w-q", "r-topic", "public.a")),
    ("topic bind on a private key", lambda ch, u: ch.queue_bind("w-q", "r-topic", "private.a")),
    ("queue.delete r-q", lambda ch, u: ch.queue_delete("r-q")),
    ("queue.delete c-q", lambda ch, u: ch.queue_delete("c-q")),
]


def set_up(http: httpx.Client, vhost: str, user: str) -> None:
    v = quote(vhost, safe="")
    for response in (
        http.put(f"/api/vhosts/{v}"),
        http.put(f"/api/users/{user}", json={"password": "pw", "tags": ""}),
        http.put(f"/api/permissions/{v}/guest", json={"configure": ".*", "write": ".*", "read": ".*"}),
        http.put(f"/api/permissions/{v}/{user}", json=PERMISSIONS),
        *(http.put(f"/api/topic-permissions/{v}/{user}", json=topic) for topic in TOPIC_PERMISSIONS),
    ):
        assert response.status_code in (201, 204), (response.request.url, response.text)


def tear_down(http: httpx.Client, vhost: str, user: str) -> None:
    http.delete(f"/api/vhosts/{quote(vhost, safe='')}")
    http.delete(f"/api/users/{user}")


def run_matrix(port: int, vhost: str, user: str) -> dict[str, str]:
    admin = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port, vhost))
    setup = admin.channel()
    for queue in ("c-q", "r-q", "w-q"):
        setup.queue_declare(queue)
    for exchange, kind in (("r-x", "direct"), ("w-x", "direct"), ("r-topic", "topic"), ("w-topic", "topic")):
        setup.exchange_declare(exchange, kind)
    admin.close()
    credentials = pika.PlainCredentials(user, "pw")
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port, vhost, credentials))
    outcomes = {}
    try:
        for name, operation in MATRIX:
            if not connection.is_open:
                connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port, vhost, credentials))
            try:
                operation(connection.channel(), user)
                outcomes[name] = "ok"
            except ChannelClosedByBroker as closed:
                text = f"{closed.reply_code} {closed.reply_text}".replace(vhost, "V").replace(user, "U")
                outcomes[name] = re.sub(r"amq\.gen-[\w-]+", "amq.gen-N", text)  # each broker's own naming
        try:
            pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port, "/", credentials))
            outcomes["connection.open on a vhost without permission"] = "ok"
        except (AMQPConnectionError, AMQPChannelError) as refused:
            text = repr(refused)
            outcomes["connection.open on a vhost without permission"] = (
                "530 refused" if "530" in text and "access to vhost" in text and user in text else text)
    finally:
        if connection.is_open:
            connection.close()
    return outcomes


def test_the_same_operations_are_refused_with_the_same_codes_and_texts(unconfigured: ManagedServerThread) -> None:
    vhost, user = f"perm-{uuid.uuid4().hex[:8]}", f"probe-{uuid.uuid4().hex[:8]}"
    results = {}
    for kind, api, port in (("rabbitmq", REFERENCE, 5672),
                            ("amqlite", f"http://127.0.0.1:{unconfigured.management_port}", unconfigured.port)):
        with httpx.Client(base_url=api, auth=("guest", "guest"), timeout=10) as http:
            set_up(http, vhost, user)
            try:
                results[kind] = run_matrix(port, vhost, user)
            finally:
                tear_down(http, vhost, user)
    reference, ours = results["rabbitmq"], results["amqlite"]
    # The matrix means something only if it mixes grants and refusals.
    assert "ok" in reference.values() and any(v.startswith("403 ACCESS_REFUSED") for v in reference.values())
    assert reference["connection.open on a vhost without permission"] == "530 refused"
    differences = {name: (reference[name], ours[name]) for name in reference if reference[name] != ours[name]}
    assert not differences, differences
