"""Freed heap memory goes back to the OS (issue 10, defect 10): RSS stayed
at its peak after a large drain until malloc_trim was called from outside."""

from __future__ import annotations

import subprocess
import sys

import pytest

from amqlite import heap

pytestmark = pytest.mark.skipif(heap.free_bytes() is None, reason="needs glibc 2.33+ (mallinfo2, malloc_trim)")

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


def test_a_trim_returns_freed_memory_once_and_not_again() -> None:
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True).stdout
    peak, freed, trimmed, released, again = out.split()
    assert int(freed) > int(peak) - 30  # freed, but still held by the process
    assert int(released) >= 80 * 2**20
    assert int(trimmed) < int(peak) - 60
    assert again == "None"  # trimmed pages still count as free: no second trim for nothing
