"""Every route of the management API, with the rule that guards it.

A row says the method and path, the kind of resource, who may call it
(:class:`~.rules.Who`, RabbitMQ's ``is_authorized`` rules) and which AMQP
permissions its operation needs on the resource its path names
(:class:`~.rules.Need`); the app is built from this table alone, so a route
cannot exist without its rule. To add a route: write the handler in the
module of its resource (``resources/``) and add its row here, with the rule
RabbitMQ's ``rabbit_mgmt_wm_*`` module for the same path declares; the
route-table tests then check it for every kind of user against RabbitMQ.

Paths match the undecoded path (``%2F`` stays one segment) and without a
trailing slash.
"""

from __future__ import annotations

from typing import Awaitable, Callable

import attrs
from starlette.responses import Response

from .api import Call
from .resources import accounts, connections, exchanges, node, queues, scheduled, vhosts, workbench
from .rules import Need, Who, configure, read, write

Handler = Callable[[Call], Awaitable[Response]]


@attrs.frozen
class Route:
    method: str
    path: str
    #: What the route acts on ("queue", "user", ...), for the docs and tests.
    kind: str
    who: Who
    handler: Handler
    needs: tuple[Need, ...] = ()
    #: Refusals come back as a publish's do (400 with the AMQP reply code).
    publishing: bool = False
    #: amqlite's own, with no counterpart in RabbitMQ to compare with.
    amqlite_only: bool = False


ANY, VHOST, VISIBLE, OWNER = Who.ANY, Who.VHOST, Who.VHOST_VISIBLE, Who.OWNER
POLICYMAKER, ADMIN = Who.POLICYMAKER, Who.ADMINISTRATOR
Q, E = "queue", "exchange"
BINDING = "/api/bindings/{vhost}/e/{source}"

ROUTES = [
    Route("GET", "/api/overview", "node", ANY, node.overview),
    Route("GET", "/api/whoami", "node", ANY, node.whoami),
    Route("GET", "/api/health/checks/alarms", "node", ANY, node.alarms),
    Route("GET", "/api/health/checks/local-alarms", "node", ANY, node.alarms),
    Route("GET", "/api/aliveness-test/{vhost}", "vhost", VHOST, vhosts.aliveness),

    Route("GET", "/api/vhosts", "vhost", ANY, vhosts.list_vhosts),
    Route("GET", "/api/vhosts/{vhost}", "vhost", ADMIN, vhosts.show),
    Route("PUT", "/api/vhosts/{vhost}", "vhost", ADMIN, vhosts.put),
    Route("DELETE", "/api/vhosts/{vhost}", "vhost", ADMIN, vhosts.delete),
    Route("GET", "/api/vhost-limits", "vhost limit", VISIBLE, vhosts.limits),
    Route("GET", "/api/vhost-limits/{vhost}", "vhost limit", VISIBLE, vhosts.limits),
    Route("PUT", "/api/vhost-limits/{vhost}/{name}", "vhost limit", ADMIN, vhosts.put_limit),
    Route("DELETE", "/api/vhost-limits/{vhost}/{name}", "vhost limit", ADMIN, vhosts.delete_limit),
    Route("GET", "/api/definitions", "definitions", ADMIN, vhosts.export_definitions),
    Route("POST", "/api/definitions", "definitions", ADMIN, vhosts.import_definitions),
    Route("GET", "/api/definitions/{vhost}", "definitions", ADMIN, vhosts.export_definitions),
    Route("POST", "/api/definitions/{vhost}", "definitions", ADMIN, vhosts.import_definitions),

    Route("GET", "/api/users", "user", ADMIN, accounts.list_users),
    Route("GET", "/api/users/{name}", "user", ADMIN, accounts.show_user),
    Route("PUT", "/api/users/{name}", "user", ADMIN, accounts.put_user),
    Route("DELETE", "/api/users/{name}", "user", ADMIN, accounts.delete_user),
    Route("GET", "/api/users/{name}/permissions", "permission", ADMIN, accounts.user_permissions),
    Route("GET", "/api/permissions", "permission", ADMIN, accounts.list_permissions),
    Route("GET", "/api/permissions/{vhost}/{user}", "permission", ADMIN, accounts.show_permission),
    Route("PUT", "/api/permissions/{vhost}/{user}", "permission", ADMIN, accounts.put_permission),
    Route("DELETE", "/api/permissions/{vhost}/{user}", "permission", ADMIN, accounts.delete_permission),
    Route("GET", "/api/topic-permissions", "topic permission", ADMIN, accounts.list_topic_permissions),
    Route("GET", "/api/topic-permissions/{vhost}/{user}", "topic permission", ADMIN,
          accounts.show_topic_permissions),
    Route("PUT", "/api/topic-permissions/{vhost}/{user}", "topic permission", ADMIN, accounts.put_topic_permission),
    Route("DELETE", "/api/topic-permissions/{vhost}/{user}", "topic permission", ADMIN,
          accounts.delete_topic_permission),
    Route("GET", "/api/user-limits", "user limit", VISIBLE, accounts.user_limits),
    Route("GET", "/api/user-limits/{user}", "user limit", VISIBLE, accounts.user_limits),
    Route("PUT", "/api/user-limits/{user}/{name}", "user limit", ADMIN, accounts.put_user_limit),
    Route("DELETE", "/api/user-limits/{user}/{name}", "user limit", ADMIN, accounts.delete_user_limit),

    Route("GET", "/api/queues", "queue", VHOST, queues.list_queues),
    Route("GET", "/api/queues/{vhost}", "queue", VHOST, queues.list_queues),
    Route("GET", "/api/queues/{vhost}/{name}", "queue", VHOST, queues.show),
    Route("PUT", "/api/queues/{vhost}/{name}", "queue", VHOST, queues.declare, (configure(Q),)),
    Route("DELETE", "/api/queues/{vhost}/{name}", "queue", VHOST, queues.delete, (configure(Q),)),
    Route("DELETE", "/api/queues/{vhost}/{name}/contents", "queue", VHOST, queues.purge, (read(Q),)),
    Route("POST", "/api/queues/{vhost}/{name}/get", "message", VHOST, queues.get, (read(Q),)),
    Route("POST", "/api/queues/{vhost}/{name}/redrive", "message", VHOST, queues.redrive, (read(Q),),
          amqlite_only=True),
    Route("GET", "/api/queues/{vhost}/{name}/messages", "message", VHOST, workbench.messages, (read(Q),),
          amqlite_only=True),
    Route("POST", "/api/queues/{vhost}/{name}/messages/delete", "message", VHOST, workbench.delete_matching,
          (read(Q),), amqlite_only=True),
    Route("POST", "/api/queues/{vhost}/{name}/redrives", "redrive job", VHOST, workbench.start_redrive, (read(Q),),
          amqlite_only=True),
    Route("GET", "/api/redrives", "redrive job", VHOST, workbench.list_redrives, amqlite_only=True),
    Route("GET", "/api/redrives/{vhost}", "redrive job", VHOST, workbench.list_redrives, amqlite_only=True),
    Route("GET", "/api/redrives/{vhost}/{id}", "redrive job", VHOST, workbench.show_redrive, amqlite_only=True),
    Route("DELETE", "/api/redrives/{vhost}/{id}", "redrive job", VHOST, workbench.cancel_redrive,
          amqlite_only=True),
    Route("GET", "/api/queues/{vhost}/{name}/scheduled", "scheduled message", VHOST, scheduled.list_retries,
          (read(Q),), amqlite_only=True),
    Route("DELETE", "/api/queues/{vhost}/{name}/scheduled/{id}", "scheduled message", VHOST, scheduled.cancel_retry,
          (read(Q),), amqlite_only=True),
    Route("POST", "/api/queues/{vhost}/{name}/scheduled/{id}/reschedule", "scheduled message", VHOST,
          scheduled.reschedule_retry, (read(Q),), amqlite_only=True),
    Route("POST", "/api/queues/{vhost}/{name}/scheduled/{id}/fire", "scheduled message", VHOST,
          scheduled.fire_retry, (read(Q),), amqlite_only=True),
    Route("GET", "/api/queues/{vhost}/{name}/bindings", "binding", VHOST, exchanges.queue_bindings),
    Route("GET", "/api/stream-groups", "stream group", VHOST, queues.stream_groups, amqlite_only=True),
    Route("GET", "/api/stream-groups/{vhost}", "stream group", VHOST, queues.stream_groups, amqlite_only=True),
    Route("GET", "/api/parameters/shovel", "shovel", POLICYMAKER, queues.list_shovels),
    Route("GET", "/api/parameters/shovel/{vhost}", "shovel", POLICYMAKER, queues.list_shovels),
    Route("PUT", "/api/parameters/shovel/{vhost}/{name}", "shovel", POLICYMAKER, queues.put_shovel),

    Route("GET", "/api/exchanges", "exchange", VHOST, exchanges.list_exchanges),
    Route("GET", "/api/exchanges/{vhost}", "exchange", VHOST, exchanges.list_exchanges),
    Route("GET", "/api/exchanges/{vhost}/{name}", "exchange", VHOST, exchanges.show),
    Route("PUT", "/api/exchanges/{vhost}/{name}", "exchange", VHOST, exchanges.declare, (configure(E),)),
    Route("DELETE", "/api/exchanges/{vhost}/{name}", "exchange", VHOST, exchanges.delete, (configure(E),)),
    Route("POST", "/api/exchanges/{vhost}/{name}/publish", "message", VHOST, exchanges.publish, (write(E),),
          publishing=True),
    Route("GET", "/api/exchanges/{vhost}/{name}/scheduled", "scheduled message", VHOST, scheduled.list_scheduled,
          (read(E),), amqlite_only=True),
    Route("POST", "/api/exchanges/{vhost}/{name}/scheduled/cancel", "scheduled message", VHOST,
          scheduled.cancel_matching, (write(E),), amqlite_only=True),
    Route("DELETE", "/api/exchanges/{vhost}/{name}/scheduled/{id}", "scheduled message", VHOST, scheduled.cancel,
          (write(E),), amqlite_only=True),
    Route("POST", "/api/exchanges/{vhost}/{name}/scheduled/{id}/reschedule", "scheduled message", VHOST,
          scheduled.reschedule, (write(E),), amqlite_only=True),
    Route("POST", "/api/exchanges/{vhost}/{name}/scheduled/{id}/fire", "scheduled message", VHOST, scheduled.fire,
          (write(E),), amqlite_only=True),
    Route("GET", "/api/exchanges/{vhost}/{name}/bindings/source", "binding", VHOST, exchanges.source_bindings),
    Route("GET", "/api/exchanges/{vhost}/{name}/bindings/destination", "binding", VHOST,
          exchanges.destination_bindings),
    Route("GET", "/api/bindings", "binding", VHOST, exchanges.list_bindings),
    Route("GET", "/api/bindings/{vhost}", "binding", VHOST, exchanges.list_bindings),
    Route("GET", BINDING + "/q/{destination}", "binding", VHOST, exchanges.between),
    Route("POST", BINDING + "/q/{destination}", "binding", VHOST, exchanges.bind,
          (write(Q, "destination"), read(E, "source"))),
    Route("DELETE", BINDING + "/q/{destination}/{props}", "binding", VHOST, exchanges.unbind,
          (write(Q, "destination"), read(E, "source"))),
    Route("GET", BINDING + "/e/{destination}", "binding", VHOST, exchanges.between),
    Route("POST", BINDING + "/e/{destination}", "binding", VHOST, exchanges.bind,
          (write(E, "destination"), read(E, "source"))),
    Route("DELETE", BINDING + "/e/{destination}/{props}", "binding", VHOST, exchanges.unbind,
          (write(E, "destination"), read(E, "source"))),

    Route("GET", "/api/connections", "connection", ANY, connections.list_connections),
    Route("GET", "/api/connections/{name}", "connection", OWNER, connections.show),
    Route("DELETE", "/api/connections/{name}", "connection", OWNER, connections.close),
    Route("GET", "/api/channels", "channel", ANY, connections.list_channels),
    Route("GET", "/api/consumers", "consumer", ANY, connections.list_consumers),
    Route("GET", "/api/consumers/{vhost}", "consumer", ANY, connections.list_consumers),
]
