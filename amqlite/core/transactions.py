"""Kafka's transaction coordinator: transactional ids, their producer ids
and epochs, and each transaction from its first partition to its markers,
as Kafka's ``TransactionCoordinator`` and ``TransactionMetadata`` run it.

A transactional id moves through these states::

    Empty / CompleteCommit / CompleteAbort
        --AddPartitionsToTxn, AddOffsetsToTxn--> Ongoing
    Ongoing --EndTxn(commit)--> PrepareCommit --markers written--> CompleteCommit
    Ongoing --EndTxn(abort), timeout, a new instance--> PrepareAbort --> CompleteAbort

- InitProducerId with the id hands out a producer id and the next epoch.
  The new epoch fences the previous instance (its requests get
  PRODUCER_FENCED, or INVALID_PRODUCER_EPOCH at the versions before
  Kafka had that code), and what it left open is aborted.
- The decision is journalled first (a TXN record in PrepareCommit or
  PrepareAbort, with the partitions and the group offsets), then a marker
  (a control batch, core/visibility.py) is appended to every partition
  the transaction touched and, for a commit, its group offsets are set on
  their streams; the Complete record follows in the same journal write.
  Recovery (store/recovery.py) restores each id from its newest record,
  completes a prepared transaction and aborts an ongoing one, so a crash
  at any point leaves each transaction wholly committed or wholly
  aborted: its records in every partition and its offsets.
- Until the write holding the Complete record is on disk the id stays in
  its Prepare state, and the next transaction's requests are answered
  CONCURRENT_TRANSACTIONS (the client retries), so no record of the next
  transaction ever precedes it in the journal.
- ``transaction.timeout.ms``: an Ongoing transaction older than its
  timeout is aborted with the epoch bumped, fencing the producer that
  abandoned it (the broker's timers call :meth:`on_timer`).

Pure: markers are made by the ``marker`` function the Kafka layer hands
in (the core does not encode record batches), time comes in as ``now``.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Callable, Iterable

import attrs

from .idempotence import MAX_EPOCH, ProducerIds
from .stream import Stream

if TYPE_CHECKING:
    from .stream import Batch
    from .vhost import VirtualHost

# Kafka's error codes (org.apache.kafka.common.protocol.Errors).
NONE = 0
INVALID_PRODUCER_EPOCH = 47
INVALID_TXN_STATE = 48
INVALID_PRODUCER_ID_MAPPING = 49
INVALID_TRANSACTION_TIMEOUT = 50
CONCURRENT_TRANSACTIONS = 51
PRODUCER_FENCED = 90

#: Kafka's transaction.max.timeout.ms default (15 minutes).
MAX_TIMEOUT = 900.0
#: The coordinator epoch markers carry: one coordinator, never moved.
COORDINATOR_EPOCH = 0

#: (base offset, producer id, producer epoch, commit?, coordinator epoch,
#: now) -> a control batch (amqlite/kafka/mapping.py's ``marker``).
MarkerFactory = Callable[[int, int, int, bool, int, float], "Batch"]


class State(enum.Enum):
    EMPTY = "Empty"
    ONGOING = "Ongoing"
    PREPARE_COMMIT = "PrepareCommit"
    PREPARE_ABORT = "PrepareAbort"
    COMPLETE_COMMIT = "CompleteCommit"
    COMPLETE_ABORT = "CompleteAbort"


_PREPARED = {State.PREPARE_COMMIT, State.PREPARE_ABORT}


@attrs.define(eq=False)
class Transaction:
    """One transactional id and its current (or last) transaction."""

    transactional_id: str
    producer_id: int
    epoch: int
    #: transaction.timeout.ms, in seconds.
    timeout: float
    state: State = State.EMPTY
    #: The partitions (streams) and group offsets of the transaction.
    partitions: dict[Stream, None] = attrs.Factory(dict)
    groups: dict[str, None] = attrs.Factory(dict)
    #: (group, stream) -> (offset, metadata), pending until the commit.
    offsets: dict[tuple[str, Stream], tuple[int, str]] = attrs.Factory(dict)
    #: When it went Ongoing (-1: never).
    started: float = -1.0
    #: The epoch a bump the producer asked for itself came from (KIP-360,
    #: Kafka's lastProducerEpoch): a retry of that InitProducerId is
    #: answered with the current epoch; -1 after any other bump.
    last_epoch: int = -1
    #: The journal position its Complete record's write reaches: the id
    #: stays prepared until the journal has synced it.
    completing_at: int = 0

    @property
    def deadline(self) -> float | None:
        return self.started + self.timeout if self.state is State.ONGOING else None


class TransactionCoordinator:
    """The transactional ids of one vhost (the Kafka vhost)."""

    def __init__(self, vhost: VirtualHost, ids: ProducerIds, marker: MarkerFactory) -> None:
        self.vhost = vhost
        self.ids = ids
        self.marker = marker
        self.transactions: dict[str, Transaction] = {}
        self._by_producer: dict[int, Transaction] = {}
        #: When the broker's timer index calls :meth:`on_timer`.
        self.timer_at: float | None = None

    # -- lookups ----------------------------------------------------------

    def pending_offset(self, group: str, stream: Stream) -> bool:
        """Whether an open transaction holds an offset of ``group`` on
        ``stream`` (OffsetFetch's UNSTABLE_OFFSET_COMMIT)."""
        return any((group, stream) in txn.offsets for txn in self.transactions.values())

    def check_produce(self, producer_id: int, epoch: int, stream: Stream) -> int:
        """Whether a transactional batch may be appended to ``stream``."""
        txn = self._by_producer.get(producer_id)
        if txn is None:
            return INVALID_PRODUCER_ID_MAPPING
        if epoch != txn.epoch:
            return INVALID_PRODUCER_EPOCH
        if txn.state is not State.ONGOING or stream not in txn.partitions:
            return INVALID_TXN_STATE
        return NONE

    # -- the APIs -----------------------------------------------------------

    def init_producer(self, transactional_id: str, timeout: float, producer_id: int, epoch: int,
                      now: float) -> tuple[int, int, int]:
        """InitProducerId with a transactional id: (error, producer id,
        epoch). ``producer_id``/``epoch`` (-1 if unknown): KIP-360, a
        producer that knows them asks for the next epoch."""
        if not 0 < timeout <= MAX_TIMEOUT:
            return INVALID_TRANSACTION_TIMEOUT, -1, -1
        txn = self.transactions.get(transactional_id)
        if txn is None:
            new_id, _ = self.ids.new()
            txn = Transaction(transactional_id, new_id, 0, timeout)
            self.transactions[transactional_id] = txn
            self._by_producer[new_id] = txn
            self._log(txn)
            return NONE, txn.producer_id, txn.epoch
        if self._completing(txn):
            return CONCURRENT_TRANSACTIONS, -1, -1
        if producer_id >= 0 and (producer_id, epoch) != (txn.producer_id, txn.epoch):
            # KIP-360: a retry of a bump this producer asked for is answered
            # with it; anyone else (a zombie after a new instance) is fenced.
            if producer_id == txn.producer_id and epoch == txn.last_epoch >= 0:
                return NONE, txn.producer_id, txn.epoch
            return PRODUCER_FENCED, -1, -1
        last = txn.epoch if producer_id >= 0 and txn.state is not State.ONGOING else -1
        if txn.state is State.ONGOING:
            self._end(txn, False, now, bump=True)
            if self._completing(txn):
                return CONCURRENT_TRANSACTIONS, -1, -1  # the client asks again once the abort is on disk
        self._bump(txn)
        txn.last_epoch = last if txn.producer_id == producer_id else -1
        txn.timeout = timeout
        txn.state = State.EMPTY
        self._log(txn)
        return NONE, txn.producer_id, txn.epoch

    def add_partitions(self, transactional_id: str, producer_id: int, epoch: int, streams: Iterable[Stream],
                       now: float) -> int:
        txn, error = self._current(transactional_id, producer_id, epoch)
        if txn is None:
            return error
        streams = list(streams)
        if txn.state is State.ONGOING and all(stream in txn.partitions for stream in streams):
            return NONE
        self._begin(txn, now)
        txn.partitions.update(dict.fromkeys(streams))
        self._log(txn)
        return NONE

    def add_offsets(self, transactional_id: str, producer_id: int, epoch: int, group: str, now: float) -> int:
        txn, error = self._current(transactional_id, producer_id, epoch)
        if txn is None:
            return error
        if txn.state is State.ONGOING and group in txn.groups:
            return NONE
        self._begin(txn, now)
        txn.groups[group] = None
        self._log(txn)
        return NONE

    def commit_offset(self, transactional_id: str, producer_id: int, epoch: int, group: str, stream: Stream,
                      offset: int, metadata: str) -> int:
        """TxnOffsetCommit: an offset pending until the transaction commits."""
        txn = self.transactions.get(transactional_id)
        if txn is None or txn.producer_id != producer_id:
            return INVALID_PRODUCER_ID_MAPPING
        if epoch != txn.epoch:
            return PRODUCER_FENCED
        if txn.state is not State.ONGOING or group not in txn.groups:
            return INVALID_TXN_STATE
        txn.offsets[group, stream] = (offset, metadata)
        return NONE

    def end(self, transactional_id: str, producer_id: int, epoch: int, commit: bool, now: float) -> int:
        """EndTxn. A retry of an end already made is answered NONE."""
        txn = self.transactions.get(transactional_id)
        if txn is None or txn.producer_id != producer_id:
            return INVALID_PRODUCER_ID_MAPPING
        if epoch != txn.epoch:
            return PRODUCER_FENCED
        done = State.PREPARE_COMMIT if commit else State.PREPARE_ABORT
        if self._completing(txn):
            return CONCURRENT_TRANSACTIONS if txn.state is done else INVALID_TXN_STATE
        if txn.state is State.ONGOING:
            self._end(txn, commit, now)
            return NONE
        finished = State.COMPLETE_COMMIT if commit else State.COMPLETE_ABORT
        if txn.state is finished:
            return NONE
        # Empty (nothing was sent) may abort; the other end is a client bug.
        return NONE if txn.state is State.EMPTY and not commit else INVALID_TXN_STATE

    # -- time ---------------------------------------------------------------

    def next_deadline(self) -> float | None:
        return min((d for txn in self.transactions.values() if (d := txn.deadline) is not None), default=None)

    def on_timer(self, now: float) -> None:
        """Abort the transactions that outlived their timeout, bumping the
        epoch: the producer that abandoned one is fenced (Kafka's
        ``abortTimedOutTransactions``)."""
        for txn in list(self.transactions.values()):
            deadline = txn.deadline
            if deadline is not None and deadline <= now:
                self._end(txn, False, now, bump=True)
        self._schedule()

    def refresh(self) -> None:
        """Transactions whose Complete record the journal has synced leave
        their Prepare state (in memory they are done already)."""
        for txn in self.transactions.values():
            self._completing(txn)

    def recovered(self, now: float) -> dict[str, int]:
        """After a restart: complete what was prepared, abort what was
        ongoing (with the epoch bumped, fencing its producer), and end any
        transaction a partition holds open that no id still owns. Returns
        how many of each it found."""
        found = {"ids": len(self.transactions), "committed": 0, "aborted": 0, "ongoing_aborted": 0,
                 "orphans_aborted": 0}
        for txn in list(self.transactions.values()):
            if txn.state in _PREPARED:
                commit = txn.state is State.PREPARE_COMMIT
                self._finish(txn, commit, now)
                found["committed" if commit else "aborted"] += 1
            elif txn.state is State.ONGOING:
                self._end(txn, False, now, bump=True)
                found["ongoing_aborted"] += 1
        for stream in self._streams():
            for producer_id in list(stream.transactions.open):
                self._mark(stream, producer_id, stream.producers.epoch_of(producer_id), False, now)
                found["orphans_aborted"] += 1
        self._schedule()
        return found

    # -- restoring (store/recovery.py) ------------------------------------

    def restore(self, txn: Transaction) -> None:
        """An id as its newest journal record left it."""
        old = self.transactions.pop(txn.transactional_id, None)
        if old is not None:
            self._by_producer.pop(old.producer_id, None)
        self.transactions[txn.transactional_id] = txn
        self._by_producer[txn.producer_id] = txn

    # -- inside ---------------------------------------------------------------

    def _current(self, transactional_id: str, producer_id: int, epoch: int) -> tuple[Transaction | None, int]:
        """The id's transaction if this producer may add to it."""
        txn = self.transactions.get(transactional_id)
        if txn is None or txn.producer_id != producer_id:
            return None, INVALID_PRODUCER_ID_MAPPING
        if epoch != txn.epoch:
            return None, PRODUCER_FENCED
        if self._completing(txn):
            return None, CONCURRENT_TRANSACTIONS
        return txn, NONE

    def _begin(self, txn: Transaction, now: float) -> None:
        if txn.state is not State.ONGOING:
            txn.state = State.ONGOING
            txn.partitions.clear()
            txn.groups.clear()
            txn.offsets.clear()
            txn.started = now
            self._schedule()

    def _completing(self, txn: Transaction) -> bool:
        """Whether the id waits for its Complete record to reach the disk."""
        if txn.state not in _PREPARED:
            return False
        journal = self.vhost.broker.journal
        if journal is not None and journal.synced < txn.completing_at:
            return True
        txn.state = State.COMPLETE_COMMIT if txn.state is State.PREPARE_COMMIT else State.COMPLETE_ABORT
        return False

    def _bump(self, txn: Transaction) -> None:
        """The next epoch, or a new producer id once the epochs run out."""
        if txn.epoch < MAX_EPOCH - 1:
            txn.epoch += 1
            return
        self._by_producer.pop(txn.producer_id, None)
        txn.producer_id, txn.epoch = self.ids.new()
        self._by_producer[txn.producer_id] = txn

    def _end(self, txn: Transaction, commit: bool, now: float, *, bump: bool = False) -> None:
        """Journal the decision, then complete it. ``bump``: an abort the
        producer did not ask for (a timeout, a new instance, a restart)
        carries the next epoch, fencing that producer: the last one too
        (Kafka's ``prepareFenceProducerEpoch``), since the markers must
        carry the producer id whose transaction the partitions hold open; a
        new id comes with the next instance (:meth:`_bump`)."""
        if bump:
            txn.epoch += 1
            txn.last_epoch = -1
        txn.state = State.PREPARE_COMMIT if commit else State.PREPARE_ABORT
        self._log(txn)
        self._finish(txn, commit, now)

    def _finish(self, txn: Transaction, commit: bool, now: float) -> None:
        """Markers into every partition, the offsets onto their streams for
        a commit, then the Complete record."""
        for stream in txn.partitions:
            if not stream.deleted:
                self._mark(stream, txn.producer_id, txn.epoch, commit, now)
        if commit:
            for (group, stream), (offset, metadata) in txn.offsets.items():
                if not stream.deleted:
                    stream.commit_group(group, offset, metadata)
        txn.state = State.PREPARE_COMMIT if commit else State.PREPARE_ABORT
        journal = self.vhost.broker.journal
        if journal is not None:
            journal.transaction_logged(self.vhost, txn.transactional_id,
                                       record(txn, State.COMPLETE_COMMIT if commit else State.COMPLETE_ABORT),
                                       completes=True)
            # Past everything appended so far: the Complete record goes into
            # the next write, and with no marker appended (recovery finds them
            # all there) the position alone may already be synced.
            txn.completing_at = journal.position + 1
        txn.offsets.clear()
        self._completing(txn)

    def _mark(self, stream: Stream, producer_id: int, epoch: int, commit: bool, now: float) -> None:
        """A marker ends the producer's open transaction in ``stream`` (none
        open: nothing to write, as for a retried end)."""
        if producer_id not in stream.transactions.open:
            stream.producers.fence(producer_id, epoch)
            return
        batch = self.marker(stream.end, producer_id, epoch, commit, COORDINATOR_EPOCH, now)
        offset = stream.append_batch(batch, now, marker=True)
        assert offset is not None, "a marker is always appended"
        stream.transactions.ended(producer_id, offset, commit)
        stream.producers.fence(producer_id, epoch)
        stream.dispatch(now)  # the last stable offset moved: AMQP readers go on

    def _streams(self) -> list[Stream]:
        return [queue for queue in self.vhost.queues.values() if isinstance(queue, Stream)]

    def _log(self, txn: Transaction) -> None:
        journal = self.vhost.broker.journal
        if journal is not None:
            journal.transaction_logged(self.vhost, txn.transactional_id, record(txn, txn.state))

    def _schedule(self) -> None:
        self.vhost.broker.timers.schedule(self, self.next_deadline())


def record(txn: Transaction, state: State) -> dict[str, object]:
    """What a TXN record holds (store/records.py): enough to finish the
    transaction after a restart."""
    return {
        "producer_id": txn.producer_id, "epoch": txn.epoch, "last_epoch": txn.last_epoch,
        "timeout_ms": int(txn.timeout * 1000),
        "state": state.value, "started": txn.started,
        "partitions": [stream.store_id or 0 for stream in txn.partitions],
        "offsets": [[group, stream.store_id or 0, offset, metadata]
                    for (group, stream), (offset, metadata) in txn.offsets.items()] if state is not State.COMPLETE_COMMIT else [],
    }
