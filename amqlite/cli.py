"""The ``amqlite`` command line.

``amqlite serve`` runs the AMQP 0-9-1 broker. Settings come from defaults,
then ``--config FILE`` (TOML), then ``AMQLITE_*`` environment variables,
then flags.
"""

from __future__ import annotations

import argparse
import errno
import signal
import sys

import trio

from . import __version__
from .auth import hash_password
from .config import ConfigError, Settings, load
from .log import get_logger
from .logconfig import configure
from .server import Server
from .store.journal import StoreLocked

log = get_logger("amqlite")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="amqlite", description="A RabbitMQ-style message broker.")
    parser.add_argument("--version", action="version", version=f"amqlite {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the AMQP 0-9-1 broker")
    serve.add_argument("--host", help="interface to bind (default: all)")
    serve.add_argument("--port", type=int, help="port (default 5672; 0 picks a free one)")
    serve.add_argument("--data-dir", help="where durable state lives (default ./amqlite-data)")
    serve.add_argument("--config", help="a TOML settings file")
    hashing = commands.add_parser("hash-password", help="print a password hash for a config file")
    hashing.add_argument("password")
    return parser


async def _serve(settings: Settings) -> int:
    server = Server.from_settings(settings)
    async with trio.open_nursery() as nursery:
        try:
            await nursery.start(server.serve)
        except OSError as error:
            return _bind_failed(settings, error)
        except StoreLocked as error:
            log.error("broker.data_dir_locked", data_dir=settings.data_dir)
            print(f"amqlite: {error}", file=sys.stderr)
            return 1
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                log.info("broker.stopping", signal=signal.Signals(signum).name,
                         connections=len(server.connections))
                break
        nursery.cancel_scope.cancel()
    log.info("broker.stopped")
    return 0


def _bind_failed(settings: Settings, error: OSError) -> int:
    if error.errno == errno.EADDRINUSE:
        reason = f"port {settings.port} is already in use (another broker, such as RabbitMQ?); choose one with --port or AMQLITE_PORT"
    elif error.errno == errno.EACCES:
        reason = f"not allowed to bind port {settings.port}"
    else:
        reason = f"cannot listen on {settings.host}:{settings.port}: {error.strerror}"
    log.error("broker.listen_failed", host=settings.host, port=settings.port, reason=reason)
    print(f"amqlite: {reason}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "hash-password":
        print(hash_password(args.password))
        return 0
    try:
        settings = load(
            config_file=args.config,
            overrides={"host": args.host, "port": args.port, "data_dir": args.data_dir},
        )
    except ConfigError as error:
        print(f"amqlite: {error}", file=sys.stderr)
        return 2
    configure(settings.log_format, settings.log_level)
    return trio.run(_serve, settings)


if __name__ == "__main__":
    sys.exit(main())
