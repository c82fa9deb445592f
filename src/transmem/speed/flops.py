"""FLOP counting for ``transmem speed``: the convolutions of one training step and their FLOPs.

The convolutions are read from the built models (gate convolutions, TMU distillers, output
layer), each with how often a training step runs it and whether it is trained (forward +
backward) or frozen (forward only). ``transmem speed`` divides these FLOPs by measured times
to report GFLOP/s.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from transmem.models import build_predictor
from transmem.speed.configs import NUM_SOURCES, SpeedConfig, tmu_layout


def conv_flops(in_channels: int, out_channels: int, kernel: int, height: int, width: int, batch: int = 1) -> int:
    """Forward FLOPs of one 2-D convolution (stride 1, same padding): ``2 Cin Cout k^2 H W B``.

    Multiply and add count as two operations; the bias is not counted. The backward pass
    (gradients of the input and of the weights) costs about twice this.
    """
    return 2 * in_channels * out_channels * kernel * kernel * height * width * batch


@dataclass(frozen=True)
class ConvShape:
    """One convolution run ``count`` times per training step, with or without its backward."""

    name: str
    in_channels: int
    out_channels: int
    kernel: int
    count: int  # calls per training step
    backward: bool  # trained (forward + backward) or frozen (forward only)

    def flops(self, batch: int, height: int, width: int) -> int:
        forward = conv_flops(self.in_channels, self.out_channels, self.kernel, height, width, batch)
        return self.count * forward * (3 if self.backward else 1)


def _conv_module(module: torch.nn.Module) -> torch.nn.Conv2d:
    """``module`` itself if it is a Conv2d, else its first Conv2d."""
    return module if isinstance(module, torch.nn.Conv2d) else next(m for m in module.modules() if isinstance(m, torch.nn.Conv2d))


def model_convs(model, steps: int, backward: bool, prefix: str = "") -> list[ConvShape]:
    """The convolutions of a ConvLSTM/TMU predictor rolled over ``steps`` steps."""
    shapes = []
    for layer, cell in enumerate(model.cells):
        conv = _conv_module(cell.gate_conv)
        shapes.append(
            ConvShape(f"{prefix}layer {layer} gates", conv.in_channels, conv.out_channels, conv.kernel_size[0], steps, backward)
        )
        if cell.transfer is not None:
            # the N distillers run as one 1x1 convolution with N * hidden outputs
            hidden = cell.transfer.hidden_channels
            n = cell.transfer.num_sources
            shapes.append(ConvShape(f"{prefix}layer {layer} distillers", hidden, n * hidden, 1, steps, backward))
    out = model.output
    shapes.append(ConvShape(f"{prefix}output", out.in_channels, out.out_channels, 1, steps, backward))
    return shapes


def step_convs(spec: SpeedConfig, variant: str) -> list[ConvShape]:
    """Every convolution of one training step of ``variant`` (plain, live or cached).

    The target's convolutions run forward and backward at each of the T - 1 steps; a live
    bank adds each source's forward pass over the same T - 1 steps.
    """
    config = spec.run_config()
    steps = spec.total_len - 1
    target = build_predictor(config.model, spec.channels, None if variant == "plain" else tmu_layout(spec), spec.frame_size)
    shapes = model_convs(target, steps, backward=True)
    if variant == "live":
        source = build_predictor(config.model, spec.channels, None, spec.frame_size)
        for n in range(NUM_SOURCES):
            shapes += model_convs(source, steps, backward=False, prefix=f"source {n} ")
    return shapes


def total_flops(spec: SpeedConfig, shapes: list[ConvShape]) -> int:
    """FLOPs of ``shapes`` at ``spec``'s batch and patched frame side (frame_size / patch)."""
    side = spec.frame_size // spec.patch
    return sum(s.flops(spec.batch, side, side) for s in shapes)
