"""The management API's read side: auth and tags, overview, vhosts, queues,
exchanges, health; RabbitMQ's paths, shapes and error bodies."""

from __future__ import annotations

import httpx
import pytest

from .conftest import ManagedServerThread


def test_no_credentials_is_a_bare_401_challenge_as_in_rabbitmq(managed: ManagedServerThread) -> None:
    response = managed.http().get("/api/overview", auth=None)
    assert (response.status_code, response.content) == (401, b"")
    assert response.headers["www-authenticate"] == 'Basic realm="RabbitMQ Management"'


def test_wrong_password_is_401_login_failed(managed: ManagedServerThread) -> None:
    response = managed.http("admin", "nope").get("/api/whoami")
    assert (response.status_code, response.json()) == (401, {"error": "not_authorized", "reason": "Login failed"})


@pytest.mark.parametrize("user,status", [("admin", 200), ("monitor", 200), ("limited", 200), ("plain", 401)])
def test_tags_grant_the_api_as_in_rabbitmq(managed: ManagedServerThread, user: str, status: int) -> None:
    response = managed.http(user, "pw").get("/api/whoami")
    assert response.status_code == status
    if status == 200:
        assert response.json()["name"] == user
    else:
        assert response.json() == {"error": "not_authorised", "reason": "Not management user"}


def test_queue_counts_follow_the_broker(managed: ManagedServerThread) -> None:
    connection = managed.connect()
    channel = connection.channel()
    channel.queue_declare("work", durable=True, arguments={"x-max-length": 10})
    for n in range(3):
        channel.basic_publish("", "work", str(n).encode())
    method, _, _ = channel.basic_get("work")  # one unacked
    http = managed.http()

    queue = http.get("/api/queues/%2F/work").json()
    assert (queue["name"], queue["vhost"], queue["durable"]) == ("work", "/", True)
    assert (queue["messages"], queue["messages_ready"], queue["messages_unacknowledged"]) == (3, 2, 1)
    assert queue["arguments"] == {"x-max-length": 10}
    assert (queue["consumers"], queue["state"]) == (0, "running")
    assert (queue["messages_paged"], queue["messages_delayed"]) == (0, 0)
    assert [q["name"] for q in http.get("/api/queues").json()] == ["work"]
    assert http.get("/api/queues/other").json() == []

    overview = http.get("/api/overview").json()
    assert overview["queue_totals"] == {"messages": 3, "messages_ready": 2, "messages_unacknowledged": 1}
    assert overview["object_totals"]["queues"] == 1
    assert overview["object_totals"]["connections"] == 1
    assert overview["listeners"][0]["port"] == managed.port
    channel.basic_ack(method.delivery_tag)
    connection.close()


def test_missing_objects_are_404_object_not_found(managed: ManagedServerThread) -> None:
    http = managed.http()
    for path in ("/api/queues/%2F/nope", "/api/queues/nope", "/api/exchanges/%2F/nope",
                 "/api/vhosts/nope", "/api/aliveness-test/nope", "/api/no-such-endpoint"):
        response = http.get(path)
        assert response.status_code == 404, path
        assert response.json() == {"error": "Object Not Found", "reason": "Not Found"}, path


def test_user_sees_only_the_vhosts_it_may_open(managed: ManagedServerThread) -> None:
    assert [v["name"] for v in managed.http("limited", "pw").get("/api/vhosts").json()] == ["other"]
    assert [v["name"] for v in managed.http().get("/api/vhosts").json()] == ["/", "other"]
    # RabbitMQ's is_authorized_vhost: a vhost the user may not open is a 401.
    refused = managed.http("limited", "pw").get("/api/queues/%2F")
    assert (refused.status_code, refused.json()["reason"]) == (401, "User not authorised to access virtual host")
    assert [q["vhost"] for q in managed.http("limited", "pw").get("/api/queues").json()] == []


def test_exchanges_include_defaults_with_amq_default_name(managed: ManagedServerThread) -> None:
    http = managed.http()
    names = {x["name"] for x in http.get("/api/exchanges/%2F").json()}
    assert {"", "amq.direct", "amq.topic", "amq.fanout"} <= names
    direct = http.get("/api/exchanges/%2F/amq.direct").json()
    assert (direct["type"], direct["durable"]) == ("direct", True)
    assert http.get("/api/exchanges/%2F/amq.default").json()["type"] == "direct"


def test_health_checks(managed: ManagedServerThread) -> None:
    http = managed.http()
    assert http.get("/api/health/checks/alarms").json() == {"status": "ok"}
    assert http.get("/api/aliveness-test/%2F").json() == {"status": "ok"}


def test_connections_channels_and_consumers(managed: ManagedServerThread) -> None:
    connection = managed.connect()
    channel = connection.channel()
    channel.basic_qos(prefetch_count=7)
    channel.queue_declare("watched")
    channel.basic_consume("watched", lambda *args: None, consumer_tag="ctag-1")
    http = managed.http()

    [listed] = http.get("/api/connections").json()
    assert (listed["user"], listed["vhost"], listed["channels"]) == ("guest", "/", 1)
    [chan] = http.get("/api/channels").json()
    assert (chan["number"], chan["consumer_count"], chan["prefetch_count"]) == (1, 1, 7)
    assert chan["name"] == f"{listed['name']} (1)"
    [consumer] = http.get("/api/consumers/%2F").json()
    assert consumer["consumer_tag"] == "ctag-1"
    assert consumer["queue"] == {"name": "watched", "vhost": "/"}
    assert (consumer["ack_required"], consumer["prefetch_count"]) == (True, 7)
    assert http.get("/api/consumers/other").json() == []
    # A management-tagged user who is not the owner sees no one else's connections.
    assert managed.http("limited", "pw").get("/api/connections").json() == []
    connection.close()


def test_a_script_gets_no_challenge_so_the_browser_opens_no_dialog(managed: ManagedServerThread) -> None:
    refused = managed.http("guest", "wrong").get("/api/whoami")
    assert refused.headers["www-authenticate"] == 'Basic realm="RabbitMQ Management"'
    scripted = managed.http("guest", "wrong").get("/api/whoami", headers={"X-Requested-With": "XMLHttpRequest"})
    assert scripted.status_code == 401 and "www-authenticate" not in scripted.headers
    assert scripted.json() == {"error": "not_authorized", "reason": "Login failed"}


def test_the_alarms_health_check_fails_while_the_memory_alarm_is_on(managed: ManagedServerThread) -> None:
    http = managed.http()
    assert http.get("/api/health/checks/alarms").json() == {"status": "ok"}
    assert managed.server is not None
    managed.call(managed.server._memory_alarm_changed, True)
    response = http.get("/api/health/checks/alarms")
    assert response.status_code == 503
    assert response.json()["alarms"] == [{"node": "amqlite", "resource": "memory"}]
    metrics = httpx.get(f"http://127.0.0.1:{managed.prometheus_port}/metrics").text
    assert "rabbitmq_alarms_memory_used_watermark 1.0" in metrics
    managed.call(managed.server._memory_alarm_changed, False)
    assert http.get("/api/health/checks/alarms").status_code == 200
