"""The management API's handlers, one module per kind of resource; each
handler takes a :class:`~amqlite.management.api.Call` and is reached only
through its row in :mod:`amqlite.management.routes`."""
