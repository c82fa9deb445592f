"""One run in its folder: opened (refused, or the folder taken and the resume point found),
then trained and saved. :func:`transmem.run.lifecycle.train` ranks the sources in between.

Everything that can refuse the command (a device, the run-folder conflict, the data, the
sources, the source architecture) is checked before anything is written: a refused command
changes nothing. While the run trains, its folder's lock is held (by rank 0): a second
process training the same folder stops with :class:`~transmem.errors.LockedError`. Nothing
in the run folder is ever deleted except rotated checkpoints. A run that diverges records it
(``diverged.json``); reopened with another ``train.lr``, it resumes and records that too
(:mod:`transmem.run.divergence`).
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from transmem.config import RunConfig
from transmem.errors import LockedError, TrainingDiverged
from transmem.run.conflicts import check_run_dir, prepare_run_dir
from transmem.run.divergence import last_attempt_diverged, record_divergence, record_resume
from transmem.run.records import RunRecorder, tensorboard_writer_class
from transmem.run.resume import restore, resume_point, resume_stamp
from transmem.storage.files import atomic_write_text, remove_stale_temporaries
from transmem.storage.locks import FileLock
from transmem.storage.run_folder import RUN_LOCK, RunFolder
from transmem.training.loop import keep_final_weights, train_loop
from transmem.training.setup import (
    TrainingState,
    build_training,
    forward_model,
    prepare_method,
    seed_torch,
    training_data,
    training_devices,
)
from transmem.training.thread_share import ThreadShare
from transmem.transfer.methods import METHODS

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_dir: Path
    iterations: int  # the iteration reached
    resumed_from: int  # the iteration it started from (train.iterations: finished before)
    val: dict  # final validation metrics (means); empty unless it finished now
    seconds: float


@dataclass
class OpenRun:
    """A run whose folder is taken (by rank 0) and whose state is at its start iteration."""

    state: TrainingState
    start: int  # the iteration it resumes from (train.iterations: finished earlier)
    fresh: bool  # starting from iteration 0, not from a checkpoint: its weights are to be set
    threads: ThreadShare
    progress: bool
    started: float  # time.perf_counter() when it was opened (a duration clock)


@contextmanager
def open_run(
    config: RunConfig,
    run_dir: str | Path,
    *,
    force: bool,
    progress: bool,
    check_test_split: bool,
    announce: Callable[[str], None] | None = None,
) -> Iterator[OpenRun]:
    """Open the run of ``config`` in ``run_dir`` (:func:`_open`), holding the folder's lock
    and this process's share of the machine's threads until the block ends.
    ``check_test_split=False`` skips the refusal of data without a test split (a source
    ranking's probe, which must never build the test split). ``announce`` (rank 0) is given
    the line that says a diverged run resumes, and with which ``train.lr`` (else it is logged)."""
    lock = FileLock(Path(run_dir) / RUN_LOCK)
    try:
        with ThreadShare() as threads:  # the cores, split with other transmem trainings on this machine
            yield _open(config, Path(run_dir), force, progress, lock, check_test_split, threads, announce)
    finally:
        lock.release()


def _open(
    config: RunConfig,
    run_dir: Path,
    force: bool,
    progress: bool,
    lock: FileLock,
    check_test_split: bool,
    threads: ThreadShare,
    announce: Callable[[str], None] | None = None,
) -> OpenRun:
    """Refuse a bad config or folder, build the run's state, find where it resumes, then
    take the folder (rank 0): the first write."""
    started = time.perf_counter()
    device, ctx = training_devices(config)
    replacing = check_run_dir(config, run_dir, force)
    if config.train.tensorboard:
        tensorboard_writer_class()
    seed_torch(config)
    data = training_data(config, check_test_split)
    method = METHODS[config.transfer.method](config, run_dir, device)  # loads and checks the sources
    state = build_training(config, run_dir, device, ctx, data, method)
    seen = resume_stamp(run_dir)
    start, found, replacing = resume_point(state, force, replacing)
    if found is not None:
        start = restore(state, *found)
    if ctx.is_main:
        diverged = not replacing and last_attempt_diverged(run_dir)  # read before the folder is taken
        _take_folder(state, lock, seen, force, replacing)
        if diverged:  # after the new config.toml is saved: a kill in between leaves the resume allowed
            line = record_resume(run_dir, config, start)
            (announce or log.info)(line)
    return OpenRun(state, start, found is None and start == 0, threads, progress, started)


def _take_folder(state: TrainingState, lock: FileLock, seen: list, force: bool, replacing: bool) -> None:
    """The first write. A second process on this folder stops here, having written nothing.
    The lock comes only now (a refused command must not touch the folder), so check that no
    other process wrote the checkpoints or model between their reading and now."""
    folder = RunFolder(state.run_dir)
    folder.path.mkdir(parents=True, exist_ok=True)
    lock.acquire()
    if resume_stamp(folder.path) != seen:
        raise LockedError(f"{folder.path}: another process trained this run while this one started; rerun to resume it")
    prepare_run_dir(state.config, folder.path, force, set_aside=replacing)
    remove_stale_temporaries(folder.checkpoints)
    remove_stale_temporaries(folder.path)


def train_open_run(run: OpenRun, ranking: list[dict] | None, stop_at: int | None = None) -> TrainResult:
    """Set a fresh run's starting weights (``ranking``: its sources ranked, when its method
    asked, see :meth:`~transmem.transfer.methods.TransferMethod.ranking_target`), train it
    and save it. ``stop_at`` pauses the run after that iteration (a checkpoint is written).
    Returns a :class:`TrainResult` (``val`` is empty unless it finished now)."""
    state, ctx = run.state, run.state.ctx
    folder, total = RunFolder(state.run_dir), state.config.train.iterations
    if run.fresh:
        record = state.method.initialize(state.model, ranking)
        if record is not None and ctx.is_main:
            atomic_write_text(folder.init_source, json.dumps(record, indent=1))
    ctx.barrier()

    if run.start >= total and folder.has_model():
        return TrainResult(folder.path, total, run.start, {}, time.perf_counter() - run.started)
    prepare_method(state, run.progress)
    forward = forward_model(state)
    recorder = RunRecorder(state, run.start) if ctx.is_main else None
    try:
        done = train_loop(state, forward, run.start, stop_at, run.progress, run.threads, recorder)
    except TrainingDiverged as error:
        if ctx.is_main:  # what lets a rerun with another train.lr resume (transmem.run.divergence)
            record_divergence(folder.path, state.config, error)
        raise
    if done < total:  # paused by stop_at
        return TrainResult(folder.path, done, run.start, {}, time.perf_counter() - run.started)
    return TrainResult(folder.path, done, run.start, _finish(state, recorder), time.perf_counter() - run.started)


def _finish(state: TrainingState, recorder: RunRecorder | None) -> dict:
    """The final validation and the model file (rank 0); returns the validation means of the
    weights kept (:func:`~transmem.training.loop.keep_final_weights`)."""
    val = {}
    if state.ctx.is_main:
        val, metadata = keep_final_weights(state, recorder)
        recorder.save_model(metadata)
    state.ctx.barrier()
    return val
