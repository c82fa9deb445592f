"""Torch threads on a shared machine: trainings that run at once split the cores.

Two CPU trainings that each use torch's default thread count (one per core) slow each other
5x, not 2x (``transmem speed --shared-machine``: libgomp's waiting threads spin for the
cores the other process needs). So, unless the thread count is pinned, every transmem
training registers itself in a per-user folder of the machine and uses

    threads = max(1, torch's default // number of transmem trainings running),

recounted at most once a second while it trains: a training alone uses every core, two
use one core each, and the one left when the other finishes takes the cores back.

The count is pinned, and never changed, when ``OMP_NUM_THREADS`` is set or the caller has
already changed torch's thread count (``torch.set_num_threads``, as ``benchmark --jobs N``
workers do); pinned trainings still register, so the others leave them their share.
Another thread count trains to other weights in the last bits (``train.csv`` logs it per
row): pin it (``OMP_NUM_THREADS``) for bit-exact reruns on a shared machine.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import torch

DEFAULT_THREADS = torch.get_num_threads()  # torch's choice at import (one per core), before anyone changes it
RECOUNT_SECONDS = 1.0


def registry_folder() -> Path:
    """The per-user folder holding one file per running transmem training (named by its PID)."""
    user = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    return Path(tempfile.gettempdir()) / f"transmem-{user}-trainings"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def running_trainings(folder: Path | None = None) -> int:
    """How many registered trainings are alive (this process included when registered).
    Entries of dead processes (a killed training) are ignored and removed."""
    folder = folder or registry_folder()
    count = 0
    try:
        entries = list(folder.iterdir())
    except FileNotFoundError:
        return 0
    for entry in entries:
        if not entry.name.isdigit():
            continue
        if _alive(int(entry.name)):
            count += 1
        else:
            entry.unlink(missing_ok=True)
    return count


def share(trainings: int, default: int | None = None) -> int:
    """Threads for one of ``trainings`` trainings running at once on ``default`` threads' worth
    of cores (torch's default thread count unless given)."""
    return max(1, (default or DEFAULT_THREADS) // max(1, trainings))


def pinned() -> bool:
    """Whether the thread count was chosen by the user (``OMP_NUM_THREADS``, ``torch.set_num_threads``)."""
    return bool(os.environ.get("OMP_NUM_THREADS")) or torch.get_num_threads() != DEFAULT_THREADS


class ThreadShare:
    """Registration of this process as a running training, and its share of the threads.

    Use as a context manager around a training; call :meth:`recount` from its loop. Nested
    uses in one process (a source ranking's probe runs inside a training) count once. On
    exit the process's thread count is restored and, for the outermost use, the
    registration removed.
    """

    _depth = 0  # nested uses in this process
    _outer_adapts = False  # whether the outermost use adapts (a nested one follows it)

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder or registry_folder()
        self.entry = self.folder / str(os.getpid())
        self.adapts = False
        self.saved = torch.get_num_threads()
        self._last = 0.0

    def __enter__(self) -> "ThreadShare":
        # inside an adapting training the changed thread count is its share, not a pin
        self.adapts = ThreadShare._outer_adapts if ThreadShare._depth > 0 else not pinned()
        if ThreadShare._depth == 0:
            ThreadShare._outer_adapts = self.adapts
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                self.entry.touch()
            except OSError:  # an unwritable temporary folder: train unshared
                pass
        ThreadShare._depth += 1
        self.recount(force=True)
        return self

    def recount(self, force: bool = False) -> int:
        """Set this process's threads to its share (at most once a second unless ``force``); returns them."""
        now = time.monotonic()
        if self.adapts and (force or now - self._last >= RECOUNT_SECONDS):
            self._last = now
            threads = share(running_trainings(self.folder))
            if threads != torch.get_num_threads():
                torch.set_num_threads(threads)
        return torch.get_num_threads()

    def __exit__(self, *exc) -> None:
        ThreadShare._depth -= 1
        if ThreadShare._depth == 0:
            self.entry.unlink(missing_ok=True)
        if torch.get_num_threads() != self.saved:
            torch.set_num_threads(self.saved)
