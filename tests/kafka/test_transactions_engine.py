"""The transaction APIs through the sans-IO engine on a broker with a
disk journal: which answers wait for the disk."""

from __future__ import annotations

import datetime
from pathlib import Path

from kio.schema.errors import ErrorCode

from kafka_support import decode_response, engine, request, request_frame, split_responses
from store.support import Store

INIT_PRODUCER_ID, ADD_OFFSETS_TO_TXN = 22, 25


def test_add_offsets_to_txn_is_answered_once_the_open_transaction_is_on_disk(tmp_path: Path) -> None:
    """Its TxnOffsetCommit stays in memory until EndTxn: answered before
    the disk had the open transaction, a kill -9 left the restarted broker
    with nothing to abort, the producer unfenced, and its commit (found in
    the cross-protocol campaign) carried the records without the offsets."""
    store = Store(tmp_path)
    conn = engine(store.broker)
    conn.receive_data(request_frame(request(INIT_PRODUCER_ID, 4, transactional_id="app", producer_id=-1,
                                            producer_epoch=-1, transaction_timeout=datetime.timedelta(seconds=60)),
                                    correlation_id=1), 0.0)
    store.sync()
    conn.storage_moved(0.0)
    [frame] = split_responses(conn.data_to_send(0.0))
    _, init = decode_response(frame, INIT_PRODUCER_ID, 4)
    conn.receive_data(request_frame(request(ADD_OFFSETS_TO_TXN, 3, transactional_id="app",
                                            producer_id=init.producer_id, producer_epoch=init.producer_epoch,
                                            group_id="g"), correlation_id=2), 0.0)
    assert conn.data_to_send(0.0) == b""  # the open transaction is not on disk yet
    store.sync()
    conn.storage_moved(0.0)
    [frame] = split_responses(conn.data_to_send(0.0))
    correlation_id, answer = decode_response(frame, ADD_OFFSETS_TO_TXN, 3)
    assert (correlation_id, answer.error_code) == (2, ErrorCode.none)
    # Once there, a crash keeps it open, and the restart aborts it and
    # fences the producer.
    restarted = store.restart(crash=True)
    txns = restarted.vhost.transactions
    assert txns is not None and txns.transactions["app"].epoch == init.producer_epoch + 1
    restarted.close()
