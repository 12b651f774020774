"""Permission checks in the core: RabbitMQ's regex semantics and the core
channel refusing before it changes anything."""

from __future__ import annotations

import pytest

from amqlite.core.broker import Broker
from amqlite.core.errors import ACCESS_REFUSED, AccessRefused
from amqlite.core.permissions import Access, Permission, TopicPermission, matches


def test_patterns_search_like_rabbitmq_and_the_empty_pattern_grants_nothing() -> None:
    assert matches("^app-", "app-orders") and not matches("^app-", "my-app-orders")
    assert matches("orders", "app-orders")  # a search, not a full match: anchor to mean the whole name
    assert not matches("", "")
    assert not matches("", "anything")
    assert matches(".*", "")


def test_topic_patterns_expand_the_user_and_the_vhost() -> None:
    access = Access("alice", "shop", Permission(),
                    (TopicPermission("shop", "events", write="^{username}\\.{vhost}\\.", read=".*"),))
    access.topic_write("events", "alice.shop.created")
    with pytest.raises(AccessRefused, match="access to topic 'bob.shop.created' in exchange 'events' in vhost "
                                            "'shop' refused for user 'alice'"):
        access.topic_write("events", "bob.shop.created")
    access.topic_write("other-exchange", "bob.shop.created")  # no topic permission there: unrestricted


def restricted_channel(broker: Broker, permission: Permission):  # type: ignore[no-untyped-def]
    broker.add_vhost("v")
    admin = broker.connect("v").open_channel()
    admin.declare_queue("r-q", now=0)
    admin.declare_queue("w-q", now=0)
    admin.declare_exchange("w-x", "fanout")
    admin.bind_queue("r-q", "w-x")
    connection = broker.connect("v", user="app", access=Access("app", "v", permission))
    return admin, connection.open_channel()


def test_a_refusal_changes_nothing_and_carries_reply_code_403() -> None:
    broker = Broker()
    admin, channel = restricted_channel(broker, Permission(configure="^c-", write="^w-", read="^r-"))
    with pytest.raises(AccessRefused) as refused:
        channel.delete_queue("r-q", now=0)
    assert refused.value.reply_code == ACCESS_REFUSED
    assert refused.value.reply_text == "ACCESS_REFUSED - access to queue 'r-q' in vhost 'v' refused for user 'app'"
    assert "r-q" in broker.vhosts["v"].queues
    outcome = channel.publish(b"m", exchange="w-x", now=0)
    assert outcome is not None and outcome.routed == 1
    with pytest.raises(AccessRefused):
        channel.purge_queue("w-q")  # purge needs read
    assert channel.purge_queue("r-q") == 1
    with pytest.raises(AccessRefused, match="exchange 'amq.default'"):
        channel.publish(b"m", routing_key="w-q", now=0)
    assert broker.vhosts["v"].queues["w-q"].message_count == 0


def test_a_server_named_queue_is_checked_under_the_name_made_up_and_not_created() -> None:
    broker = Broker()
    _, channel = restricted_channel(broker, Permission(configure="^c-"))
    before = set(broker.vhosts["v"].queues)
    with pytest.raises(AccessRefused, match=r"access to queue 'amq\.gen-"):
        channel.declare_queue("", now=0)
    assert set(broker.vhosts["v"].queues) == before
    _, allowed = restricted_channel(Broker(), Permission(configure="^amq\\.gen-"))
    assert allowed.declare_queue("", now=0).name.startswith("amq.gen-")


def test_no_access_object_means_no_checks_for_in_process_use() -> None:
    broker = Broker()
    broker.add_vhost("v")
    channel = broker.connect("v").open_channel()
    channel.declare_queue("anything", now=0)
    assert channel.delete_queue("anything", now=0) == 0
