"""The training loop: the steps of one run, from a start iteration to ``train.iterations``
(or a pause), with logging, validation and checkpoints on schedule.

- each step is :func:`transmem.training.step.training_step` (the loss: prediction MSE over
  all T-1 predicted frames, plus the transfer method's weighted terms, plus PredRNN-V2's
  decoupling term), or that step captured in a CUDA graph (``train.cuda_graph``);
- batches, scheduled-sampling masks and time reversal are pure functions of the iteration
  and the sampling generator's state, which checkpoints save, so ``N`` steps equal ``N/2`` +
  resume + ``N/2`` exactly (with ``train.cuda_graph`` to floating-point rounding: a resumed
  run's first steps are eager again, and captured kernels may round otherwise);
- what the loop logs, validates and checkpoints goes to a :class:`LoopRecorder`, rank 0's
  alone: the run that owns the folder writes it (:mod:`transmem.run.records`);
- a non-finite loss or gradient norm, or an overflow in the optimiser or scheduler, stops
  the run with :class:`TrainingDiverged`, before that step's checkpoint is written.
"""

from __future__ import annotations

from contextlib import contextmanager
from time import perf_counter  # a monotonic clock: durations survive a change of the wall clock
from typing import Protocol

import torch
from torch import Tensor

from transmem.data.batch import TrainingBatch
from transmem.errors import TrainingDiverged
from transmem.evaluation.metrics import REPORTED_METRIC_NAMES
from transmem.progress import progress_bar
from transmem.storage.checkpoints import checkpoint_iteration, list_checkpoints
from transmem.storage.run_folder import RunFolder
from transmem.training.cuda_graph import make_step
from transmem.training.sampling import batch_indices, sampling_probabilities, teacher_mask
from transmem.training.setup import TrainingState
from transmem.training.thread_share import ThreadShare

#: The columns of a logged step: :func:`step_row`'s keys.
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
#: The scores of a validation, each a mean over the split's sequences and predicted frames.
VALIDATION_METRICS = REPORTED_METRIC_NAMES


class LoopRecorder(Protocol):
    """Where the loop's results go (rank 0 only): logs, validation scores and checkpoints."""

    def log_step(self, iteration: int, row: dict, terms: dict[str, Tensor]) -> None:
        """A logged step: its :data:`LOG_FIELDS` ``row`` and its loss ``terms`` (0-d tensors)."""

    def log_validation(self, iteration: int, means: dict[str, float]) -> None:
        """The :data:`VALIDATION_METRICS` of the weights after ``iteration`` steps."""

    def save_checkpoint(self, iteration: int) -> None:
        """Everything the next step depends on, after ``iteration`` steps."""


def train_loop(
    state: TrainingState,
    forward_model: torch.nn.Module,
    start: int,
    stop_at: int | None,
    progress: bool,
    threads: ThreadShare,
    recorder: LoopRecorder | None,
) -> int:
    """Train ``state`` from iteration ``start``; log, validate and checkpoint on schedule through
    ``recorder`` (rank 0's; None on the other ranks); recount the ``threads``' share. Returns
    the iteration reached: ``train.iterations``, or less when paused by ``stop_at``."""
    config, ctx = state.config, state.ctx
    total = config.train.iterations
    bar = progress_bar(total, start, "train", "it", enabled=progress and ctx.is_main)
    tick, ticked_at = perf_counter(), start  # the clock, and the iteration it was read at
    state.model.train()

    def run_validation(iteration: int) -> None:
        nonlocal tick, ticked_at
        remember_best(state, iteration, _record_validation(state, recorder, iteration))
        state.model.train()
        tick, ticked_at = perf_counter(), iteration  # seconds_per_iteration counts training only, not validation
        bar.unpause()  # and so do the bar's rate and ETA

    if start == 0 and config.train.val_start and state.val_set is not None and ctx.is_main:
        run_validation(0)  # the weights the run starts from (a source's, for a source-initialised target)
    step = make_step(state.model, forward_model, state.method, state.optimizer, state.scheduler, config)
    for iteration in range(start, total):
        threads.recount()
        batch, input_prob, future_prob = draw_batch(state, iteration)
        done = iteration + 1  # this iteration's number in train.csv and in the checkpoints' names
        with _overflow_diverges(state, bar, done):
            loss, terms = step(batch, iteration, lambda value, what="loss", done=done: _diverged(state, bar, done, value, what))
            bar.update(1)
            if ctx.is_main and (done % config.train.log_every == 0 or done == total):
                seconds = (perf_counter() - tick) / (done - ticked_at)  # the steps since the clock was read
                tick, ticked_at = perf_counter(), done
                recorder.log_step(done, step_row(state, done, loss, terms, input_prob, future_prob, seconds), terms)
                bar.set_postfix(loss=f"{loss.item():.4g}", pred=f"{terms['prediction'].item():.4g}")
        # Validate before checkpointing: a run killed in between resumes from the previous
        # checkpoint and validates again, instead of resuming past a validation never logged.
        if _validation_due(state, done):
            run_validation(done)
        paused = stop_at is not None and stop_at <= done < total
        if ctx.is_main and (done % config.train.checkpoint_every == 0 or done == total or paused):
            recorder.save_checkpoint(done)  # once, also when a pause lands on a checkpoint's iteration
        if paused:
            bar.close()
            ctx.barrier()
            return done
    bar.close()
    return total


def _diverged(state: TrainingState, bar, done: int, value: Tensor | None, what: str) -> TrainingDiverged:
    """The one-line error that stops a run whose ``what`` (``"loss"``, ``"gradient norm"``)
    became the non-finite ``value`` (None: ``what`` says it all) at iteration ``done``
    (1-based, as train.csv numbers it), with the progress bar closed: what overflowed, which
    checkpoint is kept, and what to try."""
    bar.close()
    checkpoints = RunFolder(state.run_dir).checkpoints
    written = list_checkpoints(checkpoints)  # the newest is the last good one: no step that diverged wrote one
    kept = (
        f"the last good checkpoint is kept ({written[-1]}, iteration {checkpoint_iteration(written[-1])})"
        if written
        else "no checkpoint was written (it diverged before the first one)"
    )
    train = state.config.train
    clip = "; or --set train.grad_clip=1.0" if train.grad_clip <= 0 else ""
    again = "to resume from the kept checkpoint" if written else "to start it again"
    overflowed = f"{what} became {value.item()}" if value is not None else what
    what = f"{state.run_dir}: training diverged at iteration {done}: {overflowed}; {kept}"
    return TrainingDiverged(
        f"{what}; rerun the same command with a lower --set train.lr=... (now {train.lr:g}{clip}) {again}",
        iteration=done,
        kept=checkpoint_iteration(written[-1]) if written else None,
        what=what,
    )


@contextmanager
def _overflow_diverges(state: TrainingState, bar, done: int):
    """Turn an overflow of iteration ``done`` (an ``OverflowError``, or torch's RuntimeError
    "value cannot be converted to type float without overflow" from the optimiser, the
    scheduler or a ``.item()``) into :class:`TrainingDiverged`, as a non-finite loss is."""
    try:
        yield
    except TrainingDiverged:
        raise
    except (RuntimeError, OverflowError) as error:
        if not isinstance(error, OverflowError) and "without overflow" not in str(error):  # torch: a scalar out of float range
            raise
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise _diverged(state, bar, done, None, f"a value overflowed ({first[:200]})") from None


def _validation_due(state: TrainingState, done: int) -> bool:
    """Whether rank 0 validates after ``done`` steps: every ``train.val_every``, but not at the
    end (the final validation scores the weights the run keeps)."""
    train = state.config.train
    return bool(
        state.val_set is not None
        and state.ctx.is_main
        and train.val_every
        and done % train.val_every == 0
        and done < train.iterations
    )


def _load_batch(dataset, indices: list[int], device: torch.device) -> Tensor:
    """The sequences ``indices`` of ``dataset`` as one ``(B, T, C, H, W)`` batch on ``device``."""
    return torch.stack([dataset[i] for i in indices]).to(device, non_blocking=True)


def draw_batch(state: TrainingState, iteration: int) -> tuple[TrainingBatch, float, float]:
    """This rank's batch of ``iteration``, its teacher mask and (drawn) time reversal, with
    the sampling probabilities: a pure function of the iteration and the sampling generator."""
    data, ctx, device = state.config.data, state.ctx, state.device
    online = bool(getattr(state.train_set, "online", False))
    indices = batch_indices(iteration, data.batch_size, len(state.train_set), online, data.seed)
    input_prob, future_prob = sampling_probabilities(state.config.train, iteration)
    mask = teacher_mask(data.batch_size, data.total_len, data.input_len, input_prob, future_prob, state.generator)
    reverse = torch.rand(data.batch_size, generator=state.generator) < 0.5 if state.config.train.time_reversal else None
    indices, mask = ctx.shard(indices), mask[ctx.rank :: ctx.world_size].to(device)
    frames = _load_batch(state.train_set, indices, device)
    if reverse is not None:
        flip = reverse[ctx.rank :: ctx.world_size].to(device).view(-1, 1, 1, 1, 1)
        frames = torch.where(flip, frames.flip(1), frames)
    return TrainingBatch(indices, frames, mask), input_prob, future_prob


def step_row(
    state: TrainingState, done: int, loss: Tensor, terms: dict[str, Tensor], input_prob: float, future_prob: float, seconds: float
) -> dict:
    """The :data:`LOG_FIELDS` row of the step that reached ``done`` (``seconds``: the mean
    seconds of a training step since the last logged step, validation left out)."""
    return {
        "iteration": done,
        "loss": f"{loss.item():.6g}",
        **{k: f"{v.item():.6g}" for k, v in terms.items()},
        "input_truth_prob": f"{input_prob:.4f}",
        "future_truth_prob": f"{future_prob:.4f}",
        "lr": f"{state.optimizer.param_groups[0]['lr']:.6g}",
        "seconds_per_iteration": f"{seconds:.4f}",
        "threads": torch.get_num_threads(),
    }


def score_validation(model: torch.nn.Module, dataset, config, device: torch.device) -> dict[str, float]:
    """``model``'s :data:`VALIDATION_METRICS` on the validation split ``dataset``."""
    # Imported here: the evaluation package loads torchmetrics and matplotlib (about a second),
    # which `transmem train` pays only when it validates.
    from transmem.evaluation.evaluate import evaluate_model

    result = evaluate_model(model, dataset, config, device=device)
    return {name: result["model"][name]["mean"] for name in VALIDATION_METRICS}


def _record_validation(state: TrainingState, recorder: LoopRecorder, iteration: int) -> dict[str, float]:
    """Score the validation split after ``iteration`` steps and hand the scores to ``recorder``."""
    means = score_validation(state.model, state.val_set, state.config, state.device)
    recorder.log_validation(iteration, means)
    return means


def remember_best(state: TrainingState, iteration: int, means: dict[str, float]) -> None:
    """``train.weights = "best_val"``: keep a copy of the weights if this validation's MSE is
    the lowest so far (ties keep the earlier weights)."""
    if state.config.train.weights != "best_val" or (state.best is not None and means["mse"] >= state.best["means"]["mse"]):
        return
    weights = {name: value.detach().clone() for name, value in state.model.state_dict().items()}
    state.best = {"iteration": iteration, "means": means, "model": weights}


def keep_final_weights(state: TrainingState, recorder: LoopRecorder) -> tuple[dict[str, float], dict]:
    """Rank 0, at the end: the final validation and the weights the run keeps, the last or,
    with ``train.weights = "best_val"``, those of the best validation (loaded into the model).
    Returns ``(validation means of the weights kept, {} without a validation split; the
    model file's metadata)``."""
    total = state.config.train.iterations
    metadata = {"iterations": total}
    val = {}
    if state.val_set is not None:
        val = _record_validation(state, recorder, total)
        remember_best(state, total, val)
    if state.best is not None:  # train.weights = "best_val"
        state.model.load_state_dict(state.best["model"])
        val = state.best["means"]
        metadata.update(weights="best_val", selected_iteration=state.best["iteration"], selected_val_mse=val["mse"])
    return val, metadata
