"""RabbitMQ-compatible management HTTP API (see docs/management.md).

The package is a thin HTTP side over the core: :mod:`.snapshot` turns the
core's state into RabbitMQ's JSON shapes, :mod:`.routes` declares every
route with the rule that guards it (:mod:`.rules`), :mod:`.resources` holds
the handlers, :mod:`.app` builds the Starlette app from the table, and
:mod:`.http` serves it with Hypercorn's trio worker in the broker's trio run.
"""
