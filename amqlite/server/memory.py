"""The memory alarm, as RabbitMQ's ``vm_memory_high_watermark``.

Once a second the broker compares the memory it uses with the watermark.
At or above it the alarm goes on: connections that publish are no longer
read from (``connection.blocked`` for clients that asked), while consumers
go on draining; below it the alarm goes off and they are read again.

Below it, from RabbitMQ's paging ratio of it on (half, by default), memory
is short: queues keep a smaller budget of ready messages in memory and page
transient messages to disk too (core/backing.py), so that the alarm is the
last resort rather than the first.

"In use" is the anonymous resident set less what glibc's heap holds free: freed
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

#: Seconds between checks while the alarm is off: a read of /proc/self/statm,
#: so often enough that a publisher cannot take the broker far past the
#: watermark in between (one pika publisher of 10 KB messages with
#: confirms writes about 60 MB a second here). With the alarm on, every
#: check walks the heap (see memory_in_use), so CHECK_INTERVAL_ALARMED.
CHECK_INTERVAL = 0.25
CHECK_INTERVAL_ALARMED = 1.0
_PAGE = os.sysconf("SC_PAGE_SIZE")


def memory_in_use(enough: int | None = None) -> int:
    """The resident set less the heap's free bytes; but where the resident
    set is below ``enough``, the resident set: glibc's mallinfo2 walks the
    whole heap, tens of milliseconds on a large fragmented one (10M held
    delayed messages made due ones fire 20-80 ms late every second), so
    the watch asks for it only when the answer could reach the watermark."""
    with open("/proc/self/statm") as statm:
        fields = statm.read().split()
    # Anonymous pages only: file pages (a segment mapped to be indexed) are
    # the page cache's, which the kernel reclaims without the broker.
    resident = (int(fields[1]) - int(fields[2])) * _PAGE
    if enough is not None and resident < enough:
        return resident
    return max(0, resident - (free_bytes() or 0))


def watermark(settings: Settings) -> int:
    """The watermark in bytes: the absolute setting, else the fraction of RAM."""
    if settings.memory_high_watermark_bytes:
        return settings.memory_high_watermark_bytes
    return int(settings.memory_high_watermark * _PAGE * os.sysconf("SC_PHYS_PAGES"))


async def watch_memory(limit: int, on_change: Callable[[bool], object],
                       measure: Callable[[int | None], int] = memory_in_use, *, event: str = "memory.alarm",
                       actions: tuple[str, str] = ("publishers blocked", "publishers read again")) -> None:
    """Call ``on_change(True)`` when usage reaches ``limit``, and
    ``on_change(False)`` when it falls back below, forever; each change is
    logged as ``event`` (an error) or ``event``_cleared, with its action."""
    alarm = False
    while True:
        used = measure(None if alarm else limit)
        if (used >= limit) != alarm:
            alarm = not alarm
            (log.error if alarm else log.info)(
                event if alarm else f"{event}_cleared", used_mb=round(used / 2**20, 1),
                limit_mb=round(limit / 2**20, 1), action=actions[0] if alarm else actions[1])
            on_change(alarm)
        await trio.sleep(CHECK_INTERVAL_ALARMED if alarm else CHECK_INTERVAL)
