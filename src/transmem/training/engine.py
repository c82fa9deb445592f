"""The training loop behind ``transmem train``.

One function, :func:`train_run`, trains (or resumes) a run in a run folder (the public
:func:`transmem.training.loop.train` is it, given the source ranking):

- each step is :func:`transmem.training.step.training_step` (the loss: prediction MSE over
  all T-1 predicted frames, plus the transfer method's weighted terms, plus PredRNN-V2's
  decoupling term), or that step captured in a CUDA graph (``train.cuda_graph``);
- batches, scheduled-sampling masks and time reversal are pure functions of the iteration
  and a saved generator state, so ``N`` steps equal ``N/2`` + resume + ``N/2`` exactly
  (with ``train.cuda_graph`` to floating-point rounding: a resumed run's first steps are
  eager again, and captured kernels may round otherwise);
- checkpoints (model, optimizer, scheduler, iteration, RNG states, config) are written
  atomically every ``train.checkpoint_every`` steps and at the end, from rank 0 only;
- a non-finite loss stops the run with :class:`TrainingDiverged`, keeping the last good
  checkpoint; nothing in the run folder is ever deleted except rotated checkpoints.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from transmem.config import ConfigError, RunConfig, config_from_dict, tomllib
from transmem.data import DataError, build_dataset
from transmem.errors import TrainingDiverged
from transmem.models import RecurrentPredictor, layout_to_json
from transmem.progress import progress_bar
from transmem.storage.checkpoints import latest_good_checkpoint, save_checkpoint
from transmem.storage.files import atomic_write_text, remove_stale_temporaries
from transmem.storage.locks import FileLock, LockedError
from transmem.storage.model_file import save_model
from transmem.storage.run_folder import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    INIT_FILE,
    MODEL_FILE,
    RUN_LOCK,
    TENSORBOARD_DIR,
    TRAIN_LOG,
    VAL_LOG,
)
from transmem.training.conflicts import RunConflictError, check_run_dir, config_differences, describe_differences, prepare_run_dir
from transmem.training.cuda_graph import check_graphable, make_step
from transmem.training.distributed import init_distributed
from transmem.training.sampling import batch_indices, sampling_probabilities, teacher_mask
from transmem.training.thread_share import ThreadShare
from transmem.transfer.memory_bank import TrainingBatch
from transmem.transfer.methods import METHODS, RankSources

log = logging.getLogger(__name__)

LOG_FIELDS = [
    "iteration",
    "loss",
    "prediction",
    "distill",
    "decouple",
    "input_truth_prob",
    "future_truth_prob",
    "lr",
    "seconds_per_iteration",
    "threads",  # torch threads (of rank 0): on CPU another count trains to other weights
]


@dataclass
class TrainResult:
    run_dir: Path
    iterations: int
    resumed_from: int
    val: dict  # final validation metrics (means)
    seconds: float


def resolve_device(name: str, option: str = "train.device") -> torch.device:
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N`` as a device; a
    ConfigError naming ``option`` for a name torch does not know, CUDA where there is none,
    or a GPU index this machine does not have."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"{option}: expected auto, cpu, cuda or cuda:N, got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f'{option} = {name!r} but CUDA is not available here (use "auto" or "cpu")')
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"{option} = {name!r} but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def make_scheduler(optimizer: torch.optim.Optimizer, config: RunConfig):
    train = config.train
    if train.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=train.iterations)
    if train.lr_schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=train.lr_step or max(1, train.iterations // 3), gamma=0.5)
    return None


def _load_batch(dataset, indices: list[int], device: torch.device) -> Tensor:
    return torch.stack([dataset[i] for i in indices]).to(device, non_blocking=True)


def _read_rows(path: Path, below: int) -> list[dict]:
    """Complete rows of a CSV log with iteration < ``below``; a line torn by a kill is dropped."""
    if not path.exists():
        return []
    rows = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            if None in row or None in row.values():  # too few or too many fields: torn line
                continue
            try:
                if int(row["iteration"]) < below:
                    rows.append(row)
            except (KeyError, ValueError):
                continue
    return rows


def _rewrite_csv(path: Path, fields: list[str], rows: list[dict]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, text.getvalue())


class _CsvLog:
    """Append-only CSV; on resume, rows past the resumed iteration (lost work) are dropped."""

    def __init__(self, path: Path, fields: list[str], resume_iteration: int) -> None:
        self.path, self.fields = path, fields
        _rewrite_csv(path, fields, _read_rows(path, resume_iteration + 1))

    def write(self, row: dict) -> None:
        with open(self.path, "a", newline="") as handle:
            csv.DictWriter(handle, fieldnames=self.fields, extrasaction="ignore").writerow(row)


def train_run(
    config: RunConfig,
    run_dir: str | Path,
    rank_sources: RankSources,
    *,
    force: bool = False,
    progress: bool = True,
    stop_at: int | None = None,
    check_test_split: bool = True,
) -> TrainResult:
    """Train the run described by ``config`` in ``run_dir``, resuming if it holds one.

    ``stop_at`` pauses the run after that iteration (a checkpoint is written); calling
    again resumes it. Returns a :class:`TrainResult` (``val`` is empty unless finished).
    While it trains, ``run_dir/train.lock`` is held (by rank 0): a second process training
    the same folder stops with :class:`~transmem.errors.LockedError`.
    ``check_test_split=False`` skips the refusal of data without a test split (a source
    ranking's probe, which must never build the test split). ``rank_sources`` ranks the
    sources when ``transfer.init_from = "best"`` leaves several to start from
    (:func:`transmem.transfer.ranking.rank_sources`, which sits above this module: its probes
    are runs of this loop).
    """
    lock = FileLock(Path(run_dir) / RUN_LOCK)
    try:
        with ThreadShare() as threads:  # the cores, split with other transmem trainings on this machine
            return _train(config, Path(run_dir), force, progress, stop_at, lock, check_test_split, rank_sources, threads)
    finally:
        lock.release()


@dataclass
class _Run:
    """What the steps of one training run share."""

    config: RunConfig
    run_dir: Path
    device: torch.device
    ctx: object  # transmem.training.distributed.DistributedContext
    train_set: object
    val_set: object | None
    method: object  # a transfer method of METHODS
    model: RecurrentPredictor
    optimizer: torch.optim.Optimizer
    scheduler: object | None
    generator: torch.Generator
    # train.weights = "best_val": the validation with the lowest MSE so far (with
    # train.val_start, the starting weights are one of them),
    # {"iteration", "means", "model": state dict}; saved in every checkpoint
    best: dict | None = None

    @property
    def checkpoints(self) -> Path:
        return self.run_dir / CHECKPOINT_DIR

    @property
    def finished(self) -> bool:
        return (self.run_dir / MODEL_FILE).exists()


def _train(
    config: RunConfig,
    run_dir: Path,
    force: bool,
    progress: bool,
    stop_at: int | None,
    lock: FileLock,
    check_test_split: bool,
    rank_sources: RankSources,
    threads: ThreadShare,
) -> TrainResult:
    started = time.time()
    device, ctx = _devices(config)
    # Everything that can refuse the command (run-folder conflict, data, sources, source
    # architecture) is checked before anything is written: a refused command changes nothing.
    replacing = check_run_dir(config, run_dir, force)
    if config.train.tensorboard:
        _tensorboard_writer_class()
    run = _build(config, run_dir, device, ctx, check_test_split)
    seen = _resume_stamp(run_dir)
    start, found, replacing = _resume_point(run, force, replacing)
    if found is not None:
        start = _restore(run, *found)
    fresh = found is None and start == 0
    if ctx.is_main:
        _take_folder(run, lock, seen, force, replacing)
    if fresh:
        # Once the folder is this run's: starting from a source may first rank the sources
        # (probe runs in the shared cache), which a refused command must not do.
        record = run.method.initialize(run.model, rank_sources, progress=progress)
        if record is not None and ctx.is_main:
            atomic_write_text(run_dir / INIT_FILE, json.dumps(record, indent=1))
    ctx.barrier()

    if start >= config.train.iterations and run.finished:
        return TrainResult(run_dir, config.train.iterations, start, {}, time.time() - started)
    _prepare(run, progress)
    done = _loop(run, _forward_model(run), start, stop_at, progress, threads)
    if done < config.train.iterations:  # paused by stop_at
        return TrainResult(run_dir, done, start, {}, time.time() - started)
    return TrainResult(run_dir, done, start, _finish(run), time.time() - started)


def _devices(config: RunConfig):
    """The device of this process and its distributed context (refuses an uneven global batch)."""
    device = resolve_device(config.train.device)
    ctx = init_distributed(device)
    if config.data.batch_size % ctx.world_size:
        raise ConfigError(
            f"data.batch_size: the global batch {config.data.batch_size} must be divisible by the "
            f"{ctx.world_size} processes (uneven shards would change the gradient average)"
        )
    if device.type == "cuda" and ctx.enabled:
        device = torch.device("cuda", ctx.local_rank)
    return device, ctx


def seed_torch(config: RunConfig) -> None:
    """Seed torch's global generator with ``train.seed`` and, with ``train.deterministic``,
    turn on torch's deterministic algorithms (warning, not failing, where an op has none)."""
    torch.manual_seed(config.train.seed)
    if config.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        # Deterministic results do not need every fresh tensor NaN-filled (a debugging aid, 1-3 % of a step).
        torch.utils.deterministic.fill_uninitialized_memory = False


def training_optimizer(model: torch.nn.Module, config: RunConfig) -> torch.optim.Adam:
    """Put ``model`` (already on its device) in its training layout and return its Adam
    optimiser: ``train.channels_last`` first, since Adam's moments take the weights' layout;
    ``capturable`` under ``train.cuda_graph``, whose replayed graph steps Adam too (its step
    counter must then live on the GPU)."""
    if config.train.channels_last:
        model.use_channels_last()
    return torch.optim.Adam(model.parameters(), lr=config.train.lr, capturable=config.train.cuda_graph)


def _build(config: RunConfig, run_dir: Path, device: torch.device, ctx, check_test_split: bool) -> _Run:
    """Seed, build the data, the transfer method (loading its sources), model and optimiser."""
    seed_torch(config)
    train_set = build_dataset(config.data, "train")
    val_set = build_dataset(config.data, "val") if config.data.val_size > 0 else None
    if check_test_split and len(build_dataset(config.data, "test")) == 0:  # found now, not after training, by evaluate
        raise DataError(f"data: the {config.data.name} test split is empty; a run needs test sequences (data.test_size)")

    method = METHODS[config.transfer.method](config, run_dir, device)
    method.check_data(train_set)
    check_graphable(config, device, method, ctx.enabled)
    model = method.build_model().to(device)
    optimizer = training_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config)
    generator = torch.Generator().manual_seed(config.train.seed + 1)
    return _Run(config, run_dir, device, ctx, train_set, val_set, method, model, optimizer, scheduler, generator)


def _resume_point(run: _Run, force: bool, replacing: bool) -> tuple[int, tuple[Path, dict] | None, bool]:
    """``(start, checkpoint to resume from or None, replacing)``: a finished run starts at its
    end; a checkpoint of another config or source is refused (``--force``: replaced)."""
    config = run.config
    found = None if replacing else latest_good_checkpoint(run.checkpoints, map_location=run.device)
    if not replacing and run.finished and (found is None or int(found[1]["iteration"]) >= config.train.iterations):
        # Finished (even if its checkpoints were deleted since): nothing to resume or retrain,
        # whatever its sources have become.
        return config.train.iterations, None, replacing
    if found is not None:
        try:
            _check_resumable(run.run_dir, found[0], found[1], config, run.model, run.method)
        except RunConflictError:
            if not force:
                raise
            return 0, None, True  # --force: set the old run's files aside and start over
    return 0, found, replacing


def _restore(run: _Run, path: Path, state: dict) -> int:
    """Load a checkpoint's model, optimiser, scheduler and RNG states; returns its iteration."""
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    if run.scheduler is not None and state.get("scheduler"):
        run.scheduler.load_state_dict(state["scheduler"])
    run.generator.set_state(state["rng"]["sampling"].cpu())
    torch.set_rng_state(state["rng"]["torch"].cpu())
    run.best = state.get("best")
    start = int(state["iteration"])
    if run.ctx.is_main:
        log.info("resuming %s from %s (iteration %d)", run.run_dir, path.name, start)
    return start


def _take_folder(run: _Run, lock: FileLock, seen: list, force: bool, replacing: bool) -> None:
    """The first write. A second process on this folder stops here, having written nothing.
    The lock comes only now (a refused command must not touch the folder), so check that no
    other process wrote the checkpoints or model between their reading and now."""
    run.run_dir.mkdir(parents=True, exist_ok=True)
    lock.acquire()
    if _resume_stamp(run.run_dir) != seen:
        raise LockedError(f"{run.run_dir}: another process trained this run while this one started; rerun to resume it")
    prepare_run_dir(run.config, run.run_dir, force, set_aside=replacing)
    remove_stale_temporaries(run.checkpoints)
    remove_stale_temporaries(run.run_dir)


def _prepare(run: _Run, progress: bool) -> None:
    """Rank 0 builds shared files (a cached memory bank) alone; the other ranks then find them valid."""
    if run.ctx.is_main:
        run.method.prepare(run.model, run.train_set, progress)
    run.ctx.barrier()
    if not run.ctx.is_main:
        run.method.prepare(run.model, run.train_set, False)


def _forward_model(run: _Run) -> torch.nn.Module:
    """The module the training forward runs: the model, wrapped for DDP and compiled if asked."""
    model, forward_model = run.model, run.model
    if run.ctx.enabled:
        # Parameters without a gradient in some steps: Knowledge Flow mixers once the teachers
        # have faded out; distillers and projections when the distillation loss is off.
        unused = len(model.flow) > 0 or (bool(model.memory_transfer_layers) and run.config.transfer.distill_weight == 0)
        forward_model = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=unused)
    if run.config.train.compile:
        # Only the training forward is compiled; checkpoints, validation and the saved model
        # use ``model`` itself, so their state-dict keys do not change.
        forward_model = torch.compile(forward_model)
    return forward_model


def _draw_batch(run: _Run, iteration: int) -> tuple[TrainingBatch, float, float]:
    """This rank's batch of ``iteration``, its teacher mask and (drawn) time reversal, with
    the sampling probabilities: a pure function of the iteration and the sampling generator."""
    data, ctx, device = run.config.data, run.ctx, run.device
    online = bool(getattr(run.train_set, "online", False))
    indices = batch_indices(iteration, data.batch_size, len(run.train_set), online, data.seed)
    input_prob, future_prob = sampling_probabilities(run.config.train, iteration)
    mask = teacher_mask(data.batch_size, data.total_len, data.input_len, input_prob, future_prob, run.generator)
    reverse = torch.rand(data.batch_size, generator=run.generator) < 0.5 if run.config.train.time_reversal else None
    indices, mask = ctx.shard(indices), mask[ctx.rank :: ctx.world_size].to(device)
    frames = _load_batch(run.train_set, indices, device)
    if reverse is not None:
        flip = reverse[ctx.rank :: ctx.world_size].to(device).view(-1, 1, 1, 1, 1)
        frames = torch.where(flip, frames.flip(1), frames)
    return TrainingBatch(indices, frames, mask), input_prob, future_prob


def _loop(
    run: _Run, forward_model: torch.nn.Module, start: int, stop_at: int | None, progress: bool, threads: ThreadShare
) -> int:
    """Train from ``start``; log, validate and checkpoint on schedule; recount the threads'
    share. Returns the iteration reached: ``train.iterations``, or less when paused by ``stop_at``."""
    config, ctx = run.config, run.ctx
    total = config.train.iterations
    train_log = _CsvLog(run.run_dir / TRAIN_LOG, LOG_FIELDS, start) if ctx.is_main else None
    writer = _tensorboard(run.run_dir) if config.train.tensorboard and ctx.is_main else None
    bar = progress_bar(total, start, "train", "it", enabled=progress and ctx.is_main)
    tick = time.time()
    run.model.train()

    def diverged(loss: Tensor, iteration: int) -> Exception:
        bar.close()
        return TrainingDiverged(
            f"{run.run_dir}: loss became {loss.item()} at iteration {iteration}; "
            f"the last good checkpoint is kept in {run.checkpoints} (try a lower train.lr or train.grad_clip)"
        )

    def validate(iteration: int) -> None:
        nonlocal tick
        _remember_best(run, iteration, _validate(run.model, run.val_set, config, run.run_dir, iteration, run.device))
        run.model.train()
        tick = time.time()  # seconds_per_iteration counts training only, not validation
        bar.unpause()  # and so do the bar's rate and ETA

    if start == 0 and config.train.val_start and run.val_set is not None and ctx.is_main:
        validate(0)  # the weights the run starts from (a source's, for a source-initialised target)
    step = make_step(run.model, forward_model, run.method, run.optimizer, run.scheduler, config)
    for iteration in range(start, total):
        threads.recount()
        batch, input_prob, future_prob = _draw_batch(run, iteration)
        loss, terms = step(batch, iteration, lambda loss, iteration=iteration: diverged(loss, iteration))
        done = iteration + 1
        bar.update(1)
        if ctx.is_main and (done % config.train.log_every == 0 or done == total):
            elapsed, tick = time.time() - tick, time.time()
            _log_step(run, train_log, writer, bar, done, loss, terms, input_prob, future_prob, elapsed)
        # Validate before checkpointing: a run killed in between resumes from the previous
        # checkpoint and validates again, instead of resuming past a validation never logged.
        if (
            run.val_set is not None
            and ctx.is_main
            and config.train.val_every
            and done % config.train.val_every == 0
            and done < total
        ):
            validate(done)
        if ctx.is_main and (done % config.train.checkpoint_every == 0 or done == total):
            _save_run(run, done)
        if stop_at is not None and done >= stop_at and done < total:
            if ctx.is_main:
                _save_run(run, done)
            bar.close()
            ctx.barrier()
            return done
    bar.close()
    return total


def _log_step(run: _Run, train_log, writer, bar, done: int, loss: Tensor, terms: dict, input_prob, future_prob, elapsed) -> None:
    """A row of ``train.csv`` (and TensorBoard scalars, the progress bar's losses)."""
    row = {
        "iteration": done,
        "loss": f"{loss.item():.6g}",
        **{k: f"{v.item():.6g}" for k, v in terms.items()},
        "input_truth_prob": f"{input_prob:.4f}",
        "future_truth_prob": f"{future_prob:.4f}",
        "lr": f"{run.optimizer.param_groups[0]['lr']:.6g}",
        "seconds_per_iteration": f"{elapsed / run.config.train.log_every:.4f}",
        "threads": torch.get_num_threads(),
    }
    train_log.write(row)
    bar.set_postfix(loss=f"{loss.item():.4g}", pred=f"{terms['prediction'].item():.4g}")
    if writer is not None:
        for key, value in terms.items():
            writer.add_scalar(f"loss/{key}", value.item(), done)


def _save_run(run: _Run, iteration: int) -> None:
    _save(run.checkpoints, iteration, run.model, run.optimizer, run.scheduler, run.generator, run.config, run.method, run.best)


def _remember_best(run: _Run, iteration: int, means: dict) -> None:
    """``train.weights = "best_val"``: keep a copy of the weights if this validation's MSE is
    the lowest so far (ties keep the earlier weights)."""
    if run.config.train.weights != "best_val" or (run.best is not None and means["mse"] >= run.best["means"]["mse"]):
        return
    weights = {name: value.detach().clone() for name, value in run.model.state_dict().items()}
    run.best = {"iteration": iteration, "means": means, "model": weights}


def _finish(run: _Run) -> dict:
    """Final validation and the model file (rank 0): the last weights, or with
    ``train.weights = "best_val"`` those of the best validation. Returns the validation means
    of the weights kept."""
    val = {}
    if run.ctx.is_main:
        total = run.config.train.iterations
        metadata = {"iterations": total}
        if run.val_set is not None:
            val = _validate(run.model, run.val_set, run.config, run.run_dir, total, run.device)
            _remember_best(run, total, val)
        if run.best is not None:  # train.weights = "best_val"
            run.model.load_state_dict(run.best["model"])
            val = run.best["means"]
            metadata.update(weights="best_val", selected_iteration=run.best["iteration"], selected_val_mse=val["mse"])
        save_model(run.model, run.config, run.run_dir / MODEL_FILE, metadata)
    run.ctx.barrier()
    return val


def _resume_stamp(run_dir: Path) -> list[tuple[str, int]]:
    """What a resume reads (checkpoints, manifest, final model): names and modification times."""
    paths = [*sorted((run_dir / CHECKPOINT_DIR).glob("*")), run_dir / MODEL_FILE]
    stamp = []
    for path in paths:
        try:
            stamp.append((path.name, path.stat().st_mtime_ns))
        except FileNotFoundError:  # absent, or rotated away just now
            pass
    return stamp


def _check_resumable(run_dir: Path, path: Path, state: dict, config: RunConfig, model: RecurrentPredictor, method) -> None:
    """Refuse to resume from ``state`` if it was trained with another config (``config.toml``
    edited by hand), a source changed or its weights do not fit ``model`` (checked without
    loading anything, so ``--force`` can still start from fresh weights)."""
    force = "pass --force to start over (the old files are kept, renamed)"
    trained = _checkpoint_config(state)
    if trained is not None and (edited := config_differences(trained, config)):
        raise RunConflictError(
            f"{run_dir}: {path.name} was trained with another config than this one, was {CONFIG_FILE} edited? "
            f"({describe_differences(trained, config, edited, 'in the checkpoint', 'in the config given')}); "
            f"restore {CONFIG_FILE}, choose another --out, or {force}"
        )
    advice = f"restore them, or {force}"
    recorded, current = state.get("source_digests"), method.source_digests()
    if recorded is not None and recorded != current:  # checkpoints from before this check have none
        changed = sorted(k for k in recorded.keys() | current.keys() if recorded.get(k) != current.get(k))
        raise RunConflictError(
            f"{run_dir}: source weights changed since {path.name} was written ({', '.join(changed)}); {advice}"
        )
    expected = {name: tuple(value.shape) for name, value in model.state_dict().items()}
    stored = {name: tuple(value.shape) for name, value in state["model"].items()}
    if stored != expected:
        differing = sorted(k for k in expected.keys() | stored.keys() if expected.get(k) != stored.get(k))
        raise RunConflictError(
            f"{run_dir}: {path.name} does not fit this run's model (did a source's architecture change?): "
            f"{', '.join(differing[:3])}{' ...' if len(differing) > 3 else ''} differ; {advice}"
        )


def _checkpoint_config(state: dict) -> RunConfig | None:
    """The config a checkpoint was trained with, None if it holds no readable one."""
    try:
        return config_from_dict(tomllib.loads(state["config"]), stored=True)
    except (KeyError, TypeError, ValueError):  # ConfigError and TOMLDecodeError are ValueErrors
        return None


def _save(
    folder: Path, iteration: int, model, optimizer, scheduler, generator, config: RunConfig, method, best: dict | None = None
) -> None:
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else {},
        "iteration": iteration,
        "rng": {"torch": torch.get_rng_state(), "sampling": generator.get_state()},
        "config": config.to_toml(),
        "transfer_layout": layout_to_json(model.transfer_layout),
        "source_digests": method.source_digests(),
        "best": best,  # train.weights = "best_val": the best validation so far and its weights
    }
    save_checkpoint(folder, iteration, state, keep=config.train.keep_checkpoints)


def _validate(model: RecurrentPredictor, dataset, config: RunConfig, run_dir: Path, iteration: int, device) -> dict:
    from transmem.evaluation.evaluate import evaluate_model

    result = evaluate_model(model, dataset, config, device=device)
    means = {name: result["model"][name]["mean"] for name in ("mse", "mae", "ssim", "psnr")}
    fields = ["iteration", "mse", "mae", "ssim", "psnr"]
    path = run_dir / VAL_LOG
    # Rows at or past this iteration come from work lost to a kill; replace them.
    rows = _read_rows(path, iteration) + [{"iteration": iteration, **{k: f"{v:.6g}" for k, v in means.items()}}]
    _rewrite_csv(path, fields, rows)
    return means


def _tensorboard_writer_class():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("train.tensorboard = true needs the tensorboard package (pip install transmem[tensorboard])") from None
    return SummaryWriter


def _tensorboard(run_dir: Path):
    return _tensorboard_writer_class()(log_dir=str(run_dir / TENSORBOARD_DIR))
