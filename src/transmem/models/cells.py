"""Convolutional recurrent cells: ConvLSTM and ST-LSTM (PredRNN / PredRNN-V2).

Every cell maps an input ``x`` of shape ``(B, C_in, h, w)`` and its previous state to a
new state and returns a :class:`CellOutput` exposing everything a caller may want to read:
hidden state, cell memory, ST-LSTM's spatiotemporal memory, the memory increments used by
PredRNN-V2's decoupling loss, and, for a cell with a :class:`TransferableMemory`, the
distilled memories and transfer-gate means.

A cell becomes a TMU cell when built with ``transfer=TransferableMemory(...)``: its gate
convolution then also produces one transfer-gate group per source (4 + N gate groups for
ConvLSTM), exactly as in METHOD.md; with the ``residual`` merge a separate convolution of
the same input produces them (``transfer_gate_conv``), so the cell's own convolutions keep
the shapes of a plain backbone and a source's weights load into them unchanged.

Normalisation of a cell's own convolutions (``norm``): ``"none"`` (biased convolutions),
``"group"`` (bias-free convolutions, each followed by GroupNorm(1, C): any frame size) or
``"release"``, the authors' release: a TMU cell's gate convolution keeps its bias and is
followed by ``LayerNorm([C_gates, h, w])`` with per-element affine weights (so the cell is
built for one state size ``(h, w)``), and every other cell is a plain biased ConvLSTM cell.

``forget_bias`` is added to the forget gate's pre-activation: ``f = sigmoid(z_f + b_f)``,
1.0 as in PredRNN; the release adds none (0.0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from transmem.models.tmu import TransferableMemory

FORGET_BIAS = 1.0  # the default forget bias (model.forget_bias), as in PredRNN; the release's is 0.0


@dataclass
class CellOutput:
    """What one cell step produces. Shapes: ``(B, channels, h, w)`` unless noted."""

    hidden: Tensor  # H_t
    memory: Tensor  # C_t carried to the next step (after memory transfer for a TMU cell)
    spatial: Tensor | None = None  # ST-LSTM spatiotemporal memory M_t (passed up the stack)
    delta_memory: Tensor | None = None  # i * g, PredRNN-V2 decoupling
    delta_spatial: Tensor | None = None  # i' * g', PredRNN-V2 decoupling
    distilled: Tensor | None = None  # TMU: (B, N, hidden, h, w)
    gate_means: Tensor | None = None  # TMU: (B, N)


def _conv(in_channels: int, out_channels: int, kernel: int, norm: str, size: tuple[int, int] | None = None) -> nn.Module:
    """A convolution keeping the frame size, normalised by ``norm``: ``"none"`` (with bias),
    ``"group"`` (no bias, then GroupNorm(1, C)) or ``"layer"`` (with bias, then
    ``LayerNorm([C, h, w])`` over states of ``size`` ``(h, w)``, per-element affine)."""
    conv = nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=norm != "group")
    if norm == "group":
        return nn.Sequential(conv, nn.GroupNorm(1, out_channels))
    if norm == "layer":
        return nn.Sequential(conv, nn.LayerNorm([out_channels, *size]))
    return conv


def cell_norm(norm: str, transfer: TransferableMemory | None) -> str:
    """The normalisation of a cell's own convolutions (:func:`_conv`) for the model's ``norm``:
    ``"release"`` is ``"layer"`` in a TMU cell and ``"none"`` in every other cell."""
    if norm == "release":
        return "layer" if transfer is not None else "none"
    return norm


class RecurrentCell(nn.Module):
    """What the cells share: the state size, the optional :class:`TransferableMemory` and
    its transfer gates.

    A cell maps ``x`` ``(B, C_in, h, w)`` and its previous state (each ``(B, hidden, h, w)``)
    to a :class:`CellOutput`. A subclass builds its own convolutions after calling this
    ``__init__`` (the TMU is registered first, so the state-dict keys and the order in which
    weights are initialised stay those of the cells before this base class existed), asks
    :attr:`extra_gate_groups` for the transfer-gate groups its gate convolution must add,
    then calls :meth:`_build_transfer_gate_conv` last.
    """

    has_spatial_memory = False  # True: the cell also reads and writes M (ST-LSTM)

    def __init__(self, hidden_channels: int, transfer: TransferableMemory | None, forget_bias: float = FORGET_BIAS) -> None:
        super().__init__()
        self.hidden_channels = hidden_channels
        self.transfer = transfer
        self.forget_bias = float(forget_bias)  # added to the forget gate pre-activation

    @property
    def extra_gate_groups(self) -> int:
        """Transfer-gate groups (``hidden`` channels each) the cell's own gate convolution adds."""
        return self.transfer.gate_groups if self.transfer is not None else 0

    def _build_transfer_gate_conv(self, in_channels: int, kernel: int, norm: str, size: tuple[int, int] | None = None) -> None:
        """The separate convolution of ``[x, H]`` (``in_channels`` in all) giving the transfer
        gates of a ``residual`` TMU; None for every other cell."""
        transfer = self.transfer
        if transfer is None or not transfer.separate_gate_groups:
            self.transfer_gate_conv = None
        else:
            groups = transfer.separate_gate_groups * transfer.hidden_channels
            self.transfer_gate_conv = _conv(in_channels, groups, kernel, norm, size)

    def _apply_transfer(self, out: CellOutput, x: Tensor, hidden: Tensor, fused: Tensor) -> CellOutput:
        """For a TMU cell, replace ``out.memory`` (``C'_t``) by the transferred ``C_t`` and set
        ``distilled`` and ``gate_means``; a plain cell's ``out`` is returned as it is.

        The transfer-gate pre-activations ``(B, N * hidden, h, w)`` come from the separate
        convolution of ``[x, H_{t-1}]`` when the cell has one, else they are the extra groups
        ``fused`` of its own gate convolution(s).
        """
        if self.transfer is None:
            return out
        preactivation = None
        if self.transfer.use_gates:
            preactivation = fused if self.transfer_gate_conv is None else self.transfer_gate_conv(torch.cat([x, hidden], dim=1))
        out.memory, out.distilled, out.gate_means = self.transfer(out.memory, preactivation)
        return out


class ConvLSTMCell(RecurrentCell):
    """ConvLSTM (Shi et al. 2015): gates i, f, g, o from one convolution of [x, H].

    ``C'_t = sigmoid(z_f + forget_bias) * C_{t-1} + i * g``, ``H_t = o * tanh(C'_t)``,
    ``C_t = C'_t`` (or the TMU update of ``C'_t`` when ``transfer`` is given). ``size``: the
    state's ``(h, w)``, needed by ``norm = "release"`` in a TMU cell only (module docstring).
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        kernel: int = 3,
        norm: str = "none",
        transfer: TransferableMemory | None = None,
        forget_bias: float = FORGET_BIAS,
        size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(hidden_channels, transfer, forget_bias)
        groups = 4 + self.extra_gate_groups
        norm = cell_norm(norm, transfer)
        if norm == "layer" and size is None:
            raise ValueError("norm 'release': a TMU cell's LayerNorm needs the state size (h, w)")
        self.gate_conv = _conv(in_channels + hidden_channels, groups * hidden_channels, kernel, norm, size)
        self._build_transfer_gate_conv(in_channels + hidden_channels, kernel, norm, size)

    def forward(self, x: Tensor, hidden: Tensor, memory: Tensor, spatial: Tensor | None = None) -> CellOutput:
        """``x`` ``(B, C_in, h, w)``; ``hidden``, ``memory`` ``(B, hidden, h, w)``; ``spatial`` unused."""
        gates = self.gate_conv(torch.cat([x, hidden], dim=1))
        k = self.hidden_channels
        # One split (its backward is one cat) instead of slices (each backward zero-fills a full-size gradient).
        i, f, g, o, transfer_preactivation = gates.split([k, k, k, k, gates.shape[1] - 4 * k], dim=1)
        candidate = torch.sigmoid(f + self.forget_bias) * memory + torch.sigmoid(i) * torch.tanh(g)
        new_hidden = torch.sigmoid(o) * torch.tanh(candidate)
        return self._apply_transfer(CellOutput(hidden=new_hidden, memory=candidate), x, hidden, transfer_preactivation)


class SpatioTemporalLSTMCell(RecurrentCell):
    """ST-LSTM (Wang et al. 2017), as in PredRNN / PredRNN-V2.

    Temporal memory ``C`` (per layer, across time) and spatiotemporal memory ``M``
    (zigzagging up the layers)::

        C'_t = f * C_{t-1} + i * g            (gates from x and H)
        M_t  = f' * M + i' * g'                (gates from x and M)
        H_t  = o * tanh(W_1x1 [C'_t, M_t])     (o from x, H and [C'_t, M_t])

    A TMU cell applies the memory transfer to ``C'_t``; the transfer gates come from the
    x and H convolutions. ``forget_bias`` is added to both forget gates; ``norm = "release"``
    (the authors' ConvLSTM TMU) has no ST-LSTM form and is refused; ``size`` is unused.
    """

    has_spatial_memory = True

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        kernel: int = 3,
        norm: str = "none",
        transfer: TransferableMemory | None = None,
        forget_bias: float = FORGET_BIAS,
        size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(hidden_channels, transfer, forget_bias)
        if norm == "release":
            raise ValueError("norm 'release' is the authors' ConvLSTM TMU; ST-LSTM cells take 'none' or 'group'")
        k, extra = hidden_channels, self.extra_gate_groups
        self.conv_x = _conv(in_channels, (7 + extra) * k, kernel, norm)
        self.conv_h = _conv(k, (4 + extra) * k, kernel, norm)
        self.conv_m = _conv(k, 3 * k, kernel, norm)
        self.conv_o = _conv(2 * k, k, kernel, norm)
        self.conv_last = nn.Conv2d(2 * k, k, kernel_size=1, bias=False)
        self._build_transfer_gate_conv(in_channels + k, kernel, norm)

    def forward(self, x: Tensor, hidden: Tensor, memory: Tensor, spatial: Tensor | None = None) -> CellOutput:
        """``x`` ``(B, C_in, h, w)``; ``hidden``, ``memory``, ``spatial`` (M from the layer below,
        or from the top layer's previous step) ``(B, hidden, h, w)``."""
        k = self.hidden_channels
        xs = self.conv_x(x)
        hs = self.conv_h(hidden)
        ms = self.conv_m(spatial)
        # splits rather than slices: one cat in the backward instead of a zero-filled gradient per slice
        x_i, x_f, x_g, x_is, x_fs, x_gs, x_o, x_transfer = xs.split([k] * 7 + [xs.shape[1] - 7 * k], dim=1)
        h_i, h_f, h_g, h_o, h_transfer = hs.split([k] * 4 + [hs.shape[1] - 4 * k], dim=1)
        m_i, m_f, m_g = ms.split(k, dim=1)
        i = torch.sigmoid(x_i + h_i)
        f = torch.sigmoid(x_f + h_f + self.forget_bias)
        g = torch.tanh(x_g + h_g)
        delta_memory = i * g
        candidate = f * memory + delta_memory
        i_s = torch.sigmoid(x_is + m_i)
        f_s = torch.sigmoid(x_fs + m_f + self.forget_bias)
        g_s = torch.tanh(x_gs + m_g)
        delta_spatial = i_s * g_s
        new_spatial = f_s * spatial + delta_spatial
        both = torch.cat([candidate, new_spatial], dim=1)
        o = torch.sigmoid(x_o + h_o + self.conv_o(both))
        out = CellOutput(
            hidden=o * torch.tanh(self.conv_last(both)),
            memory=candidate,
            spatial=new_spatial,
            delta_memory=delta_memory,
            delta_spatial=delta_spatial,
        )
        if self.transfer is None:  # x_transfer + h_transfer would add two empty tensors
            return out
        return self._apply_transfer(out, x, hidden, x_transfer + h_transfer)


CELLS: dict[str, type[RecurrentCell]] = {
    "convlstm": ConvLSTMCell,
    "stlstm": SpatioTemporalLSTMCell,
}
