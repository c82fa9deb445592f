"""Array-file datasets: ``moving_mnist_file`` and ``array_file``.

``moving_mnist_file``: the standard ``mnist_test_seq.npy`` (``(20, N, 64, 64)`` uint8,
time first) or a PredRNN ``.npz`` (``clips``, ``dims``, ``input_raw_data``).
``array_file``: ``(N, T, H, W)`` or ``(N, T, H, W, C)`` sequences in ``.npy``, ``.npz`` or
HDF5 (option ``key`` names the array when the file holds several).

Splits are disjoint index ranges of the stored sequences: options ``train_range``,
``val_range`` and ``test_range`` are ``[start, stop]`` fractions of N (sequences
``round(start * N)`` to ``round(stop * N) - 1``) and may not overlap. Every stored sequence
must have at least ``total_len`` frames (else DataError). ``window_stride = 0`` takes one
window per sequence, its first ``total_len`` frames; ``window_stride > 0`` takes every
window at that stride. If fewer sequences are asked for than windows exist, an evenly
spaced subset is used; more are capped (``train_size = 0`` = all).

uint8 values are divided by 255; float values must lie in [0, 1] (checked for the whole
file when a split is built, and for every sequence read). Frames must be
``frame_size x frame_size`` with ``data.channels`` channels; with ``resize = true`` other
frame sizes are resized bilinearly (antialiased when shrinking), otherwise they are an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from transmem.schema import ConfigError, DataConfig

from .array_stores import StoredSequences, open_array_file, open_moving_mnist
from .base import DatasetSpec, SequenceDataset, check_fraction_ranges, evenly_spaced, finite_size
from .frames import DataError, resize_frames, validate_frames

_RANGES = ("train_range", "val_range", "test_range")


@dataclass
class ArraySplitOptions:
    path: str = ""
    train_range: list = field(default_factory=lambda: [0.0, 0.7])  # fractions of the stored sequences
    val_range: list = field(default_factory=lambda: [0.7, 0.8])
    test_range: list = field(default_factory=lambda: [0.8, 1.0])
    window_stride: int = 0  # 0 = first total_len frames of each sequence; > 0 = all windows
    resize: bool = False  # allow bilinear resizing of frames that are not frame_size

    def validate(self, data: DataConfig) -> None:
        if not self.path:
            raise ConfigError(
                "data.options.path: required (the array file to read): give it with --set data.options.path=FILE "
                'or as path = "FILE" under [data.options] in the config'
            )
        check_fraction_ranges(self, _RANGES)
        if self.window_stride < 0:
            raise ConfigError(f"data.options.window_stride: must be >= 0, got {self.window_stride}")


@dataclass
class MovingMnistFileOptions(ArraySplitOptions):
    """``path``: ``mnist_test_seq.npy`` or a PredRNN ``.npz``."""


@dataclass
class ArrayFileOptions(ArraySplitOptions):
    key: str = ""  # array name inside .npz / HDF5 ("" = the only one)


class StoredWindows(SequenceDataset):
    """Windows of ``total_len`` frames of the stored sequences in one index range."""

    def __init__(self, name: str, data: DataConfig, options: ArraySplitOptions, split: str, store: StoredSequences):
        super().__init__(name, data, options, split, 0)
        self.store = store
        check_frames(store, data, options.resize)
        start, stop = getattr(options, f"{split}_range")
        #: stored sequence indices of this split
        self.sequence_ids = np.arange(round(start * store.count), round(stop * store.count))
        lengths = [store.length(int(n)) for n in range(store.count)]
        short = [n for n, length in enumerate(lengths) if length < data.total_len]
        if short:
            raise DataError(
                f"{store.name}: sequence {short[0]} has {lengths[short[0]]} frames, fewer than "
                f"data.total_len = {data.total_len} ({len(short)} such sequences)"
            )
        store.check_values()
        windows = [
            (int(n), first)
            for n in self.sequence_ids
            for first in (range(0, lengths[n] - data.total_len + 1, options.window_stride) if options.window_stride else [0])
        ]
        source = f"{store.name} ({split} range {start}-{stop} of {store.count} sequences)"
        self.windows = [windows[i] for i in evenly_spaced(len(windows), finite_size(data, split, len(windows), source))]
        self.size = len(self.windows)

    def make_sequence(self, index: int) -> np.ndarray:
        n, first = self.windows[index]
        raw = self.store.read(n, first, first + self.data.total_len)
        frames = validate_frames(raw, f"{self.store.name} sequence {n}", ndim=4)
        size = self.data.frame_size
        return resize_frames(frames, size, size)

    def identity(self) -> dict:
        return {**super().identity(), "file": self.store.stamp()}


def check_frames(store: StoredSequences, data: DataConfig, resize: bool) -> None:
    """Channels must match ``data.channels``; frame size ``data.frame_size`` unless ``resize``."""
    if store.channels != data.channels:
        raise DataError(f"{store.name}: frames have {store.channels} channels but data.channels = {data.channels}")
    size = data.frame_size
    if (store.height, store.width) != (size, size) and not resize:
        raise DataError(
            f"{store.name}: frames are {store.height}x{store.width} but data.frame_size = {size} "
            f"(set data.options.resize = true to resize bilinearly)"
        )


def build_moving_mnist_file(data: DataConfig, options: MovingMnistFileOptions, split: str) -> StoredWindows:
    return StoredWindows("moving_mnist_file", data, options, split, open_moving_mnist(options.path))


def build_array_file(data: DataConfig, options: ArrayFileOptions, split: str) -> StoredWindows:
    return StoredWindows("array_file", data, options, split, open_array_file(options.path, options.key))


MOVING_MNIST_FILE_SPEC = DatasetSpec(
    options=MovingMnistFileOptions,
    build=build_moving_mnist_file,
    description="Moving MNIST from mnist_test_seq.npy (T, N, 64, 64) or a PredRNN .npz; split by index ranges",
)
ARRAY_FILE_SPEC = DatasetSpec(
    options=ArrayFileOptions,
    build=build_array_file,
    description="(N, T, H, W[, C]) sequences from .npy / .npz / HDF5, uint8 or float in [0, 1]; split by index ranges",
)
