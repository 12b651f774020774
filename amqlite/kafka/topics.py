"""Topics are streams, in both directions.

- A one-partition topic ``T`` is the stream queue ``T``.
- A topic of N partitions is a partitioned stream (docs/streams.md): the
  exchange ``T`` bound to the streams ``T-0`` ... ``T-(N-1)`` and nothing
  else, RabbitMQ's super-stream naming. Partition *i* is stream ``T-i``.

So every stream declared over AMQP is a topic, and every topic made here
(by CreateTopics or auto-created) is a stream AMQP clients consume with
``x-stream-offset``. A stream that is a partition of a partitioned topic
is listed as that topic's partition, not as a topic of its own (asked for
by name, it still is one).
"""

from __future__ import annotations

import functools
import re
import uuid
from typing import Any, Iterator

import attrs

from ..core.exchange import Exchange
from ..core.hashing import MURMUR2_HASH
from ..core.stream import Stream
from ..core.vhost import VirtualHost

#: Kafka's legal topic names: at most 249 of these characters, not "." or "..".
_LEGAL_NAME = re.compile(r"[a-zA-Z0-9._-]{1,249}")
#: The exchange type of a partitioned topic made over Kafka.
#: Kafka's default partitioner, so that an AMQP publish with routing key K
#: reaches the partition a Kafka producer's key K does (core/hashing.py).
PARTITIONED_EXCHANGE_TYPE = MURMUR2_HASH
_TOPIC_IDS = uuid.UUID("6f0cf1b4-58a4-4c4a-9d6b-6b0d9a3e1f52")


@attrs.frozen
class Topic:
    name: str
    #: Partition i is ``partitions[i]``.
    partitions: tuple[Stream, ...]
    #: The partitioned stream's exchange; None for a one-partition topic.
    exchange: Exchange | None = None

    @property
    def topic_id(self) -> uuid.UUID:
        """A stable id for Metadata v10+ (Kafka's are random at creation;
        streams have none, so it is derived from the name)."""
        return _topic_id(self.name)


@functools.lru_cache(maxsize=65536)
def _topic_id(name: str) -> uuid.UUID:
    return uuid.uuid5(_TOPIC_IDS, name)  # 10 us, for every topic of every Metadata response


def invalid_name(name: str) -> str | None:
    """Why ``name`` cannot be a Kafka topic, or None."""
    if name in (".", "..") or not _LEGAL_NAME.fullmatch(name):
        return "topic names are 1-249 of a-z, A-Z, 0-9, '.', '_', '-', and not '.' or '..'"
    return None


def find(vhost: VirtualHost, name: str) -> Topic | None:
    """The topic ``name``: a stream of that name, else a partitioned stream."""
    queue = vhost.queues.get(name)
    if isinstance(queue, Stream):
        return Topic(name, (queue,))
    exchange = vhost.exchanges.get(name)
    return None if exchange is None else find_partitioned(exchange)


def _partitions(exchange: Exchange) -> tuple[Stream, ...]:
    """The streams ``NAME-0`` ... ``NAME-(N-1)`` when they are exactly what
    the exchange is bound to; () when it is not a partitioned stream."""
    streams: dict[int, Stream] = {}
    prefix = exchange.name + "-"
    for destination, _, _ in exchange.bindings:
        if not isinstance(destination, Stream) or not destination.name.startswith(prefix):
            return ()
        index = destination.name[len(prefix):]
        if not index.isdigit() or str(int(index)) != index:
            return ()
        streams[int(index)] = destination
    if not streams or sorted(streams) != list(range(len(streams))):
        return ()
    return tuple(streams[i] for i in range(len(streams)))


def every(vhost: VirtualHost) -> Iterator[Topic]:
    """Every topic in ``vhost``, in name order."""
    partitioned = [topic for exchange in vhost.exchanges.values()
                   if exchange.name and (topic := find_partitioned(exchange)) is not None
                   and not isinstance(vhost.queues.get(exchange.name), Stream)]
    taken = {stream.name for topic in partitioned for stream in topic.partitions}
    single = [Topic(queue.name, (queue,)) for queue in vhost.queues.values()
              if isinstance(queue, Stream) and queue.name not in taken]
    yield from sorted((*partitioned, *single), key=lambda topic: topic.name)


def find_partitioned(exchange: Exchange) -> Topic | None:
    partitions = _partitions(exchange)
    return Topic(exchange.name, partitions, exchange) if partitions else None


def create(vhost: VirtualHost, name: str, partitions: int, arguments: dict[str, Any], now: float) -> Topic:
    """Declare the streams (and exchange) of a new topic. ``arguments`` are
    the streams' (retention: x-max-age, x-max-length-bytes ...). Errors are
    the core's (AMQPError: a limit reached, a bad argument)."""
    if partitions == 1:
        stream = vhost.declare_queue(name, owner=None, now=now, durable=True,
                                     arguments={"x-queue-type": "stream", **arguments})
        assert isinstance(stream, Stream)
        return Topic(name, (stream,))
    exchange = vhost.declare_exchange(name, PARTITIONED_EXCHANGE_TYPE, durable=True)
    return add_partitions(vhost, Topic(name, (), exchange), partitions, arguments, now)


def add_partitions(vhost: VirtualHost, topic: Topic, count: int, arguments: dict[str, Any], now: float) -> Topic:
    """Grow a partitioned topic to ``count`` partitions: streams
    ``NAME-n`` ... bound to its exchange."""
    assert topic.exchange is not None
    streams = list(topic.partitions)
    for index in range(len(streams), count):
        stream = vhost.declare_queue(f"{topic.name}-{index}", owner=None, now=now, durable=True,
                                     arguments={"x-queue-type": "stream", **arguments})
        assert isinstance(stream, Stream)
        # The partition number for Kafka's partitioner; a partitioned
        # stream declared over AMQP with a consistent hash takes a weight.
        key = str(index) if topic.exchange.type == MURMUR2_HASH else "1"
        vhost.bind_queue(stream.name, topic.name, key, None, None)
        streams.append(stream)
    return Topic(topic.name, tuple(streams), topic.exchange)


def names_taken(vhost: VirtualHost, name: str, partitions: int) -> list[str]:
    """What a new topic of ``partitions`` would be declared over that exists
    already (a queue or exchange of another kind, a stray partition)."""
    wanted = [name] if partitions == 1 else [f"{name}-{index}" for index in range(partitions)]
    taken = [queue for queue in wanted if queue in vhost.queues]
    if partitions > 1 and name in vhost.exchanges:
        taken.append(name)
    return taken


def delete(vhost: VirtualHost, topic: Topic, now: float) -> None:
    """Delete the topic's streams (their consumers are cancelled) and exchange."""
    for stream in topic.partitions:
        vhost.delete_queue(stream, now)
    if topic.exchange is not None:
        vhost.delete_exchange(topic.name)
