"""The transaction coordinator and each partition's last stable offset
against a simple model (hypothesis state machine).

Two applications (transactional ids) begin transactions, add partitions,
produce, commit or abort, start a new instance (fencing the old one) and
abandon transactions that time out, while the old instances, kept as
zombies, keep trying. The model is a list of records per partition and
the fate of each transaction. The invariants are what readers rely on:
the last stable offset is the first record of the oldest open
transaction (or the end), a read_committed reader sees exactly the
records of committed transactions before it, in order, and a zombie is
never let in.
"""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from amqlite.core.broker import Broker
from amqlite.core.idempotence import ProducerIds
from amqlite.core.stream import Stream
from amqlite.core.transactions import NONE, PRODUCER_FENCED, State, TransactionCoordinator
from amqlite.kafka import records
from amqlite.kafka.mapping import marker
from amqlite.kafka.produce import append
from amqlite.kafka.records import Record

IDS = ("a", "b")
PARTITIONS = 2
TIMEOUT = 10.0


class App:
    """One instance of an application: what it believes its producer is."""

    def __init__(self, producer_id: int, epoch: int) -> None:
        self.producer_id, self.epoch = producer_id, epoch
        #: The next sequence per partition (idempotence: 0 with each epoch).
        self.sequences = [0] * PARTITIONS


class TransactionsMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.broker = Broker()
        ch = self.broker.connect().open_channel()
        self.streams: list[Stream] = []
        for n in range(PARTITIONS):
            stream = ch.declare_queue(f"p{n}", durable=True, arguments={"x-queue-type": "stream"}, now=0.0)
            assert isinstance(stream, Stream)
            self.streams.append(stream)
        vhost = self.broker.vhosts["/"]
        self.coordinator = TransactionCoordinator(vhost, ProducerIds(1), marker)
        vhost.transactions = self.coordinator
        self.now = 0.0
        self.apps: dict[str, App] = {}
        self.zombies: list[tuple[str, App]] = []
        #: The model: each id's open transaction (its number, partitions,
        #: start), each transaction's records (partition, offset) and the
        #: committed ones.
        self.open: dict[str, tuple[int, set[int], float]] = {}
        self.records: dict[tuple[str, int], list[tuple[int, int]]] = {}
        self.committed: set[tuple[str, int]] = set()
        self.count = 0

    def _close(self, tid: str, committed: bool) -> None:
        number, _, _ = self.open.pop(tid)
        if committed:
            self.committed.add((tid, number))

    @rule(tid=st.sampled_from(IDS))
    def start_instance(self, tid: str) -> None:
        error, producer_id, epoch = self.coordinator.init_producer(tid, TIMEOUT, -1, -1, self.now)
        assert error == NONE
        if tid in self.open:
            self._close(tid, False)  # the new instance aborts what the old left open
        if tid in self.apps:
            self.zombies.append((tid, self.apps[tid]))
        self.apps[tid] = App(producer_id, epoch)

    @rule(tid=st.sampled_from(IDS), partitions=st.sets(st.integers(0, PARTITIONS - 1), min_size=1))
    def add_partitions(self, tid: str, partitions: set[int]) -> None:
        app = self.apps.get(tid)
        if app is None:
            return
        error = self.coordinator.add_partitions(tid, app.producer_id, app.epoch,
                                                [self.streams[n] for n in partitions], self.now)
        if error == PRODUCER_FENCED:
            assert self.coordinator.transactions[tid].epoch != app.epoch
            return
        assert error == NONE
        if tid not in self.open:
            self.count += 1
            self.open[tid] = (self.count, set(), self.now)
        self.open[tid][1].update(partitions)

    @rule(tid=st.sampled_from(IDS), partition=st.integers(0, PARTITIONS - 1), zombie=st.booleans())
    def produce(self, tid: str, partition: int, zombie: bool) -> None:
        candidates = [app for z, app in self.zombies if z == tid] if zombie else [self.apps.get(tid)]
        if not candidates or candidates[-1] is None:
            return
        app = candidates[-1]
        stream = self.streams[partition]
        data = records.encode(0, [Record(0, 0, None, b"x")], producer_id=app.producer_id, producer_epoch=app.epoch,
                              base_sequence=app.sequences[partition], flags=records.TRANSACTIONAL)
        offset = stream.end
        error, base, _ = append(stream, data, self.now)
        txn = self.open.get(tid)
        allowed = not zombie and txn is not None and partition in txn[1] and \
            self.coordinator.transactions[tid].epoch == app.epoch
        assert (error.value == 0) == allowed, (error, zombie, txn)
        if allowed:
            assert base == offset
            app.sequences[partition] += 1
            assert txn is not None
            self.records.setdefault((tid, txn[0]), []).append((partition, offset))

    @rule(tid=st.sampled_from(IDS), commit=st.booleans(), zombie=st.booleans())
    def end(self, tid: str, commit: bool, zombie: bool) -> None:
        candidates = [app for z, app in self.zombies if z == tid] if zombie else [self.apps.get(tid)]
        if not candidates or candidates[-1] is None:
            return
        app = candidates[-1]
        error = self.coordinator.end(tid, app.producer_id, app.epoch, commit, self.now)
        if zombie or self.coordinator.transactions[tid].epoch != app.epoch:
            assert error == PRODUCER_FENCED
            return
        if tid in self.open:
            assert error == NONE
            self._close(tid, commit)

    @rule(seconds=st.sampled_from([1.0, 4.0, 11.0]))
    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.broker.tick(self.now)
        for tid, (_, _, started) in list(self.open.items()):
            if started + TIMEOUT <= self.now:
                self._close(tid, False)  # timed out: aborted, and its instance fenced

    @invariant()
    def states_agree(self) -> None:
        for tid, txn in self.coordinator.transactions.items():
            assert (txn.state is State.ONGOING) == (tid in self.open), (tid, txn.state)

    @invariant()
    def last_stable_offset_and_read_committed(self) -> None:
        for n, stream in enumerate(self.streams):
            open_firsts = [offset for (tid, number), kept in self.records.items()
                           if tid in self.open and self.open[tid][0] == number
                           for partition, offset in kept if partition == n]
            stable = stream.transactions.stable(stream.end)
            assert stable == min(open_firsts, default=stream.end)
            expected = sorted(offset for key, kept in self.records.items() if key in self.committed
                              for partition, offset in kept if partition == n and offset < stable)
            seen = []
            for offset, batch in stream.entries_from(stream.first, 1 << 30) or []:
                header = records.stored(batch.data)
                if offset < stable and not header.attributes & records.CONTROL:
                    seen.extend(o for o in range(offset, offset + header.record_count)
                                if not stream.transactions.aborted(o))
            assert seen == expected


TestTransactions = TransactionsMachine.TestCase
TestTransactions.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
