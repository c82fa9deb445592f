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


def input_warnings(frames: Tensor, data, patch: int, source: str, tied_size: int | None = None) -> list[str]:
    """One line per way ``frames`` (B, T, C, H, W) differ from what the model was trained on
    and it can still run; a frame size the model cannot take raises DataError (``tied_size``:
    the only frame side a ``model.norm = "release"`` model takes, its ``frame_size``)."""
    from transmem.data import DataError

    height, width = frames.shape[-2:]
    if height % patch or width % patch:
        raise DataError(
            f"{source}: frames of {height}x{width} pixels cannot be read by the model (its patch size {patch} must divide both sides)"
        )
    if tied_size is not None and (height, width) != (tied_size, tied_size):
        raise DataError(
            f"{source}: frames of {height}x{width} pixels; the model (model.norm = 'release') takes {tied_size}x{tied_size} frames only"
        )
    lines = []
    if frames.shape[1] != data.input_len:
        fewer = "fewer" if frames.shape[1] < data.input_len else "more"
        lines.append(
            f"{source}: {frames.shape[1]} input frames, {fewer} than the {data.input_len} the model was trained on; predictions may be worse"
        )
    if (height, width) != (data.frame_size, data.frame_size):
        lines.append(
            f"{source}: frames of {height}x{width} pixels, the model was trained on {data.frame_size}x{data.frame_size}; predictions may be worse"
        )
    return lines


# ----------------------------------------------------------------------------- transmem predict's files

PREDICTION_FILE = "prediction.npy"  # in predict's --out folder: float32 (B, T, C, H, W)
PREDICTION_FILES = (PREDICTION_FILE, "strip_*.png", "prediction_*.gif")


def match_frames(
    frames: Tensor, truth: Tensor | None, data, input_name: str, truth_name: str | None
) -> tuple[Tensor, Tensor | None]:
    """``(frames, truth)`` checked against the model's ``[data]`` section: input frames past
    its T_in become the truth when none is given; DataError (naming the file) for another
    channel count, or true frames of another batch, channel count or frame size."""
    from transmem.data import DataError

    if frames.shape[2] != data.channels:
        raise DataError(
            f"{input_name}: frames of shape {tuple(frames.shape)} read as (B, T, C, H, W) have {frames.shape[2]} "
            f"channels, the model takes {data.channels} (predict wants channels before height and width)"
        )
    if truth is None and frames.shape[1] > data.input_len:
        frames, truth = frames[:, : data.input_len], frames[:, data.input_len :]
    elif truth is not None and (truth.shape[0] != frames.shape[0] or truth.shape[2:] != frames.shape[2:]):
        raise DataError(
            f"{truth_name}: true frames of shape {tuple(truth.shape)} (B, T, C, H, W) do not match the input "
            f"{tuple(frames.shape)} in batch, channels or frame size"
        )
    return frames, truth


def set_aside_predictions(out: Path) -> None:
    """Rename the prediction files in ``out`` with a ``.previous-<time>`` suffix (``--force``)."""
    import time

    suffix = time.strftime(".previous-%Y%m%d-%H%M%S")
    for pattern in PREDICTION_FILES:
        for path in out.glob(pattern):
            target, n = path.with_name(path.name + suffix), 1
            while target.exists():
                n += 1
                target = path.with_name(f"{path.name}{suffix}-{n}")
            path.rename(target)


def write_predictions(out: Path, frames: Tensor, truth: Tensor | None, prediction: Tensor) -> None:
    """``out/prediction.npy`` (float32) and, per sequence, a PNG strip and a GIF of the input,
    the truth (if any) and the prediction on one time axis."""
    import io

    import numpy as np

    from transmem.evaluation.animations import save_gif, save_strip_png
    from transmem.storage.files import atomic_write_bytes

    out.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()  # written atomically: a full disk leaves no torn prediction.npy
    np.save(buffer, prediction.numpy().astype(np.float32))
    atomic_write_bytes(out / PREDICTION_FILE, buffer.getvalue())
    observed = frames.shape[1]  # one time axis: the future starts after the input frames
    start = {"truth": observed, "prediction": observed}
    for b in range(prediction.shape[0]):
        rows = {"input": frames[b]}
        if truth is not None:
            rows["truth"] = truth[b]
        rows["prediction"] = prediction[b]
        placed = {name: column for name, column in start.items() if name in rows}
        save_strip_png(out / f"strip_{b}.png", rows, start=placed, input_len=observed)
        save_gif(out / f"prediction_{b}.gif", rows, pad="blank", start=placed, input_len=observed)
