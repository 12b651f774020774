"""Kafka transactions in the journal: whatever prefix of an EndTxn's write
reaches the disk before a crash, the restarted broker has the transaction
wholly committed (its records visible in every partition, its group
offsets set) or wholly aborted (its records aborted in every partition,
its offsets not set), and no partition is left with it open. Also: the
transactional id keeps its producer id and epoch across a restart, and
the next transaction waits (CONCURRENT_TRANSACTIONS) until the journal
holds the end of the last one."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from amqlite.core.idempotence import ProducerIds
from amqlite.core.stream import Stream
from amqlite.core.transactions import CONCURRENT_TRANSACTIONS, NONE, PRODUCER_FENCED, State, TransactionCoordinator
from amqlite.kafka import records
from amqlite.kafka.mapping import marker
from amqlite.kafka.produce import append
from amqlite.kafka.records import Record
from amqlite.store.journal import DiskJournal

from .support import Store

STREAM = {"x-queue-type": "stream"}
NOW = 1000.0


def coordinator(store: Store) -> TransactionCoordinator:
    vhost = store.vhost
    if vhost.transactions is None:
        vhost.producer_ids = ProducerIds.from_clock(NOW)
        vhost.transactions = TransactionCoordinator(vhost, vhost.producer_ids, marker)
    return vhost.transactions


def streams(store: Store) -> tuple[Stream, Stream]:
    found = store.queue("payments"), store.queue("audit")
    assert all(isinstance(stream, Stream) for stream in found)
    return found


def send(stream: Stream, producer_id: int, epoch: int, sequence: int, value: bytes) -> None:
    data = records.encode(0, [Record(0, 1_700_000_000_000, None, value)], producer_id=producer_id,
                          producer_epoch=epoch, base_sequence=sequence, flags=records.TRANSACTIONAL)
    error, _, why = append(stream, data, NOW)
    assert error.value == 0, why


def ready(tmp_path: Path) -> tuple[Store, int, int]:
    """A committed transaction, then a second one with its records and a
    group offset, on disk, not yet ended."""
    store = Store(tmp_path / "base")
    for name in ("payments", "audit"):
        store.ch.declare_queue(name, durable=True, arguments=STREAM, now=NOW)
    txns = coordinator(store)
    payments, audit = streams(store)
    _, pid, epoch = txns.init_producer("app", 60.0, -1, -1, NOW)
    for n in (0, 1):
        assert txns.add_partitions("app", pid, epoch, [payments, audit], NOW) == NONE
        send(payments, pid, epoch, n, b"p%d" % n)
        send(audit, pid, epoch, n, b"a%d" % n)
        assert txns.add_offsets("app", pid, epoch, "billing", NOW) == NONE
        assert txns.commit_offset("app", pid, epoch, "billing", payments, 2 * n + 1, "m") == NONE
        store.sync()
        if n == 0:
            assert txns.end("app", pid, epoch, True, NOW) == NONE
            store.sync()
    return store, pid, epoch


def visible(stream: Stream) -> list[int]:
    """Which of the two transactions' records (offsets 0 and 2, each
    followed by its marker) a read_committed reader sees."""
    assert stream.end == 4, "a marker missing, or written twice"
    stable = stream.transactions.stable(stream.end)
    return [offset for offset in (0, 2) if offset < stable and not stream.transactions.aborted(offset)]


@pytest.mark.parametrize("commit", [True, False])
def test_end_txn_cut_after_any_record_is_all_or_nothing(tmp_path: Path, commit: bool) -> None:
    store, pid, epoch = ready(tmp_path)
    assert coordinator(store).end("app", pid, epoch, commit, NOW) == NONE
    pending, _ = store.journal.take_batch()
    assert len(pending) >= 4  # Prepare, two markers, (GROUP,) Complete
    store.crash()
    outcomes = set()
    for cut in range(len(pending) + 1):
        directory = tmp_path / f"cut-{cut}"
        shutil.copytree(tmp_path / "base", directory)
        journal = DiskJournal(directory)  # the log as the crash left it: the write cut after ``cut`` records
        journal.log.write_and_sync(pending[:cut])
        journal.log.close()
        journal._lock_file.close()
        restarted = Store(directory)
        payments, audit = streams(restarted)
        for stream in (payments, audit):
            assert stream.transactions.stable(stream.end) == stream.end, f"cut {cut}: left open"
        seen = (visible(payments), visible(audit))
        offset = payments.group_offsets["billing"].committed
        if seen == ([0, 2], [0, 2]):
            outcomes.add("committed")
            assert offset == 3, f"cut {cut}: records committed without their offset"
        else:
            assert seen == ([0], [0]), f"cut {cut}: {seen}"
            outcomes.add("aborted")
            assert offset == 1, f"cut {cut}: an aborted transaction's offset"
        txns = restarted.vhost.transactions
        assert txns is not None
        restarted.sync()  # what recovery wrote to finish it
        txns.refresh()
        assert txns.transactions["app"].state in (State.COMPLETE_COMMIT, State.COMPLETE_ABORT)
        again = restarted.restart(crash=True)
        assert (visible(again.queue("payments")), visible(again.queue("audit"))) == seen
        again.close()
    # Nothing written: aborted (it was ongoing); once the decision is on
    # disk: what was decided.
    assert outcomes == ({"aborted", "committed"} if commit else {"aborted"})


def test_the_id_keeps_its_producer_across_a_restart_and_fences_the_old_epoch(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.ch.declare_queue("payments", durable=True, arguments=STREAM, now=NOW)
    _, pid, epoch = coordinator(store).init_producer("app", 60.0, -1, -1, NOW)
    store.sync()
    store = store.restart(crash=True)
    txns = store.vhost.transactions
    assert txns is not None
    error, again, bumped = txns.init_producer("app", 60.0, -1, -1, NOW)
    assert (error, again, bumped) == (NONE, pid, epoch + 1)
    assert txns.add_partitions("app", pid, epoch, [store.queue("payments")], NOW) == PRODUCER_FENCED


def one_open(directory: Path) -> tuple[Store, TransactionCoordinator, Stream, int, int]:
    """A transaction with one record in the stream ``payments``, open."""
    store = Store(directory)
    store.ch.declare_queue("payments", durable=True, arguments=STREAM, now=NOW)
    txns = coordinator(store)
    payments = store.queue("payments")
    _, pid, epoch = txns.init_producer("app", 60.0, -1, -1, NOW)
    txns.add_partitions("app", pid, epoch, [payments], NOW)
    send(payments, pid, epoch, 0, b"x")
    return store, txns, payments, pid, epoch


def test_the_next_transaction_waits_until_the_last_one_is_on_disk(tmp_path: Path) -> None:
    store, txns, payments, pid, epoch = one_open(tmp_path)
    assert txns.end("app", pid, epoch, True, NOW) == NONE
    assert txns.add_partitions("app", pid, epoch, [payments], NOW) == CONCURRENT_TRANSACTIONS
    assert txns.end("app", pid, epoch, True, NOW) == CONCURRENT_TRANSACTIONS  # its retry: not on disk yet
    store.sync()
    assert txns.end("app", pid, epoch, True, NOW) == NONE
    assert txns.add_partitions("app", pid, epoch, [payments], NOW) == NONE


def test_markers_are_written_while_the_disk_alarm_refuses_records(tmp_path: Path) -> None:
    """A decided transaction reaches its partitions even below
    disk_free_limit (as acks do): a restart must not take it for an open
    one and abort a commit."""
    store, txns, payments, pid, epoch = one_open(tmp_path)
    store.sync()
    store.journal.disk_low = True
    assert not store.journal.accepting
    assert txns.end("app", pid, epoch, True, NOW) == NONE
    assert (payments.end, payments.transactions.stable(payments.end)) == (2, 2)
    store.sync()
    restarted = store.restart(crash=True)
    payments = restarted.queue("payments")
    assert payments.end == 2 and payments.transactions.stable(2) == 2 and not payments.transactions.aborted(0)


@pytest.mark.parametrize("commit", [True, False])
def test_a_transaction_ended_in_memory_is_open_to_readers_of_what_is_on_disk(tmp_path: Path, commit: bool) -> None:
    """Until its marker is written, an ended transaction holds the last
    stable offset below the high watermark (Kafka's Fetch and ListOffsets
    read there): a crash before the write has it aborted at start-up, so a
    read_committed reader must not have seen it committed."""
    store, pid, epoch = ready(tmp_path)
    payments, _ = streams(store)
    assert coordinator(store).end("app", pid, epoch, commit, NOW) == NONE
    assert payments.transactions.stable(payments.end) == payments.end == 4  # in memory: ended
    assert payments.transactions.stable(payments.written_end()) == 2  # on disk: not yet
    store.sync()
    assert payments.transactions.stable(payments.written_end()) == payments.written_end() == 4
    store.close()


def test_new_producer_ids_after_a_restart_stay_clear_of_the_recovered_ones(tmp_path: Path) -> None:
    """Producer ids count up from the wall clock at start-up (ms << 16); a
    clock set back between two runs counts them up from below the
    recovered ones, and a start in the millisecond a previous run started
    in (a restored VM snapshot's clock) hands a new producer the id a
    recovered transactional id still has, the two then sharing one
    producer's state in every partition. New ids now start above them."""
    store = Store(tmp_path)
    _, pid, _ = coordinator(store).init_producer("t", 60.0, -1, -1, NOW)
    store.sync()
    store.crash()
    recovered = Store(tmp_path, now=NOW - 60)  # the clock went back a minute
    ids = recovered.vhost.producer_ids
    assert ids is not None and recovered.vhost.transactions is not None
    assert recovered.vhost.transactions.transactions["t"].producer_id == pid
    assert ids.new()[0] > pid


def test_a_transaction_recovery_completes_keeps_the_id_busy_until_its_record_is_on_disk(tmp_path: Path) -> None:
    """A crash kept an EndTxn's decision and markers but not its Complete
    record: recovery completes it, writing no marker (all are there), and
    its Complete record waits for the next write. The id was free at once,
    so a new instance's epoch went into the log before that stale record,
    and a second crash brought the id back at the old epoch: the new
    instance fenced, the old one let in."""
    store, pid, epoch = ready(tmp_path)
    assert coordinator(store).end("app", pid, epoch, True, NOW) == NONE
    pending, _ = store.journal.take_batch()
    store.crash()
    directory = tmp_path / "cut"
    shutil.copytree(tmp_path / "base", directory)
    journal = DiskJournal(directory)
    journal.log.write_and_sync(pending[:-1])  # all but the Complete record
    journal.log.close()
    journal._lock_file.close()
    restarted = Store(directory)
    txns = restarted.vhost.transactions
    assert txns is not None
    assert txns.init_producer("app", 60.0, -1, -1, NOW)[0] == CONCURRENT_TRANSACTIONS
    restarted.sync()
    assert txns.init_producer("app", 60.0, -1, -1, NOW) == (NONE, pid, epoch + 1)
    restarted.sync()
    again = restarted.restart(crash=True)
    assert again.vhost.transactions is not None
    assert again.vhost.transactions.transactions["app"].epoch == epoch + 1
