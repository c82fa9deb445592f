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
from transmem.models import RecurrentPredictor
from transmem.transfer.memory_bank import TrainingBatch


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


def apply_gradients(model: RecurrentPredictor, optimizer: torch.optim.Optimizer, config: RunConfig, loss: Tensor) -> None:
    """Backward, gradient clipping (``train.grad_clip``) and the optimiser step."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.train.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.train.grad_clip)
    optimizer.step()


def training_step(
    model: RecurrentPredictor,
    forward_model: torch.nn.Module,
    method,
    optimizer: torch.optim.Optimizer,
    scheduler,
    config: RunConfig,
    batch: TrainingBatch,
    iteration: int,
    diverged: Callable[[Tensor], Exception],
) -> tuple[Tensor, dict[str, Tensor]]:
    """One optimisation step on ``batch``: forward, loss, backward, clipping, optimiser and
    scheduler steps. Returns ``(loss, terms)`` (:func:`step_loss`). A non-finite loss raises
    ``diverged(loss)`` before any gradient is applied."""
    loss, terms = step_loss(model, forward_model, method, config, batch, iteration)
    if not torch.isfinite(loss):
        raise diverged(loss)
    apply_gradients(model, optimizer, config, loss)
    if scheduler is not None:
        scheduler.step()
    return loss, terms
