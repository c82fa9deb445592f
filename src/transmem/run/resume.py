"""Resuming a run: the checkpoints it writes, and where it starts again from them.

A checkpoint (model, optimiser, scheduler, iteration, RNG states, config, sources' digests
and, with ``train.weights = "best_val"``, the best validation so far) holds everything the
next training step depends on, so ``N`` steps equal ``N/2`` + resume + ``N/2``. Checkpoints
are written atomically every ``train.checkpoint_every`` steps and at the end, from rank 0
only; a checkpoint of another config, of since-changed sources or that does not fit the
model is refused (``--force``: the old run is set aside and the run starts over), but for a
run whose last attempt diverged: it resumes with another ``train.lr`` or ``train.grad_clip``,
set in the restored optimiser and schedule (:mod:`transmem.run.divergence`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from transmem.config import RunConfig, config_from_dict, tomllib
from transmem.errors import RunConflictError
from transmem.models import RecurrentPredictor, layout_to_json
from transmem.run.conflicts import config_differences, describe_differences
from transmem.run.divergence import may_retune, only_retunable, set_learning_rate
from transmem.storage.checkpoints import latest_good_checkpoint, save_checkpoint
from transmem.storage.run_folder import CHECKPOINT_DIR, CONFIG_FILE, MODEL_FILE, RunFolder
from transmem.training.setup import TrainingState

log = logging.getLogger(__name__)


def save_training_checkpoint(state: TrainingState, iteration: int) -> None:
    """Checkpoint ``state`` after ``iteration`` steps (keeping the last ``train.keep_checkpoints``)."""
    model, config = state.model, state.config
    saved = {
        "model": model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict() if state.scheduler is not None else {},
        "iteration": iteration,
        "rng": {"torch": torch.get_rng_state(), "sampling": state.generator.get_state()},
        "config": config.to_toml(),
        "transfer_layout": layout_to_json(model.transfer_layout),
        "source_digests": state.method.source_digests(),
        "best": state.best,  # train.weights = "best_val": the best validation so far and its weights
    }
    save_checkpoint(RunFolder(state.run_dir).checkpoints, iteration, saved, keep=config.train.keep_checkpoints)


def resume_stamp(run_dir: Path) -> list[tuple[str, int]]:
    """What a resume reads (checkpoints, manifest, final model): names and modification times."""
    paths = [*sorted((run_dir / CHECKPOINT_DIR).glob("*")), run_dir / MODEL_FILE]
    stamp = []
    for path in paths:
        try:
            stamp.append((path.name, path.stat().st_mtime_ns))
        except FileNotFoundError:  # absent, or rotated away just now
            pass
    return stamp


def resume_point(state: TrainingState, force: bool, replacing: bool) -> tuple[int, tuple[Path, dict] | None, bool]:
    """``(start, checkpoint to resume from or None, replacing)``: a finished run starts at its
    end; a checkpoint of another config or source is refused (``--force``: replaced)."""
    config, folder = state.config, RunFolder(state.run_dir)
    found = None if replacing else latest_good_checkpoint(folder.checkpoints, map_location=state.device)
    if not replacing and folder.has_model() and (found is None or int(found[1]["iteration"]) >= config.train.iterations):
        # Finished (even if its checkpoints were deleted since): nothing to resume or retrain,
        # whatever its sources have become.
        return config.train.iterations, None, replacing
    if found is not None:
        try:
            check_resumable(state, *found)
        except RunConflictError:
            if not force:
                raise
            return 0, None, True  # --force: set the old run's files aside and start over
    return 0, found, replacing


def restore(state: TrainingState, path: Path, saved: dict) -> int:
    """Load a checkpoint's model, optimiser, scheduler and RNG states; returns its iteration."""
    state.model.load_state_dict(saved["model"])
    state.optimizer.load_state_dict(saved["optimizer"])
    if state.scheduler is not None and saved.get("scheduler"):
        state.scheduler.load_state_dict(saved["scheduler"])
    state.generator.set_state(saved["rng"]["sampling"].cpu())
    torch.set_rng_state(saved["rng"]["torch"].cpu())
    state.best = saved.get("best")
    trained = _checkpoint_config(saved)  # another train.lr: a diverged run's resume (check_resumable allowed it)
    if trained is not None and trained.train.lr != state.config.train.lr:
        set_learning_rate(state.optimizer, state.scheduler, trained.train.lr, state.config.train.lr)
    start = int(saved["iteration"])
    if state.ctx.is_main:
        log.info("resuming %s from %s (iteration %d)", state.run_dir, path.name, start)
    return start


def check_resumable(state: TrainingState, path: Path, saved: dict) -> None:
    """Refuse to resume from checkpoint ``saved`` (read from ``path``) if it was trained with
    another config (``config.toml`` edited by hand; after a divergence another ``train.lr`` or
    ``train.grad_clip`` is allowed), a source changed or its weights do not fit the model
    (checked without loading anything, so ``--force`` can still start from fresh weights)."""
    run_dir, config = state.run_dir, state.config
    force = "pass --force to start over (the old files are kept, renamed)"
    trained = _checkpoint_config(saved)
    edited = config_differences(trained, config) if trained is not None else []
    if edited and not (only_retunable(edited) and may_retune(run_dir, config)):
        raise RunConflictError(
            f"{run_dir}: {path.name} was trained with another config than this one, was {CONFIG_FILE} edited? "
            f"({describe_differences(trained, config, edited, 'in the checkpoint', 'in the config given')}); "
            f"restore {CONFIG_FILE}, choose another --out, or {force}"
        )
    advice = f"restore them, or {force}"
    recorded, current = saved.get("source_digests"), state.method.source_digests()
    if recorded is not None and recorded != current:  # checkpoints from before this check have none
        changed = sorted(k for k in recorded.keys() | current.keys() if recorded.get(k) != current.get(k))
        raise RunConflictError(
            f"{run_dir}: source weights changed since {path.name} was written ({', '.join(changed)}); {advice}"
        )
    _check_fits(state.model, run_dir, path, saved, advice)


def _check_fits(model: RecurrentPredictor, run_dir: Path, path: Path, saved: dict, advice: str) -> None:
    """Refuse a checkpoint whose weights' names or shapes differ from ``model``'s."""
    expected = {name: tuple(value.shape) for name, value in model.state_dict().items()}
    stored = {name: tuple(value.shape) for name, value in saved["model"].items()}
    if stored != expected:
        differing = sorted(k for k in expected.keys() | stored.keys() if expected.get(k) != stored.get(k))
        raise RunConflictError(
            f"{run_dir}: {path.name} does not fit this run's model (did a source's architecture change?): "
            f"{', '.join(differing[:3])}{' ...' if len(differing) > 3 else ''} differ; {advice}"
        )


def _checkpoint_config(saved: dict) -> RunConfig | None:
    """The config a checkpoint was trained with, None if it holds no readable one."""
    try:
        return config_from_dict(tomllib.loads(saved["config"]), stored=True)
    except (KeyError, TypeError, ValueError):  # ConfigError and TOMLDecodeError are ValueErrors
        return None
