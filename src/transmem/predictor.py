"""Trained predictors for inference: :func:`load` and :class:`Predictor`.

:func:`load` returns a :class:`Predictor` from a run folder, a ``model.safetensors`` file or
a checkpoint file (read by :mod:`transmem.storage.model_file`; the run folder's files are
described in :mod:`transmem.storage.run_folder`). Nothing here executes code from the files
it reads.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from transmem.storage.model_file import LoadedModel, load_model


class Predictor:
    """A trained predictor ready for inference (no sources needed, even for TMU targets)."""

    def __init__(self, loaded: LoadedModel) -> None:
        self.model = loaded.model.eval()
        self.config = loaded.config
        self.path = loaded.path

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def predict(self, frames: Tensor, horizon: int | None = None) -> Tensor:
        """Predict ``horizon`` frames (default: the run's T_out) after ``frames``.

        Args:
            frames: ``(B, T_in, C, H, W)`` float in [0, 1] or uint8 (a numpy array is accepted).
        Returns:
            ``(B, horizon, C, H, W)`` float32, clipped to [0, 1].
        """
        from transmem.data import DataError, validate_frames

        frames = validate_frames(torch.as_tensor(frames), "frames")  # uint8 scaled; NaN, inf, range refused
        if frames.dim() != 5:
            raise DataError(f"frames must be (B, T_in, C, H, W), got shape {tuple(frames.shape)}")
        if frames.shape[2] != self.model.channels:
            raise DataError(f"frames have {frames.shape[2]} channels, the model takes {self.model.channels}")
        if frames.shape[-1] % self.model.patch or frames.shape[-2] % self.model.patch:
            raise DataError(f"frame size {tuple(frames.shape[-2:])} is not divisible by the patch size {self.model.patch}")
        if horizon is None:
            horizon = self.config.data.total_len - self.config.data.input_len
        out = self.model.predict(frames.to(self.device), horizon)
        if not torch.isfinite(out).all():
            raise DataError(f"{self.path}: the model predicts non-finite values (NaN or inf) for these frames")
        return out.clamp(0.0, 1.0).cpu()


def load(path: str | Path, device: str | torch.device = "cpu") -> Predictor:
    """Load a predictor from a run folder, ``model.safetensors`` or checkpoint file."""
    return Predictor(load_model(path, device))


def input_warnings(frames: Tensor, data, patch: int, source: str) -> list[str]:
    """One line per way ``frames`` (B, T, C, H, W) differ from what the model was trained on
    and it can still run; a frame size the model cannot take raises DataError."""
    from transmem.data import DataError

    height, width = frames.shape[-2:]
    if height % patch or width % patch:
        raise DataError(f"{source}: frames of {height}x{width} pixels cannot be read by the model (its patch size {patch} must divide both sides)")
    lines = []
    if frames.shape[1] != data.input_len:
        fewer = "fewer" if frames.shape[1] < data.input_len else "more"
        lines.append(f"{source}: {frames.shape[1]} input frames, {fewer} than the {data.input_len} the model was trained on; predictions may be worse")
    if (height, width) != (data.frame_size, data.frame_size):
        lines.append(f"{source}: frames of {height}x{width} pixels, the model was trained on {data.frame_size}x{data.frame_size}; predictions may be worse")
    return lines
