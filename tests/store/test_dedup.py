"""Deduplication on a durable owner: an id counts only once its message is
taken, across restarts too (issue 22, item 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from amqlite.core.message import Properties

from .support import TINY, Store, drain

NOW = 1000.0
DEDUP = {"x-message-deduplication": True}
FULL = {"x-max-length": 1, "x-overflow": "reject-publish"}


def with_id(value: object) -> Properties:
    return Properties(delivery_mode=2, headers={"x-deduplication-header": value})


def publish(store: Store, body: bytes, ident: object, exchange: str = "") -> object:
    return store.ch.publish(body, exchange=exchange, routing_key="q", properties=with_id(ident), now=NOW)


@pytest.mark.parametrize("owner", ["queue", "exchange"])
def test_an_id_refused_by_reject_publish_is_not_remembered_after_a_restart(tmp_path: Path, owner: str) -> None:
    store = Store(tmp_path, segment_size=TINY)
    store.ch.declare_queue("q", durable=True, arguments={**FULL, **(DEDUP if owner == "queue" else {})}, now=NOW)
    exchange = ""
    if owner == "exchange":
        exchange = "dedup"
        store.ch.declare_exchange(exchange, "fanout", durable=True, arguments=DEDUP)
        store.ch.bind_queue("q", exchange)
    publish(store, b"first", 1, exchange)
    refused = publish(store, b"second", 2, exchange)
    assert refused is not None and refused.rejected  # type: ignore[attr-defined]
    store.ch.declare_queue("other", durable=True, now=NOW)  # the log goes on after the refusal
    store.sync()
    store = store.restart()
    assert drain(store.ch, "q") == [(b"first", False)]
    store.sync()
    store = store.restart()  # the segments of the refused id's records may have gone meanwhile
    retried = publish(store, b"second", 2, exchange)
    assert retried is not None and retried.routed == 1 and not retried.duplicate  # type: ignore[attr-defined]
    store.sync()
    store = store.restart(crash=True)
    again = publish(store, b"second", 2, exchange)
    assert again is not None and again.duplicate  # type: ignore[attr-defined]
    assert drain(store.ch, "q") == [(b"second", False)]
    store.close()


@pytest.mark.parametrize("arguments", [DEDUP, {"x-queue-type": "stream", **DEDUP}], ids=["queue", "stream"])
def test_an_id_refused_while_the_disk_is_low_is_not_remembered(tmp_path: Path, arguments: dict) -> None:
    store = Store(tmp_path)
    store.ch.declare_queue("q", durable=True, arguments=arguments, now=NOW)
    store.journal.disk_low = True  # not accepting: persistent publishes are nacked
    refused = publish(store, b"m", "id")
    assert refused is not None and refused.rejected  # type: ignore[attr-defined]
    store.sync()
    store.journal.disk_low = False
    retried = publish(store, b"m", "id")
    assert retried is not None and retried.routed == 1 and not retried.duplicate  # type: ignore[attr-defined]
    store.sync()
    store = store.restart()
    assert store.queue("q").message_count == 1
    store.close()


def test_a_handed_back_id_keeps_the_record_it_hides_until_that_one_is_gone(tmp_path: Path) -> None:
    """The record handing an id back must outlive the record taking it:
    deleted first, the id would come back at the next start."""
    store = Store(tmp_path)
    store.ch.declare_queue("q", durable=True, arguments={**DEDUP, **FULL}, now=NOW)
    store.ch.declare_queue("keep", durable=True, now=NOW)
    publish(store, b"first", 1)
    store.ch.publish(b"k", routing_key="keep", properties=Properties(delivery_mode=2), now=NOW)  # keeps its segment
    queue = store.queue("q")
    enqueue = queue.enqueue

    def refuse_in_a_new_segment(*args: object) -> bool:
        store.journal.log.roll()  # the id taken in one segment, handed back in the next
        return enqueue(*args)

    queue.enqueue = refuse_in_a_new_segment
    publish(store, b"second", 2)
    del queue.enqueue
    store.journal.log.roll()
    store.ch.publish(b"k2", routing_key="keep", properties=Properties(delivery_mode=2), now=NOW)
    for _ in range(3):  # compaction before and after restarts
        store.sync()
        store.sync()
        store = store.restart()
    assert drain(store.ch, "q") == [(b"first", False)]
    retried = publish(store, b"second", 2)
    assert retried is not None and not retried.duplicate  # type: ignore[attr-defined]
    store.close()
