"""The Transferable Memory Unit's memory transfer (Yao et al., ICML 2020).

Given a recurrent cell's *candidate memory* ``C'_t`` and one transfer-gate pre-activation
``s^n`` per source (produced by the cell's own gate convolution), this module computes,
for N sources (METHOD.md, steps 3-5)::

    D^n_t = Norm(W^n * C'_t)                       # distiller n: 1x1 conv (no bias) + GroupNorm(1)
    T^n_t = sigmoid(s^n)                           # transfer gate n
    M^n_t = T^n_t * D^n_t + (1 - T^n_t) * C'_t     # mixed memory
    C_t   = C'_t + sum_n M^n_t                     # memory carried to the next step ("sum")
    C_t   = (C'_t + sum_n M^n_t) / (N + 1)         # or, with merge="mean", their mean
    C_t   = C'_t + sum_n a^n * T^n_t * (D^n_t - C'_t) / (N + 1)   # or, with merge="residual"

``D^n_t`` is the target's reconstruction of source n's memory; the distillation loss
(computed by the training code, never here) compares ``project(D^n_t)`` with the frozen
source's memory. ``project`` is the identity for a source with the target's channel count
and spatial size, else a learned 1x1 projection followed by bilinear interpolation.

``merge="sum"`` is the method as stated and released. Each step then adds N gated copies of
the memory to itself, so ``C_t`` can grow geometrically over the sequence (by about
``(1 + sum_n (1 - T^n)) * f`` per step) and saturate ``tanh(C_t)``; ``merge="mean"`` makes
``C_t`` a convex combination of ``C'_t`` and the (normalized) distilled memories instead.

``merge="residual"`` is the mean merge written as a correction of ``C'_t`` (the mean merge
equals ``C'_t + sum_n T^n (D^n - C'_t) / (N + 1)``), scaled by a learned per-source,
per-channel ``a^n`` that starts at zero. At initialisation ``C_t = C'_t`` exactly, so a
target whose backbone was copied from a source predicts exactly what the source predicts
(``transfer.init_from``); the transfer then grows only as far as training finds it useful
(``a^n = 1`` is the mean merge). Its transfer-gate pre-activations come from a convolution
of their own (built by the cell, :attr:`separate_gate_groups`), so the cell's gate
convolution keeps the source's shape and normalization.

With ``use_gates=False`` (the ``distill`` ablation) the distillers are side branches only:
``C_t = C'_t`` and the distillers are trained by the hint loss alone.

With ``hint_to_backbone=False`` the distillers read a detached ``C'_t``: the distillation
loss then trains the distillers (and projections) only, never the cell that produced the
memory, so it cannot pull a source-initialised backbone away from its starting point.

Norm (``distiller_norm``): ``"group"``, GroupNorm with one group, normalizes over (C, h, w)
like the authors' LayerNorm but its affine weights are per channel, so the unit works at any
frame size; ``"layer"`` is the release's ``LayerNorm([C, h, w])`` with per-element affine
weights, built for one state size ``size = (h, w)`` (``model.norm = "release"``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transmem.schema import MEMORY_MERGES  # how C_t is formed from C'_t and the mixed memories


class TransferableMemory(nn.Module):
    """Distillers, transfer gates and memory mixing for ``num_sources`` sources.

    Args:
        hidden_channels: channels of the target cell memory.
        source_channels: channels of each source's memory (one entry per source).
        source_sizes: spatial size ``(h, w)`` of each source's memory, or None for "same as
            the target's" (then no interpolation).
        use_gates: False for the distillation-only ablation (no transfer gates, C_t = C'_t).
        merge: ``"sum"`` (C_t = C'_t + sum_n M^n_t), ``"mean"`` (that sum over N + 1) or
            ``"residual"`` (the mean merge's correction of C'_t scaled by a zero-initialised a^n).
        hint_to_backbone: False detaches C'_t at the distillers' input (see the module doc).
        distiller_norm: ``"group"`` (GroupNorm(1, C)) or ``"layer"`` (the release's
            ``LayerNorm([C, h, w])``, which needs ``size``).
        size: the state size ``(h, w)`` of the target cell (``distiller_norm = "layer"``).
    """

    def __init__(
        self,
        hidden_channels: int,
        source_channels: list[int],
        source_sizes: list[tuple[int, int] | None] | None = None,
        use_gates: bool = True,
        merge: str = "sum",
        hint_to_backbone: bool = True,
        distiller_norm: str = "group",
        size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        if not source_channels:
            raise ValueError("TransferableMemory needs at least one source")
        if merge not in MEMORY_MERGES:
            raise ValueError(f"merge must be one of {MEMORY_MERGES}, got {merge!r}")
        if distiller_norm not in ("group", "layer") or (distiller_norm == "layer" and size is None):
            raise ValueError(f"distiller_norm must be 'group', or 'layer' with a size (h, w), got {distiller_norm!r}")
        self.distiller_norm = distiller_norm
        self.merge = merge
        self.hint_to_backbone = hint_to_backbone
        self.hidden_channels = hidden_channels
        self.num_sources = len(source_channels)
        self.use_gates = use_gates
        self.source_channels = list(source_channels)
        self.source_sizes = list(source_sizes) if source_sizes else [None] * self.num_sources
        self.distillers = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(hidden_channels, hidden_channels, kernel_size=1, bias=False),
                nn.GroupNorm(1, hidden_channels) if distiller_norm == "group" else nn.LayerNorm([hidden_channels, *size]),
            )
            for _ in source_channels
        )
        self.projections = nn.ModuleList(
            nn.Identity() if channels == hidden_channels else nn.Conv2d(hidden_channels, channels, 1, bias=False)
            for channels in source_channels
        )
        if merge == "residual" and use_gates:
            # a^n: (N, hidden, 1, 1), zero at initialisation (C_t = C'_t), one = the mean merge
            self.transfer_scale = nn.Parameter(torch.zeros(self.num_sources, hidden_channels, 1, 1))

    @property
    def gate_groups(self) -> int:
        """Number of extra gate groups the cell's own gate convolution must produce."""
        return self.num_sources if self.use_gates and self.merge != "residual" else 0

    @property
    def separate_gate_groups(self) -> int:
        """Gate groups of the separate transfer-gate convolution (``residual`` merge), else 0."""
        return self.num_sources if self.use_gates and self.merge == "residual" else 0

    def forward(self, candidate: Tensor, gate_preactivation: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
        """One step of memory transfer.

        Args:
            candidate: ``C'_t``, shape ``(B, hidden, h, w)``.
            gate_preactivation: ``s``, shape ``(B, N * hidden, h, w)`` (None without gates).

        Returns:
            memory: ``C_t`` carried to the next step, ``(B, hidden, h, w)``.
            distilled: ``D_t`` for every source, ``(B, N, hidden, h, w)``.
            gate_means: mean transfer gate per source, ``(B, N)`` (None without gates); for
                the residual merge the effective gate ``a^n T^n``.
        """
        distilled = self.distill(candidate if self.hint_to_backbone else candidate.detach())
        if not self.use_gates:
            return candidate, distilled, None
        batch = candidate.shape[0]
        gates = torch.sigmoid(gate_preactivation).view(batch, self.num_sources, *candidate.shape[1:])
        if self.merge == "residual":
            gates = self.transfer_scale * gates  # a^n T^n: what the memory takes from source n
            memory = candidate + (gates * (distilled - candidate.unsqueeze(1))).sum(dim=1) / (self.num_sources + 1)
        else:
            mixed = gates * distilled + (1.0 - gates) * candidate.unsqueeze(1)
            memory = candidate + mixed.sum(dim=1)
            if self.merge == "mean":
                memory = memory / (self.num_sources + 1)
        return memory, distilled, gates.mean(dim=(2, 3, 4))

    def distill(self, candidate: Tensor) -> Tensor:
        """``D^n_t`` for every source, ``(B, N, hidden, h, w)``.

        The N distillers run as one 1x1 convolution (their weights stacked) followed by one
        GroupNorm with N groups, which normalizes each source's block exactly like N
        separate GroupNorm(1) layers. LayerNorm distillers (per-element affine weights) run
        one by one, as the release runs them.
        """
        if self.distiller_norm == "layer":
            return torch.stack([distiller(candidate) for distiller in self.distillers], dim=1)
        convs = [distiller[0] for distiller in self.distillers]
        norms = [distiller[1] for distiller in self.distillers]
        weight = torch.cat([conv.weight for conv in convs]) if self.num_sources > 1 else convs[0].weight
        out = F.conv2d(candidate, weight)
        if self.num_sources > 1:
            affine = torch.cat([n.weight for n in norms]), torch.cat([n.bias for n in norms])
        else:
            affine = norms[0].weight, norms[0].bias
        out = F.group_norm(out, self.num_sources, *affine, norms[0].eps)
        return out.view(candidate.shape[0], self.num_sources, *candidate.shape[1:])

    def project(self, distilled: Tensor, source: int) -> Tensor:
        """Map distilled memories of one source into that source's memory layout.

        Args:
            distilled: ``(..., hidden, h, w)`` (any leading dims, e.g. batch and time).
            source: index of the source.

        Returns:
            ``(..., source_channels, source_h, source_w)``.
        """
        lead = distilled.shape[:-3]
        flat = distilled.reshape(-1, *distilled.shape[-3:])
        flat = self.projections[source](flat)
        size = self.source_sizes[source]
        if size is not None and tuple(flat.shape[-2:]) != tuple(size):
            flat = F.interpolate(flat, size=tuple(size), mode="bilinear", align_corners=False)
        return flat.reshape(*lead, *flat.shape[-3:])
