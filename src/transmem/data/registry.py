"""The one registry of datasets, used by configs, the CLI and the benchmark.

``DATASETS[name]`` is a :class:`~transmem.data.base.DatasetSpec`. :func:`check_options`
validates a ``[data]`` section without reading data; :func:`build_dataset` builds a split.
"""

from __future__ import annotations

from typing import Any

from transmem.schema import ConfigError, DataConfig, build_dataclass

from . import advection, arrays, balls, digits, natural_video, video_folders
from .base import DatasetSpec, SequenceDataset, check_split

DATASETS: dict[str, DatasetSpec] = {
    "moving_digits": digits.SPEC,
    "bouncing_balls": balls.SPEC,
    "advection_diffusion": advection.SPEC,
    "natural_video": natural_video.SPEC,
    "moving_mnist_file": arrays.MOVING_MNIST_FILE_SPEC,
    "kth": video_folders.KTH_SPEC,
    "video_folder": video_folders.VIDEO_FOLDER_SPEC,
    "array_file": arrays.ARRAY_FILE_SPEC,
}


def resolve_options(data: DataConfig) -> tuple[DatasetSpec, Any]:
    """The spec of ``data.name`` and its validated options instance (raises ConfigError)."""
    spec = DATASETS.get(data.name)
    if spec is None:
        raise ConfigError(f"data.name: unknown dataset {data.name!r}; known: {', '.join(DATASETS)}")
    if not isinstance(data.options, dict):
        raise ConfigError(f"data.options: expected a table, got {data.options!r}")
    options = build_dataclass(spec.options, data.options, "data.options")
    validate = getattr(options, "validate", None)
    if validate is not None:
        validate(data)
    return spec, options


def check_options(data: DataConfig) -> None:
    """Raise ConfigError (one line, naming the key) for an unknown dataset or bad options.

    Reads no data: missing or malformed files are reported by :func:`build_dataset`.
    """
    resolve_options(data)


def build_dataset(data: DataConfig, split: str) -> SequenceDataset:
    """The dataset of ``split`` ("train" | "val" | "test") described by ``data``.

    Raises ConfigError for a bad configuration and DataError for unusable files.
    """
    check_split(split)
    data.validate()
    spec, options = resolve_options(data)
    return spec.build(data, options, split)
