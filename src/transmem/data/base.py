"""The dataset base class, the registry entry type and shared helpers.

Every dataset maps an integer index to one sequence ``(T, C, H, W)`` float32 in [0, 1]
(``T = data.total_len``, ``H = W = data.frame_size``, ``C = data.channels``). Indexing is a
pure function of (dataset content, seed, split, index): the same index gives the same
tensor in any process and in any order, so training can resume by re-deriving batches from
indices and a memory-bank cache can be keyed by index.

Random choices for one sequence come from :func:`sequence_rng`, seeded by
``(data.seed, split, index, dataset salt)``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import operator
import zlib
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from transmem.schema import ConfigError, DataConfig

SPLITS = ("train", "val", "test")
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}

#: ``len()`` of an online dataset: a nominal epoch size. Any non-negative index is valid.
NOMINAL_ONLINE_SIZE = 1_000_000


def check_split(split: str) -> str:
    if split not in _SPLIT_CODES:
        raise ValueError(f"split: expected one of {', '.join(SPLITS)}, got {split!r}")
    return split


def sequence_rng(seed: int, split: str, index: int, salt: str) -> np.random.Generator:
    """Random generator for sequence ``index`` of ``split``; ``salt`` is the dataset name."""
    entropy = [seed % (1 << 64), _SPLIT_CODES[split], index, zlib.crc32(salt.encode())]
    return np.random.default_rng(np.random.SeedSequence(entropy))


def requested_size(data: DataConfig, split: str) -> int:
    """The number of sequences the config asks for in ``split`` (0 = online / all)."""
    return {"train": data.train_size, "val": data.val_size, "test": data.test_size}[check_split(split)]


def finite_size(data: DataConfig, split: str, available: int, source: str) -> int:
    """Size of a file-backed split holding ``available`` sequences: ``train_size = 0`` means
    all; a larger request is capped to ``available``. Raises DataError (naming ``source``)
    when sequences are requested but the split has none."""
    from .frames import DataError

    requested = requested_size(data, split)
    if split == "train" and requested == 0:
        requested = available
    if available == 0 and (requested > 0 or split == "train"):
        raise DataError(f"{source}: no {split} sequences of {data.total_len} frames")
    return min(requested, available)


def evenly_spaced(available: int, count: int) -> np.ndarray:
    """``count`` distinct indices spread evenly over ``range(available)`` (count <= available)."""
    if count >= available:
        return np.arange(available)
    if count <= 0:
        return np.zeros(0, dtype=np.int64)
    return np.floor(np.arange(count) * (available / count)).astype(np.int64)


def check_fraction_ranges(options: Any, names: tuple[str, ...]) -> None:
    """Validate options that are ``[start, stop]`` fractions of a file: inside [0, 1],
    ordered, and pairwise non-overlapping (so splits never share sequences)."""
    ranges = {}
    for name in names:
        value = getattr(options, name)
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        if len(value) != 2 or not numbers:
            raise ConfigError(f"data.options.{name}: expected [start, stop] fractions, got {value!r}")
        start, stop = (float(v) for v in value)
        if not 0.0 <= start <= stop <= 1.0:
            raise ConfigError(f"data.options.{name}: need 0 <= start <= stop <= 1, got {value!r}")
        ranges[name] = (start, stop)
    items = list(ranges.items())
    for i, (name_a, (a0, a1)) in enumerate(items):
        for name_b, (b0, b1) in items[i + 1 :]:
            if a0 < a1 and b0 < b1 and a0 < b1 and b0 < a1:
                raise ConfigError(f"data.options.{name_a}: overlaps data.options.{name_b} ({[a0, a1]} vs {[b0, b1]})")


class SequenceDataset(Dataset):
    """Base class: ``dataset[i]`` is a float32 tensor ``(T, C, H, W)`` in [0, 1].

    Subclasses implement :meth:`make_sequence` (numpy, same shape) and may extend
    :meth:`identity` with what else determines their content (file stamps).

    ``online`` datasets accept any non-negative index (each gives a distinct sequence);
    their ``len()`` is the nominal :data:`NOMINAL_ONLINE_SIZE`. Finite datasets accept
    ``0 <= index < len(dataset)`` and raise IndexError otherwise.
    """

    #: bump in a subclass when a code change alters the sequences it generates
    version = 1

    def __init__(self, name: str, data: DataConfig, options: Any, split: str, size: int, online: bool = False):
        self.name = name
        self.data = data
        self.options = options
        self.split = check_split(split)
        self.online = bool(online)
        self.size = NOMINAL_ONLINE_SIZE if online else int(size)
        self.shape = (data.total_len, data.channels, data.frame_size, data.frame_size)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index) -> torch.Tensor:
        index = self._check_index(index)
        sequence = self.make_sequence(index)
        if sequence.shape != self.shape or sequence.dtype != np.float32:
            raise RuntimeError(
                f"{self.name}: made a sequence of shape {sequence.shape} {sequence.dtype}, expected {self.shape} float32"
            )
        if not sequence.flags.writeable:  # a view of a read-only (memory-mapped) file: torch gets a copy
            sequence = sequence.copy()
        return torch.from_numpy(np.ascontiguousarray(sequence))

    def batch(self, indices) -> torch.Tensor:
        """Stack the sequences of ``indices`` into ``(B, T, C, H, W)``."""
        return torch.stack([self[i] for i in indices])

    def make_sequence(self, index: int) -> np.ndarray:
        """Sequence ``index`` as float32 ``(T, C, H, W)`` in [0, 1]. Must be deterministic."""
        raise NotImplementedError

    def rng(self, index: int) -> np.random.Generator:
        return sequence_rng(self.data.seed, self.split, index, self.name)

    def identity(self) -> dict:
        """Everything that determines the content; hashed by :meth:`fingerprint`."""
        return {
            "dataset": self.name,
            "version": self.version,
            "options": dataclasses.asdict(self.options),
            "frame_size": self.data.frame_size,
            "channels": self.data.channels,
            "total_len": self.data.total_len,
            "seed": self.data.seed,
            "split": self.split,
            "online": self.online,
            "size": self.size,
        }

    def fingerprint(self) -> str:
        """16 hex digits identifying the exact content (see :meth:`identity`)."""
        text = json.dumps(self.identity(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def _check_index(self, index) -> int:
        try:
            index = operator.index(index)
        except TypeError:
            raise TypeError(f"{self.name}: index must be an integer, got {type(index).__name__}") from None
        if index < 0 or (not self.online and index >= self.size):
            raise IndexError(f"{self.name} {self.split}: index {index} out of range (size {self.size})")
        return index

    def __repr__(self) -> str:
        size = "online" if self.online else str(self.size)
        return f"{type(self).__name__}({self.name!r}, split={self.split!r}, size={size}, shape={self.shape})"


@dataclass
class DatasetSpec:
    """A registry entry of :data:`transmem.data.DATASETS`.

    ``options`` is the builder's options dataclass (defaults for every key; an optional
    ``validate(self, data: DataConfig)`` method raises ConfigError). ``build(data, options,
    split)`` returns the :class:`SequenceDataset` of ``split`` ("train" | "val" | "test").
    """

    options: type
    build: Callable[[DataConfig, Any, str], SequenceDataset]
    description: str
