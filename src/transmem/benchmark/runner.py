"""``transmem benchmark SUITE --profile quick|full --out DIR``.

Trains the suite's sources (or reuses them), every method for every seed of the profile,
evaluates each on the fixed test set and writes into DIR::

    sources/<name>/                     source runs (each with metrics.json when it has a test set;
                                        ``--zoo ZOO`` puts them in ZOO/<name>, shared between suites)
    runs/<method>/seed<k>/              target runs
    memory_bank/                        the cached memory banks, shared by the TMU runs
    results.md, results.csv, results.json
    per_frame.png                       per-frame MSE and SSIM, mean over seeds (band: std)
    predictions.gif                     truth and every method on the same test sequences
    transfer_gates.png                  mean transfer gate per source over time (TMU, seed 0)
    validation.png                      validation MSE over training per method

It is resumable: a finished run (``model.safetensors`` + ``metrics.json``) is skipped and an
interrupted one resumes from its last checkpoint. Nothing in DIR is ever deleted. With
``--jobs N`` it trains N runs at once, each target as soon as the sources it reads are done
(:mod:`~transmem.benchmark.scheduler`).
"""

from __future__ import annotations

import csv
import json
import math
import platform
import subprocess
import time
from dataclasses import replace
from importlib.resources import files
from pathlib import Path

import torch

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python < 3.11
    import tomli as tomllib

from transmem.benchmark.scheduler import Task, finished, run_tasks, threads_per_run
from transmem.benchmark.suites import OPT_IN_METHODS, PROFILES, SCRATCH_METHODS, SUITES, WIDE_METHODS, Profile, Suite
from transmem.config import ConfigError, RunConfig, config_from_dict, load_config
from transmem.data import build_dataset
from transmem.evaluation.pictures import layer_name, plot_per_frame, plot_transfer_gates, save_gif_grid
from transmem.evaluation.report import markdown_results_table, summarize_runs, write_results_csv, write_results_json
from transmem.evaluation.training_curves import mean_curve, plot_validation_curves
from transmem.storage.model_file import load_model
from transmem.storage.run_folder import CHECKPOINT_DIR, CONFIG_FILE, INIT_FILE, MODEL_FILE, RUN_LOCK, TRAIN_LOG, VAL_LOG
from transmem.storage.checkpoints import checkpoint_iteration, list_checkpoints
from transmem.storage.locks import FileLock
from transmem.training.rundir import RunConflictError, check_run_dir, config_differences
from transmem.transfer.builtin import PREFIX, builtin_index, builtin_name
from transmem.transfer.zoo import source_name

METRICS = ("mse", "mae", "mse_pixel", "ssim", "psnr")
BUILTIN_ZOO = "builtin"  # --zoo builtin: the sources that ship with transmem, where they match the profile


def configs_root() -> Path:
    return Path(str(files("transmem") / "configs"))


def _log_rows(path: Path) -> list[dict] | None:
    """The rows of a run's CSV log (train.csv, val.csv), None if it has none."""
    if not path.exists():
        return None
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def train_seconds(run_dir: Path, until: int | None = None) -> float:
    """Wall time of training (up to iteration ``until``), summed from the logged seconds per iteration."""
    rows = _log_rows(run_dir / TRAIN_LOG)
    if rows is None:
        return float("nan")
    total, previous = 0.0, 0
    for row in rows:
        iteration = int(row["iteration"])
        if until is not None and iteration > until:
            break
        total += float(row["seconds_per_iteration"]) * (iteration - previous)
        previous = iteration
    return total


def train_threads(run_dir: Path) -> str:
    """The torch thread counts a run trained with, from its train.csv: ``"1"``, ``"1, 2"``
    (resumed with another count), ``"unknown, 2"`` (partly trained by a version that did not
    log it), or ``""`` (never logged)."""
    logged = [row.get("threads") or "" for row in _log_rows(run_dir / TRAIN_LOG) or []]
    counts = sorted({int(value) for value in logged if value.isdigit()})
    if not counts:
        return ""
    return ", ".join([*(["unknown"] if len(counts) < len(set(logged)) else []), *map(str, counts)])


def init_source(run_dir: Path) -> str:
    """The name of the source a ``transfer.init_from`` run started from (its ``init_source.json``;
    for a fusion, its fused sources joined by ``+``), else ``""`` (also for a plain finetune,
    whose source is its only one)."""
    try:
        record = json.loads((run_dir / INIT_FILE).read_text())
        return str(record["name"]) if record.get("init_from") or record.get("fusion") else ""
    except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
        return ""


def validation_curve(run_dir: Path) -> list[tuple[int, float]]:
    """``(iteration, validation mse)`` rows of a run's val.csv, in order."""
    return [(int(r["iteration"]), float(r["mse"])) for r in _log_rows(run_dir / VAL_LOG) or []]


def time_to_quality(run_dir: Path, target_mse: float) -> tuple[float, float]:
    """Iterations and training seconds until the validation MSE first reaches ``target_mse``.

    ``(nan, nan)`` if it never does (or the run logged no validation curve).
    """
    for iteration, mse in validation_curve(run_dir):
        if mse <= target_mse:
            return float(iteration), round(train_seconds(run_dir, iteration), 1)
    return float("nan"), float("nan")


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
            base = [*profile.target_overrides, *(overrides or []), f"train.seed={seed}", f"transfer.cache_dir={json.dumps(str(out / 'memory_bank'))}"]
            variants = (
                {f"finetune_{name}": ([f"transfer.sources=[{json.dumps(str(path))}]"], [name]) for name, path in source_dirs.items()}
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


def benchmark_tasks(
    suite_name: str,
    profile_name: str,
    out: str | Path,
    methods: list[str] | None = None,
    overrides: list[str] | None = None,
    seeds: list[int] | None = None,
    zoo: str | Path | None = None,
    target_overrides: list[str] | None = None,
) -> tuple[Suite, Profile, Path, list[Task], list[dict]]:
    """The benchmark's runs as scheduler tasks (the sources they read first), with every config loaded and
    validated; also the suite, the profile (with ``seeds``), the absolute ``out`` and the
    target plan of :func:`plan_runs`. Writes nothing. Arguments as :func:`run_benchmark`."""
    if suite_name not in SUITES:
        raise ConfigError(f"unknown suite {suite_name!r}; known: {', '.join(SUITES)}")
    if profile_name not in PROFILES:
        raise ConfigError(f"unknown profile {profile_name!r}; known: {', '.join(PROFILES)}")
    suite, profile = SUITES[suite_name], PROFILES[profile_name]
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
    plan = plan_runs(suite, profile, out, methods, [*(overrides or []), *(target_overrides or [])], zoo, shipped)
    needed = {name for entry in plan for name in entry["sources"]}  # `--methods scratch` trains no source
    tasks = [
        Task(f"source {name}", config, zoo / name) for name, config in source_configs.items() if name in needed and name not in shipped
    ]
    wide = _fused_hidden_override(suite, source_configs, [*(overrides or []), *(target_overrides or [])])
    for entry in plan:
        if entry["method"] in WIDE_METHODS:
            entry["overrides"].append(wide)
        config = load_config(root / entry["config_file"], entry["overrides"])
        needs = tuple(f"source {name}" for name in entry["sources"] if name not in shipped)
        tasks.append(Task(f"{entry['method']} seed {entry['seed']}", config, entry["run_dir"], needs))
    return suite, profile, out, tasks, plan


def _fused_hidden_override(suite: Suite, source_configs: dict[str, RunConfig], overrides: list[str]) -> str:
    """``model.hidden=[...]`` for the wide methods: ``transfer.fuse`` times the sources' hidden
    sizes, so ``--set model.hidden=...`` (which sizes the sources) keeps fusion consistent."""
    fusion = load_config(configs_root() / suite.methods["fusion"], overrides)
    member = next(iter(source_configs.values())).model.hidden
    fuse = fusion.transfer.fuse or len(suite.sources)
    return f"model.hidden={[fuse * h for h in member]}"


def benchmark_status(suite_name: str, profile_name: str, out: str | Path, **options) -> list[dict]:
    """Where each run of a benchmark stands, without training or writing anything.

    One ``{"run", "run_dir", "state"}`` per run, sources first; ``state`` is ``finished``,
    ``trained, not evaluated``, ``at iteration N of M`` (its newest checkpoint), ``not
    started``, or ``holds another config``; `` (training now, pid P)`` is appended while a
    process holds the run's lock. ``options`` as :func:`run_benchmark` (methods, overrides,
    seeds, zoo, target_overrides).
    """
    *_, tasks, _ = benchmark_tasks(suite_name, profile_name, out, **options)
    rows = []
    for task in tasks:
        try:
            check_run_dir(task.config, task.run_dir)
        except RunConflictError:
            state = "holds another config" if (task.run_dir / CONFIG_FILE).exists() else f"holds run files but no {CONFIG_FILE}"
        else:
            if finished(task.run_dir):
                state = "finished"
            elif (task.run_dir / MODEL_FILE).exists():
                state = "trained, not evaluated"
            elif checkpoints := list_checkpoints(task.run_dir / CHECKPOINT_DIR):
                state = f"at iteration {checkpoint_iteration(checkpoints[-1])} of {task.config.train.iterations}"
            else:
                state = "not started"
        holder = FileLock(task.run_dir / RUN_LOCK).holder()
        if holder is not None:
            state += f" (training now, pid {holder})"
        rows.append({"run": task.name, "run_dir": str(task.run_dir), "state": state})
    return rows


def run_benchmark(
    suite_name: str,
    profile_name: str,
    out: str | Path,
    methods: list[str] | None = None,
    progress: bool = True,
    log=print,
    overrides: list[str] | None = None,
    seeds: list[int] | None = None,
    zoo: str | Path | None = None,
    target_overrides: list[str] | None = None,
    jobs: int = 1,
) -> dict:
    """Run (or resume) a whole suite and write its tables and pictures. Returns the results.

    ``overrides`` (``section.key=value``) apply to every source and target after the
    profile's own, e.g. to shrink a suite for a test; ``target_overrides`` apply to the
    targets only, after those (e.g. ``train.precision=bf16`` with the float32 sources of an
    earlier benchmark). ``seeds`` replaces the profile's
    target seeds (the sources are the same for every seed). ``zoo`` is the folder of the
    source runs (default ``out/sources``): suites given the same zoo share a source of the
    same name and config (``digits2`` of ``digits`` and ``video``); a source of the same
    name but another config is refused, never overwritten.
    """
    suite, profile, out, tasks, plan = benchmark_tasks(suite_name, profile_name, out, methods, overrides, seeds, zoo, target_overrides)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    log(f"benchmark {suite.name} ({profile_name}): {suite.description}")
    metrics_by_task = run_tasks(tasks, jobs, progress=progress, log=log)
    source_metrics = {name: metrics_by_task[f"source {name}"] for name in suite.sources if f"source {name}" in metrics_by_task}
    for entry in plan:  # sources from the builtin zoo: the scores recorded when it was built
        for name, path in zip(entry["sources"], entry["source_paths"]):
            if str(path).startswith(PREFIX) and name not in source_metrics:
                source_metrics[name] = builtin_index()[str(path)[len(PREFIX) :]]["test"]

    rows, per_run = [], []
    for entry in plan:
        metrics = metrics_by_task[f"{entry['method']} seed {entry['seed']}"]
        row = {"method": entry["method"], "seed": entry["seed"]}
        row.update({name: metrics[name]["mean"] for name in METRICS})
        row["train_seconds"] = round(train_seconds(entry["run_dir"]), 1)
        row["threads"] = train_threads(entry["run_dir"])  # a string: not a metric to average
        row["init_source"] = init_source(entry["run_dir"])  # the source a run started from, if chosen
        rows.append(row)
        per_run.append({**entry, "metrics": metrics, "run_dir": str(entry["run_dir"])})

    # Time to quality: when each run's validation MSE first reaches the final validation
    # MSE of training from scratch with the same seed.
    scratch_final = {
        r["seed"]: curve[-1][1] for r in per_run if r["method"] == "scratch" and (curve := validation_curve(Path(r["run_dir"])))
    }
    for row, run in zip(rows, per_run):
        target = scratch_final.get(row["seed"], float("nan"))
        row["iterations_to_scratch"], row["seconds_to_scratch"] = time_to_quality(Path(run["run_dir"]), target)

    sources_seconds = sum(train_seconds(t.run_dir) for t in tasks if t.name.startswith("source ") and (t.run_dir / TRAIN_LOG).exists())
    results = write_results(
        suite, profile_name, profile, out, rows, per_run, source_metrics, time.time() - started, jobs, sources_seconds
    )
    log(results["table"])
    log(f"wrote {out / 'results.md'}, " + ", ".join(["results.csv", "results.json", *results["pictures"]]))
    return results


def write_results(
    suite, profile_name, profile, out: Path, rows, per_run, source_metrics, seconds, jobs: int = 1, sources_seconds: float = 0.0
) -> dict:
    """Write results.csv, results.json, results.md and the pictures; return the results.

    ``seconds``: this session's wall time (0 for a rerun that trained nothing);
    ``sources_seconds``: the sources' training time from their train.csv. The runs' training
    time (targets from their rows' ``train_seconds``) is reported whenever they trained.
    """
    summary = summarize_runs(rows)
    baseline = per_run[0]["metrics"]["copy_last_frame"] if per_run else None
    table = markdown_results_table(summary, metrics=("mse", "mae", "ssim", "psnr"), baseline=baseline)
    write_results_csv(out / "results.csv", rows)
    results = {
        "suite": suite.name,
        "profile": profile_name,
        "rows": rows,
        "summary": summary,
        "baseline_copy_last_frame": {k: baseline[k]["mean"] for k in METRICS} if baseline else None,
        "sources": {k: ({m: v[m]["mean"] for m in METRICS} if v else None) for k, v in source_metrics.items()},
        "environment": environment(jobs),
        "session_seconds": round(seconds, 1),
        "train_seconds": {
            "targets": round(math.fsum(r["train_seconds"] for r in rows if r["train_seconds"] == r["train_seconds"]), 1),
            "sources": round(sources_seconds, 1),
        },
        "table": table,
    }
    curves, bands = per_frame_curves(per_run)
    results["per_frame"] = curves
    results["pictures"] = _write_pictures(out, per_run, profile, curves, bands)
    write_results_json(out / "results.json", results)
    (out / "results.md").write_text(_markdown(suite, profile_name, profile, results))
    return results


def per_frame_curves(per_run: list[dict]) -> tuple[dict, dict]:
    """Per-frame test MSE and SSIM of each method: mean over seeds and std (0 for one seed).

    Returns ``(curves, bands)``, each ``{method: {"mse": [T_out floats], "ssim": [...]}}``;
    ``curves`` ends with the copy-last-frame baseline (no band).
    """
    curves, bands = {}, {}
    for method in dict.fromkeys(r["method"] for r in per_run):
        runs = [r["metrics"] for r in per_run if r["method"] == method]
        curves[method], bands[method] = {}, {}
        for metric in ("mse", "ssim"):
            values = torch.tensor([m[metric]["per_frame"] for m in runs], dtype=torch.float64)
            curves[method][metric] = values.mean(0).tolist()
            bands[method][metric] = (values.std(0) if len(runs) > 1 else torch.zeros(values.shape[1])).tolist()
    if per_run:
        curves["copy last frame"] = {m: per_run[0]["metrics"]["copy_last_frame"][m]["per_frame"] for m in ("mse", "ssim")}
    return curves, bands


def _write_pictures(out: Path, per_run: list[dict], profile: Profile, curves: dict, bands: dict) -> list[str]:
    """Write the benchmark's pictures into ``out``; return the names of those written."""
    if not per_run:
        return []
    plot_per_frame(out / "per_frame.png", curves, metrics=("mse", "ssim"), bands=bands)

    learning = {}
    for method in curves:
        runs = [validation_curve(Path(r["run_dir"])) for r in per_run if r["method"] == method]
        try:
            learning[method] = mean_curve(runs)
        except ValueError:  # no validation split, or seeds without a shared validated iteration
            continue
    written = ["per_frame.png"]
    if learning:
        plot_validation_curves(out / "validation.png", learning)
        written.append("validation.png")

    first_seed = [r for r in per_run if r["seed"] == per_run[0]["seed"]]
    config = load_model(first_seed[0]["run_dir"]).config
    test = build_dataset(config.data, "test")
    count = min(profile.gif_sequences, len(test))
    frames = torch.stack([test[i] for i in range(count)])
    grid = {"truth": frames}
    input_len = config.data.input_len
    for run in first_seed:
        model = load_model(run["run_dir"]).model.eval()
        predicted = model.predict(frames[:, :input_len], config.data.total_len - input_len).clamp(0, 1)
        grid[run["method"]] = torch.cat([frames[:, :input_len], predicted], dim=1)
    save_gif_grid(out / "predictions.gif", grid, fps=4, scale=2, input_len=input_len)
    written.append("predictions.gif")

    gated = [r for r in first_seed if r["metrics"].get("transfer_gates") and r["method"] == "tmu"]
    if gated:
        metrics = gated[0]["metrics"]
        names = [source_name(s) for s in metrics.get("sources", [])] or None
        layers = {layer_name(k): v for k, v in metrics["transfer_gates"].items()}
        plot_transfer_gates(out / "transfer_gates.png", layers, names, input_len=metrics["input_len"])
        written.append("transfer_gates.png")
    return written


def environment(jobs: int = 1) -> dict:
    """Commit, versions, machine and date; ``jobs`` runs at a time, each with its share of threads."""
    try:
        # The commit of the transmem source tree (an editable install), wherever DIR is.
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "commit": commit or "unknown",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {platform.processor() or platform.system()}",
        "jobs": jobs,
        "threads_per_run": threads_per_run(jobs),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def _time_to_quality_text(row: dict) -> str:
    iterations, seconds = row.get("iterations_to_scratch"), row.get("seconds_to_scratch")
    if iterations is None or iterations != iterations:  # missing or NaN
        return f"{row['method']} (seed {row['seed']}) -"
    return f"{row['method']} (seed {row['seed']}) {int(iterations)} it / {seconds} s"


def _train_time_text(results: dict) -> str:
    """``"620 s (targets 480 s and sources 140 s, ...)"``: the runs' training time, not this session's."""
    seconds = results.get("train_seconds") or {}
    targets, sources = seconds.get("targets", 0.0), seconds.get("sources", 0.0)
    return f"{targets + sources:.0f} s (targets {targets:.0f} s and sources {sources:.0f} s, summed from their train.csv whenever they trained)"


def _seeds_text(seeds: tuple[int, ...]) -> str:
    return f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''} ({', '.join(map(str, seeds))})"


def _markdown(suite: Suite, profile_name: str, profile: Profile, results: dict) -> str:
    env = results["environment"]
    lines = [
        f"# Benchmark `{suite.name}` ({profile_name} profile)",
        "",
        suite.description + ".",
        "",
        f"Profile: {_seeds_text(profile.seeds)}; {profile.notes}. Every method has the same budget; "
        "mean ± std over seeds; best per column in bold.",
        "MSE and MAE are summed over a frame's pixels, averaged over test sequences and over the predicted frames.",
        "",
        results["table"],
        "",
        "Training wall time per run (s): "
        + ", ".join(
            f"{r['method']} (seed {r['seed']}) {r['train_seconds']}" + (f" on {r['threads']} thread(s)" if r.get("threads") else "")
            for r in results["rows"]
        ),
        "",
        "Time to quality (iterations and seconds until the validation MSE first reaches the final validation MSE "
        "of scratch with the same seed; '-' = never): "
        + ", ".join(_time_to_quality_text(r) for r in results["rows"]),
        "",
        *_chosen_sources_lines(results["rows"]),
        "Sources on their own test sets: "
        + (
            ", ".join(
                f"{name}: mse {m['mse']:.2f}, ssim {m['ssim']:.3f}" if m else f"{name}: no test set"
                for name, m in results["sources"].items()
            )
            or "none (no chosen method reads a source)"
        ),
        "",
        f"Reproduce: `transmem benchmark {suite.name} --profile {profile_name} --out DIR"
        + (f" --jobs {env['jobs']}" if env["jobs"] > 1 else "")
        + f"` (commit {env['commit']}, torch {env['torch']}, {env['machine']}, {env['date']}; training the runs took "
        f"{_train_time_text(results)}, this session "
        f"{results['session_seconds']:.0f} s, and the runs it trained had {env['threads_per_run']} torch thread(s) "
        "each: on CPU another thread count sums in another order and trains to other numbers).",
        "",
    ]
    lines += _per_frame_table(results.get("per_frame") or {})
    captions = {
        "per_frame.png": "per-frame metrics",
        "validation.png": "validation MSE over training",
        "predictions.gif": "predictions",
        "transfer_gates.png": "transfer gates",
    }
    for name in results.get("pictures") or []:
        lines += [f"![{captions[name]}]({name})", ""]
    return "\n".join(lines)


def _chosen_sources_lines(rows: list[dict]) -> list[str]:
    """Markdown lines naming the source each ``init_from`` run started from."""
    chosen = [f"{r['method']} (seed {r['seed']}) {r['init_source']}" for r in rows if r.get("init_source")]
    if not chosen:
        return []
    return ["Source each run started from, ranked on the target's validation split: " + ", ".join(chosen), ""]


def _per_frame_table(curves: dict) -> list[str]:
    """Markdown lines: test MSE per predicted frame, one row per method (mean over seeds)."""
    if not curves:
        return []
    frames = len(next(iter(curves.values()))["mse"])
    header = "| frame | " + " | ".join(str(t + 1) for t in range(frames)) + " |"
    rows = [f"| {method} | " + " | ".join(f"{v:.1f}" for v in curve["mse"]) + " |" for method, curve in curves.items()]
    return ["Test MSE per predicted frame (mean over seeds):", "", header, "|---" * (frames + 1) + "|", *rows, ""]
