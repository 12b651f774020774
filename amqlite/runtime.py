"""What every trio driver of the core needs: its clock and its deadline task."""

from __future__ import annotations

import math
import time

import trio

from .core.broker import Broker


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


async def drive_deadlines(core: Broker, clock: Clock) -> None:
    """Sleep until the core's next deadline, run what is due, forever.

    The core says when its earliest deadline moves earlier, so a new short
    TTL or delay is honoured without polling.
    """
    wakeup = trio.lowlevel.ParkingLot()
    core.timers.on_earlier = wakeup.unpark_all
    while True:
        deadline = core.next_deadline()
        with trio.move_on_at(math.inf if deadline is None else clock.to_trio(deadline)):
            await wakeup.park()
        core.tick(clock.now())
