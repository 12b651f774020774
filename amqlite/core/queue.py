"""A queue: ready messages, consumers and credit, TTL, limits, retries.

Every message a queue accepts ends in exactly one way: acked, dead-lettered
(which may still drop it, when no dead-letter exchange takes it), or dropped
by purge or delete. Drops go through :meth:`Queue._drop`, so they are counted
and observable, never silent.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Any

from . import deadletter
from .arguments import DROP_HEAD, REJECT_PUBLISH_DLX, QueueSettings
from .backing import Backing
from .consumer import Consumer
from .dedup import deduplicator_for
from .errors import AccessRefused
from .events import WAIT_FOR_DISK, WaitForDisk
from .message import DELAYED, GONE, READY, UNACKED, Entry, Message
from .retries import Retries
from .messagegroups import PARK_LIMIT, MessageGroups
from .ready import PagedRef
from .stats import AT_MOST_ONCE, DISABLED, QueueStats

if TYPE_CHECKING:
    from array import array

    from .connection import Connection
    from .journal import Journal
    from .vhost import VirtualHost

# Rebuild an index heap once stale items outnumber live ones by this much.
_COMPACT_SLACK = 1024


class Queue:
    #: A stream (core/stream.py) keeps what it delivers.
    is_stream = False

    def __init__(
        self,
        vhost: VirtualHost,
        name: str,
        settings: QueueSettings,
        *,
        durable: bool = False,
        exclusive_owner: Connection | None = None,
        auto_delete: bool = False,
        arguments: dict[str, Any] | None = None,
        now: float = 0.0,
    ) -> None:
        self.vhost = vhost
        self.name = name
        self.settings = settings
        self.durable = durable
        self.exclusive_owner = exclusive_owner
        self.auto_delete = auto_delete
        self.arguments = dict(arguments or {})
        #: Where the ready messages live and how storage hears of them.
        journal = vhost.broker.journal
        self.backing = Backing(self, journal if durable and exclusive_owner is None else None, journal)
        self.ready = self.backing.ready
        self.unacked = 0
        self.consumers: list[Consumer] = []
        self.deleted = False
        #: Bindings that lead here: (source exchange, routing key, args key).
        self.incoming: set[tuple[Any, str, Any]] = set()
        self.timer_at: float | None = None
        #: Durable storage's id for this queue; the journal assigns it.
        self.store_id: int | None = None
        #: Where definitions and persistent messages are recorded; None for
        #: transient queues.
        self.journal: Journal | None = self.backing.journal
        self._seq = 0
        self._dispatching = False
        self._had_consumer = False
        self._last_used = now
        # (expires_at, seq, entry) for ready entries that can expire.
        self._expiry: list[tuple[float, int, Entry]] = []
        self._expiring = 0
        #: Entries waiting out a retry delay.
        self.retries = Retries()
        self.stats = QueueStats()
        #: x-message-group-header (core/messagegroups.py); None without.
        self.groups = (None if settings.group_header is None
                       else MessageGroups(settings.group_header, settings.group_in_flight))
        #: x-message-deduplication (core/dedup.py); its window is journalled
        #: on a durable queue.
        self.deduplicator = deduplicator_for(self.arguments, f"queue '{name}' in vhost '{vhost.name}'")
        if self.deduplicator is not None and self.journal is not None:
            journal = self.journal
            self.deduplicator.on_taken = lambda value, expires_at: journal.dedup_taken(self, value, expires_at)
            self.deduplicator.on_forgotten = journal.dedup_forgotten
            self.deduplicator.on_refused = lambda value, segment: journal.dedup_refused(self, value, segment)
        self._schedule_expires(now)

    # -- counts ---------------------------------------------------------

    @property
    def message_count(self) -> int:
        """Ready messages, as reported by queue.declare-ok and basic.get-ok."""
        groups = self.groups
        return self.ready.count if groups is None else self.ready.count + groups.parked

    @property
    def _ready_bytes(self) -> int:
        groups = self.groups
        return self.ready.bytes if groups is None else self.ready.bytes + groups.parked_bytes

    @property
    def consumer_count(self) -> int:
        return len(self.consumers)

    @property
    def delayed_count(self) -> int:
        return len(self.retries)

    @property
    def consumer_timeout(self) -> float | None:
        """Seconds a delivery from here may stay unacked: x-consumer-timeout,
        else the broker's default (None: no limit). Not on a stream, whose
        deliveries stay in the log whatever a consumer does (as RabbitMQ)."""
        if self.is_stream:
            return None
        timeout = self.settings.consumer_timeout
        return self.vhost.broker.consumer_timeout if timeout is None else timeout

    def group_counts(self) -> tuple[int, int, float | None] | None:
        """With message groups: (groups with messages, groups whose message
        out waits out a retry delay, when the oldest group began); else None."""
        groups = self.groups
        if groups is None:
            return None
        backoff = {groups.key(entry) for entry in self.retries.entries()}
        backoff.discard(None)
        return len(groups.groups), len(backoff), groups.oldest_since()

    @property
    def last_seq(self) -> int:
        """The seq of the newest message accepted so far."""
        return self._seq

    @property
    def paged_count(self) -> int:
        """Ready messages kept on disk only (paged out)."""
        return self.ready.paged

    # -- publishing -----------------------------------------------------

    def enqueue(self, message: Message, message_ttl: float | None, now: float) -> bool:
        """Accept a routed message. False if x-overflow refused it."""
        settings = self.settings
        if settings.max_length is not None or settings.max_length_bytes is not None:
            if self.refuses(message):
                if settings.overflow == REJECT_PUBLISH_DLX:
                    # Dead-lettering accounts for it (and reports a drop if it fails).
                    self._dead_letter(message, deadletter.MAXLEN, now)
                else:
                    self.vhost.broker.dropped(self.name, message, "rejected-publish")
                return False
        if not self.backing.accepts(message):
            self.vhost.broker.dropped(self.name, message, "store-unavailable")
            return False  # the publisher gets a nack: it cannot be made durable now
        self._seq += 1
        entry = Entry(message, self._seq)
        if settings.max_priority is not None:
            priority = message.properties.priority or 0
            entry.priority = min(priority, settings.max_priority)
        ttl = settings.message_ttl
        if message_ttl is not None and (ttl is None or message_ttl < ttl):
            ttl = message_ttl
        if ttl is not None:
            self._index_expiry(entry, now + ttl)
        if self.groups is not None:
            self.groups.joined(entry, now)
        self.backing.append(entry)
        self.stats.publish += 1
        if self.consumers:
            self.dispatch(now)
        if ttl == 0 and entry.state == READY:
            # TTL 0: only a consumer that takes it at once gets it (RabbitMQ);
            # not even a basic.get arriving at the same instant.
            self._expire(entry, now)
        if settings.max_length is not None or settings.max_length_bytes is not None:
            self._drop_head_over_limit(now)
        return True

    def refuses(self, message: Message) -> bool:
        """Whether x-overflow (reject-publish, reject-publish-dlx) would
        refuse ``message`` now: a redrive leaves it where it is instead."""
        settings = self.settings
        return ((settings.max_length is not None or settings.max_length_bytes is not None)
                and settings.overflow != DROP_HEAD and self._full(len(message.body)))

    def _full(self, incoming: int) -> bool:
        settings = self.settings
        if settings.max_length is not None and self.message_count + 1 > settings.max_length:
            return True
        return settings.max_length_bytes is not None and self._ready_bytes + incoming > settings.max_length_bytes

    def _drop_head_over_limit(self, now: float) -> None:
        settings, ready = self.settings, self.ready
        while ready.count and (
            (settings.max_length is not None and self.message_count > settings.max_length)
            or (settings.max_length_bytes is not None and self._ready_bytes > settings.max_length_bytes)
        ):
            entry = self._pop_ready()
            if entry is None:
                break  # the head is paged out; the limit holds once it is back
            self._leave(entry)
            self._dead_letter(entry.message, deadletter.MAXLEN, now)

    # -- delivery -------------------------------------------------------

    def _leave(self, entry: Entry) -> None:
        """The entry is done here: acked, dead-lettered, expired or dropped."""
        if self.groups is not None:
            self.groups.left(entry)
        entry.state = GONE
        self.backing.removed(entry)
        self.vhost.broker.freed_bytes += len(entry.message.body)

    def _pop_ready(self) -> Entry | None:
        entry = self.ready.pop()
        if entry is not None and entry.expires_at is not None:
            self._expiring -= 1
        return entry

    def _next_ready(self) -> Entry | None:
        """The next message that may go out: the head of the ready list,
        or with message groups the next whose group's turn it is (others
        are parked on the way, and count as ready still)."""
        groups = self.groups
        if groups is None:
            return self._pop_ready()
        entry = groups.next_parked()
        if entry is not None:
            if entry.expires_at is not None:
                self._expiring -= 1
            return entry
        while groups.parked < PARK_LIMIT and (entry := self._pop_ready()) is not None:
            if groups.take(entry):
                return entry
            if entry.expires_at is not None:
                self._expiring += 1  # still ready, and still expiring
        return None

    def dispatch(self, now: float) -> None:
        """Push ready messages to consumers while any has credit."""
        ready, groups = self.ready, self.groups
        if not (ready.count or (groups is not None and groups.parked)) or self._dispatching or self.deleted:
            return
        # Without groups, straight from the ready list: one call fewer per delivery.
        take = self._pop_ready if groups is None else self._next_ready
        self._dispatching = True
        more = True
        try:
            while more and (ready.count or (groups is not None and groups.parked)) and self.consumers:
                consumers = self.consumers
                if len(consumers) == 1:
                    # Alone, a consumer takes what its credit allows at once:
                    # picked once, not once per message.
                    consumer = consumers[0]
                    count = consumer.credit()
                    if not count:
                        break
                else:
                    picked = self._pick_consumer()
                    if picked is None:
                        break
                    consumer, count = picked, 1
                deliver = consumer.channel.deliver
                for _ in range(count):
                    entry = take()
                    if entry is None:
                        more = False  # the rest is on disk, on its way back, or waits its group's turn
                        break
                    if entry.expires_at is not None and entry.expires_at < now:
                        self._leave(entry)
                        # Routed on, it may take credit of this channel: pick again.
                        self._dead_letter(entry.message, deadletter.EXPIRED, now)
                        break
                    deliver(consumer, self, entry, now)
        finally:
            self._dispatching = False
        if ready.paged and self.consumers:
            self.backing.want_page_in()

    def _pick_consumer(self) -> Consumer | None:
        consumers = self.consumers
        if self.settings.single_active_consumer:
            active = consumers[0]
            return active if active.has_credit() else None
        best = None
        for consumer in consumers:
            if (best is None or consumer.priority > best.priority) and consumer.has_credit():
                best = consumer
        if best is not None and len(consumers) > 1:
            # Round-robin: the one just served goes to the back.
            consumers.remove(best)
            consumers.append(best)
        return best

    def fetch(self, now: float) -> Entry | WaitForDisk | None:
        """The next ready message for basic.get, skipping expired ones; or
        WAIT_FOR_DISK when it is paged out and being read back; or None
        when the queue is empty."""
        self._last_used = now
        self._schedule_expires(now)
        while (entry := self._next_ready()) is not None:
            if entry.expires_at is not None and entry.expires_at < now:
                self._leave(entry)
                self._dead_letter(entry.message, deadletter.EXPIRED, now)
                continue
            return entry
        if self.ready.paged:
            self.backing.check_readable()
            self.backing.want_page_in()
            return WAIT_FOR_DISK
        return None

    def put_back(self, entry: Entry, now: float) -> None:
        """Return an entry :meth:`fetch` gave out, to its original position."""
        self._make_ready(entry, now)

    # -- settlement -----------------------------------------------------

    def unlend(self, entry: Entry, now: float) -> None:
        """A lent entry that never reached the application comes back to
        its original position; unlike :meth:`give_back`, not an attempt."""
        if self._take_back(entry):
            self._make_ready(entry, now)

    def _take_back(self, entry: Entry) -> bool:
        """An entry out on loan comes back. False if there is nothing more
        to do: it was not on loan, or the queue is gone and took it along."""
        if entry.state != UNACKED:
            return False
        self.unacked -= 1
        if self.deleted:
            self._leave(entry)
            self.vhost.broker.dropped(self.name, entry.message, "queue-deleted")
            return False
        return True

    def lend(self, entry: Entry) -> None:
        """The entry goes out to a consumer (or basic.get) until settled."""
        entry.state = UNACKED
        self.unacked += 1
        self.backing.delivered(entry)

    def settle(self, entry: Entry) -> None:
        """The message was acked (or delivered with no_ack)."""
        if entry.state == UNACKED:
            self.unacked -= 1
        self._leave(entry)

    def give_back(self, entry: Entry, requeue: bool, now: float, *, failed: bool = True) -> None:
        """An unacked message came back: nack or reject by a consumer
        (``failed``), or returned by recover or a closed channel.

        Both count towards x-delivery-limit; only a consumer's failure waits
        out the retry delay, as in LavinMQ.
        """
        if not self._take_back(entry):
            return
        if not requeue:
            self._leave(entry)
            self._dead_letter(entry.message, deadletter.REJECTED, now)
            return
        entry.delivery_count += 1
        entry.redelivered = True
        self.backing.counted(entry)
        settings = self.settings
        if settings.delivery_limit is not None and entry.delivery_count > settings.delivery_limit:
            self._leave(entry)
            self._dead_letter(entry.message, deadletter.DELIVERY_LIMIT, now)
            return
        if settings.retry is not None and failed:
            entry.state = DELAYED
            due = now + settings.retry.delay(entry.delivery_count)
            self.backing.retrying(entry, due)
            self.retries.add(entry, due)
            self.vhost.broker.timers.schedule(self, due)
            return
        self._make_ready(entry, now)

    # -- retries as scheduled messages (core/retries.py) ------------------

    def cancel_retry(self, seq: int, now: float) -> bool:
        """Give up retrying a message: it is dead-lettered as a reject
        without requeue would (dropped with no dead-letter exchange).
        False if nothing of that seq waits out a retry delay."""
        entry = self.retries.take(seq)
        if entry is None:
            return False
        self._leave(entry)
        self._dead_letter(entry.message, deadletter.REJECTED, now)
        self.vhost.broker.stats.scheduled_changes["cancelled", "retry"] += 1
        return True

    def reschedule_retry(self, seq: int, due: float) -> bool:
        """Make a retry due at ``due`` (now: fire it now); journalled as a
        RETRY record, as its first delay was."""
        entry = self.retries.reschedule(seq, due)
        if entry is None:
            return False
        self.backing.retrying(entry, due)
        self.vhost.broker.timers.schedule(self, due)
        self.vhost.broker.stats.scheduled_changes["rescheduled", "retry"] += 1
        return True

    def _make_ready(self, entry: Entry, now: float, *, to_tail: bool = False) -> None:
        """Back into the ready list: at its original position after a
        requeue, at the tail after a retry delay (as LavinMQ republishes)."""
        if entry.expires_at is not None:
            if entry.expires_at <= now:
                self._leave(entry)
                self._dead_letter(entry.message, deadletter.EXPIRED, now)
                return
            self._index_expiry(entry, entry.expires_at)
        entry.state = READY
        if self.groups is not None:
            self.groups.returned(entry)
        if to_tail:
            old_seq = entry.seq
            self._seq += 1
            entry.seq = self._seq
            self.backing.moved_to_tail(entry, old_seq)
        else:
            self.ready.requeue(entry)

    # -- time -----------------------------------------------------------

    def _index_expiry(self, entry: Entry, expires_at: float) -> None:
        entry.expires_at = expires_at
        self._expiring += 1
        heapq.heappush(self._expiry, (expires_at, entry.seq, entry))
        if len(self._expiry) > 2 * self._expiring + _COMPACT_SLACK:
            self._expiry = [item for item in self._expiry if item[2].state == READY]
            heapq.heapify(self._expiry)
        self.vhost.broker.timers.schedule(self, expires_at)

    def _schedule_expires(self, now: float) -> None:
        if self.settings.expires is not None and not self.consumers:
            self.vhost.broker.timers.schedule(self, self._last_used + self.settings.expires)

    def on_timer(self, now: float) -> None:
        """Expire messages wherever they sit, release retries, expire the queue."""
        if self.deleted:
            return
        expiry = self._expiry
        while expiry and expiry[0][0] <= now:
            _, _, entry = heapq.heappop(expiry)
            if entry.state == READY and entry.expires_at is not None and entry.expires_at <= now:
                self._expire(entry, now)
        released = False
        for entry in self.retries.pop_due(now):
            # A grouped message goes back to the head of its group,
            # which waited for it; others to the tail, as LavinMQ.
            self._make_ready(entry, now, to_tail=self.groups is None)
            released = True
        expires = self.settings.expires
        if expires is not None and not self.consumers and self._last_used + expires <= now:
            self.vhost.delete_queue(self, now)
            return
        if released:
            self.dispatch(now)
        timers = self.vhost.broker.timers
        while expiry and expiry[0][2].state != READY:
            heapq.heappop(expiry)
        if expiry:
            timers.schedule(self, expiry[0][0])
        if (due := self.retries.next_due()) is not None:
            timers.schedule(self, due)
        self._schedule_expires(now)

    def _expire(self, entry: Entry, now: float) -> None:
        """A ready entry past its deadline leaves from wherever it sits."""
        self.take_ready(entry)
        self._dead_letter(entry.message, deadletter.EXPIRED, now)

    def take_ready(self, entry: Entry) -> None:
        """A ready entry leaves from wherever it sits, for good (expired,
        or redriven or deleted by the workbench, core/redrive.py)."""
        parked = self.groups is not None and self.groups.is_parked(entry)
        self._leave(entry)
        if entry.expires_at is not None:
            self._expiring -= 1
        if not parked:
            self.ready.discard(entry)

    # -- dead-lettering and drops ---------------------------------------

    def _dead_letter(self, message: Message, reason: str, now: float) -> None:
        settings = self.settings
        broker = self.vhost.broker
        if settings.dead_letter_exchange is None:
            broker.stats.dead_lettered[reason, DISABLED] += 1
            broker.dropped(self.name, message, reason)
            return
        broker.stats.dead_lettered[reason, AT_MOST_ONCE] += 1
        self.vhost.dead_letter(self, message, reason, now)

    # -- consumers ------------------------------------------------------

    def add_consumer(self, consumer: Consumer, now: float) -> None:
        if any(c.exclusive for c in self.consumers) or (consumer.exclusive and self.consumers):
            raise AccessRefused(f"queue '{self.name}' in vhost '{self.vhost.name}' in exclusive use")
        self.backing.check_readable()
        self.consumers.append(consumer)
        self._had_consumer = True
        self._last_used = now
        self.dispatch(now)

    def remove_consumer(self, consumer: Consumer, now: float) -> None:
        if consumer not in self.consumers:
            return
        self.consumers.remove(consumer)
        self._last_used = now
        if not self.consumers:
            if self.auto_delete and self._had_consumer:
                self.vhost.delete_queue(self, now)
                return
            self._schedule_expires(now)
        elif self.settings.single_active_consumer:
            self.dispatch(now)

    def touch(self, now: float) -> None:
        """A redeclare renews the x-expires lease."""
        self._last_used = now
        self._schedule_expires(now)

    def restore(
        self,
        message: Message,
        seq: int,
        *,
        expires_at: float | None,
        delivery_count: int,
        redelivered: bool,
        retry_due: float | None,
        now: float,
    ) -> Entry:
        """Put back a message recovered from durable storage, in seq order."""
        entry = Entry(message, seq, delivery_count=delivery_count, redelivered=redelivered)
        if self.settings.max_priority is not None:
            entry.priority = min(message.properties.priority or 0, self.settings.max_priority)
        self._seq = max(self._seq, seq)
        entry.expires_at = expires_at
        if retry_due is not None:
            entry.state = DELAYED
            self.retries.add(entry, retry_due)
            self.vhost.broker.timers.schedule(self, retry_due)
        else:
            if expires_at is not None:
                self._index_expiry(entry, expires_at)
            self.ready.append(entry)
        if self.groups is not None:
            self.groups.joined(entry, now)
        return entry

    def note_seq(self, seq: int) -> None:
        """Storage has used ``seq``: new messages get higher ones."""
        self._seq = max(self._seq, seq)

    def restore_paged(self, priority: int, segment: int, offset: int, seq: int, size: int) -> bool:
        """Put back a recovered message as paged (on disk only), in seq order.
        False if it has to come back in memory instead: always with message
        groups, whose members must be known by their headers."""
        if self.groups is not None:
            return False
        if self.settings.max_priority is not None:
            priority = min(priority, self.settings.max_priority)
        else:
            priority = 0
        if not self.ready.restore_paged(priority, (segment, offset, seq, size)):
            return False
        self._seq = max(self._seq, seq)
        return True

    def restore_paged_run(self, segments: array[int], offsets: array[int], seqs: array[int],
                          sizes: array[int]) -> bool:
        """:meth:`restore_paged` for a run of messages in seq order, at once:
        start-up pays one call per run, not one per message. Only for a
        queue without priorities (every message at level 0)."""
        assert self.settings.max_priority is None
        if self.groups is not None:
            return False
        if not self.ready.restore_paged_run(0, segments, offsets, seqs, sizes):
            return False
        self._seq = max(self._seq, seqs[-1])
        return True

    # -- purge and delete -----------------------------------------------

    def purge(self) -> int:
        """Drop every ready and retry-delayed message; unacked ones stay."""
        dropped = self.ready.drain()
        if self.groups is not None:
            dropped += self.groups.drain_parked()
        dropped += self.retries.clear()
        self._expiry.clear()
        self._expiring = 0
        for entry in dropped:
            self._leave(entry)
            self.vhost.broker.dropped(self.name, entry.message, "purged")
        paged = self.backing.drop_paged()
        for _ in range(paged):
            self.vhost.broker.dropped(self.name, None, "purged")  # on disk only: no content to show
        return len(dropped) + paged

    # -- paging -------------------------------------------------------------

    @property
    def over_budget(self) -> bool:
        """More ready messages in memory than the journal's budget."""
        return self.backing.over_budget

    def page_out(self) -> int:
        """Let go of ready messages whose records are on disk (after a write)."""
        return self.backing.page_out()

    def page_in_requests(self, low_water: int, batch: int) -> list[tuple[int, list[PagedRef]]]:
        """Batches to read back from disk: (priority, refs)."""
        return self.backing.page_in_requests(low_water, batch)

    def paged_in(self, priority: int, refs: list[PagedRef], messages: list[Message], now: float) -> None:
        """Messages read back from disk for ``refs`` (the backing's page_in_requests)."""
        if self.backing.paged_in(priority, refs, messages):
            self.dispatch(now)

    def page_in_failed(self, priority: int, refs: list[PagedRef], error: str) -> None:
        """Storage gave up reading ``refs`` back. They stay on disk and in
        the queue; consumers are cancelled and gets refused until a later
        read (asked for by the next get or consume) works."""
        if self.backing.page_in_failed(priority, refs, error):
            for consumer in list(self.consumers):
                consumer.channel.server_cancel(consumer)
            self.consumers.clear()

    def close(self) -> int:
        """Mark deleted and drop every message it holds; return how many were ready."""
        count = self.message_count
        self.purge()
        if self.deduplicator is not None:
            self.deduplicator.forget_all()
        self.deleted = True
        self.timer_at = None
        return count
