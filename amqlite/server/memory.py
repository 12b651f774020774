"""The memory alarm, as RabbitMQ's ``vm_memory_high_watermark``.

Once a second the broker compares the memory it uses with the watermark.
At or above it the alarm goes on: connections that publish are no longer
read from (``connection.blocked`` for clients that asked), while consumers
go on draining; below it the alarm goes off and they are read again.

Below it, from RabbitMQ's paging ratio of it on (half, by default), memory
is short: queues keep a smaller budget of ready messages in memory and page
transient messages to disk too (core/backing.py), so that the alarm is the
last resort rather than the first.

"In use" is the anonymous resident set once glibc has handed its free pages
back (RabbitMQ's default ``rss`` strategy, after a trim): freed memory that
glibc keeps for reuse would otherwise keep the alarm on after the queues
have drained. It used to be the resident set less glibc's free bytes
(``mallinfo2().fordblks``), but pages already trimmed stay counted as free
while no longer resident, so that subtracted them twice: after 300 MB of
10 KB messages were freed and trimmed, then 300 MB of small objects held,
it said 26 MB (docs/performance.md). What a trim cannot hand back (free
bytes inside pages still partly used) is the process's all the same, and
counts.
"""

from __future__ import annotations

import os
from typing import Callable

import trio

from ..config import Settings
from ..heap import PAGE, resident, trim
from ..log import get_logger

log = get_logger(__name__)

#: Seconds between checks while the alarm is off: a read of /proc/self/statm,
#: so often enough that a publisher cannot take the broker far past the
#: watermark in between (one pika publisher of 10 KB messages with
#: confirms writes about 60 MB a second here). With the alarm on, every
#: check walks the heap (see memory_in_use), so CHECK_INTERVAL_ALARMED.
CHECK_INTERVAL = 0.25
CHECK_INTERVAL_ALARMED = 1.0


def memory_in_use(enough: int | None = None) -> int:
    """The resident set after handing the heap's free pages back to the OS;
    but where the resident set is below ``enough``, the resident set as it
    is: the trim walks the heap's free chunks, tens of milliseconds on a
    large fragmented heap (the walk of mallinfo2, asked once a second, made
    due delayed messages fire 20-80 ms late), so the watch trims only when
    the answer could reach the watermark."""
    used = resident()
    if enough is not None and used < enough:
        return used
    return resident() if trim() else used


def watermark(settings: Settings) -> int:
    """The watermark in bytes: the absolute setting, else the fraction of RAM."""
    if settings.memory_high_watermark_bytes:
        return settings.memory_high_watermark_bytes
    return int(settings.memory_high_watermark * PAGE * os.sysconf("SC_PHYS_PAGES"))


async def watch_memory(limit: int, on_change: Callable[[bool], object],
                       measure: Callable[[int | None], int] = memory_in_use, *, event: str = "memory.alarm",
                       actions: tuple[str, str] = ("publishers blocked", "publishers read again")) -> None:
    """Call ``on_change(True)`` when usage reaches ``limit``, and
    ``on_change(False)`` when it falls back below, forever; each change is
    logged as ``event`` (an error) or ``event``_cleared, with its action."""
    alarm, failing = False, False
    while True:
        try:
            used = measure(None if alarm else limit)
        except OSError as error:
            # Out of descriptors, say: never the end of the broker; the alarm
            # stays as it was until a check works again.
            if not failing:
                log.warning(f"{event}_check_failed", error=str(error), action="checked again at the next interval")
            failing = True
            await trio.sleep(CHECK_INTERVAL_ALARMED if alarm else CHECK_INTERVAL)
            continue
        failing = False
        if (used >= limit) != alarm:
            alarm = not alarm
            (log.error if alarm else log.info)(
                event if alarm else f"{event}_cleared", used_mb=round(used / 2**20, 1),
                limit_mb=round(limit / 2**20, 1), action=actions[0] if alarm else actions[1])
            on_change(alarm)
        await trio.sleep(CHECK_INTERVAL_ALARMED if alarm else CHECK_INTERVAL)
