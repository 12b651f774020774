"""How many client connections the open-files limit leaves room for.

Every client socket is a descriptor, and so are the journal's segments,
the data directory's files, the HTTP listeners and the log. When sockets
took them all (``ulimit -n 128``), the journal could not open its next
segment and every persistent publish was nacked. So, as RabbitMQ does
(``file_handle_cache``: the limit less 100 reserved, 90% of that for
sockets), the default connection limit keeps descriptors back.
"""

from __future__ import annotations

import math
import resource

#: Descriptors kept for everything that is not a client socket.
RESERVED = 100
#: Of the rest, the share client sockets may take.
SOCKET_SHARE = 0.9


def open_files_limit() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def room(open_files: int) -> int:
    """The client sockets ``open_files`` descriptors leave room for."""
    return max(1, int((open_files - RESERVED) * SOCKET_SHARE))


def raise_open_files_limit(connections: int) -> int:
    """Raise the soft open-files limit towards what ``connections`` sockets
    need, as far as the hard limit allows; the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = math.ceil(connections / SOCKET_SHARE) + RESERVED
    if soft != resource.RLIM_INFINITY and soft < needed:
        wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):
            pass  # the limit stays; connection_limit keeps within it
    return open_files_limit()


def connection_limit(configured: int, open_files: int) -> int:
    """``configured`` if set (0: not) and ``open_files`` leaves room for
    it, else what ``open_files`` leaves room for: a max_connections above
    the limit let sockets take the descriptors the store and the memory
    watch need."""
    if configured:
        return min(configured, room(open_files))
    return room(open_files)
