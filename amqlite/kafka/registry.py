"""Every Kafka API amqlite serves, by key: the one place to register one.

Each module lists its :class:`~amqlite.kafka.apis.Api` entries in ``APIS``;
add a module to ``MODULES`` and ApiVersions advertises its APIs at the
versions they declare (docs/kafka.md, "Adding an API").
"""

from __future__ import annotations

from types import ModuleType

from . import admin, fetch, groups, groups_offsets, metadata, offsets, produce, sasl, transactions, versions
from .apis import Api

MODULES: tuple[ModuleType, ...] = (
    versions,   # ApiVersions
    metadata,   # Metadata
    groups,     # FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup, List/Describe/DeleteGroups
    groups_offsets,  # OffsetCommit, OffsetFetch, OffsetDelete
    sasl,       # SaslHandshake, SaslAuthenticate
    produce,    # Produce
    transactions,  # InitProducerId, Add{Partitions,Offsets}ToTxn, EndTxn, TxnOffsetCommit, Describe/ListTransactions
    fetch,      # Fetch
    offsets,    # ListOffsets
    admin,      # Create/DeleteTopics, CreatePartitions, Describe/Alter/IncrementalAlterConfigs, DescribeCluster
)


def _gather(modules: tuple[ModuleType, ...]) -> dict[int, Api]:
    apis: dict[int, Api] = {}
    for module in modules:
        for api in module.APIS:
            if api.key in apis:
                raise RuntimeError(f"Kafka API key {api.key} registered twice ({module.__name__})")
            apis[api.key] = api
    return apis


APIS: dict[int, Api] = _gather(MODULES)
