"""The mean transfer gate of a TMU target per layer, source and step, accumulated batch by batch.

It shows which source a target relies on, and when. Like :class:`.metrics.FrameMetrics` it
follows pysteps' verification API: create an accumulator, ``update`` it with each batch,
``merge`` accumulators of disjoint batches, ``compute`` the means at the end. Only running
sums are kept (float64, on the CPU).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

__all__ = ["TransferGateMeans"]


class TransferGateMeans:
    """Accumulates the mean transfer gate of every TMU layer, source and step over sequences.

    Usage::

        gates = TransferGateMeans()
        for frames in batches:
            gates.update(model(frames, mask).gate_means)
        gates.compute()   # {"0": [[mean gate per step] per source], ...}
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget all accumulated batches."""
        self._sums: dict[int, Tensor] = {}  # layer -> (steps, sources) sum over sequences
        self._count = 0

    @property
    def count(self) -> int:
        """Number of sequences accumulated so far (0 while no TMU layer was seen)."""
        return self._count

    @torch.no_grad()
    def update(self, gate_means: Mapping[int, Tensor]) -> None:
        """Add one batch.

        Args:
            gate_means: TMU layer -> ``(batch, steps, sources)`` float gate means in [0, 1],
                one per sequence (a rollout's ``gate_means``; empty for a model without gates).

        Raises:
            ValueError: layers with different batch sizes, or other layers than earlier batches.
        """
        if not gate_means:
            return
        batch_sizes = {int(gates.shape[0]) for gates in gate_means.values()}
        if len(batch_sizes) > 1:
            raise ValueError(f"gate means of one batch must share its size, got sizes {sorted(batch_sizes)}")
        if self._sums and set(gate_means) != set(self._sums):
            raise ValueError(f"gate means of layers {sorted(gate_means)}, earlier batches had {sorted(self._sums)}")
        for layer, gates in gate_means.items():
            batch_sum = gates.sum(dim=0).double().cpu()  # (steps, sources)
            self._sums[layer] = self._sums[layer] + batch_sum if layer in self._sums else batch_sum
        self._count += batch_sizes.pop()

    def merge(self, other: TransferGateMeans) -> TransferGateMeans:
        """A new accumulator holding the batches of both, as if one had been updated with the
        batches of ``self``, then those of ``other``; neither is changed.

        Raises:
            ValueError: if both hold batches of different layers.
        """
        if self._sums and other._sums and set(self._sums) != set(other._sums):
            raise ValueError(f"cannot merge gate means of layers {sorted(self._sums)} and {sorted(other._sums)}")
        merged = TransferGateMeans()
        for layer in {**self._sums, **other._sums}:
            parts = [part._sums[layer] for part in (self, other) if layer in part._sums]
            merged._sums[layer] = parts[0] + parts[1] if len(parts) == 2 else parts[0].clone()
        merged._count = self._count + other._count
        return merged

    def compute(self) -> dict[str, list[list[float]]]:
        """Layer (as a string) -> ``[[mean gate per step] per source]`` over all sequences seen;
        empty when no TMU layer was seen."""
        return {str(layer): (total / self._count).T.tolist() for layer, total in self._sums.items()}
