"""Every default the broker has, defined once.

``config.Settings`` takes its defaults from here, and so does every
constructor that has a default of its own (the core broker, the AMQP
engine, the disk journal), so a value cannot drift between them. Most
match RabbitMQ, so client configuration carries over unchanged.
"""

from __future__ import annotations

#: RabbitMQ's AMQP port.
PORT = 5672
#: Kafka's port.
KAFKA_PORT = 9092
#: RabbitMQ's management plugin port (HTTP API).
MANAGEMENT_PORT = 15672
#: RabbitMQ's rabbitmq_prometheus port.
PROMETHEUS_PORT = 15692
#: RabbitMQ's default frame_max (rabbit.frame_max).
FRAME_MAX = 131072
#: AMQP 0-9-1's minimum frame size; also what clients are held to before tune-ok.
FRAME_MIN_SIZE = 4096
#: RabbitMQ's default channel_max: the number of open channels per connection.
CHANNEL_MAX = 2047
#: Seconds; RabbitMQ's default heartbeat.
HEARTBEAT = 60
#: RabbitMQ 4.x's max message size (3.x had 128 MiB).
MAX_MESSAGE_SIZE = 16 * 1024 * 1024
#: Bytes of partially received messages one connection may hold, all channels together.
MAX_CONTENT_IN_FLIGHT = 64 * 1024 * 1024
#: Ready messages a durable queue keeps in memory before paging to disk.
QUEUE_MEMORY_BUDGET = 20_000
#: The same while memory is short (above the paging ratio of the memory
#: high watermark), for every queue, transient messages included.
PRESSURE_QUEUE_BUDGET = 1_000
#: As RabbitMQ's vm_memory_high_watermark_paging_ratio default: the part of
#: the watermark above which queues page transient messages out too.
MEMORY_PAGING_RATIO = 0.5
#: Size at which the durable log starts a new segment file, bytes.
SEGMENT_SIZE = 64 * 1024 * 1024
#: Seconds between two progress lines while start-up replays the log.
RECOVERY_PROGRESS_INTERVAL = 2.0
#: Free disk space below which persistent publishes are refused, bytes
#: (RabbitMQ's disk_free_limit default, 50 MB).
DISK_FREE_LIMIT = 50_000_000
#: As RabbitMQ's vm_memory_high_watermark (relative) default.
MEMORY_HIGH_WATERMARK = 0.4
#: Connections still in the handshake (not yet authenticated) at once.
MAX_UNAUTHENTICATED = 1000
#: Of those, the most from one source address, so that one cannot lock out the others.
MAX_UNAUTHENTICATED_PER_ADDRESS = 100
#: Seconds a client has to finish the AMQP handshake (RabbitMQ: 10 s).
HANDSHAKE_TIMEOUT = 10.0
