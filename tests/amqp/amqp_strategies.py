"""Hypothesis strategies and helpers shared by the AMQP codec tests."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

from amqlite.amqp import spec
from amqlite.amqp.properties import BasicProperties

class Unencodable:
    """A value of no AMQP type, whose repr (a test id) is the same in every
    process: pytest-xdist's workers must collect the same ids."""

    def __repr__(self) -> str:
        return "Unencodable()"


# Field values that decode back to the identical Python value and type.
leaf_values = st.one_of(
    st.booleans(),
    st.integers(-(2**31), 2**31 - 1),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=30),
    st.binary(max_size=30),
    st.none(),
    st.builds(lambda m, s: Decimal(m).scaleb(-s), st.integers(-(2**31), 2**31 - 1), st.integers(0, 20)),
    st.datetimes(
        min_value=datetime(1970, 1, 1), max_value=datetime(9999, 1, 1), timezones=st.just(timezone.utc)
    ).map(lambda d: d.replace(microsecond=0)),
)
keys = st.text(max_size=40)  # at most 160 UTF-8 bytes
field_values = st.recursive(
    leaf_values,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=12,
)
tables = st.dictionaries(keys, field_values, max_size=6)

shortstrs = st.text(max_size=60)  # at most 240 UTF-8 bytes
_FIELD_STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "octet": st.integers(0, 2**8 - 1),
    "short": st.integers(0, 2**16 - 1),
    "long": st.integers(0, 2**32 - 1),
    "longlong": st.integers(0, 2**64 - 1),
    "shortstr": shortstrs,
    "longstr": st.binary(max_size=60),
    "bit": st.booleans(),
    "table": tables,
}


def methods_of(cls: type[spec.Method]) -> st.SearchStrategy[spec.Method]:
    """Instances of a method class with every field drawn from its wire type."""
    fields = {f.name: _FIELD_STRATEGIES[str(f.type)] for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return st.builds(cls, **fields)


properties = st.builds(
    BasicProperties,
    content_type=st.none() | shortstrs,
    content_encoding=st.none() | shortstrs,
    headers=st.none() | tables,
    delivery_mode=st.none() | st.integers(0, 255),
    priority=st.none() | st.integers(0, 255),
    correlation_id=st.none() | shortstrs,
    reply_to=st.none() | shortstrs,
    expiration=st.none() | shortstrs,
    message_id=st.none() | shortstrs,
    timestamp=st.none() | st.integers(0, 2**64 - 1),
    type=st.none() | shortstrs,
    user_id=st.none() | shortstrs,
    app_id=st.none() | shortstrs,
    cluster_id=st.none() | shortstrs,
)


def typed(value: Any) -> Any:
    """A value with its types spelled out, so True == 1 and [1] == (1,) stop hiding bugs."""
    if isinstance(value, dict):
        return ("dict", {k: typed(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [typed(v) for v in value])
    if isinstance(value, int) and not isinstance(value, bool):
        return ("int", int(value))  # pika decodes to an int subclass
    return (type(value).__name__, value)
