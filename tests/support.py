"""What the tests share: tiny configurations, config files, data configs and CSV logs.

Fixtures built from these (a tiny source zoo, a finished tiny run, two tiny sources), each
trained once per test session, are in ``tests/conftest.py``; the kill harness (start
``transmem train``, kill it, check the resumed run) is in ``tests/processes.py``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import tomli_w

from transmem.benchmark.request import BenchmarkRequest
from transmem.config import RunConfig, config_from_dict, parse_setting
from transmem.schema import DataConfig

# ----------------------------------------------------------------------------- tiny configurations


# Overrides that shrink every run of a benchmark suite to a few seconds (16x16 frames, 2 iterations).
TINY_BENCHMARK = [
    "data.frame_size=16",
    "data.input_len=3",
    "data.total_len=6",
    "data.train_size=8",
    "data.val_size=2",
    "data.test_size=4",
    "data.batch_size=2",
    "model.hidden=[8, 8]",
    "train.iterations=2",
    "transfer.rank_probe=2",
    "train.checkpoint_every=1",
    "train.log_every=1",
    "eval.batch_size=4",
]
TINY_SETTINGS = tuple(parse_setting(text) for text in TINY_BENCHMARK)  # the same, typed (BenchmarkRequest.settings)


def tiny_request(out, methods=None, suite: str = "digits", settings=(), **options) -> BenchmarkRequest:
    """A quiet benchmark request of ``suite`` into ``out``, every run shrunk by :data:`TINY_BENCHMARK`
    (then ``settings``, ``"key=value"`` strings); ``options``: the request's other fields."""
    return BenchmarkRequest(
        suite,
        Path(out),
        methods=tuple(methods) if methods else None,
        settings=(*TINY_SETTINGS, *(parse_setting(text) for text in settings)),
        progress=options.pop("progress", False),
        **options,
    )


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


def write_config(path: Path, raw: dict) -> Path:
    """Write ``raw`` (a config as a dict) to the TOML file ``path``; returns ``path``."""
    path.write_text(tomli_w.dumps(raw))
    return path


def write_tiny_config(path: Path, **sections) -> Path:
    """A tiny config (:func:`tiny_raw` with ``sections`` merged in) written to ``path``."""
    return write_config(path, tiny_raw(**sections))


def data_config(name: str, *, input_len: int = 3, total_len: int = 6, **fields) -> DataConfig:
    """A small ``[data]`` section of dataset ``name``: 3 input frames of 6, other fields as given."""
    return DataConfig(name=name, input_len=input_len, total_len=total_len, **fields)


# ----------------------------------------------------------------------------- run configs and logs


def kill_raw(iterations: int = 30, checkpoint_every: int = 2, keep: int = 2) -> dict:
    """A tiny deterministic run: 16x16 frames, T = 6, hidden [8], batch 2, cosine LR."""
    return tiny_raw(
        data={"val_size": 2, "test_size": 2},
        train={
            "iterations": iterations,
            "log_every": 1,
            "checkpoint_every": checkpoint_every,
            "keep_checkpoints": keep,
            "device": "cpu",
            "deterministic": True,
            "lr_schedule": "cosine",
            "time_reversal": True,
        },
    )


def csv_rows(path: Path) -> list[dict]:
    """The rows of a CSV log (``train.csv``, ``val.csv``) as dicts of strings."""
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))
