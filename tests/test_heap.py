"""Freed heap memory goes back to the OS (issue 10, defect 10): RSS stayed
at its peak after a large drain until malloc_trim was called from outside."""

from __future__ import annotations

import pytest

from amqlite import heap

pytestmark = pytest.mark.skipif(heap.free_bytes() is None, reason="needs glibc 2.33+ (mallinfo2, malloc_trim)")


def resident_mb() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 // 2**20


def test_a_trim_returns_freed_memory_once_and_not_again() -> None:
    trimmer = heap.Trimmer(min_free=32 * 2**20)
    trimmer()  # start from what is free now
    bodies, pins = [], []
    for i in range(10_000):
        bodies.append(bytes(10_000))  # message bodies, 100 MB
        if i % 50 == 0:
            pins.append(bytes(900))  # small live allocations in between: glibc cannot shrink the heap itself
    peak = resident_mb()
    del bodies
    assert resident_mb() > peak - 30  # freed, but still held by the process
    released = trimmer()
    assert released is not None and released >= 80 * 2**20
    assert resident_mb() < peak - 60
    assert trimmer() is None  # trimmed pages still count as free: no second trim for nothing
    assert pins
