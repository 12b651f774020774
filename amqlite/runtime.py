"""What every trio driver of the core needs: its clock and its deadline task."""

from __future__ import annotations

import math
import time

import trio

from .core.timers import Timers


class Clock:
    """The core's ``now``: trio's clock shifted to wall time at start.

    Deadlines follow trio's (possibly virtual, autojumping) clock while
    timestamps written into messages (x-death) read as real dates.
    """

    def __init__(self) -> None:
        # The run's clock object itself: now() is called several times per
        # message, and trio.current_time() reaches it through two more calls.
        self._trio_clock = trio.lowlevel.current_clock()
        self.offset = time.time() - self._trio_clock.current_time()

    def now(self) -> float:
        return self._trio_clock.current_time() + self.offset

    def to_trio(self, when: float) -> float:
        return when - self.offset


async def drive_timers(timers: Timers, clock: Clock) -> None:
    """Sleep until the earliest deadline in ``timers``, run everything due,
    forever: the core broker's timers (expiries, delays, retries), and the
    AMQP server's per-connection ones (heartbeats, handshake and close
    timeouts), each in one task however many targets they hold.

    ``timers`` says when its earliest deadline moves earlier, so a new short
    TTL or delay is honoured without polling.
    """
    wakeup = trio.lowlevel.ParkingLot()
    timers.on_earlier = wakeup.unpark_all
    while True:
        deadline = timers.next_deadline()
        with trio.move_on_at(math.inf if deadline is None else clock.to_trio(deadline)):
            await wakeup.park()
        now = clock.now()
        for target in timers.pop_due(now):
            target.on_timer(now)
