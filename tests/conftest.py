"""Settings every test shares."""

import os

# Brokers started as processes (`amqlite serve`) serve no HTTP unless a test
# asks: RabbitMQ's fixed management and Prometheus ports would clash between
# test servers, and with a reference RabbitMQ that has its plugins enabled.
os.environ.setdefault("AMQLITE_MANAGEMENT_PORT", "0")
os.environ.setdefault("AMQLITE_PROMETHEUS_PORT", "0")
