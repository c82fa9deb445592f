"""``transmem train``'s entry point, :func:`train`: a run's lifecycle, in order.

1. Refuse a bad config or folder, having written nothing: the device, the global batch, the
   run-folder conflict (:mod:`~transmem.run.conflicts`), the data, the sources.
2. Take the folder: its lock, and the resume point (:mod:`~transmem.run.resume`).
3. Rank the sources if the transfer method asks (``transfer.init_from = "best"``, fusion's
   order): only now, since a refused command must not rank (the probe runs go to the
   shared ranking cache, :mod:`~transmem.run.ranking`).
4. Train: :func:`transmem.training.loop.train_loop`.
5. Save: checkpoints and logs as it trains, then the model file (:mod:`~transmem.run.records`).

Steps 1, 2, 4 and 5 are :mod:`~transmem.run.folder_run`'s, which a ranking's probe runs use
alone: a probe is a finetune of one source and never ranks.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from transmem.config import ConfigError, RunConfig
from transmem.run.folder_run import TrainResult, open_run, train_open_run
from transmem.run.ranking import rank_sources
from transmem.storage.run_folder import RANK_DIR
from transmem.transfer.methods import TransferMethod


def train(
    config: RunConfig,
    run_dir: str | Path,
    *,
    force: bool = False,
    progress: bool = True,
    stop_at: int | None = None,
    check_test_split: bool = True,
    announce: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train the run described by ``config`` in ``run_dir``, resuming if it holds one.

    ``stop_at`` pauses the run after that iteration (a checkpoint is written); calling
    again resumes it. Returns a :class:`~transmem.run.folder_run.TrainResult` (``val`` is
    empty unless finished). While it trains, ``run_dir/train.lock`` is held (by rank 0): a
    second process training the same folder stops with :class:`~transmem.errors.LockedError`.
    ``check_test_split=False`` skips the refusal of data without a test split. A non-finite
    loss stops the run with :class:`~transmem.errors.TrainingDiverged`, keeping the last good
    checkpoint; called again with another ``train.lr``, it resumes from it (``announce`` is
    given the line that says so, :mod:`~transmem.run.divergence`).
    """
    with open_run(config, run_dir, force=force, progress=progress, check_test_split=check_test_split, announce=announce) as run:
        ranking = rank_init_sources(run.state.method, run.progress) if run.fresh else None
        return train_open_run(run, ranking, stop_at)


def rank_init_sources(method: TransferMethod, progress: bool = False) -> list[dict] | None:
    """``method``'s sources ranked for its
    :meth:`~transmem.transfer.methods.TransferMethod.ranking_target` (best first; cached in
    ``source_rank/`` of ``transfer.cache_dir`` or the run folder), or None when it names none:
    what :meth:`~transmem.transfer.methods.TransferMethod.initialize` chooses from. Refused under torchrun."""
    config = method.config
    target = method.ranking_target()
    if target is None:
        return None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(
            f"transfer.method = {config.transfer.method!r} ranks the sources, which it cannot do under torchrun: "
            "rank them first (transmem zoo rank) and name the chosen one in transfer.init_from "
            "(fusion: fuse = 0 with fusion_head = 'mean' needs no ranking)"
        )
    folder = Path(config.transfer.cache_dir or method.run_dir) / RANK_DIR  # cached source rankings
    return rank_sources(method.sources, target, folder, config.transfer.rank_probe, progress=progress)
