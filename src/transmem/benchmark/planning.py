"""Planning a benchmark: every run a request makes (sources, methods, seeds, ``--choose``
values), each with its typed config, all checked before anything is written.

The plan is a list of :class:`~transmem.benchmark.scheduler.Task` (sources first) and one
:class:`TargetRun` per target run. Each target config is the suite's target config with its
``[transfer]`` section replaced by the method's (``configs/methods.toml``), then the
profile's, the method's own (its ``target`` table), the user's and the planner's settings
(seed, sources, bank folder, width).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from transmem.benchmark.budget import RunFlops, flops_budget, iterations_within, run_flops, with_iterations
from transmem.benchmark.request import BenchmarkRequest
from transmem.benchmark.scheduler import Task
from transmem.benchmark.suites import PROFILES, MethodSpec, Profile, Suite, benchmark_methods, load_suite
from transmem.config import (
    ConfigError,
    RunConfig,
    config_from_dict,
    config_with,
    deep_copy,
    parse_setting,
    read_config_file,
    tomllib,
)
from transmem.data import DataError, build_dataset
from transmem.run.conflicts import check_run_dir, config_differences
from transmem.storage.model_file import stored_model_config
from transmem.storage.run_folder import MEMORY_BANK_DIR, MODEL_FILE
from transmem.training.cuda_graph import check_graphable
from transmem.training.setup import resolve_device
from transmem.transfer.builtin import PREFIX, builtin_index
from transmem.transfer.methods import METHODS
from transmem.transfer.zoo import architecture


@dataclass
class TargetRun:
    """One target run of the plan."""

    method: str  # the method's name in the tables (finetune_<source> for per-source methods)
    seed: int
    candidate: str  # the --choose value it trains with ("" without --choose)
    task: str  # its task's name
    run_dir: Path
    sources: list[str]  # the suite's names of the sources it reads
    source_paths: list[str]
    config: RunConfig
    flops: RunFlops | None = None
    metrics: dict | None = None  # its test metrics, once evaluated

    @property
    def train_flops(self) -> float:
        return self.flops.total(self.config.train.iterations) if self.flops else float("nan")


@dataclass
class Plan:
    request: BenchmarkRequest
    suite: Suite
    profile: Profile
    out: Path  # absolute
    tasks: list[Task]
    runs: list[TargetRun]
    source_paths: dict[str, str]  # every source the runs read: run folder, model file or builtin:NAME


def plan_benchmark(request: BenchmarkRequest, preflight: bool = True, count_flops: bool = True) -> Plan:
    """Every run of ``request``, its config loaded and checked. Writes nothing.

    ``preflight``: also refuse what would fail only when a run's turn came: a
    ``train.cuda_graph`` this machine or the method cannot capture, data that cannot be read
    or whose splits are empty, a run folder holding another run (not for ``--status``,
    which only reads). ``count_flops``: count each run's training FLOPs
    (:mod:`~transmem.benchmark.budget`; always under ``--budget flops``).
    """
    suite, profile = load_suite(request.suite), _profile(request)
    if profile.suites and suite.name not in profile.suites:
        raise ConfigError(f"--profile {request.profile}: defined for suite(s) {', '.join(profile.suites)} only, not {suite.name}")
    # Absolute paths: the runs' configs name the sources and the bank folder, and must not
    # depend on how DIR was spelled (a resumed benchmark would refuse its own runs).
    out = Path(request.out).resolve()
    fixed = {**dict(request.settings), **dict(request.target_settings)}
    sources = _resolve_sources(suite, profile, request)
    runs, references = [], []
    for candidate in choice_candidates(request.choose, fixed):
        folder = out / candidate if candidate else out
        settings = {**fixed, **dict([parse_setting(candidate)] if candidate else [])}
        runs += _target_runs(suite, profile, request, folder, settings, sources, candidate)
        references += _budget_runs(suite, profile, request, folder, settings, sources, candidate)
    _check_names(runs)
    for run in runs:
        _check_run(run, sources.configs, preflight)
    plan = Plan(request, suite, profile, out, [], runs, {n: sources.paths[n] for r in runs for n in r.sources})
    if count_flops or request.budget == "flops":
        _count_flops(plan, sources.configs, references)
    plan.tasks = _tasks(plan, sources)
    if preflight:
        _check_data([run.config for run in runs], [t.config for t in plan.tasks if t.name.startswith("source ")])
        for task in plan.tasks:  # a folder holding another run is refused now, not at its turn
            check_run_dir(task.config, task.run_dir)
    return plan


def _check_names(runs: list[TargetRun]) -> None:
    """Refuse two runs of one name (a source named like a method's suffix: ``best`` makes
    ``finetune_best``)."""
    seen = set()
    for run in runs:
        if run.task in seen:
            raise ConfigError(f"two runs named {run.task!r}: rename the source whose name makes {run.method!r}")
        seen.add(run.task)


def _profile(request: BenchmarkRequest) -> Profile:
    if request.profile not in PROFILES:
        raise ConfigError(f"benchmark: unknown profile {request.profile!r}; known: {', '.join(PROFILES)}")
    profile = PROFILES[request.profile]
    return replace(profile, seeds=tuple(request.seeds)) if request.seeds is not None else profile


# ----------------------------------------------------------------------------- sources


@dataclass
class _Sources:
    paths: dict[str, str]  # name -> where the runs read it
    configs: dict[str, RunConfig]  # name -> the config it was (or will be) trained with
    to_train: dict[str, RunConfig]  # the source configs the benchmark trains, into zoo/<name>


def _resolve_sources(suite: Suite, profile: Profile, request: BenchmarkRequest) -> _Sources:
    """Where each source comes from, and its config; refuses a missing or unfinished one."""
    resolved = _Sources({}, {}, {})
    zoo = request.zoo_folder()
    settings = {**profile.source_settings, **dict(request.settings)}
    for name, where in suite.sources.items():
        if suite.trains(name):
            config = config_with(_with_absolute_data_paths(read_config_file(where)), settings)
            shipped = builtin_match(name, config) if request.builtin_zoo else None
            resolved.paths[name] = shipped or str(zoo / name)
            if shipped is None:
                resolved.to_train[name] = config
        else:
            resolved.paths[name] = where
            config = _trained_source_config(suite, name, where)
        resolved.configs[name] = config
    return resolved


def builtin_match(name: str, config: RunConfig) -> str | None:
    """``builtin:NAME`` of a builtin source trained with exactly ``config`` (the one named
    ``name`` first), else None: the benchmark then trains its own."""
    index = builtin_index()
    for builtin in sorted(index, key=lambda n: n != name):
        stored = config_from_dict(tomllib.loads(index[builtin]["config"]), stored=True)
        if not config_differences(stored, config):
            return f"{PREFIX}{builtin}"
    return None


def _trained_source_config(suite: Suite, name: str, where: str) -> RunConfig:
    """The config a finished source was trained with; ConfigError if it is not one."""
    if where.startswith(PREFIX):
        entry = builtin_index().get(where[len(PREFIX) :])
        if entry is None:
            raise ConfigError(f"{suite.path}: sources.{name}: no builtin source {where} (see transmem zoo list builtin)")
        return config_from_dict(tomllib.loads(entry["config"]), stored=True)
    path = Path(where)
    model_file = path / MODEL_FILE if path.is_dir() else path
    config = stored_model_config(model_file) if model_file.is_file() else None
    if config is None:
        what = "no model.safetensors in it" if path.is_dir() else "no such file" if not path.exists() else "not a model file"
        raise ConfigError(f"{suite.path}: sources.{name}: {where} is not a finished run ({what})")
    return config


# ----------------------------------------------------------------------------- target runs


def _chosen_methods(suite: Suite, request: BenchmarkRequest) -> set[str]:
    available = suite.available()
    finetunes = [f"{m}_{s}" for m, spec in available.items() if spec.per_source for s in suite.sources]
    chosen = set(request.methods or suite.methods)
    unknown = sorted(chosen - set(available) - set(finetunes))
    if unknown:
        raise ConfigError(f"unknown method(s) {unknown}; suite {suite.name} has {[*available, *finetunes]}")
    return chosen


def _budget_runs(suite, profile, request, folder: Path, settings: dict, sources: _Sources, candidate: str) -> list[TargetRun]:
    """``--budget-of METHOD``: METHOD's runs of one seed, planned for their FLOPs, never trained."""
    if request.budget_of is None:
        return []
    alone = replace(request, methods=(request.budget_of,))
    try:
        return _target_runs(suite, replace(profile, seeds=profile.seeds[:1]), alone, folder, settings, sources, candidate)
    except ConfigError as error:
        raise ConfigError(f"--budget-of: {error}") from None


def _target_runs(suite, profile, request, folder: Path, settings: dict, sources: _Sources, candidate: str) -> list[TargetRun]:
    """The target runs of one ``--choose`` value (or of the plain benchmark) in ``folder``."""
    chosen, target = _chosen_methods(suite, request), _with_absolute_data_paths(read_config_file(suite.target))
    runs = []
    for seed in profile.seeds:
        for spec in suite.available().values():
            for name, read in _variants(spec, list(suite.sources)).items():
                if name not in chosen and spec.name not in chosen:
                    continue
                planned = {
                    "train.seed": seed,
                    "transfer.cache_dir": str(folder / MEMORY_BANK_DIR),
                    **({"transfer.sources": [sources.paths[s] for s in read]} if read else {}),
                    **_width(spec, settings, [sources.configs[s] for s in suite.sources]),
                }
                config = _method_config(target, spec, {**profile.target_settings, **spec.target, **settings, **planned})
                task = f"{candidate}: {name} seed {seed}" if candidate else f"{name} seed {seed}"
                run_dir = folder / "runs" / name / f"seed{seed}"
                runs.append(TargetRun(name, seed, candidate, task, run_dir, read, [sources.paths[s] for s in read], config))
    return runs


#: ``[data.options]`` keys that name files or folders
DATA_PATH_KEYS = ("path", "root")


def _with_absolute_data_paths(raw: dict) -> dict:
    """``raw`` with relative data paths made absolute (relative to where transmem runs, as
    ``transmem train`` reads them): every run's config names the file it read, so a rerun
    from another folder cannot resume runs on other data."""
    options = raw.get("data", {}).get("options", {})
    for key in DATA_PATH_KEYS:
        if isinstance(options.get(key), str) and options[key] and not Path(options[key]).is_absolute():
            options[key] = str(Path(options[key]).resolve())
    return raw


def _variants(spec: MethodSpec, source_names: list[str]) -> dict[str, list[str]]:
    """Run name -> the sources it reads: one per source for a per-source method."""
    if spec.per_source:
        return {f"{spec.name}_{name}": [name] for name in source_names}
    return {spec.name: list(source_names) if spec.reads_sources else []}


def _method_config(target: dict, spec: MethodSpec, settings: dict) -> RunConfig:
    raw = deep_copy(target)
    raw["transfer"] = deep_copy(spec.transfer)
    return config_with(raw, settings)


def _width(spec: MethodSpec, settings: dict, source_configs: list[RunConfig]) -> dict:
    """``model.hidden`` of a wide method: ``transfer.fuse`` times the sources' hidden sizes
    (so ``--set model.hidden=...``, which sizes the sources, keeps fusion consistent)."""
    if not spec.wide or not source_configs:
        return {}
    fusion = benchmark_methods()["fusion"].transfer
    fuse = settings.get("transfer.fuse", spec.transfer.get("fuse", fusion.get("fuse", 0))) or len(source_configs)
    return {"model.hidden": [fuse * h for h in source_configs[0].model.hidden]}


# ----------------------------------------------------------------------------- checks, FLOPs and tasks


def _check_run(run: TargetRun, source_configs: dict[str, RunConfig], preflight: bool) -> None:
    """Refuse now, not when the run's turn comes hours later: a source that cannot be
    finetuned or fused, a ``--choose`` without validation, a CUDA graph this machine or
    method cannot capture."""
    config, transfer = run.config, run.config.transfer
    mine = architecture(config)
    theirs = {name: architecture(source_configs[name]) for name in run.sources}
    if transfer.method == "finetune" or transfer.init_from:  # starts from one of its sources
        if theirs and mine not in theirs.values():
            raise ConfigError(
                f"{run.method}: finetuning needs a source of the target's architecture {mine}; "
                + ", ".join(f"{n} has {a}" for n, a in theirs.items())
            )
    if transfer.method == "fusion" and len({repr(a) for a in theirs.values()}) > 1:
        raise ConfigError(
            f"{run.method}: fusing needs sources of one architecture; " + ", ".join(f"{n} has {a}" for n, a in theirs.items())
        )
    if transfer.method == "fusion" and theirs:
        _check_fused_target(run, next(iter(theirs.values())))
    if run.candidate and config.data.val_size == 0:
        raise ConfigError("--choose: chooses each method's setting on the validation split, which needs data.val_size > 0")
    if config.data.val_size == 0:
        raise ConfigError(
            "the benchmark chooses its best method on the validation split: set data.val_size > 0 in the target config"
        )
    if preflight and config.train.cuda_graph:
        check_graphable(config, resolve_device(config.train.device), METHODS[transfer.method], distributed=False)


def _check_fused_target(run: TargetRun, member: tuple) -> None:
    """A fusion target is its sources side by side: their backbone, kernel, patch and
    channels, no normalisation."""
    backbone, _, patch, channels, kernel, norm = architecture(run.config)
    if (backbone, patch, channels, kernel) != (member[0], member[2], member[3], member[4]) or norm != "none":
        raise ConfigError(
            f"{run.method}: fusing needs the target's backbone, patch, channels and kernel to be the sources' "
            f"({member[0]}, {member[2]}, {member[3]}, {member[4]}) and model.norm = 'none'; "
            f"the target has ({backbone}, {patch}, {channels}, {kernel}) and norm {norm!r}"
        )


def _check_data(targets: list[RunConfig], sources: list[RunConfig]) -> None:
    """Build every split of each distinct dataset the runs read (seconds at most): a missing
    file or an empty split is refused now, in one line, not when its run's turn comes."""
    checked = set()
    for config, role in [*((c, "target") for c in targets), *((c, "source") for c in sources)]:
        key = repr((config.data, role))
        if key in checked:
            continue
        checked.add(key)
        for split in ("train", "val", "test"):
            size = len(build_dataset(config.data, split))
            if size == 0 and (role == "target" or split == "train"):
                raise DataError(f"data {config.data.name}: the {role}'s {split} split is empty; the benchmark needs it")


def _count_flops(plan: Plan, source_configs: dict[str, RunConfig], references: list[TargetRun]) -> None:
    """Each run's training FLOPs; under ``--budget flops`` each run's iterations set so that
    they agree (:mod:`~transmem.benchmark.budget`), per ``--choose`` value. ``references``:
    the ``--budget-of`` method's runs, whose FLOPs set the budget instead of the costliest run's."""
    cache: dict[str, RunFlops] = {}
    for run in plan.runs + references:
        raw = run.config.to_dict()
        raw["train"].update(seed=0, iterations=0)  # FLOPs per iteration depend on neither
        key = repr((raw, run.sources))
        if key not in cache:
            cache[key] = run_flops(run.config, [source_configs[s] for s in run.sources])
        run.flops = cache[key]
    if plan.request.budget != "flops":
        return
    for candidate in dict.fromkeys(run.candidate for run in plan.runs):
        runs = [run for run in plan.runs if run.candidate == candidate]
        setting = [run for run in references if run.candidate == candidate] or runs
        budget = flops_budget([r.flops for r in setting], [r.config.train.iterations for r in setting])
        for run, iterations in zip(runs, iterations_within(budget, [r.flops for r in runs])):
            if plan.request.budget_of and iterations < run.config.train.iterations:  # a cheaper --budget-of
                raise ConfigError(
                    f"--budget-of {plan.request.budget_of}: {run.method} would train {iterations} of its "
                    f"{run.config.train.iterations} iterations; name the costliest method of the earlier benchmark"
                )
            run.config = with_iterations(run.config, iterations)


def _tasks(plan: Plan, sources: _Sources) -> list[Task]:
    """The scheduler's tasks: the sources the runs need that the benchmark trains, then the targets."""
    zoo = plan.request.zoo_folder()
    needed = {name for run in plan.runs for name in run.sources}  # `--methods scratch` trains no source
    tasks = [
        Task(f"source {name}", config, zoo / name, cost=training_cost(config))
        for name, config in sources.to_train.items()
        if name in needed
    ]
    for run in plan.runs:
        needs = tuple(f"source {name}" for name in run.sources if name in sources.to_train)
        tasks.append(Task(run.task, run.config, run.run_dir, needs, training_cost(run.config)))
    return tasks


def training_cost(config: RunConfig) -> float:
    """A rough relative cost of training ``config``, for scheduling only: iterations times the
    squared total width of the network (the gate convolutions' weights), twice for methods
    that read the sources at every step, twice again with ``train.reverse_input``."""
    reads_sources = METHODS[config.transfer.method].reads_sources_every_step
    steps = 2 if config.train.reverse_input else 1
    return float(config.train.iterations * steps * plain_step_cost(config) * (2 if reads_sources else 1))


def plain_step_cost(config: RunConfig) -> float:
    """The cost units (:func:`training_cost`) of one training step of ``config``'s network alone."""
    return float(sum(config.model.hidden) ** 2)


# ----------------------------------------------------------------------------- --choose


#: What ``--choose`` may not try: the planner sets it per run (``train.seed``, the sources,
#: the cache), it names the method, or it changes the data or the evaluation the values are
#: compared on (``data.*``, ``eval.*``).
NOT_CHOSEN = ("data.", "eval.", "train.seed", "transfer.method", "transfer.sources", "transfer.cache_dir")


def choice_candidates(choose: tuple[str, ...] | list[str], fixed: dict) -> list[str]:
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
    values = [parse_setting(candidate)[1] for candidate in choose]
    if len(choose) < 2 or len({repr(value) for value in values}) != len(values):
        raise ConfigError(f"--choose {key}: needs two or more distinct values, got {', '.join(choose)}")
    if key in fixed:
        raise ConfigError(f"--choose {key}: also set by --set or --target-set; give its values to --choose only")
    return list(choose)
