"""The core's state in RabbitMQ management JSON shapes.

Pure and synchronous: each function reads a few attributes of the core
objects when a request asks, so the AMQP hot path pays nothing for the API.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import hashlib
from typing import TYPE_CHECKING, Any, Iterator
from urllib.parse import quote

from ..core.broker import Broker
from ..core.channel import Channel
from ..core.connection import Connection
from ..core.consumer import Consumer
from ..core.exchange import Exchange
from ..core.message import Message
from ..core.groups import GroupOffset
from ..core.inflight import age, consumer_oldest, queue_oldest
from ..core.queue import Queue
from ..core.stream import Stream
from ..core.vhost import VirtualHost

if TYPE_CHECKING:
    from ..kafka.engine import KafkaConnection


def queue_info(queue: Queue, now: float) -> dict[str, Any]:
    if isinstance(queue, Stream):
        return stream_info(queue)
    ready = queue.message_count
    shown = {
        "name": queue.name,
        "vhost": queue.vhost.name,
        "durable": queue.durable,
        "auto_delete": queue.auto_delete,
        "exclusive": queue.exclusive_owner is not None,
        "arguments": dict(queue.arguments),
        "type": "classic",
        "state": "running",
        "node": "amqlite",
        "messages": ready + queue.unacked,
        "messages_ready": ready,
        "messages_unacknowledged": queue.unacked,
        "consumers": queue.consumer_count,
        "message_stats": {},
        # amqlite's own: ready messages on disk only, and messages waiting
        # for a delayed retry.
        "messages_paged": queue.paged_count,
        "messages_delayed": queue.delayed_count,
        # amqlite's own: how long the oldest unacked delivery has been out (long tasks).
        "oldest_unacked_seconds": age(queue_oldest(queue.vhost.broker, queue), now),
    }
    groups = queue.group_counts()
    if groups is not None:
        count, in_backoff, oldest = groups
        shown["message_groups"] = {"groups": count, "in_backoff": in_backoff, "oldest_group_seconds": age(oldest, now)}
    return shown


def stream_info(stream: Stream) -> dict[str, Any]:
    """A stream as RabbitMQ shows one (every retained message counts as
    ready), with amqlite's ``stream`` section: offsets, size, and each
    consumer group's committed offset and lag."""
    count = stream.message_count
    return {
        "name": stream.name,
        "vhost": stream.vhost.name,
        "durable": True,
        "auto_delete": False,
        "exclusive": False,
        "arguments": dict(stream.arguments),
        "type": "stream",
        "state": "running",
        "node": "amqlite",
        "messages": count,
        "messages_ready": count,
        "messages_unacknowledged": 0,
        "consumers": stream.consumer_count,
        "message_stats": {},
        "stream": {
            "first_offset": stream.first,
            "last_offset": stream.end - 1 if count else None,
            "bytes": stream.bytes,
            "segments": stream.segment_count,
            "groups": [group_info(stream, offset) for _, offset in sorted(stream.group_offsets.items())],
        },
    }


def group_info(stream: Stream, offset: GroupOffset) -> dict[str, Any]:
    active = offset.active
    return {
        "vhost": stream.vhost.name,
        "stream": stream.name,
        "group": offset.group,
        "committed_offset": offset.committed,
        "lag": stream.end - offset.committed,
        "active_consumer": None if active is None else {
            "consumer_tag": active.tag, "connection": active.channel.connection.name,
            "channel": active.channel.number},
    }


def exchange_info(exchange: Exchange) -> dict[str, Any]:
    return {
        "name": exchange.name,
        "vhost": exchange.vhost.name,
        "type": exchange.type,
        "durable": exchange.durable,
        "auto_delete": exchange.auto_delete,
        "internal": exchange.internal,
        "arguments": dict(exchange.arguments),
        "message_stats": {},
    }


def vhost_info(vhost: VirtualHost) -> dict[str, Any]:
    queues = list(vhost.queues.values())
    ready = sum(q.message_count for q in queues)
    unacked = sum(q.unacked for q in queues)
    return {
        "name": vhost.name,
        "description": "",
        "tags": [],
        "tracing": False,
        "messages": ready + unacked,
        "messages_ready": ready,
        "messages_unacknowledged": unacked,
    }


def overview(broker: Broker, *, listeners: list[dict[str, Any]], version: str) -> dict[str, Any]:
    queues = [q for vhost in broker.vhosts.values() for q in vhost.queues.values()]
    ready = sum(q.message_count for q in queues)
    unacked = sum(q.unacked for q in queues)
    return {
        "management_version": version,
        "product_name": "amqlite",
        "product_version": version,
        "rabbitmq_version": version,
        "cluster_name": "amqlite",
        "node": "amqlite",
        "listeners": listeners,
        "message_stats": {},
        "object_totals": {
            "connections": len(broker.connections),
            "channels": sum(len(c.channels) for c in broker.connections),
            "exchanges": sum(len(v.exchanges) for v in broker.vhosts.values()),
            "queues": len(queues),
            "consumers": sum(q.consumer_count for q in queues),
        },
        "queue_totals": {
            "messages": ready + unacked,
            "messages_ready": ready,
            "messages_unacknowledged": unacked,
        },
    }


def connection_info(connection: Connection) -> dict[str, Any]:
    shown = {
        "name": connection.name,
        "user": connection.user,
        "vhost": connection.vhost.name,
        "channels": len(connection.channels),
        "state": "running",
        "protocol": "AMQP 0-9-1",
        "node": "amqlite",
        "client_properties": jsonable(dict(connection.client_properties)),
    }
    # RabbitMQ's field for the name a client gives its connection (pika's
    # client_properties={"connection_name": ...}), there only when given.
    given = connection.client_properties.get("connection_name")
    if isinstance(given, str) and given:
        shown["user_provided_name"] = given
    return shown


def kafka_connection_info(conn: KafkaConnection) -> dict[str, Any]:
    """A Kafka client's connection, in /api/connections's shape: as
    RabbitMQ lists its MQTT and STOMP plugins' connections beside AMQP's,
    with the client's ``client.id`` as the name the client gave it."""
    session = conn.session
    host, _, port = session.peer.rpartition(":")
    shown: dict[str, Any] = {
        "name": session.peer,
        "user": session.user_name,
        "vhost": session.settings.vhost,
        "channels": 0,
        "state": "running",
        "protocol": "Kafka",
        "node": "amqlite",
        "peer_host": host.strip("[]"),
        "peer_port": int(port) if port.isdigit() else None,
        "auth_mechanism": session.mechanism,
        "client_id": session.client_id,
        "requests": conn.requests,
        "client_properties": {},
    }
    if session.client_id:
        shown["user_provided_name"] = session.client_id
    return shown


def _channel_name(channel: Channel) -> str:
    # RabbitMQ names a channel after its connection: "<connection> (<number>)".
    return f"{channel.connection.name} ({channel.number})"


def channel_info(channel: Channel) -> dict[str, Any]:
    return {
        "name": _channel_name(channel),
        "number": channel.number,
        "user": channel.connection.user,
        "vhost": channel.vhost.name,
        "connection_details": {"name": channel.connection.name},
        "consumer_count": len(channel.consumers),
        "messages_unacknowledged": len(channel.unacked),
        "prefetch_count": channel.prefetch,
        "global_prefetch_count": channel.global_prefetch,
        "confirm": channel.confirm,
        "transactional": channel.transactional,
        "state": "running",
    }


def consumer_info(consumer: Consumer, now: float) -> dict[str, Any]:
    return {
        "consumer_tag": consumer.tag,
        "queue": {"name": consumer.queue.name, "vhost": consumer.queue.vhost.name},
        "channel_details": {"name": _channel_name(consumer.channel), "number": consumer.channel.number,
                            "connection_name": consumer.channel.connection.name,
                            "user": consumer.channel.connection.user},
        "ack_required": not consumer.no_ack,
        "exclusive": consumer.exclusive,
        "prefetch_count": consumer.prefetch,
        "arguments": dict(consumer.arguments),
        "active": True,
        # amqlite's own: unacked deliveries, and how long the oldest has been out.
        "messages_unacknowledged": consumer.unacked,
        "oldest_unacked_seconds": age(consumer_oldest(consumer), now),
    }


def properties_key(routing_key: str, arguments: dict[str, Any]) -> str:
    """How RabbitMQ's API names one binding in a path: the routing key, and a
    short hash of the arguments when there are any (``k~ZKgNZg``)."""
    key = quote(routing_key, safe="")
    if not arguments:
        return key or "~"
    digest = hashlib.sha256(repr(sorted(arguments.items())).encode()).digest()
    return f"{key}~{base64.urlsafe_b64encode(digest)[:6].decode()}"


def binding_info(vhost: str, source: str, destination: str, destination_type: str, routing_key: str,
                 arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        "source": source,
        "vhost": vhost,
        "destination": destination,
        "destination_type": destination_type,
        "routing_key": routing_key,
        "arguments": jsonable(arguments),
        "properties_key": properties_key(routing_key, arguments),
    }


def bindings(vhost: VirtualHost) -> Iterator[dict[str, Any]]:
    """Every binding of a vhost, RabbitMQ's implicit ones from the default
    exchange to each queue first, as its API lists them."""
    for name in sorted(vhost.queues):
        yield binding_info(vhost.name, "", name, "queue", name, {})
    for source_name, exchange in sorted(vhost.exchanges.items()):
        # RabbitMQ's order: its routes table's, by routing key, then destination.
        found = sorted(((routing_key, "queue" if isinstance(destination, Queue) else "exchange", destination.name,
                         repr(sorted(arguments.items())), arguments)
                        for (destination, routing_key, _), arguments in exchange.bindings.items()),
                       key=lambda row: row[:4])
        for routing_key, kind, name, _, arguments in found:
            yield binding_info(vhost.name, source_name, name, kind, routing_key, arguments)


def jsonable(value: Any) -> Any:
    """An AMQP field value as JSON: byte strings as text, timestamps as
    seconds, decimals as numbers."""
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, datetime.datetime):
        return int(value.timestamp())
    if isinstance(value, decimal.Decimal):
        return float(value)
    return value


def message_info(message: Message, *, redelivered: bool, message_count: int, encoding: str,
                 truncate: int | None) -> dict[str, Any]:
    """One message as ``POST /api/queues/.../get`` returns it."""
    body = message.body
    shown = body if truncate is None else body[:truncate]
    payload_encoding = "base64"
    if encoding == "auto":
        try:
            payload: str = shown.decode("utf-8")
            payload_encoding = "string"
        except UnicodeDecodeError:
            payload = base64.b64encode(shown).decode()
    else:
        payload = base64.b64encode(shown).decode()
    properties = {name: jsonable(value) for name, value in message.properties._asdict().items() if value is not None}
    return {
        "payload_bytes": len(body),
        "redelivered": redelivered,
        "exchange": message.exchange,
        "routing_key": message.routing_key,
        "message_count": message_count,
        # RabbitMQ's quirk, kept: no properties is an empty list, not an object.
        "properties": properties or [],
        "payload": payload,
        "payload_encoding": payload_encoding,
    }
