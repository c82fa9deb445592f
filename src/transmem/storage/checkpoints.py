"""Atomic, verified checkpoints that never execute code when loaded.

A checkpoint is a ``torch.save`` of plain containers, strings, numbers and tensors, loaded
with ``torch.load(..., weights_only=True)``: a crafted pickle that would run code is refused.
Writes go through :mod:`transmem.storage.files` (temporary file, fsync, rename), so a kill
at any moment leaves either the old or the new file. The
SHA-256 of every checkpoint is recorded in ``manifest.json``; the last ``keep`` are kept.
Each checkpoint also carries a SHA-256 of its own content (``payload_sha256``), so a copy
outside its run folder is verified too. Resuming takes the newest checkpoint whose checksums
match and falls back to older ones, naming the corrupted file.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from transmem.errors import CheckpointError
from transmem.memory_errors import is_out_of_memory
from transmem.storage.files import atomic_write_bytes, atomic_write_text, sha256_file

log = logging.getLogger(__name__)

FORMAT = "transmem-checkpoint-1"
MANIFEST = "manifest.json"
PAYLOAD_KEY = "payload_sha256"


def save_checkpoint(folder: Path, iteration: int, state: dict[str, Any], keep: int = 3) -> Path:
    """Write ``state`` as ``folder/ckpt-{iteration:08d}.pt`` atomically; keep the last ``keep``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    state = {"format": FORMAT, **state}
    state[PAYLOAD_KEY] = payload_digest(state)
    torch.save(state, buffer)
    data = buffer.getvalue()
    path = folder / f"ckpt-{iteration:08d}.pt"
    atomic_write_bytes(path, data)
    manifest = _read_manifest(folder)
    manifest[path.name] = hashlib.sha256(data).hexdigest()
    # Rotate by what is on disk, not by the manifest: a kill between the rename above and the
    # manifest write leaves a checkpoint the manifest does not list, which must not be kept
    # forever. Newer files than this one (only possible if they failed to load) are left alone.
    older = [p.name for p in list_checkpoints(folder) if p.name <= path.name]
    for old in older[:-keep]:
        (folder / old).unlink(missing_ok=True)
    manifest = {name: digest for name, digest in manifest.items() if (folder / name).is_file()}
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
    return path


def payload_digest(state: Any) -> str:
    """SHA-256 of a checkpoint's content (every key, value and tensor byte), key order free."""
    digest = hashlib.sha256()
    _feed(digest, {k: v for k, v in state.items() if k != PAYLOAD_KEY} if isinstance(state, dict) else state)
    return digest.hexdigest()


def _feed(digest, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"T{tensor.dtype}{tuple(tensor.shape)}:".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        digest.update(f"D{len(value)}:".encode())
        for key in sorted(value, key=repr):
            digest.update(repr(key).encode())
            _feed(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"L{len(value)}:".encode())
        for item in value:
            _feed(digest, item)
    else:
        digest.update(f"V{value!r};".encode())


def _read_manifest(folder: Path) -> dict[str, str]:
    path = Path(folder) / MANIFEST
    if not path.exists():
        return {}
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, OSError):  # bad JSON, bad UTF-8 or unreadable
        log.warning("%s is corrupted; checkpoints will be verified by loading", path)
        return {}
    return manifest if isinstance(manifest, dict) else {}


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu", expected_sha256: str | None = None) -> dict:
    """Load one checkpoint safely (``weights_only=True``); raise CheckpointError naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    if expected_sha256 is None:  # given a file directly: use the manifest next to it, if any
        expected_sha256 = _read_manifest(path.parent).get(path.name)
    if expected_sha256 is not None and sha256_file(path) != expected_sha256:
        raise CheckpointError(f"{path}: checksum mismatch (truncated or corrupted checkpoint)")
    if not zipfile.is_zipfile(path):  # torch.save writes zip archives; anything else is not ours
        raise CheckpointError(f"{path}: not a transmem checkpoint (not a PyTorch checkpoint file, or a truncated one)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else "unsafe content"
        raise CheckpointError(f"{path}: refused to load (not plain weights: {first[:200]})") from None
    except Exception as error:  # zip/EOF/format errors from a truncated or foreign file
        if is_out_of_memory(error):  # not damage: falling back to an older checkpoint would lose work
            raise
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(error).__name__}: {error})"[:400]) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a transmem checkpoint")
    recorded = state.pop(PAYLOAD_KEY, None)  # absent in checkpoints written before it existed
    if recorded is not None and recorded != payload_digest(state):
        raise CheckpointError(f"{path}: content checksum mismatch (corrupted checkpoint)")
    return state


def list_checkpoints(folder: Path) -> list[Path]:
    """Checkpoints in ``folder``, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(folder.glob("ckpt-*.pt"))


def checkpoint_iteration(path: Path) -> int:
    """The iteration in a checkpoint's name (``ckpt-00004500.pt`` -> 4500), without loading it."""
    return int(Path(path).stem.removeprefix("ckpt-"))


def latest_good_checkpoint(folder: Path, map_location: str | torch.device = "cpu") -> tuple[Path, dict] | None:
    """The newest checkpoint that passes its checksum and loads; warns about bad ones."""
    manifest = _read_manifest(folder)
    for path in reversed(list_checkpoints(folder)):
        try:
            return path, load_checkpoint(path, map_location, manifest.get(path.name))
        except CheckpointError as error:
            log.warning("skipping %s; falling back to an older checkpoint", error)
    return None
