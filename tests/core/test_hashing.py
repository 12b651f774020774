"""The partitioning exchanges in the core: x-consistent-hash and
x-modulus-hash. Same key, same queue; a new binding moves only its share
of the keys; weights hold; the plugin's argument and weight checks."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amqlite.core.broker import Broker
from amqlite.core.errors import PreconditionFailed
from amqlite.core.hashing import jump_consistent_hash, stable_hash
from amqlite.core.message import Properties

KEYS = [f"customer-{n}" for n in range(4000)]


def channel_with(exchange_type: str, **arguments: object):  # type: ignore[no-untyped-def]
    broker = Broker()
    broker.add_vhost("/")
    ch = broker.connect("/").open_channel()
    ch.declare_exchange("parts", exchange_type, arguments=dict(arguments))
    return broker, ch


def placement(broker: Broker, ch, keys: list[str], **properties: object) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """key -> the one queue each key's message reached."""
    queues = broker.vhosts["/"].queues
    where = {}
    for key in keys:
        before = {name: q.message_count for name, q in queues.items()}
        outcome = ch.publish(b"", exchange="parts", routing_key=key, now=0,
                             properties=Properties(**properties) if properties else Properties())
        assert outcome.routed == 1
        [where[key]] = [name for name, q in queues.items() if q.message_count > before[name]]
    return where


@given(st.integers(min_value=0, max_value=2**64 - 1), st.integers(min_value=1, max_value=500))
def test_jump_hash_moves_a_key_only_to_the_new_bucket(key: int, buckets: int) -> None:
    before, after = jump_consistent_hash(key, buckets), jump_consistent_hash(key, buckets + 1)
    assert 0 <= before < buckets
    assert after in (before, buckets)


def test_the_same_key_reaches_the_same_queue_and_a_new_queue_takes_only_its_share() -> None:
    broker, ch = channel_with("x-consistent-hash")
    for n in range(4):
        ch.declare_queue(f"p{n}", now=0)
        ch.bind_queue(f"p{n}", "parts", "10")
    first = placement(broker, ch, KEYS)
    assert placement(broker, ch, KEYS) == first
    ch.declare_queue("p4", now=0)
    ch.bind_queue("p4", "parts", "10")
    second = placement(broker, ch, KEYS)
    moved = [key for key in KEYS if first[key] != second[key]]
    assert all(second[key] == "p4" for key in moved)  # keys only move to the new queue
    assert 0.15 < len(moved) / len(KEYS) < 0.25  # about 1/5


def test_weights_share_the_keys() -> None:
    broker, ch = channel_with("x-consistent-hash")
    for name, weight in (("light", "1"), ("heavy", "3")):
        ch.declare_queue(name, now=0)
        ch.bind_queue(name, "parts", weight)
    shares = Counter(placement(broker, ch, KEYS).values())
    assert 2.4 < shares["heavy"] / shares["light"] < 3.6


def test_removing_a_binding_gives_its_keys_to_the_others_only() -> None:
    broker, ch = channel_with("x-consistent-hash")
    for n in range(3):
        ch.declare_queue(f"p{n}", now=0)
        ch.bind_queue(f"p{n}", "parts", "5")
    before = placement(broker, ch, KEYS)
    ch.unbind_queue("p2", "parts", "5")
    after = placement(broker, ch, KEYS)
    assert set(after.values()) == {"p0", "p1"}
    # The last binding's buckets were the highest: every other key stays put.
    assert all(before[key] == after[key] for key in KEYS if before[key] != "p2")


@pytest.mark.parametrize(("arguments", "value"), [({"hash-header": "customer"}, "headers"),
                                                  ({"hash-property": "message_id"}, "message_id")])
def test_hashing_on_a_header_or_a_property_ignores_the_routing_key(arguments: dict[str, str], value: str) -> None:
    broker, ch = channel_with("x-consistent-hash", **arguments)
    for n in range(4):
        ch.declare_queue(f"p{n}", now=0)
        ch.bind_queue(f"p{n}", "parts", "1")
    for customer in ("alice", "bob", "carol"):
        props = {"headers": {"customer": customer}} if value == "headers" else {"message_id": customer}
        reached = set(placement(broker, ch, ["k1", "k2", "k3", "k4"], **props).values())
        assert len(reached) == 1


@pytest.mark.parametrize(("arguments", "text"), [
    ({"hash-header": "h", "hash-property": "message_id"}, "hash-header and hash-property are mutually exclusive"),
    ({"hash-property": "app_id"}, "Unsupported property: app_id"),
    ({"hash-header": 5}, "hash-header must be a string"),
])
def test_bad_hash_arguments_are_406(arguments: dict[str, object], text: str) -> None:
    with pytest.raises(PreconditionFailed, match=text):
        channel_with("x-consistent-hash", **arguments)


@pytest.mark.parametrize(("key", "text"), [("abc", 'The binding key must be an integer: <<"abc">>'),
                                           ("0", "The binding key must be greater than 0"),
                                           ("-1", "The binding key must be greater than 0")])
def test_a_weight_that_is_not_a_positive_integer_is_406_and_binds_nothing(key: str, text: str) -> None:
    broker, ch = channel_with("x-consistent-hash")
    ch.declare_queue("q", now=0)
    with pytest.raises(PreconditionFailed, match=text):
        ch.bind_queue("q", "parts", key)
    assert ch.publish(b"", exchange="parts", routing_key="k", now=0).routed == 0


def test_modulus_hash_ignores_binding_keys_and_weighs_by_binding_count() -> None:
    broker, ch = channel_with("x-modulus-hash")
    ch.declare_queue("once", now=0)
    ch.declare_queue("twice", now=0)
    ch.bind_queue("once", "parts", "anything")
    ch.bind_queue("twice", "parts", "a")
    ch.bind_queue("twice", "parts", "b")
    first = placement(broker, ch, KEYS)
    assert placement(broker, ch, KEYS) == first
    shares = Counter(first.values())
    assert 1.6 < shares["twice"] / shares["once"] < 2.4


@settings(max_examples=50)
@given(st.one_of(st.text(), st.binary(), st.integers(), st.none()))
def test_the_hash_is_stable_and_64_bits(value: object) -> None:
    assert stable_hash(value) == stable_hash(value)
    assert 0 <= stable_hash(value) < 2**64
