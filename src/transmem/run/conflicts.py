"""Refusing to mix two runs in one folder, and the config saved next to every run.

``transmem train CONFIG --out RUN`` on a folder that already holds a run:

- same resolved config: the run resumes (or is reported finished);
- a run whose last attempt diverged, rerun with another ``train.lr`` or ``train.grad_clip``
  and nothing else changed: it resumes from its last good checkpoint with the new values
  (:mod:`transmem.run.divergence`), unless ``--force`` (then it starts over);
- different config: refused with a message listing the differing keys, unless ``--force``;
  then the old run's files are *renamed* with a ``.previous-<time>`` suffix, never deleted;
- a ``config.toml`` edited by hand: refused the same way, since the weights were trained
  with the config stored in ``model.safetensors`` (and in every checkpoint, checked by
  :mod:`transmem.run.resume` before resuming);
- no saved config but files a run writes (``train.csv``, ``checkpoints``...): refused the
  same way, since those files are not known to belong to this run.
"""

from __future__ import annotations

import time
from pathlib import Path

from transmem.config import ConfigError, RunConfig, load_config
from transmem.errors import RunConflictError
from transmem.run.divergence import RETUNABLE, last_attempt_diverged, may_retune, only_retunable
from transmem.storage.files import atomic_write_text
from transmem.storage.model_file import stored_model_config
from transmem.storage.run_folder import CONFIG_FILE, MODEL_FILE, RUN_FILES, SHARED_CACHES


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


# Where a run keeps caches it shares with others, not what it trains: a finished run copied
# into another benchmark folder (another cache folder) is the same run.
PLACES = frozenset({"transfer.cache_dir"})


def config_differences(old: RunConfig, new: RunConfig) -> list[str]:
    """The dotted keys whose values differ, the cache's place aside (:data:`PLACES`)."""
    a, b = _flatten(old.to_dict()), _flatten(new.to_dict())
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k) and k not in PLACES)


def describe_differences(old: RunConfig, new: RunConfig, keys: list[str], old_name: str, new_name: str, limit: int = 3) -> str:
    """``"model.hidden = [32, 32] in the model, [64] in the config"`` for the first ``limit`` keys."""
    a, b = _flatten(old.to_dict()), _flatten(new.to_dict())
    shown = "; ".join(f"{k} = {a.get(k, '(unset)')!r} {old_name}, {b.get(k, '(unset)')!r} {new_name}" for k in keys[:limit])
    return shown + (f"; and {len(keys) - limit} more" if len(keys) > limit else "")


def check_run_dir(config: RunConfig, run_dir: Path, force: bool = False) -> bool:
    """Refuse ``run_dir`` if it holds another run (unless ``force``); write nothing.

    A run is compared with its ``config.toml`` and, once finished, with the config stored in
    its ``model.safetensors`` (what the weights were trained with): a ``config.toml`` edited
    by hand does not make the folder hold another run. Returns True if ``prepare_run_dir``
    will set an old run aside (``force`` and a different config), i.e. the folder's
    checkpoints must not be resumed.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunConflictError(f"{run_dir}: exists and is not a folder")
    saved = run_dir / CONFIG_FILE
    if not saved.exists():  # a new run, unless the folder holds files a run would overwrite
        # A memory bank or ranking folder alone may be another run's shared cache: not a conflict.
        found = [name for name in RUN_FILES if name not in SHARED_CACHES and (run_dir / name).exists()]
        if found and not force:
            raise RunConflictError(
                f"{run_dir}: holds {', '.join(found)} but no {CONFIG_FILE} (not a transmem run, or its config "
                f"was removed), which training would overwrite; choose another --out or pass --force to keep "
                f"those files renamed *.previous-<time>"
            )
        return bool(found)
    try:
        differences = config_differences(load_config(saved, stored=True), config)
    except ConfigError as error:
        differences = [f"(unreadable saved config: {error})"]
    trained = stored_model_config(run_dir / MODEL_FILE) if (run_dir / MODEL_FILE).exists() else None
    edited = config_differences(trained, config) if trained is not None else []
    if not differences and not edited:
        return False
    if not force and not edited and only_retunable(differences) and may_retune(run_dir, config):
        return False  # a diverged run resumed with another train.lr (transmem.run.divergence)
    if force:
        return True
    advice = "choose another --out or pass --force to keep the old files renamed *.previous-<time>"
    if edited and not differences:  # config.toml says this run, the weights say otherwise
        raise RunConflictError(
            f"{run_dir}: its {CONFIG_FILE} was edited after training: {MODEL_FILE} was trained with another config "
            f"({describe_differences(trained, config, edited, 'in the model', 'in the config given')}); "
            f"restore {CONFIG_FILE}, {advice}"
        )
    if trained is not None and not edited:  # the weights are this run's; config.toml says otherwise
        raise RunConflictError(
            f"{run_dir}: its {CONFIG_FILE} was edited after training: it differs in {', '.join(differences[:6])} from "
            f"the config {MODEL_FILE} was trained with, which is the one given; restore {CONFIG_FILE}, {advice}"
        )
    state = "a finished" if (run_dir / MODEL_FILE).exists() else "an unfinished"
    shown = ", ".join(differences[:6]) + (" ..." if len(differences) > 6 else "")
    diverged = f" (after a divergence only {' and '.join(RETUNABLE)} may change)" if last_attempt_diverged(run_dir) else ""
    raise RunConflictError(f"{run_dir}: holds {state} run of a different config (differs in {shown}){diverged}; {advice}")


def prepare_run_dir(config: RunConfig, run_dir: Path, force: bool = False, set_aside: bool = False) -> None:
    """Create ``run_dir`` or check that it holds this very run; save the resolved config.

    ``set_aside``: rename the folder's run files even though its config matches (``--force``
    on a run that cannot be resumed, e.g. because a source changed).
    """
    run_dir = Path(run_dir)
    if check_run_dir(config, run_dir, force) or set_aside:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        suffix, n = f".previous-{stamp}", 1
        # Never rename onto an earlier set-aside run (a rename over a file would delete it).
        while any((run_dir / f"{name}{suffix}").exists() for name in RUN_FILES):
            n += 1
            suffix = f".previous-{stamp}-{n}"
        for name in RUN_FILES:
            if (run_dir / name).exists():
                (run_dir / name).rename(run_dir / f"{name}{suffix}")
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / CONFIG_FILE, config.to_toml())
