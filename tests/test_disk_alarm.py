"""A full disk is not a one-way trap (issue 10, defect 11): below
disk_free_limit persistent publishes are refused before the disk fills, the
space left takes the acks, and draining the queues gives the space back, so
the broker unblocks by itself."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
import trio

import amqlite
from amqlite import embedded, storage
from amqlite.core.message import Properties
from faultyfs import FaultyFS

PERSISTENT = Properties(delivery_mode=2)
LIMIT = 50_000_000


@pytest.fixture
def fs(monkeypatch: pytest.MonkeyPatch) -> FaultyFS:
    fs = FaultyFS()
    monkeypatch.setattr(embedded, "DiskJournal", functools.partial(embedded.DiskJournal, fs=fs))
    # The monitor's intervals are seconds; the test waits for the store's
    # worker threads in real time, so it looks often instead.
    monkeypatch.setattr(storage, "DISK_CHECK_INTERVAL", 0.01)
    monkeypatch.setattr(storage, "DISK_CHECK_INTERVAL_LOW", 0.01)
    return fs


async def until(condition: Any, timeout: float = 10.0) -> None:
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.01)


def _segments(path: Path) -> list[str]:
    return sorted(p.name for p in (path / "log").glob("*.seg"))


async def test_low_disk_refuses_persistent_publishes_and_draining_gives_the_space_back(
        tmp_path: Path, fs: FaultyFS) -> None:
    async with amqlite.open_broker(data_dir=tmp_path, segment_size=64 * 1024, disk_free_limit=LIMIT) as broker:
        journal = broker.core.journal
        assert journal is not None
        ch = await broker.channel()
        await ch.queue_declare("jobs", durable=True)
        await ch.confirm_select()
        for i in range(2000):
            await ch.publish(b"%04d" % i + bytes(200), routing_key="jobs", properties=PERSISTENT)
        filled = _segments(tmp_path)
        assert len(filled) > 3

        fs.free = LIMIT - 1
        await until(lambda: not journal.accepting)
        refused = await ch.publish(b"refused", routing_key="jobs", properties=PERSISTENT)
        assert refused is not None and refused.rejected  # a nack at once, not a wait for the disk
        transient = await ch.publish(b"transient", routing_key="jobs")
        assert transient is not None and not transient.rejected  # takes no disk

        # Consumers drain the queue: the acks are written in the space left,
        # and compaction deletes every segment the drain made obsolete,
        # the current one included.
        bodies = []
        while (delivery := await ch.get("jobs")) is not None:
            bodies.append(delivery.body[:4])
            delivery.ack()
        assert len(bodies) == 2001 and bodies[0] == b"0000"
        await until(lambda: not set(_segments(tmp_path)) & set(filled))
        assert len(_segments(tmp_path)) <= 1

        fs.free = None  # space is back
        await until(lambda: journal.accepting)
        accepted = await ch.publish(b"again", routing_key="jobs", properties=PERSISTENT)
        assert accepted is not None and not accepted.rejected and accepted.routed == 1
    async with amqlite.open_broker(data_dir=tmp_path) as broker:
        ch = await broker.channel()
        again = await ch.get("jobs")
        assert again is not None and again.body == b"again"  # the acked ones did not come back
        assert await ch.get("jobs") is None
