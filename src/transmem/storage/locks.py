"""Advisory file locks, so two processes never write the same run folder or memory bank.

Two ``transmem train`` (or ``transmem benchmark``) processes on one run folder would
interleave checkpoints and logs, and one would delete the other's half-written temporaries.
A :class:`FileLock` on ``<run>/train.lock`` makes the second one stop with a clear error.
A memory bank is built under a lock too; there the second process waits and then reads the
finished bank.

The locks are POSIX ``flock`` locks: the kernel releases them when the process ends, however
it ends (``kill -9`` included), so a stale lock never blocks a resumed run. The lock file
itself stays (an empty file); deleting it would let two processes lock two different files.
On systems without ``fcntl`` (Windows) the lock does nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

from transmem.errors import LockedError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


class FileLock:
    """An exclusive ``flock`` on ``path`` (created if missing), held until :meth:`release`.

    ``acquire(wait=False)`` raises :class:`LockedError` naming the holder's pid if another
    process holds it; ``acquire(wait=True)`` blocks until it is free. Acquiring a lock this
    object already holds does nothing. Usable as a context manager (waits).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, wait: bool = False) -> None:
        if self._fd is not None or fcntl is None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LockedError(f"{self.path}: locked by another process (pid {holder})") from None
        except BaseException:
            os.close(fd)
            raise
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        except BaseException:
            os.close(fd)  # releases the lock
            raise
        self._fd = fd

    def holder(self) -> str | None:
        """The pid of another process holding the lock, else None. Creates nothing."""
        if self._fd is not None or fcntl is None:
            return None
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        finally:
            os.close(fd)  # also drops the shared lock just taken
        return None

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        os.close(fd)  # closing the descriptor releases the flock

    def __enter__(self) -> FileLock:
        self.acquire(wait=True)
        return self

    def __exit__(self, *exc) -> None:
        self.release()
