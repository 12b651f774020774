"""Idempotent producers: each batch is stored once, whatever the retries.

Kafka's rules (``ProducerStateManager`` and ``ProducerAppendInfo`` in the
broker), which today's clients rely on since they turn idempotence on by
default:

- A producer gets an id and an epoch from InitProducerId
  (:class:`ProducerIds`, broker-wide). Ids count up from a start the
  driver derives from the clock at boot (ms << 16), so a restarted broker
  never hands out an id again without journalling any.
- Each batch carries the producer id, its epoch and the sequence number
  of its first record; sequences run on per producer and partition.
- A partition (a stream) keeps, per producer, the sequences and base
  offsets of its last five batches (:class:`ProducerStates`): a batch
  seen again is a duplicate, answered with the offset it got the first
  time and not stored again; a batch that does not follow the last one is
  out of order (the producer retries what came before it first).
- A newer epoch starts its sequences at 0 and fences the older epoch:
  its batches are refused from then on.

Pure: the stream asks before it appends and tells after. The state is
rebuilt at recovery from the batches themselves (their headers carry
producer, epoch and sequence), so a retry after ``kill -9`` of a batch
that reached the disk is still a duplicate.
"""

from __future__ import annotations

from collections import deque
from enum import Enum

import attrs

#: Batches remembered per producer and partition (Kafka's
#: max.in.flight.requests.per.connection limit for idempotence).
KEPT_BATCHES = 5
#: Sequence numbers wrap to 0 after this one.
MAX_SEQUENCE = 0x7FFFFFFF
MAX_EPOCH = 0x7FFF


class Verdict(Enum):
    APPEND = "append"
    DUPLICATE = "duplicate"
    OUT_OF_ORDER = "out of order"
    FENCED = "fenced"


@attrs.define(slots=True, eq=False)
class _Producer:
    epoch: int
    #: (first sequence, last sequence, base offset) of the newest batches.
    batches: deque[tuple[int, int, int]] = attrs.field(factory=lambda: deque(maxlen=KEPT_BATCHES))


class ProducerStates:
    """One partition's producers: what their last batches were."""

    def __init__(self) -> None:
        self._producers: dict[int, _Producer] = {}

    def __len__(self) -> int:
        return len(self._producers)

    def check(self, producer_id: int, epoch: int, first: int, last: int) -> tuple[Verdict, int]:
        """Whether a batch with these sequences may be appended; for a
        duplicate, the base offset it was stored at."""
        producer = self._producers.get(producer_id)
        if producer is None:
            # Unknown here (new, or its batches gone with retention): any
            # sequence starts it, as Kafka accepts.
            return Verdict.APPEND, -1
        if epoch < producer.epoch:
            return Verdict.FENCED, -1
        if epoch > producer.epoch:
            return (Verdict.APPEND, -1) if first == 0 else (Verdict.OUT_OF_ORDER, -1)
        for batch_first, batch_last, base_offset in producer.batches:
            if batch_first == first and batch_last == last:
                return Verdict.DUPLICATE, base_offset
        newest = producer.batches[-1][1] if producer.batches else -1
        expected = 0 if newest == MAX_SEQUENCE else newest + 1
        return (Verdict.APPEND, -1) if first == expected else (Verdict.OUT_OF_ORDER, -1)

    def appended(self, producer_id: int, epoch: int, first: int, last: int, base_offset: int) -> None:
        producer = self._producers.get(producer_id)
        if producer is None or epoch != producer.epoch:
            producer = self._producers[producer_id] = _Producer(epoch)
        producer.batches.append((first, last, base_offset))


    def epoch_of(self, producer_id: int) -> int:
        producer = self._producers.get(producer_id)
        return producer.epoch if producer is not None else 0

    def fence(self, producer_id: int, epoch: int) -> None:
        """A transaction marker of ``epoch`` (core/transactions.py): a newer
        epoch than the producer's batches here fences them, and its own
        start at sequence 0."""
        producer = self._producers.get(producer_id)
        if producer is None or epoch > producer.epoch:
            self._producers[producer_id] = _Producer(epoch)


class ProducerIds:
    """The producer ids InitProducerId hands out, broker-wide, and the
    current epoch of each."""

    def __init__(self, first_id: int = 1) -> None:
        self.next_id = first_id
        self.epochs: dict[int, int] = {}

    @classmethod
    def from_clock(cls, now: float) -> ProducerIds:
        """Ids counting up from the wall clock in ms << 16: above any a
        previous run handed out, without journalling any."""
        return cls(int(now * 1000) << 16)

    def new(self) -> tuple[int, int]:
        producer_id = self.next_id
        self.next_id += 1
        self.epochs[producer_id] = 0
        return producer_id, 0

    def bump(self, producer_id: int, epoch: int) -> tuple[int, int] | None:
        """KIP-360: a producer that knows its id and epoch asks for the
        next epoch (after an error it cannot otherwise recover from). A
        retry of that request gets the same answer; an older epoch is
        fenced (None). An unknown id, or one out of epochs, gets a new id."""
        current = self.epochs.get(producer_id)
        if current is None or current >= MAX_EPOCH:
            return self.new()
        if epoch == current - 1:
            return producer_id, current
        if epoch != current:
            return None
        self.epochs[producer_id] = current + 1
        return producer_id, current + 1
