"""rabbitmqadmin, as shipped with RabbitMQ, against amqlite unchanged."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pika
import pytest

from .conftest import ManagedServerThread

RABBITMQADMIN = shutil.which("rabbitmqadmin")
pytestmark = pytest.mark.skipif(RABBITMQADMIN is None, reason="rabbitmqadmin is not installed")


def admin(server: ManagedServerThread, *args: str) -> str:
    result = subprocess.run([RABBITMQADMIN, "-H", "127.0.0.1", "-P", str(server.management_port),  # type: ignore[list-item]
                             "-u", "guest", "-p", "guest", "-f", "tsv", *args],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_list_queues_and_show_overview(managed: ManagedServerThread) -> None:
    connection = managed.connect()
    channel = connection.channel()
    channel.queue_declare("listed")
    channel.basic_publish("", "listed", b"x")
    channel.queue_declare("listed", passive=True)
    assert admin(managed, "list", "queues", "name", "messages").split("\n")[1:3] == ["listed\t1", ""]
    assert "amqlite" in admin(managed, "show", "overview")
    connection.close()


def test_declare_purge_delete_queue(managed: ManagedServerThread) -> None:
    admin(managed, "declare", "queue", "name=made", "durable=true")
    connection = managed.connect()
    channel = connection.channel()
    channel.basic_publish("", "made", b"x")
    assert channel.queue_declare("made", passive=True).method.message_count == 1
    admin(managed, "purge", "queue", "name=made")
    assert channel.queue_declare("made", passive=True).method.message_count == 0
    admin(managed, "delete", "queue", "name=made")
    assert "made" not in admin(managed, "list", "queues", "name")
    connection.close()


def test_declare_exchange_and_binding_publish_get_delete(managed: ManagedServerThread) -> None:
    admin(managed, "declare", "exchange", "name=events", "type=topic")
    admin(managed, "declare", "queue", "name=audit")
    admin(managed, "declare", "binding", "source=events", "destination=audit", "routing_key=order.*")
    assert "events\taudit\tqueue\torder.*" in admin(managed, "list", "bindings", "source", "destination",
                                                     "destination_type", "routing_key")
    assert admin(managed, "publish", "exchange=events", "routing_key=order.paid", "payload=hello") == "Message published\n"
    assert "NOT routed" in admin(managed, "publish", "exchange=events", "routing_key=user.new", "payload=dropped")
    got = admin(managed, "get", "queue=audit", "ackmode=ack_requeue_false", "count=5")
    assert "hello" in got and "dropped" not in got
    assert admin(managed, "list", "queues", "name", "messages").split("\n")[1] == "audit\t0"
    admin(managed, "delete", "binding", "source=events", "destination=audit", "destination_type=queue",
          "properties_key=order.%2A")
    assert "order.*" not in admin(managed, "list", "bindings", "routing_key")
    admin(managed, "delete", "exchange", "name=events")
    assert "events" not in admin(managed, "list", "exchanges", "name")


def test_export_and_import(managed: ManagedServerThread, tmp_path: Path) -> None:
    admin(managed, "declare", "exchange", "name=billing", "type=direct")
    admin(managed, "declare", "queue", "name=invoices", "durable=true", 'arguments={"x-max-length": 100}')
    admin(managed, "declare", "binding", "source=billing", "destination=invoices", "routing_key=new")
    exported = tmp_path / "defs.json"
    assert "Exported definitions" in admin(managed, "export", str(exported))
    assert json.loads(exported.read_text())["queues"][0]["arguments"] == {"x-max-length": 100}
    admin(managed, "delete", "queue", "name=invoices")
    admin(managed, "delete", "exchange", "name=billing")
    assert "Uploaded definitions" in admin(managed, "import", str(exported))
    assert "billing\tinvoices\tnew" in admin(managed, "list", "bindings", "source", "destination", "routing_key")


def test_declare_a_grouped_queue_and_read_its_groups_and_ages(managed: ManagedServerThread) -> None:
    """Issue 25: a queue with message groups and a consumer timeout declared
    by rabbitmqadmin; its groups and the oldest unacked age read back."""
    admin(managed, "declare", "queue", "name=orders",
          'arguments={"x-message-group-header": "customer", "x-consumer-timeout": 3600000}')
    connection = managed.connect()
    channel = connection.channel()
    for customer in ("acme", "acme", "globex"):
        channel.basic_publish("", "orders", b"x", pika.BasicProperties(headers={"customer": customer}))
    channel.basic_get("orders")  # acme's first, unacked
    shown = admin(managed, "list", "queues", "name", "message_groups.groups", "oldest_unacked_seconds")
    name, groups, oldest = shown.split("\n")[1].split("\t")
    assert (name, groups) == ("orders", "2") and float(oldest) >= 0
    connection.close()
