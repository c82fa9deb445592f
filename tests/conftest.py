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
