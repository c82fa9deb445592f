"""What a benchmark reads from a run folder's logs: training time, threads, the source it
started from, the iteration whose weights it kept and their validation MSE, the validation
curve and the time to reach a quality."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from transmem.storage.model_file import stored_model_extra
from transmem.storage.run_folder import INIT_FILE, MODEL_FILE, TRAIN_LOG, VAL_LOG


def _log_rows(path: Path) -> list[dict] | None:
    """The rows of a run's CSV log (train.csv, val.csv), None if it has none."""
    if not path.exists():
        return None
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def train_seconds(run_dir: Path, until: int | None = None) -> float:
    """Wall time of training (up to iteration ``until``), summed from the logged seconds per iteration."""
    rows = _log_rows(run_dir / TRAIN_LOG)
    if rows is None:
        return float("nan")
    total, previous = 0.0, 0
    for row in rows:
        iteration = int(row["iteration"])
        if until is not None and iteration > until:
            break
        total += float(row["seconds_per_iteration"]) * (iteration - previous)
        previous = iteration
    return total


def train_threads(run_dir: Path) -> str:
    """The torch thread counts a run trained with, from its train.csv: ``"1"``, ``"1, 2"``
    (resumed with another count), ``"unknown, 2"`` (partly trained by a version that did not
    log it), or ``""`` (never logged)."""
    logged = [row.get("threads") or "" for row in _log_rows(run_dir / TRAIN_LOG) or []]
    counts = sorted({int(value) for value in logged if value.isdigit()})
    if not counts:
        return ""
    return ", ".join([*(["unknown"] if len(counts) < len(set(logged)) else []), *map(str, counts)])


def init_source(run_dir: Path) -> str:
    """The name of the source a ``transfer.init_from`` run started from (its ``init_source.json``;
    for a fusion, its fused sources joined by ``+``), else ``""`` (also for a plain finetune,
    whose source is its only one)."""
    try:
        record = json.loads((run_dir / INIT_FILE).read_text())
        return str(record["name"]) if record.get("init_from") or record.get("fusion") else ""
    except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
        return ""


def kept_iteration(run_dir: Path) -> str:
    """The iteration whose weights a ``train.weights = "best_val"`` run kept (its best
    validation, from ``model.safetensors``), as a string; ``""`` for a run that keeps its last."""
    extra = stored_model_extra(Path(run_dir) / MODEL_FILE)
    return str(extra.get("selected_iteration", "")) if extra.get("weights") == "best_val" else ""


def kept_validation_mse(run_dir: Path) -> float:
    """The validation MSE of the weights a finished run kept: its best validation for
    ``train.weights = "best_val"`` (from ``model.safetensors``), else the validation at its
    last iteration (val.csv); NaN where it has none (no validation split)."""
    extra = stored_model_extra(Path(run_dir) / MODEL_FILE)
    if extra.get("weights") == "best_val":
        return float(extra["selected_val_mse"])
    curve = validation_curve(run_dir)
    last = extra.get("iterations")
    return curve[-1][1] if curve and curve[-1][0] == last else float("nan")


def validation_curve(run_dir: Path) -> list[tuple[int, float]]:
    """``(iteration, validation mse)`` rows of a run's val.csv, in order."""
    return [(int(r["iteration"]), float(r["mse"])) for r in _log_rows(run_dir / VAL_LOG) or []]


def time_to_quality(run_dir: Path, target_mse: float) -> tuple[float, float]:
    """Iterations and training seconds until the validation MSE first reaches ``target_mse``.

    ``(nan, nan)`` if it never does (or the run logged no validation curve).
    """
    for iteration, mse in validation_curve(run_dir):
        if mse <= target_mse:
            return float(iteration), round(train_seconds(run_dir, iteration), 1)
    return float("nan"), float("nan")
