"""Random access to sequences stored in array files (.npy, .npz, HDF5, PredRNN .npz).

A :class:`StoredSequences` gives ``count`` sequences of ``(channels, height, width)``
frames, sequence ``n`` having ``length(n)`` frames, read as raw uint8 or float
``(t, C, H, W)`` by ``read(n, first, stop)``. Opening checks layout, rank, dtype and clip
tables and raises :class:`~.frames.DataError` naming the file; :meth:`check_values` scans
float data for NaN/inf and values outside [0, 1] (once per file version and process).

``.npy`` files are memory-mapped; ``.npz`` members are loaded whole (cached per process);
HDF5 files are reopened for every read (safe across DataLoader worker processes).
"""

from __future__ import annotations

import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np

from .frames import DataError, check_value_range, file_stamp, require_file

#: layouts of a single array: T = frames, N = sequences, H W = pixels, C = channels
LAYOUTS = ("TNHW", "NTHW", "NTHWC")
_SCANNED: set[str] = set()


class StoredSequences:
    """Base: ``count`` sequences of ``(channels, height, width)`` frames in ``path``."""

    path: Path
    key: str = ""
    count: int
    channels: int
    height: int
    width: int
    dtype: np.dtype

    def length(self, n: int) -> int:
        raise NotImplementedError

    def read(self, n: int, first: int, stop: int) -> np.ndarray:
        raise NotImplementedError

    def values(self):
        """The array-like to scan for bad values (sliceable along its first axis)."""
        raise NotImplementedError

    @property
    def name(self) -> str:
        return f"{self.path}[{self.key}]" if self.key else str(self.path)

    def stamp(self) -> str:
        return f"{file_stamp(self.path)}:{self.key}"

    def check_dtype(self) -> None:
        if self.dtype != np.uint8 and self.dtype.kind != "f":
            raise DataError(f"{self.name}: unsupported dtype {self.dtype} (expected uint8 or float in [0, 1])")

    def check_values(self) -> None:
        stamp = self.stamp()
        if stamp not in _SCANNED:
            check_value_range(self.values(), self.name)
            _SCANNED.add(stamp)


class ArrayStore(StoredSequences):
    """One array in one of :data:`LAYOUTS` (``TNHW`` is ``mnist_test_seq.npy``)."""

    def __init__(self, path: Path, array, layout: str, key: str = ""):
        self.path, self.key, self.array, self.layout = path, key, array, layout
        if array.ndim != len(layout):
            raise DataError(f"{self.name}: expected {len(layout)} dimensions {tuple(layout)}, got shape {tuple(array.shape)}")
        sizes = dict(zip(layout, array.shape))
        self.count, self.frames = sizes["N"], sizes["T"]
        self.channels, self.height, self.width = sizes.get("C", 1), sizes["H"], sizes["W"]
        self.dtype = np.dtype(array.dtype)
        if min(array.shape) == 0:
            raise DataError(f"{self.name}: empty array of shape {tuple(array.shape)}")
        self.check_dtype()

    def length(self, n: int) -> int:
        return self.frames

    def read(self, n: int, first: int, stop: int) -> np.ndarray:
        if self.layout == "TNHW":
            return np.asarray(self.array[first:stop, n])[:, None]
        block = np.asarray(self.array[n, first:stop])
        return block[:, None] if self.layout == "NTHW" else block.transpose(0, 3, 1, 2)

    def values(self):
        return self.array

    def __getstate__(self) -> dict:
        """Pickle a memory-mapped .npy by path (for spawned DataLoader workers), not by value."""
        state = self.__dict__.copy()
        if isinstance(self.array, np.memmap):
            state["array"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self.array is None:
            self.array = _load_npy(self.path)


class Hdf5Store(ArrayStore):
    """A ``NTHW`` or ``NTHWC`` dataset of an HDF5 file, reopened for every read."""

    def __init__(self, path: Path, key: str):
        import h5py

        try:
            with h5py.File(path, "r") as handle:
                key = key or _only_key(path, [k for k in handle if isinstance(handle[k], h5py.Dataset)])
                if key not in handle or not isinstance(handle[key], h5py.Dataset):
                    raise DataError(f"{path}: no dataset {key!r} (datasets: {', '.join(_datasets(handle)) or 'none'})")
                shape, dtype = handle[key].shape, handle[key].dtype
        except OSError as error:
            raise DataError(f"{path}: cannot read as HDF5 ({error})") from None
        super().__init__(path, _ShapeOnly(shape, dtype), _layout(path, len(shape), key), key)

    def read(self, n: int, first: int, stop: int) -> np.ndarray:
        import h5py

        with h5py.File(self.path, "r") as handle:
            block = handle[self.key][n, first:stop]
        return block[:, None] if self.layout == "NTHW" else block.transpose(0, 3, 1, 2)

    def check_values(self) -> None:
        import h5py

        stamp = self.stamp()
        if stamp not in _SCANNED:
            with h5py.File(self.path, "r") as handle:
                check_value_range(handle[self.key], self.name)
            _SCANNED.add(stamp)


class ClipStore(StoredSequences):
    """PredRNN ``.npz``: ``input_raw_data`` ``(frames, C, H, W)``, ``clips`` ``(2, N, 2)`` of
    [start, length] for the input and output parts of each sequence, ``dims`` ``[[C, H, W]]``."""

    def __init__(self, path: Path):
        self.path = path
        members = _npz_members(str(path), file_stamp(path))
        missing = [k for k in ("clips", "dims", "input_raw_data") if k not in members]
        if missing:
            raise DataError(f"{path}: not a PredRNN .npz (missing {', '.join(missing)}; has {', '.join(members)})")
        raw, clips = members["input_raw_data"], members["clips"]
        if raw.ndim != 4:
            raise DataError(f"{path}: input_raw_data must be (frames, C, H, W), got shape {raw.shape}")
        dims = np.asarray(members["dims"]).reshape(-1)
        if dims.size != 3 or tuple(int(d) for d in dims) != raw.shape[1:]:
            raise DataError(f"{path}: dims {members['dims'].tolist()} do not match input_raw_data frames {raw.shape[1:]}")
        if clips.ndim != 3 or clips.shape[0] != 2 or clips.shape[2] != 2 or clips.shape[1] == 0:
            raise DataError(f"{path}: clips must have shape (2, num_sequences, 2), got {clips.shape}")
        if clips.dtype.kind not in "iu":
            raise DataError(f"{path}: clips must hold integers [start, length], got dtype {clips.dtype}")
        starts, lengths = clips[..., 0].astype(np.int64), clips[..., 1].astype(np.int64)
        bad = np.flatnonzero(((starts < 0) | (lengths < 0) | (starts + lengths > len(raw))).any(axis=0))
        if len(bad):
            raise DataError(f"{path}: clip of sequence {bad[0]} reaches outside input_raw_data ({len(raw)} frames)")
        self.raw, self.starts, self.lengths = raw, starts, lengths
        self.count = clips.shape[1]
        self.channels, self.height, self.width = raw.shape[1:]
        self.dtype = raw.dtype
        self.check_dtype()

    def length(self, n: int) -> int:
        return int(self.lengths[:, n].sum())

    def read(self, n: int, first: int, stop: int) -> np.ndarray:
        frames = np.concatenate(
            [np.arange(start, start + length) for start, length in zip(self.starts[:, n], self.lengths[:, n])]
        )
        return self.raw[frames[first:stop]]

    def values(self):
        return self.raw


class _ShapeOnly:
    """Stands in for an HDF5 dataset while reading its shape and dtype."""

    def __init__(self, shape, dtype):
        self.shape, self.dtype, self.ndim = tuple(shape), dtype, len(shape)


def _layout(path: Path, rank: int, key: str = "") -> str:
    if rank == 4:
        return "NTHW"
    if rank == 5:
        return "NTHWC"
    name = f"{path}[{key}]" if key else str(path)
    raise DataError(f"{name}: expected (N, T, H, W) or (N, T, H, W, C) sequences, got {rank} dimensions")


def _only_key(path: Path, keys: list[str]) -> str:
    if len(keys) != 1:
        raise DataError(f"{path}: holds {len(keys)} arrays ({', '.join(keys) or 'none'}); set data.options.key")
    return keys[0]


def _datasets(handle) -> list[str]:
    names: list[str] = []
    handle.visit(lambda name: names.append(name) if hasattr(handle[name], "shape") else None)
    return names


@lru_cache(maxsize=4)
def _npz_members(path: str, stamp: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise DataError(f"{path}: cannot read as .npz ({error})") from None


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: cannot read as .npy ({error})") from None


def open_moving_mnist(path: str | Path) -> StoredSequences:
    """``mnist_test_seq.npy`` ``(T, N, H, W)`` or a PredRNN ``.npz`` (clips, dims, input_raw_data)."""
    path = require_file(path, "Moving MNIST file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return ArrayStore(path, _load_npy(path), "TNHW")
    if suffix == ".npz":
        return ClipStore(path)
    raise DataError(f"{path}: expected .npy (mnist_test_seq layout) or .npz (PredRNN layout)")


def open_array_file(path: str | Path, key: str = "") -> StoredSequences:
    """``(N, T, H, W)`` or ``(N, T, H, W, C)`` sequences in .npy, .npz (``key``) or HDF5 (``key``)."""
    path = require_file(path, "array file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        array = _load_npy(path)
        return ArrayStore(path, array, _layout(path, array.ndim))
    if suffix == ".npz":
        members = _npz_members(str(path), file_stamp(path))
        key = key or _only_key(path, list(members))
        if key not in members:
            raise DataError(f"{path}: no array {key!r} (arrays: {', '.join(members)})")
        array = members[key]
        return ArrayStore(path, array, _layout(path, array.ndim, key), key)
    if suffix in (".h5", ".hdf5", ".hdf"):
        return Hdf5Store(path, key)
    raise DataError(f"{path}: unsupported file type {suffix!r} (expected .npy, .npz, .h5 or .hdf5)")
