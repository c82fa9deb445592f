"""The authors' release (thuml/transferable-memory) in transmem's terms: its weights and masks.

The release's networks are ``core/models/convlstm.py`` (a ConvLSTM stack) and
``core/models/adaptive_model.py`` (the same stack whose first layer is the TMU cell of
``core/layers/AdaptiveCell.py``). Their state dicts map onto a :class:`RecurrentPredictor`
of backbone ``convlstm`` (``norm = "release"`` for the TMU) as follows:

- keys: ``cell_list.{l}.conv.0`` -> ``cells.{l}.gate_conv`` (``.0`` when followed by a norm),
  ``cell_list.{l}.conv.1`` (LayerNorm) -> ``cells.{l}.gate_conv.1``,
  ``cell_list.{l}.distiller{n+1}.{0,1}`` -> ``cells.{l}.transfer.distillers.{n}.{0,1}``,
  ``conv_last`` -> ``output``;
- gate groups: the release orders them ``i, f, o, g`` (then ``s^1, s^2``), transmem
  ``i, f, g, o`` (then ``s^1 .. s^N``): the rows of a gate convolution and of its LayerNorm
  are permuted by group ``[0, 1, 3, 2, 4, ...]``;
- forget bias: the release adds none; a transmem model adds ``forget_bias`` to ``z_f``, so
  the f rows of the last bias before the gate (the LayerNorm's where there is one, else the
  convolution's) lose ``forget_bias``: the loaded model computes the release's function;
- patches: the release's ``reshape_patch`` orders a patch's channels ``(py p + px) C + c``,
  ``pixel_unshuffle`` ``c p^2 + py p + px`` (the same for C = 1): the first layer's input
  columns and the output rows are permuted accordingly.

Its scheduled-sampling mask ``(B, T - T_in - 1, ...)`` covers the predicted steps t >= T_in
only; :func:`release_teacher_mask` makes transmem's ``(B, T - 2)`` teacher mask of it.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from transmem.models.backbone import RecurrentPredictor

RELEASE_GATES = ("i", "f", "o", "g")  # the release's gate groups, then one transfer gate per source
TRANSMEM_GATES = ("i", "f", "g", "o")


def release_state_to_transmem(
    model: RecurrentPredictor, state: Mapping[str, Tensor], gradients: bool = False
) -> dict[str, Tensor]:
    """``model``'s state dict holding the release's ``state`` (a ``convlstm.RNN`` or
    ``adaptive_model.RNN`` state dict), mapped as the module docstring says.

    ``gradients=True`` maps gradients (or any difference of weights) the same way but
    without the forget-bias shift. ValueError if ``model`` is not a ConvLSTM stack of the
    release's structure (a TMU layer needs ``norm = "release"``) or a key is left over.
    """
    if model.backbone != "convlstm":
        raise ValueError(f"the release's networks are ConvLSTM stacks, not {model.backbone!r}")
    source = {key: value.detach() for key, value in state.items()}
    mapped = {}
    for layer, cell in enumerate(model.cells):
        if cell.transfer is not None and model.norm != "release":
            raise ValueError(f"layer {layer} is a TMU layer: the release's TMU loads into a model with norm = 'release'")
        mapped.update(_cell_state(model, layer, source, 0.0 if gradients else model.forget_bias))
    mapped["output.weight"] = _patch_order(source.pop("conv_last.weight"), model.channels, model.patch, dim=0)
    if source:
        raise ValueError(f"release keys with no place in the model: {', '.join(sorted(source))}")
    return mapped


def _cell_state(model: RecurrentPredictor, layer: int, source: dict[str, Tensor], forget_bias: float) -> dict[str, Tensor]:
    """The transmem tensors of cell ``layer``, popped from the release's ``source``."""
    cell, ours, theirs = model.cells[layer], f"cells.{layer}.", f"cell_list.{layer}."
    normed = isinstance(cell.gate_conv, nn.Sequential)
    conv = ours + ("gate_conv.0." if normed else "gate_conv.")
    hidden = cell.hidden_channels
    weight = _gate_order(source.pop(theirs + "conv.0.weight"), hidden)
    if layer == 0:
        weight = torch.cat([_patch_order(weight[:, :-hidden], model.channels, model.patch, dim=1), weight[:, -hidden:]], dim=1)
    out = {conv + "weight": weight, conv + "bias": _gate_order(source.pop(theirs + "conv.0.bias"), hidden)}
    if normed:
        out[ours + "gate_conv.1.weight"] = _gate_order(source.pop(theirs + "conv.1.weight"), hidden)
        out[ours + "gate_conv.1.bias"] = _gate_order(source.pop(theirs + "conv.1.bias"), hidden)
    last_bias = ours + ("gate_conv.1.bias" if normed else "gate_conv.bias")
    out[last_bias] = out[last_bias].clone()
    out[last_bias][hidden : 2 * hidden] -= forget_bias  # TRANSMEM_GATES.index("f") == 1
    for n in range(cell.transfer.num_sources if cell.transfer is not None else 0):
        for part in ("0.weight", "1.weight", "1.bias"):
            out[f"{ours}transfer.distillers.{n}.{part}"] = source.pop(f"{theirs}distiller{n + 1}.{part}")
    return out


def _gate_order(tensor: Tensor, hidden: int) -> Tensor:
    """Rows (dim 0) in groups of ``hidden`` from the release's order ``i, f, o, g, s^n..``
    to transmem's ``i, f, g, o, s^n..``."""
    groups = list(tensor.split(hidden, dim=0))
    return torch.cat([groups[0], groups[1], groups[3], groups[2], *groups[4:]], dim=0)


def _patch_order(tensor: Tensor, channels: int, patch: int, dim: int) -> Tensor:
    """Patch channels along ``dim`` from the release's ``(py p + px) C + c`` to
    ``pixel_unshuffle``'s ``c p^2 + py p + px``."""
    cells = patch * patch
    release_index = torch.tensor([k * channels + c for c in range(channels) for k in range(cells)])
    return tensor.index_select(dim, release_index)


def load_release_state(model: RecurrentPredictor, state: Mapping[str, Tensor]) -> None:
    """Load the release's ``state`` into ``model`` (:func:`release_state_to_transmem`)."""
    with torch.no_grad():
        model.load_state_dict(release_state_to_transmem(model, state))


def release_teacher_mask(mask: Tensor, input_len: int) -> Tensor:
    """transmem's ``(B, T-2)`` teacher mask from the release's scheduled-sampling mask
    ``(B, T - T_in - 1, ...)`` (1: the true frame at step ``T_in + j``; trailing dims, the
    release's patch shape, are constant and read at index 0): truth at the input steps
    ``1 .. T_in - 1``, then the release's choice."""
    chosen = mask.reshape(*mask.shape[:2], -1)[..., 0] > 0.5
    return torch.cat([chosen.new_ones(mask.shape[0], input_len - 1), chosen], dim=1)
