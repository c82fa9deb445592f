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

import shlex
import time
from pathlib import Path

from transmem.benchmark.choice import choose_on_validation
from transmem.benchmark.estimate import check_profile_device
from transmem.benchmark.planning import benchmark_tasks
from transmem.benchmark.results import METRICS, write_results
from transmem.benchmark.run_logs import (
    init_source,
    kept_iteration,
    kept_validation_mse,
    time_to_quality,
    train_seconds,
    train_threads,
    validation_curve,
)
from transmem.benchmark.scheduler import run_tasks
from transmem.storage.run_folder import TRAIN_LOG
from transmem.transfer.builtin import PREFIX, builtin_index


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
    choose: list[str] | None = None,
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

    ``choose`` (``["train.lr=0.001", "train.lr=0.0001"]``): every target trains once per
    value, each value's runs a benchmark of their own in ``out/<value>/`` (its results.md
    included), and ``out``'s results keep, for each method, the value whose runs have the
    lowest validation MSE (mean over seeds, of the weights each run kept;
    :func:`~transmem.benchmark.choice.choose_on_validation`): chosen on the validation split,
    reported on the test split.
    """
    suite, profile, out, tasks, plan = benchmark_tasks(
        suite_name, profile_name, out, methods, overrides, seeds, zoo, target_overrides, choose
    )
    estimate = check_profile_device(profile_name, profile, tasks, jobs)  # refuses a CUDA-only profile on the CPU
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    log(f"benchmark {suite.name} ({profile_name}): {suite.description}")
    if estimate:
        log(estimate)
    metrics_by_task = run_tasks(tasks, jobs, progress=progress, log=log)
    source_metrics = {name: metrics_by_task[f"source {name}"] for name in suite.sources if f"source {name}" in metrics_by_task}
    for entry in plan:  # sources from the builtin zoo: the scores recorded when it was built
        for name, path in zip(entry["sources"], entry["source_paths"]):
            if str(path).startswith(PREFIX) and name not in source_metrics:
                source_metrics[name] = builtin_index()[str(path)[len(PREFIX) :]]["test"]
    sources_seconds = sum(
        train_seconds(t.run_dir) for t in tasks if t.name.startswith("source ") and (t.run_dir / TRAIN_LOG).exists()
    )
    command = benchmark_command(suite.name, profile_name, methods, overrides, seeds, zoo, target_overrides, jobs, choose)

    def write(folder: Path, rows: list[dict], per_run: list[dict], command: str, **choice) -> dict:
        return write_results(
            suite,
            profile_name,
            profile,
            folder,
            rows,
            per_run,
            source_metrics,
            time.time() - started,
            jobs,
            sources_seconds,
            command,
            **choice,
        )

    if not choose:
        rows, per_run = result_rows(plan, metrics_by_task)
        results = write(out, rows, per_run, command)
    else:
        by_candidate = {}
        for candidate in choose:
            rows, per_run = result_rows([e for e in plan if e["candidate"] == candidate], metrics_by_task)
            # this value's benchmark on its own (its results.md's Reproduce line)
            alone = [*(target_overrides or []), candidate]
            own = benchmark_command(suite.name, profile_name, methods, overrides, seeds, zoo or out / "sources", alone, jobs)
            (out / candidate).mkdir(exist_ok=True)
            write(out / candidate, rows, per_run, own)
            by_candidate[candidate] = (rows, per_run)
        rows, per_run, choice = choose_on_validation(by_candidate)
        add_time_to_quality(rows, per_run)  # against scratch at its own chosen value
        every_run = [row for candidate_rows, _ in by_candidate.values() for row in candidate_rows]
        results = write(out, rows, per_run, command, choice=choice, trained_rows=every_run)
    log(results["table"])
    log(f"wrote {out / 'results.md'}, " + ", ".join(["results.csv", "results.json", *results["pictures"]]))
    return results


def result_rows(plan: list[dict], metrics_by_task: dict) -> tuple[list[dict], list[dict]]:
    """``(rows, per_run)`` of the plan's finished runs: a row per run (its test metrics, the
    validation MSE of the weights it kept, training time, threads, the source it started
    from, the iteration it kept, its time to scratch's quality: :func:`add_time_to_quality`)
    and the run with its metrics."""
    rows, per_run = [], []
    for entry in plan:
        metrics = metrics_by_task[entry["task"]]
        row = {"method": entry["method"], "seed": entry["seed"]}
        row.update({name: metrics[name]["mean"] for name in METRICS})
        row["val_mse"] = kept_validation_mse(entry["run_dir"])  # what --choose chooses on
        row["train_seconds"] = round(train_seconds(entry["run_dir"]), 1)
        row["threads"] = train_threads(entry["run_dir"])  # a string: not a metric to average
        row["init_source"] = init_source(entry["run_dir"])  # the source a run started from, if chosen
        row["kept_iteration"] = kept_iteration(entry["run_dir"])  # train.weights = "best_val": a string, not a metric
        rows.append(row)
        per_run.append({**entry, "metrics": metrics, "run_dir": str(entry["run_dir"])})
    add_time_to_quality(rows, per_run)
    return rows, per_run


def add_time_to_quality(rows: list[dict], per_run: list[dict]) -> None:
    """Set each row's time to quality: the iterations and seconds until its run's validation
    MSE first reaches the final validation MSE of the scratch run of the same seed among ``per_run``."""
    scratch_final = {
        r["seed"]: curve[-1][1] for r in per_run if r["method"] == "scratch" and (curve := validation_curve(Path(r["run_dir"])))
    }
    for row, run in zip(rows, per_run):
        target = scratch_final.get(row["seed"], float("nan"))
        row["iterations_to_scratch"], row["seconds_to_scratch"] = time_to_quality(Path(run["run_dir"]), target)


def benchmark_command(
    suite: str,
    profile: str,
    methods: list[str] | None = None,
    overrides: list[str] | None = None,
    seeds: list[int] | None = None,
    zoo: str | Path | None = None,
    target_overrides: list[str] | None = None,
    jobs: int = 1,
    choose: list[str] | None = None,
) -> str:
    """The ``transmem benchmark`` command line that reruns this benchmark (into ``DIR``), as
    results.md prints it: every option that changes what is run."""
    words = ["transmem", "benchmark", suite, "--profile", profile, "--out", "DIR"]
    words += ["--zoo", str(zoo)] if zoo else []
    words += ["--methods", *methods] if methods else []
    words += ["--seeds", *map(str, seeds)] if seeds is not None else []
    words += [word for value in overrides or [] for word in ("--set", value)]
    words += [word for value in target_overrides or [] for word in ("--target-set", value)]
    words += [word for value in choose or [] for word in ("--choose", value)]
    words += ["--jobs", str(jobs)] if jobs > 1 else []
    return shlex.join(words)
