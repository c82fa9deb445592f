"""Shared tiny configurations: small frames, short sequences, seeded."""

from __future__ import annotations

import pytest

from transmem.config import RunConfig, config_from_dict


def tiny_raw(**sections) -> dict:
    raw = {
        "data": {
            "name": "moving_digits",
            "frame_size": 16,
            "input_len": 3,
            "total_len": 6,
            "train_size": 0,
            "val_size": 4,
            "test_size": 4,
            "batch_size": 2,
            "options": {"num_digits": 1},
        },
        "model": {"backbone": "convlstm", "hidden": [8], "kernel": 3, "patch": 4},
        "train": {"iterations": 6, "lr": 3e-3, "log_every": 2, "checkpoint_every": 3, "sampling_stop": 0.5},
        "eval": {"batch_size": 4},
    }
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return raw


def tiny_config(overrides: list[str] | None = None, **sections) -> RunConfig:
    return config_from_dict(tiny_raw(**sections), overrides)


@pytest.fixture
def tiny():
    return tiny_config


# ----------------------------------------------------------------------------- a tiny source zoo
#
# Trained once per test session (16x16 frames, 6-frame sequences, 6 iterations):
# - ``digits1``: ConvLSTM [8], patch 4, 1 moving digit (online data);
# - ``digits2``: ConvLSTM [8], patch 4, 2 moving digits;
# - ``small``:   ConvLSTM [4], patch 2 (memory 4 x 8 x 8: needs projection and interpolation);
# - ``coarse``:  PredRNN [8], patch 8 (memory 8 x 2 x 2: interpolation only, ST-LSTM source).
# Targets read 3-digit sequences (``train_size`` 8, so the cached bank applies).

SOURCE_SPECS = {
    "digits1": {},
    "digits2": {"data": {"options": {"num_digits": 2}}},
    "small": {"model": {"hidden": [4], "patch": 2}},
    "coarse": {"model": {"backbone": "predrnn", "hidden": [8], "patch": 8}},
}
TARGET_DATA = {"train_size": 8, "options": {"num_digits": 3}}
STEPS = 5  # total_len - 1


def target_config(sources, *, data=None, model=None, train_=None, **transfer) -> RunConfig:
    """A tiny TMU target (cached bank) reading ``sources``; keyword arguments set ``[transfer]`` keys."""
    transfer = {"method": "tmu", "sources": [str(s) for s in sources], "layers": [0], "bank": "cached", **transfer}
    sections = {"data": {**TARGET_DATA, **(data or {})}, "transfer": transfer}
    if model:
        sections["model"] = model
    if train_:
        sections["train"] = train_
    return tiny_config(**sections)


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    from transmem.training.loop import train

    root = tmp_path_factory.mktemp("zoo")
    for name, sections in SOURCE_SPECS.items():
        train(tiny_config(**sections), root / name, progress=False)
    return {name: root / name for name in SOURCE_SPECS}
