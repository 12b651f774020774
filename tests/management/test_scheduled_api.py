"""Scheduled messages over HTTP: what a delayed exchange holds for pika
publishers, listed (paged, filtered), cancelled one at a time or by filter,
rescheduled and fired now; read permission on the exchange lists, write
permission changes."""

from __future__ import annotations

import json
import time
from typing import Any

import pika

from .conftest import ManagedServerThread

SCHEDULED = "/api/exchanges/%2F/later/scheduled"


def _hold(managed: ManagedServerThread, count: int) -> Any:
    channel = managed.connect().channel()
    channel.exchange_declare("later", "x-delayed-message", durable=True, arguments={"x-delayed-type": "direct"})
    channel.queue_declare("due", durable=True)
    channel.queue_bind("due", "later", "a")
    channel.queue_bind("due", "later", "b")
    channel.confirm_delivery()
    for n in range(count):
        channel.basic_publish("later", "ab"[n % 2], b"m%d" % n, pika.BasicProperties(
            delivery_mode=2, headers={"x-delay": 3_600_000 + 1000 * n, "tenant": f"t{n % 3}"}))
    return channel


def test_list_cancel_reschedule_and_fire_over_http(managed: ManagedServerThread) -> None:
    channel = _hold(managed, 12)
    http = managed.http()
    first = http.get(SCHEDULED, params={"limit": 5}).json()
    assert first["held"] == 12 and len(first["messages"]) == 5
    assert [m["payload"] for m in first["messages"]] == ["m0", "m1", "m2", "m3", "m4"]
    assert 3_500_000 < first["messages"][0]["due_in_ms"] <= 3_600_000
    rest = http.get(SCHEDULED, params={"after": first["next"], "limit": 50}).json()
    assert [m["payload"] for m in rest["messages"]] == [f"m{n}" for n in range(5, 12)] and rest["next"] is None
    ids = [m["id"] for m in first["messages"] + rest["messages"]]
    by_key = http.get(SCHEDULED, params={"routing_key": "b", "header.tenant": "t0"}).json()
    assert [m["payload"] for m in by_key["messages"]] == ["m3", "m9"]
    due_from = first["messages"][0]["due"] + 5.5
    in_range = http.get(SCHEDULED, params={"due_from": due_from, "due_to": due_from + 2}).json()
    assert [m["payload"] for m in in_range["messages"]] == ["m6", "m7"]

    assert http.delete(f"{SCHEDULED}/{ids[0]}").status_code == 200
    assert http.delete(f"{SCHEDULED}/{ids[0]}").status_code == 404
    cancelled = http.post(f"{SCHEDULED}/cancel", json={"filter": {"headers": {"tenant": "t1"}}}).json()
    assert cancelled == {"cancelled": 4}  # m1, m4, m7, m10
    assert http.post(f"{SCHEDULED}/{ids[2]}/reschedule", json={"delay": 7_200_000}).status_code == 200
    assert http.post(f"{SCHEDULED}/{ids[2]}/reschedule", json={"delay": "soon"}).status_code == 400
    assert http.post(f"{SCHEDULED}/{ids[3]}/fire").status_code == 200
    assert http.post(f"{SCHEDULED}/{ids[1]}/fire").status_code == 404  # cancelled
    deadline = time.monotonic() + 10
    while (got := channel.basic_get("due", auto_ack=True))[0] is None:
        assert time.monotonic() < deadline, "m3 never fired"
        time.sleep(0.02)
    assert got[2] == b"m3"
    left = http.get(SCHEDULED, params={"limit": 50}).json()
    assert left["held"] == 6 and [m["payload"] for m in left["messages"]] == ["m2", "m5", "m6", "m8", "m9", "m11"]
    assert left["messages"][0]["due_in_ms"] > 7_100_000
    assert http.get("/api/exchanges/%2F/amq.direct/scheduled").status_code == 400  # not a delayed exchange


def test_listing_needs_read_and_changes_need_write_on_the_exchange(managed: ManagedServerThread) -> None:
    _hold(managed, 2)
    admin = managed.http()
    assert admin.put("/api/users/reader", json={"password": "pw", "tags": "management"}).status_code in (201, 204)
    assert admin.put("/api/permissions/%2F/reader", json={"configure": "", "write": "", "read": ".*"}).status_code \
        in (201, 204)
    reader = managed.http("reader", "pw")
    listed = reader.get(SCHEDULED).json()["messages"]
    assert len(listed) == 2
    assert reader.delete(f"{SCHEDULED}/{listed[0]['id']}").status_code == 401
    assert reader.post(f"{SCHEDULED}/cancel", json={}).status_code == 401
    assert reader.post(f"{SCHEDULED}/{listed[0]['id']}/fire").status_code == 401
    assert admin.get(SCHEDULED).json()["held"] == 2


def test_ctl_scheduled_list_cancel_reschedule_and_fire(managed: ManagedServerThread) -> None:
    from .test_ctl import run

    channel = _hold(managed, 6)
    listed = json.loads(run(managed, "scheduled", "list", "later", "--format", "json", "--limit", "100"))
    ids = [m["id"] for m in listed["messages"]]
    assert len(ids) == 6
    table = run(managed, "scheduled", "list", "later", "--limit", "2", "--routing-key", "a")
    assert "m0" in table and "m2" in table and "m1" not in table and f"more with --after {ids[2]}" in table
    assert "3 of 6 held" not in table and "2 of 6 held" in table
    assert run(managed, "scheduled", "cancel", "later", ids[0]) == f"cancel {ids[0]}: done\n"
    assert run(managed, "scheduled", "cancel", "later", "--header", "tenant=t1") == "cancelled 2 held messages\n"
    run(managed, "scheduled", "reschedule", "later", ids[2], "--delay", "7200000")
    run(managed, "scheduled", "fire", "later", ids[3])
    deadline = time.monotonic() + 10
    while (got := channel.basic_get("due", auto_ack=True))[0] is None:
        assert time.monotonic() < deadline, "m3 never fired"
        time.sleep(0.02)
    assert got[2] == b"m3"
    left = json.loads(run(managed, "scheduled", "list", "later", "--format", "json"))
    assert [m["payload"] for m in left["messages"]] == ["m2", "m5"] and left["messages"][0]["due_in_ms"] > 7_100_000


def test_a_message_id_is_the_id_over_http_and_a_change_by_it_applies_to_every_copy(
        managed: ManagedServerThread) -> None:
    channel = managed.connect().channel()
    channel.exchange_declare("later", "x-delayed-message", durable=True, arguments={"x-delayed-type": "direct"})
    channel.queue_declare("due", durable=True)
    channel.queue_bind("due", "later", "k")
    channel.confirm_delivery()
    for body, message_id in ((b"a", "invoice/9"), (b"b", "invoice/9"), (b"c", "trial 3"), (b"d", None)):
        channel.basic_publish("later", "k", body, pika.BasicProperties(
            delivery_mode=2, message_id=message_id, headers={"x-delay": 3_600_000}))
    http = managed.http()
    listed = http.get(SCHEDULED).json()["messages"]
    assert [m["id"] for m in listed[:3]] == ["invoice/9", "invoice/9", "trial 3"]
    assert listed[3]["id"] == listed[3]["number"] and len({m["number"] for m in listed}) == 4
    assert http.delete(f"{SCHEDULED}/{listed[0]['number']}").status_code == 404  # its id is its message_id
    moved = http.post(f"{SCHEDULED}/invoice%2F9/reschedule", json={"delay": 7_200_000})
    assert moved.status_code == 200 and moved.json() == {"changed": 2}
    assert [m["due_in_ms"] > 7_100_000 for m in http.get(SCHEDULED).json()["messages"]] == [True, True, False, False]
    assert http.post(f"{SCHEDULED}/trial%203/fire").json() == {"changed": 1}
    deadline = time.monotonic() + 10
    while (got := channel.basic_get("due", auto_ack=True))[0] is None:
        assert time.monotonic() < deadline, "trial 3 never fired"
        time.sleep(0.02)
    assert got[1].message_id == "trial 3"
    assert http.delete(f"{SCHEDULED}/invoice%2F9").json() == {"changed": 2}
    assert http.delete(f"{SCHEDULED}/invoice%2F9").status_code == 404
    assert http.delete(f"{SCHEDULED}/{listed[3]['id']}").json() == {"changed": 1}
    assert http.get(SCHEDULED).json() == {"held": 0, "next": None, "messages": []}


def _retrying(managed: ManagedServerThread, count: int) -> Any:
    """``count`` messages nacked once on a queue with an hour's retry delay
    and a dead-letter queue; message_id "job-N"."""
    channel = managed.connect().channel()
    channel.queue_declare("dead", durable=True)
    channel.queue_declare("work", durable=True, arguments={
        "x-delayed-retry-min": 3_600_000, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dead"})
    channel.confirm_delivery()
    for n in range(count):
        channel.basic_publish("", "work", b"w%d" % n, pika.BasicProperties(
            delivery_mode=2, message_id=f"job-{n}" if n else None, headers={"tenant": f"t{n % 2}"}))
    for _ in range(count):
        method, _, _ = channel.basic_get("work")
        channel.basic_nack(method.delivery_tag, requeue=True)
    return channel


def test_a_queues_retries_are_listed_cancelled_rescheduled_and_fired_over_http(managed: ManagedServerThread) -> None:
    channel = _retrying(managed, 4)
    http = managed.http()
    path = "/api/queues/%2F/work/scheduled"
    listed = http.get(path).json()
    assert listed["held"] == 4 and listed["next"] is None
    assert [m["payload"] for m in listed["messages"]] == ["w0", "w1", "w2", "w3"]
    assert [m["id"] for m in listed["messages"]][1:] == ["job-1", "job-2", "job-3"]
    assert listed["messages"][0]["id"] == listed["messages"][0]["number"]  # no message_id: its number
    assert all(3_500_000 < m["due_in_ms"] <= 3_600_000 and m["delivery_count"] == 1 for m in listed["messages"])
    page = http.get(path, params={"limit": 1, "header.tenant": "t1"}).json()
    assert [m["payload"] for m in page["messages"]] == ["w1"] and page["next"] is not None
    assert [m["payload"] for m in http.get(path, params={"after": page["next"], "header.tenant": "t1"}).json()[
        "messages"]] == ["w3"]
    # Cancel: dead-lettered (rejected), as a reject without requeue.
    assert http.delete(f"{path}/job-1").json() == {"changed": 1}
    assert http.delete(f"{path}/job-1").status_code == 404
    method, properties, body = channel.basic_get("dead", auto_ack=True)
    assert body == b"w1" and properties.headers["x-death"][0]["reason"] == "rejected"
    assert http.post(f"{path}/job-2/reschedule", json={"delay": 7_200_000}).json() == {"changed": 1}
    assert http.post(f"{path}/{listed['messages'][0]['number']}/fire").json() == {"changed": 1}
    deadline = time.monotonic() + 10
    while (got := channel.basic_get("work", auto_ack=True))[0] is None:
        assert time.monotonic() < deadline, "w0 never fired"
        time.sleep(0.02)
    assert got[2] == b"w0" and got[0].redelivered
    left = http.get(path).json()
    assert [(m["id"], m["due_in_ms"] > 7_100_000) for m in left["messages"]] == [("job-2", True), ("job-3", False)]
    assert channel.queue_declare("work", passive=True).method.message_count == 0
    assert http.get("/api/queues/%2F/nowhere/scheduled").status_code == 404
    from .test_metrics import scrape

    samples = scrape(managed, "/metrics")
    changes = {labels: value for (name, labels), value in samples.items() if name == "amqlite_scheduled_changes_total"}
    assert changes == {(("action", "cancelled"), ("kind", "retry")): 1, (("action", "rescheduled"), ("kind", "retry")): 2,
                       (("action", "cancelled"), ("kind", "held")): 0, (("action", "rescheduled"), ("kind", "held")): 0}
    assert samples[("amqlite_queue_messages_delayed", ())] == 2  # job-2, job-3 still waiting


def test_ctl_scheduled_queue_retries(managed: ManagedServerThread) -> None:
    from .test_ctl import run

    channel = _retrying(managed, 3)
    table = run(managed, "scheduled", "list", "work", "--queue")
    assert "job-1" in table and "job-2" in table and "3 of 3 held" in table
    assert run(managed, "scheduled", "cancel", "work", "job-1", "--queue") == "cancel job-1: done\n"
    run(managed, "scheduled", "fire", "work", "job-2", "--queue")
    deadline = time.monotonic() + 10
    while (got := channel.basic_get("work", auto_ack=True))[0] is None:
        assert time.monotonic() < deadline, "job-2 never fired"
        time.sleep(0.02)
    assert got[1].message_id == "job-2" and channel.basic_get("dead", auto_ack=True)[2] == b"w1"
    left = json.loads(run(managed, "scheduled", "list", "work", "--queue", "--format", "json"))
    assert [m["payload"] for m in left["messages"]] == ["w0"]


def test_a_due_range_lists_in_due_order_page_by_page(managed: ManagedServerThread) -> None:
    """With due_from or due_to, a listing goes in due order (the index by
    due time) and "next" is "DUE/NUMBER"; a cancel by due range too."""
    _hold(managed, 6)  # m0..m5 due an hour + n s ahead
    http = managed.http()
    listed = http.get(SCHEDULED).json()["messages"]
    start = listed[0]["due"]
    assert http.post(f"{SCHEDULED}/{listed[1]['id']}/reschedule", json={"due": start + 10}).status_code == 200
    assert http.post(f"{SCHEDULED}/{listed[4]['id']}/reschedule", json={"due": start - 1}).status_code == 200
    seen, after = [], "0"
    while after is not None:
        page = http.get(SCHEDULED, params={"due_from": start - 5, "due_to": start + 60, "limit": 2,
                                           "after": after}).json()
        seen += [m["payload"] for m in page["messages"]]
        after = page["next"]
    assert seen == ["m4", "m0", "m2", "m3", "m5", "m1"]
    assert http.get(SCHEDULED, params={"due_from": start, "after": "soon"}).status_code == 400
    cancelled = http.post(f"{SCHEDULED}/cancel", json={"filter": {"due_from": start + 1.5, "due_to": start + 20}})
    assert cancelled.json() == {"cancelled": 4}  # m2, m3, m5, m1
    assert [m["payload"] for m in http.get(SCHEDULED).json()["messages"]] == ["m0", "m4"]
