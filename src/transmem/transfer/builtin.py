"""The builtin source zoo: pretrained sources that ship inside the package.

A source named ``builtin:NAME`` (in ``transfer.sources``, ``transmem zoo rank`` or
``transmem benchmark --zoo builtin``) is the file ``builtin_zoo/NAME.safetensors`` of the
installed package, trained by transmem's own benchmark configs and commands (``transmem zoo
build``). ``builtin_zoo/index.json`` describes each one: the suite and source it was trained
for, its configuration, its test scores against copy-last-frame, the MSE on its first
:data:`CHECK_SEQUENCES` test sequences (so a test can check that the file reproduces it), the
transmem version and command that made it, and the file's SHA-256, which is checked before
the file is read: a damaged builtin source is a one-line error, never loaded.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

from transmem.errors import BuiltinZooError
from transmem.storage.files import sha256_file

PREFIX = "builtin:"
INDEX_FILE = "index.json"
CHECK_SEQUENCES = 8  # test sequences whose MSE the index records, to check a file reproduces it


def builtin_folder() -> Path:
    return Path(str(files("transmem") / "builtin_zoo"))


def is_builtin(spec: str | Path) -> bool:
    return str(spec).startswith(PREFIX)


def builtin_index() -> dict[str, dict]:
    """The shipped sources' entries, by name (empty if none ships)."""
    path = builtin_folder() / INDEX_FILE
    try:
        index = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BuiltinZooError(f"{path}: the builtin zoo's index is damaged ({error}); reinstall transmem") from None
    return index.get("sources", {}) if isinstance(index, dict) else {}


def builtin_file(spec: str | Path) -> Path:
    """The verified file of ``builtin:NAME``; BuiltinZooError for an unknown or damaged source."""
    name = str(spec)[len(PREFIX) :]
    entry = builtin_index().get(name)
    if entry is None:
        shipped = ", ".join(sorted(builtin_index())) or "none"
        raise BuiltinZooError(f"{spec}: no builtin source named {name!r} (shipped: {shipped}; see transmem zoo list builtin)")
    path = builtin_folder() / entry["file"]
    if not path.is_file():
        raise BuiltinZooError(f"{spec}: {path} is missing; reinstall transmem or rebuild it (transmem zoo build)")
    if _sha256(path, path.stat().st_mtime_ns, path.stat().st_size) != entry["sha256"]:
        raise BuiltinZooError(
            f"{spec}: {path} is damaged (SHA-256 mismatch); reinstall transmem or rebuild it (transmem zoo build)"
        )
    return path


@lru_cache(maxsize=32)
def _sha256(path: Path, mtime_ns: int, size: int) -> str:  # keyed by mtime and size: a replaced file is hashed again
    return sha256_file(path)


def describe_builtin() -> list[dict]:
    """One row per shipped source for ``transmem zoo list builtin`` (as :func:`describe_zoo`)."""
    rows = []
    for name, entry in sorted(builtin_index().items()):
        test, baseline = entry.get("test", {}), entry.get("copy_last_frame", {})
        rows.append(
            {
                "name": f"{PREFIX}{name}",
                "backbone": entry["backbone"],
                "hidden": entry["hidden"],
                "dataset": entry["dataset"],
                "options": entry["options"],
                "frame_size": entry["frame_size"],
                "patch": entry["patch"],
                "test_mse": test.get("mse", {}).get("mean"),
                "test_ssim": test.get("ssim", {}).get("mean"),
                "copy_mse": baseline.get("mse", {}).get("mean"),
                "copy_ssim": baseline.get("ssim", {}).get("mean"),
                "iterations": entry["iterations"],
                "bytes": entry["bytes"],
            }
        )
    return rows
