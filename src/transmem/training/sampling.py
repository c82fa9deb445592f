"""Scheduled sampling and deterministic batch order.

Scheduled sampling decides, per sequence and step, whether the model reads the true frame
or its own previous prediction (see :mod:`transmem.models.backbone`). Schedules, with
``I`` = total iterations, ``stop = sampling_stop * I`` and ``start = reverse_start * I``:

- ``standard`` (PredRNN): input steps always read the truth; each predicted step reads the
  truth with probability ``eta = max(0, 1 - it / stop)``.
- ``reverse`` (PredRNN-V2): input steps read the truth with probability ``r_eta`` rising
  from 0.5 to 1 (``1 - 0.5 exp(-(it - start) / alpha)`` between ``start`` and ``stop``,
  ``alpha = (stop - start) / 5``); predicted steps with ``eta`` falling from 0.5 to 0.
- ``none``: the test-time rollout (truth for inputs, own predictions after).

Batches are a pure function of the iteration number, so a resumed run sees exactly the
batches it would have seen: online datasets take indices ``it * B .. it * B + B - 1``;
finite ones walk a fresh seeded permutation every epoch.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from transmem.schema import TrainConfig


def sampling_probabilities(train: TrainConfig, iteration: int) -> tuple[float, float]:
    """``(input_truth_prob, future_truth_prob)`` at ``iteration``."""
    total = train.iterations
    stop = max(1.0, train.sampling_stop * total)
    if train.sampling == "none":
        return 1.0, 0.0
    if train.sampling == "standard":
        return 1.0, max(0.0, 1.0 - iteration / stop)
    start = min(train.reverse_start * total, stop)
    if iteration < start:
        return 0.5, 0.5
    if iteration < stop:
        alpha = max((stop - start) / 5.0, 1e-8)
        return 1.0 - 0.5 * math.exp(-(iteration - start) / alpha), 0.5 - 0.5 * (iteration - start) / (stop - start)
    return 1.0, 0.0


def teacher_mask(
    batch: int,
    total_len: int,
    input_len: int,
    input_truth_prob: float,
    future_truth_prob: float,
    generator: torch.Generator,
) -> Tensor:
    """Sample a ``(B, T-2)`` bool mask: True = feed the true frame at step ``t = index + 1``.

    Steps ``1 .. input_len - 1`` are input steps, ``input_len .. T-2`` predicted steps.
    Drawn on the CPU from ``generator`` so the result does not depend on the device.
    """
    draws = torch.rand(batch, total_len - 2, generator=generator)
    steps = torch.arange(1, total_len - 1)
    probs = torch.where(steps < input_len, torch.tensor(input_truth_prob), torch.tensor(future_truth_prob))
    return draws < probs


def batch_indices(iteration: int, global_batch: int, dataset_size: int, online: bool, seed: int) -> list[int]:
    """Dataset indices of the global batch at ``iteration`` (deterministic)."""
    if online:
        start = iteration * global_batch
        return list(range(start, start + global_batch))
    if dataset_size < 1:
        raise ValueError("the training set is empty")
    out = []
    for position in range(iteration * global_batch, (iteration + 1) * global_batch):
        epoch, offset = divmod(position, dataset_size)
        out.append(int(_epoch_permutation(seed, epoch, dataset_size)[offset]))
    return out


_PERMUTATION_CACHE: dict[tuple[int, int, int], Tensor] = {}


def _epoch_permutation(seed: int, epoch: int, size: int) -> Tensor:
    key = (seed, epoch, size)
    if key not in _PERMUTATION_CACHE:
        if len(_PERMUTATION_CACHE) > 4:
            _PERMUTATION_CACHE.clear()
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        _PERMUTATION_CACHE[key] = torch.randperm(size, generator=generator)
    return _PERMUTATION_CACHE[key]
