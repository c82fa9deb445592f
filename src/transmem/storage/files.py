"""Files written so that a kill at any moment leaves the old or the new one, never a torn one.

A write goes to ``.NAME.transmem-tmp-PID`` in the same folder, is flushed and fsynced, then
renamed over ``NAME`` (and the folder fsynced). :func:`remove_stale_temporaries` removes the
temporaries a killed writer left (ours only, by that exact pattern). :func:`sha256_file`
hashes a file in chunks.

A disk that fills up mid-write raises :class:`~transmem.errors.DiskFullError` (one line: the
file, the bytes it needed, the bytes free), with the temporary removed and the old file, if
any, untouched. :func:`allocate_file` reserves a file's blocks before it is memory-mapped: a
mapped page the disk has no room for kills the process with SIGBUS instead of raising.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
from pathlib import Path

from transmem.errors import DiskFullError

#: The errors of a write that found no room: the disk is full, or the user's quota is.
DISK_FULL_ERRNOS = frozenset(code for code in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if code is not None)


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
        if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
            raise disk_full_error(path, len(data)) from None
        if (
            isinstance(error, OSError) and error.filename is not None and str(error.filename) == str(tmp)
        ):  # name the file asked for
            raise type(error)(error.errno, error.strerror, str(path)) from None
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def _size(nbytes: int) -> str:
    """``nbytes`` for a reader: ``"1234567 bytes (1.2 MB)"``."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes} bytes ({nbytes / scale:.1f} {unit})"
    return f"{nbytes} bytes"


def disk_full_error(path: Path, needed: int, what: str = "writing it") -> DiskFullError:
    """The one-line error of a write of ``needed`` bytes to ``path`` that found its disk full
    (``what``: what needed them); the caller has removed what it wrote."""
    path = Path(path)
    free = None
    for folder in (path, *path.parents):  # the nearest existing folder is on the same disk
        try:
            free = shutil.disk_usage(folder).free
            break
        except OSError:
            continue
    room = f", {_size(free)} free" if free is not None else ""
    error = DiskFullError(
        f"{path}: no space left on device: {what} needs {_size(needed)}{room}; nothing half-written was kept: "
        "free some space and rerun the same command (a run resumes from its last checkpoint)"
    )
    error.errno, error.strerror, error.filename = errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)
    return error


def allocate_file(path: Path, nbytes: int) -> None:
    """Create ``path`` (``nbytes`` of zeros) with every block reserved on disk, so that a
    memory map of it never meets a full disk (SIGBUS) but this raises DiskFullError first:
    ``os.posix_fallocate``, else (unsupported by the platform or file system) zeros written.
    A file that cannot be allocated is removed."""
    path = Path(path)
    try:
        with open(path, "wb") as handle:
            try:
                os.posix_fallocate(handle.fileno(), 0, nbytes)
            except (AttributeError, OSError) as error:  # no posix_fallocate here (macOS), or not on this file system
                if isinstance(error, OSError) and error.errno not in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                _write_zeros(handle, nbytes)
    except BaseException as error:
        path.unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
            raise disk_full_error(path, nbytes) from None
        raise


def _write_zeros(handle, nbytes: int, chunk: int = 1 << 20) -> None:
    """Fill the open file ``handle`` with ``nbytes`` zeros, flushed and fsynced (blocks on disk)."""
    zeros = bytes(min(chunk, nbytes))
    left = nbytes
    while left > 0:
        left -= handle.write(zeros[: min(left, chunk)])
    handle.flush()
    os.fsync(handle.fileno())


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
