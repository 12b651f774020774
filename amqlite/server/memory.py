"""The memory alarm, as RabbitMQ's ``vm_memory_high_watermark``.

Once a second the broker compares the memory it uses with the watermark.
At or above it the alarm goes on: connections that publish are no longer
read from (``connection.blocked`` for clients that asked), while consumers
go on draining; below it the alarm goes off and they are read again.

"In use" is the resident set less what glibc's heap holds free: freed
memory that glibc keeps for reuse is not the broker's to give back, and
counting it would keep the alarm on after the queues have drained (like
RabbitMQ's ``allocated`` strategy rather than its ``rss`` one).
"""

from __future__ import annotations

import os
from typing import Callable

import trio

from ..config import Settings
from ..heap import free_bytes
from ..log import get_logger

log = get_logger(__name__)

CHECK_INTERVAL = 1.0
_PAGE = os.sysconf("SC_PAGE_SIZE")


def memory_in_use(enough: int | None = None) -> int:
    """The resident set less the heap's free bytes; but where the resident
    set is below ``enough``, the resident set: glibc's mallinfo2 walks the
    whole heap, tens of milliseconds on a large fragmented one (10M held
    delayed messages made due ones fire 20-80 ms late every second), so
    the watch asks for it only when the answer could reach the watermark."""
    with open("/proc/self/statm") as statm:
        resident = int(statm.read().split()[1]) * _PAGE
    if enough is not None and resident < enough:
        return resident
    return max(0, resident - (free_bytes() or 0))


def watermark(settings: Settings) -> int:
    """The watermark in bytes: the absolute setting, else the fraction of RAM."""
    if settings.memory_high_watermark_bytes:
        return settings.memory_high_watermark_bytes
    return int(settings.memory_high_watermark * _PAGE * os.sysconf("SC_PHYS_PAGES"))


async def watch_memory(limit: int, on_change: Callable[[bool], object],
                       measure: Callable[[int | None], int] = memory_in_use,
                       interval: float = CHECK_INTERVAL) -> None:
    """Call ``on_change(True)`` when usage reaches ``limit``, and
    ``on_change(False)`` when it falls back below, forever."""
    alarm = False
    while True:
        used = measure(None if alarm else limit)
        if (used >= limit) != alarm:
            alarm = not alarm
            (log.error if alarm else log.info)(
                "memory.alarm" if alarm else "memory.alarm_cleared", used_mb=round(used / 2**20, 1),
                watermark_mb=round(limit / 2**20, 1),
                action="publishers blocked" if alarm else "publishers read again")
            on_change(alarm)
        await trio.sleep(interval)
