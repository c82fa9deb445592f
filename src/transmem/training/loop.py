"""``transmem train``'s entry point: :func:`train`, the loop of :mod:`.engine` given the
source ranking.

A run that starts from ``transfer.init_from = "best"`` first ranks its sources, and ranking
trains short probe runs through the loop: :mod:`transmem.transfer.ranking` sits above the
engine, and this module above both, so no module imports one that imports it back.
"""

from __future__ import annotations

from pathlib import Path

from transmem.errors import TrainingDiverged  # noqa: F401 - raised by train (exit status 3)
from transmem.schema import RunConfig
from transmem.training.engine import TrainResult, train_run
from transmem.transfer.ranking import rank_sources


def train(
    config: RunConfig,
    run_dir: str | Path,
    *,
    force: bool = False,
    progress: bool = True,
    stop_at: int | None = None,
    check_test_split: bool = True,
) -> TrainResult:
    """Train the run described by ``config`` in ``run_dir``, resuming if it holds one.

    ``stop_at`` pauses the run after that iteration (a checkpoint is written); calling
    again resumes it. Returns a :class:`~transmem.training.engine.TrainResult` (``val`` is
    empty unless finished). While it trains, ``run_dir/train.lock`` is held (by rank 0): a
    second process training the same folder stops with :class:`~transmem.errors.LockedError`.
    ``check_test_split=False`` skips the refusal of data without a test split. See
    :func:`~transmem.training.engine.train_run`.
    """
    return train_run(
        config, run_dir, rank_sources, force=force, progress=progress, stop_at=stop_at, check_test_split=check_test_split
    )
