"""Files written so that a kill at any moment leaves the old or the new one, never a torn one.

A write goes to ``.NAME.transmem-tmp-PID`` in the same folder, is flushed and fsynced, then
renamed over ``NAME`` (and the folder fsynced). :func:`remove_stale_temporaries` removes the
temporaries a killed writer left (ours only, by that exact pattern). :func:`sha256_file`
hashes a file in chunks.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


TEMPORARY_MARK = ".transmem-tmp-"  # atomic writes go through ".NAME.transmem-tmp-PID"
_OUR_TEMPORARY = re.compile(r"^\..+" + re.escape(TEMPORARY_MARK) + r"\d+$")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (tmp file, flush, fsync, rename, fsync dir)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}{TEMPORARY_MARK}{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:  # disk full, no such folder, Ctrl-C: leave no partial file
        tmp.unlink(missing_ok=True)
        if (
            isinstance(error, OSError) and error.filename is not None and str(error.filename) == str(tmp)
        ):  # name the file asked for
            raise type(error)(error.errno, error.strerror, str(path)) from None
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temporaries(folder: Path) -> None:
    """Remove our own ``.NAME.transmem-tmp-PID`` files left by a killed writer (never anything else)."""
    folder = Path(folder)
    if folder.is_dir():
        for tmp in folder.glob(f".*{TEMPORARY_MARK}*"):
            if _OUR_TEMPORARY.match(tmp.name):
                tmp.unlink(missing_ok=True)
