"""How large a trained network's cell memories get along a sequence (``transmem inspect``).

A ConvLSTM's memory ``C_t = f C_{t-1} + i g`` stays bounded when the forget gate is below 1.
The TMU's ``C_t = C'_t + sum_n M^n_t`` adds N gated copies of the memory to itself at every
step, so it can grow geometrically and saturate ``H_t = o tanh(C'_t)``. This module measures
it on real sequences, the way the model predicts at test time (true frames for the first
``input_len`` steps, its own predictions afterwards).
"""

from __future__ import annotations

import torch
from torch import Tensor

from transmem.models import RecurrentPredictor, rollout_mask


@torch.no_grad()
def memory_scale(model: RecurrentPredictor, frames: Tensor, input_len: int) -> dict[int, dict[str, list]]:
    """Per layer and step, the root mean square of the cell memory; per TMU layer, the gates.

    Args:
        model: a trained predictor (any backbone; ST-LSTM layers report the temporal memory C).
        frames: ``(B, T, C, H, W)`` in [0, 1]; frames after ``input_len`` are only compared
            against, never fed.
        input_len: number of observed frames.

    Returns:
        ``{layer: {"memory_rms": [T-1 floats], "gate_means": [[N floats] per step] (TMU layers)}}``,
        where ``memory_rms[t]`` is ``sqrt(mean(C_{t+1}^2))`` over sequences, channels and pixels.
    """
    batch, total = frames.shape[:2]
    if not 1 <= input_len < total:
        raise ValueError(f"input_len must be in [1, {total - 1}], got {input_len}")
    layers = list(range(len(model.hidden)))
    mask = rollout_mask(batch, total, input_len, frames.device)
    rollout = model(frames, mask, record_layers=layers)
    result = {}
    for layer in layers:
        memory = rollout.memories[layer].double()  # (B, T-1, hidden, h, w)
        entry: dict[str, list] = {"memory_rms": memory.pow(2).mean(dim=(0, 2, 3, 4)).sqrt().tolist()}
        if layer in rollout.gate_means:
            entry["gate_means"] = rollout.gate_means[layer].double().mean(dim=0).tolist()  # (T-1, N)
        result[layer] = entry
    return result


def format_memory_scale(scale: dict[int, dict[str, list]], sources: list[str] | None = None) -> str:
    """A plain-text table: one row per layer (memory RMS per step), one per TMU gate."""
    lines = []
    steps = len(next(iter(scale.values()))["memory_rms"])
    lines.append(f"{'':22s}" + "".join(f"{t + 1:>9d}" for t in range(steps)))
    for layer, entry in scale.items():
        lines.append(f"{f'layer {layer} memory rms':22s}" + "".join(f"{v:9.3g}" for v in entry["memory_rms"]))
        for n, gates in enumerate(zip(*entry.get("gate_means", []))):
            name = sources[n] if sources and n < len(sources) else f"source {n + 1}"
            lines.append(f"{f'  gate {name}'[:22]:22s}" + "".join(f"{v:9.3f}" for v in gates))
    return "\n".join(lines)
