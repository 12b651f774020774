"""``python -m amqlite``: the same as the ``amqlite`` command."""

import sys

from .cli import main

sys.exit(main())
