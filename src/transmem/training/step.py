"""One optimisation step: the training loop's, the one ``transmem speed`` times, and the one
a CUDA graph captures (:mod:`transmem.training.cuda_graph`).

The loss: prediction MSE over all T-1 predicted frames, plus the transfer method's weighted
terms (e.g. distillation), plus PredRNN-V2's decoupling term. It is computed here, never
inside a model's ``forward``.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from transmem.config import RunConfig
from transmem.data.batch import TrainingBatch
from transmem.models import RecurrentPredictor


def decoupling_loss(pairs: list[tuple[Tensor, Tensor]]) -> Tensor:
    """PredRNN-V2: mean |cosine| between adapted memory increments (already L2-normalized)."""
    return torch.stack([(dc * dm).sum(dim=2).abs().mean() for dc, dm in pairs]).mean()


def step_loss(
    model: RecurrentPredictor,
    forward_model: torch.nn.Module,
    method,
    config: RunConfig,
    batch: TrainingBatch,
    iteration: int,
    autocast_cache: bool = True,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The forward pass and the loss of ``batch``: ``(loss, terms)`` (``terms``: ``prediction``
    and every weighted term). ``autocast_cache=False`` inside a CUDA graph capture, where
    autocast's weight cache must not outlive the captured region."""
    device_type = batch.frames.device.type
    forward_kwargs = method.forward_kwargs(batch.frames, iteration)
    # bf16 autocast (opt-in): convolutions in bfloat16, losses in float32 (autocast's fp32 list).
    enabled = config.train.precision == "bf16"
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=enabled, cache_enabled=autocast_cache and enabled):
        rollout = forward_model(batch.frames, batch.mask, collect_decoupling=model.uses_decoupling, **forward_kwargs)
        prediction = F.mse_loss(rollout.predictions, batch.frames[:, 1:])
        loss = prediction
        terms = {"prediction": prediction}
        for name, (weight, value) in method.losses(model, batch, rollout).items():
            terms[name] = value
            if weight > 0:
                loss = loss + weight * value
        if model.uses_decoupling:
            terms["decouple"] = decoupling_loss(rollout.decoupling)
            loss = loss + config.model.decouple_weight * terms["decouple"]
    return loss, terms


def apply_gradients(
    model: RecurrentPredictor,
    optimizer: torch.optim.Optimizer,
    config: RunConfig,
    loss: Tensor,
    diverged: Callable[..., Exception] | None = None,
) -> Tensor:
    """Backward, gradient clipping (``train.grad_clip``) and the optimiser step. Returns the
    gradients' total norm before clipping (a 0-d tensor). With ``diverged`` (eager steps), a
    non-finite norm raises ``diverged(norm, "gradient norm")`` before the optimiser step,
    which would write NaN into every weight; a CUDA graph capture passes None (it cannot
    synchronise) and checks the returned norm after each replay."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    # max_norm inf measures the norm without clipping (the gradients are scaled by exactly 1)
    max_norm = config.train.grad_clip if config.train.grad_clip > 0 else float("inf")
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    if diverged is not None and not torch.isfinite(norm):
        raise diverged(norm, "gradient norm")
    optimizer.step()
    return norm


def training_step(
    model: RecurrentPredictor,
    forward_model: torch.nn.Module,
    method,
    optimizer: torch.optim.Optimizer,
    scheduler,
    config: RunConfig,
    batch: TrainingBatch,
    iteration: int,
    diverged: Callable[..., Exception],
) -> tuple[Tensor, dict[str, Tensor]]:
    """One iteration on ``batch``: forward, loss, backward, clipping, optimiser and scheduler
    steps. Returns ``(loss, terms)`` (:func:`step_loss`). A non-finite loss raises
    ``diverged(loss)`` before its gradient is applied, a non-finite gradient norm
    ``diverged(norm, "gradient norm")`` before the optimiser step.

    With ``train.reverse_input`` (the release's ``--reverse_input 1``) the iteration makes a
    second optimiser step, on :func:`reversed_batch` (the same sequences played backwards,
    the same mask), and returns the means of the two steps' loss and terms (as the release
    logs them); the scheduler still steps once.
    """
    loss, terms = _update(model, forward_model, method, optimizer, config, batch, iteration, diverged)
    if config.train.reverse_input:
        back_loss, back_terms = _update(
            model, forward_model, method, optimizer, config, reversed_batch(batch), iteration, diverged
        )
        loss = (loss.detach() + back_loss.detach()) / 2
        terms = {name: (value.detach() + back_terms[name].detach()) / 2 for name, value in terms.items()}
    if scheduler is not None:
        scheduler.step()
    return loss, terms


def _update(model, forward_model, method, optimizer, config, batch: TrainingBatch, iteration: int, diverged):
    """One optimiser step on ``batch`` (arguments as :func:`training_step`'s): its ``(loss, terms)``."""
    loss, terms = step_loss(model, forward_model, method, config, batch, iteration)
    if not torch.isfinite(loss):
        raise diverged(loss)
    apply_gradients(model, optimizer, config, loss, diverged)
    return loss, terms


def reversed_batch(batch: TrainingBatch) -> TrainingBatch:
    """``batch`` with every sequence played backwards, ``frames[:, ::-1]`` ``(B, T, C, H, W)``,
    and the same scheduled-sampling mask (the release's ``np.flip(ims, axis=1)``)."""
    return TrainingBatch(batch.indices, batch.frames.flip(1), batch.mask)
