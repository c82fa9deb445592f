"""Checking, converting and resizing arrays of frames.

Every frame that leaves :mod:`transmem.data` is float32 in [0, 1]. Stored data comes as
uint8 (0-255, converted explicitly by ``/ 255``) or as floats that must already lie in
[0, 1]: out-of-range floats are an error, never silently rescaled or clipped.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from transmem.errors import DataError

_FLOAT_DTYPES = (np.float16, np.float32, np.float64)
_TORCH_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def validate_frames(array, name: str, *, ndim: int | None = None):
    """Check an array of frames and return it as float32 in [0, 1].

    ``array`` is a numpy array or torch tensor of rank 3 to 5 (e.g. ``(T, H, W)``,
    ``(T, C, H, W)`` or ``(N, T, C, H, W)``; pass ``ndim`` to require one rank). uint8 values
    are divided by 255 exactly; floating-point values must be finite and inside [0, 1].
    Any other dtype, an empty array, NaN/inf or an out-of-range value raises
    :class:`DataError` naming ``name``. The result has the same kind (numpy or torch) and
    shape as the input.
    """
    is_tensor = isinstance(array, torch.Tensor)
    if not is_tensor and not isinstance(array, np.ndarray):
        raise DataError(f"{name}: expected a numpy array or torch tensor, got {type(array).__name__}")
    rank = array.ndim
    if ndim is not None and rank != ndim:
        raise DataError(f"{name}: expected {ndim} dimensions, got shape {tuple(array.shape)}")
    if ndim is None and not 3 <= rank <= 5:
        raise DataError(f"{name}: expected 3 to 5 dimensions of frames, got shape {tuple(array.shape)}")
    size = array.numel() if is_tensor else array.size
    if size == 0:
        raise DataError(f"{name}: empty array of shape {tuple(array.shape)}")
    if is_tensor:
        return _validate_tensor(array, name)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / np.float32(255.0)
    if array.dtype.type not in _FLOAT_DTYPES:
        raise DataError(f"{name}: unsupported dtype {array.dtype} (expected uint8 or float in [0, 1])")
    _check_float_values(bool(np.isfinite(array).all()), array.min, array.max, name)
    return np.asarray(array, dtype=np.float32)


def _validate_tensor(tensor: torch.Tensor, name: str) -> torch.Tensor:
    if tensor.dtype == torch.uint8:
        return tensor.to(torch.float32) / 255.0
    if tensor.dtype not in _TORCH_FLOATS:
        raise DataError(f"{name}: unsupported dtype {tensor.dtype} (expected uint8 or float in [0, 1])")
    _check_float_values(bool(torch.isfinite(tensor).all()), tensor.min, tensor.max, name)
    return tensor.to(torch.float32)


def _check_float_values(all_finite: bool, minimum, maximum, name: str) -> None:
    """Refuse NaN/inf, then values outside [0, 1]; ``minimum`` / ``maximum`` are called only
    for finite data and compare in the stored precision, before any rounding."""
    if not all_finite:
        raise DataError(f"{name}: contains NaN or infinite values")
    low, high = minimum(), maximum()
    if low < 0 or high > 1:
        raise DataError(f"{name}: float values must lie in [0, 1], found range [{float(low):g}, {float(high):g}]")


def check_value_range(array: np.ndarray, name: str, chunk: int = 1 << 24) -> None:
    """Check that a (possibly memory-mapped, possibly huge) array is valid frame data.

    uint8 needs no scan; float arrays are scanned in chunks of ``chunk`` elements along the
    first axis for NaN/inf and values outside [0, 1]. Raises :class:`DataError`.
    """
    if array.dtype == np.uint8:
        return
    if array.dtype.type not in _FLOAT_DTYPES:
        raise DataError(f"{name}: unsupported dtype {array.dtype} (expected uint8 or float in [0, 1])")
    per_row = max(1, int(np.prod(array.shape[1:], dtype=np.int64)))
    step = max(1, chunk // per_row)
    for start in range(0, array.shape[0], step):
        block = np.asarray(array[start : start + step])
        finite = np.isfinite(block)
        if not finite.all():
            where = _first_index(~finite, start)
            raise DataError(f"{name}: contains NaN or infinite values (first at index {where} of shape {array.shape})")
        low, high = block.min(), block.max()
        if low < 0 or high > 1:
            where = _first_index((block < 0) | (block > 1), start)
            raise DataError(
                f"{name}: float values must lie in [0, 1], found range [{float(low):g}, {float(high):g}] "
                f"(first outside at index {where} of shape {array.shape})"
            )


def _first_index(bad: np.ndarray, start: int) -> tuple[int, ...]:
    """Index, in the whole array, of the first True of ``bad`` (a block starting at row ``start``)."""
    index = np.unravel_index(int(np.argmax(bad)), bad.shape)
    return (start + int(index[0]), *(int(i) for i in index[1:]))


def resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinearly resize float frames ``(T, C, h, w)`` to ``(T, C, height, width)``.

    Uses antialiasing when shrinking (so thin strokes do not alias away). Values stay in
    [0, 1] up to rounding; they are clipped to [0, 1] against overshoot.
    """
    if frames.shape[-2:] == (height, width):
        return frames
    shrinking = height < frames.shape[-2] or width < frames.shape[-1]
    tensor = torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32))
    out = F.interpolate(tensor, size=(height, width), mode="bilinear", align_corners=False, antialias=shrinking)
    return out.clamp_(0.0, 1.0).numpy()


def file_stamp(path: str | os.PathLike) -> str:
    """``"<resolved path>:<size in bytes>:<mtime in ns>"``: changes when the file does."""
    path = Path(path)
    try:
        info = path.stat()
    except OSError as error:
        raise DataError(f"{path}: cannot read file ({error.strerror})") from None
    return f"{path.resolve()}:{info.st_size}:{info.st_mtime_ns}"


def require_file(path: str | os.PathLike, what: str = "file") -> Path:
    """Return ``path`` as a Path, or raise DataError if it is not an existing file."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path}: {what} not found")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    return path


def require_folder(path: str | os.PathLike) -> Path:
    """Return ``path`` as a Path, or raise DataError if it is not an existing folder."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path}: folder not found")
    if not path.is_dir():
        raise DataError(f"{path}: not a folder")
    return path


def read_frames_file(path: str | Path) -> torch.Tensor:
    """Frames from a plain ``.npy`` file as float32 ``(B, T, C, H, W)`` in [0, 1]: ``(T, H, W)``
    and ``(T, C, H, W)`` arrays get the missing axes, uint8 is scaled (see
    :func:`validate_frames`). Raises DataError naming the file for anything else."""
    file = Path(path)
    if not file.exists():
        raise DataError(f"{file}: file not found")
    if not file.is_file():
        raise DataError(f"{file}: is not a file")
    try:
        array = np.load(file, allow_pickle=False)
    except (ValueError, EOFError) as error:  # EOFError: an empty or truncated file
        raise DataError(f"{file}: not a plain .npy array ({error or 'empty file'})") from None
    if not isinstance(array, np.ndarray):  # an .npz archive
        array.close()
        raise DataError(f"{file}: an .npz archive; save the frames alone as .npy (numpy.save)")
    if array.ndim == 3:
        array = array[None, :, None]
    elif array.ndim == 4:
        array = array[None]
    elif array.ndim != 5:
        raise DataError(f"{file}: expected (T, H, W), (T, C, H, W) or (B, T, C, H, W), got shape {array.shape}")
    return torch.as_tensor(np.asarray(validate_frames(array, str(file)), dtype=np.float32))
