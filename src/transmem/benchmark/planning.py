"""Planning a benchmark: which runs a suite and profile make (methods, seeds, sources, the
builtin zoo), as :class:`~transmem.benchmark.scheduler.Task` objects with their configs."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from importlib.resources import files
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python < 3.11
    import tomli as tomllib

from transmem.benchmark.scheduler import Task
from transmem.benchmark.suites import OPT_IN_METHODS, PROFILES, SCRATCH_METHODS, SUITES, WIDE_METHODS, Profile, Suite
from transmem.config import ConfigError, RunConfig, config_from_dict, load_config, parse_override
from transmem.storage.run_folder import MEMORY_BANK_DIR
from transmem.training.conflicts import config_differences
from transmem.training.cuda_graph import check_graphable
from transmem.training.engine import resolve_device
from transmem.transfer.builtin import PREFIX, builtin_index, builtin_name
from transmem.transfer.methods import METHODS

BUILTIN_ZOO = "builtin"  # --zoo builtin: the sources that ship with transmem, where they match the profile


def configs_root() -> Path:
    return Path(str(files("transmem") / "configs"))


def zoo_folder(out: Path, zoo: str | Path | None = None) -> Path:
    """The folder of the source runs: ``zoo`` if given (made absolute), else ``out/sources``
    (also for ``--zoo builtin``: the sources the builtin zoo lacks are trained there)."""
    return Path(zoo).resolve() if zoo is not None and str(zoo) != BUILTIN_ZOO else Path(out) / "sources"


def builtin_match(suite: Suite, name: str, config: RunConfig) -> str | None:
    """``builtin:NAME`` if the builtin zoo ships the suite's source ``name`` trained with
    exactly ``config``, else None (the benchmark then trains its own)."""
    builtin = builtin_name(suite.name, name)
    entry = builtin_index().get(builtin) if builtin else None
    if entry is None:
        return None
    stored = config_from_dict(tomllib.loads(entry["config"]), stored=True)
    return f"{PREFIX}{builtin}" if not config_differences(stored, config) else None


def plan_runs(
    suite: Suite,
    profile: Profile,
    out: Path,
    methods: list[str] | None = None,
    overrides: list[str] | None = None,
    zoo: Path | None = None,
    source_paths: dict[str, str] | None = None,
) -> list[dict]:
    """Every target run of the benchmark: ``{"method", "seed", "config_file", "overrides", "run_dir", "sources"}``.

    ``sources`` names the suite's sources the run reads (none for scratch). ``methods`` picks
    among the suite's methods (``finetune`` is one run per source) and ``finetune_<source>``
    names (default: every method but the opt-in controls, :data:`OPT_IN_METHODS`); runs come in
    the suite's order.

    Sources are the run folders ``<zoo>/<name>`` (default zoo: ``out/sources``), or the
    paths ``source_paths`` gives (``builtin:NAME``).
    """
    finetunes = [f"finetune_{name}" for name in suite.sources]
    chosen = set(methods or [m for m in suite.methods if m not in OPT_IN_METHODS])
    unknown = sorted(chosen - set(suite.methods) - set(finetunes))
    if unknown:
        raise ConfigError(f"unknown method(s) {unknown}; suite {suite.name} has {[*suite.methods, *finetunes]}")
    source_dirs = {name: (source_paths or {}).get(name) or zoo_folder(out, zoo) / name for name in suite.sources}
    all_sources = "[" + ", ".join(json.dumps(str(p)) for p in source_dirs.values()) + "]"
    plan = []
    for seed in profile.seeds:
        for method in suite.methods:
            base = [
                *profile.target_overrides,
                *(overrides or []),
                f"train.seed={seed}",
                f"transfer.cache_dir={json.dumps(str(out / MEMORY_BANK_DIR))}",
            ]
            variants = (
                {
                    f"finetune_{name}": ([f"transfer.sources=[{json.dumps(str(path))}]"], [name])
                    for name, path in source_dirs.items()
                }
                if method == "finetune"
                else {method: ([], []) if method in SCRATCH_METHODS else ([f"transfer.sources={all_sources}"], list(source_dirs))}
            )
            for name, (extra, sources) in variants.items():
                if name not in chosen and method not in chosen:
                    continue
                plan.append(
                    {
                        "method": name,
                        "seed": seed,
                        "config_file": suite.methods[method],
                        "overrides": base + extra,
                        "run_dir": out / "runs" / name / f"seed{seed}",
                        "sources": sources,
                        "source_paths": [str(source_dirs[s]) for s in sources],
                    }
                )
    return plan


#: What ``--choose`` may not try: the planner sets it per run (``train.seed``, the sources,
#: the cache), it names the method, or it changes the data or the evaluation the values are
#: compared on (``data.*``, ``eval.*``).
NOT_CHOSEN = ("data.", "eval.", "train.seed", "transfer.method", "transfer.sources", "transfer.cache_dir")


def choice_candidates(choose: list[str] | None, fixed: list[str]) -> list[str]:
    """The target settings ``--choose`` tries (``["train.lr=0.0001", ...]``), each also the name
    of its folder; ``[""]`` (one plain benchmark) without ``--choose``. A ConfigError (one
    line) unless they are two or more distinct values of one ``section.key`` that the
    benchmark lets a user choose (:data:`NOT_CHOSEN`) and that ``fixed`` (the ``--set`` and
    ``--target-set`` settings) does not also set, each value a plain folder name."""
    if not choose:
        return [""]
    for candidate in choose:
        key, _, value = candidate.partition("=")
        if not re.fullmatch(r"[a-z_]+\.[a-z_]+", key) or not value:
            raise ConfigError(f"--choose {candidate}: expected section.key=value")
        if not re.fullmatch(r"[A-Za-z0-9_.+-]+", value):
            raise ConfigError(f"--choose {candidate}: the value must be a plain number or word (it names the candidate's folder)")
    keys = list(dict.fromkeys(candidate.partition("=")[0] for candidate in choose))
    if len(keys) > 1:
        raise ConfigError(f"--choose: every value must be of one setting, got {', '.join(keys)}")
    key = keys[0]
    if key.startswith(NOT_CHOSEN):
        raise ConfigError(
            f"--choose {key}: not a setting to choose (the benchmark sets seeds, sources and methods itself, "
            "and the values are compared on one data split and evaluation)"
        )
    values = [parse_override(candidate)[1] for candidate in choose]
    if len(choose) < 2 or len({repr(value) for value in values}) != len(values):
        raise ConfigError(f"--choose {key}: needs two or more distinct values, got {', '.join(choose)}")
    if any(setting.partition("=")[0].strip() == key for setting in fixed):
        raise ConfigError(f"--choose {key}: also set by --set or --target-set; give its values to --choose only")
    return list(choose)


def benchmark_tasks(
    suite_name: str,
    profile_name: str,
    out: str | Path,
    methods: list[str] | None = None,
    overrides: list[str] | None = None,
    seeds: list[int] | None = None,
    zoo: str | Path | None = None,
    target_overrides: list[str] | None = None,
    choose: list[str] | None = None,
    check_devices: bool = True,
) -> tuple[Suite, Profile, Path, list[Task], list[dict]]:
    """The benchmark's runs as scheduler tasks (the sources they read first), with every config loaded and
    validated; also the suite, the profile (with ``seeds``), the absolute ``out`` and the
    target plan of :func:`plan_runs`, each entry naming its ``task`` and its ``candidate``
    (``--choose``: every target runs once per candidate setting, in ``out/<candidate>/``, a
    benchmark folder of its own, all reading the sources of ``out/sources`` or ``zoo``; ``""``
    without). ``check_devices``: refuse runs whose ``train.cuda_graph`` this machine or their
    method cannot capture (not for ``--status``, which only reads). Writes nothing.
    Arguments as :func:`run_benchmark`."""
    if suite_name not in SUITES:
        raise ConfigError(f"unknown suite {suite_name!r}; known: {', '.join(SUITES)}")
    if profile_name not in PROFILES:
        raise ConfigError(f"unknown profile {profile_name!r}; known: {', '.join(PROFILES)}")
    suite, profile = SUITES[suite_name], PROFILES[profile_name]
    if profile.suites and suite_name not in profile.suites:
        raise ConfigError(f"--profile {profile_name}: defined for suite(s) {', '.join(profile.suites)} only, not {suite_name}")
    if seeds is not None:
        if not seeds or len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
            raise ConfigError(f"--seeds: must be distinct non-negative integers, got {seeds}")
        profile = replace(profile, seeds=tuple(seeds))
    # Absolute paths: the runs' configs name the sources and the bank folder, and must not
    # depend on how DIR was spelled (a resumed benchmark would refuse its own runs).
    out = Path(out).resolve()
    builtin = str(zoo) == BUILTIN_ZOO
    zoo = zoo_folder(out, zoo)
    root = configs_root()
    source_configs = {
        name: load_config(root / config_file, [*profile.source_overrides, *(overrides or [])])
        for name, config_file in suite.sources.items()
    }
    shipped = {name: builtin_match(suite, name, config) for name, config in source_configs.items()} if builtin else {}
    shipped = {name: path for name, path in shipped.items() if path}
    fixed = [*(overrides or []), *(target_overrides or [])]
    plan = []
    for candidate in choice_candidates(choose, fixed):
        folder = out / candidate if candidate else out
        for entry in plan_runs(suite, profile, folder, methods, [*fixed, *([candidate] if candidate else [])], zoo, shipped):
            run = f"{entry['method']} seed {entry['seed']}"
            plan.append({**entry, "candidate": candidate, "task": f"{candidate}: {run}" if candidate else run})
    needed = {name for entry in plan for name in entry["sources"]}  # `--methods scratch` trains no source
    tasks = [
        Task(f"source {name}", config, zoo / name, cost=training_cost(config))
        for name, config in source_configs.items()
        if name in needed and name not in shipped
    ]
    for entry in plan:
        if entry["method"] in WIDE_METHODS:  # as wide as the sources it fuses (transfer.fuse may be the choice)
            candidate = [entry["candidate"]] if entry["candidate"] else []
            entry["overrides"].append(_fused_hidden_override(suite, source_configs, [*fixed, *candidate]))
        config = load_config(root / entry["config_file"], entry["overrides"])
        needs = tuple(f"source {name}" for name in entry["sources"] if name not in shipped)
        if entry["candidate"] and config.data.val_size == 0:
            raise ConfigError("--choose: chooses each method's setting on the validation split, which needs data.val_size > 0")
        tasks.append(Task(entry["task"], config, entry["run_dir"], needs, training_cost(config)))
    for task in tasks:  # refused now, not when the run's turn comes hours later
        if check_devices and task.config.train.cuda_graph:
            device = resolve_device(task.config.train.device)
            check_graphable(task.config, device, METHODS[task.config.transfer.method], distributed=False)
    return suite, profile, out, tasks, plan


def training_cost(config: RunConfig) -> float:
    """A rough relative cost of training ``config``, for scheduling only: iterations times the
    squared total width of the network (the gate convolutions' weights), twice for methods
    that read the sources at every step."""
    reads_sources = METHODS[config.transfer.method].reads_sources_every_step
    return float(config.train.iterations * plain_step_cost(config) * (2 if reads_sources else 1))


def plain_step_cost(config: RunConfig) -> float:
    """The cost units (:func:`training_cost`) of one training step of ``config``'s network alone."""
    return float(sum(config.model.hidden) ** 2)


def _fused_hidden_override(suite: Suite, source_configs: dict[str, RunConfig], overrides: list[str]) -> str:
    """``model.hidden=[...]`` for the wide methods: ``transfer.fuse`` times the sources' hidden
    sizes, so ``--set model.hidden=...`` (which sizes the sources) keeps fusion consistent."""
    fusion = load_config(configs_root() / suite.methods["fusion"], overrides)
    member = next(iter(source_configs.values())).model.hidden
    fuse = fusion.transfer.fuse or len(suite.sources)
    return f"model.hidden={[fuse * h for h in member]}"
