"""x-delivery-limit, and broker-side retry with backoff (LavinMQ's x-delayed-retry-*)."""

from __future__ import annotations

import pytest
import trio
from support import deliveries, drain_get, headers_of

import amqlite
from amqlite.core.arguments import DEFAULT_RETRY_DELIVERY_LIMIT, RetryPolicy
from amqlite.core.errors import PreconditionFailed


def _limited(ch, limit, **extra):
    ch.declare_queue("dlq", now=0)
    args = {"x-delivery-limit": limit, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dlq", **extra}
    ch.declare_queue("q", arguments=args, now=0)


def test_delivery_limit_two_means_three_deliveries(ch):
    _limited(ch, 2)
    ch.publish(b"x", routing_key="q", now=0)
    ch.consume("q", now=0)
    seen = []
    for _ in range(5):
        events = deliveries(ch)
        if not events:
            break
        [event] = events
        seen.append((event.delivery_count, event.redelivered))
        ch.nack(event.delivery_tag, requeue=True, now=0)
    assert seen == [(0, False), (1, True), (2, True)]
    got = ch.get("dlq", now=0)
    assert got.message.body == b"x"
    assert headers_of(got.message)["x-death"][0]["reason"] == "delivery_limit"


def test_delivery_limit_zero_dead_letters_on_first_requeue(ch):
    _limited(ch, 0)
    ch.publish(b"x", routing_key="q", now=0)
    got = ch.get("q", now=0)
    ch.reject(got.delivery_tag, requeue=True, now=0)
    assert drain_get(ch, "q") == []
    assert drain_get(ch, "dlq") == [b"x"]


def test_delivery_count_starts_at_zero_and_counts_redeliveries(ch):
    ch.declare_queue("q", now=0)
    ch.publish(b"x", routing_key="q", now=0)
    first = ch.get("q", now=0)
    assert (first.delivery_count, first.redelivered) == (0, False)
    ch.nack(first.delivery_tag, now=0)
    second = ch.get("q", now=0)
    assert (second.delivery_count, second.redelivered) == (1, True)


def test_requeue_false_dead_letters_as_rejected_not_delivery_limit(ch):
    _limited(ch, 5)
    ch.publish(b"x", routing_key="q", now=0)
    got = ch.get("q", now=0)
    ch.nack(got.delivery_tag, requeue=False, now=0)
    assert headers_of(ch.get("dlq", now=0).message)["x-death"][0]["reason"] == "rejected"


def test_delivery_limit_must_be_an_integer(ch):
    with pytest.raises(PreconditionFailed):
        ch.declare_queue("q", arguments={"x-delivery-limit": "3"}, now=0)


# -- retry policy -------------------------------------------------------------


@pytest.mark.parametrize(
    ("multiplier", "maximum", "expected"),
    [
        (None, None, [1, 2, 3, 4]),  # linear: min * n
        (1, None, [1, 1, 1, 1]),  # constant
        (2, None, [1, 2, 4, 8]),  # exponential: min * m^(n-1)
        (3, 10, [1, 3, 9, 10]),  # capped
        (None, 2.5, [1, 2, 2.5, 2.5]),
    ],
)
def test_retry_policy_delays(multiplier, maximum, expected):
    policy = RetryPolicy(min_delay=1.0, max_delay=maximum, multiplier=multiplier)
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == expected


def test_retry_turns_on_default_delivery_limit(ch):
    q = ch.declare_queue("q", arguments={"x-delayed-retry-min": 100}, now=0)
    assert q.settings.delivery_limit == DEFAULT_RETRY_DELIVERY_LIMIT == 20
    assert q.settings.retry == RetryPolicy(0.1, None, None)
    explicit = ch.declare_queue("q2", arguments={"x-delayed-retry-min": 100, "x-delivery-limit": 3}, now=0)
    assert explicit.settings.delivery_limit == 3
    assert ch.declare_queue("plain", now=0).settings.delivery_limit is None


@pytest.mark.parametrize(
    "arguments",
    [
        {"x-delayed-retry-max": 100},
        {"x-delayed-retry-multiplier": 2},
        {"x-delayed-retry-min": 0},
        {"x-delayed-retry-min": 100, "x-delayed-retry-max": 50},
        {"x-delayed-retry-min": 100, "x-delayed-retry-multiplier": 0.5},
    ],
)
def test_invalid_retry_arguments_are_406(ch, arguments):
    with pytest.raises(PreconditionFailed):
        ch.declare_queue("q", arguments=arguments, now=0)


def test_retry_holds_requeued_message_in_core(broker, ch):
    ch.declare_queue("q", arguments={"x-delayed-retry-min": 1000}, now=0)
    ch.publish(b"a", routing_key="q", now=0)
    ch.publish(b"b", routing_key="q", now=0)
    got = ch.get("q", now=0)
    ch.nack(got.delivery_tag, requeue=True, now=10)
    q = broker.vhosts["/"].queues["q"]
    assert (q.message_count, q.delayed_count) == (1, 1)
    broker.tick(10.999)
    assert q.delayed_count == 1
    broker.tick(11)
    # Released to the tail, as LavinMQ republishes a retried message.
    assert drain_get(ch, "q", now=11) == [b"b", b"a"]


def test_retry_delay_only_for_consumer_failures_not_recover_or_close(broker, conn, ch):
    ch.declare_queue("q", arguments={"x-delayed-retry-min": 1000}, now=0)
    ch.publish(b"x", routing_key="q", now=0)
    ch.get("q", now=0)
    ch.recover(now=0)
    again = ch.get("q", now=0)
    assert again.delivery_count == 1
    other = conn.open_channel()
    ch.close(now=0)
    got = other.get("q", now=0)
    assert got is not None and got.delivery_count == 2


def test_retry_does_not_apply_to_requeue_false(ch):
    ch.declare_queue("dlq", now=0)
    ch.declare_queue(
        "q",
        arguments={"x-delayed-retry-min": 1000, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dlq"},
        now=0,
    )
    ch.publish(b"x", routing_key="q", now=0)
    got = ch.get("q", now=0)
    ch.reject(got.delivery_tag, requeue=False, now=0)
    assert drain_get(ch, "dlq") == [b"x"]


def test_purge_drops_messages_waiting_for_retry(broker, ch):
    ch.declare_queue("q", arguments={"x-delayed-retry-min": 1000}, now=0)
    ch.publish(b"x", routing_key="q", now=0)
    got = ch.get("q", now=0)
    ch.nack(got.delivery_tag, now=0)
    assert ch.purge_queue("q") == 1
    broker.tick(5)
    assert drain_get(ch, "q", now=5) == []


def test_retry_then_delivery_limit_dead_letters_without_waiting(broker, ch):
    ch.declare_queue("dlq", now=0)
    ch.declare_queue(
        "q",
        arguments={
            "x-delayed-retry-min": 1000,
            "x-delivery-limit": 1,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "dlq",
        },
        now=0,
    )
    ch.publish(b"x", routing_key="q", now=0)
    ch.nack(ch.get("q", now=0).delivery_tag, now=0)
    broker.tick(1)
    ch.nack(ch.get("q", now=1).delivery_tag, now=1)
    assert drain_get(ch, "dlq", now=1) == [b"x"]
    assert broker.vhosts["/"].queues["q"].delayed_count == 0


# -- retry timings through the embedded API, on trio's autojump clock ----------------


async def _redelivery_gaps(arguments, attempts, *, reject=False):
    """Nack (or reject) the one message ``attempts`` times with requeue and
    return how long each redelivery took, in seconds of trio time."""
    async with amqlite.open_broker() as broker:
        ch = await broker.channel()
        await ch.queue_declare("q", arguments=arguments)
        await ch.publish(b"job", routing_key="q")
        gaps = []
        async with await ch.consume("q") as consumer:
            delivery = await consumer.__anext__()
            for _ in range(attempts):
                started = trio.current_time()
                delivery.reject(requeue=True) if reject else delivery.nack(requeue=True)
                delivery = await consumer.__anext__()
                gaps.append(trio.current_time() - started)
                assert delivery.redelivered
            return gaps


async def test_retry_linear_backoff_timing(autojump_clock):
    gaps = await _redelivery_gaps({"x-delayed-retry-min": 500}, 4)
    assert gaps == pytest.approx([0.5, 1.0, 1.5, 2.0], abs=1e-3)


async def test_retry_constant_backoff_timing(autojump_clock):
    gaps = await _redelivery_gaps({"x-delayed-retry-min": 500, "x-delayed-retry-multiplier": 1}, 3, reject=True)
    assert gaps == pytest.approx([0.5, 0.5, 0.5], abs=1e-3)


async def test_retry_exponential_backoff_capped_timing(autojump_clock):
    arguments = {"x-delayed-retry-min": 100, "x-delayed-retry-multiplier": 3, "x-delayed-retry-max": 2000}
    gaps = await _redelivery_gaps(arguments, 5)
    assert gaps == pytest.approx([0.1, 0.3, 0.9, 2.0, 2.0], abs=1e-3)


async def test_retry_not_redelivered_before_delay(autojump_clock):
    async with amqlite.open_broker() as broker:
        ch = await broker.channel()
        await ch.queue_declare("q", arguments={"x-delayed-retry-min": 1000})
        await ch.publish(b"job", routing_key="q")
        consumer = await ch.consume("q")
        delivery = await consumer.__anext__()
        delivery.nack(requeue=True)
        with trio.move_on_after(0.999):
            await consumer.__anext__()
            pytest.fail("redelivered before the retry delay")
        with trio.fail_after(0.002):
            again = await consumer.__anext__()
        assert again.body == b"job" and again.delivery_count == 1


async def test_retry_default_limit_dead_letters_after_twenty_redeliveries(autojump_clock):
    async with amqlite.open_broker() as broker:
        ch = await broker.channel()
        await ch.queue_declare("dlq")
        await ch.queue_declare(
            "q",
            arguments={
                "x-delayed-retry-min": 10,
                "x-delayed-retry-multiplier": 1,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": "dlq",
            },
        )
        await ch.publish(b"job", routing_key="q")
        consumer = await ch.consume("q")
        counts = []
        while True:
            with trio.move_on_after(1) as scope:
                delivery = await consumer.__anext__()
            if scope.cancelled_caught:
                break
            counts.append(delivery.delivery_count)
            delivery.nack(requeue=True)
        assert counts == list(range(21))
        dead = await ch.get("dlq")
        assert dead is not None and dead.headers["x-death"][0]["reason"] == "delivery_limit"
