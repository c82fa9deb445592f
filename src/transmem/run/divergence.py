"""A run that diverged, and its resume with another learning rate.

When training stops with :class:`~transmem.errors.TrainingDiverged`, rank 0 appends a
``diverged`` event (the iteration, ``train.lr``, ``train.grad_clip``, the kept checkpoint's
iteration) to the run folder's ``diverged.json``, written atomically. While the folder's last
event is a divergence, the same command may be rerun with another ``train.lr`` or
``train.grad_clip`` (:data:`RETUNABLE`) and nothing else changed: it resumes from the last
good checkpoint with the new values set in the optimiser (and the schedule), saves the new
``config.toml`` and appends a ``resumed`` event. Any other change, and an ``lr`` change to a
run whose last attempt did not diverge, is refused as before (:mod:`~transmem.run.conflicts`).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch

from transmem.config import RunConfig
from transmem.errors import TrainingDiverged
from transmem.storage.files import atomic_write_text
from transmem.storage.run_folder import RunFolder

log = logging.getLogger(__name__)

#: The keys a rerun may change after a divergence.
RETUNABLE = ("train.lr", "train.grad_clip")


def history(run_dir: str | Path) -> list[dict]:
    """The events of ``diverged.json``, oldest first ([] if none or unreadable)."""
    try:
        data = json.loads(RunFolder(run_dir).diverged.read_text())
    except (OSError, ValueError):
        return []
    events = data.get("events") if isinstance(data, dict) else None
    return [event for event in events if isinstance(event, dict)] if isinstance(events, list) else []


def only_retunable(keys: list[str]) -> bool:
    """``keys`` (differing config keys) are some of :data:`RETUNABLE`, and at least one."""
    return bool(keys) and set(keys) <= set(RETUNABLE)


def last_attempt_diverged(run_dir: str | Path) -> bool:
    """The folder's last training attempt stopped with a divergence (and none finished since)."""
    events = history(run_dir)
    return bool(events) and events[-1].get("event") == "diverged" and not RunFolder(run_dir).has_model()


def may_retune(run_dir: str | Path, config: RunConfig) -> bool:
    """Whether ``config`` may differ in :data:`RETUNABLE` keys from the folder's saved config and
    checkpoints: its last attempt diverged, or its last event is the resume with ``config``'s
    very values (a resumed run killed before its next checkpoint, which still holds the old ones)."""
    events = history(run_dir)
    if not events or RunFolder(run_dir).has_model():
        return False
    last = events[-1]
    if last.get("event") == "diverged":
        return True
    return last.get("event") == "resumed" and (last.get("lr"), last.get("grad_clip")) == (config.train.lr, config.train.grad_clip)


def _append(run_dir: str | Path, event: dict) -> None:
    events = [*history(run_dir), {**event, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}]
    atomic_write_text(RunFolder(run_dir).diverged, json.dumps({"events": events}, indent=1) + "\n")


def record_divergence(run_dir: str | Path, config: RunConfig, error: TrainingDiverged) -> None:
    """Append the divergence ``error`` of the run of ``config`` to ``diverged.json`` (rank 0).
    A failed write is logged, not raised: the divergence is what the command reports."""
    event = {
        "event": "diverged",
        "iteration": error.iteration,
        "lr": config.train.lr,
        "grad_clip": config.train.grad_clip,
        "kept_checkpoint": error.kept,
    }
    try:
        _append(run_dir, event)
    except OSError as failure:
        log.warning("%s: could not record the divergence (%s); a rerun with another train.lr will be refused", run_dir, failure)


def record_resume(run_dir: str | Path, config: RunConfig, start: int) -> str:
    """Append the resume of a diverged run at iteration ``start`` with ``config``'s ``train.lr``
    and ``train.grad_clip`` to ``diverged.json`` (rank 0, after the new config is saved);
    returns the line that says so."""
    before = next((e for e in reversed(history(run_dir)) if e.get("event") == "diverged"), {})
    train = config.train
    _append(run_dir, {"event": "resumed", "iteration": start, "lr": train.lr, "grad_clip": train.grad_clip})
    was = f" (was {before['lr']:g})" if isinstance(before.get("lr"), (int, float)) and before["lr"] != train.lr else ""
    clip = f", train.grad_clip {train.grad_clip:g}" if before.get("grad_clip", train.grad_clip) != train.grad_clip else ""
    if start == 0:
        return f"{run_dir}: the diverged run kept no checkpoint; starting it again from iteration 0 with train.lr {train.lr:g}{was}{clip}"
    return f"{run_dir}: resuming the diverged run from iteration {start} with train.lr {train.lr:g}{was}{clip}"


def set_learning_rate(optimizer: torch.optim.Optimizer, scheduler, old: float, new: float) -> None:
    """Change a restored optimiser's ``train.lr`` from ``old`` to ``new``: each param group's
    rate keeps its schedule's factor so far (1 for a constant rate), and a schedule's
    ``base_lrs`` become ``new`` (torch's cosine and step schedules scale with them)."""
    for group in optimizer.param_groups:
        group["lr"] = new * (group["lr"] / old)
        if "initial_lr" in group:
            group["initial_lr"] = new
    if scheduler is not None:
        scheduler.base_lrs = [new for _ in scheduler.base_lrs]
        scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
