"""Vhost limits (max-connections, max-queues) and user limits
(max-connections, max-channels) against the reference RabbitMQ: set through
each broker's management API, the same pika scenario, the same refusals."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote

import httpx
import pika
import pytest
from pika.exceptions import AMQPConnectionError, ChannelClosedByBroker, ConnectionClosedByBroker

from .conftest import ManagedServerThread
from .test_differential import NO_REFERENCE, REFERENCE, _reference_up

pytestmark = pytest.mark.skipif(not _reference_up(), reason=NO_REFERENCE)


def set_up(http: httpx.Client, vhost: str, user: str) -> None:
    v = quote(vhost, safe="")
    for response in (
        http.put(f"/api/vhosts/{v}"),
        http.put(f"/api/users/{user}", json={"password": "pw", "tags": ""}),
        http.put(f"/api/permissions/{v}/guest", json={"configure": ".*", "write": ".*", "read": ".*"}),
        http.put(f"/api/permissions/{v}/{user}", json={"configure": ".*", "write": ".*", "read": ".*"}),
        http.put(f"/api/vhost-limits/{v}/max-queues", json={"value": 1}),
        http.put(f"/api/user-limits/{user}/max-connections", json={"value": 1}),
        http.put(f"/api/user-limits/{user}/max-channels", json={"value": 2}),
    ):
        assert response.status_code in (201, 204), (response.request.url, response.text)


def outcome(attempt: Any, vhost: str, user: str) -> str:
    try:
        attempt()
        return "ok"
    except (ChannelClosedByBroker, ConnectionClosedByBroker) as closed:
        return f"{closed.reply_code} {closed.reply_text}".replace(vhost, "V").replace(user, "U")
    except AMQPConnectionError as refused:  # refused in the handshake: pika wraps the close
        text = str(refused).replace(vhost, "V").replace(user, "U").replace("\\'", "'")
        return text[text.index("(530)"):].split('"')[1]


def scenario(http: httpx.Client, port: int, vhost: str, user: str) -> list[str]:
    def connect(who: str = user) -> pika.BlockingConnection:
        return pika.BlockingConnection(pika.ConnectionParameters(
            "127.0.0.1", port, vhost, pika.PlainCredentials(who, "pw" if who == user else "guest")))

    seen = []
    first = connect()
    channel = first.channel()
    seen.append(outcome(lambda: channel.queue_declare("q1"), vhost, user))
    seen.append(outcome(lambda: channel.queue_declare("q2"), vhost, user))
    again = first.channel()
    seen.append(outcome(lambda: again.queue_declare("q1"), vhost, user))  # an existing queue is not a new one
    seen.append(outcome(lambda: connect().close(), vhost, user))  # the user's second connection
    seen.append(outcome(lambda: first.channel(), vhost, user))  # the second open one (the first was closed)
    seen.append(outcome(lambda: first.channel().queue_declare("q1", passive=True), vhost, user))  # a third
    guest = connect("guest")
    assert http.put(f"/api/vhost-limits/{quote(vhost, safe='')}/max-connections", json={"value": 1}
                    ).status_code == 204
    seen.append(outcome(lambda: connect("guest").close(), vhost, user))  # third connection to the vhost
    guest.close()
    if first.is_open:
        first.close()
    return seen


def test_limits_refuse_the_same_operations_with_rabbitmqs_codes_and_texts(unconfigured: ManagedServerThread) -> None:
    vhost, user = f"limits-{uuid.uuid4().hex[:8]}", f"limited-{uuid.uuid4().hex[:8]}"
    results = {}
    for kind, api, port in (("rabbitmq", REFERENCE, 5672),
                            ("amqlite", f"http://127.0.0.1:{unconfigured.management_port}", unconfigured.port)):
        with httpx.Client(base_url=api, auth=("guest", "guest"), timeout=10) as http:
            set_up(http, vhost, user)
            try:
                results[kind] = scenario(http, port, vhost, user)
            finally:
                http.delete(f"/api/vhosts/{quote(vhost, safe='')}")
                http.delete(f"/api/users/{user}")
    assert results["rabbitmq"][:3] == ["ok", "406 PRECONDITION_FAILED - cannot declare queue 'q2': queue limit in "
                                       "vhost 'V' (1) is reached", "ok"]
    assert results["rabbitmq"][5].startswith("530 NOT_ALLOWED - number of channels opened for user 'U'")
    assert results["amqlite"] == results["rabbitmq"]
