"""The transaction coordinator (core/transactions.py) and what a partition
shows of its transactions (core/visibility.py): epochs and fencing, markers
in every partition, the last stable offset, aborted records hidden from
AMQP readers, pending group offsets, and transaction.timeout.ms on the
broker's timers (trio's autojump clock through the embedded broker)."""

from __future__ import annotations

import trio

from amqlite.core.broker import Broker
from amqlite.core.channel import Channel
from amqlite.core.idempotence import MAX_EPOCH, ProducerIds
from amqlite.core.stream import Stream
from amqlite.core.transactions import (
    INVALID_TXN_STATE, NONE, PRODUCER_FENCED, State, TransactionCoordinator,
)
from amqlite.kafka import records
from amqlite.kafka.mapping import marker
from amqlite.kafka.produce import append
from amqlite.kafka.records import Record

from support import deliveries

STREAM = {"x-queue-type": "stream"}


def setup(broker: Broker) -> tuple[TransactionCoordinator, Stream, Stream, Channel]:
    ch = broker.connect().open_channel()
    streams = []
    for name in ("payments", "audit"):
        stream = ch.declare_queue(name, durable=True, arguments=STREAM, now=0.0)
        assert isinstance(stream, Stream)
        streams.append(stream)
    vhost = broker.vhosts["/"]
    vhost.producer_ids = ProducerIds(1000)
    vhost.transactions = TransactionCoordinator(vhost, vhost.producer_ids, marker)
    return vhost.transactions, streams[0], streams[1], ch


def send(stream: Stream, producer: tuple[int, int], sequence: int, *values: bytes) -> int:
    """A transactional batch of ``values``, as a producer sends it."""
    rows = [Record(i, 1_700_000_000_000, None, value) for i, value in enumerate(values)]
    data = records.encode(0, rows, producer_id=producer[0], producer_epoch=producer[1], base_sequence=sequence,
                          flags=records.TRANSACTIONAL)
    error, base, why = append(stream, data, 0.0)
    assert error.value == 0, why
    return base


def test_commit_and_abort_write_markers_and_move_the_last_stable_offset(broker: Broker) -> None:
    txns, payments, audit, _ = setup(broker)
    error, pid, epoch = txns.init_producer("t", 60.0, -1, -1, 0.0)
    assert (error, epoch) == (NONE, 0)
    assert txns.add_partitions("t", pid, epoch, [payments, audit], 0.0) == NONE
    send(payments, (pid, epoch), 0, b"p1")
    send(audit, (pid, epoch), 0, b"a1")
    assert payments.transactions.stable(payments.end) == 0  # open: nothing stable yet
    assert txns.end("t", pid, epoch, True, 1.0) == NONE
    assert txns.transactions["t"].state is State.COMPLETE_COMMIT
    assert (payments.end, payments.transactions.stable(payments.end)) == (2, 2)  # the record and its marker
    assert txns.add_partitions("t", pid, epoch, [payments], 2.0) == NONE
    send(payments, (pid, epoch), 1, b"p2", b"p2b")
    assert payments.transactions.stable(payments.end) == 2
    assert txns.end("t", pid, epoch, False, 3.0) == NONE
    assert payments.transactions.stable(payments.end) == 5
    assert payments.transactions.aborted_between(0, 5) == [(pid, 2, 4)]
    assert [payments.transactions.aborted(n) for n in range(5)] == [False, False, True, True, False]
    assert audit.end == 2  # the second transaction never touched it: no marker there


def test_amqp_readers_skip_markers_and_aborted_records_and_wait_at_the_last_stable_offset(broker: Broker) -> None:
    txns, payments, _, _ = setup(broker)
    _, pid, epoch = txns.init_producer("t", 60.0, -1, -1, 0.0)
    reader = broker.connect().open_channel()
    reader.qos(100, now=0.0)
    reader.consume("payments", now=0.0, arguments={"x-stream-offset": "first"})
    for n, commit in ((1, True), (2, False), (3, None)):
        txns.add_partitions("t", pid, epoch, [payments], 0.0)
        send(payments, (pid, epoch), n - 1, b"%d" % n)
        if commit is not None:
            txns.end("t", pid, epoch, commit, 0.0)
    got = deliveries(reader)
    assert [(d.stream_offset, d.message.body) for d in got] == [(0, b"1")]  # 2 aborted, 3 still open
    txns.end("t", pid, epoch, True, 0.0)
    assert [(d.stream_offset, d.message.body) for d in deliveries(reader)] == [(4, b"3")]


def test_a_new_instance_bumps_the_epoch_aborts_what_was_open_and_fences_the_old_one(broker: Broker) -> None:
    txns, payments, _, _ = setup(broker)
    _, pid, old = txns.init_producer("t", 60.0, -1, -1, 0.0)
    txns.add_partitions("t", pid, old, [payments], 0.0)
    send(payments, (pid, old), 0, b"zombie")
    error, same_pid, new = txns.init_producer("t", 60.0, -1, -1, 1.0)
    assert (error, same_pid, new) == (NONE, pid, old + 2)  # one bump for the abort, one for the new instance
    assert payments.transactions.stable(payments.end) == payments.end and payments.transactions.aborted(0)
    assert txns.end("t", pid, old, True, 2.0) == PRODUCER_FENCED
    assert txns.add_partitions("t", pid, old, [payments], 2.0) == PRODUCER_FENCED
    error, _, _ = append(payments, records.encode(0, [Record(0, 0, None, b"late")], producer_id=pid,
                                                  producer_epoch=old, base_sequence=1,
                                                  flags=records.TRANSACTIONAL), 2.0)
    assert error.value == 47  # INVALID_PRODUCER_EPOCH: the zombie's batch is refused


def test_transaction_offsets_apply_at_commit_only(broker: Broker) -> None:
    txns, payments, _, _ = setup(broker)
    _, pid, epoch = txns.init_producer("t", 60.0, -1, -1, 0.0)
    assert txns.commit_offset("t", pid, epoch, "g", payments, 5, "") == INVALID_TXN_STATE  # no AddOffsetsToTxn
    for commit in (False, True):
        assert txns.add_offsets("t", pid, epoch, "g", 0.0) == NONE
        assert txns.commit_offset("t", pid, epoch, "g", payments, 0, "meta") == NONE
        assert txns.pending_offset("g", payments)
        assert "g" not in payments.group_offsets
        txns.end("t", pid, epoch, commit, 0.0)
        assert not txns.pending_offset("g", payments)
        assert ("g" in payments.group_offsets) is commit
    assert payments.group_offsets["g"].metadata == "meta"


async def test_transaction_timeout_aborts_and_fences_on_the_broker_timers(autojump_clock: object) -> None:
    from amqlite.embedded import open_broker

    async with open_broker() as embedded:
        txns, payments, _, _ = setup(embedded.core)
        _, pid, epoch = txns.init_producer("t", 10.0, -1, -1, embedded.now())
        txns.add_partitions("t", pid, epoch, [payments], embedded.now())
        send(payments, (pid, epoch), 0, b"abandoned")
        await trio.sleep(9)
        assert txns.transactions["t"].state is State.ONGOING
        await trio.sleep(2)
        assert txns.transactions["t"].state is State.COMPLETE_ABORT
        assert payments.transactions.aborted(0) and payments.transactions.stable(payments.end) == payments.end
        assert txns.end("t", pid, epoch, True, embedded.now()) == PRODUCER_FENCED


def test_the_last_stable_offset_never_falls_below_the_log_start(broker: Broker) -> None:
    """Retention may delete an open transaction's first records (Kafka's
    too: it bounds deletion by the high watermark only); the last stable
    offset is then the log start, as Kafka clamps the first unstable
    offset, not an offset no reader can fetch: a read_committed consumer
    resetting to latest was sent below the log start and heard
    OFFSET_OUT_OF_RANGE, again and again."""
    txns, _, _, ch = setup(broker)
    stream = ch.declare_queue("small", durable=True, now=0.0, arguments={
        **STREAM, "x-max-length-bytes": 100, "x-stream-max-segment-size-bytes": 50})
    assert isinstance(stream, Stream)
    _, pid, epoch = txns.init_producer("t", 60.0, -1, -1, 0.0)
    txns.add_partitions("t", pid, epoch, [stream], 0.0)
    send(stream, (pid, epoch), 0, b"open" * 20)
    for n in range(20):
        ch.publish(b"x" * 40, routing_key="small", now=0.0)
    assert stream.first > 0  # retention took the transaction's first batch
    assert stream.transactions.stable(stream.end) == stream.first
    txns.end("t", pid, epoch, False, 1.0)
    assert stream.transactions.stable(stream.end) == stream.end


def test_a_fencing_abort_at_the_last_epoch_ends_the_transaction_it_fences(broker: Broker) -> None:
    """An abort the producer did not ask for (a new instance here) when the
    epochs have run out: its markers must carry the producer id whose
    transaction is open in the partitions (Kafka fences with the epoch at
    Short.MaxValue and moves to a new producer id only for the next
    instance). Marked with the new id, the partition's transaction stayed
    open and its last stable offset stuck for ever."""
    txns, payments, _, _ = setup(broker)
    _, pid, _ = txns.init_producer("t", 60.0, -1, -1, 0.0)
    txns.transactions["t"].epoch = MAX_EPOCH - 1  # as after 32,766 instances
    epoch = MAX_EPOCH - 1
    assert txns.add_partitions("t", pid, epoch, [payments], 0.0) == NONE
    send(payments, (pid, epoch), 0, b"left open")
    error, new_pid, new_epoch = txns.init_producer("t", 60.0, -1, -1, 1.0)
    assert error == NONE and (new_pid, new_epoch) != (pid, epoch)
    assert payments.transactions.aborted(0)
    assert payments.transactions.stable(payments.end) == payments.end
    assert txns.add_partitions("t", new_pid, new_epoch, [payments], 2.0) == NONE
    send(payments, (new_pid, new_epoch), 0, b"next")
    assert txns.end("t", new_pid, new_epoch, True, 3.0) == NONE
    assert payments.transactions.stable(payments.end) == payments.end


def test_an_old_instance_asking_for_the_next_epoch_after_a_new_one_started_is_fenced(broker: Broker) -> None:
    """KIP-360: a producer that knows its id and epoch asks InitProducerId
    for the next one, and a retry of that request is answered with the
    epoch it was given; but only a retry (Kafka's lastProducerEpoch). A
    zombie asking after a new instance took the next epoch got that same
    epoch, and two instances wrote as one."""
    txns, payments, _, _ = setup(broker)
    _, pid, old = txns.init_producer("t", 60.0, -1, -1, 0.0)
    assert txns.init_producer("t", 60.0, -1, -1, 1.0) == (NONE, pid, old + 1)  # a new instance
    assert txns.init_producer("t", 60.0, pid, old, 2.0)[0] == PRODUCER_FENCED  # the zombie
    # The bump the producer asked for itself, and its retry.
    assert txns.init_producer("t", 60.0, pid, old + 1, 3.0) == (NONE, pid, old + 2)
    assert txns.init_producer("t", 60.0, pid, old + 1, 3.5) == (NONE, pid, old + 2)
    # A transaction aborted on its timeout fences its producer (lastProducerEpoch -1).
    assert txns.add_partitions("t", pid, old + 2, [payments], 4.0) == NONE
    txns.on_timer(100.0)
    assert txns.init_producer("t", 60.0, pid, old + 2, 101.0)[0] == PRODUCER_FENCED


def test_the_last_stable_offset_never_passes_the_high_watermark() -> None:
    """Records past what is on disk (the high watermark) are not served; a
    transaction open there and another ended there, marker not on disk,
    made the last stable offset the smaller of their first offsets, past
    the high watermark, and read_committed readers were sent records a
    crash could take back."""
    from amqlite.core.visibility import Visibility

    visibility = Visibility()
    visibility.appended(1, 11, 1)
    visibility.appended(2, 12, 1)
    visibility.ended(1, 13, True)
    assert visibility.stable(10) == 10
    assert visibility.stable(14) == 12


def test_ended_transactions_are_not_kept_once_settled_without_storage(broker: Broker) -> None:
    """Without storage everything appended is settled at once, so nothing
    waits for a marker to reach the disk; each ended transaction was kept
    as one waiting for ever (a tuple per transaction and partition: memory
    growing with every transaction of a long-running producer)."""
    txns, payments, _, _ = setup(broker)
    _, pid, epoch = txns.init_producer("t", 60.0, -1, -1, 0.0)
    for n in range(50):
        txns.add_partitions("t", pid, epoch, [payments], 0.0)
        send(payments, (pid, epoch), n, b"%d" % n)
        txns.end("t", pid, epoch, n % 2 == 0, 0.0)
    assert len(payments.transactions._ending) <= 1  # the newest marker's, settled by the next append
    assert payments.transactions.stable(payments.end) == payments.end
