"""Cancelling a scheduled (held delayed) message over AMQP, as pika sees
it: a publish with ``x-delay-cancel: ID`` to the delayed exchange cancels
that held message instead of being held itself; a confirm acks it whether
the id was held or not; with mandatory, nothing held under that id comes
back as basic.return (312 NO_ROUTE). amqlite-only: RabbitMQ 3.10 has no
delayed-message plugin (docs/concepts.md, "Scheduled messages")."""

from __future__ import annotations

from typing import Any

import pika
import pika.exceptions
import pytest

from .conftest import ServerThread


def _held_ids(server: ServerThread) -> list[int]:
    held = server.server.core.vhosts["/"].exchanges["later"].held
    return server.call(lambda: [msg_id for msg_id, _ in held.scheduled(limit=1000)])  # type: ignore[no-any-return]


def _declare(connection: pika.BlockingConnection) -> Any:
    """A confirming channel, a durable delayed exchange "later" and its queue "due" bound by "k"."""
    ch = connection.channel()
    ch.exchange_declare("later", "x-delayed-message", durable=True, arguments={"x-delayed-type": "direct"})
    ch.queue_declare("due", durable=True)
    ch.queue_bind("due", "later", "k")
    ch.confirm_delivery()
    return ch


def test_x_delay_cancel_cancels_a_held_message_and_returns_when_nothing_matched(
        amqlite_server: ServerThread) -> None:
    connection = amqlite_server.connect()
    ch = _declare(connection)
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


def test_a_publishers_message_id_is_the_held_messages_id_and_cancels_every_copy(
        amqlite_server: ServerThread) -> None:
    """A held message with a message_id is cancelled by it (all held with
    that message_id: a publisher that published twice, after a lost
    confirm, cancels both); a numeric message_id is never taken for the
    broker's number of another message, even once it is gone."""
    connection = amqlite_server.connect()
    ch = _declare(connection)
    for body, message_id in ((b"a", "order-42"), (b"b", "order-42"), (b"c", "order-7"), (b"d", None), (b"e", "1")):
        ch.basic_publish("later", "k", body, pika.BasicProperties(
            delivery_mode=2, message_id=message_id, headers={"x-delay": 60_000}))
    ids = _held_ids(amqlite_server)
    assert len(ids) == 5 and 1 in ids  # broker number 1 is "a"'s, whose id is "order-42"
    ch.basic_publish("later", "k", b"", pika.BasicProperties(headers={"x-delay-cancel": "order-42"}), mandatory=True)
    assert _held_ids(amqlite_server) == ids[2:]
    with pytest.raises(pika.exceptions.UnroutableError):  # both gone
        ch.basic_publish("later", "k", b"", pika.BasicProperties(headers={"x-delay-cancel": "order-42"}),
                         mandatory=True)
    # "1" is "e"'s message_id, not the broker's number of "a".
    ch.basic_publish("later", "k", b"", pika.BasicProperties(headers={"x-delay-cancel": 1}), mandatory=True)
    assert _held_ids(amqlite_server) == ids[2:4]
    with pytest.raises(pika.exceptions.UnroutableError):
        ch.basic_publish("later", "k", b"", pika.BasicProperties(headers={"x-delay-cancel": "1"}), mandatory=True)
    # "d" has no message_id: its number is its id; "c"'s number is not.
    ch.basic_publish("later", "k", b"", pika.BasicProperties(headers={"x-delay-cancel": ids[3]}), mandatory=True)
    with pytest.raises(pika.exceptions.UnroutableError):
        ch.basic_publish("later", "k", b"", pika.BasicProperties(headers={"x-delay-cancel": ids[2]}), mandatory=True)
    assert _held_ids(amqlite_server) == [ids[2]]
    connection.close()
