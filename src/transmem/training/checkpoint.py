"""Atomic, verified checkpoints that never execute code when loaded.

A checkpoint is a ``torch.save`` of plain containers, strings, numbers and tensors, loaded
with ``torch.load(..., weights_only=True)``: a crafted pickle that would run code is refused.
Writes go to a temporary file in the same folder, are flushed and fsynced, then renamed
over the final name, so a kill at any moment leaves either the old or the new file. The
SHA-256 of every checkpoint is recorded in ``manifest.json``; the last ``keep`` are kept.
Resuming takes the newest checkpoint whose checksum matches and falls back to older ones,
naming the corrupted file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

FORMAT = "transmem-checkpoint-1"
MANIFEST = "manifest.json"


class CheckpointError(ValueError):
    """A file is not a usable transmem checkpoint. The message names the file."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (tmp file, flush, fsync, rename, fsync dir)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
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


def save_checkpoint(folder: Path, iteration: int, state: dict[str, Any], keep: int = 3) -> Path:
    """Write ``state`` as ``folder/ckpt-{iteration:08d}.pt`` atomically; keep the last ``keep``."""
    import io

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buffer)
    data = buffer.getvalue()
    path = folder / f"ckpt-{iteration:08d}.pt"
    atomic_write_bytes(path, data)
    manifest = _read_manifest(folder)
    manifest[path.name] = hashlib.sha256(data).hexdigest()
    names = sorted(manifest)
    for old in names[:-keep]:
        (folder / old).unlink(missing_ok=True)
        manifest.pop(old)
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
    return path


def _read_manifest(folder: Path) -> dict[str, str]:
    path = Path(folder) / MANIFEST
    if not path.exists():
        return {}
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError:
        log.warning("%s is corrupted; checkpoints will be verified by loading", path)
        return {}
    return manifest if isinstance(manifest, dict) else {}


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu", expected_sha256: str | None = None) -> dict:
    """Load one checkpoint safely (``weights_only=True``); raise CheckpointError naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    if expected_sha256 is not None and sha256_file(path) != expected_sha256:
        raise CheckpointError(f"{path}: checksum mismatch (truncated or corrupted checkpoint)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else "unsafe content"
        raise CheckpointError(f"{path}: refused to load (not plain weights: {first[:200]})") from None
    except Exception as error:  # zip/EOF/format errors from a truncated or foreign file
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(error).__name__}: {error})"[:400]) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a transmem checkpoint")
    return state


def list_checkpoints(folder: Path) -> list[Path]:
    """Checkpoints in ``folder``, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(folder.glob("ckpt-*.pt"))


def latest_good_checkpoint(folder: Path, map_location: str | torch.device = "cpu") -> tuple[Path, dict] | None:
    """The newest checkpoint that passes its checksum and loads; warns about bad ones."""
    manifest = _read_manifest(folder)
    for path in reversed(list_checkpoints(folder)):
        try:
            return path, load_checkpoint(path, map_location, manifest.get(path.name))
        except CheckpointError as error:
            log.warning("skipping %s; falling back to an older checkpoint", error)
    return None


def remove_stale_temporaries(folder: Path) -> None:
    """Remove our own ``.*.tmp-PID`` files left by a killed writer (never anything else)."""
    folder = Path(folder)
    if folder.is_dir():
        for tmp in folder.glob(".*.tmp-*"):
            tmp.unlink(missing_ok=True)
