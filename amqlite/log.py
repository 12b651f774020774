"""The one logging helper library modules use.

Library code never configures logging. Its loggers hand their events to
the standard library's ``logging`` (logger names are module names, under
``amqlite``), so the program that embeds amqlite decides where they go;
unconfigured, Python prints warnings and errors to stderr and nothing ever
reaches stdout. ``amqlite serve`` configures both (see logconfig.py).
"""

from __future__ import annotations

import logging
from typing import Any

import structlog


def get_logger(name: str) -> Any:
    return structlog.wrap_logger(logging.getLogger(name), wrapper_class=structlog.stdlib.BoundLogger)
