"""The reference RabbitMQ that differential tests compare against."""

from __future__ import annotations

import socket

RABBITMQ = ("127.0.0.1", 5672)


def rabbitmq_available() -> bool:
    try:
        with socket.create_connection(RABBITMQ, timeout=0.5):
            return True
    except OSError:
        return False
