"""The disk journal: durable definitions and persistent messages in a
segment log, plus a definitions snapshot.

Records (payload layouts, big-endian):

==========  ===================================================================
DEFINITION  an AMQP field table: {"op": ..., ...} for exchanges, queues, bindings
PUBLISH     msg id, queue id, seq, expires (NaN: none), exchange, routing key,
            content header, body; the first durable queue a message reaches
ENQUEUE     msg id, queue id, seq, expires; every further durable queue
REMOVE      queue id, seq: acked, dead-lettered, expired, dropped or purged
DELIVERED   queue id, seq: it was handed to a consumer (redelivered after a crash)
COUNT       queue id, seq, delivery count
RETRY       queue id, seq, due: waiting out a retry delay
MOVE        queue id, old seq, new seq: back from a retry delay, at the tail
HOLD        msg id, due, vhost, exchange, routing key, content header, body
RELEASE     msg id: a held delayed message was routed
==========  ===================================================================

A segment is deleted when nothing in it is live (no message body, queue
entry or held message still needed) and every older segment its records
point into is gone, so a removal never disappears before what it removes.
Definition records are made obsolete by the snapshot file, which is
rewritten before a segment holding newer definition records is deleted.
"""

from __future__ import annotations

import fcntl
import math
import os
import struct
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from ..amqp.properties import BASIC_CLASS_ID, decode_content_header, encode_content_header
from ..amqp.values import decode_shortstr as read_shortstr
from ..amqp.values import decode_table, encode_shortstr, encode_table
from ..log import get_logger
from .segments import FileSystem, SegmentLog

if TYPE_CHECKING:
    from ..core.broker import Broker
    from ..core.exchange import Exchange
    from ..core.message import Entry, Message
    from ..core.queue import Queue

log = get_logger(__name__)

DEFINITION, PUBLISH, ENQUEUE, REMOVE, DELIVERED, COUNT, RETRY, MOVE, HOLD, RELEASE = range(1, 11)

_PUBLISH = struct.Struct(">QQQd")
_ENQUEUE = _PUBLISH
_ENTRY = struct.Struct(">QQ")
_COUNT = struct.Struct(">QQI")
_RETRY = struct.Struct(">QQd")
_MOVE = struct.Struct(">QQQ")
_HOLD = struct.Struct(">Qd")
_ID = struct.Struct(">Q")
_LEN = struct.Struct(">I")
_NONE = math.nan
SNAPSHOT = "definitions.snapshot"


def _header(message: Message) -> bytes:
    header = message.wire_header
    if header is None:
        header = encode_content_header(BASIC_CLASS_ID, len(message.body), message.properties)
    return header


def _content(message: Message) -> bytes:
    header = _header(message)
    return b"".join((
        encode_shortstr(message.exchange), encode_shortstr(message.routing_key),
        _LEN.pack(len(header)), header, message.body,
    ))


def _read_content(payload: bytes, offset: int) -> tuple[str, str, bytes, Any, bytes]:
    exchange, offset = read_shortstr(payload, offset)
    routing_key, offset = read_shortstr(payload, offset)
    (size,) = _LEN.unpack_from(payload, offset)
    offset += 4
    header = payload[offset : offset + size]
    _, _, properties = decode_content_header(header)
    return exchange, routing_key, header, properties, payload[offset + size :]


def _canonical(value: Any) -> Any:
    """Tables with their keys sorted, all the way down."""
    if isinstance(value, dict):
        return {key: _canonical(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_canonical(item) for item in value]
    return value


class StoreLocked(Exception):
    """Another broker holds the data directory."""


@attrs.define
class _RecoveredEntry:
    msg_id: int
    seq: int
    expires: float | None
    segment: int
    delivered: bool = False
    count: int = 0
    retry_due: float | None = None


@attrs.frozen
class RecoveryReport:
    queues: int
    messages: int
    held: int
    segments: int
    seconds: float


class DiskJournal:
    """Implements :class:`amqlite.core.journal.Journal` on a segment log."""

    def __init__(self, directory: Path, *, fs: FileSystem | None = None, segment_size: int | None = None) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.directory / "LOCK", "a")
        try:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise StoreLocked(f"data directory {self.directory} is in use by another amqlite") from None
        self.fs = fs or FileSystem()
        kwargs = {} if segment_size is None else {"segment_size": segment_size}
        self.log = SegmentLog(self.directory / "log", fs=self.fs, **kwargs)
        self.accepting = True
        self._recovering = False
        self._next_msg = 1
        self._next_queue = 1
        #: Live things per segment: message bodies, queue entries, held messages.
        self._live: Counter[int] = Counter()
        #: Older segments each segment's records point into.
        self._refs: dict[int, set[int]] = {}
        #: The durable definitions, mirrored for snapshots: key -> record table.
        self._definitions: dict[tuple[str, ...], dict[str, Any]] = {}
        self._snapshot_segment = 0
        #: Segments holding definition records newer than the snapshot.
        self._definition_segments: set[int] = set()
        #: RELEASE records not yet appended, (msg id, HOLD segment), and the
        #: message being released (see _append_releases).
        self._releases: list[tuple[int, int]] = []
        self._releasing: Message | None = None

    # -- helpers ------------------------------------------------------------

    def _append(self, kind: int, payload: bytes, about: Message | None = None) -> int:
        if self._releases and about is not self._releasing:
            self._append_releases()
        segment, _ = self.log.append(kind, payload)
        return segment

    def _append_releases(self) -> None:
        """RELEASE records wait until the released message's new records
        (PUBLISH, ENQUEUE as it is routed) are appended: a batch cut short by
        a crash then leaves the message held, or held and queued (delivered
        twice), never neither."""
        releases, self._releases, self._releasing = self._releases, [], None
        for msg_id, hold_segment in releases:
            segment, _ = self.log.append(RELEASE, _ID.pack(msg_id))
            self._ref(segment, hold_segment)
            self._live[hold_segment] -= 1

    def _ref(self, segment: int, target: int) -> None:
        if target != segment:
            self._refs.setdefault(segment, set()).add(target)

    def _define(self, key: tuple[str, ...], table: dict[str, Any] | None) -> None:
        if self._recovering:
            return  # replaying what is already on disk
        if table is None:
            self._definitions.pop(key, None)
            op = {"op": "delete", "key": list(key)}
        else:
            self._definitions[key] = table
            op = {"op": "set", "key": list(key), "value": table}
        segment = self._append(DEFINITION, encode_table(op))
        self._definition_segments.add(segment)

    # -- definitions (core hooks) -------------------------------------------

    def exchange_declared(self, exchange: Exchange) -> None:
        self._define(
            ("exchange", exchange.vhost.name, exchange.name),
            {"type": exchange.type, "auto_delete": exchange.auto_delete, "internal": exchange.internal,
             "arguments": exchange.arguments},
        )

    def exchange_deleted(self, exchange: Exchange) -> None:
        self._define(("exchange", exchange.vhost.name, exchange.name), None)
        # Its held messages go with it; without a RELEASE they would come back
        # in a durable delayed exchange redeclared under the same name.
        for _, _, message in exchange._pending:
            if message.store_id is not None:
                self.released(exchange, message)

    @staticmethod
    def _binding_key(source: Exchange, destination: Any, routing_key: str, arguments: dict[str, Any]) -> tuple[str, ...]:
        from ..core.queue import Queue

        kind = "queue" if isinstance(destination, Queue) else "exchange"
        # Arguments in a canonical order: unbind may list them in another
        # order than bind did (the core matches them regardless of order).
        return ("binding", source.vhost.name, source.name, kind, destination.name, routing_key,
                encode_table(_canonical(arguments)).hex())

    def bound(self, source: Exchange, destination: Any, routing_key: str, arguments: dict[str, Any]) -> None:
        key = self._binding_key(source, destination, routing_key, arguments)
        self._define(key, {"arguments": arguments})

    def unbound(self, source: Exchange, destination: Any, routing_key: str, arguments: dict[str, Any]) -> None:
        self._define(self._binding_key(source, destination, routing_key, arguments), None)

    def queue_declared(self, queue: Queue) -> None:
        if self._recovering:
            return
        if queue.store_id is None:
            queue.store_id = self._next_queue
            self._next_queue += 1
        self._define(
            ("queue", queue.vhost.name, queue.name),
            {"id": queue.store_id, "auto_delete": queue.auto_delete, "arguments": queue.arguments},
        )

    def queue_deleted(self, queue: Queue) -> None:
        self._define(("queue", queue.vhost.name, queue.name), None)

    # -- messages (core hooks) ----------------------------------------------

    def enqueued(self, queue: Queue, entry: Entry) -> None:
        message = entry.message
        expires = _NONE if entry.expires_at is None else entry.expires_at
        if message.store_id is None:
            message.store_id = self._next_msg
            self._next_msg += 1
            head = _PUBLISH.pack(message.store_id, queue.store_id, entry.seq, expires)
            segment = self._append(PUBLISH, head + _content(message), message)
            message.store_segment = segment
            self._live[segment] += 1  # the body
        else:
            segment = self._append(ENQUEUE, _ENQUEUE.pack(message.store_id, queue.store_id, entry.seq, expires),
                                   message)
            self._ref(segment, message.store_segment)
        message.store_refs += 1
        entry.store_segment = segment
        self._live[segment] += 1  # the entry

    def removed(self, queue: Queue, entry: Entry) -> None:
        segment = self._append(REMOVE, _ENTRY.pack(queue.store_id, entry.seq))
        self._ref(segment, entry.store_segment)
        self._live[entry.store_segment] -= 1
        message = entry.message
        message.store_refs -= 1
        if not message.store_refs:
            self._live[message.store_segment] -= 1

    def delivered(self, queue: Queue, entry: Entry) -> None:
        segment = self._append(DELIVERED, _ENTRY.pack(queue.store_id, entry.seq))
        self._ref(segment, entry.store_segment)

    def counted(self, queue: Queue, entry: Entry) -> None:
        segment = self._append(COUNT, _COUNT.pack(queue.store_id, entry.seq, entry.delivery_count))
        self._ref(segment, entry.store_segment)

    def retrying(self, queue: Queue, entry: Entry, due: float) -> None:
        segment = self._append(RETRY, _RETRY.pack(queue.store_id, entry.seq, due))
        self._ref(segment, entry.store_segment)

    def moved(self, queue: Queue, entry: Entry, old_seq: int) -> None:
        segment = self._append(MOVE, _MOVE.pack(queue.store_id, old_seq, entry.seq))
        self._ref(segment, entry.store_segment)

    def held(self, exchange: Exchange, message: Message, due: float) -> None:
        if self._recovering:
            return
        message.store_id = self._next_msg
        self._next_msg += 1
        payload = _HOLD.pack(message.store_id, due) + encode_shortstr(exchange.vhost.name) + encode_shortstr(
            exchange.name) + _content(message)
        segment = self._append(HOLD, payload)
        message.store_segment = segment
        self._live[segment] += 1

    def released(self, exchange: Exchange, message: Message) -> None:
        # Appended after the records of its routing (see _append_releases).
        if self._releases:
            self._append_releases()
        self._releases.append((message.store_id, message.store_segment))
        self._releasing = message
        if not self.log.dirty and self.log.on_pending is not None:
            self.log.on_pending()  # routed nowhere durable, it still needs writing
        # Routed on, it is a new publication to whatever queues it reaches.
        message.store_id = None

    # -- the driver's side --------------------------------------------------

    @property
    def dirty(self) -> bool:
        """Records wait to be written."""
        return self.log.dirty or bool(self._releases)

    def take_batch(self) -> tuple[list[tuple[int, bytes]], int]:
        """Everything appended so far, for a writer, and the position it
        reaches (trio thread)."""
        if self._releases:
            self._append_releases()
        return self.log.take_pending()

    @property
    def position(self) -> int:
        """Position of the last record appended; a confirm waits for it."""
        return self.log.appended

    @property
    def synced(self) -> int:
        return self.log.synced

    def obsolete_segments(self) -> list[int]:
        """Segments that can go, oldest first (trio thread)."""
        deleted: set[int] = set()
        present = set(self.log.segments)
        for segment in self.log.segments:
            if segment == self.log.current or self._live[segment] > 0:
                continue
            if all(target in deleted or target not in present for target in self._refs.get(segment, ())):
                deleted.add(segment)
        return sorted(deleted)

    def needs_snapshot(self, segments: list[int]) -> bool:
        return any(segment in self._definition_segments for segment in segments)

    def snapshot_payload(self) -> tuple[bytes, int]:
        """The current definitions and the segment they are current as of,
        for :meth:`write_snapshot` (trio thread)."""
        segment = self.log.current
        payload = encode_table({
            "segment": segment,
            "next_msg": self._next_msg,
            "next_queue": self._next_queue,
            "definitions": [{"key": list(k), "value": v} for k, v in self._definitions.items()],
        })
        return payload, segment

    def write_snapshot(self, payload: bytes) -> None:
        """Atomically replace the snapshot file (worker thread)."""
        path = self.directory / SNAPSHOT
        temp = path.with_suffix(".tmp")
        with open(temp, "wb") as file:
            self.fs.write(file, payload)
            self.fs.fsync(file)
        os.replace(temp, path)
        self.fs.fsync_dir(self.directory)

    def snapshot_written(self, segment: int) -> None:
        """Definition records before ``segment`` are now in the snapshot.
        (Those in ``segment`` itself may be newer; replay keeps them.)"""
        self._snapshot_segment = segment
        self._definition_segments = {s for s in self._definition_segments if s >= segment}

    def delete_segments(self, segments: list[int]) -> list[int]:
        """Delete obsolete segment files, oldest first (worker thread); then
        :meth:`forget` those deleted. Stops at the first that fails, so a
        removal never outlives what it removes."""
        deleted = []
        for segment in segments:
            try:
                self.log.delete(segment)
            except OSError as error:
                log.warning("store.delete_failed", segment=segment, error=str(error))
                break
            deleted.append(segment)
        return deleted

    def forget(self, segments: list[int]) -> None:
        for segment in segments:
            self._live.pop(segment, None)
            self._refs.pop(segment, None)

    # -- recovery -------------------------------------------------------------

    def recover(self, broker: Broker, now: float) -> RecoveryReport:
        """Rebuild ``broker``'s durable state from disk, then journal into it."""
        import time

        from ..core.message import Message

        started = time.perf_counter()
        self._recovering = True
        broker.journal = self
        definitions: dict[tuple[str, ...], dict[str, Any]] = {}
        snapshot_segment = 0
        path = self.directory / SNAPSHOT
        if path.exists():
            snapshot, _ = decode_table(path.read_bytes())
            snapshot_segment = int(snapshot["segment"])
            self._next_msg = int(snapshot["next_msg"])
            self._next_queue = int(snapshot["next_queue"])
            for item in snapshot["definitions"]:
                definitions[tuple(item["key"])] = item["value"]
        self._snapshot_segment = snapshot_segment

        messages: dict[int, Message] = {}
        entries: dict[tuple[int, int], _RecoveredEntry] = {}
        holds: dict[int, tuple[str, str, float, Message]] = {}
        for record in self.log.replay():
            kind, payload, segment = record.kind, record.payload, record.segment
            if kind == PUBLISH or kind == ENQUEUE:
                msg_id, queue_id, seq, expires = _PUBLISH.unpack_from(payload)
                if kind == PUBLISH:
                    exchange, routing_key, header, properties, body = _read_content(payload, _PUBLISH.size)
                    message = Message(exchange, routing_key, properties, body, header)
                    message.store_id, message.store_segment = msg_id, segment
                    messages[msg_id] = message
                elif msg_id in messages:
                    self._ref(segment, messages[msg_id].store_segment)
                entries[(queue_id, seq)] = _RecoveredEntry(
                    msg_id, seq, None if math.isnan(expires) else expires, segment)
                self._next_msg = max(self._next_msg, msg_id + 1)
            elif kind == HOLD:
                msg_id, due = _HOLD.unpack_from(payload)
                vhost, offset = read_shortstr(payload, _HOLD.size)
                exchange_name, offset = read_shortstr(payload, offset)
                exchange, routing_key, header, properties, body = _read_content(payload, offset)
                message = Message(exchange, routing_key, properties, body, header)
                message.store_id, message.store_segment = msg_id, segment
                holds[msg_id] = (vhost, exchange_name, due, message)
                self._next_msg = max(self._next_msg, msg_id + 1)
            elif kind == RELEASE:
                (msg_id,) = _ID.unpack_from(payload)
                held = holds.pop(msg_id, None)
                if held is not None:
                    self._ref(segment, held[3].store_segment)
            elif kind == DEFINITION:
                if segment >= snapshot_segment:
                    op, _ = decode_table(payload)
                    key = tuple(op["key"])
                    if op["op"] == "set":
                        definitions[key] = op["value"]
                    else:
                        definitions.pop(key, None)
                    self._definition_segments.add(segment)
            elif kind in (REMOVE, DELIVERED, COUNT, RETRY, MOVE):
                self._replay_entry_record(kind, payload, segment, entries)

        queues = self._restore_definitions(broker, definitions, now)
        restored = 0
        for (queue_id, seq), item in sorted(entries.items()):
            queue = queues.get(queue_id)
            message = messages.get(item.msg_id)
            if queue is None or message is None:
                continue  # its queue was deleted
            entry = queue.restore(
                message, seq, expires_at=item.expires, delivery_count=item.count,
                redelivered=item.delivered, retry_due=item.retry_due, now=now,
            )
            entry.store_segment = item.segment
            message.store_refs += 1
            self._live[item.segment] += 1
            restored += 1
        for message in messages.values():
            if message.store_refs:
                self._live[message.store_segment] += 1
        for vhost_name, exchange_name, due, message in holds.values():
            exchange = broker.vhosts.get(vhost_name, None) and broker.vhosts[vhost_name].exchanges.get(exchange_name)
            if exchange is not None and exchange.delayed:
                exchange.hold(message, due)
                self._live[message.store_segment] += 1
        self._recovering = False
        report = RecoveryReport(len(queues), restored, len(holds), len(self.log.segments),
                                time.perf_counter() - started)
        log.info("store.recovered", queues=report.queues, messages=report.messages, held=report.held,
                 segments=report.segments, seconds=round(report.seconds, 3))
        return report

    def _replay_entry_record(self, kind: int, payload: bytes, segment: int,
                             entries: dict[tuple[int, int], _RecoveredEntry]) -> None:
        # Each record that finds its entry points into the entry's segment, as
        # when it was appended: a removal must not be deleted before what it removes.
        if kind == MOVE:
            queue_id, old_seq, new_seq = _MOVE.unpack_from(payload)
            item = entries.pop((queue_id, old_seq), None)
            if item is not None:
                item.seq, item.retry_due = new_seq, None
                entries[(queue_id, new_seq)] = item
                self._ref(segment, item.segment)
            return
        queue_id, seq = _ENTRY.unpack_from(payload)
        item = entries.get((queue_id, seq))
        if item is None:
            return
        self._ref(segment, item.segment)
        if kind == REMOVE:
            del entries[(queue_id, seq)]
        elif kind == DELIVERED:
            item.delivered = True
        elif kind == COUNT:
            item.count = _COUNT.unpack_from(payload)[2]
            item.delivered = True
        elif kind == RETRY:
            item.retry_due = _RETRY.unpack_from(payload)[2]

    def _restore_definitions(self, broker: Broker, definitions: dict[tuple[str, ...], dict[str, Any]],
                             now: float) -> dict[int, Queue]:
        ordered = sorted(definitions.items(), key=lambda item: ("exchange", "queue", "binding").index(item[0][0]))
        queues: dict[int, Queue] = {}
        for key, value in ordered:
            kind, vhost_name = key[0], key[1]
            vhost = broker.add_vhost(vhost_name)
            if kind == "exchange":
                if key[2] not in vhost.exchanges:
                    vhost.declare_exchange(key[2], value["type"], durable=True, auto_delete=value["auto_delete"],
                                           internal=value["internal"], arguments=value["arguments"])
            elif kind == "queue":
                queue = vhost.declare_queue(key[2], owner=None, now=now, durable=True,
                                            auto_delete=value["auto_delete"], arguments=value["arguments"])
                queue.store_id = int(value["id"])
                self._next_queue = max(self._next_queue, queue.store_id + 1)
                queues[queue.store_id] = queue
            else:
                _, _, source, dest_kind, dest_name, routing_key, _ = key
                exchange = vhost.exchanges.get(source)
                target = (vhost.queues if dest_kind == "queue" else vhost.exchanges).get(dest_name)
                if exchange is not None and target is not None:
                    exchange.bind(target, routing_key, dict(value["arguments"]))
        self._definitions = dict(definitions)
        return queues

    def close(self) -> None:
        """Write what is still pending and release the data directory."""
        pending, position = self.take_batch()
        if pending:
            try:
                self.log.write_and_sync(pending)
                self.log.synced = position
            except OSError as error:
                log.error("store.close_write_failed", error=str(error))
        self.log.close()
        self._lock_file.close()
