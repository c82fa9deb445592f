"""Ranking a zoo's sources for a target, on the target's validation split only.

``transmem zoo rank`` and ``transfer.init_from = "best"`` ask which source a target should
start from. Each source gets two scores, both validation MSE (summed over a frame's pixels,
averaged over sequences and the predicted frames, as everywhere in transmem):

- ``zero_shot_mse``: the source as it is, predicting the target's validation sequences;
- ``probe_mse``: after a short finetune *probe* on the target's training split
  (``probe`` iterations, the target's own optimiser settings, seed 0), for a source with the
  target's architecture. Zero-shot rewards a source that already predicts the target;
  the probe rewards the one that learns it fastest, which is what finetuning needs.

Sources are ranked by probe MSE (when ``probe > 0``; sources of another architecture, which
cannot be finetuned, come last), else by zero-shot MSE. The test split is never built.

A ranking is a pure function of the sources' weights, the target's data, model, optimiser
and evaluation settings and ``probe``: it is stored in ``folder/<key>/rank.json`` with its
probe runs (resumable, like any run) and reused, so the seeds of a benchmark and the methods
that start from ``"best"`` share one ranking.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import torch

from transmem.config import RunConfig, config_from_dict
from transmem.data import DataError, build_dataset
from transmem.run.folder_run import open_run, train_open_run
from transmem.storage.files import atomic_write_text, remove_stale_temporaries
from transmem.storage.locks import FileLock
from transmem.storage.model_file import load_model
from transmem.transfer.zoo import Source, SourceError, check_same_backbone

RANK_VERSION = 2  # 2: the key hashes the settings that differ from their defaults
RANK_FILE = "rank.json"
PROBE_SEED = 0  # one ranking for every seed of a target


def probe_config(target: RunConfig, source: str, iterations: int) -> RunConfig:
    """The target's configuration as a ``iterations``-long finetune from ``source``."""
    raw = target.to_dict()
    raw["transfer"] = {"method": "finetune", "sources": [source]}
    train_section = raw["train"]
    train_section.update(
        iterations=iterations,
        seed=PROBE_SEED,
        val_every=0,
        # the probe's score is its validation after `iterations` updates, whatever the target keeps
        weights="last",
        val_start=False,
        log_every=min(train_section["log_every"], iterations),
        checkpoint_every=min(train_section["checkpoint_every"], iterations),
    )
    return config_from_dict(raw, stored=True)


def changed_settings(config: RunConfig) -> dict[str, dict]:
    """The data, model, train and eval settings of ``config`` that differ from their defaults.

    A setting at its default is left out, so an option added to transmem later (at a default
    that keeps the old behaviour) leaves every stored ranking's key as it was. A changed
    default changes results without changing this: bump ``RANK_VERSION`` with it.
    """
    changed = {}
    for name in ("data", "model", "train", "eval"):
        section = getattr(config, name)
        default = dataclasses.asdict(type(section)())
        changed[name] = {key: value for key, value in dataclasses.asdict(section).items() if value != default.get(key)}
    return changed


def ranking_key(sources: list[Source], target: RunConfig, probe: int) -> str:
    """What a ranking depends on, hashed: source weights, the probe's settings, ``probe``."""
    description = {
        "version": RANK_VERSION,
        "sources": [source.digest for source in sources],
        "probe": probe,
        **changed_settings(probe_config(target, "-", max(probe, 1))),
    }
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:16]


def rank_sources(
    sources: list[Source], target: RunConfig, folder: str | Path, probe: int = 100, *, progress: bool = False
) -> list[dict]:
    """Rank ``sources`` for ``target``; best first.

    Returns one row per source: ``{"rank", "name", "path", "zero_shot_mse", "probe_mse"
    (None without a probe), "note"}``. Probe runs and ``rank.json`` go to ``folder/<key>/``;
    a finished ranking there is read back instead of recomputed.
    """
    if not sources:
        raise SourceError("zoo rank: no sources given")
    if probe < 0:
        raise SourceError(f"zoo rank: the probe length must be >= 0, got {probe}")
    val = build_dataset(target.data, "val")
    if len(val) == 0:
        raise DataError(
            "zoo rank: the target has no validation split (data.val_size = 0); sources are never ranked on the test split"
        )
    key = ranking_key(sources, target, probe)
    home = Path(folder) / key
    home.mkdir(parents=True, exist_ok=True)
    with FileLock(home / "rank.lock"), torch.random.fork_rng(devices=[]):  # probes leave the caller's RNG as it was
        remove_stale_temporaries(home)  # a writer killed here earlier (we hold the lock)
        cached = _read_ranking(home / RANK_FILE, key)
        if cached is not None:
            return cached
        rows = [_score(n, source, target, val, home, probe, progress) for n, source in enumerate(sources)]
        rows.sort(key=lambda row: (row["probe_mse"] is None, row["probe_mse"] or 0.0, row["zero_shot_mse"]))
        for rank, row in enumerate(rows, 1):
            row["rank"] = rank
        atomic_write_text(home / RANK_FILE, json.dumps({"key": key, "probe": probe, "rows": rows}, indent=1))
    return rows


def _score(n: int, source: Source, target: RunConfig, val, home: Path, probe: int, progress: bool) -> dict:
    device = next(source.model.parameters()).device
    row = {"rank": 0, "name": source.name, "path": str(source.path), "probe_mse": None, "note": ""}
    row["zero_shot_mse"] = _val_mse(source.model, val, target, device)
    try:
        check_same_backbone(source, target, "a finetune probe")
    except SourceError:
        row["note"] = "other architecture: zero-shot only, cannot start the target"
        return row
    if probe > 0:
        config = probe_config(target, str(source.path), probe)
        run = home / f"probe{n}_{source.name}"
        with open_run(config, run, force=False, progress=progress, check_test_split=False) as opened:
            train_open_run(opened, None)  # a finetune of one source: nothing to rank
        row["probe_mse"] = _val_mse(load_model(run, device).model, val, config, device)
    return row


def _val_mse(model, val, config: RunConfig, device) -> float:
    # Imported here: the evaluation package loads torchmetrics and matplotlib (about a second),
    # which `transmem train` pays only when it validates or ranks.
    from transmem.evaluation.evaluate import evaluate_model

    return float(evaluate_model(model, val, config, device=device)["model"]["mse"]["mean"])


def _read_ranking(path: Path, key: str) -> list[dict] | None:
    try:
        stored = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return stored["rows"] if isinstance(stored, dict) and stored.get("key") == key else None


def format_ranking(rows: list[dict]) -> str:
    """A plain-text table of :func:`rank_sources` rows."""
    width = max([len("source"), *(len(row["name"]) for row in rows)])
    lines = [f"{'rank':>4}  {'source':<{width}}  {'zero-shot val mse':>17}  {'probe val mse':>13}  note"]
    for row in rows:
        probe = f"{row['probe_mse']:.2f}" if row["probe_mse"] is not None else "-"
        lines.append(
            f"{row['rank']:>4}  {row['name']:<{width}}  {row['zero_shot_mse']:>17.2f}  {probe:>13}  {row['note']}".rstrip()
        )
    return "\n".join(lines)
