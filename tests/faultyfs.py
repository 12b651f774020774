"""The one fault-injecting file system of the test suite, for the store
tests (tests/store) and the server tests (tests/server) alike."""

from __future__ import annotations

import errno
import threading
from pathlib import Path
from typing import BinaryIO

from amqlite.store.segments import FileSystem


class FaultyFS(FileSystem):
    """A file system that fails on demand.

    ``full``: writes raise ENOSPC (after writing half the bytes when
    ``short``); ``fsync_fails``: fsync raises EIO; ``read_fails``: reads
    (pread) raise EIO; ``dead``: nothing reaches the disk any more (a
    crash: what was not synced stays unsynced); ``free``: the free space
    reported to the disk monitor. ``gate``, when set, makes
    writes wait until it is set (``entered`` says one is waiting); a write
    that began before the disk filled up still succeeds.
    """

    def __init__(self) -> None:
        self.full = False
        self.short = True
        self.fsync_fails = False
        self.remove_fails = False
        self.read_fails = False
        self.dead = False
        #: Free space to report, bytes; None: the real figure.
        self.free: int | None = None
        self.writes = 0
        self.failures = 0
        self.gate: threading.Event | None = None
        self.entered = threading.Event()

    def _check_alive(self) -> None:
        if self.dead:
            raise OSError(errno.EIO, "crashed")

    def write(self, file: BinaryIO, data: bytes) -> None:
        self._check_alive()
        full, gate = self.full, self.gate  # as the write starts
        if gate is not None:
            self.entered.set()
            gate.wait(10)
        if full:
            self.failures += 1
            if self.short:
                file.write(data[: len(data) // 2])
                file.flush()
            raise OSError(errno.ENOSPC, "No space left on device")
        self.writes += 1
        super().write(file, data)

    def fsync(self, file: BinaryIO) -> None:
        self._check_alive()
        if self.fsync_fails:
            self.failures += 1
            raise OSError(errno.EIO, "Input/output error")
        super().fsync(file)

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        if self.read_fails:
            self.failures += 1
            raise OSError(errno.EIO, "Input/output error")
        return super().pread(fd, size, offset)

    def truncate(self, path: Path, size: int) -> None:
        self._check_alive()
        super().truncate(path, size)

    def free_bytes(self, path: Path) -> int:
        return super().free_bytes(path) if self.free is None else self.free

    def remove(self, path: Path) -> None:
        self._check_alive()
        if self.remove_fails:
            raise OSError(errno.EACCES, "Permission denied")
        super().remove(path)
