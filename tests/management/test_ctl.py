"""amqlite ctl against a running broker's management API."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pika
import pytest

from amqlite import ctl

from .conftest import ManagedServerThread, dead_letter_setup


def run(server: ManagedServerThread, *args: str, user: str = "guest:guest") -> str:
    out = io.StringIO()
    code = ctl.main(["--url", f"http://{user}@127.0.0.1:{server.management_port}", *args], out=out)
    assert code == 0, out.getvalue()
    return out.getvalue()


def test_list_as_a_table_and_as_json(managed: ManagedServerThread) -> None:
    connection = managed.connect()
    channel = connection.channel()
    channel.queue_declare("tasks")
    channel.basic_publish("", "tasks", b"x")
    channel.queue_declare("tasks", passive=True)
    lines = run(managed, "list", "queues").splitlines()
    assert lines[0].split() == ["vhost", "name", "messages", "messages_ready", "messages_unacknowledged", "consumers"]
    assert lines[1].split() == ["/", "tasks", "1", "1", "0", "0"]
    rows = json.loads(run(managed, "--format", "json", "list", "queues"))
    assert [(r["name"], r["messages"]) for r in rows] == [("tasks", 1)]
    assert "tasks" in run(managed, "list", "bindings")
    assert run(managed, "status").splitlines()[0].startswith("amqlite ")
    assert run(managed, "purge", "tasks") == "purged tasks\n"
    assert channel.queue_declare("tasks", passive=True).method.message_count == 0
    assert run(managed, "delete", "queue", "tasks") == "deleted queue tasks\n"
    assert "tasks" not in run(managed, "list", "queues")
    connection.close()


def test_redrive_moves_with_a_limit(managed: ManagedServerThread) -> None:
    connection = managed.connect()
    channel = connection.channel()
    channel.queue_declare("parked")
    channel.queue_declare("retry-here")
    for n in range(7):
        channel.basic_publish("", "parked", b"m%d" % n)
    assert run(managed, "redrive", "parked", "--to", "retry-here", "--limit", "5") == \
        "moved 5 messages from parked to retry-here\n"
    assert channel.queue_declare("retry-here", passive=True).method.message_count == 5
    assert channel.queue_declare("parked", passive=True).method.message_count == 2
    connection.close()


def test_browse_filter_redrive_at_a_rate_and_delete_dead_letters(managed: ManagedServerThread,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ctl, "POLL", 0.05)
    connection = managed.connect()
    channel = connection.channel()
    dead_letter_setup(channel, "orders", "dead")
    for n in range(6):
        channel.basic_publish("", "orders", b"order %d" % n,
                              pika.BasicProperties(headers={"customer": "acme" if n % 2 else "initech"}))
        method, _, _ = channel.basic_get("orders")
        channel.basic_reject(method.delivery_tag, requeue=False)
    lines = run(managed, "browse", "dead", "--header", "customer=acme").splitlines()
    assert lines[0].split() == ["position", "routing_key", "reason", "died_in", "deaths", "redrives", "headers",
                                "payload"]
    assert [line.split()[:5] for line in lines[1:4]] == [[str(n), "orders", "rejected", "orders", "1"]
                                                         for n in (1, 3, 5)]
    assert lines[1].endswith("customer=acme  order 1") and lines[-1] == "3 of 6 ready messages"
    assert "more from --offset 2" in run(managed, "browse", "dead", "--limit", "2").splitlines()[-1]
    page = json.loads(run(managed, "--format", "json", "browse", "dead", "--offset", "4"))
    assert [m["payload"] for m in page["messages"]] == ["order 4", "order 5"]

    assert run(managed, "redrive", "dead", "--header", "customer=acme", "--dry-run") == \
        "3 messages of dead would move back to the queues they died in\n"
    assert run(managed, "redrive", "dead", "--header", "customer=acme", "--rate", "20") == \
        "moved 3 messages from dead back to the queues they died in\n"
    assert [channel.basic_get("orders", auto_ack=True)[2] for _ in range(3)] == [b"order 1", b"order 3", b"order 5"]
    jobs = run(managed, "list", "redrives").splitlines()
    assert jobs[-1].split()[:8] == ["/", "2", "dead", "redrive", "done", "3", "3", "0"]

    assert run(managed, "redrive", "dead", "--died-in", "orders", "--to", "orders", "--limit", "1") == \
        "moved 1 messages from dead to orders\n"
    assert run(managed, "delete-messages", "dead", "--reason", "rejected") == "deleted 2 messages from dead\n"
    assert channel.queue_declare("dead", passive=True).method.message_count == 0
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    assert ctl.main(["--url", f"http://guest:guest@127.0.0.1:{managed.management_port}", "delete-messages",
                     "dead"], out=out) == 1
    assert "--all" in err.getvalue()
    connection.close()


def test_export_import_and_users(managed: ManagedServerThread, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ctl, "BATCH", 1)  # one definition per request: slices keep the order an import needs
    http = managed.http()
    http.put("/api/vhosts/shop")
    http.put("/api/exchanges/shop/orders", json={"type": "direct"})
    http.put("/api/queues/shop/paid", json={"durable": True})
    http.post("/api/bindings/shop/e/orders/q/paid", json={"routing_key": "paid"})
    path = tmp_path / "defs.json"
    assert run(managed, "export", str(path)) == f"exported definitions to {path}\n"
    exported = json.loads(path.read_text())
    http.delete("/api/vhosts/shop")
    assert run(managed, "import", str(path)).startswith("imported ")
    assert http.get("/api/bindings/shop").json()[-1]["routing_key"] == "paid"

    monkeypatch.setattr(sys, "stdin", io.StringIO("hunter2\n"))
    assert run(managed, "add-user", "frank", "--tags", "management") == "user frank set\n"
    assert run(managed, "--vhost", "shop", "set-permissions", "frank") == "frank may open shop\n"
    assert json.loads(run(managed, "--format", "json", "list", "vhosts", user="frank:hunter2"))[0]["name"] == "shop"
    assert exported["vhosts"]


def test_failures_are_one_line_and_exit_1(managed: ManagedServerThread) -> None:
    def failing(*args: str) -> str:
        result = subprocess.run([sys.executable, "-m", "amqlite", "ctl", *args], capture_output=True, text=True,
                                timeout=30)
        assert result.returncode == 1 and result.stdout == ""
        lines = result.stderr.splitlines()
        assert len(lines) == 1, result.stderr
        return lines[0]

    assert failing("--url", "http://guest:guest@127.0.0.1:1", "status") == \
        "amqlite ctl: cannot reach http://127.0.0.1:1: Connection refused"
    url = f"http://guest:guest@127.0.0.1:{managed.management_port}"
    assert failing("--url", url, "purge", "nowhere") == \
        "amqlite ctl: DELETE /api/queues/%2F/nowhere/contents: 404 Object Not Found: Not Found"
    assert failing("--url", url.replace("guest:guest", "guest:bad"), "list", "queues") == \
        "amqlite ctl: GET /api/queues: 401 not_authorized: Login failed"


def test_progress_bar_only_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    shown, piped = Terminal(), io.StringIO()
    for stream in (shown, piped):
        bar = ctl.Progress(4, "redrive", stream)
        bar.update(2)
        bar.update(4)
        bar.close()
    assert shown.getvalue().endswith(f"\rredrive [{'#' * 30}] 4/4\n") and "[" + "#" * 15 + " " * 15 + "] 2/4" in shown.getvalue()
    assert piped.getvalue() == ""


def test_streams_and_their_groups_offsets_and_lag_show_in_the_api_and_ctl(managed: ManagedServerThread) -> None:
    connection = managed.connect()
    channel = connection.channel()
    channel.confirm_delivery()
    for partition in ("orders-0", "orders-1"):
        channel.queue_declare(partition, durable=True, arguments={"x-queue-type": "stream"})
    for n in range(10):
        channel.basic_publish("", "orders-0" if n < 6 else "orders-1", b"order")
    worker = managed.connect().channel()
    worker.basic_qos(prefetch_count=10)
    got = []
    worker.basic_consume("orders-0", lambda ch, method, props, body: got.append(method.delivery_tag),
                         arguments={"x-stream-group": "shipping", "x-stream-offset": "first"})
    while len(got) < 6:
        worker.connection.process_data_events(time_limit=0.05)
    worker.basic_ack(got[3], multiple=True)  # offsets 0-3 done
    worker.connection.process_data_events(time_limit=0.1)

    stream = managed.http().get("/api/queues/%2F/orders-0").json()
    assert (stream["type"], stream["messages"]) == ("stream", 6)
    section = stream["stream"]
    assert (section["first_offset"], section["last_offset"], section["segments"]) == (0, 5, 1)
    assert [(g["group"], g["committed_offset"], g["lag"]) for g in section["groups"]] == [("shipping", 4, 2)]
    assert section["groups"][0]["active_consumer"]["channel"] == 1
    lines = run(managed, "list", "groups").splitlines()
    assert lines[0].split() == ["vhost", "stream", "group", "committed_offset", "lag"]
    assert lines[1].split() == ["/", "orders-0", "shipping", "4", "2"]
    assert len(lines) == 2  # orders-1 has no group yet
    worker.connection.close()
    connection.close()
