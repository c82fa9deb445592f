"""The training loop behind ``transmem train``.

One function, :func:`train`, trains (or resumes) a run in a run folder:

- the loss is assembled here: prediction MSE over all T-1 predicted frames, plus the
  transfer method's weighted terms (e.g. distillation), plus PredRNN-V2's decoupling term;
- batches, scheduled-sampling masks and time reversal are pure functions of the iteration
  and a saved generator state, so ``N`` steps equal ``N/2`` + resume + ``N/2`` exactly;
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
import torch.nn.functional as F
from torch import Tensor

from transmem.config import ConfigError, RunConfig
from transmem.data import DataError, build_dataset
from transmem.errors import TrainingDiverged
from transmem.models import RecurrentPredictor
from transmem.run import CHECKPOINT_DIR, MODEL_FILE, save_model
from transmem.training.checkpoint import atomic_write_text, latest_good_checkpoint, remove_stale_temporaries, save_checkpoint
from transmem.training.distributed import init_distributed
from transmem.training.locks import FileLock, LockedError
from transmem.training.progress import progress_bar
from transmem.training.rundir import CONFIG_FILE, RunConflictError, check_run_dir, config_differences, describe_differences, prepare_run_dir
from transmem.training.sampling import batch_indices, sampling_probabilities, teacher_mask
from transmem.transfer.memory_bank import TrainingBatch
from transmem.transfer.methods import INIT_FILE, METHODS

log = logging.getLogger(__name__)

TRAIN_LOG = "train.csv"
VAL_LOG = "val.csv"
RUN_LOCK = "train.lock"
LOG_FIELDS = [
    "iteration", "loss", "prediction", "distill", "decouple", "input_truth_prob", "future_truth_prob", "lr",
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


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device: expected auto, cpu, cuda or cuda:N, got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device = {name!r} but CUDA is not available here (use \"auto\" or \"cpu\")")
    return device


def decoupling_loss(pairs: list[tuple[Tensor, Tensor]]) -> Tensor:
    """PredRNN-V2: mean |cosine| between adapted memory increments (already L2-normalized)."""
    return torch.stack([(dc * dm).sum(dim=2).abs().mean() for dc, dm in pairs]).mean()


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
    again resumes it. Returns a :class:`TrainResult` (``val`` is empty unless finished).
    While it trains, ``run_dir/train.lock`` is held (by rank 0): a second process training
    the same folder stops with :class:`~transmem.training.locks.LockedError`.
    ``check_test_split=False`` skips the refusal of data without a test split (a source
    ranking's probe, which must never build the test split).
    """
    lock = FileLock(Path(run_dir) / RUN_LOCK)
    try:
        return _train(config, Path(run_dir), force, progress, stop_at, lock, check_test_split)
    finally:
        lock.release()


def _train(
    config: RunConfig, run_dir: Path, force: bool, progress: bool, stop_at: int | None, lock: FileLock, check_test_split: bool
) -> TrainResult:
    started = time.time()
    device = resolve_device(config.train.device)
    ctx = init_distributed(device)
    if config.data.batch_size % ctx.world_size:
        raise ConfigError(
            f"data.batch_size: the global batch {config.data.batch_size} must be divisible by the "
            f"{ctx.world_size} processes (uneven shards would change the gradient average)"
        )
    if device.type == "cuda" and ctx.enabled:
        device = torch.device("cuda", ctx.local_rank)
    # Everything that can refuse the command (run-folder conflict, data, sources, source
    # architecture) is checked before anything is written: a refused command changes nothing.
    replacing = check_run_dir(config, run_dir, force)
    if config.train.tensorboard:
        _tensorboard_writer_class()
    checkpoints = run_dir / CHECKPOINT_DIR

    torch.manual_seed(config.train.seed)
    if config.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        # Deterministic results do not need every fresh tensor NaN-filled (a debugging aid, 1-3 % of a step).
        torch.utils.deterministic.fill_uninitialized_memory = False
    train_set = build_dataset(config.data, "train")
    val_set = build_dataset(config.data, "val") if config.data.val_size > 0 else None
    if check_test_split and len(build_dataset(config.data, "test")) == 0:  # found now, not after training, by evaluate
        raise DataError(f"data: the {config.data.name} test split is empty; a run needs test sequences (data.test_size)")

    method = METHODS[config.transfer.method](config, run_dir, device)
    method.check_data(train_set)
    model = method.build_model().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr)
    scheduler = make_scheduler(optimizer, config)
    generator = torch.Generator().manual_seed(config.train.seed + 1)

    start = 0
    seen = _resume_stamp(run_dir)
    found = None if replacing else latest_good_checkpoint(checkpoints, map_location=device)
    if not replacing and (run_dir / MODEL_FILE).exists() and (found is None or int(found[1]["iteration"]) >= config.train.iterations):
        # Finished (even if its checkpoints were deleted since): nothing to resume or retrain,
        # whatever its sources have become.
        start, found = config.train.iterations, None
    elif found is not None:
        try:
            _check_resumable(run_dir, found[0], found[1], config, model, method)
        except RunConflictError:
            if not force:
                raise
            replacing, found = True, None  # --force: set the old run's files aside and start over
    if found is not None:
        path, state = found
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["rng"]["sampling"].cpu())
        torch.set_rng_state(state["rng"]["torch"].cpu())
        start = int(state["iteration"])
        if ctx.is_main:
            log.info("resuming %s from %s (iteration %d)", run_dir, path.name, start)
    fresh = found is None and start == 0
    if ctx.is_main:
        # The first write. A second process on this folder stops here, having written nothing.
        # The lock comes only now (a refused command must not touch the folder), so check that
        # no other process wrote the checkpoints or model between their reading and now.
        run_dir.mkdir(parents=True, exist_ok=True)
        lock.acquire()
        if _resume_stamp(run_dir) != seen:
            raise LockedError(f"{run_dir}: another process trained this run while this one started; rerun to resume it")
        prepare_run_dir(config, run_dir, force, set_aside=replacing)
        remove_stale_temporaries(checkpoints)
        remove_stale_temporaries(run_dir)
    if fresh:
        # Once the folder is this run's: starting from a source may first rank the sources
        # (probe runs in the shared cache), which a refused command must not do.
        record = method.initialize(model, progress=progress)
        if record is not None and ctx.is_main:
            atomic_write_text(run_dir / INIT_FILE, json.dumps(record, indent=1))
    ctx.barrier()

    total = config.train.iterations
    if start >= total and (run_dir / MODEL_FILE).exists():
        return TrainResult(run_dir, total, start, {}, time.time() - started)

    # Rank 0 builds shared files (a cached memory bank) alone; the other ranks then find them valid.
    if ctx.is_main:
        method.prepare(model, train_set, progress)
    ctx.barrier()
    if not ctx.is_main:
        method.prepare(model, train_set, False)
    forward_model = model
    if ctx.enabled:
        # Parameters without a gradient in some steps: Knowledge Flow mixers once the teachers
        # have faded out; distillers and projections when the distillation loss is off.
        unused = len(model.flow) > 0 or (bool(model.memory_transfer_layers) and config.transfer.distill_weight == 0)
        forward_model = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=unused)
    if config.train.compile:
        # Only the training forward is compiled; checkpoints, validation and the saved model
        # use ``model`` itself, so their state-dict keys do not change.
        forward_model = torch.compile(forward_model)

    train_log = _CsvLog(run_dir / TRAIN_LOG, LOG_FIELDS, start) if ctx.is_main else None
    writer = _tensorboard(run_dir) if config.train.tensorboard and ctx.is_main else None
    data = config.data
    online = bool(getattr(train_set, "online", False))
    bar = progress_bar(total, start, "train", "it", enabled=progress and ctx.is_main)
    tick = time.time()
    model.train()
    for iteration in range(start, total):
        indices = batch_indices(iteration, data.batch_size, len(train_set), online, data.seed)
        input_prob, future_prob = sampling_probabilities(config.train, iteration)
        mask = teacher_mask(data.batch_size, data.total_len, data.input_len, input_prob, future_prob, generator)
        reverse = torch.rand(data.batch_size, generator=generator) < 0.5 if config.train.time_reversal else None
        indices, mask = ctx.shard(indices), mask[ctx.rank :: ctx.world_size].to(device)
        frames = _load_batch(train_set, indices, device)
        if reverse is not None:
            flip = reverse[ctx.rank :: ctx.world_size].to(device).view(-1, 1, 1, 1, 1)
            frames = torch.where(flip, frames.flip(1), frames)
        batch = TrainingBatch(indices, frames, mask)

        forward_kwargs = method.forward_kwargs(frames, iteration)
        # bf16 autocast (opt-in): convolutions in bfloat16, losses in float32 (autocast's fp32 list).
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.train.precision == "bf16"):
            rollout = forward_model(frames, mask, collect_decoupling=model.uses_decoupling, **forward_kwargs)
            prediction = F.mse_loss(rollout.predictions, frames[:, 1:])
            loss = prediction
            terms = {"prediction": prediction}
            for name, (weight, value) in method.losses(model, batch, rollout).items():
                terms[name] = value
                if weight > 0:
                    loss = loss + weight * value
            if model.uses_decoupling:
                terms["decouple"] = decoupling_loss(rollout.decoupling)
                loss = loss + config.model.decouple_weight * terms["decouple"]
        if not torch.isfinite(loss):
            bar.close()
            raise TrainingDiverged(
                f"{run_dir}: loss became {loss.item()} at iteration {iteration}; "
                f"the last good checkpoint is kept in {checkpoints} (try a lower train.lr or train.grad_clip)"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.train.grad_clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        done = iteration + 1
        bar.update(1)

        if ctx.is_main and (done % config.train.log_every == 0 or done == total):
            elapsed = time.time() - tick
            tick = time.time()
            row = {
                "iteration": done,
                "loss": f"{loss.item():.6g}",
                **{k: f"{v.item():.6g}" for k, v in terms.items()},
                "input_truth_prob": f"{input_prob:.4f}",
                "future_truth_prob": f"{future_prob:.4f}",
                "lr": f"{optimizer.param_groups[0]['lr']:.6g}",
                "seconds_per_iteration": f"{elapsed / config.train.log_every:.4f}",
                "threads": torch.get_num_threads(),
            }
            train_log.write(row)
            bar.set_postfix(loss=f"{loss.item():.4g}", pred=f"{prediction.item():.4g}")
            if writer is not None:
                for key, value in terms.items():
                    writer.add_scalar(f"loss/{key}", value.item(), done)
        # Validate before checkpointing: a run killed in between resumes from the previous
        # checkpoint and validates again, instead of resuming past a validation never logged.
        if val_set is not None and ctx.is_main and config.train.val_every and done % config.train.val_every == 0 and done < total:
            _validate(model, val_set, config, run_dir, done, device)
            model.train()
            tick = time.time()  # seconds_per_iteration counts training only, not validation
            bar.unpause()  # and so do the bar's rate and ETA
        if ctx.is_main and (done % config.train.checkpoint_every == 0 or done == total):
            _save(checkpoints, done, model, optimizer, scheduler, generator, config, method)
        if stop_at is not None and done >= stop_at and done < total:
            if ctx.is_main:
                _save(checkpoints, done, model, optimizer, scheduler, generator, config, method)
            bar.close()
            ctx.barrier()
            return TrainResult(run_dir, done, start, {}, time.time() - started)
    bar.close()

    val = {}
    if ctx.is_main:
        if val_set is not None:
            val = _validate(model, val_set, config, run_dir, total, device)
        save_model(model, config, run_dir / MODEL_FILE, {"iterations": total})
    ctx.barrier()
    return TrainResult(run_dir, total, start, val, time.time() - started)


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
        raise RunConflictError(f"{run_dir}: source weights changed since {path.name} was written ({', '.join(changed)}); {advice}")
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
    from transmem.config import config_from_dict, tomllib

    try:
        return config_from_dict(tomllib.loads(state["config"]), stored=True)
    except (KeyError, TypeError, ValueError):  # ConfigError and TOMLDecodeError are ValueErrors
        return None


def _save(folder: Path, iteration: int, model, optimizer, scheduler, generator, config: RunConfig, method) -> None:
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else {},
        "iteration": iteration,
        "rng": {"torch": torch.get_rng_state(), "sampling": generator.get_state()},
        "config": config.to_toml(),
        "transfer_layout": json.dumps({str(k): v for k, v in model.transfer_layout.items()}),
        "source_digests": method.source_digests(),
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
    return _tensorboard_writer_class()(log_dir=str(run_dir / "tensorboard"))
