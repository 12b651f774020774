"""RabbitMQ-compatible management HTTP API (see docs/management.md).

The package is a thin HTTP side over the core: :mod:`.snapshot` turns the
core's state into RabbitMQ's JSON shapes, :mod:`.app` is the Starlette app,
:mod:`.http` serves it with Hypercorn's trio worker in the broker's trio run.
"""
