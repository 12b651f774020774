"""``amqlite ctl``: a command-line client of the management API, like
rabbitmqadmin but smaller. It speaks only the HTTP API (RabbitMQ's paths),
so it works against RabbitMQ too where the API overlaps.

Long operations show progress: a redrive is a job the API runs and
reports on (polled here), an import posts the definitions a slice at a
time. Output is a table, or JSON for scripts;
every failure is one line on stderr and exit code 1.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
import urllib.error
import urllib.request
from typing import IO, Any, Iterator, Mapping
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

#: The user both amqlite and RabbitMQ create at start; ``export`` leaves it
#: out, so that an import does not overwrite the target's own (its password hash).
DEFAULT_USER = "guest"
#: Definitions posted per request by ``import``.
BATCH = 1000
#: Seconds between two looks at a running redrive job.
POLL = 0.2

#: The columns ``list`` shows per kind, and the API path it reads.
LISTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "queues": ("/api/queues", ("vhost", "name", "messages", "messages_ready", "messages_unacknowledged",
                               "consumers")),
    "exchanges": ("/api/exchanges", ("vhost", "name", "type", "durable")),
    "bindings": ("/api/bindings", ("vhost", "source", "destination", "destination_type", "routing_key")),
    "connections": ("/api/connections", ("name", "user", "vhost", "channels")),
    "channels": ("/api/channels", ("name", "user", "vhost", "consumer_count", "messages_unacknowledged")),
    "consumers": ("/api/consumers", ("consumer_tag", "queue", "ack_required", "prefetch_count",
                                     "messages_unacknowledged", "oldest_unacked_seconds")),
    "vhosts": ("/api/vhosts", ("name", "messages")),
    "users": ("/api/users", ("name", "tags")),
    "groups": ("/api/stream-groups", ("vhost", "stream", "group", "committed_offset", "lag")),
    "redrives": ("/api/redrives", ("vhost", "id", "queue", "action", "state", "matched", "done", "skipped", "user")),
}
#: Definitions sections in the order an import needs them.
SECTIONS = ("vhosts", "users", "permissions", "exchanges", "queues", "bindings")


class CtlError(Exception):
    """What went wrong, as the one line the user sees."""


def default_url(environ: Mapping[str, str] = os.environ) -> str:
    """AMQLITE_URL, else the local broker on AMQLITE_MANAGEMENT_PORT (what
    ``amqlite serve`` there would use), else on RabbitMQ's 15672."""
    if environ.get("AMQLITE_URL"):
        return environ["AMQLITE_URL"]
    return f"http://guest:guest@localhost:{environ.get('AMQLITE_MANAGEMENT_PORT') or 15672}"


class Api:
    """The management API at ``url`` (credentials in the URL, as rabbitmqadmin's -u/-p)."""

    def __init__(self, url: str) -> None:
        if "://" not in url:  # host:port, as rabbitmqadmin's -H and -P
            url = f"http://{url}"
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            port = -1
        if parts.scheme not in ("http", "https") or not parts.hostname or port == -1:
            raise CtlError(f"--url {url}: expected http://[USER:PASSWORD@]HOST[:PORT] or HOST:PORT")
        self.base = urlunsplit((parts.scheme, f"{parts.hostname}:{port or 15672}", "", "", ""))
        credentials = f"{parts.username or 'guest'}:{parts.password or 'guest'}"
        self.auth = "Basic " + base64.b64encode(credentials.encode()).decode()

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Authorization": self.auth, "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw = response.read()
        except urllib.error.HTTPError as failure:
            try:
                detail = json.loads(failure.read())
                reason = f"{detail.get('error')}: {detail.get('reason')}"
            except ValueError:
                reason = failure.reason
            raise CtlError(f"{method} {path}: {failure.code} {reason}") from None
        except (urllib.error.URLError, OSError) as failure:
            cause = getattr(failure, "reason", failure)
            raise CtlError(f"cannot reach {self.base}: {getattr(cause, 'strerror', None) or cause}") from None
        return json.loads(raw) if raw.strip() else None


def _path(*segments: str) -> str:
    return "/".join(quote(segment, safe="") for segment in segments)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    if isinstance(value, dict):
        return str(value.get("name", value))
    return str(value)


def table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    cells = [list(columns)] + [[_cell(row.get(column, "")) for column in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in cells)


class Progress:
    """A bar on stderr when it is a terminal; silent otherwise (scripts, pipes)."""

    def __init__(self, total: int, label: str, stream: IO[str] = sys.stderr) -> None:
        self.total, self.label, self.stream = max(total, 1), label, stream
        self.shown = stream.isatty()

    def update(self, done: int) -> None:
        if self.shown:
            filled = min(30, 30 * done // self.total)
            self.stream.write(f"\r{self.label} [{'#' * filled}{' ' * (30 - filled)}] {done}/{self.total}")
            self.stream.flush()

    def close(self) -> None:
        if self.shown:
            self.stream.write("\n")


def redrive(api: Api, vhost: str, queue: str, body: dict[str, Any]) -> dict[str, Any]:
    """Start a redrive job (``body`` as the API takes it) and follow it to
    its end with a progress bar; its last report."""
    path = f"/api/queues/{_path(vhost, queue)}/redrives"
    if body.get("dry_run"):
        return dict(api.call("POST", path, body))
    total = api.call("GET", f"/api/queues/{_path(vhost, queue)}")["messages_ready"]
    limit = body.get("limit")
    progress = Progress(total if limit is None else min(limit, total), "redrive")
    job = api.call("POST", path, body)
    try:
        while job["state"] == "running":
            time.sleep(POLL)
            job = api.call("GET", f"/api/redrives/{_path(vhost)}/{job['id']}")
            progress.update(job["done"])
    except KeyboardInterrupt:
        job = api.call("DELETE", f"/api/redrives/{_path(vhost)}/{job['id']}")
    progress.close()
    if job["state"] == "failed":
        raise CtlError(f"redrive of {queue} failed after moving {job['done']}: {job['error']}")
    return dict(job)


def filter_of(args: argparse.Namespace) -> dict[str, Any]:
    """The workbench filter the options ask for (the API's field names)."""
    chosen: dict[str, Any] = {}
    for option, field in (("reason", "reason"), ("died_in", "queue"), ("min_deaths", "min_deaths"),
                          ("max_deaths", "max_deaths"), ("routing_key", "routing_key"), ("since", "since"),
                          ("until", "until")):
        if getattr(args, option) is not None:
            chosen[field] = getattr(args, option)
    headers = headers_of(args.header)
    if headers:
        chosen["headers"] = headers
    return chosen


def headers_of(pairs: list[str] | None) -> dict[str, str]:
    headers = {}
    for pair in pairs or ():
        name, equals, value = pair.partition("=")
        if not equals or not name:
            raise CtlError(f"--header {pair}: expected NAME=VALUE")
        headers[name] = value
    return headers


def scheduled(api: Api, args: argparse.Namespace, out: IO[str]) -> None:
    """``amqlite ctl scheduled list|cancel|reschedule|fire EXCHANGE [ID]``
    (``--queue``: a queue's retries waiting out their delay)."""
    path = f"/api/{'queues' if args.queue else 'exchanges'}/{_path(args.vhost, args.exchange)}/scheduled"
    chosen: dict[str, Any] = {key: value for key, value in (
        ("due_from", args.due_from), ("due_to", args.due_to), ("routing_key", args.routing_key)) if value is not None}
    headers = headers_of(args.header)
    if args.op == "list":
        query = {"after": args.after, "limit": args.limit, **chosen, **{f"header.{k}": v for k, v in headers.items()}}
        page = api.call("GET", f"{path}?{urlencode(query)}")
        if args.format == "json":
            print(json.dumps(page, indent=1), file=out)
            return
        rows = [{"id": m["id"], "due_in_s": round(m["due_in_ms"] / 1000, 1), "routing_key": m.get("routing_key"),
                 "payload": (p := str(m.get("payload", m.get("error", ""))))[:39] + ("…" if len(p) > 39 else "")}
                for m in page["messages"]]
        print(table(rows, ("id", "due_in_s", "routing_key", "payload")), file=out)
        more = f"; more with --after {page['next']}" if page["next"] is not None else ""
        print(f"{len(rows)} of {page['held']} held{more}", file=out)
    elif args.op == "cancel" and args.id is None:
        if headers:
            chosen["headers"] = headers
        if args.queue:
            raise CtlError("a queue's retries are cancelled one ID at a time")
        if not chosen and not args.all:
            raise CtlError("give an ID, a filter, or --all to cancel every held message")
        done = api.call("POST", f"{path}/cancel", {"filter": chosen})
        print(json.dumps(done) if args.format == "json" else f"cancelled {done['cancelled']} held messages", file=out)
    else:
        if args.id is None:
            raise CtlError(f"scheduled {args.op} needs the id of a held message")
        if args.op == "cancel":
            done = api.call("DELETE", f"{path}/{_path(args.id)}")
        elif args.op == "fire":
            done = api.call("POST", f"{path}/{_path(args.id)}/fire")
        else:
            if (args.delay is None) == (args.due is None):
                raise CtlError("reschedule needs one of --delay MS or --due EPOCH_SECONDS")
            done = api.call("POST", f"{path}/{_path(args.id)}/reschedule",
                            {"delay": args.delay} if args.delay is not None else {"due": args.due})
        print(f"{args.op} {args.id}: done" + (f" ({done['changed']} held messages)" if done["changed"] > 1 else ""),
              file=out)


def browse_rows(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One table row per browsed message: where it is, why it died, a preview."""
    rows = []
    for message in messages:
        deaths = message.get("x_death") or []
        headers = (message.get("properties") or {}).get("headers", {}) if message.get("properties") else {}
        shown = {name: value for name, value in headers.items() if not name.startswith("x-")}
        payload = message.get("payload", message.get("error", ""))
        rows.append({
            "position": message["position"], "routing_key": message.get("routing_key"),
            "reason": deaths[0].get("reason") if deaths else None, "died_in": deaths[0].get("queue") if deaths else None,
            "deaths": sum(int(death.get("count", 1)) for death in deaths),
            "redrives": headers.get("x-redrive-count"),
            "headers": " ".join(f"{name}={value}" for name, value in shown.items()),
            "payload": payload if len(payload) <= 40 else payload[:39] + "…",
        })
    return rows


def slices(definitions: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The definitions as consecutive partial documents of BATCH items,
    in the order an import needs (vhosts before what lives in them)."""
    for section in SECTIONS:
        items = definitions.get(section) or []
        for start in range(0, len(items), BATCH):
            yield {section: items[start : start + BATCH]}


def import_definitions(api: Api, definitions: dict[str, Any], vhost: str | None = None) -> int:
    """Post the definitions a slice at a time; into ``vhost`` only, if given."""
    total = sum(len(definitions.get(section) or []) for section in SECTIONS)
    progress = Progress(total, "import")
    done = 0
    for part in slices(definitions):
        api.call("POST", "/api/definitions" + (f"/{_path(vhost)}" if vhost else ""), part)
        done += sum(len(items) for items in part.values())
        progress.update(done)
    progress.close()
    return done


def _common(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """The options every subcommand takes, before it or after it."""
    def default(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS  # after it, only what is given

    parser.add_argument("--url", default=default(None),
                        help="the management API, with credentials: http://USER:PASSWORD@HOST:PORT or HOST:PORT "
                             "(default: AMQLITE_URL, else the local broker on AMQLITE_MANAGEMENT_PORT, else "
                             "on 15672; guest:guest)")
    parser.add_argument("--format", choices=("table", "json"), default=default("table"))
    parser.add_argument("--vhost", default=default(None),
                        help="for purge, delete, browse, redrive, delete-messages, scheduled and set-permissions (default /); for export and import, "
                             "that vhost's definitions only")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="amqlite ctl", description="Manage a running broker (amqlite or RabbitMQ) through its management API.")
    _common(parser, defaults=True)
    common = argparse.ArgumentParser(add_help=False)
    _common(common, defaults=False)
    commands = parser.add_subparsers(dest="action", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, parents=[common])

    listing = command("list", help="list objects")
    listing.add_argument("kind", choices=sorted(LISTS))
    command("status", help="what the broker holds, in one screen")
    purge = command("purge", help="remove every ready message of a queue")
    purge.add_argument("queue")
    delete = command("delete", help="delete a queue or an exchange")
    delete.add_argument("kind", choices=("queue", "exchange"))
    delete.add_argument("name")
    look = command("browse", help="show a queue's ready messages without consuming them")
    look.add_argument("queue")
    look.add_argument("--offset", type=int, default=0, help="position to start from (0: the head)")
    look.add_argument("--limit", type=int, default=20)
    move = command("redrive", help="move dead-lettered messages back where they died, or --to a queue; "
                                   "with a filter, only those that match")
    move.add_argument("queue")
    move.add_argument("--to")
    move.add_argument("--limit", type=int)
    move.add_argument("--rate", type=float, help="messages per second at most")
    move.add_argument("--dry-run", action="store_true", help="only count what would move")
    drop = command("delete-messages", help="delete a queue's ready messages that match a filter")
    drop.add_argument("queue")
    drop.add_argument("--all", action="store_true", help="with no filter: delete every ready message")
    for sub in (look, move, drop):
        sub.add_argument("--reason", choices=("rejected", "expired", "maxlen", "delivery_limit"))
        sub.add_argument("--died-in", metavar="QUEUE", help="died in this queue")
        sub.add_argument("--min-deaths", type=int)
        sub.add_argument("--max-deaths", type=int)
        sub.add_argument("--header", action="append", metavar="NAME=VALUE")
        sub.add_argument("--routing-key")
        sub.add_argument("--since", help="first death at or after: epoch seconds or ISO 8601")
        sub.add_argument("--until", help="first death before: epoch seconds or ISO 8601")
    held = command("scheduled", help="a delayed exchange's held messages (or a queue's retries): list them, cancel "
                                     "one (ID) or all that match a filter, reschedule one (--delay or --due), fire one now")
    held.add_argument("op", choices=("list", "cancel", "reschedule", "fire"))
    held.add_argument("exchange", help="the delayed exchange (with --queue: the queue)")
    held.add_argument("--queue", action="store_true",
                      help="a queue's retries waiting out an x-delayed-retry-* delay; a cancel dead-letters")
    held.add_argument("id", nargs="?", help="a held message's id, as list shows it: its message_id, or the "
                                            "broker's number (all held messages with that message_id)")
    held.add_argument("--after", default="0", help="list: the number to go on from (list prints it)")
    held.add_argument("--limit", type=int, default=20)
    held.add_argument("--due-from", help="due at or after: epoch seconds or ISO 8601")
    held.add_argument("--due-to", help="due before: epoch seconds or ISO 8601")
    held.add_argument("--routing-key")
    held.add_argument("--header", action="append", metavar="NAME=VALUE")
    held.add_argument("--all", action="store_true", help="cancel with no ID and no filter: cancel every one")
    held.add_argument("--delay", type=float, help="reschedule: ms from now")
    held.add_argument("--due", type=float, help="reschedule: epoch seconds")
    export = command("export", help="write the definitions (RabbitMQ's JSON) to FILE, or - for stdout")
    export.add_argument("file")
    export.add_argument("--with-default-user", action="store_true",
                        help=f"keep the {DEFAULT_USER} user and its permissions: left out by default, since importing "
                             "them overwrites the target's own")
    load = command("import", help="load definitions from FILE, or - for stdin")
    load.add_argument("file")
    user = command("add-user", help="create or update a user; the password is read from stdin")
    user.add_argument("name")
    user.add_argument("--tags", default="", help="comma-separated: administrator, monitoring, management, ...")
    remove = command("delete-user", help="delete a user")
    remove.add_argument("name")
    grant = command("set-permissions", help="let a user open --vhost")
    grant.add_argument("user")
    return parser


def without_default_user(definitions: dict[str, Any]) -> dict[str, Any]:
    """The definitions less DEFAULT_USER and its permissions."""
    kept = dict(definitions)
    for section, key in (("users", "name"), ("permissions", "user"), ("topic_permissions", "user")):
        if section in definitions:
            kept[section] = [item for item in definitions[section] or [] if item.get(key) != DEFAULT_USER]
    return kept


def run(args: argparse.Namespace, out: IO[str]) -> None:
    api = Api(args.url or default_url())
    as_json = args.format == "json"
    scope = args.vhost  # export and import: one vhost's definitions, if given
    args.vhost = args.vhost or "/"
    if args.action == "list":
        path, columns = LISTS[args.kind]
        rows = api.call("GET", path)
        print(json.dumps(rows, indent=1) if as_json else table(rows, columns), file=out)
    elif args.action == "status":
        overview = api.call("GET", "/api/overview")
        if as_json:
            print(json.dumps(overview, indent=1), file=out)
        else:
            totals, objects = overview["queue_totals"], overview["object_totals"]
            print(f"{overview['product_name']} {overview['product_version']} on node {overview['node']}", file=out)
            print(table([{**objects, **totals}], ("connections", "channels", "queues", "consumers", "messages",
                                                  "messages_ready", "messages_unacknowledged")), file=out)
    elif args.action == "purge":
        api.call("DELETE", f"/api/queues/{_path(args.vhost, args.queue)}/contents")
        print(f"purged {args.queue}", file=out)
    elif args.action == "delete":
        api.call("DELETE", f"/api/{args.kind}s/{_path(args.vhost, args.name)}")
        print(f"deleted {args.kind} {args.name}", file=out)
    elif args.action == "browse":
        query = {"offset": args.offset, "limit": args.limit, **{
            key: value for key, value in filter_of(args).items() if key != "headers"}}
        query.update({f"header.{name}": value for name, value in filter_of(args).get("headers", {}).items()})
        page = api.call("GET", f"/api/queues/{_path(args.vhost, args.queue)}/messages?{urlencode(query)}")
        if as_json:
            print(json.dumps(page, indent=1), file=out)
        else:
            print(table(browse_rows(page["messages"]), ("position", "routing_key", "reason", "died_in", "deaths",
                                                         "redrives", "headers", "payload")), file=out)
            more = f"; more from --offset {page['next']}" if page["next"] is not None else ""
            print(f"{len(page['messages'])} of {page['messages_ready']} ready messages{more}", file=out)
    elif args.action == "redrive":
        body: dict[str, Any] = {"filter": filter_of(args), "dry_run": args.dry_run}
        for key in ("to", "limit", "rate"):
            if getattr(args, key) is not None:
                body[key] = getattr(args, key)
        job = redrive(api, args.vhost, args.queue, body)
        where = f"to {args.to}" if args.to else "back to the queues they died in"
        skipped = f" ({job['skipped']} left in place: nowhere to go)" if job["skipped"] else ""
        if as_json:
            print(json.dumps(job), file=out)
        elif args.dry_run:
            print(f"{job['matched']} messages of {args.queue} would move {where}", file=out)
        else:
            cancelled = " (cancelled)" if job["state"] == "cancelled" else ""
            print(f"moved {job['done']} messages from {args.queue} {where}{skipped}{cancelled}", file=out)
    elif args.action == "delete-messages":
        chosen = filter_of(args)
        if not chosen and not args.all:
            raise CtlError("give a filter, or --all to delete every ready message")
        done = api.call("POST", f"/api/queues/{_path(args.vhost, args.queue)}/messages/delete", {"filter": chosen})
        print(json.dumps(done) if as_json else f"deleted {done['deleted']} messages from {args.queue}", file=out)
    elif args.action == "scheduled":
        scheduled(api, args, out)
    elif args.action == "export":
        exported = api.call("GET", "/api/definitions" + (f"/{_path(scope)}" if scope else ""))
        if not args.with_default_user:
            exported = without_default_user(exported)
        text = json.dumps(exported, indent=1)
        if args.file == "-":
            print(text, file=out)
        else:
            with open(args.file, "w") as file:
                file.write(text + "\n")
            print(f"exported definitions to {args.file}", file=out)
    elif args.action == "import":
        try:
            source = sys.stdin.read() if args.file == "-" else open(args.file).read()
            definitions = json.loads(source)
        except OSError as failure:
            raise CtlError(f"{args.file}: {failure.strerror or failure}") from None
        except ValueError as failure:
            raise CtlError(f"{args.file}: not JSON ({failure})") from None
        if not isinstance(definitions, dict):
            raise CtlError(f"{args.file}: definitions must be a JSON object")
        print(f"imported {import_definitions(api, definitions, scope)} definitions", file=out)
    elif args.action == "add-user":
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise CtlError("no password on stdin")
        api.call("PUT", f"/api/users/{_path(args.name)}", {"password": password, "tags": args.tags})
        print(f"user {args.name} set", file=out)
    elif args.action == "delete-user":
        api.call("DELETE", f"/api/users/{_path(args.name)}")
        print(f"deleted user {args.name}", file=out)
    elif args.action == "set-permissions":
        api.call("PUT", f"/api/permissions/{_path(args.vhost, args.user)}",
                 {"configure": ".*", "write": ".*", "read": ".*"})
        print(f"{args.user} may open {args.vhost}", file=out)


def main(argv: list[str], out: IO[str] = sys.stdout) -> int:
    args = _parser().parse_args(argv)
    try:
        run(args, out)
    except CtlError as failure:
        print(f"amqlite ctl: {failure}", file=sys.stderr)
        return 1
    return 0
