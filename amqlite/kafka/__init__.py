"""The Kafka protocol over amqlite's streams (docs/kafka.md).

protocol.py reads and writes the wire format (kio's generated types for
bodies), engine.py is one connection, sans-IO, and registry.py lists the
APIs served, one module per area. The trio driver is
``amqlite.server.kafka_listener``.
"""
