"""Queue length limits: x-max-length, x-max-length-bytes and x-overflow."""

from __future__ import annotations

import pytest
from support import deliveries, drain_get, headers_of


def _limited(ch, **arguments):
    ch.declare_queue("dlq", now=0)
    args = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dlq", **arguments}
    ch.declare_queue("q", arguments=args, now=0)


def _pub(ch, body):
    return ch.publish(body, routing_key="q", now=0)


def test_max_length_drop_head_dead_letters_oldest_with_reason_maxlen(ch):
    _limited(ch, **{"x-max-length": 2})
    for body in (b"1", b"2", b"3", b"4"):
        assert _pub(ch, body).routed == 1
    assert drain_get(ch, "q") == [b"3", b"4"]
    dead = [ch.get("dlq", now=0, no_ack=True).message for _ in range(2)]
    assert [m.body for m in dead] == [b"1", b"2"]
    assert headers_of(dead[0])["x-death"][0]["reason"] == "maxlen"


def test_max_length_zero_keeps_nothing_without_consumer(ch):
    _limited(ch, **{"x-max-length": 0})
    _pub(ch, b"x")
    assert drain_get(ch, "q") == []
    assert drain_get(ch, "dlq") == [b"x"]


def test_max_length_zero_still_delivers_to_ready_consumer(ch):
    _limited(ch, **{"x-max-length": 0})
    ch.consume("q", now=0)
    _pub(ch, b"x")
    assert [d.message.body for d in deliveries(ch)] == [b"x"]


def test_max_length_bytes_drop_head(ch):
    _limited(ch, **{"x-max-length-bytes": 10})
    _pub(ch, b"aaaa")
    _pub(ch, b"bbbb")
    _pub(ch, b"cccc")  # 12 bytes: the head goes
    assert drain_get(ch, "q") == [b"bbbb", b"cccc"]
    assert drain_get(ch, "dlq") == [b"aaaa"]


def test_max_length_bytes_drops_as_many_as_needed(ch):
    _limited(ch, **{"x-max-length-bytes": 10})
    for body in (b"a", b"b", b"c"):
        _pub(ch, body)
    _pub(ch, b"0123456789")
    assert drain_get(ch, "q") == [b"0123456789"]
    assert drain_get(ch, "dlq") == [b"a", b"b", b"c"]


def test_drop_head_without_dlx_is_counted_as_drop(broker, ch):
    ch.declare_queue("q", arguments={"x-max-length": 1}, now=0)
    _pub(ch, b"1")
    _pub(ch, b"2")
    assert broker.drops["maxlen"] == 1
    assert drain_get(ch, "q") == [b"2"]


def test_reject_publish_refuses_new_message(broker, ch):
    _limited(ch, **{"x-max-length": 2, "x-overflow": "reject-publish"})
    assert not _pub(ch, b"1").rejected
    assert not _pub(ch, b"2").rejected
    outcome = _pub(ch, b"3")
    assert outcome.rejected and outcome.routed == 0
    assert drain_get(ch, "q") == [b"1", b"2"]
    assert drain_get(ch, "dlq") == []  # reject-publish does not dead-letter


def test_reject_publish_accepts_again_once_there_is_room(ch):
    _limited(ch, **{"x-max-length": 1, "x-overflow": "reject-publish"})
    _pub(ch, b"1")
    assert _pub(ch, b"2").rejected
    ch.get("q", now=0, no_ack=True)
    assert not _pub(ch, b"3").rejected
    assert drain_get(ch, "q") == [b"3"]


def test_reject_publish_by_bytes(ch):
    _limited(ch, **{"x-max-length-bytes": 5, "x-overflow": "reject-publish"})
    assert not _pub(ch, b"12345").rejected
    assert _pub(ch, b"6").rejected


def test_reject_publish_dlx_dead_letters_the_refused_message(ch):
    _limited(ch, **{"x-max-length": 1, "x-overflow": "reject-publish-dlx"})
    _pub(ch, b"kept")
    outcome = _pub(ch, b"refused")
    assert outcome.rejected
    assert drain_get(ch, "q") == [b"kept"]
    got = ch.get("dlq", now=0)
    assert got.message.body == b"refused"
    assert headers_of(got.message)["x-death"][0]["reason"] == "maxlen"


def test_reject_in_one_queue_of_a_fanout_marks_outcome_rejected(ch):
    ch.declare_queue("full", arguments={"x-max-length": 0, "x-overflow": "reject-publish"}, now=0)
    ch.declare_queue("open", now=0)
    ch.bind_queue("full", "amq.fanout")
    ch.bind_queue("open", "amq.fanout")
    outcome = ch.publish(b"x", exchange="amq.fanout", now=0)
    assert outcome.routed == 1 and outcome.rejected
    assert drain_get(ch, "open") == [b"x"]


@pytest.mark.parametrize("overflow", ["drop-head", "reject-publish"])
def test_only_ready_messages_count_towards_the_limit(ch, overflow):
    _limited(ch, **{"x-max-length": 1, "x-overflow": overflow})
    _pub(ch, b"1")
    ch.get("q", now=0)  # now unacked, not ready
    assert not _pub(ch, b"2").rejected
    assert drain_get(ch, "q") == [b"2"]
    assert drain_get(ch, "dlq") == []


def test_requeue_can_push_queue_over_limit_until_next_publish(ch):
    _limited(ch, **{"x-max-length": 1})
    _pub(ch, b"1")
    got = ch.get("q", now=0)
    _pub(ch, b"2")
    ch.nack(got.delivery_tag, requeue=True, now=0)
    _pub(ch, b"3")  # over the limit: heads go until one is left
    assert drain_get(ch, "q") == [b"3"]
    assert drain_get(ch, "dlq") == [b"1", b"2"]
