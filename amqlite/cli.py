"""The ``amqlite`` command line (also ``python -m amqlite``).

``amqlite serve`` runs the AMQP 0-9-1 broker. Settings come from defaults,
then ``--config FILE`` (TOML), then ``AMQLITE_*`` environment variables,
then flags. Every start-up failure is one line on stderr, no traceback:
exit status 2 for settings that cannot be used, 1 for everything else.
"""

from __future__ import annotations

import argparse
import gc
import getpass
import signal
import sys

import attrs
import trio

from . import __version__, heap
from .auth import hash_password
from .config import FIELDS, LOG_FORMATS, LOG_LEVELS, TABLES, ConfigError, Settings, env_name, load
from .log import get_logger
from .logconfig import configure

log = get_logger("amqlite")

#: Settings with a flag of their own; every setting has its variable.
_FLAGS = ("host", "port", "management_port", "prometheus_port", "kafka_port", "tls_port", "tls_cert", "tls_key", "tls_ca",
          "tls_verify_peer", "tls_fail_if_no_peer_cert", "data_dir", "definitions", "log_level", "log_format")


def _settings_help() -> str:
    lines = ["settings (flag > AMQLITE_* variable > --config file > default):"]
    width = max(map(len, FIELDS)) + 2
    for name, field in FIELDS.items():
        source = "config file only" if name in TABLES else env_name(name)
        default = "" if isinstance(field.default, attrs.Factory) else f" (default {field.default!r})"  # type: ignore[arg-type]
        lines.append(f"  {name:<{width}}{source}{default}")
        lines.append(f"  {'':<{width}}{field.metadata['help']}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="amqlite", description="A RabbitMQ-style message broker.")
    parser.add_argument("--version", action="version", version=f"amqlite {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the AMQP 0-9-1 broker", epilog=_settings_help(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    serve.add_argument("--config", help="a TOML settings file")
    serve.add_argument("--host", help=FIELDS["host"].metadata["help"])
    serve.add_argument("--port", help=FIELDS["port"].metadata["help"])
    serve.add_argument("--management-port", help=FIELDS["management_port"].metadata["help"])
    serve.add_argument("--prometheus-port", help=FIELDS["prometheus_port"].metadata["help"])
    for name in ("tls_port", "tls_cert", "tls_key", "tls_ca"):
        serve.add_argument(f"--{name.replace('_', '-')}", help=FIELDS[name].metadata["help"])
    for name in ("tls_verify_peer", "tls_fail_if_no_peer_cert"):
        serve.add_argument(f"--{name.replace('_', '-')}", action=argparse.BooleanOptionalAction,
                           help=FIELDS[name].metadata["help"])
    serve.add_argument("--kafka-port", help=FIELDS["kafka_port"].metadata["help"])
    serve.add_argument("--data-dir", help=FIELDS["data_dir"].metadata["help"])
    serve.add_argument("--definitions", help=FIELDS["definitions"].metadata["help"])
    serve.add_argument("--log-level", choices=LOG_LEVELS, help=FIELDS["log_level"].metadata["help"])
    serve.add_argument("--log-format", choices=LOG_FORMATS, help=FIELDS["log_format"].metadata["help"])
    hashing = commands.add_parser(
        "hash-password", help="print a password hash for a config file",
        description="Prints the hash of PASSWORD, or of a password read from a prompt (on a terminal) "
                    "or from the first line of stdin. Prefer those: an argument shows in ps and shell history.",
    )
    hashing.add_argument("password", nargs="?")
    commands.add_parser("ctl", help="manage a running broker through its management API (amqlite ctl --help)",
                        add_help=False)
    return parser


#: The cyclic garbage collector's thresholds for ``amqlite serve``. Every
#: message is a few tracked objects, so the default (a collection every 700
#: allocations) collects tens of times per thousand messages, for garbage
#: that reference counting frees anyway: 12% of publish and consume
#: throughput in bench_amqp.py (docs/performance.md). An application's
#: choice, so the embedded broker leaves the process's collector alone.
GC_THRESHOLDS = (50_000, 50, 100)


async def _serve(settings: Settings) -> int:
    # Imported here: the server's modules take most of a second to import,
    # which a bad flag, hash-password and every `amqlite ctl` need not wait for.
    from .server import Server, StartupError

    gc.set_threshold(*GC_THRESHOLDS)
    server = Server.from_settings(settings)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        server.reload_tls()  # certificates rotate; connections stay
                        continue
                    log.info("broker.stopping", signal=signal.Signals(signum).name,
                             during="serving" if server.addresses else "recovery",
                             connections=len(server.connections))
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(stop_on_signal)
            try:
                await nursery.start(server.serve)
            except StartupError as error:
                # The one line the operator reads, whatever the log format.
                print(f"amqlite: {error}", file=sys.stderr)
                nursery.cancel_scope.cancel()
                return 1
    log.info("broker.stopped")
    return 0


def _read_password() -> str:
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise SystemExit("amqlite: the passwords differ")
        return password
    return sys.stdin.readline().rstrip("\r\n")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["ctl"]:  # a client of its own, with its own options
        from . import ctl

        return ctl.main(argv[1:])
    args = _parser().parse_args(argv)
    if args.command == "hash-password":
        password = args.password if args.password is not None else _read_password()
        if not password:
            print("amqlite: empty password", file=sys.stderr)
            return 2
        print(hash_password(password))
        return 0
    try:
        settings = load(config_file=args.config, overrides={name: _flag(args, name) for name in _FLAGS})
    except ConfigError as error:
        print(f"amqlite: {error}", file=sys.stderr)
        return 2
    configure(settings.log_format, settings.log_level)
    heap.map_large_blocks()
    return trio.run(_serve, settings)


def _flag(args: argparse.Namespace, name: str) -> object:
    value = getattr(args, name)
    if name.endswith("port") and value is not None:
        try:
            return int(value)
        except ValueError:
            return value  # the validator says what was expected
    return value


if __name__ == "__main__":
    sys.exit(main())
