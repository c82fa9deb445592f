"""``transmem speed --shared-machine``: two trainings on one machine, alone and side by side.

Each measurement trains the ``digits`` scratch target (ConvLSTM 2 x 32, 64x64 frames, batch 8)
in ``transmem train`` subprocesses and reads their seconds per iteration from ``train.csv``
(the first logged rows, warm-up, left out). Per OpenMP setting it runs one process alone,
then two at once, and prints the slowdown of the pair against the lone run, all in one run
of this command:

- ``transmem default`` (nothing set): each training takes its share of torch's default
  threads, recounted while it trains (:mod:`transmem.training.thread_share`);
- ``libgomp default`` (``GOMP_SPINCOUNT`` at libgomp's documented default of 300,000,
  ``OMP_WAIT_POLICY`` unset, ``OMP_NUM_THREADS`` pinned at torch's default, one per core:
  what transmem ran with before it shared): a thread that reaches the end of a parallel
  region spins before it sleeps;
- ``passive`` (``OMP_WAIT_POLICY=PASSIVE``, same pinned count): waiting threads sleep at once;
- ``1 thread`` (``OMP_NUM_THREADS=1``): no OpenMP team at all.

Nothing else may run meanwhile: the numbers are only meaningful on a quiet machine.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import tempfile
import time
from importlib.resources import files
from pathlib import Path
from typing import Callable

from transmem.evaluation.report import markdown_table
from transmem.storage.run_folder import RunFolder

ALL_CORES = "torch's default"  # replaced by torch's default thread count (one per core), pinned
SETTINGS = {  # name -> environment variables set (None: removed) for both processes
    "transmem default": {"OMP_NUM_THREADS": None, "OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": None},
    "libgomp default": {"GOMP_SPINCOUNT": "300000", "OMP_WAIT_POLICY": None, "OMP_NUM_THREADS": ALL_CORES},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": None, "OMP_NUM_THREADS": ALL_CORES},
    "1 thread": {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": None},
}
REFERENCE = "libgomp default"  # the last column compares each lone run with this one
WARMUP_ROWS = 1  # logged rows left out of the mean
TRAINED_CONFIG = "digits/scratch.toml"  # the shipped config (transmem/configs/) each process trains


def _environment(setting: dict, cores: int) -> dict:
    """This process's environment with ``setting`` applied, ``cores`` for :data:`ALL_CORES`."""
    env = dict(os.environ)
    for key, value in setting.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = str(cores) if value == ALL_CORES else value
    return env


def torch_default_threads() -> int:
    """torch's thread count in a process without ``OMP_NUM_THREADS`` (this one may have it set)."""
    env = _environment({"OMP_NUM_THREADS": None}, 0)
    command = [sys.executable, "-c", "import torch; print(torch.get_num_threads())"]
    return int(subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout)


def _start(folder: Path, iterations: int, env: dict) -> subprocess.Popen:
    """Start ``transmem train`` of :data:`TRAINED_CONFIG` for ``iterations`` in ``folder``."""
    config = Path(str(files("transmem") / "configs")) / TRAINED_CONFIG
    overrides = [
        f"train.iterations={iterations}",
        "train.log_every=2",
        "train.checkpoint_every=1000",
        "train.val_every=0",
        "data.train_size=64",
        "data.val_size=0",
        "data.test_size=8",
    ]
    command = [sys.executable, "-m", "transmem", "train", str(config), "--out", str(folder)]
    for item in overrides:
        command += ["--set", item]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _seconds_per_iteration(folder: Path) -> float:
    """The mean seconds per iteration of the run in ``folder``, its warm-up rows left out."""
    with open(RunFolder(folder).train_log, newline="") as handle:
        rows = list(csv.DictReader(handle))[WARMUP_ROWS:]
    return sum(float(r["seconds_per_iteration"]) for r in rows) / len(rows)


def _measure(root: Path, name: str, processes: int, iterations: int, cores: int) -> list[float]:
    """Seconds per iteration of each of ``processes`` trainings run at once under setting ``name``."""
    env = _environment(SETTINGS[name], cores)
    folders = [root / f"{name.replace(' ', '_')}_{processes}_{k}" for k in range(processes)]
    running = [_start(folder, iterations, env) for folder in folders]
    for process in running:
        _, err = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"speed --shared-machine: a training process failed: {err.strip().splitlines()[-1:]}")
    return [_seconds_per_iteration(folder) for folder in folders]


def measure_sharing(iterations: int = 12, log: Callable[[str], None] = print) -> list[dict]:
    """One row per setting: seconds per iteration alone and side by side, and their ratio."""
    rows, cores = [], torch_default_threads()
    with tempfile.TemporaryDirectory(prefix="transmem-sharing-") as tmp:
        for name in SETTINGS:
            started = time.perf_counter()
            alone = _measure(Path(tmp), name, 1, iterations, cores)[0]
            pair = _measure(Path(tmp), name, 2, iterations, cores)
            rows.append({"setting": name, "alone": alone, "pair": pair, "slowdown": max(pair) / alone})
            log(
                f"{name}: alone {alone:.3f} s/it, side by side {pair[0]:.3f} / {pair[1]:.3f} s/it ({time.perf_counter() - started:.0f} s)"
            )
    return rows


def format_sharing(rows: list[dict]) -> str:
    """:func:`measure_sharing`'s rows as a markdown table, each lone run also against :data:`REFERENCE`'s."""
    reference = next(row["alone"] for row in rows if row["setting"] == REFERENCE)
    header = ["setting", "alone (s/it)", "two side by side (s/it, each)", "slowdown of the pair", f"alone vs {REFERENCE}"]
    cells = [
        [
            row["setting"],
            f"{row['alone']:.3f}",
            " / ".join(f"{p:.3f}" for p in row["pair"]),
            f"{row['slowdown']:.2f}x",
            f"{row['alone'] / reference:.2f}x",
        ]
        for row in rows
    ]
    return markdown_table(header, cells)
