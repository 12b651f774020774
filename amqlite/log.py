"""The one logging helper library modules use.

Library code never configures logging; ``amqlite serve`` (the application)
does. Until then structlog's defaults apply, or whatever the host program set.
"""

from __future__ import annotations

import structlog


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger(name)
