"""``transmem benchmark SUITE --profile quick|full --out DIR``.

Trains the suite's sources (or reuses them), every method for every seed of the profile,
evaluates each on the fixed test set and writes into DIR::

    sources/<name>/                     source runs the benchmark trains (each with metrics.json
                                        when it has a test set; ``--zoo ZOO`` puts them in
                                        ZOO/<name>, shared between suites)
    runs/<method>/seed<k>/              target runs
    memory_bank/                        the cached memory banks, shared by the TMU runs
    results.md, results.csv, results.json, comparison.csv
    per_frame.png                       per-frame MSE and SSIM, mean over seeds (band: std)
    predictions.gif                     truth and every method on the same test sequences
    transfer_gates.png                  mean transfer gate per source over time (TMU, seed 0)
    validation.png                      validation MSE over training per method
    best/                               the method chosen on validation, its best seed
                                        (model, config, MODEL_CARD.md)

It is resumable: a finished run (``model.safetensors`` + ``metrics.json``) is skipped and an
interrupted one resumes from its last checkpoint. Nothing in DIR is ever deleted. With
``--jobs N`` it trains N runs at once, each target as soon as the sources it reads are done
(:mod:`~transmem.benchmark.scheduler`).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from transmem.benchmark.best import choose_best, export_best, model_card, source_ranking
from transmem.benchmark.choice import choose_on_validation
from transmem.benchmark.estimate import check_profile_device
from transmem.benchmark.planning import Plan, TargetRun, plan_benchmark
from transmem.benchmark.request import BenchmarkRequest
from transmem.benchmark.results import ResultsContext, write_results
from transmem.benchmark.run_logs import (
    init_source,
    kept_iteration,
    kept_validation_mse,
    time_to_quality,
    train_seconds,
    train_threads,
    validation_curve,
)
from transmem.benchmark.scheduler import run_tasks, test_metrics
from transmem.errors import TrainingDiverged
from transmem.evaluation.metrics import METRIC_NAMES
from transmem.storage.run_folder import TRAIN_LOG
from transmem.transfer.builtin import PREFIX, builtin_index


def run_benchmark(request: BenchmarkRequest, log=print) -> dict:
    """Run (or resume) a whole benchmark and write its tables, pictures and ``best/``.
    Returns the results (as results.json holds them).

    With ``request.choose`` (``["train.lr=0.001", "train.lr=0.0001"]``) every target trains
    once per value, each value's runs a benchmark of their own in ``out/<value>/`` (its
    results.md included), and ``out``'s results keep, for each method, the value whose runs
    have the lowest validation MSE (:func:`~transmem.benchmark.choice.choose_on_validation`):
    chosen on the validation split, reported on the test split.
    """
    plan = plan_benchmark(request)  # everything checked before anything is written
    estimate = check_profile_device(request.profile, plan.profile, plan.tasks, request.jobs)  # CUDA-only profiles
    plan.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    log(f"benchmark {plan.suite.name} ({request.profile}, budget {request.budget}): {plan.suite.description}")
    if estimate:
        log(estimate)
    try:
        metrics_by_task = run_tasks(plan.tasks, request.jobs, progress=request.progress, log=log)
    except TrainingDiverged as error:
        raise _diverged_in_benchmark(error) from None
    context = ResultsContext(
        plan.suite,
        request.profile,
        plan.profile,
        _source_metrics(plan, metrics_by_task),
        time.perf_counter() - started,
        request.jobs,
        _sources_seconds(plan),
        request.command(),
        request.budget,
        request.budget_of,
    )
    results = _write_all(plan, metrics_by_task, context)
    log(results["table"])
    if results.get("comparison_table"):
        log(results["comparison_table"])
    if results.get("best"):
        log(f"best on validation: {results['best']['method']} (seed {results['best']['seed']}), exported to {plan.out / 'best'}")
    log(f"wrote {plan.out / 'results.md'}, " + ", ".join(["results.csv", "results.json", *results["pictures"]]))
    return results


def _diverged_in_benchmark(error: TrainingDiverged) -> TrainingDiverged:
    """A run's divergence with a benchmark's remedy. A run alone resumes with a lower ``--set
    train.lr``; a benchmark's ``--set`` changes every run, and its finished runs, trained
    at the old rate, would refuse the new one: the lower rate is a new benchmark."""
    return TrainingDiverged(
        f"{error.what}; a benchmark's --set changes all its runs, so rerun it with a lower "
        f"--set train.lr=... in a new --out (the finished runs here keep the old rate)",
        iteration=error.iteration,
        kept=error.kept,
        what=error.what,
    )


def _write_all(plan: Plan, metrics_by_task: dict, context: ResultsContext) -> dict:
    """Write the results of a plain benchmark, or of every ``--choose`` value and the chosen ones."""
    request = plan.request
    if not request.choose:
        rows, runs = result_rows(plan.runs, metrics_by_task)
        results = write_results(plan.out, context, rows, runs)
    else:
        by_candidate = {}
        for candidate in request.choose:
            rows, runs = result_rows([r for r in plan.runs if r.candidate == candidate], metrics_by_task)
            # this value's benchmark on its own (its results.md's Reproduce line)
            alone = replace(request, zoo=request.zoo or str(plan.out / "sources"), choose=())
            own = alone.command(extra=(candidate,))
            (plan.out / candidate).mkdir(exist_ok=True)
            write_results(plan.out / candidate, replace(context, command=own), rows, runs)
            by_candidate[candidate] = (rows, runs)
        rows, runs, choice = choose_on_validation(by_candidate)
        add_time_to_quality(rows, runs)  # against scratch at its own chosen value
        every_run = [row for candidate_rows, _ in by_candidate.values() for row in candidate_rows]
        results = write_results(plan.out, context, rows, runs, choice=choice, trained_rows=every_run)
    results["best"] = _export_best(plan, rows, runs, context)
    return results


def _source_metrics(plan: Plan, metrics_by_task: dict) -> dict:
    """Each source's test scores: measured here, or recorded when the builtin zoo was built."""
    found = {}
    for name, path in plan.source_paths.items():
        if f"source {name}" in metrics_by_task:
            found[name] = metrics_by_task[f"source {name}"]
        elif path.startswith(PREFIX):
            found[name] = builtin_index()[path[len(PREFIX) :]]["test"]
        else:  # a run of the user's: its own test scores, if it has them
            found[name] = test_metrics(Path(path)) if Path(path).is_dir() else None
    return found


def _sources_seconds(plan: Plan) -> float:
    return sum(_seconds(task.run_dir) for task in plan.tasks if task.name.startswith("source "))


def _seconds(run_dir: Path) -> float:
    return train_seconds(run_dir) if (run_dir / TRAIN_LOG).exists() else 0.0


def _export_best(plan: Plan, rows: list[dict], runs: list[TargetRun], context: ResultsContext) -> dict | None:
    """Choose the best method on validation and export its best seed as ``out/best/``."""
    best = choose_best(rows)
    if best is None:
        return None
    run = runs[rows.index(best["row"])]
    card = model_card(
        best,
        {
            "suite": plan.suite.name,
            "description": plan.suite.description,
            "profile": plan.request.profile,
            "budget": plan.request.budget,
            "command": context.command,
            "config": run.config,
            "sources": dict(zip(run.sources, run.source_paths)),
            "ranking": source_ranking(run.run_dir),
        },
    )
    folder = export_best(plan.out, best, run.run_dir, card)
    return {k: v for k, v in best.items() if k != "row"} | {"folder": str(folder)}


def result_rows(runs: list[TargetRun], metrics_by_task: dict) -> tuple[list[dict], list[TargetRun]]:
    """``(rows, runs)`` of the finished runs: a row per run (its test metrics, the validation
    MSE of the weights it kept, its iterations and training FLOPs, training time, threads, the
    source it started from, the iteration it kept, its time to scratch's quality:
    :func:`add_time_to_quality`)."""
    rows = []
    for run in runs:
        metrics = metrics_by_task[run.task]
        row = {"method": run.method, "seed": run.seed}
        row.update({name: metrics[name]["mean"] for name in METRIC_NAMES})
        row["val_mse"] = kept_validation_mse(run.run_dir)  # what --choose and best/ choose on
        row["iterations"] = run.config.train.iterations
        row["train_flops"] = run.train_flops
        row["train_seconds"] = round(train_seconds(run.run_dir), 1)
        row["threads"] = train_threads(run.run_dir)  # a string: not a metric to average
        row["init_source"] = init_source(run.run_dir)  # the source a run started from, if chosen
        row["kept_iteration"] = kept_iteration(run.run_dir)  # train.weights = "best_val": a string, not a metric
        rows.append(row)
        run.metrics = metrics
    add_time_to_quality(rows, runs)
    return rows, list(runs)


def add_time_to_quality(rows: list[dict], runs: list[TargetRun]) -> None:
    """Set each row's time to quality: the iterations and seconds until its run's validation
    MSE first reaches the final validation MSE of the scratch run of the same seed among ``runs``."""
    scratch_final = {r.seed: curve[-1][1] for r in runs if r.method == "scratch" and (curve := validation_curve(r.run_dir))}
    for row, run in zip(rows, runs):
        target = scratch_final.get(row["seed"], float("nan"))
        row["iterations_to_scratch"], row["seconds_to_scratch"] = time_to_quality(run.run_dir, target)
