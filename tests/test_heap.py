"""Freed heap memory goes back to the OS (issue 10, defect 10): RSS stayed
at its peak after a large drain until malloc_trim was called from outside."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import trio

from amqlite import heap
from amqlite.core.broker import Broker
from amqlite.core.channel import Channel

glibc = pytest.mark.skipif(heap.free_bytes() is None, reason="needs glibc 2.33+ (mallinfo2, malloc_trim)")

# In a fresh interpreter: the test process's own heap history would blur it.
_PROBE = """
from amqlite import heap

def resident_mb():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 // 2**20

trimmer = heap.Trimmer(min_free=32 * 2**20)
trimmer()  # start from what is free now
bodies, pins = [], []
for i in range(10_000):
    bodies.append(bytes(10_000))  # message bodies, 100 MB
    if i % 50 == 0:
        pins.append(bytes(900))  # small live allocations in between: glibc cannot shrink the heap itself
peak = resident_mb()
del bodies
freed = resident_mb()
released = trimmer()
print(peak, freed, resident_mb(), released, trimmer())
"""


@glibc
def test_a_trim_returns_freed_memory_once_and_not_again() -> None:
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True).stdout
    peak, freed, trimmed, released, again = out.split()
    assert int(freed) > int(peak) - 30  # freed, but still held by the process
    assert int(released) >= 80 * 2**20
    assert int(trimmed) < int(peak) - 60
    assert again == "None"  # trimmed pages still count as free: no second trim for nothing


_REFILL_PROBE = """
from amqlite import heap

def fill():
    bodies, pins = [], []
    for i in range(10_000):
        bodies.append(bytes(10_000))
        if i % 50 == 0:
            pins.append(bytes(900))
    return bodies, pins

trimmer = heap.Trimmer(min_free=32 * 2**20)
bodies, pins = fill()
del bodies
first = trimmer()  # after writes, as the store driver calls it
bodies, more_pins = fill()  # the same pages, taken again
del bodies
print(first, trimmer(), trimmer.trim_now())
"""


@glibc
def test_after_a_trim_and_a_refill_a_drain_is_handed_back_again() -> None:
    """Free bytes count trimmed pages as free: after a trim and a refill,
    the next drain only brings them back to where they were after the
    trim, so the gated trim sees nothing new (1.5 GB of 10 KB messages
    stayed resident after a purge). The trigger that counts what left the
    queues trims at once, and says how much the resident set shrank."""
    out = subprocess.run([sys.executable, "-c", _REFILL_PROBE], capture_output=True, text=True, check=True).stdout
    first, gated, now = out.split()
    assert int(first) >= 80 * 2**20
    assert gated == "None"
    assert int(now) >= 60 * 2**20


MIB = 2**20


def fill(channel: Channel, count: int) -> None:
    for _ in range(count):
        channel.publish(bytes(MIB), routing_key="q", now=0.0)


async def test_a_purge_and_a_drain_of_transient_messages_trim_the_heap(autojump_clock: Any) -> None:
    """Issue 22, item 7: only disk writes led to a trim, so after a drain
    or purge of transient messages the memory stayed resident. 80 MiB of
    messages leaving the queues (purged, or consumed and acked) trigger a
    trim at the next look, within a second; 20 MiB do not, nor does
    anything within TRIM_INTERVAL of the last trim. The trim runs in a
    worker thread, which the autojump clock may outrun: times are those
    of the looks at the count, on the trio thread."""
    core = Broker()
    channel = core.connect().open_channel()
    channel.declare_queue("q", now=0.0)
    looks: list[tuple[float, int]] = []
    trims: list[int] = []

    def freed() -> int:
        looks.append((trio.current_time(), core.freed_bytes))
        return core.freed_bytes

    def trim() -> int:  # in a worker thread
        trims.append(len(looks))  # after which look
        return 0

    async def trimmed(count: int) -> float:
        """When the look that led to trim number ``count`` was."""
        while len(trims) < count:
            await trio.sleep(0.1)
        return looks[trims[count - 1] - 1][0]

    async with trio.open_nursery() as nursery:
        nursery.start_soon(heap.trim_after_frees, freed, trim)
        await trio.sleep(0)
        fill(channel, 20)
        channel.purge_queue("q")
        await trio.sleep(5)
        assert trims == []  # 20 MiB: not worth a walk of the heap
        fill(channel, 80)
        channel.purge_queue("q")
        purged_at = trio.current_time()
        first = await trimmed(1)
        assert first - purged_at <= heap.FREED_CHECK_INTERVAL

        fill(channel, 80)
        while (got := channel.get("q", now=0.0)) is not None:  # drained, acked one by one
            channel.ack(got.delivery_tag, now=0.0)
        second = await trimmed(2)
        assert second - first >= heap.TRIM_INTERVAL
        await trio.sleep(3 * heap.TRIM_INTERVAL)
        assert len(trims) == 2  # nothing more left the queues
        nursery.cancel_scope.cancel()


_MAP_PROBE = """
from amqlite import heap
big = bytearray(4 << 20)  # mapped, freed: glibc raises its threshold past it ...
del big
assert heap.map_large_blocks()
before = heap._libc.mallinfo2().hblkhd
block = bytearray(1 << 20)  # ... which the fixed threshold undoes: this one is mapped too
print(heap._libc.mallinfo2().hblkhd - before)
"""


@glibc
def test_map_large_blocks_keeps_a_freed_large_block_from_raising_the_threshold() -> None:
    # In a fresh interpreter: in the suite's, earlier tests leave free chunks
    # in the heap big enough to serve the block without a mapping.
    out = subprocess.run([sys.executable, "-c", _MAP_PROBE], capture_output=True, text=True, check=True).stdout
    assert int(out) >= 1 << 20
