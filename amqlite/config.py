"""Server settings: defaults, then a TOML file, then AMQLITE_* environment
variables, then command-line flags; later sources win.

Defaults match RabbitMQ: port 5672 on all interfaces, guest/guest allowed
from loopback only, frame_max 131072, channel_max 2047, heartbeat 60 s,
16 MiB maximum message size.
"""

from __future__ import annotations

import os
import tomllib
from typing import Any, Mapping

import attrs

from . import defaults


@attrs.frozen
class Settings:
    host: str = "0.0.0.0"
    port: int = defaults.PORT
    data_dir: str = "./amqlite-data"
    #: Size at which the durable log starts a new segment file, bytes. Only
    #: whole segments are ever deleted; small ones compact sooner (tests use it).
    segment_size: int = defaults.SEGMENT_SIZE
    #: Ready messages a durable queue keeps in memory; persistent ones
    #: beyond it wait on disk only and are read back as consumers drain.
    queue_memory_budget: int = defaults.QUEUE_MEMORY_BUDGET
    heartbeat: int = defaults.HEARTBEAT
    frame_max: int = defaults.FRAME_MAX
    channel_max: int = defaults.CHANNEL_MAX
    max_message_size: int = defaults.MAX_MESSAGE_SIZE
    #: 0 means no limit.
    max_connections: int = 0
    handshake_timeout: float = defaults.HANDSHAKE_TIMEOUT
    #: "auto" (console on a TTY, JSON otherwise), "console" or "json".
    log_format: str = "auto"
    log_level: str = "info"
    #: Extra users, name -> {"password_hash": ..., "vhosts": [...]} (see
    #: docs/operations.md); the guest user always exists, loopback only.
    users: Mapping[str, Any] = attrs.field(factory=dict)
    vhosts: tuple[str, ...] = ("/",)


class ConfigError(Exception):
    """A setting that cannot be used; the message says which and why."""


_FIELDS = {f.name: f for f in attrs.fields(Settings)}


def _coerce(name: str, value: Any) -> Any:
    default = _FIELDS[name].default
    try:
        if isinstance(default, bool):
            return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes", "on")
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, tuple):
            return tuple(value) if isinstance(value, list | tuple) else tuple(str(value).split(","))
    except (TypeError, ValueError):
        raise ConfigError(f"setting {name!r}: cannot use {value!r}") from None
    return value


def load(
    *,
    config_file: str | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    values: dict[str, Any] = {}
    if config_file:
        try:
            with open(config_file, "rb") as f:
                data = tomllib.load(f)
        except OSError as error:
            raise ConfigError(f"cannot read config file {config_file}: {error.strerror}") from None
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"config file {config_file} is not valid TOML: {error}") from None
        for key, value in data.items():
            name = key.replace("-", "_")
            if name not in _FIELDS:
                raise ConfigError(f"config file {config_file}: unknown setting {key!r}")
            values[name] = value if name == "users" else _coerce(name, value)
    environ = os.environ if environ is None else environ
    for name in _FIELDS:
        raw = environ.get(f"AMQLITE_{name.upper()}")
        if raw is not None and name != "users":
            values[name] = _coerce(name, raw)
    for name, value in (overrides or {}).items():
        if value is not None:
            values[name] = _coerce(name, value)
    settings = Settings(**values)
    if not 0 <= settings.port <= 65535:
        raise ConfigError(f"port {settings.port} is out of range")
    if settings.frame_max < defaults.FRAME_MIN_SIZE:
        raise ConfigError("frame_max must be at least 4096 (AMQP's minimum)")
    if settings.log_format not in ("auto", "console", "json"):
        raise ConfigError("log_format must be auto, console or json")
    return settings
