"""Queue declaration, flags, lifecycle, counts, purge and delete."""

from __future__ import annotations

import pytest
from support import deliveries, drain_get

from amqlite.core.errors import AccessRefused, NotFound, PreconditionFailed, ResourceLocked


def test_declare_records_flags(ch):
    q = ch.declare_queue("q", durable=True, auto_delete=True, now=0)
    assert q.durable and q.auto_delete
    assert q.exclusive_owner is None
    ex = ch.declare_queue("ex", exclusive=True, now=0)
    assert ex.exclusive_owner is ch.connection


def test_server_named_queues_are_unique_amq_gen(ch):
    a = ch.declare_queue("", now=0)
    b = ch.declare_queue("", now=0)
    assert a.name.startswith("amq.gen-") and b.name.startswith("amq.gen-")
    assert a.name != b.name
    ch.publish(b"x", routing_key=a.name, now=0)
    assert drain_get(ch, a.name) == [b"x"]


def test_client_may_not_declare_amq_queue(ch):
    with pytest.raises(AccessRefused) as info:
        ch.declare_queue("amq.mine", now=0)
    assert info.value.reply_code == 403


def test_passive_declare(ch):
    ch.declare_queue("q", now=0)
    ch.publish(b"x", routing_key="q", now=0)
    assert ch.declare_queue("q", passive=True, now=0).message_count == 1
    with pytest.raises(NotFound) as info:
        ch.declare_queue("missing", passive=True, now=0)
    assert info.value.reply_code == 404
    assert "no queue 'missing' in vhost '/'" in info.value.reply_text


def test_exclusive_queue_is_locked_to_its_connection(broker, ch):
    ch.declare_queue("mine", exclusive=True, now=0)
    other = broker.connect().open_channel()
    for attempt in (
        lambda: other.declare_queue("mine", exclusive=True, now=0),
        lambda: other.declare_queue("mine", passive=True, now=0),
        lambda: other.consume("mine", now=0),
        lambda: other.get("mine", now=0),
        lambda: other.purge_queue("mine"),
        lambda: other.delete_queue("mine", now=0),
        lambda: other.bind_queue("mine", "amq.direct", "k"),
    ):
        with pytest.raises(ResourceLocked) as info:
            attempt()
        assert info.value.reply_code == 405
    # Another channel on the owning connection may use it.
    ch.connection.open_channel().consume("mine", now=0)


@pytest.mark.parametrize("first_exclusive", [True, False])
def test_redeclare_with_other_exclusive_flag_is_405_on_same_connection(ch, first_exclusive):
    ch.declare_queue("q", exclusive=first_exclusive, now=0)
    with pytest.raises(ResourceLocked) as info:
        ch.declare_queue("q", exclusive=not first_exclusive, now=0)
    assert info.value.reply_code == 405
    assert "exclusive property value does not match" in info.value.reply_text


def test_exclusive_queue_deleted_when_connection_closes(broker, conn, ch):
    ch.declare_queue("mine", exclusive=True, now=0)
    ch.declare_queue("shared", now=0)
    conn.close(now=0)
    assert "mine" not in broker.vhosts["/"].queues
    assert "shared" in broker.vhosts["/"].queues


def test_auto_delete_queue_deleted_after_last_consumer_cancels(broker, ch):
    ch.declare_queue("ad", auto_delete=True, now=0)
    a = ch.consume("ad", now=0)
    b = ch.consume("ad", now=0)
    ch.cancel(a, now=0)
    assert "ad" in broker.vhosts["/"].queues
    ch.cancel(b, now=0)
    assert "ad" not in broker.vhosts["/"].queues


def test_auto_delete_queue_without_consumers_ever_stays(broker, ch):
    ch.declare_queue("ad", auto_delete=True, now=0)
    ch.publish(b"x", routing_key="ad", now=0)
    assert "ad" in broker.vhosts["/"].queues


def test_auto_delete_queue_deleted_when_consumer_channel_closes(broker, conn, ch):
    ch.declare_queue("ad", auto_delete=True, now=0)
    ch.consume("ad", now=0)
    ch.close(now=0)
    assert "ad" not in broker.vhosts["/"].queues


# -- x-expires ----------------------------------------------------------------


def _expiring(ch, ms=1000, now=0.0):
    return ch.declare_queue("exp", arguments={"x-expires": ms}, now=now)


def test_x_expires_deletes_idle_queue(broker, ch):
    _expiring(ch)
    ch.publish(b"x", routing_key="exp", now=0.1)  # publishing does not count as use
    broker.tick(0.999)
    assert "exp" in broker.vhosts["/"].queues
    assert broker.next_deadline() == pytest.approx(1.0)
    broker.tick(1.0)
    assert "exp" not in broker.vhosts["/"].queues


def test_x_expires_lease_renewed_by_redeclare(broker, ch):
    _expiring(ch)
    broker.tick(0.5)
    _expiring(ch, now=0.5)
    broker.tick(1.2)
    assert "exp" in broker.vhosts["/"].queues
    broker.tick(1.5)
    assert "exp" not in broker.vhosts["/"].queues


def test_x_expires_lease_renewed_by_passive_declare(broker, ch):
    _expiring(ch)
    ch.declare_queue("exp", passive=True, now=0.8)
    broker.tick(1.5)
    assert "exp" in broker.vhosts["/"].queues
    broker.tick(1.8)
    assert "exp" not in broker.vhosts["/"].queues


def test_x_expires_lease_renewed_by_get(broker, ch):
    _expiring(ch)
    assert ch.get("exp", now=0.9) is None  # even an empty get counts
    broker.tick(1.5)
    assert "exp" in broker.vhosts["/"].queues
    broker.tick(1.9)
    assert "exp" not in broker.vhosts["/"].queues


def test_x_expires_not_while_consumed_then_counted_from_cancel(broker, ch):
    _expiring(ch)
    tag = ch.consume("exp", now=0.5)
    broker.tick(10)
    assert "exp" in broker.vhosts["/"].queues
    ch.cancel(tag, now=20)
    broker.tick(20.9)
    assert "exp" in broker.vhosts["/"].queues
    broker.tick(21)
    assert "exp" not in broker.vhosts["/"].queues


def test_x_expires_must_be_positive(ch):
    with pytest.raises(PreconditionFailed):
        ch.declare_queue("q", arguments={"x-expires": 0}, now=0)


# -- counts, purge, delete ------------------------------------------------------


def test_message_and_consumer_counts(ch):
    ch.declare_queue("q", now=0)
    for i in range(3):
        ch.publish(b"%d" % i, routing_key="q", now=0)
    ch.get("q", now=0)  # one unacked: not counted
    ch.consume("q", now=0)  # takes the other two
    ok = ch.declare_queue("q", now=0)
    assert ok.message_count == 0
    assert ok.consumer_count == 1
    assert ok.unacked == 3


def test_counts_on_declare_with_no_consumers(ch):
    ch.declare_queue("q", now=0)
    ch.publish(b"a", routing_key="q", now=0)
    ch.publish(b"b", routing_key="q", now=0)
    ok = ch.declare_queue("q", now=0)
    assert (ok.message_count, ok.consumer_count) == (2, 0)


def test_purge_drops_ready_only_and_unacked_survive(ch):
    ch.declare_queue("q", now=0)
    for body in (b"a", b"b", b"c"):
        ch.publish(body, routing_key="q", now=0)
    got = ch.get("q", now=0)
    assert ch.purge_queue("q") == 2
    assert ch.declare_queue("q", now=0).message_count == 0
    ch.nack(got.delivery_tag, requeue=True, now=0)
    assert drain_get(ch, "q") == [b"a"]


def test_purge_missing_queue_is_404(ch):
    with pytest.raises(NotFound):
        ch.purge_queue("missing")


def test_delete_returns_ready_count_and_unbinds(broker, ch):
    ch.declare_queue("q", now=0)
    ch.bind_queue("q", "amq.fanout")
    ch.publish(b"a", routing_key="q", now=0)
    ch.publish(b"b", routing_key="q", now=0)
    assert ch.delete_queue("q", now=0) == 2
    assert "q" not in broker.vhosts["/"].queues
    assert ch.publish(b"x", exchange="amq.fanout", mandatory=True, now=0).returned
    assert ch.publish(b"x", routing_key="q", mandatory=True, now=0).returned


def test_delete_is_idempotent(ch):
    ch.declare_queue("q", now=0)
    assert ch.delete_queue("q", now=0) == 0
    assert ch.delete_queue("q", now=0) == 0
    assert ch.delete_queue("never", now=0) == 0


def test_delete_if_unused(broker, ch):
    ch.declare_queue("q", now=0)
    tag = ch.consume("q", now=0)
    with pytest.raises(PreconditionFailed) as info:
        ch.delete_queue("q", if_unused=True, now=0)
    assert info.value.reply_code == 406
    assert "q" in broker.vhosts["/"].queues
    ch.cancel(tag, now=0)
    ch.delete_queue("q", if_unused=True, now=0)
    assert "q" not in broker.vhosts["/"].queues


def test_delete_if_empty(broker, ch):
    ch.declare_queue("q", now=0)
    ch.publish(b"a", routing_key="q", now=0)
    with pytest.raises(PreconditionFailed) as info:
        ch.delete_queue("q", if_empty=True, now=0)
    assert info.value.reply_code == 406
    ch.purge_queue("q")
    ch.delete_queue("q", if_empty=True, now=0)
    assert "q" not in broker.vhosts["/"].queues


def test_deleted_queue_can_be_redeclared_fresh(ch):
    ch.declare_queue("q", arguments={"x-max-length": 1}, now=0)
    ch.publish(b"a", routing_key="q", now=0)
    ch.delete_queue("q", now=0)
    q = ch.declare_queue("q", now=0)
    assert q.message_count == 0
    assert q.settings.max_length is None


def test_ack_after_queue_deleted_is_harmless(ch):
    ch.declare_queue("q", now=0)
    ch.publish(b"a", routing_key="q", now=0)
    got = ch.get("q", now=0)
    ch.delete_queue("q", now=0)
    ch.nack(got.delivery_tag, requeue=True, now=0)
    assert not ch.unacked


# -- redeclare equivalence ----------------------------------------------------------


def test_redeclare_with_different_x_arg_is_406_inequivalent(ch):
    ch.declare_queue("q", arguments={"x-message-ttl": 1000}, now=0)
    with pytest.raises(PreconditionFailed) as info:
        ch.declare_queue("q", arguments={"x-message-ttl": 2000}, now=0)
    assert info.value.reply_code == 406
    assert info.value.reply_text == (
        "PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue 'q' in vhost '/': "
        "received '2000' but current is '1000'"
    )


def test_redeclare_missing_x_arg_is_406(ch):
    ch.declare_queue("q", arguments={"x-max-length": 5}, now=0)
    with pytest.raises(PreconditionFailed) as info:
        ch.declare_queue("q", now=0)
    assert "inequivalent arg 'x-max-length'" in info.value.reply_text
    assert "received none but current is the value '5'" in info.value.reply_text


def test_redeclare_with_different_flag_is_406(ch):
    ch.declare_queue("q", durable=True, now=0)
    with pytest.raises(PreconditionFailed) as info:
        ch.declare_queue("q", now=0)
    assert "inequivalent arg 'durable' for queue 'q' in vhost '/'" in info.value.reply_text


def test_redeclare_ignores_unknown_args_and_classic_queue_type(ch):
    ch.declare_queue("q", arguments={"x-custom": 1}, now=0)
    assert ch.declare_queue("q", arguments={"x-custom": 2, "x-queue-type": "classic"}, now=0).name == "q"


@pytest.mark.parametrize(
    "arguments",
    [
        {"x-message-ttl": -1},
        {"x-message-ttl": "100"},
        {"x-max-length": -1},
        {"x-overflow": "drop-tail"},
        {"x-max-priority": 256},
        {"x-dead-letter-routing-key": "k"},
        {"x-single-active-consumer": 1},
        {"x-queue-type": "stream"},
    ],
)
def test_invalid_queue_arguments_are_406(ch, arguments):
    with pytest.raises(PreconditionFailed) as info:
        ch.declare_queue("q", arguments=arguments, now=0)
    assert info.value.reply_code == 406


def test_queue_consumer_reads_published_messages_in_order(ch):
    ch.declare_queue("q", now=0)
    for body in (b"1", b"2", b"3"):
        ch.publish(body, routing_key="q", now=0)
    ch.consume("q", no_ack=True, now=0)
    assert [d.message.body for d in deliveries(ch)] == [b"1", b"2", b"3"]
