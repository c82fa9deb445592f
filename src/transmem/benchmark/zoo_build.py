"""``transmem zoo build``: train the builtin sources from scratch and pack them.

Each builtin source (``configs/builtin_zoo.toml`` names its suite and source) is that
suite's source config with the ``full`` profile's source overrides, trained and scored on its test
set exactly as ``transmem benchmark SUITE --profile full`` trains it (the same tasks, so a
benchmark's finished source runs in ``--out`` are reused). Packing writes
``OUT/builtin_zoo/NAME.safetensors`` and ``OUT/builtin_zoo/index.json``; ``install`` copies
them into the package's ``builtin_zoo/`` (the source tree, for an editable install), where
``builtin:NAME`` finds them.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import torch

from transmem.benchmark.planning import training_cost
from transmem.benchmark.run_logs import train_threads
from transmem.benchmark.scheduler import Task, run_tasks
from transmem.benchmark.suites import PROFILES, configs_root, load_suite
from transmem.config import ConfigError, RunConfig, config_with, read_config_file, tomllib
from transmem.data import build_dataset
from transmem.evaluation.evaluate import evaluate_model
from transmem.evaluation.metrics import METRIC_NAMES
from transmem.storage.files import atomic_write_bytes, atomic_write_text, sha256_file
from transmem.storage.model_file import load_model
from transmem.storage.run_folder import MODEL_FILE
from transmem.transfer.builtin import CHECK_SEQUENCES, INDEX_FILE, builtin_folder
from transmem.version import __version__

RECIPE_FILE = "builtin_zoo.toml"  # in the shipped configs folder: each builtin source's suite and source


def zoo_recipe() -> dict[str, tuple[str, str]]:
    """Builtin name -> (shipped suite, that suite's name for the source), from ``configs/builtin_zoo.toml``."""
    recipe = tomllib.loads((configs_root() / RECIPE_FILE).read_text())
    return {name: (entry["suite"], entry["source"]) for name, entry in recipe.items()}


def builtin_config(name: str) -> RunConfig:
    """The configuration a builtin source is trained with (its suite's, ``full`` profile)."""
    suite, source = zoo_recipe()[name]
    return config_with(read_config_file(load_suite(suite).sources[source]), PROFILES["full"].source_settings)


def build_builtin_zoo(out: str | Path, names: list[str] | None = None, jobs: int = 1, install: bool = False, log=print) -> dict:
    """Train (or reuse) and pack the builtin sources ``names`` (default: all). Returns the index."""
    recipe = zoo_recipe()
    names = list(names or recipe)
    unknown = [n for n in names if n not in recipe]
    if unknown:
        raise ConfigError(f"zoo build: unknown builtin source(s) {unknown}; known: {', '.join(recipe)}")
    out = Path(out).resolve()
    configs = {name: builtin_config(name) for name in names}
    tasks = [Task(f"source {name}", config, out / name, cost=training_cost(config)) for name, config in configs.items()]
    metrics = run_tasks(tasks, jobs, log=log)
    packed = out / "builtin_zoo"
    packed.mkdir(parents=True, exist_ok=True)
    index = _read_index(packed / INDEX_FILE)
    for name in names:
        if metrics[f"source {name}"] is None:
            raise ConfigError(f"zoo build: source {name} has no test scores; its data has no test split")
        index[name] = _pack(name, out / name, packed, metrics[f"source {name}"])
        log(f"packed {name}: {index[name]['bytes'] / 1e6:.2f} MB, test mse {index[name]['test']['mse']['mean']:.2f}")
    atomic_write_text(packed / INDEX_FILE, json.dumps({"sources": index}, indent=1, sort_keys=True))
    if install:
        install_builtin(packed, names, log)
    return index


def _pack(name: str, run_dir: Path, packed: Path, metrics: dict) -> dict:
    model_file = run_dir / MODEL_FILE
    target = packed / f"{name}.safetensors"
    atomic_write_bytes(target, model_file.read_bytes())
    loaded = load_model(target)
    config = loaded.config
    test = build_dataset(config.data, "test")
    check = evaluate_model(loaded.model, test, config, max_sequences=CHECK_SEQUENCES)["model"]["mse"]["mean"]
    suite, source = zoo_recipe()[name]
    return {
        "file": target.name,
        "sha256": sha256_file(target),
        "bytes": target.stat().st_size,
        "suite": suite,
        "source": source,
        "backbone": config.model.backbone,
        "hidden": list(config.model.hidden),
        "patch": config.model.patch,
        "dataset": config.data.name,
        "options": dict(config.data.options),
        "frame_size": config.data.frame_size,
        "iterations": config.train.iterations,
        "config": config.to_toml(),
        "test": {m: {"mean": metrics[m]["mean"], "per_frame": metrics[m]["per_frame"]} for m in METRIC_NAMES},
        "copy_last_frame": {m: {"mean": metrics["copy_last_frame"][m]["mean"]} for m in METRIC_NAMES},
        "check_sequences": CHECK_SEQUENCES,
        "check_mse": check,
        "transmem_version": __version__,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "threads": train_threads(run_dir),
        "command": f"transmem zoo build --sources {name} (= transmem benchmark {suite} --profile full's source {source})",
    }


def _read_index(path: Path) -> dict:
    try:
        return json.loads(path.read_text()).get("sources", {})
    except (FileNotFoundError, json.JSONDecodeError, AttributeError):
        return {}


def install_builtin(packed: Path, names: list[str], log=print) -> None:
    """Copy packed sources into the package's ``builtin_zoo/``, merging its index."""
    folder = builtin_folder()
    folder.mkdir(parents=True, exist_ok=True)
    index = _read_index(folder / INDEX_FILE)
    new = _read_index(packed / INDEX_FILE)
    for name in names:
        atomic_write_bytes(folder / new[name]["file"], (packed / new[name]["file"]).read_bytes())
        index[name] = new[name]
    atomic_write_text(folder / INDEX_FILE, json.dumps({"sources": index}, indent=1, sort_keys=True))
    log(f"installed {', '.join(names)} into {folder}")
