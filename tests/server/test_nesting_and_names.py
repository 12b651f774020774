"""Deeply nested headers and names that are not UTF-8: what is accepted can
always be encoded again, so no message is lost on the way to a consumer, a
dead-letter queue or the disk (issue 10, defect 12)."""

from __future__ import annotations

import tempfile
from typing import Any

import pika
import pika.exceptions
import pytest

from amqlite.core.fieldtypes import MAX_NESTING

from .conftest import start_amqlite
from .pika_support import Client, get, wait_get


def nested(depth: int) -> dict[str, Any]:
    """Headers whose tables nest ``depth`` levels, the headers table being the first."""
    value: Any = {"leaf": 1}
    for level in range(depth - 1, 0, -1):  # tables at odd levels, arrays at even ones
        value = [value] if level % 2 == 0 else {"n": value}
    return value


def own(headers: dict[str, Any]) -> dict[str, Any]:
    """The headers without the broker's (x-death, x-delivery-count)."""
    return {k: v for k, v in headers.items() if not k.startswith("x-")}


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def test_the_helper_builds_the_depth_it_says() -> None:
    assert _depth(nested(MAX_NESTING)) == MAX_NESTING and _depth(nested(3)) == 3


def test_headers_at_the_limit_survive_dead_lettering_requeue_and_restart() -> None:
    data = tempfile.mkdtemp(prefix="amqlite-nesting-")
    server = start_amqlite(data_dir=data)
    headers = nested(MAX_NESTING)
    try:
        ch = server.connect().channel()
        ch.queue_declare("dlq", durable=True)
        ch.queue_declare("work", durable=True, arguments={"x-dead-letter-exchange": "",
                                                          "x-dead-letter-routing-key": "dlq"})
        ch.confirm_delivery()
        for body in (b"rejected", b"requeued"):
            ch.basic_publish("", "work", body, pika.BasicProperties(delivery_mode=2, headers=headers))
        method, _, body = ch.basic_get("work")
        assert body == b"rejected"
        ch.basic_reject(method.delivery_tag, requeue=False)
        method, _, body = ch.basic_get("work")
        assert body == b"requeued"
        ch.basic_reject(method.delivery_tag, requeue=True)
        again = wait_get(ch, "work", auto_ack=False)  # the requeued one can be fetched again
        assert again is not None and again[2] == b"requeued" and own(again[1].headers) == headers
        ch.basic_reject(again[0].delivery_tag, requeue=True)
    finally:
        server.stop()
    server = start_amqlite(data_dir=data)
    try:
        ch = server.connect().channel()
        dead = get(ch, "dlq")
        assert dead is not None and dead[2] == b"rejected"
        assert own(dead[1].headers) == headers
        assert dead[1].headers["x-death"][0]["reason"] == "rejected"
        kept = get(ch, "work")
        assert kept is not None and kept[2] == b"requeued" and own(kept[1].headers) == headers
    finally:
        server.stop()


def test_headers_deeper_than_the_limit_are_refused_and_nothing_is_queued() -> None:
    server = start_amqlite()
    try:
        connection = server.connect()
        ch = connection.channel()
        ch.queue_declare("q")
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
            ch.basic_publish("", "q", b"too deep", pika.BasicProperties(headers=nested(MAX_NESTING + 1)))
            connection.process_data_events(time_limit=2)
            ch.queue_declare("q", passive=True)
        assert closed.value.reply_code == 501
        assert f"nest deeper than {MAX_NESTING} levels" in closed.value.reply_text
        assert server.connect().channel().queue_declare("q", passive=True).method.message_count == 0
    finally:
        server.stop()


def test_invalid_utf8_routing_key_is_accepted_and_delivered_as_sent(client: Client) -> None:
    ch = client.channel()
    queue = client.queue(ch)
    topic = client.exchange(ch, "topic")
    ch.queue_bind(queue, topic, "#")
    ch.basic_publish(topic, b"caf\xe9.\xff", b"latin-1 key")  # type: ignore[arg-type]
    got = wait_get(ch, queue)
    assert got is not None and got[2] == b"latin-1 key"
    assert got[0].routing_key == b"caf\xe9.\xff"  # pika hands back bytes it cannot decode
    # An exchange name that is not UTF-8 is just an exchange that does not exist.
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        ch.basic_publish(b"\xff\xfe", "k", b"x")  # type: ignore[arg-type]
        ch.queue_declare(queue, passive=True)
    assert closed.value.reply_code == 404
