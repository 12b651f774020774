"""Cancelling a scheduled (held delayed) message over AMQP, as pika sees
it: a publish with ``x-delay-cancel: ID`` to the delayed exchange cancels
that held message instead of being held itself; a confirm acks it whether
the id was held or not; with mandatory, nothing held under that id comes
back as basic.return (312 NO_ROUTE). amqlite-only: RabbitMQ 3.10 has no
delayed-message plugin (docs/concepts.md, "Scheduled messages")."""

from __future__ import annotations

import pika
import pika.exceptions
import pytest

from .conftest import ServerThread


def _held_ids(server: ServerThread) -> list[int]:
    held = server.server.core.vhosts["/"].exchanges["later"].held
    return server.call(lambda: [msg_id for msg_id, _ in held.scheduled(limit=1000)])  # type: ignore[no-any-return]


def test_x_delay_cancel_cancels_a_held_message_and_returns_when_nothing_matched(
        amqlite_server: ServerThread) -> None:
    connection = amqlite_server.connect()
    ch = connection.channel()
    ch.exchange_declare("later", "x-delayed-message", durable=True, arguments={"x-delayed-type": "direct"})
    ch.queue_declare("due", durable=True)
    ch.queue_bind("due", "later", "k")
    ch.confirm_delivery()
    for n in range(3):
        ch.basic_publish("later", "k", b"%d" % n,
                         pika.BasicProperties(delivery_mode=2, headers={"x-delay": 60_000 + n}))
    ids = _held_ids(amqlite_server)
    assert len(ids) == 3
    # The id as a string (as the management API lists it) or as a number; confirmed either way.
    ch.basic_publish("later", "k", b"", pika.BasicProperties(headers={"x-delay-cancel": str(ids[0])}),
                     mandatory=True)
    ch.basic_publish("later", "k", b"", pika.BasicProperties(headers={"x-delay-cancel": ids[2]}))
    assert _held_ids(amqlite_server) == [ids[1]]
    # Nothing held under it: acked anyway; returned with mandatory.
    ch.basic_publish("later", "k", b"", pika.BasicProperties(headers={"x-delay-cancel": ids[0]}))
    with pytest.raises(pika.exceptions.UnroutableError) as returned:
        ch.basic_publish("later", "k", b"", pika.BasicProperties(headers={"x-delay-cancel": "no-such-id"}),
                         mandatory=True)
    assert returned.value.messages[0].method.reply_code == 312
    assert _held_ids(amqlite_server) == [ids[1]]  # the cancels were not held themselves
    assert ch.queue_declare("due", passive=True).method.message_count == 0  # nor routed
    connection.close()
