"""The grid painter: many frame sequences side by side in one picture.

Every picture of frame sequences is painted by :func:`paint_grid`: the GIFs and PNG strips
of predictions (:mod:`.animations`) and the dataset previews (:mod:`.preview`). A cell is an
image ``(..., height, width, channels)``, channels last; a grid of sequences ``(time,
height, width, channels)`` paints a sequence of grids. The helpers here turn the project's
``(time, channels, height, width)`` sequences into such cells.

Pure numpy: nothing here imports matplotlib.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Union

import numpy as np
import torch

__all__ = ["ArrayLike", "as_float_array", "on_time_axis", "paint_grid", "sequences_as_rgb", "upscale"]

ArrayLike = Union[torch.Tensor, np.ndarray, Sequence]


def as_float_array(values: ArrayLike) -> np.ndarray:
    """Any tensor / array / nested list as a float64 numpy array (on CPU)."""
    if isinstance(values, torch.Tensor):
        return values.detach().to("cpu", torch.float64).numpy()
    return np.asarray(values, dtype=np.float64)


def _sequence_as_rgb(name: str, sequence: ArrayLike) -> np.ndarray:
    """``(time, channels, height, width)`` sequence, channels 1 or 3 -> ``(time, height, width, 3)``
    float64 in [0, 1] (values outside clipped, NaN shown black)."""
    frames = as_float_array(sequence)
    if frames.ndim != 4 or frames.shape[1] not in (1, 3) or frames.shape[0] < 1:
        raise ValueError(f"sequence {name!r} must be (T, C, H, W) with T >= 1 and C in (1, 3), got shape {frames.shape}")
    frames = np.clip(np.nan_to_num(frames, nan=0.0), 0.0, 1.0).transpose(0, 2, 3, 1)
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    return frames


def sequences_as_rgb(rows: Mapping[str, ArrayLike]) -> dict[str, np.ndarray]:
    """Named ``(time, channels, height, width)`` sequences -> name -> ``(time, height, width, 3)``
    float64 in [0, 1], checked to share height and width."""
    if not rows:
        raise ValueError("at least one named sequence is required")
    converted = {name: _sequence_as_rgb(name, sequence) for name, sequence in rows.items()}
    sizes = {name: frames.shape[1:3] for name, frames in converted.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"all sequences must share height and width, got {sizes}")
    return converted


def upscale(images: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour magnification of ``(..., height, width, channels)`` images by an integer factor."""
    if scale == 1:
        return images
    return images.repeat(scale, axis=-3).repeat(scale, axis=-2)


def on_time_axis(frames: np.ndarray, steps: int, start: int, pad: str, blank_value: float) -> np.ndarray:
    """Frames ``(time, height, width, channels)`` placed on a time axis of ``steps`` frames.

    Frame 0 shows at step ``start``; before it the cell is blank (``blank_value``); after the
    last frame it holds that frame (``pad="hold"``) or is blank (``pad="blank"``).

    Returns:
        ``(steps, height, width, channels)`` array of the frames' dtype.
    """
    if pad not in ("hold", "blank"):
        raise ValueError(f"pad must be 'hold' or 'blank', got {pad!r}")
    placed = np.full((steps, *frames.shape[1:]), blank_value, dtype=frames.dtype)
    shown = frames[: max(0, steps - start)]
    placed[start : start + len(shown)] = shown
    if pad == "hold" and start + len(frames) < steps:
        placed[start + len(frames) :] = frames[-1]
    return placed


def paint_grid(
    cells: Sequence[Sequence[np.ndarray | None]], gap: int, gap_value: float = 1.0, blank_value: float | None = None
) -> np.ndarray:
    """Paint rows of cells into one canvas, ``gap`` pixels between neighbouring cells.

    Args:
        cells: rows of cells, top to bottom, each row's cells left to right. A cell is an
            image ``(..., height, width, channels)`` float in [0, 1] (e.g. a sequence ``(time,
            height, width, channels)``), all cells of one shape; ``None`` is a blank cell.
            Rows shorter than the longest end in blank cells.
        gap: pixels between neighbouring cells.
        gap_value: intensity of the gaps (1.0: white).
        blank_value: intensity of blank cells (default ``gap_value``).

    Returns:
        ``(..., rows * (height + gap) - gap, columns * (width + gap) - gap, channels)``
        canvas, float32 or the cells' wider float dtype.
    """
    painted = [cell for row in cells for cell in row if cell is not None]
    if not painted:
        raise ValueError("at least one cell must hold an image")
    shapes = {cell.shape for cell in painted}
    if len(shapes) > 1:
        raise ValueError(f"all cells must have one shape, got {sorted(shapes)}")
    *leading, height, width, channels = painted[0].shape
    columns = max(len(row) for row in cells)
    size = (len(cells) * (height + gap) - gap, columns * (width + gap) - gap)
    dtype = np.result_type(np.float32, *(cell.dtype for cell in painted))
    canvas = np.full((*leading, *size, channels), gap_value, dtype=dtype)
    for row_index, row in enumerate(cells):
        top = row_index * (height + gap)
        for column_index in range(columns):
            cell = row[column_index] if column_index < len(row) else None
            left = column_index * (width + gap)
            if cell is None and blank_value is None:
                continue  # already gap_value
            region = canvas[..., top : top + height, left : left + width, :]
            region[...] = blank_value if cell is None else cell
    return canvas
