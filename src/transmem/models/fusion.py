"""Zoo fusion: trained backbones side by side in one wider backbone.

Given N trained members of one architecture family (same backbone, layer count, kernel,
patch and channels; hidden sizes ``k^n_l`` may differ), :func:`fuse_backbones` writes their
weights into a target :class:`~transmem.models.RecurrentPredictor` whose layer ``l`` has
``sum_n k^n_l`` channels, member ``n`` in the ``n``-th channel block of every state (H, C and
ST-LSTM's M), gate by gate:

- a convolution from member ``n``'s block of its input to member ``n``'s block of each gate
  group is member ``n``'s own convolution; every convolution between two members' blocks
  ("cross" weights) is zero; the first layer's input, the frame patches, is shared, so each
  member's block reads it with its own weights;
- the output head sums the members' heads, member ``n``'s scaled by ``head_weights[n]``:
  ``x_hat_{t+1} = sum_n w_n W^n_out H^{n,top}_t``.

With cross weights zero, block ``n`` evolves exactly as member ``n`` alone would on the same
input frames. So the fused network predicts the mix ``sum_n w_n x_hat^n``, where every member
reads the frames the fused network reads (its own mixed prediction, once it predicts). With
``w`` one-hot on member ``b`` it predicts exactly what member ``b`` predicts (every other block
reads ``x_hat^b`` too and adds nothing); with ``w_n = 1/N`` and true frames fed at every step
it predicts the mean of the members' predictions. Training then updates every block, the
head and the cross weights (which start at zero and are free to grow), so the target can
combine what the members learnt on their datasets.

Cost: a fused layer's convolutions are ``(sum_n k^n)^2`` wide, so two members of equal size
cost about 4x one member per step (3.7x for 2 x 32 ConvLSTMs on 16-channel patches).
GroupNorm normalizes across the whole layer, which would couple the blocks: only
``norm = "none"`` members can be fused.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from transmem.models.backbone import RecurrentPredictor

Segment = tuple[str, int | list[int]]  # ("shared", size) or ("blocks", [size of member n, ...])


def fused_hidden(members: Sequence[RecurrentPredictor]) -> list[int]:
    """Hidden sizes of the backbone fusing ``members``: per layer, the sum of theirs."""
    return [sum(sizes) for sizes in zip(*(m.hidden for m in members))]


def check_fusable(members: Sequence[RecurrentPredictor], target: RecurrentPredictor) -> None:
    """Raise ValueError (naming what differs) unless ``target`` can hold ``members`` side by side."""
    if not members:
        raise ValueError("fusion needs at least one member")
    first = members[0]
    for member in members:
        described = _family(member)
        if described != _family(first):
            raise ValueError(
                f"members of one fusion share (backbone, layers, kernel, patch, channels, norm): {_family(first)} vs {described}"
            )
    if _family(target) != _family(first):
        raise ValueError(
            f"the target's (backbone, layers, kernel, patch, channels, norm) {_family(target)} differ from the members' {_family(first)}"
        )
    if _norm(first) != "none":
        raise ValueError("only members with norm = 'none' can be fused (GroupNorm over a fused layer would mix the members)")
    if target.transfer_layout or any(m.transfer_layout for m in members):
        raise ValueError("fusion takes plain backbones (no TMU, distill or Knowledge Flow parts)")
    if target.hidden != fused_hidden(members):
        raise ValueError(
            f"the fused backbone needs hidden = {fused_hidden(members)} (the members' sums), the target has {target.hidden}"
        )


@torch.no_grad()
def fuse_backbones(target: RecurrentPredictor, members: Sequence[RecurrentPredictor], head_weights: Sequence[float]) -> None:
    """Overwrite every weight of ``target`` with ``members`` side by side (see the module docstring).

    Args:
        target: a plain backbone with ``hidden == fused_hidden(members)``; written in place.
        members: trained backbones of one family, ``norm = "none"``.
        head_weights: ``w_n`` per member, the scale of its output head (one-hot: predict as
            that member; ``1/N``: the members' mean).
    """
    check_fusable(members, target)
    if len(head_weights) != len(members):
        raise ValueError(f"one head weight per member: {len(members)} members, {len(head_weights)} weights")
    for parameter in target.parameters():
        parameter.zero_()
    for n, member in enumerate(members):
        for name, target_param, member_param, out_layout, in_layout in _parameter_layouts(target, member, members):
            rows_t, rows_m = block_indices(out_layout, n)
            value = member_param[rows_m]
            if in_layout is not None:
                cols_t, cols_m = block_indices(in_layout, n)
                value = value[:, cols_m]
                target_param[rows_t.unsqueeze(1), cols_t.unsqueeze(0)] = value * (
                    head_weights[n] if name == "output.weight" else 1.0
                )
            else:
                target_param[rows_t] = value


def block_indices(layout: Sequence[Segment], n: int) -> tuple[Tensor, Tensor]:
    """Indices of member ``n``'s channels along one dimension: ``(in the fused tensor, in its own)``.

    ``layout`` lists the dimension's segments in order: ``("shared", size)`` is read by every
    member at the same place (the frame patches, the output frame); ``("blocks", sizes)`` holds
    one block per member (a state or gate group of a fused layer).
    """
    fused, own = [], []
    fused_offset = own_offset = 0
    for kind, size in layout:
        if kind == "shared":
            fused.extend(range(fused_offset, fused_offset + size))
            own.extend(range(own_offset, own_offset + size))
            fused_offset += size
            own_offset += size
        else:
            start = fused_offset + sum(size[:n])
            fused.extend(range(start, start + size[n]))
            own.extend(range(own_offset, own_offset + size[n]))
            fused_offset += sum(size)
            own_offset += size[n]
    return torch.tensor(fused, dtype=torch.long), torch.tensor(own, dtype=torch.long)


def _parameter_layouts(target: RecurrentPredictor, member: RecurrentPredictor, members: Sequence[RecurrentPredictor]):
    """``(name, fused tensor, member tensor, output-channel layout, input-channel layout | None)``
    for every parameter; every parameter of the fused backbone is listed exactly once."""
    patch_channels = target.channels * target.patch**2
    hidden = [[m.hidden[layer] for m in members] for layer in range(len(target.hidden))]
    member_params = dict(member.named_parameters())
    listed = []
    for layer in range(len(target.hidden)):
        state = ("blocks", hidden[layer])
        below = ("shared", patch_channels) if layer == 0 else ("blocks", hidden[layer - 1])
        for conv, groups, inputs in _cell_convolutions(target, layer, state, below):
            listed.append((f"cells.{layer}.{conv}.weight", [state] * groups, inputs))
            listed.append((f"cells.{layer}.{conv}.bias", [state] * groups, None))
        if target.adapters is not None:
            listed.append((f"adapters.{layer}.weight", [state], [state]))
    listed.append(("output.weight", [("shared", patch_channels)], [("blocks", hidden[-1])]))
    target_params = dict(target.named_parameters())
    present = [(name, out, inp) for name, out, inp in listed if name in target_params]
    missing = set(target_params) - {name for name, _, _ in present}
    if missing:  # a parameter this module does not know how to fuse: refuse rather than leave it zero
        raise ValueError(f"fusion does not know how to fuse {sorted(missing)}")
    return [(name, target_params[name], member_params[name], out, inp) for name, out, inp in present]


def _cell_convolutions(target: RecurrentPredictor, layer: int, state: Segment, below: Segment):
    """``(convolution name, gate groups, input layout)`` of one cell (see models/cells.py)."""
    cell = target.cells[layer]
    if not cell.has_spatial_memory:  # ConvLSTM: gates i, f, g, o from [x, H]
        return [("gate_conv", 4, [below, state])]
    return [  # ST-LSTM
        ("conv_x", 7, [below]),
        ("conv_h", 4, [state]),
        ("conv_m", 3, [state]),
        ("conv_o", 1, [state, state]),
        ("conv_last", 1, [state, state]),
    ]


def _norm(model: RecurrentPredictor) -> str:
    return "group" if any(isinstance(m, nn.GroupNorm) for m in model.modules()) else "none"


def _kernel(model: RecurrentPredictor) -> int:
    conv = next(m for m in model.cells[0].modules() if isinstance(m, nn.Conv2d))
    return conv.kernel_size[0]


def _family(model: RecurrentPredictor) -> tuple:
    return (model.backbone, len(model.hidden), _kernel(model), model.patch, model.channels, _norm(model))
