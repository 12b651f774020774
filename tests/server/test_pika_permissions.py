"""Permissions through pika against amqlite: from the config file, a
refusal closes only its channel, and a user without a grant for a vhost
cannot open it. (tests/management/test_permissions_differential.py runs the
full operation matrix against RabbitMQ too.)"""

from __future__ import annotations

from typing import Iterator

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker, ProbableAccessDeniedError

from .conftest import ServerThread, start_amqlite

USERS = {
    "app": {"password": "pw", "permissions": {"/": {"configure": "^app\\.", "write": "^(app\\.|amq\\.topic$)",
                                           "read": "^app\\."}},
            "topic_permissions": [{"vhost": "/", "exchange": "amq.topic", "write": "^{username}\\.", "read": ".*"}]},
    "other": {"password": "pw", "vhosts": ["elsewhere"]},
}


@pytest.fixture
def server() -> Iterator[ServerThread]:
    s = start_amqlite(users=USERS, vhosts=["/", "elsewhere"])
    yield s
    s.stop()


def login(server: ServerThread, user: str, vhost: str = "/") -> pika.BlockingConnection:
    return server.connect(virtual_host=vhost, credentials=pika.PlainCredentials(user, "pw"))


def test_a_refusal_closes_its_channel_only_and_touches_nothing(server: ServerThread) -> None:
    admin = server.connect().channel()
    admin.queue_declare("team-b.jobs")
    admin.basic_publish("", "team-b.jobs", b"theirs")
    connection = login(server, "app")
    working = connection.channel()
    working.queue_declare("app.jobs")
    for attempt in (lambda ch: ch.queue_purge("team-b.jobs"), lambda ch: ch.queue_delete("team-b.jobs"),
                    lambda ch: ch.queue_bind("team-b.jobs", "amq.direct", "x")):
        with pytest.raises(ChannelClosedByBroker) as refused:
            attempt(connection.channel())
        assert refused.value.reply_code == 403
        assert refused.value.reply_text.startswith("ACCESS_REFUSED - access to queue 'team-b.jobs' in vhost '/'")
    # The other channel, and the other team's message, are untouched.
    working.exchange_declare("app.events", "fanout")
    working.queue_bind("app.jobs", "app.events")
    working.confirm_delivery()
    working.basic_publish("app.events", "", b"ours")
    assert working.basic_get("app.jobs", auto_ack=True)[2] == b"ours"
    assert admin.queue_declare("team-b.jobs", passive=True).method.message_count == 1
    connection.close()


def test_topic_permissions_limit_routing_keys_to_the_users_own(server: ServerThread) -> None:
    connection = login(server, "app")
    channel = connection.channel()
    channel.confirm_delivery()
    channel.basic_publish("amq.topic", "app.order.created", b"ok")
    with pytest.raises(ChannelClosedByBroker) as refused:
        channel.basic_publish("amq.topic", "billing.order.created", b"no")
    assert refused.value.reply_code == 403
    assert "access to topic 'billing.order.created' in exchange 'amq.topic'" in refused.value.reply_text


def test_a_user_without_a_grant_for_the_vhost_cannot_open_it(server: ServerThread) -> None:
    with pytest.raises(ProbableAccessDeniedError, match="530.*access to vhost '/' refused for user 'other'"):
        login(server, "other")
    login(server, "other", "elsewhere").close()


def test_limits_from_the_config_file_apply() -> None:
    server = start_amqlite(users={"app": {"password": "pw", "limits": {"max-connections": 1}}},
                           vhosts={"/": {"limits": {"max-queues": 1}}})
    try:
        channel = login(server, "app").channel()
        channel.queue_declare("only")
        with pytest.raises(ChannelClosedByBroker, match="queue limit in vhost '/' \\(1\\) is reached"):
            channel.queue_declare("another")
        with pytest.raises(ProbableAccessDeniedError, match="user connection limit \\(1\\) is reached"):
            login(server, "app")
    finally:
        server.stop()


def test_bad_limits_in_the_config_file_are_named() -> None:
    from amqlite.config import ConfigError, load

    with pytest.raises(ConfigError) as problems:
        load(overrides={"users": {"app": {"password": "pw", "limits": {"max-queues": 1}}},
                        "vhosts": {"v": {"limits": {"max-connections": "ten"}}}})
    assert "users.app.limits.max-queues: unknown limit" in str(problems.value)
    assert "vhosts.v.limits.max-connections must be an integer" in str(problems.value)
