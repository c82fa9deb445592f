"""Typed run configuration loaded from TOML.

A run is described by one :class:`RunConfig` made of sections (``[data]``, ``[model]``,
``[train]``, ``[eval]``, ``[transfer]``). Every section is a dataclass; loading checks
every key and value and fails with :class:`ConfigError`, whose message is one line that
names the offending key (``train.lr: expected a number, got 'fast'``).

The sections and their own checks are :mod:`transmem.schema` (re-exported here). This
module sits one floor above the registries and adds what needs them or more than one
section: :func:`validate` (the backbone and dataset registries, the cross-section checks),
and loading (:func:`config_from_dict`, :func:`load_config`).

The resolved configuration is saved next to every run as ``config.toml``.
"""

from __future__ import annotations

from pathlib import Path

from transmem.data import check_options
from transmem.models import BACKBONES
from transmem.schema import (  # noqa: F401 - re-exported: the configuration's public names
    BANKS,
    FUSION_HEADS,
    MAX_SEED,
    MEMORY_MERGES,
    METHOD_NAMES,
    NORMS,
    REQUIRED_SECTIONS,
    RETIRED_KEYS,
    ConfigError,
    DataConfig,
    EvalConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    TransferConfig,
    apply_overrides,
    apply_settings,
    build_dataclass,
    check_seed,
    deep_copy,
    format_setting,
    parse_override,
    parse_setting,
    tomllib,
)


def validate(config: RunConfig) -> None:
    """Raise ConfigError (one line, naming the key) unless ``config`` is valid as a whole:
    every section's own checks, the registries' names, and the checks across sections."""
    config.data.validate()
    if config.model.backbone not in BACKBONES:
        raise ConfigError(f"model.backbone: unknown backbone {config.model.backbone!r}; known: {', '.join(BACKBONES)}")
    config.model.validate()
    config.train.validate()
    config.eval.validate()
    config.transfer.validate()
    if config.data.frame_size % config.model.patch:
        raise ConfigError(f"model.patch: frame size {config.data.frame_size} is not divisible by patch {config.model.patch}")
    for layer in config.transfer.layers:
        if config.transfer.method != "none" and layer >= len(config.model.hidden):
            raise ConfigError(f"transfer.layers: layer {layer} does not exist (model has {len(config.model.hidden)} layers)")
    if config.train.time_reversal and config.transfer.method in ("tmu", "distill") and config.transfer.bank == "cached":
        raise ConfigError("train.time_reversal: the cached memory bank holds forward-time sequences; use transfer.bank = 'live'")
    if config.train.reverse_input and config.transfer.method in ("tmu", "distill") and config.transfer.bank == "cached":
        raise ConfigError(
            "train.reverse_input: the cached memory bank holds forward-time sequences; use transfer.bank = 'live' or 'rollout'"
        )
    if config.train.weights == "best_val" and config.data.val_size == 0:
        raise ConfigError("train.weights: 'best_val' chooses on the validation split, which needs data.val_size > 0")
    if config.train.val_start and config.data.val_size == 0:
        raise ConfigError(
            "train.val_start: validates the starting weights on the validation split, which needs data.val_size > 0"
        )
    check_options(config.data)


def config_from_dict(raw: dict, overrides: list[str] | None = None, *, stored: bool = False) -> RunConfig:
    """Build and validate a RunConfig; ``stored=True`` drops :data:`RETIRED_KEYS` first."""
    raw = deep_copy(raw)
    if stored:
        for section, keys in RETIRED_KEYS.items():
            for key in keys:
                if isinstance(raw.get(section), dict):
                    raw[section].pop(key, None)
    raw = apply_overrides(raw, overrides or [])
    config = build_dataclass(RunConfig, raw)
    validate(config)
    if not stored:  # runs saved before these checks keep loading
        check_seed(config.data, "data")
        check_seed(config.train, "train")
        train = config.train
        if train.weights == "best_val" and not (train.val_every or train.val_start):
            raise ConfigError(
                "train.weights: 'best_val' chooses among validations, but with val_every = 0 and val_start = false "
                "the only one is at the end (the last weights); set train.val_every"
            )
    return config


def read_config_file(path: str | Path, *, stored: bool = False) -> dict:
    """The raw dict of a TOML run configuration (checked for its required sections, not
    built: see :func:`load_config`)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: " + ("a folder, not a config file" if path.is_dir() else "config file not found"))
    try:
        raw = tomllib.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:  # TOMLDecodeError, huge integers, bad UTF-8
        raise ConfigError(f"{path}: not valid TOML ({error})") from None
    missing = [section for section in REQUIRED_SECTIONS if section not in raw]
    if missing and not stored:
        raise ConfigError(
            f"{path}: "
            + ("an empty config" if not raw else f"no {' and no '.join(f'[{s}]' for s in missing)} section")
            + '; a config file names at least its [data] and [model] sections (e.g. [data] name = "moving_digits" and '
            "[model] hidden = [32, 32]; see the shipped configs in configs/)"
        )
    return raw


def config_with(raw: dict, settings: dict) -> RunConfig:
    """Build and validate the config of ``raw`` with typed ``settings`` (``{"train.lr": 1e-3}``)."""
    return config_from_dict(apply_settings(deep_copy(raw), settings))


def load_config(path: str | Path, overrides: list[str] | None = None, *, stored: bool = False) -> RunConfig:
    """Read, override, type-check and validate a TOML run configuration.

    ``stored=True`` for a configuration transmem saved itself (see :data:`RETIRED_KEYS`).
    A user's file must name at least its :data:`REQUIRED_SECTIONS`: an empty file would
    otherwise train the built-in defaults.
    """
    raw = read_config_file(path, stored=stored)
    return config_from_dict(raw, overrides, stored=stored)


def save_config(config: RunConfig, path: str | Path) -> None:
    Path(path).write_text(config.to_toml())
