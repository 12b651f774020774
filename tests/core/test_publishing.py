"""Publishing: mandatory, publish outcomes and confirm numbering, transactions,
sender-selected distribution (CC/BCC), and the message size limit."""

from __future__ import annotations

import pytest
from support import deliveries, drain_get, headers_of, props

from amqlite.core.broker import Broker
from amqlite.core.errors import NotFound, PreconditionFailed


@pytest.fixture
def q(ch):
    return ch.declare_queue("q", now=0)


# -- mandatory and outcomes -----------------------------------------------------


def test_mandatory_unroutable_is_returned(broker, ch):
    outcome = ch.publish(b"x", exchange="amq.direct", routing_key="nowhere", mandatory=True, now=0)
    assert outcome.returned and outcome.routed == 0
    assert broker.drops["unroutable"] == 1


def test_unroutable_without_mandatory_is_silently_dropped(broker, ch):
    outcome = ch.publish(b"x", exchange="amq.direct", routing_key="nowhere", now=0)
    assert not outcome.returned and outcome.routed == 0
    assert broker.drops["unroutable"] == 1


def test_routed_mandatory_is_not_returned(ch, q):
    outcome = ch.publish(b"x", routing_key="q", mandatory=True, now=0)
    assert outcome.routed == 1 and not outcome.returned and not outcome.rejected


def test_outcome_counts_every_queue(ch):
    for name in ("a", "b", "c"):
        ch.declare_queue(name, now=0)
        ch.bind_queue(name, "amq.fanout")
    assert ch.publish(b"x", exchange="amq.fanout", now=0).routed == 3


def test_drop_hook_sees_unroutable_message(broker, ch):
    seen = []
    broker.on_drop = lambda where, message, reason: seen.append((where, message.body, reason))
    ch.publish(b"x", exchange="amq.topic", routing_key="a", now=0)
    assert seen == [("amq.topic", b"x", "unroutable")]


# -- confirms ---------------------------------------------------------------------


def test_confirm_mode_numbers_publishes_from_one(ch, q):
    ch.publish(b"before", routing_key="q", now=0)
    assert ch.publish_seq == 0
    ch.confirm_select()
    ch.publish(b"a", routing_key="q", now=0)
    assert ch.publish_seq == 1
    ch.publish(b"b", routing_key="nowhere", now=0)  # unroutable publishes count too
    ch.publish(b"c", routing_key="q", now=0)
    assert ch.publish_seq == 3


def test_confirm_numbering_is_per_channel(ch, conn, q):
    other = conn.open_channel()
    ch.confirm_select()
    other.confirm_select()
    ch.publish(b"a", routing_key="q", now=0)
    ch.publish(b"b", routing_key="q", now=0)
    other.publish(b"c", routing_key="q", now=0)
    assert (ch.publish_seq, other.publish_seq) == (2, 1)


def test_confirm_select_is_idempotent(ch, q):
    ch.confirm_select()
    ch.publish(b"a", routing_key="q", now=0)
    ch.confirm_select()
    assert ch.publish_seq == 1


def test_reject_publish_outcome_is_a_nack(ch):
    ch.declare_queue("full", arguments={"x-max-length": 0, "x-overflow": "reject-publish"}, now=0)
    ch.confirm_select()
    assert ch.publish(b"x", routing_key="full", now=0).rejected


def test_confirm_and_tx_are_mutually_exclusive(ch, conn):
    ch.confirm_select()
    with pytest.raises(PreconditionFailed) as info:
        ch.tx_select()
    assert info.value.reply_code == 406
    other = conn.open_channel()
    other.tx_select()
    with pytest.raises(PreconditionFailed) as info:
        other.confirm_select()
    assert info.value.reply_code == 406


# -- transactions -----------------------------------------------------------------


def test_tx_publishes_held_until_commit(ch, q):
    ch.tx_select()
    assert ch.publish(b"a", routing_key="q", now=0) is None
    assert ch.publish(b"b", routing_key="nowhere", mandatory=True, now=0) is None
    assert q.message_count == 0
    outcomes = ch.tx_commit(now=0)
    assert [(m.body, o.routed, o.returned) for m, o in outcomes] == [(b"a", 1, False), (b"b", 0, True)]
    assert drain_get(ch, "q") == [b"a"]


def test_tx_rollback_discards_publishes(ch, q):
    ch.tx_select()
    ch.publish(b"a", routing_key="q", now=0)
    ch.tx_rollback()
    assert ch.tx_commit(now=0) == []
    assert q.message_count == 0


def test_tx_stays_transactional_after_commit(ch, q):
    ch.tx_select()
    ch.publish(b"a", routing_key="q", now=0)
    ch.tx_commit(now=0)
    ch.publish(b"b", routing_key="q", now=0)
    assert q.message_count == 1
    ch.tx_commit(now=0)
    assert q.message_count == 2


def test_tx_publish_to_missing_exchange_fails_at_once(ch):
    ch.tx_select()
    with pytest.raises(NotFound):
        ch.publish(b"a", exchange="missing", now=0)


def test_tx_acks_held_until_commit(ch, q):
    ch.publish(b"a", routing_key="q", now=0)
    got = ch.get("q", now=0)
    ch.tx_select()
    ch.ack(got.delivery_tag, now=0)
    assert q.unacked == 1
    ch.tx_commit(now=0)
    assert q.unacked == 0 and not ch.unacked


def test_tx_rollback_restores_unacked(ch, q):
    for body in (b"a", b"b"):
        ch.publish(body, routing_key="q", now=0)
    first = ch.get("q", now=0)
    second = ch.get("q", now=0)
    ch.tx_select()
    ch.ack(second.delivery_tag, now=0)
    ch.nack(first.delivery_tag, requeue=True, now=0)
    ch.tx_rollback()
    assert list(ch.unacked) == [first.delivery_tag, second.delivery_tag]
    assert q.unacked == 2 and q.message_count == 0
    # They can be settled again, and the second commit applies them.
    ch.ack(0, multiple=True, now=0)
    ch.tx_commit(now=0)
    assert q.unacked == 0


def test_tx_nack_requeue_applies_at_commit(ch, q):
    ch.publish(b"a", routing_key="q", now=0)
    got = ch.get("q", now=0)
    ch.tx_select()
    ch.nack(got.delivery_tag, requeue=True, now=0)
    assert q.message_count == 0
    ch.tx_commit(now=0)
    again = ch.get("q", now=0)
    assert again.message.body == b"a" and again.redelivered


def test_tx_commit_and_rollback_require_tx_select(ch):
    with pytest.raises(PreconditionFailed) as info:
        ch.tx_commit(now=0)
    assert "not transactional" in info.value.reply_text
    with pytest.raises(PreconditionFailed):
        ch.tx_rollback()


def test_tx_commit_delivers_to_consumers(ch, conn, q):
    consumer_ch = conn.open_channel()
    consumer_ch.consume("q", now=0)
    ch.tx_select()
    ch.publish(b"a", routing_key="q", now=0)
    assert deliveries(consumer_ch) == []
    ch.tx_commit(now=0)
    assert [d.message.body for d in deliveries(consumer_ch)] == [b"a"]


def test_closing_channel_discards_open_transaction(ch, conn, q):
    ch.publish(b"a", routing_key="q", now=0)
    got = ch.get("q", now=0)
    ch.tx_select()
    ch.publish(b"b", routing_key="q", now=0)
    ch.ack(got.delivery_tag, now=0)
    ch.close(now=0)
    # The uncommitted ack is forgotten, so the message is requeued; 'b' never arrives.
    assert drain_get(conn.open_channel(), "q") == [b"a"]


# -- CC / BCC ---------------------------------------------------------------------


def test_cc_and_bcc_route_to_extra_keys(ch):
    for name in ("main", "cc", "bcc"):
        ch.declare_queue(name, now=0)
    headers = {"CC": ["cc"], "BCC": ["bcc"]}
    outcome = ch.publish(b"x", routing_key="main", properties=props(headers=headers), now=0)
    assert outcome.routed == 3


def test_bcc_header_is_not_delivered_but_cc_is(ch):
    for name in ("main", "bcc"):
        ch.declare_queue(name, now=0)
    headers = {"CC": ["nowhere"], "BCC": ["bcc"], "app": 1}
    ch.publish(b"x", routing_key="main", properties=props(headers=headers), now=0)
    for name in ("main", "bcc"):
        seen = headers_of(ch.get(name, now=0).message)
        assert "BCC" not in seen
        assert seen["CC"] == ["nowhere"] and seen["app"] == 1


# -- size limit -------------------------------------------------------------------


def test_message_over_max_size_is_406():
    broker = Broker(max_message_size=10)
    ch = broker.connect().open_channel()
    ch.declare_queue("q", now=0)
    ch.publish(b"0123456789", routing_key="q", now=0)
    with pytest.raises(PreconditionFailed) as info:
        ch.publish(b"0123456789!", routing_key="q", now=0)
    assert info.value.reply_code == 406 and not info.value.connection_level
    assert "larger than configured max size 10" in info.value.reply_text
    assert ch.declare_queue("q", passive=True, now=0).message_count == 1


def test_publish_keeps_properties_and_body(ch, q):
    sent = props(content_type="text/plain", delivery_mode=2, correlation_id="c1", headers={"k": "v"})
    ch.publish(b"payload", routing_key="q", properties=sent, now=0)
    got = ch.get("q", now=0)
    assert got.message.body == b"payload"
    assert got.message.properties == sent
    assert got.message.persistent
    assert (got.message.exchange, got.message.routing_key) == ("", "q")
