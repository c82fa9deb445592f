"""Knowledge Flow (Liu et al., ICLR 2019) adapted to recurrent predictors.

In Knowledge Flow, teacher features are added into the student's layers with learned
weights, and the teachers' weights are driven to zero over training so the student
predicts alone at the end. For a recurrent target layer ``l`` at step ``t``, with the
target's hidden state ``H_t`` and the teachers' hidden states ``H^n_t`` of the same layer
(read from the same sequence)::

    w = softmax(flow_logits)                    # N + 1 learned weights, w_0 for the target
    a^n = scale * w_n                           # teacher weights, scale: 1 -> 0 over training
    H~_t = (1 - sum_n a^n) H_t + sum_n a^n Q^n(H^n_t)

``Q^n`` is a learned 1x1 convolution (then bilinear interpolation if sizes differ) from
teacher n's channels to the target's. ``H~_t`` replaces ``H_t`` as the layer's output and
recurrent state. ``scale`` is set by the training method (linear decay to 0 at a fraction
of training), replacing the paper's growing penalty on the teacher weights with a schedule
that reaches exactly zero: after it, and at test time, the layer is the plain backbone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class KnowledgeFlowMixer(nn.Module):
    """Mix teachers' hidden states into one target layer's hidden state.

    Args:
        hidden_channels: channels of the target layer.
        teacher_channels: channels of each teacher's hidden state at that layer.
    """

    def __init__(self, hidden_channels: int, teacher_channels: list[int]) -> None:
        super().__init__()
        if not teacher_channels:
            raise ValueError("KnowledgeFlowMixer needs at least one teacher")
        self.adapters = nn.ModuleList(nn.Conv2d(c, hidden_channels, kernel_size=1, bias=False) for c in teacher_channels)
        self.flow_logits = nn.Parameter(torch.zeros(len(teacher_channels) + 1))

    def teacher_weights(self, scale: float) -> Tensor:
        """``a^n``, shape ``(N,)``."""
        return torch.softmax(self.flow_logits, dim=0)[1:] * scale

    def forward(self, hidden: Tensor, teachers: list[Tensor], scale: float) -> Tensor:
        """``hidden`` ``(B, C, h, w)``; ``teachers[n]`` ``(B, c_n, h_n, w_n)``; returns ``(B, C, h, w)``."""
        weights = self.teacher_weights(scale)
        mixed = (1.0 - weights.sum()) * hidden
        for n, (adapter, teacher) in enumerate(zip(self.adapters, teachers)):
            projected = adapter(teacher)
            if projected.shape[-2:] != hidden.shape[-2:]:
                projected = F.interpolate(projected, size=hidden.shape[-2:], mode="bilinear", align_corners=False)
            mixed = mixed + weights[n] * projected
        return mixed
