"""The node as a whole: overview, who am I, health checks."""

from __future__ import annotations

from starlette.responses import JSONResponse, Response

from ... import __version__
from .. import snapshot
from ..api import Call
from ..rates import counters


async def overview(call: Call) -> Response:
    shown = snapshot.overview(call.broker, listeners=call.api.listeners, version=__version__)
    shown["object_totals"]["connections"] += len(call.api.other_connections())  # Kafka's too
    return JSONResponse({**shown, "message_stats": call.api.rates.message_stats(counters(call.broker.stats))})


async def whoami(call: Call) -> Response:
    return JSONResponse({"name": call.user.name, "tags": list(call.user.tags)})


async def alarms(call: Call) -> Response:
    in_effect = sorted(call.api.alarms())
    if not in_effect:
        return JSONResponse({"status": "ok"})
    return JSONResponse({"status": "failed", "reason": "There are alarms in effect in the cluster",
                         "alarms": [{"node": "amqlite", "resource": resource} for resource in in_effect]},
                        status_code=503)
