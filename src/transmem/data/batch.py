"""One training batch: the sequences a training step reads, and its scheduled-sampling mask."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class TrainingBatch:
    """One training batch, as the training step, the memory banks and the transfer methods see it."""

    indices: list[int]  # dataset indices of the sequences
    frames: Tensor  # (B, T, C, H, W), as the target reads them (time-reversed where drawn so)
    mask: Tensor | None = None  # (B, T-2) scheduled-sampling teacher mask (True: true frame)
