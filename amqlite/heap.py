"""Give freed heap memory back to the operating system (glibc only).

glibc keeps memory that Python frees in its heap for reuse, so after a large
backlog is drained or deleted the broker's RSS stays at its peak (2.6 GB
after 250,000 messages of 10 KB, 312 MB once trimmed). ``malloc_trim(0)``
returns the free pages; it costs a walk of the heap, so a :class:`Trimmer`
runs in a worker thread, at most once per interval, and only when enough
was freed to be worth it: the store driver's after writes (acks of
persistent messages, page-outs), and :func:`trim_after_frees` after
messages of TRIM_MIN_FREE bytes have left the queues (drains, purges and
deletes of transient messages write nothing). Elsewhere (musl, macOS)
there is nothing to do.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from typing import Any, Callable

import trio

from .log import get_logger

log = get_logger(__name__)

#: Free heap bytes below which a trim is not worth its walk of the heap.
TRIM_MIN_FREE = 64 * 1024 * 1024
#: Least time between two trims (each task's).
TRIM_INTERVAL = 10.0
#: Seconds between two looks at how much has left the queues.
FREED_CHECK_INTERVAL = 1.0
#: mallopt's M_MMAP_THRESHOLD, and glibc's default for it.
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 128 * 1024


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _load_libc() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return libc
    except (OSError, AttributeError):  # not glibc, or older than 2.33
        return None


_libc = _load_libc()

PAGE = os.sysconf("SC_PAGE_SIZE")
#: /proc/self/statm, opened once and held (see resident).
_statm: int | None = None


def resident() -> int:
    """The anonymous resident set, in bytes. The file stays open: opened at
    each check, it failed with EMFILE once the process ran out of
    descriptors, and that ended the broker (issue 21)."""
    global _statm
    if _statm is None:
        _statm = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
    fields = os.pread(_statm, 256, 0).split()
    # Anonymous pages only: file pages (a segment mapped to be indexed) are
    # the page cache's, which the kernel reclaims without the broker.
    return (int(fields[1]) - int(fields[2])) * PAGE


def free_bytes() -> int | None:
    """Bytes free inside the heap, or None where that cannot be known."""
    return None if _libc is None else int(_libc.mallinfo2().fordblks)


def map_large_blocks() -> bool:
    """Keep blocks of 128 KiB and more (Kafka batches, journal writes) in
    mappings of their own, returned to the OS when freed. glibc raises
    that threshold as such blocks are freed, up to 32 MiB, and then serves
    them from the heap, where they fragment it: producing 10M Kafka records
    of 100 B held 1.3 GB of RSS for 80 MB of live data (2M records: 163 MB
    anonymous memory for 31 MB allocated; 86 MB with the threshold fixed).
    Setting it fixes it. For the application (``amqlite serve``), not for a
    library embedding amqlite. False where it cannot be set."""
    return _libc is not None and bool(_libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def trim() -> bool:
    """Hand every free page of the heap back to the OS; False where that
    cannot be done. Blocks for a walk of the heap's free chunks (10-30 ms
    after 300 MB of 10 KB messages here)."""
    if _libc is None:
        return False
    _libc.malloc_trim(0)
    return True


class Trimmer:
    """Trims when the heap holds ``min_free`` more free bytes than after the
    last trim: trimmed pages stay counted as free (glibc only hands them
    back, keeping their address range), so free bytes alone would make it
    trim again and again for nothing."""

    def __init__(self, min_free: int = TRIM_MIN_FREE) -> None:
        self.min_free = min_free
        self._baseline = 0

    def __call__(self) -> int | None:
        """Trim if worth it; the bytes handed back to the OS at most (None
        if it did not trim). Blocks: call it from a worker thread."""
        free = free_bytes()
        if free is None:
            return None
        if free < self._baseline:
            self._baseline = free  # reused since: what is freed next counts
        if free - self._baseline < self.min_free:
            return None
        trim()
        released, self._baseline = free - self._baseline, free
        return released

    def trim_now(self) -> int | None:
        """Trim whatever is free, for a caller that knows enough was freed;
        how much the resident set shrank (None if it cannot trim). Blocks.
        The free bytes cannot tell: after a trim and a refill, a drain
        frees the same pages again and free bytes only come back to where
        they were after the last trim."""
        before = resident()
        if not trim():
            return None
        self._baseline = free_bytes() or 0
        return max(0, before - resident())


async def trim_after_frees(freed: Callable[[], int], trim: Callable[[], int | None]) -> None:
    """Run ``trim`` (in a worker thread) once ``freed()`` (body bytes of
    messages that left the queues, core/broker.py) has grown by
    TRIM_MIN_FREE since the last trim; then not again for TRIM_INTERVAL.
    After 30 s of 10 KB transient messages and a full drain, 4 GB stayed
    resident: nothing was written, so the store driver never trimmed."""
    last = freed()
    while True:
        await trio.sleep(FREED_CHECK_INTERVAL)
        if freed() - last < TRIM_MIN_FREE:
            continue
        last = freed()
        released = await trio.to_thread.run_sync(trim)
        if released is not None:
            log.info("memory.trimmed", released_mb=round(released / 2**20, 1), after="messages left the queues")
        await trio.sleep(TRIM_INTERVAL)
