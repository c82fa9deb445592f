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
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from transmem.models.tmu import TransferableMemory

FORGET_BIAS = 1.0  # added to the forget gate pre-activation, as in PredRNN


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


def _conv(in_channels: int, out_channels: int, kernel: int, norm: str) -> nn.Module:
    conv = nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=norm == "none")
    if norm == "group":
        return nn.Sequential(conv, nn.GroupNorm(1, out_channels))
    return conv


def _transfer_gate_conv(transfer: TransferableMemory | None, in_channels: int, kernel: int, norm: str) -> nn.Module | None:
    """The separate convolution of ``[x, H]`` giving the transfer gates of a ``residual`` TMU."""
    if transfer is None or not transfer.separate_gate_groups:
        return None
    return _conv(in_channels, transfer.separate_gate_groups * transfer.hidden_channels, kernel, norm)


def _transfer_preactivation(cell: nn.Module, x: Tensor, hidden: Tensor, fused: Tensor) -> Tensor | None:
    """Transfer-gate pre-activations ``(B, N * hidden, h, w)``: from the separate convolution
    when the cell has one, else the extra groups ``fused`` of its own gate convolution."""
    if not cell.transfer.use_gates:
        return None
    if cell.transfer_gate_conv is not None:
        return cell.transfer_gate_conv(torch.cat([x, hidden], dim=1))
    return fused


class ConvLSTMCell(nn.Module):
    """ConvLSTM (Shi et al. 2015): gates i, f, g, o from one convolution of [x, H].

    ``C'_t = f * C_{t-1} + i * g``, ``H_t = o * tanh(C'_t)``, ``C_t = C'_t`` (or the TMU
    update of ``C'_t`` when ``transfer`` is given).
    """

    has_spatial_memory = False

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        kernel: int = 3,
        norm: str = "none",
        transfer: TransferableMemory | None = None,
    ) -> None:
        super().__init__()
        self.hidden_channels = hidden_channels
        self.transfer = transfer
        extra = transfer.gate_groups if transfer is not None else 0
        self.gate_conv = _conv(in_channels + hidden_channels, (4 + extra) * hidden_channels, kernel, norm)
        self.transfer_gate_conv = _transfer_gate_conv(transfer, in_channels + hidden_channels, kernel, norm)

    def forward(self, x: Tensor, hidden: Tensor, memory: Tensor, spatial: Tensor | None = None) -> CellOutput:
        hidden_in = hidden
        gates = self.gate_conv(torch.cat([x, hidden], dim=1))
        k = self.hidden_channels
        # One split (its backward is one cat) instead of slices (each backward zero-fills a full-size gradient).
        i, f, g, o, transfer_preactivation = gates.split([k, k, k, k, gates.shape[1] - 4 * k], dim=1)
        candidate = torch.sigmoid(f + FORGET_BIAS) * memory + torch.sigmoid(i) * torch.tanh(g)
        hidden = torch.sigmoid(o) * torch.tanh(candidate)
        if self.transfer is None:
            return CellOutput(hidden=hidden, memory=candidate)
        preactivation = _transfer_preactivation(self, x, hidden_in, transfer_preactivation)
        memory, distilled, gate_means = self.transfer(candidate, preactivation)
        return CellOutput(hidden=hidden, memory=memory, distilled=distilled, gate_means=gate_means)


class SpatioTemporalLSTMCell(nn.Module):
    """ST-LSTM (Wang et al. 2017), as in PredRNN / PredRNN-V2.

    Temporal memory ``C`` (per layer, across time) and spatiotemporal memory ``M``
    (zigzagging up the layers)::

        C'_t = f * C_{t-1} + i * g            (gates from x and H)
        M_t  = f' * M + i' * g'                (gates from x and M)
        H_t  = o * tanh(W_1x1 [C'_t, M_t])     (o from x, H and [C'_t, M_t])

    A TMU cell applies the memory transfer to ``C'_t``; the transfer gates come from the
    x and H convolutions.
    """

    has_spatial_memory = True

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        kernel: int = 3,
        norm: str = "none",
        transfer: TransferableMemory | None = None,
    ) -> None:
        super().__init__()
        k = hidden_channels
        self.hidden_channels = k
        self.transfer = transfer
        extra = transfer.gate_groups if transfer is not None else 0
        self.conv_x = _conv(in_channels, (7 + extra) * k, kernel, norm)
        self.conv_h = _conv(k, (4 + extra) * k, kernel, norm)
        self.conv_m = _conv(k, 3 * k, kernel, norm)
        self.conv_o = _conv(2 * k, k, kernel, norm)
        self.conv_last = nn.Conv2d(2 * k, k, kernel_size=1, bias=False)
        self.transfer_gate_conv = _transfer_gate_conv(transfer, in_channels + k, kernel, norm)

    def forward(self, x: Tensor, hidden: Tensor, memory: Tensor, spatial: Tensor | None = None) -> CellOutput:
        k = self.hidden_channels
        hidden_in = hidden
        xs = self.conv_x(x)
        hs = self.conv_h(hidden)
        ms = self.conv_m(spatial)
        # splits rather than slices: one cat in the backward instead of a zero-filled gradient per slice
        x_i, x_f, x_g, x_is, x_fs, x_gs, x_o, x_transfer = xs.split([k] * 7 + [xs.shape[1] - 7 * k], dim=1)
        h_i, h_f, h_g, h_o, h_transfer = hs.split([k] * 4 + [hs.shape[1] - 4 * k], dim=1)
        m_i, m_f, m_g = ms.split(k, dim=1)
        i = torch.sigmoid(x_i + h_i)
        f = torch.sigmoid(x_f + h_f + FORGET_BIAS)
        g = torch.tanh(x_g + h_g)
        delta_memory = i * g
        candidate = f * memory + delta_memory
        i_s = torch.sigmoid(x_is + m_i)
        f_s = torch.sigmoid(x_fs + m_f + FORGET_BIAS)
        g_s = torch.tanh(x_gs + m_g)
        delta_spatial = i_s * g_s
        spatial = f_s * spatial + delta_spatial
        both = torch.cat([candidate, spatial], dim=1)
        o = torch.sigmoid(x_o + h_o + self.conv_o(both))
        hidden = o * torch.tanh(self.conv_last(both))
        out = CellOutput(
            hidden=hidden,
            memory=candidate,
            spatial=spatial,
            delta_memory=delta_memory,
            delta_spatial=delta_spatial,
        )
        if self.transfer is not None:
            preactivation = _transfer_preactivation(self, x, hidden_in, x_transfer + h_transfer)
            out.memory, out.distilled, out.gate_means = self.transfer(candidate, preactivation)
        return out


CELLS: dict[str, type[nn.Module]] = {
    "convlstm": ConvLSTMCell,
    "stlstm": SpatioTemporalLSTMCell,
}
