"""What a Kafka API handler is, and what it may answer.

Every API is an :class:`Api` entry: its key, the versions served and the
handler. Each module of ``amqlite.kafka`` that serves an area (metadata.py,
admin.py, sasl.py, produce.py, fetch.py, groups.py ...) lists its entries in
``APIS``, and ``registry.py`` gathers them: ApiVersions advertises exactly
what is there. docs/kafka.md, "Adding an API", walks through one.

A handler is ``handler(session, request, now)`` and returns:

- a kio response entity of the request's version (``build`` in
  protocol.py fills one from keyword arguments, whatever the version);
- ``bytes``: the body, already encoded, for an API registered ``raw=True``
  (whose handler also gets the raw request body, for the hot paths);
- a :class:`Pending`: the response comes later (a Fetch long poll, a
  Produce with acks=all waiting for the disk); responses still go out in
  request order;
- ``None``: no response at all (a Produce with acks=0).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import attrs

if TYPE_CHECKING:
    from .protocol import Request
    from .session import Session

#: A response entity, raw body bytes, a Pending, or None (no response).
Reply = Any
Handler = Callable[["Session", "Request", float], Reply]


@attrs.frozen
class Api:
    key: int
    min_version: int
    max_version: int
    handler: Handler
    #: The handler takes the body as bytes and returns the encoded body.
    raw: bool = False
    #: Served before the client has authenticated (ApiVersions, SASL).
    before_auth: bool = False
    #: The handler answers versions above max_version too (ApiVersions:
    #: KIP-511 has the broker say in v0 which versions there are).
    any_version: bool = False


@attrs.define(eq=False)
class Pending:
    """A response that a handler completes later with :meth:`complete`.

    ``deadline`` (the engine's clock) and ``on_deadline``: when time runs
    out first, the engine asks ``on_deadline(now)`` for the reply (a Fetch
    answers with what it has). ``poll(now)`` is called whenever storage
    moves on (the journal synced, messages came back from disk), for a
    handler waiting on that. ``on_cancel``: the connection went away
    first; undo any registration. After completion none is called again.
    """

    deadline: float | None = None
    on_deadline: Callable[[float], Reply] | None = None
    poll: Callable[[float], None] | None = None
    on_cancel: Callable[[], None] | None = None
    #: Set by the engine: where the reply goes.
    deliver: Callable[[Reply], None] | None = attrs.field(default=None, repr=False)
    done: bool = False

    def complete(self, reply: Reply) -> None:
        if self.done:
            return
        self.done = True
        assert self.deliver is not None, "complete() before the handler returned the Pending"
        deliver = self.deliver
        self._let_go()
        deliver(reply)

    def cancel(self) -> None:
        """The connection went first (the engine calls it)."""
        if self.done:
            return
        self.done = True
        on_cancel = self.on_cancel
        self._let_go()
        if on_cancel is not None:
            on_cancel()

    def _let_go(self) -> None:
        # The callbacks close over this Pending and the engine's slot (the
        # request: a Produce's records): cycles that ``amqlite serve``'s
        # rare collections left in memory, 1.3 GB after 10M records.
        self.deliver = self.poll = self.on_deadline = self.on_cancel = None
