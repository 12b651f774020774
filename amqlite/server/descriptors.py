"""How many client connections the open-files limit leaves room for.

Every client socket is a descriptor, and so are the journal's segments,
the data directory's files, the HTTP listeners and the log. When sockets
took them all (``ulimit -n 128``), the journal could not open its next
segment and every persistent publish was nacked. So, as RabbitMQ does
(``file_handle_cache``: the limit less 100 reserved, 90% of that for
sockets), the default connection limit keeps descriptors back.
"""

from __future__ import annotations

import resource

#: Descriptors kept for everything that is not a client socket.
RESERVED = 100
#: Of the rest, the share client sockets may take.
SOCKET_SHARE = 0.9


def open_files_limit() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def connection_limit(configured: int, open_files: int) -> int:
    """``configured`` if set (0: not), else what ``open_files`` leaves room for."""
    if configured:
        return configured
    return max(1, int((open_files - RESERVED) * SOCKET_SHARE))
