"""The dead-letter workbench over HTTP: messages dead-lettered by pika
clients (rejected, expired, past their delivery limit) browsed, filtered,
redriven as a rate-limited job, counted and deleted."""

from __future__ import annotations

import time
from typing import Any

import pika
import pytest

from .conftest import ManagedServerThread

MESSAGES = "/api/queues/%2F/dead/messages"


def _wait_for(condition: Any, timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
    return found


def _dead_letters(managed: ManagedServerThread) -> pika.adapters.blocking_connection.BlockingChannel:
    """"dead" gets two messages rejected in "work", one expired in "short"
    and one past its delivery limit in "limited", each tagged by a header."""
    connection = managed.connect()
    channel = connection.channel()
    channel.exchange_declare("dlx", "fanout")
    channel.queue_declare("dead")
    channel.queue_bind("dead", "dlx")
    channel.queue_declare("work", arguments={"x-dead-letter-exchange": "dlx"})
    channel.queue_declare("short", arguments={"x-dead-letter-exchange": "dlx", "x-message-ttl": 10})
    channel.queue_declare("limited", arguments={"x-dead-letter-exchange": "dlx", "x-delivery-limit": 1})
    for n in range(2):
        channel.basic_publish("", "work", b"rejected %d" % n, pika.BasicProperties(headers={"tenant": f"t{n}"}))
        method, _, _ = channel.basic_get("work")
        channel.basic_reject(method.delivery_tag, requeue=False)
    channel.basic_publish("", "short", b"expired", pika.BasicProperties(headers={"tenant": "t0"}))
    _wait_for(lambda: channel.queue_declare("dead", passive=True).method.message_count == 3)
    channel.basic_publish("", "limited", b"limited", pika.BasicProperties(headers={"tenant": "t1"}))
    for _ in range(2):
        method, _, _ = channel.basic_get("limited")
        channel.basic_nack(method.delivery_tag, requeue=True)
    _wait_for(lambda: channel.queue_declare("dead", passive=True).method.message_count == 4)
    return channel


def test_browse_shows_each_dead_letter_with_its_history_and_changes_nothing(managed: ManagedServerThread) -> None:
    channel = _dead_letters(managed)
    http = managed.http()
    page = http.get(MESSAGES).json()
    assert page["messages_ready"] == 4 and page["next"] is None
    shown = page["messages"]
    assert [m["payload"] for m in shown] == ["rejected 0", "rejected 1", "expired", "limited"]
    assert [m["x_death"][0]["reason"] for m in shown] == ["rejected", "rejected", "expired", "delivery_limit"]
    assert [m["x_death"][0]["queue"] for m in shown] == ["work", "work", "short", "limited"]
    assert shown[0]["properties"]["headers"]["tenant"] == "t0" and shown[0]["position"] == 0
    assert not any(m["redelivered"] for m in shown)

    second = http.get(MESSAGES, params={"offset": 1, "limit": 2}).json()
    assert [m["payload"] for m in second["messages"]] == ["rejected 1", "expired"] and second["next"] == 3

    def payloads(**params: Any) -> list[str]:
        response = http.get(MESSAGES, params=params)
        assert response.status_code == 200, response.text
        return [m["payload"] for m in response.json()["messages"]]

    assert payloads(reason="expired") == ["expired"]
    assert payloads(reason="delivery_limit") == ["limited"]
    assert payloads(queue="work") == ["rejected 0", "rejected 1"]
    assert payloads(**{"header.tenant": "t1"}) == ["rejected 1", "limited"]
    assert payloads(routing_key="short") == ["expired"]
    assert payloads(min_deaths=2) == []
    assert payloads(since=int(time.time()) - 60, until=int(time.time()) + 60, queue="limited") == ["limited"]
    assert payloads(until="2001-01-01T00:00:00Z") == []
    assert http.get(MESSAGES, params={"reason": "bored"}).json()["reason"].startswith("reason must be")
    assert http.get(MESSAGES, params={"limit": 0}).status_code == 400
    assert http.get("/api/queues/%2F/nowhere/messages").status_code == 404
    assert managed.http("limited", "pw").get(MESSAGES).status_code == 401

    # The queue is as it was: same order, nothing redelivered.
    got = []
    while (found := channel.basic_get("dead", auto_ack=True))[0] is not None:
        got.append((found[2], found[0].redelivered))
    assert got == [(b"rejected 0", False), (b"rejected 1", False), (b"expired", False), (b"limited", False)]
    channel.connection.close()


def test_a_redrive_job_moves_what_matches_and_reports_its_progress(managed: ManagedServerThread) -> None:
    channel = _dead_letters(managed)
    http = managed.http()
    dry = http.post("/api/queues/%2F/dead/redrives", json={"filter": {"reason": "rejected"}, "dry_run": True})
    assert dry.status_code == 200 and (dry.json()["matched"], dry.json()["done"]) == (2, 0)

    started = http.post("/api/queues/%2F/dead/redrives", json={"filter": {"reason": "rejected"}, "rate": 20})
    assert started.status_code == 202, started.text
    job = started.json()
    assert job["state"] == "running" and started.headers["location"] == f"/api/redrives/%2F/{job['id']}"
    done = _wait_for(lambda: (j := http.get(started.headers["location"]).json())["state"] == "done" and j)
    assert (done["matched"], done["done"], done["skipped"]) == (2, 2, 0)
    assert job["id"] in [j["id"] for j in http.get("/api/redrives").json()]
    assert [j["id"] for j in http.get("/api/redrives/%2F").json()] == [dry.json()["id"], job["id"]]

    method, properties, body = channel.basic_get("work", auto_ack=True)
    assert body == b"rejected 0" and properties.headers["x-redrive-count"] == 1
    assert abs(properties.headers["x-last-redrive"].timestamp() - time.time()) < 60
    assert channel.basic_get("work", auto_ack=True)[2] == b"rejected 1"
    assert channel.queue_declare("dead", passive=True).method.message_count == 2

    to_named = http.post("/api/queues/%2F/dead/redrives", json={"filter": {"queue": "short"}, "to": "nowhere"})
    assert to_named.status_code == 404
    assert http.post("/api/queues/%2F/dead/redrives", json={"rate": 0}).status_code == 400

    deleted = http.post("/api/queues/%2F/dead/messages/delete", json={"filter": {"reason": "expired"}})
    assert deleted.status_code == 200 and deleted.json()["deleted"] == 1
    assert [m["payload"] for m in http.get(MESSAGES).json()["messages"]] == ["limited"]
    assert http.post("/api/queues/%2F/dead/messages/delete", json={}).status_code == 400
    channel.connection.close()


def test_a_slow_redrive_can_be_cancelled_and_keeps_what_it_moved(managed: ManagedServerThread) -> None:
    connection = managed.connect()
    channel = connection.channel()
    channel.queue_declare("dead")
    channel.queue_declare("target")
    for n in range(50):
        channel.basic_publish("", "dead", b"%d" % n)
    http = managed.http()
    job = http.post("/api/queues/%2F/dead/redrives", json={"to": "target", "rate": 5}).json()
    location = f"/api/redrives/%2F/{job['id']}"
    _wait_for(lambda: http.get(location).json()["done"] >= 2)
    refused = managed.http("monitor", "pw").delete(location)
    assert refused.status_code == 401 and "another user" in refused.json()["reason"]
    cancelled = http.delete(location).json()
    assert cancelled["state"] == "cancelled"
    time.sleep(0.5)
    after = http.get(location).json()
    assert after["done"] == cancelled["done"] < 10  # five a second: far from all fifty
    moved = channel.queue_declare("target", passive=True).method.message_count
    assert moved == after["done"]
    assert channel.queue_declare("dead", passive=True).method.message_count == 50 - moved
    assert http.delete(f"/api/redrives/%2F/{job['id'] + 100}").status_code == 404
    connection.close()


@pytest.mark.parametrize("body", [{"filter": []}, {"to": 5}, {"limit": -1}, {"dry_run": "yes"},
                                  {"filter": {"min_deaths": "many"}}])
def test_a_bad_redrive_request_is_refused_and_moves_nothing(managed: ManagedServerThread, body: Any) -> None:
    connection = managed.connect()
    channel = connection.channel()
    channel.queue_declare("dead")
    channel.basic_publish("", "dead", b"x")
    response = managed.http().post("/api/queues/%2F/dead/redrives", json=body)
    assert response.status_code == 400 and response.json()["error"] == "bad_request"
    assert channel.queue_declare("dead", passive=True).method.message_count == 1
    connection.close()


def test_workbench_jobs_are_counted_in_prometheus(managed: ManagedServerThread) -> None:
    from .test_metrics import scrape

    channel = _dead_letters(managed)
    http = managed.http()
    idle = scrape(managed, "/metrics")
    assert idle[("amqlite_workbench_messages_total", (("action", "redrive"),))] == 0
    channel.queue_declare("held")
    channel.queue_declare("target")
    for n in range(3):
        channel.basic_publish("", "held", b"%d" % n)
    slow = http.post("/api/queues/%2F/held/redrives", json={"to": "target", "rate": 0.001}).json()
    redrive = http.post("/api/queues/%2F/dead/redrives", json={"filter": {"reason": "rejected"}}).json()
    _wait_for(lambda: http.get(f"/api/redrives/%2F/{redrive['id']}").json()["state"] == "done")
    # One with nowhere to go: "short" is deleted, so its message is skipped.
    channel.queue_delete("short")
    skipping = http.post("/api/queues/%2F/dead/redrives", json={"filter": {"queue": "short"}}).json()
    _wait_for(lambda: http.get(f"/api/redrives/%2F/{skipping['id']}").json()["state"] == "done")
    assert http.post("/api/queues/%2F/dead/messages/delete", json={"filter": {"queue": "short"}}).json()["deleted"] == 1
    samples = scrape(managed, "/metrics")
    slow_done = http.get(f"/api/redrives/%2F/{slow['id']}").json()["done"]
    assert samples[("amqlite_workbench_messages_total", (("action", "redrive"),))] == 2 + slow_done
    assert samples[("amqlite_workbench_messages_total", (("action", "delete"),))] == 1
    assert samples[("amqlite_workbench_messages_skipped_total", (("action", "redrive"),))] == 1
    assert samples[("amqlite_workbench_jobs_running", (("action", "redrive"),))] == 1  # the slow one
    assert samples[("amqlite_workbench_jobs_running", (("action", "delete"),))] == 0
    http.delete(f"/api/redrives/%2F/{slow['id']}")
    assert scrape(managed, "/metrics")[("amqlite_workbench_jobs_running", (("action", "redrive"),))] == 0
    channel.connection.close()
