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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transmem.errors import DataError
from transmem.models.cells import CELLS, FORGET_BIAS, CellOutput
from transmem.models.knowledge_flow import KnowledgeFlowMixer
from transmem.models.tmu import TransferableMemory
from transmem.schema import NORMS  # model.norm: how cells normalise their convolutions


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


def _checked_layout(backbone: str, hidden: list[int], transfer_layout: TransferLayout | None) -> TransferLayout:
    """``transfer_layout`` with int layer keys; ValueError unless :class:`RecurrentPredictor`
    can build this architecture."""
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; known: {', '.join(BACKBONES)}")
    transfer_layout = {int(k): v for k, v in (transfer_layout or {}).items()}
    for layer in transfer_layout:
        if not 0 <= layer < len(hidden):
            raise ValueError(f"transfer layer {layer} does not exist (model has {len(hidden)} layers)")
    if CELLS[BACKBONES[backbone].cell].has_spatial_memory and len(set(hidden)) != 1:
        raise ValueError(f"{backbone}: ST-LSTM layers share the spatiotemporal memory, so all hidden sizes must be equal")
    return transfer_layout


def _tied_frame_size(norm: str, layout: TransferLayout, frame_size: int | None, patch: int) -> int | None:
    """The frame side a ``norm = "release"`` model with a TMU layer is built for (its
    LayerNorm weights); None for any other model, which takes any frame size. ValueError
    unless ``norm`` is known and ``frame_size`` fits."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    if norm != "release" or not any(layer.get("kind", "tmu") == "tmu" for layer in layout.values()):
        return None
    if frame_size is None or frame_size < patch or frame_size % patch:
        raise ValueError(f"norm 'release' ties the weights to one frame size: give a frame_size divisible by patch {patch}")
    return frame_size


@dataclass
class LayerStates:
    """Every layer's recurrent state between two steps; :meth:`RecurrentPredictor._step`
    updates it in place.

    ``hidden[l]`` and ``memory[l]`` are ``H^l`` and ``C^l``, ``(B, hidden_l, h, w)``;
    ``spatial`` is ST-LSTM's ``M`` ``(B, hidden, h, w)``, which zigzags up the stack (the
    top layer's ``M`` at step t is the bottom layer's input at step t + 1); None for ConvLSTM.
    """

    hidden: list[Tensor]
    memory: list[Tensor]
    spatial: Tensor | None


@dataclass
class RolloutRecorder:
    """Collects, step by step, what :meth:`RecurrentPredictor.forward` returns as a :class:`Rollout`.

    Always: the predictions and, for every TMU / distill layer, the distilled memories
    ``D_t`` and (with transfer gates) the gate means. Only when asked: the frames fed
    (``fed`` is None otherwise), ``C_t`` and ``H_t`` of the layers in ``memories`` (the
    ``record_layers``, in the caller's order) and PredRNN-V2's adapted increments (``adapt``
    is None otherwise). Per-step tensors are ``(B, ...)``; :meth:`rollout` stacks them along
    a time axis at dim 1.
    """

    fed: list[Tensor] | None  # x_t, (B, C p^2, h, w)
    memories: dict[int, list[Tensor]]  # layer -> [C_t], (B, hidden, h, w)
    hiddens: dict[int, list[Tensor]]  # layer -> [H_t], (B, hidden, h, w)
    distilled: dict[int, list[Tensor]]  # TMU layer -> [D_t], (B, N, hidden, h, w)
    gate_means: dict[int, list[Tensor]]  # gated TMU layer -> (B, N)
    adapt: Callable[[int, Tensor, Tensor], tuple[Tensor, Tensor]] | None  # RecurrentPredictor._adapt
    predictions: list[Tensor] = field(default_factory=list)  # (B, C p^2, h, w), patches of frame t + 1
    decoupling: list[tuple[Tensor, Tensor]] = field(default_factory=list)  # per step, per layer

    @classmethod
    def start(cls, model: RecurrentPredictor, record_layers: Iterable[int], inputs: bool, decoupling: bool) -> RolloutRecorder:
        """An empty recorder for ``model``'s rollout (arguments as :meth:`RecurrentPredictor.forward`'s)."""
        record_layers = list(record_layers)
        transfer_layers = model.memory_transfer_layers
        return cls(
            fed=[] if inputs else None,
            memories={layer: [] for layer in record_layers},
            hiddens={layer: [] for layer in record_layers},
            distilled={layer: [] for layer in transfer_layers},
            gate_means={layer: [] for layer in transfer_layers if model.cells[layer].transfer.use_gates},
            adapt=model._adapt if decoupling else None,
        )

    def record_input(self, x: Tensor) -> None:
        if self.fed is not None:
            self.fed.append(x)

    def record_layer(self, layer: int, out: CellOutput) -> None:
        """What one layer produced at this step (``out.hidden`` after any Knowledge Flow mixing)."""
        if layer in self.memories:
            self.memories[layer].append(out.memory)
            self.hiddens[layer].append(out.hidden)
        if out.distilled is not None:
            self.distilled[layer].append(out.distilled)
        if out.gate_means is not None:
            self.gate_means[layer].append(out.gate_means)
        if self.adapt is not None:
            self.decoupling.append(self.adapt(layer, out.delta_memory, out.delta_spatial))

    def rollout(self, patch: int) -> Rollout:
        """The :class:`Rollout`: frames back to ``(B, T-1, C, H, W)``, states ``(B, T-1, ...)``."""

        def stacked(lists: dict[int, list[Tensor]]) -> dict[int, Tensor]:
            return {layer: torch.stack(steps, dim=1) for layer, steps in lists.items()}

        return Rollout(
            predictions=unpatchify(torch.stack(self.predictions, dim=1), patch),
            inputs=unpatchify(torch.stack(self.fed, dim=1), patch) if self.fed is not None else None,
            memories=stacked(self.memories),
            hiddens=stacked(self.hiddens),
            distilled=stacked(self.distilled),
            gate_means=stacked(self.gate_means),
            decoupling=self.decoupling,
        )


class RecurrentPredictor(nn.Module):
    """A stack of recurrent cells predicting the next frame.

    Args:
        backbone: key of :data:`BACKBONES`.
        channels: frame channels C.
        hidden: channels of each layer's state.
        kernel: convolution kernel size (odd).
        patch: patch size p (frame size must be divisible by it).
        norm: ``"none"``, ``"group"`` (GroupNorm(1, C) after convolutions; any frame size) or
            ``"release"`` (the authors' release, ConvLSTM only: LayerNorm over ``(C, h, w)``
            with per-element affine weights after a TMU layer's gate convolution and its
            distillers, no norm elsewhere; it ties the weights to ``frame_size``).
        transfer_layout: for a transfer target, ``{layer: {"kind": "tmu" | "kflow",
            "source_channels": [...], "source_sizes": [[h, w] | None, ...], "use_gates": bool,
            "merge": "sum" | "mean" | "residual", "hint_to_backbone": bool}}``:
            ``tmu`` layers get a :class:`TransferableMemory` (``use_gates = False``: the
            distill ablation), ``kflow`` layers a :class:`KnowledgeFlowMixer`. Plain JSON so
            the architecture can be rebuilt from a checkpoint with no source present.
        forget_bias: added to every forget gate's pre-activation (PredRNN's 1.0; the release's 0.0).
        frame_size: the side of the square frames a ``norm = "release"`` model with a TMU
            layer is built for (its LayerNorm weights have that size; other frame sizes
            raise DataError); not needed by any other model.

    Inputs (of :meth:`forward`, which returns a :class:`Rollout`):
        frames: ``(B, T, C, H, W)`` float in [0, 1]; frames that the mask never feeds (e.g.
            the future at test time) may hold anything finite.
        teacher_mask: ``(B, T-2)`` bool; ``teacher_mask[:, t-1]`` True feeds the true frame t
            at step t, False the model's own prediction. None: always truth.
        record_layers: layers whose cell memory ``C_t`` and hidden state ``H_t`` are returned
            in ``memories`` and ``hiddens``.
        return_inputs: also return the frames actually fed (for a live memory bank).
        collect_decoupling: return PredRNN-V2's adapted memory increments.
        teacher_hidden: Knowledge Flow only, ``{layer: [(B, T-1, c_n, h_n, w_n) per teacher]}``:
            teachers' hidden states mixed into the ``kflow`` layers.
        flow_scale: Knowledge Flow teacher-weight scale in [0, 1] (0: no teacher).

    The distilled memories and gate means of TMU / distill layers are always returned.
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
        *,
        forget_bias: float = FORGET_BIAS,
        frame_size: int | None = None,
    ) -> None:
        super().__init__()
        self.transfer_layout = _checked_layout(backbone, list(hidden), transfer_layout)
        spec = BACKBONES[backbone]
        self.backbone = backbone
        self.channels = channels
        self.hidden = list(hidden)
        self.patch = patch
        self.norm = norm
        self.forget_bias = float(forget_bias)
        self.frame_size = _tied_frame_size(norm, self.transfer_layout, frame_size, patch)  # None: any frame size
        state_size = None if self.frame_size is None else (self.frame_size // patch,) * 2
        cell_type = CELLS[spec.cell]
        self.has_spatial_memory = cell_type.has_spatial_memory
        patch_channels = channels * patch * patch
        cells = []
        self.flow = nn.ModuleDict()
        for layer, hidden_channels in enumerate(self.hidden):
            in_channels = patch_channels if layer == 0 else self.hidden[layer - 1]
            transfer = self._build_transfer(layer, hidden_channels, state_size)  # before the cell: the order weights are drawn in
            cells.append(cell_type(in_channels, hidden_channels, kernel, norm, transfer, self.forget_bias, state_size))
        self.cells = nn.ModuleList(cells)
        self.output = nn.Conv2d(self.hidden[-1], patch_channels, kernel_size=1, bias=False)
        self.adapters = (
            nn.ModuleList(nn.Conv2d(h, h, kernel_size=1, bias=False) for h in self.hidden) if spec.decoupling else None
        )
        # The layout of every 4-D tensor of a rollout: its frames, states and (after
        # :meth:`use_channels_last`) convolution weights. Not part of the state dict.
        self.memory_format = torch.contiguous_format

    def _build_transfer(self, layer: int, hidden_channels: int, state_size: tuple[int, int] | None) -> TransferableMemory | None:
        """The transfer part of ``layer``: its TMU (returned, for its cell), or its Knowledge
        Flow mixer (stored in :attr:`flow`), or nothing. ``state_size``: ``(h, w)`` of a
        ``norm = "release"`` model (its distillers' LayerNorm), else None."""
        layout = self.transfer_layout.get(layer)
        if layout is None:
            return None
        if layout.get("kind", "tmu") == "kflow":
            self.flow[str(layer)] = KnowledgeFlowMixer(hidden_channels, list(layout["source_channels"]))
            return None
        sizes = [tuple(s) if s is not None else None for s in layout.get("source_sizes") or []]
        return TransferableMemory(
            hidden_channels,
            list(layout["source_channels"]),
            sizes or None,
            layout.get("use_gates", True),
            layout.get("merge", "sum"),
            layout.get("hint_to_backbone", True),
            "layer" if self.norm == "release" else "group",
            state_size,
        )

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
        """Roll the predictor over ``frames`` ``(B, T, C, H, W)`` (arguments: the class
        docstring's Inputs): T - 1 steps, step t feeding ``x_t`` (:meth:`_input_at`, truth or
        the previous prediction) to :meth:`_step`, which predicts frame t + 1."""
        self._check_input(frames, teacher_mask, collect_decoupling)
        patches = patchify(frames, self.patch, self.memory_format)  # (B, T, C p^2, h, w)
        mask = None if teacher_mask is None else teacher_mask.to(torch.bool).view(*teacher_mask.shape, 1, 1, 1)
        state = self._zero_state(patches)
        recorder = RolloutRecorder.start(self, record_layers, return_inputs, collect_decoupling)
        flowing = [int(layer) for layer in self.flow] if teacher_hidden is not None and flow_scale > 0 else []
        prediction = None
        for t in range(patches.shape[1] - 1):
            teachers = {layer: [h[:, t] for h in teacher_hidden[layer]] for layer in flowing}
            prediction = self._step(self._input_at(patches, mask, t, prediction), state, recorder, teachers, flow_scale)
        return recorder.rollout(self.patch)

    def _check_input(self, frames: Tensor, teacher_mask: Tensor | None, collect_decoupling: bool) -> None:
        """Raise ValueError unless :meth:`forward` can roll over ``frames`` with ``teacher_mask``."""
        if frames.dim() != 5:
            raise ValueError(f"frames must be (B, T, C, H, W), got shape {tuple(frames.shape)}")
        batch, total = frames.shape[:2]
        if total < 2:
            raise ValueError(f"need at least 2 frames to predict, got {total}")
        if frames.shape[2] != self.channels:
            raise ValueError(f"expected {self.channels} channels, got {frames.shape[2]}")
        if frames.shape[-1] % self.patch or frames.shape[-2] % self.patch:
            raise ValueError(f"frame size {tuple(frames.shape[-2:])} is not divisible by patch {self.patch}")
        if self.frame_size is not None and tuple(frames.shape[-2:]) != (self.frame_size, self.frame_size):
            height, width = frames.shape[-2:]
            raise DataError(
                f"frames of {height}x{width} pixels: this model (model.norm = 'release') has LayerNorm weights "
                f"for {self.frame_size}x{self.frame_size} frames only"
            )
        if teacher_mask is not None and tuple(teacher_mask.shape) != (batch, total - 2):
            raise ValueError(f"teacher_mask must be (B, T-2) = {(batch, total - 2)}, got {tuple(teacher_mask.shape)}")
        if collect_decoupling and not self.uses_decoupling:
            raise ValueError(f"{self.backbone} has no decoupling adapters")

    def _zero_state(self, patches: Tensor) -> LayerStates:
        """All-zero ``H``, ``C`` (and ``M``) for a rollout over ``patches`` ``(B, T, C p^2, h, w)``."""
        batch, height, width = patches.shape[0], *patches.shape[-2:]

        def zeros(channels: int) -> Tensor:
            return patches.new_zeros(batch, channels, height, width).contiguous(memory_format=self.memory_format)

        layers = [zeros(h) for h in self.hidden]
        return LayerStates(list(layers), list(layers), zeros(self.hidden[0]) if self.has_spatial_memory else None)

    def _input_at(self, patches: Tensor, mask: Tensor | None, t: int, previous: Tensor | None) -> Tensor:
        """``x_t``, the patches fed at step t, ``(B, C p^2, h, w)``: the true ``patches[:, t]``
        at step 0 (and always when ``mask`` is None), else per sequence the truth where
        ``mask[:, t-1]`` ``(B, 1, 1, 1)`` is True and ``previous`` (the prediction of frame t)
        where it is False."""
        x = patches[:, t] if t == 0 or mask is None else torch.where(mask[:, t - 1], patches[:, t], previous)
        # a dense frame in the model's layout (a time slice of ``patches`` is strided, and
        # where() may return the default layout from channels-last operands)
        return x.contiguous(memory_format=self.memory_format)

    def _step(
        self, x: Tensor, state: LayerStates, recorder: RolloutRecorder, teachers: dict[int, list[Tensor]], flow_scale: float
    ) -> Tensor:
        """Advance every layer by one time step and return the predicted patches ``(B, C p^2, h, w)``.

        Layer l reads the output of the layer below (``x_t`` for layer 0) and its own state::

            H^l_t, C^l_t, M = cell_l(H^{l-1}_t, H^l_{t-1}, C^l_{t-1}, M)    (H^{-1}_t = x_t)
            H^l_t <- KnowledgeFlow_l(H^l_t, teachers[l], flow_scale)      (kflow layers, while teachers flow)
            x^_{t+1} = W_out H^{L-1}_t                                    (1x1 convolution)

        ``state`` is updated in place; ``teachers[l]`` holds each teacher's ``(B, c_n, h_n, w_n)``
        hidden state at this step.
        """
        recorder.record_input(x)
        for layer, cell in enumerate(self.cells):
            out = cell(x, state.hidden[layer], state.memory[layer], state.spatial)
            if layer in teachers:
                out.hidden = self.flow[str(layer)](out.hidden, teachers[layer], flow_scale)
            state.hidden[layer], state.memory[layer], state.spatial = out.hidden, out.memory, out.spatial
            recorder.record_layer(layer, out)
            x = out.hidden
        prediction = self.output(x)
        recorder.predictions.append(prediction)
        return prediction

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
