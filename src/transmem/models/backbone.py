"""Stacked convolutional recurrent predictors (ConvLSTM, PredRNN, PredRNN-V2).

Frames ``(B, T, C, H, W)`` are patchified with ``pixel_unshuffle`` (patch p: C x H x W ->
C p^2 x H/p x W/p), run through a stack of recurrent cells, and the top hidden state is
mapped back to a frame by a 1x1 convolution and ``pixel_shuffle``.

Rolling out a sequence of T frames takes T - 1 steps. Step t reads an input frame and
predicts frame t + 1. Step 0 reads the true first frame; step t >= 1 reads either the true
frame t or the model's own prediction of it, chosen per sequence by ``teacher_mask[:, t-1]``
(True = truth). This single mechanism covers PredRNN's scheduled sampling, PredRNN-V2's
reverse scheduled sampling, test-time rollout and the full teacher forcing used when a
frozen source reads the true frames (``teacher_mask=None``).

The loss is never computed here: :meth:`RecurrentPredictor.forward` returns a
:class:`Rollout` with the predictions and whatever states the caller asked for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TypedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transmem.models.cells import CELLS
from transmem.models.knowledge_flow import KnowledgeFlowMixer
from transmem.models.tmu import TransferableMemory


class LayerLayout(TypedDict, total=False):
    """What one transfer layer of a target holds (see :class:`RecurrentPredictor`)."""

    kind: str  # "tmu" (the default when absent) | "kflow"
    source_channels: list[int]  # each source's memory (tmu) or hidden (kflow) channels
    source_sizes: list[list[int] | None]  # each source's memory size [h, w]; None: the target's
    use_gates: bool  # tmu: False is the distill ablation
    merge: str  # tmu: "sum" | "mean" | "residual"
    hint_to_backbone: bool  # tmu: recorded only when False


#: ``{layer: LayerLayout}``: the transfer parts of a target's architecture, stored as JSON with
#: its weights (:func:`layout_to_json`) so it can be rebuilt with no source present.
TransferLayout = dict[int, LayerLayout]


def layout_to_json(layout: TransferLayout) -> str:
    """The layout as stored in model files and checkpoints (layer keys as strings)."""
    return json.dumps({str(k): v for k, v in layout.items()})


def layout_from_json(text: str) -> TransferLayout:
    """The layout stored by :func:`layout_to_json` (``""``: none)."""
    return {int(k): v for k, v in json.loads(text or "{}").items()}


@dataclass(frozen=True)
class BackboneSpec:
    cell: str  # key of CELLS
    decoupling: bool  # PredRNN-V2 memory-decoupling adapters
    description: str


BACKBONES: dict[str, BackboneSpec] = {
    "convlstm": BackboneSpec("convlstm", False, "ConvLSTM (Shi et al. 2015)"),
    "predrnn": BackboneSpec("stlstm", False, "PredRNN, ST-LSTM (Wang et al. 2017)"),
    "predrnn_v2": BackboneSpec("stlstm", True, "PredRNN-V2: ST-LSTM + memory decoupling (Wang et al. 2022)"),
}


@dataclass
class Rollout:
    """Result of rolling a predictor over a sequence of T frames (T - 1 steps)."""

    predictions: Tensor  # (B, T-1, C, H, W): predictions of frames 1 .. T-1
    inputs: Tensor | None = None  # (B, T-1, C, H, W): frames fed at steps 0 .. T-2
    memories: dict[int, Tensor] = field(default_factory=dict)  # layer -> (B, T-1, hidden, h, w), C_t
    hiddens: dict[int, Tensor] = field(default_factory=dict)  # layer -> (B, T-1, hidden, h, w), H_t
    distilled: dict[int, Tensor] = field(default_factory=dict)  # TMU layer -> (B, T-1, N, hidden, h, w)
    gate_means: dict[int, Tensor] = field(default_factory=dict)  # TMU layer -> (B, T-1, N)
    decoupling: list[tuple[Tensor, Tensor]] = field(default_factory=list)  # (adapted delta C, delta M)


def patchify(frames: Tensor, patch: int, memory_format: torch.memory_format = torch.contiguous_format) -> Tensor:
    """``(B, T, C, H, W)`` -> ``(B, T, C p^2, H/p, W/p)`` (space-to-depth). With
    ``memory_format=torch.channels_last`` every frame ``[:, t]`` has channels-last strides (a
    strided view: :class:`RecurrentPredictor` copies each frame it feeds into a dense one)."""
    b, t = frames.shape[:2]
    flat = F.pixel_unshuffle(frames.reshape(b * t, *frames.shape[2:]), patch).contiguous(memory_format=memory_format)
    return flat.view(b, t, *flat.shape[1:])


def unpatchify(patches: Tensor, patch: int) -> Tensor:
    """Inverse of :func:`patchify`: ``(B, T, C p^2, h, w)`` -> ``(B, T, C, h p, w p)``."""
    b, t = patches.shape[:2]
    flat = F.pixel_shuffle(patches.reshape(b * t, *patches.shape[2:]), patch)
    return flat.reshape(b, t, *flat.shape[1:])


def rollout_mask(batch: int, total_len: int, input_len: int, device: torch.device | str = "cpu") -> Tensor:
    """Test-time teacher mask ``(B, T-2)``: truth for the input frames, own predictions after."""
    steps = torch.arange(1, total_len - 1, device=device)
    return (steps < input_len).unsqueeze(0).expand(batch, -1)


class RecurrentPredictor(nn.Module):
    """A stack of recurrent cells predicting the next frame.

    Args:
        backbone: key of :data:`BACKBONES`.
        channels: frame channels C.
        hidden: channels of each layer's state.
        kernel: convolution kernel size (odd).
        patch: patch size p (frame size must be divisible by it).
        norm: ``"none"`` or ``"group"`` (GroupNorm(1, C) after convolutions; any frame size).
        transfer_layout: for a transfer target, ``{layer: {"kind": "tmu" | "kflow",
            "source_channels": [...], "source_sizes": [[h, w] | None, ...], "use_gates": bool,
            "merge": "sum" | "mean" | "residual", "hint_to_backbone": bool}}``:
            ``tmu`` layers get a :class:`TransferableMemory` (``use_gates = False``: the
            distill ablation), ``kflow`` layers a :class:`KnowledgeFlowMixer`. Plain JSON so
            the architecture can be rebuilt from a checkpoint with no source present.
    """

    def __init__(
        self,
        backbone: str = "convlstm",
        channels: int = 1,
        hidden: list[int] | tuple[int, ...] = (32, 32),
        kernel: int = 3,
        patch: int = 4,
        norm: str = "none",
        transfer_layout: TransferLayout | None = None,
    ) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}; known: {', '.join(BACKBONES)}")
        spec = BACKBONES[backbone]
        self.backbone = backbone
        self.channels = channels
        self.hidden = list(hidden)
        self.patch = patch
        self.transfer_layout = {int(k): v for k, v in (transfer_layout or {}).items()}
        for layer in self.transfer_layout:
            if not 0 <= layer < len(self.hidden):
                raise ValueError(f"transfer layer {layer} does not exist (model has {len(self.hidden)} layers)")
        cell_type = CELLS[spec.cell]
        self.has_spatial_memory = cell_type.has_spatial_memory
        if self.has_spatial_memory and len(set(self.hidden)) != 1:
            raise ValueError(f"{backbone}: ST-LSTM layers share the spatiotemporal memory, so all hidden sizes must be equal")
        patch_channels = channels * patch * patch
        cells = []
        self.flow = nn.ModuleDict()
        for layer, hidden_channels in enumerate(self.hidden):
            in_channels = patch_channels if layer == 0 else self.hidden[layer - 1]
            transfer = None
            layout = self.transfer_layout.get(layer)
            if layout is not None and layout.get("kind", "tmu") == "kflow":
                self.flow[str(layer)] = KnowledgeFlowMixer(hidden_channels, list(layout["source_channels"]))
            elif layout is not None:
                sizes = [tuple(s) if s is not None else None for s in layout.get("source_sizes") or []]
                transfer = TransferableMemory(
                    hidden_channels,
                    list(layout["source_channels"]),
                    sizes or None,
                    layout.get("use_gates", True),
                    layout.get("merge", "sum"),
                    layout.get("hint_to_backbone", True),
                )
            cells.append(cell_type(in_channels, hidden_channels, kernel, norm, transfer))
        self.cells = nn.ModuleList(cells)
        self.output = nn.Conv2d(self.hidden[-1], patch_channels, kernel_size=1, bias=False)
        self.adapters = (
            nn.ModuleList(nn.Conv2d(h, h, kernel_size=1, bias=False) for h in self.hidden) if spec.decoupling else None
        )
        # The layout of every 4-D tensor of a rollout: its frames, states and (after
        # :meth:`use_channels_last`) convolution weights. Not part of the state dict.
        self.memory_format = torch.contiguous_format

    def use_channels_last(self) -> RecurrentPredictor:
        """Store the weights and run every rollout channels-last (NHWC), the layout cuDNN's
        fast convolutions use on tensor-core GPUs (``train.channels_last``). The same
        arithmetic: predictions agree with the default layout to float rounding."""
        self.to(memory_format=torch.channels_last)
        self.memory_format = torch.channels_last
        return self

    @property
    def uses_decoupling(self) -> bool:
        return self.adapters is not None

    def transfer_unit(self, layer: int) -> TransferableMemory:
        return self.cells[layer].transfer

    @property
    def memory_transfer_layers(self) -> list[int]:
        """Layers with a :class:`TransferableMemory` (TMU or distill)."""
        return [layer for layer, cell in enumerate(self.cells) if cell.transfer is not None]

    def forward(
        self,
        frames: Tensor,
        teacher_mask: Tensor | None = None,
        *,
        record_layers: tuple[int, ...] | list[int] = (),
        return_inputs: bool = False,
        collect_decoupling: bool = False,
        teacher_hidden: dict[int, list[Tensor]] | None = None,
        flow_scale: float = 0.0,
    ) -> Rollout:
        """Roll the predictor over ``frames``.

        Args:
            frames: ``(B, T, C, H, W)`` float in [0, 1]; frames that the mask never feeds
                (e.g. the future at test time) may hold anything finite.
            teacher_mask: ``(B, T-2)`` bool; ``teacher_mask[:, t-1]`` True feeds the true
                frame t at step t, False the model's own prediction. None: always truth.
            record_layers: layers whose cell memory ``C_t`` and hidden state ``H_t`` are
                returned in ``memories`` and ``hiddens``.
            return_inputs: also return the frames actually fed (for a live memory bank).
            collect_decoupling: return PredRNN-V2's adapted memory increments.
            teacher_hidden: Knowledge Flow only, ``{layer: [(B, T-1, c_n, h_n, w_n) per
                teacher]}``: teachers' hidden states mixed into the ``kflow`` layers.
            flow_scale: Knowledge Flow teacher-weight scale in [0, 1] (0: no teacher).
        """
        if frames.dim() != 5:
            raise ValueError(f"frames must be (B, T, C, H, W), got shape {tuple(frames.shape)}")
        batch, total = frames.shape[:2]
        if total < 2:
            raise ValueError(f"need at least 2 frames to predict, got {total}")
        if frames.shape[2] != self.channels:
            raise ValueError(f"expected {self.channels} channels, got {frames.shape[2]}")
        if frames.shape[-1] % self.patch or frames.shape[-2] % self.patch:
            raise ValueError(f"frame size {tuple(frames.shape[-2:])} is not divisible by patch {self.patch}")
        if teacher_mask is not None and tuple(teacher_mask.shape) != (batch, total - 2):
            raise ValueError(f"teacher_mask must be (B, T-2) = {(batch, total - 2)}, got {tuple(teacher_mask.shape)}")
        if collect_decoupling and not self.uses_decoupling:
            raise ValueError(f"{self.backbone} has no decoupling adapters")

        layout = self.memory_format
        patches = patchify(frames, self.patch, layout)
        height, width = patches.shape[-2:]

        def zero_state(channels: int) -> Tensor:
            return patches.new_zeros(batch, channels, height, width).contiguous(memory_format=layout)

        zeros = [zero_state(h) for h in self.hidden]
        hidden_states = list(zeros)
        memory_states = list(zeros)
        spatial = zero_state(self.hidden[0]) if self.has_spatial_memory else None

        predictions, fed = [], []
        memories = {layer: [] for layer in record_layers}
        hiddens = {layer: [] for layer in record_layers}
        distilled = {layer: [] for layer in self.memory_transfer_layers}
        gate_means = {layer: [] for layer in self.memory_transfer_layers if self.cells[layer].transfer.use_gates}
        flowing = {int(k): mixer for k, mixer in self.flow.items()} if teacher_hidden is not None and flow_scale > 0 else {}
        decoupling: list[tuple[Tensor, Tensor]] = []
        if teacher_mask is not None:
            mask = teacher_mask.to(torch.bool).view(batch, total - 2, 1, 1, 1)

        previous = None
        for t in range(total - 1):
            if t == 0 or teacher_mask is None:
                x = patches[:, t]
            else:
                x = torch.where(mask[:, t - 1], patches[:, t], previous)
            # a dense frame in the model's layout (a time slice of ``patches`` is strided, and
            # where() may return the default layout from channels-last operands)
            x = x.contiguous(memory_format=layout)
            if return_inputs:
                fed.append(x)
            for layer, cell in enumerate(self.cells):
                out = cell(x, hidden_states[layer], memory_states[layer], spatial)
                if layer in flowing:
                    out.hidden = flowing[layer](out.hidden, [h[:, t] for h in teacher_hidden[layer]], flow_scale)
                hidden_states[layer], memory_states[layer], spatial = out.hidden, out.memory, out.spatial
                x = out.hidden
                if layer in memories:
                    memories[layer].append(out.memory)
                    hiddens[layer].append(out.hidden)
                if out.distilled is not None:
                    distilled[layer].append(out.distilled)
                if out.gate_means is not None:
                    gate_means[layer].append(out.gate_means)
                if collect_decoupling:
                    decoupling.append(self._adapt(layer, out.delta_memory, out.delta_spatial))
            previous = self.output(x)
            predictions.append(previous)

        return Rollout(
            predictions=unpatchify(torch.stack(predictions, dim=1), self.patch),
            inputs=unpatchify(torch.stack(fed, dim=1), self.patch) if return_inputs else None,
            memories={layer: torch.stack(v, dim=1) for layer, v in memories.items()},
            hiddens={layer: torch.stack(v, dim=1) for layer, v in hiddens.items()},
            distilled={layer: torch.stack(v, dim=1) for layer, v in distilled.items()},
            gate_means={layer: torch.stack(v, dim=1) for layer, v in gate_means.items()},
            decoupling=decoupling,
        )

    def _adapt(self, layer: int, delta_memory: Tensor, delta_spatial: Tensor) -> tuple[Tensor, Tensor]:
        """PredRNN-V2: adapted increments, L2-normalized over space, ``(B, hidden, h*w)``."""
        adapter = self.adapters[layer]
        b, c = delta_memory.shape[:2]
        return (
            F.normalize(adapter(delta_memory).view(b, c, -1), dim=2),
            F.normalize(adapter(delta_spatial).view(b, c, -1), dim=2),
        )

    @torch.no_grad()
    def predict(self, inputs: Tensor, horizon: int) -> Tensor:
        """Predict ``horizon`` frames after ``inputs`` ``(B, T_in, C, H, W)``.

        Returns ``(B, horizon, C, H, W)`` (not clipped).
        """
        if inputs.dim() != 5:
            raise ValueError(f"inputs must be (B, T_in, C, H, W), got shape {tuple(inputs.shape)}")
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        batch, input_len = inputs.shape[:2]
        future = inputs.new_zeros(batch, horizon, *inputs.shape[2:])
        frames = torch.cat([inputs, future], dim=1)
        mask = rollout_mask(batch, input_len + horizon, input_len, inputs.device)
        return self(frames, mask).predictions[:, input_len - 1 :]
