"""Idempotent producers' sequence rules (core/idempotence.py)."""

from hypothesis import given, strategies as st

from amqlite.core.idempotence import KEPT_BATCHES, MAX_SEQUENCE, ProducerIds, ProducerStates, Verdict


def test_in_order_batches_append_and_a_retry_is_a_duplicate_with_its_offset() -> None:
    states = ProducerStates()
    assert states.check(7, 0, 0, 9) == (Verdict.APPEND, -1)
    states.appended(7, 0, 0, 9, 100)
    assert states.check(7, 0, 10, 14) == (Verdict.APPEND, -1)
    states.appended(7, 0, 10, 14, 110)
    assert states.check(7, 0, 0, 9) == (Verdict.DUPLICATE, 100)
    assert states.check(7, 0, 10, 14) == (Verdict.DUPLICATE, 110)


def test_a_gap_is_out_of_order() -> None:
    states = ProducerStates()
    states.appended(7, 0, 0, 9, 0)
    assert states.check(7, 0, 11, 12) == (Verdict.OUT_OF_ORDER, -1)
    assert states.check(7, 0, 5, 9) == (Verdict.OUT_OF_ORDER, -1)  # overlaps, not a batch it stored


def test_only_the_last_five_batches_are_remembered() -> None:
    states = ProducerStates()
    for n in range(KEPT_BATCHES + 1):
        states.appended(1, 0, n, n, 50 + n)
    assert states.check(1, 0, 1, 1) == (Verdict.DUPLICATE, 51)
    assert states.check(1, 0, 0, 0) == (Verdict.OUT_OF_ORDER, -1)


def test_a_newer_epoch_starts_at_zero_and_fences_the_older() -> None:
    states = ProducerStates()
    states.appended(1, 0, 0, 4, 0)
    assert states.check(1, 1, 5, 6) == (Verdict.OUT_OF_ORDER, -1)
    assert states.check(1, 1, 0, 2) == (Verdict.APPEND, -1)
    states.appended(1, 1, 0, 2, 5)
    assert states.check(1, 0, 5, 6) == (Verdict.FENCED, -1)
    assert states.check(1, 1, 0, 2) == (Verdict.DUPLICATE, 5)


def test_unknown_producer_may_start_anywhere_and_sequences_wrap() -> None:
    states = ProducerStates()
    assert states.check(3, 0, 12345, 12346) == (Verdict.APPEND, -1)
    states.appended(3, 0, MAX_SEQUENCE - 1, MAX_SEQUENCE, 0)
    assert states.check(3, 0, 0, 3) == (Verdict.APPEND, -1)
    assert states.check(3, 0, 1, 3) == (Verdict.OUT_OF_ORDER, -1)


@given(st.lists(st.integers(1, 4), min_size=1, max_size=30), st.data())
def test_retries_store_each_batch_once(sizes: list[int], data: st.DataObject) -> None:
    """A producer that resends any already sent batches (as after lost
    responses) never gets one stored twice, and every batch lands."""
    states = ProducerStates()
    log: list[int] = []  # the sequence number stored at each offset
    sent: list[tuple[int, int]] = []
    seq = 0
    for size in sizes:
        batch = (seq, seq + size - 1)
        seq += size
        sent.append(batch)
        window = sent[-KEPT_BATCHES:]
        for first, last in [batch] + data.draw(st.lists(st.sampled_from(window), max_size=3)):
            verdict, offset = states.check(9, 0, first, last)
            if verdict is Verdict.APPEND:
                states.appended(9, 0, first, last, len(log))
                log.extend(range(first, last + 1))
            else:
                assert verdict is Verdict.DUPLICATE
                assert log[offset] == first
    assert log == list(range(seq))


def test_producer_ids_are_new_each_time_and_epochs_bump_once() -> None:
    ids = ProducerIds()
    assert ids.new() == (1, 0)
    assert ids.new() == (2, 0)
    assert ids.bump(1, 0) == (1, 1)
    assert ids.bump(1, 0) == (1, 1)  # the same request again
    assert ids.bump(1, 1) == (1, 2)
    assert ids.bump(1, 0) is None  # fenced
    assert ids.bump(99, 0) == (3, 0)  # unknown: a new id
