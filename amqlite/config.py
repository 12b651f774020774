"""Server settings: defaults, then a TOML file, then AMQLITE_* environment
variables, then command-line flags; later sources win.

Defaults match RabbitMQ: port 5672 on all interfaces, guest/guest allowed
from loopback only, frame_max 131072, channel_max 2047, heartbeat 60 s,
16 MiB maximum message size.

Every field is validated (type, range, allowed values) by its attrs
validator, so ``Settings(...)`` built in code and settings loaded from a
file or the environment obey the same rules. :func:`load` checks every
value before giving up and reports all problems at once, each prefixed by
where the value came from (``AMQLITE_HEARTBEAT=70000: heartbeat must be
0-65535 seconds``).
"""

from __future__ import annotations

import os
import tomllib
from typing import Any, Callable, Mapping

import attrs

from . import defaults
from .core.permissions import valid_pattern

LOG_FORMATS = ("auto", "console", "json")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
#: Keys a ``[users.NAME]`` table may hold.
USER_KEYS = frozenset({"password", "password_hash", "vhosts", "permissions", "topic_permissions", "tags", "limits"})
#: Keys a ``[vhosts.NAME]`` table may hold.
VHOST_KEYS = frozenset({"description", "limits"})
#: RabbitMQ's vhost limits and user limits, by their names there.
VHOST_LIMITS = ("max-connections", "max-queues")
USER_LIMITS = ("max-connections", "max-channels")

Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]


def _integer(low: int, high: int, unit: str = "") -> Validator:
    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{attribute.name} must be an integer, not {value!r}")
        if not low <= value <= high:
            raise ValueError(f"{attribute.name} must be {low}-{high}{unit}")

    return check


def _seconds(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 3600:
        raise ValueError(f"{attribute.name} must be a number of seconds, more than 0 and at most 3600")


def _delay(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 300:
        raise ValueError(f"{attribute.name} must be a number of seconds from 0 to 300")


def _fraction(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"{attribute.name} must be a fraction from 0 to 1, not {value!r}")


def _mechanisms(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    known = ("PLAIN", "AMQPLAIN", "EXTERNAL")
    if not isinstance(value, tuple) or not value or any(item not in known for item in value):
        raise ValueError(f"{attribute.name} must be a non-empty list of {', '.join(known)}, not {value!r}")


def _one_of(choices: tuple[str, ...]) -> Validator:
    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value not in choices:
            raise ValueError(f"{attribute.name} must be one of {', '.join(choices)}, not {value!r}")

    return check


def _text(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str):
        raise ValueError(f"{attribute.name} must be a string, not {value!r}")


def _secret(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """A string never echoed: a wrong value may still be someone's password."""
    if not isinstance(value, str):
        raise ValueError(f"{attribute.name} must be a string")


def _flag(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{attribute.name} must be true or false, not {value!r}")


def _names(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, tuple) or not all(isinstance(item, str) and item for item in value):
        raise ValueError(f"{attribute.name} must be a list of non-empty names")


def _string_list(where: str, value: Any) -> list[str]:
    if not isinstance(value, list | tuple) or not all(isinstance(item, str) for item in value):
        return [f"{where} must be a list of strings"]
    return []


def _vhost_tables(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    problems = []
    for name, table in value.items():
        if not isinstance(name, str) or not name:
            problems.append(f"vhost names must be non-empty strings, not {name!r}")
            continue
        if not isinstance(table, Mapping):
            problems.append(f"vhosts.{name} must be a table")
            continue
        unknown = sorted(set(table) - VHOST_KEYS)
        problems += [f"vhosts.{name}.{key}: unknown key (known: {', '.join(sorted(VHOST_KEYS))})" for key in unknown]
        if not isinstance(table.get("description", ""), str):
            problems.append(f"vhosts.{name}.description must be a string")
        problems += limit_problems(f"vhosts.{name}.limits", table.get("limits", {}), VHOST_LIMITS)
    if problems:
        raise ValueError("; ".join(problems))


def _user_tables(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    problems = []
    for name, table in value.items():
        if not isinstance(table, Mapping):
            problems.append(f"users.{name} must be a table")
            continue
        unknown = sorted(set(table) - USER_KEYS)
        problems += [f"users.{name}.{key}: unknown key (known: {', '.join(sorted(USER_KEYS))})" for key in unknown]
        secrets = [key for key in ("password", "password_hash") if key in table]
        if len(secrets) != 1:
            problems.append(f"users.{name} needs exactly one of password and password_hash")
        problems += [f"users.{name}.{key} must be a string" for key in secrets if not isinstance(table[key], str)]
        for key in ("vhosts", "tags"):
            if key in table:
                problems += _string_list(f"users.{name}.{key}", table[key])
        problems += _permission_tables(f"users.{name}", table)
        problems += limit_problems(f"users.{name}.limits", table.get("limits", {}), USER_LIMITS)
    if problems:
        raise ValueError("; ".join(problems))


def limit_problems(where: str, limits: Any, known: tuple[str, ...]) -> list[str]:
    """What is wrong with a table of RabbitMQ limits (integers; negative: none)."""
    if not isinstance(limits, Mapping):
        return [f"{where} must be a table"]
    problems = [f"{where}.{key}: unknown limit (known: {', '.join(known)})" for key in limits if key not in known]
    return problems + [f"{where}.{key} must be an integer" for key, value in limits.items()
                       if isinstance(value, bool) or not isinstance(value, int)]


def _permission_tables(where: str, table: Mapping[str, Any]) -> list[str]:
    """``permissions = {VHOST = {configure, write, read}}`` and
    ``topic_permissions = [{vhost, exchange, write, read}]``: regular
    expressions that compile, as RabbitMQ's set_permissions takes them."""
    if not isinstance(table.get("permissions", {}), Mapping):
        return [f"{where}.permissions must be a table of vhost tables"]
    entries: list[tuple[str, Any, tuple[str, ...], tuple[str, ...]]] = [
        (f"{where}.permissions.{vhost}", grant, ("configure", "write", "read"), ())
        for vhost, grant in table.get("permissions", {}).items()]
    topics = table.get("topic_permissions", [])
    if not isinstance(topics, list):
        return [f"{where}.topic_permissions must be a list of tables"]
    entries += [(f"{where}.topic_permissions[{n}]", grant, ("write", "read"), ("vhost", "exchange"))
                for n, grant in enumerate(topics)]
    problems = []
    for place, grant, patterns, names in entries:
        if not isinstance(grant, Mapping):
            problems.append(f"{place} must be a table")
            continue
        known = {*patterns, *names}
        problems += [f"{place}.{key}: unknown key (known: {', '.join(sorted(known))})" for key in set(grant) - known]
        for key in (*names, *patterns):
            value = grant.get(key)
            if not isinstance(value, str):
                problems.append(f"{place}.{key} must be a string")
            elif key in patterns and (problem := valid_pattern(value)) is not None:
                problems.append(f"{place}.{key}: invalid regular expression {value!r}: {problem}")
    return problems


def _as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list | tuple) else value


def _path_text(value: Any) -> Any:
    return os.fspath(value) if isinstance(value, os.PathLike) else value


def _vhosts(value: Any) -> Mapping[str, Mapping[str, Any]]:
    """A list of names, or a table of names to vhost tables."""
    if isinstance(value, str) or not isinstance(value, Mapping | list | tuple):
        raise TypeError(f"vhosts must be a list of names or a table of vhost tables, not {value!r}")
    if isinstance(value, Mapping):
        return {name: dict(table) if isinstance(table, Mapping) else table for name, table in value.items()}
    return {name: {} for name in value}


def _setting(default: Any, validator: Validator, help: str, *, secret: bool = False, **options: Any) -> Any:
    """A settings field; ``help`` feeds ``amqlite serve --help``. A
    ``secret`` one (it holds passwords or their hashes) is never echoed:
    not in its repr, not in an error saying where a bad value came from."""
    metadata = {"help": help, "secret": secret}
    if secret:
        options["repr"] = False
    if callable(default) and not isinstance(default, str):
        return attrs.field(factory=default, validator=validator, metadata=metadata, **options)
    return attrs.field(default=default, validator=validator, metadata=metadata, **options)


@attrs.frozen
class Settings:
    host: str = _setting("0.0.0.0", _text, "interface to bind; 0.0.0.0 or :: means all, IPv4 and IPv6")
    port: int = _setting(defaults.PORT, _integer(0, 65535),
                         "AMQP port; 0 picks a free one, or with tls_port set turns plain AMQP off")
    management_port: int = _setting(defaults.MANAGEMENT_PORT, _integer(0, 65535),
                                    "management HTTP API port, on the AMQP host; 0 disables it")
    prometheus_port: int = _setting(defaults.PROMETHEUS_PORT, _integer(0, 65535),
                                    "Prometheus metrics port, on the AMQP host; 0 disables it")
    management_tls_port: int = _setting(0, _integer(0, 65535),
                                        "HTTPS port for the management API, with tls_cert and tls_key "
                                        "(RabbitMQ's management.ssl.port, 15671 by convention); 0: none")
    kafka_port: int = _setting(defaults.KAFKA_PORT, _integer(0, 65535),
                               "Kafka protocol port, on the AMQP host (docs/kafka.md); 0 disables it")
    kafka_tls_port: int = _setting(0, _integer(0, 65535),
                                   "Kafka over TLS port, with tls_cert and tls_key and the other tls_* settings; 0: none")
    kafka_vhost: str = _setting("/", _text, "the vhost whose streams are the Kafka topics (Kafka has no vhosts)")
    kafka_advertised_host: str = _setting("", _text, "the host Kafka's Metadata tells clients to connect to; "
                                                     '"": the address each client reached')
    kafka_auto_create_topics: bool = _setting(True, _flag, "create a one-partition topic (a stream) when a Kafka "
                                                           "client asks for one that does not exist")
    kafka_allow_anonymous: bool = _setting(True, _flag, "Kafka clients without SASL act as default_user (with its "
                                                        "loopback rule), as RabbitMQ's MQTT allow_anonymous")
    kafka_group_initial_rebalance_delay: float = _setting(
        3.0, _delay, "seconds a new Kafka consumer group waits for more members before its first rebalance "
                     "(Kafka's group.initial.rebalance.delay.ms); 0: none")
    data_dir: str = _setting("./amqlite-data", _text,
                             "durable definitions and persistent messages; one broker per directory",
                             converter=_path_text)
    tls_port: int = _setting(0, _integer(0, 65535),
                             "AMQP over TLS (amqps) port beside the plain one, on the same host; 0: none (5671 "
                             "is the convention)")
    tls_cert: str = _setting("", _text, "the server's certificate chain (PEM), for tls_port")
    tls_key: str = _setting("", _text, "the server's private key (PEM), for tls_port")
    tls_ca: str = _setting("", _text, "CA certificates (PEM) that client certificates are verified against")
    tls_verify_peer: bool = _setting(False, _flag, "verify a client certificate when the client sends one "
                                                   "(RabbitMQ's verify_peer)")
    tls_fail_if_no_peer_cert: bool = _setting(False, _flag, "refuse TLS clients without a valid certificate "
                                                            "(RabbitMQ's fail_if_no_peer_cert)")
    definitions: str = _setting("", _text,
                                "a RabbitMQ definitions JSON file imported at every start, as RabbitMQ's "
                                "load_definitions; empty for none")
    segment_size: int = _setting(defaults.SEGMENT_SIZE, _integer(1024, 2**31 - 1, " bytes"),
                                 "bytes per log segment file; only whole segments are deleted")
    queue_memory_budget: int = _setting(defaults.QUEUE_MEMORY_BUDGET, _integer(1, 2**31 - 1, " messages"),
                                        "ready messages a durable queue keeps in memory; the rest wait on disk")
    disk_free_limit: int = _setting(defaults.DISK_FREE_LIMIT, _integer(0, 2**63 - 1, " bytes"),
                                    "below this much free disk space persistent publishes are refused; 0: never")
    memory_high_watermark: float = _setting(
        defaults.MEMORY_HIGH_WATERMARK, _fraction,
        "memory in use, as a fraction of RAM, above which publishers are blocked (RabbitMQ's "
        "vm_memory_high_watermark); 0 blocks every publisher")
    memory_high_watermark_bytes: int = _setting(
        0, _integer(0, 2**63 - 1, " bytes"), "the same as an absolute amount, in place of the fraction; 0: unset")
    memory_paging_ratio: float = _setting(
        defaults.MEMORY_PAGING_RATIO, _fraction,
        "part of the watermark above which queues keep fewer messages in memory and page transient ones to "
        "disk too (RabbitMQ's vm_memory_high_watermark_paging_ratio); 1: only once the alarm is on")
    heartbeat: int = _setting(defaults.HEARTBEAT, _integer(0, 65535, " seconds"),
                              "seconds proposed in connection.tune; 0 disables")
    frame_max: int = _setting(defaults.FRAME_MAX, _integer(defaults.FRAME_MIN_SIZE, 2**32 - 1, " bytes"),
                              "largest frame, bytes")
    channel_max: int = _setting(defaults.CHANNEL_MAX, _integer(0, 65535),
                                "open channels per connection; 0 means the protocol's 65535")
    max_message_size: int = _setting(defaults.MAX_MESSAGE_SIZE, _integer(1, 512 * 1024 * 1024, " bytes"),
                                     "largest message body, bytes (RabbitMQ allows at most 512 MiB)")
    consumer_timeout: int = _setting(
        0, _integer(0, 2**31 - 1, " milliseconds"),
        "milliseconds a delivery may stay unacked before its channel is closed (406) and it is requeued, where a "
        "queue sets no x-consumer-timeout; 0: no limit (RabbitMQ's 30-minute default killed long Celery tasks)")
    max_content_in_flight: int = _setting(
        defaults.MAX_CONTENT_IN_FLIGHT, _integer(1, 2**63 - 1, " bytes"),
        "bytes of partially received messages one connection may hold (at least max_message_size)")
    max_connections: int = _setting(0, _integer(0, 2**31 - 1),
                                    "0: derived from the open-files limit, keeping descriptors for the store "
                                    "and the log, as RabbitMQ does")
    max_unauthenticated: int = _setting(defaults.MAX_UNAUTHENTICATED, _integer(1, 2**31 - 1),
                                        "connections still in the handshake at once, per listener (HTTP ones: "
                                        "open at once); more are closed at accept")
    max_unauthenticated_per_address: int = _setting(
        defaults.MAX_UNAUTHENTICATED_PER_ADDRESS, _integer(1, 2**31 - 1),
        "connections not yet logged in from one source address, on all listeners together (at most half of "
        "max_connections); more are closed at accept")
    handshake_timeout: float = _setting(defaults.HANDSHAKE_TIMEOUT, _seconds,
                                        "seconds a client has to complete connection.open")
    log_format: str = _setting("auto", _one_of(LOG_FORMATS), "auto: console on a terminal, json otherwise")
    log_level: str = _setting("info", _one_of(LOG_LEVELS), "least severe level logged")
    default_user: str = _setting("guest", _text, 'user created at every start, with every vhost; "" for none')
    default_pass: str = _setting("guest", _secret, "its password", secret=True)
    auth_mechanisms: tuple[str, ...] = _setting(
        ("PLAIN", "AMQPLAIN", "EXTERNAL"), _mechanisms,
        "SASL mechanisms offered, in order (RabbitMQ's auth_mechanisms); EXTERNAL only on TLS connections "
        "with a verified client certificate", converter=_as_tuple)
    loopback_users: tuple[str, ...] = _setting(
        ("guest",), _names, "users who may connect from loopback only, whatever their password; [] for none",
        converter=_as_tuple,
    )
    users: Mapping[str, Any] = _setting(dict, _user_tables,
                                        "[users.NAME] tables: password or password_hash, vhosts, tags", secret=True)
    vhosts: Mapping[str, Mapping[str, Any]] = _setting(
        lambda: {"/": {}}, _vhost_tables, "virtual hosts: a list of names, or [vhosts.NAME] tables (description)",
        converter=_vhosts,
    )


class ConfigError(Exception):
    """Settings that cannot be used; the message says which, where from and why."""


FIELDS: dict[str, attrs.Attribute[Any]] = {field.name: field for field in attrs.fields(Settings)}
#: Settings given as TOML tables, so not from the environment or a flag.
TABLES = ("users",)
#: Settings that are lists; comma-separated in the environment.
LISTS = ("vhosts", "loopback_users", "auth_mechanisms")


def _secret_field(name: str) -> bool:
    return bool(FIELDS[name].metadata["secret"])


def env_name(name: str) -> str:
    return f"AMQLITE_{name.upper()}"


def _parse(name: str, raw: str) -> Any:
    """A setting from text (the environment, a flag), by its default's type."""
    if name in LISTS:
        return [item.strip() for item in raw.split(",") if item.strip()]
    default = FIELDS[name].default
    if isinstance(default, bool):
        words = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False,
                 "off": False}
        return words.get(raw.strip().lower(), raw)
    if isinstance(default, int):
        try:
            return int(raw)
        except ValueError:
            return raw  # the validator says what was expected
    if isinstance(default, float):
        try:
            return float(raw)
        except ValueError:
            return raw
    return raw


def load(
    *,
    config_file: str | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Settings from every source, or ConfigError listing every problem."""
    values: dict[str, tuple[Any, str]] = {}  # name -> (value, where it came from)
    problems: list[str] = []
    if config_file:
        try:
            with open(config_file, "rb") as f:
                data = tomllib.load(f)
        except OSError as error:
            raise ConfigError(f"{config_file}: cannot read: {error.strerror}") from None
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{config_file}: not valid TOML: {error}") from None
        tls = data.pop("tls", None)
        if isinstance(tls, dict):  # the [tls] table: its keys are the tls_* settings
            data.update({f"tls_{key}": value for key, value in tls.items()})
        elif tls is not None:
            problems.append(f"{config_file}: tls must be a table")
        for key, value in data.items():
            name = key.replace("-", "_")
            if name not in FIELDS:
                problems.append(f"{config_file}: {key}: unknown setting")
            else:
                values[name] = (value, f"{config_file}: {key}" if _secret_field(name) else
                                f"{config_file}: {key} = {value!r}")
    environ = os.environ if environ is None else environ
    for name in FIELDS:
        raw = environ.get(env_name(name))
        if raw is not None and name not in TABLES:
            values[name] = (_parse(name, raw), env_name(name) if _secret_field(name) else f"{env_name(name)}={raw}")
    for name, value in (overrides or {}).items():
        if value is not None:
            flag = f"--{name.replace('_', '-')}"
            values[name] = (value, flag if _secret_field(name) else f"{flag} {value}")
    for name, (value, source) in values.items():
        field = FIELDS[name]
        try:
            if field.converter is not None:
                value = field.converter(value)  # type: ignore[operator]
            assert field.validator is not None
            field.validator(None, field, value)
        except (ValueError, TypeError) as error:
            problems.append(f"{source}: {error}")
    if problems:
        raise ConfigError("; ".join(problems))
    return Settings(**{name: value for name, (value, _) in values.items()})
