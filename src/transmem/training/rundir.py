"""Run folders: the config saved next to every run, and refusal to mix two runs.

``transmem train CONFIG --out RUN`` on a folder that already holds a run:

- same resolved config: the run resumes (or is reported finished);
- different config: refused with a message listing the differing keys, unless ``--force``;
  then the old run's files are *renamed* with a ``.previous-<time>`` suffix, never deleted.
"""

from __future__ import annotations

import time
from pathlib import Path

from transmem.config import ConfigError, RunConfig, load_config
from transmem.training.checkpoint import atomic_write_text

CONFIG_FILE = "config.toml"
RUN_FILES = ("config.toml", "checkpoints", "model.safetensors", "train.csv", "val.csv", "metrics.json", "memory_bank")


class RunConflictError(RuntimeError):
    """The output folder holds a run of a different configuration."""


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def config_differences(old: RunConfig, new: RunConfig) -> list[str]:
    a, b = _flatten(old.to_dict()), _flatten(new.to_dict())
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def prepare_run_dir(config: RunConfig, run_dir: Path, force: bool = False) -> None:
    """Create ``run_dir`` or check that it holds this very run; save the resolved config."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunConflictError(f"{run_dir}: exists and is not a folder")
    saved = run_dir / CONFIG_FILE
    if saved.exists():
        try:
            differences = config_differences(load_config(saved), config)
        except ConfigError as error:
            differences = [f"(unreadable saved config: {error})"]
        if differences:
            finished = (run_dir / "model.safetensors").exists()
            state = "a finished" if finished else "an unfinished"
            if not force:
                shown = ", ".join(differences[:6]) + (" ..." if len(differences) > 6 else "")
                raise RunConflictError(
                    f"{run_dir}: holds {state} run of a different config (differs in {shown}); "
                    f"choose another --out or pass --force to keep the old files renamed *.previous-<time>"
                )
            stamp = time.strftime("%Y%m%d-%H%M%S")
            for name in RUN_FILES:
                if (run_dir / name).exists():
                    (run_dir / name).rename(run_dir / f"{name}.previous-{stamp}")
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(saved, config.to_toml())
