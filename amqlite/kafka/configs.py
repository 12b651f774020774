"""Kafka topic configs as stream arguments, both ways.

Three configs are the stream's own retention arguments, alterable:

| Kafka | stream argument |
|---|---|
| ``retention.ms`` | ``x-max-age`` (whole seconds, rounded up; -1: none) |
| ``retention.bytes`` | ``x-max-length-bytes`` (-1: none) |
| ``segment.bytes`` | ``x-stream-max-segment-size-bytes`` |

The others Kafka clients commonly set or read have one value here, which
they may set (a no-op) but not change: INVALID_CONFIG says so. An unknown
name is INVALID_CONFIG too, as Kafka answers.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import attrs

from ..core.arguments import DEFAULT_STREAM_SEGMENT_SIZE, parse_age

RETENTION_MS = "retention.ms"
RETENTION_BYTES = "retention.bytes"
SEGMENT_BYTES = "segment.bytes"
#: Kafka config -> stream argument.
ARGUMENTS = {RETENTION_MS: "x-max-age", RETENTION_BYTES: "x-max-length-bytes",
             SEGMENT_BYTES: "x-stream-max-segment-size-bytes"}
#: Configs with the one value amqlite's streams have.
FIXED = {
    "cleanup.policy": "delete",
    "compression.type": "producer",
    "message.timestamp.type": "CreateTime",
    "min.insync.replicas": "1",
    "unclean.leader.election.enable": "false",
}
#: Kafka's DescribeConfigs config_source values.
DYNAMIC_TOPIC_CONFIG = 1
DEFAULT_CONFIG = 5


class ConfigError(ValueError):
    """A config that cannot be taken; the message is for the client."""


@attrs.frozen
class TopicConfig:
    name: str
    value: str | None
    #: Set on this topic (a stream argument), not a default.
    set_here: bool
    read_only: bool


def describe(arguments: Mapping[str, Any]) -> list[TopicConfig]:
    """A stream's configs, as DescribeConfigs lists a topic's."""
    age = arguments.get("x-max-age")
    seconds = parse_age(age) if isinstance(age, str) else None
    length = arguments.get("x-max-length-bytes")
    segment = arguments.get("x-stream-max-segment-size-bytes")
    configs = [
        TopicConfig(RETENTION_MS, str(int(seconds * 1000)) if seconds is not None else "-1", seconds is not None,
                    False),
        TopicConfig(RETENTION_BYTES, str(length) if length is not None else "-1", length is not None, False),
        TopicConfig(SEGMENT_BYTES, str(segment if segment is not None else DEFAULT_STREAM_SEGMENT_SIZE),
                    segment is not None, False),
    ]
    return configs + [TopicConfig(name, value, False, True) for name, value in FIXED.items()]


def with_config(arguments: Mapping[str, Any], name: str, value: str | None) -> dict[str, Any]:
    """``arguments`` with config ``name`` set to ``value`` (None: back to
    its default); ConfigError for a config that cannot be."""
    if name in FIXED:
        if value is not None and value != FIXED[name]:
            raise ConfigError(f"{name} is {FIXED[name]} on amqlite's streams and cannot be changed")
        return dict(arguments)
    argument = ARGUMENTS.get(name)
    if argument is None:
        raise ConfigError(f"Unknown topic config name: {name}")
    changed = dict(arguments)
    changed.pop(argument, None)
    if value is None:
        return changed
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"Invalid value {value} for configuration {name}: not a number") from None
    if number == -1 and name != SEGMENT_BYTES:
        return changed  # unlimited
    if number < (1 if name == SEGMENT_BYTES else 0):
        raise ConfigError(f"Invalid value {value} for configuration {name}")
    changed[argument] = f"{max(1, math.ceil(number / 1000))}s" if name == RETENTION_MS else number
    return changed


def stream_arguments(configs: Mapping[str, str | None]) -> dict[str, Any]:
    """A new topic's stream arguments from CreateTopics' configs."""
    arguments: dict[str, Any] = {}
    for name, value in configs.items():
        arguments = with_config(arguments, name, value)
    return arguments
