"""Animated GIF previews of a dataset (for ``transmem data preview NAME --out FILE.gif``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from transmem.data import build_dataset
from transmem.evaluation.grid import paint_grid
from transmem.schema import ConfigError, DataConfig

#: gray pixels between neighbouring sequences
SEPARATOR = 2


def tile_sequences(sequences: np.ndarray) -> np.ndarray:
    """Sequences ``(N, T, C, H, W)`` float in [0, 1] -> uint8 frames for a GIF: ``(T, H',
    W')`` gray or ``(T, H', W', 3)`` RGB, sequences side by side. With C not 1 or 3, the
    channels of each sequence are stacked vertically as gray images."""
    count, steps, channels, height, width = sequences.shape
    if channels not in (1, 3):
        sequences = sequences.reshape(count, steps, 1, channels * height, width)
    cells = [sequence.transpose(0, 2, 3, 1) for sequence in sequences]  # (T, H, W, C) each
    tiled = paint_grid([cells], gap=SEPARATOR, gap_value=0.5)  # (T, H, W', C)
    frames = np.rint(np.clip(tiled, 0.0, 1.0) * 255.0).astype(np.uint8)
    return frames[..., 0] if frames.shape[-1] == 1 else frames


def preview_dataset(data: DataConfig, split: str, num: int, out_path, fps: float = 5.0) -> Path:
    """Write a looping GIF of sequences ``0 .. num-1`` of ``split`` side by side; returns the path."""
    from transmem.evaluation.animations import GIF_MAX_SIDE, write_gif_frames

    if num < 1:
        raise ConfigError(f"--num: must be at least 1, got {num}")
    width = num * (data.frame_size + SEPARATOR) - SEPARATOR
    if width > GIF_MAX_SIDE:
        most = (GIF_MAX_SIDE + SEPARATOR) // (data.frame_size + SEPARATOR)
        raise ConfigError(f"--num: {num} sequences side by side make a GIF {width} pixels wide; at most {most} fit in a GIF")
    dataset = build_dataset(data, split)
    if not dataset.online and num > len(dataset):
        raise ConfigError(f"--num: {data.name} {split} has only {len(dataset)} sequences, asked for {num}")
    sequences = dataset.batch(range(num)).numpy()
    out_path = Path(out_path)
    write_gif_frames(out_path, tile_sequences(sequences), duration_ms=1000.0 / fps)
    return out_path
