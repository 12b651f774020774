"""The dead-letter workbench's driver: browse pages and redrive, delete
and count jobs over the core (core/browse.py, core/redrive.py), for the
management API and the embedded broker alike.

The core stays pure: it says which messages to visit, and which of them
are on disk only; here they are read back in a worker thread, without
touching the queue's own page-in, and each job's steps run as trio's
clock (virtual under tests) passes.
"""

from __future__ import annotations

import itertools
import weakref
from collections import Counter
from typing import Callable

import trio

from .core.broker import Broker
from .core.browse import Filter, Item, page
from .core.message import Entry, Message
from .core.queue import Queue
from .core.redrive import CANCELLED, Job
from .log import get_logger

log = get_logger(__name__)

#: Messages a job visits per step (those that match are then acted on as
#: the rate allows), and a browse reads per round.
BATCH = 500
#: Positions a filtered browse looks through per request at most; it
#: answers where to go on from.
SCAN_MAX = 20_000
#: How long a step waits when a message it wants is being read back from
#: disk by the queue itself (it is then visited in memory).
SETTLE = 0.05
#: Finished jobs kept for their reports, per broker.
KEEP = 100


async def read(broker: Broker, items: list[Item]) -> list[Message | None]:
    """Each item's message: in memory, or read from disk in a worker
    thread; None for one whose record cannot be read."""
    refs = [item[1] for item in items if not isinstance(item, Entry)]
    found: dict[int, Message | None] = {}
    journal = broker.journal
    if refs and journal is not None:
        try:
            messages: list[Message | None] = list(await trio.to_thread.run_sync(journal.read_paged, refs))
        except (OSError, ValueError):
            messages = []
            for ref in refs:  # one bad record must not hide the others
                try:
                    messages.extend(await trio.to_thread.run_sync(journal.read_paged, [ref]))
                except (OSError, ValueError) as error:
                    log.warning("workbench.unreadable", segment=ref[0], offset=ref[1], error=str(error))
                    messages.append(None)
        found = {ref[2]: message for ref, message in zip(refs, messages, strict=True)}
    return [item.message if isinstance(item, Entry) else found.get(item[1][2]) for item in items]


async def browse(broker: Broker, queue: Queue, offset: int, limit: int,
                 chosen: Filter) -> tuple[list[tuple[int, Item, Message | None]], int | None]:
    """Up to ``limit`` ready messages matching ``chosen``, from position
    ``offset``, each with its position; and the position to go on from
    (None at the end of the queue). Changes nothing in the queue."""
    if chosen.everything:
        items = page(queue, offset, limit)
        messages = await read(broker, items)
        at_end = offset + len(items) >= queue.message_count
        return ([(offset + n, item, message) for n, (item, message) in enumerate(zip(items, messages, strict=True))],
                None if at_end else offset + len(items))
    shown: list[tuple[int, Item, Message | None]] = []
    position = offset
    while len(shown) < limit and position - offset < SCAN_MAX:
        items = page(queue, position, BATCH)
        if not items:
            return shown, None
        for n, (item, message) in enumerate(zip(items, await read(broker, items), strict=True)):
            if message is not None and chosen.matches(message):
                shown.append((position + n, item, message))
                if len(shown) == limit:
                    return shown, position + n + 1
        position += len(items)
    return shown, position


class Jobs:
    """A broker's workbench jobs: running, and the last KEEP finished."""

    def __init__(self, broker: Broker, now: Callable[[], float]) -> None:
        self.broker = broker
        self.now = now
        self.jobs: dict[int, Job] = {}
        self._ids = itertools.count(1)
        #: Since start-up, by action, for Prometheus: messages acted on
        #: (redriven, deleted), and those skipped (unreadable, or no
        #: queue to redrive to). Finished jobs are forgotten; these are not.
        self.done: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()

    def create(self, vhost: str, queue: Queue, action: str, chosen: Filter, *, to: str | None = None,
               rate: float | None = None, limit: int | None = None, user: str = "") -> Job:
        job = Job(next(self._ids), vhost, queue.name, action, chosen, self.now(), queue.last_seq, to=to, rate=rate,
                  limit=limit, user=user)
        self.jobs[job.id] = job
        finished = [old for old in self.jobs.values() if not old.running]
        for old in finished[: max(0, len(finished) - KEEP)]:
            del self.jobs[old.id]
        return job

    def start(self, job: Job) -> None:
        """Run ``job`` in the background, beyond the request that asked."""
        trio.lowlevel.spawn_system_task(self.run, job, name=f"workbench job {job.id}")

    def cancel(self, job: Job) -> None:
        job.finish(CANCELLED, self.now())

    async def run(self, job: Job) -> None:
        """Step ``job`` until it is done, failed or cancelled."""
        try:
            await self._steps(job)
        except Exception as error:  # a bug must end the job, not the broker
            log.exception("workbench.job_failed", job=job.id, queue=job.queue, vhost=job.vhost)
            job.fail(str(error), self.now())
        log.info(f"workbench.{job.action}_{job.state}", job=job.id, vhost=job.vhost, queue=job.queue, user=job.user,
                 filter=job.filter.describe(), to=job.to, rate=job.rate, matched=job.matched, done=job.done,
                 skipped=job.skipped)

    async def _steps(self, job: Job) -> None:
        while job.running:
            vhost = self.broker.vhosts.get(job.vhost)
            queue = vhost.queues.get(job.queue) if vhost is not None else None
            if vhost is None or queue is None:
                job.fail(f"queue '{job.queue}' was deleted", self.now())
                return
            items = job.candidates(queue, BATCH)
            due = job.next_due(self.now())
            if items and due > self.now():
                await trio.sleep(due - self.now())
                continue
            messages = await read(self.broker, items)
            before, skipped = (job.cursor, job.done), job.skipped
            job.apply(vhost, queue, list(zip(items, messages, strict=True)), self.now())
            self.done[job.action] += job.done - before[1]
            self.skipped[job.action] += job.skipped - skipped
            if job.running and (job.cursor, job.done) == before and job.next_due(self.now()) <= self.now():
                await trio.sleep(SETTLE)  # waits on the queue's own page-in
            else:
                await trio.lowlevel.checkpoint()


_jobs: weakref.WeakKeyDictionary[Broker, Jobs] = weakref.WeakKeyDictionary()


def jobs_of(broker: Broker, now: Callable[[], float]) -> Jobs:
    """The broker's jobs (one registry, whichever API starts them)."""
    found = _jobs.get(broker)
    if found is None:
        found = _jobs[broker] = Jobs(broker, now)
    return found

