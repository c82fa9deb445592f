"""A benchmark's results: per-run rows aggregated over seeds, results.csv / .json / .md,
the pictures (per-frame curves, predictions, transfer gates, validation curves) and the
environment they were measured in."""

from __future__ import annotations

import math
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from transmem.benchmark.comparison import compare_methods, comparison_markdown
from transmem.benchmark.markdown import GATES_PICTURE, results_markdown
from transmem.benchmark.run_logs import validation_curve
from transmem.benchmark.scheduler import threads_per_run
from transmem.benchmark.suites import Profile, Suite
from transmem.data import build_dataset
from transmem.evaluation.animations import save_gif_grid
from transmem.evaluation.metrics import METRIC_NAMES, REPORTED_METRIC_NAMES
from transmem.evaluation.plots import layer_name, plot_per_frame, plot_transfer_gates
from transmem.evaluation.report import markdown_results_table, summarize_runs, write_results_csv, write_results_json
from transmem.evaluation.training_curves import mean_curve, plot_validation_curves
from transmem.storage.files import atomic_write_text
from transmem.storage.model_file import load_model
from transmem.transfer.zoo import source_name


@dataclass(frozen=True)
class ResultsContext:
    """How a benchmark's runs were made, as its results report it."""

    suite: Suite
    profile_name: str
    profile: Profile
    source_metrics: dict  # source name -> its test metrics (None: no test set)
    session_seconds: float  # this session's wall time (0 for a rerun that trained nothing)
    jobs: int
    sources_seconds: float  # the sources' training time from their train.csv
    command: str  # the command line that reruns the benchmark (results.md's "Reproduce")
    budget: str = "iterations"
    budget_of: str | None = None  # --budget-of: the method whose FLOPs set the budget


def write_results(
    out: Path,
    context: ResultsContext,
    rows: list[dict],
    runs: list,
    choice: dict | None = None,
    trained_rows: list[dict] | None = None,
) -> dict:
    """Write results.csv, comparison.csv, results.json, results.md and the pictures; return the results.

    ``rows``: one per run (:func:`~transmem.benchmark.runner.result_rows`), ``runs`` their
    :class:`~transmem.benchmark.planning.TargetRun` (with ``metrics``). ``choice``: the setting
    ``--choose`` chose per method (:func:`~transmem.benchmark.choice.choose_on_validation`),
    whose rows ``rows`` are; ``trained_rows``: the rows of every run trained for them (every
    value's), whose training time is reported (default ``rows``).
    """
    baseline = runs[0].metrics["copy_last_frame"] if runs else None
    tables = result_tables(rows, baseline)
    write_results_csv(out / "results.csv", rows)
    write_results_csv(out / "comparison.csv", tables["comparison"])
    results = {
        "suite": context.suite.name,
        "profile": context.profile_name,
        "budget": context.budget,
        **({"budget_of": context.budget_of} if context.budget_of else {}),
        "rows": rows,
        "summary": tables["summary"],
        "comparison": tables["comparison"],
        "baseline_copy_last_frame": {k: baseline[k]["mean"] for k in METRIC_NAMES} if baseline else None,
        "sources": {k: ({m: v[m]["mean"] for m in METRIC_NAMES} if v else None) for k, v in context.source_metrics.items()},
        "environment": environment(context.jobs),
        "command": context.command,
        "session_seconds": round(context.session_seconds, 1),
        "train_seconds": {
            "targets": round(
                math.fsum(r["train_seconds"] for r in trained_rows or rows if not math.isnan(r["train_seconds"])), 1
            ),
            "sources": round(context.sources_seconds, 1),
        },
        "table": tables["table"],
        "comparison_table": tables["comparison_table"],
    }
    if choice:
        results["choice"] = choice
    curves, bands = per_frame_curves(runs)
    results["per_frame"] = curves
    results["pictures"] = _write_pictures(out, runs, context.profile, curves, bands)
    write_results_json(out / "results.json", results)
    atomic_write_text(out / "results.md", results_markdown(context.suite, context.profile_name, context.profile, results))
    return results


def result_tables(rows: list[dict], baseline: dict | None) -> dict:
    """What the rows give: ``summary`` (mean and std per method), ``comparison`` (each method
    against the reference), and their markdown, ``table`` (with the copy-last-frame
    ``baseline`` row, its metrics as means or as summary rows) and ``comparison_table``."""
    summary, comparisons = summarize_runs(rows), compare_methods(rows)
    return {
        "summary": summary,
        "comparison": comparisons,
        "table": markdown_results_table(summary, metrics=REPORTED_METRIC_NAMES, baseline=baseline),
        "comparison_table": comparison_markdown(comparisons),
    }


def per_frame_curves(runs: list) -> tuple[dict, dict]:
    """Per-frame test MSE and SSIM of each method: mean over seeds and std (0 for one seed).

    ``runs``: evaluated :class:`~transmem.benchmark.planning.TargetRun`. Returns ``(curves,
    bands)``, each ``{method: {"mse": [T_out floats], "ssim": [...]}}``; ``curves`` ends with
    the copy-last-frame baseline (no band).
    """
    curves, bands = {}, {}
    for method in dict.fromkeys(r.method for r in runs):
        scores = [r.metrics for r in runs if r.method == method]
        curves[method], bands[method] = {}, {}
        for metric in ("mse", "ssim"):
            values = torch.tensor([m[metric]["per_frame"] for m in scores], dtype=torch.float64)
            curves[method][metric] = values.mean(0).tolist()
            bands[method][metric] = (values.std(0) if len(scores) > 1 else torch.zeros(values.shape[1])).tolist()
    if runs:
        curves["copy last frame"] = {m: runs[0].metrics["copy_last_frame"][m]["per_frame"] for m in ("mse", "ssim")}
    return curves, bands


def _write_pictures(out: Path, runs: list, profile: Profile, curves: dict, bands: dict) -> list[str]:
    """Write the benchmark's pictures into ``out``; return the names of those written."""
    if not runs:
        return []
    plot_per_frame(out / "per_frame.png", curves, metrics=("mse", "ssim"), bands=bands)
    written = ["per_frame.png"]
    learning = {}
    for method in curves:
        try:
            learning[method] = mean_curve([validation_curve(r.run_dir) for r in runs if r.method == method])
        except ValueError:  # no validation split, or seeds without a shared validated iteration
            continue
    if learning:
        plot_validation_curves(out / "validation.png", learning)
        written.append("validation.png")
    first_seed = [r for r in runs if r.seed == runs[0].seed]
    _predictions_gif(out / "predictions.gif", first_seed, profile.gif_sequences)
    written.append("predictions.gif")
    gated = [r for r in first_seed if r.metrics.get("transfer_gates") and r.method == "tmu"]
    if gated:
        metrics = gated[0].metrics
        names = [source_name(s) for s in metrics.get("sources", [])] or None
        layers = {layer_name(k): v for k, v in metrics["transfer_gates"].items()}
        plot_transfer_gates(out / GATES_PICTURE, layers, names, input_len=metrics["input_len"])
        written.append(GATES_PICTURE)
    return written


def _predictions_gif(path: Path, runs: list, sequences: int) -> None:
    """Truth and each run's predictions of the first ``sequences`` test sequences, one row each."""
    config = load_model(runs[0].run_dir).config
    test = build_dataset(config.data, "test")
    frames = torch.stack([test[i] for i in range(min(sequences, len(test)))])
    grid = {"truth": frames}
    input_len = config.data.input_len
    for run in runs:
        model = load_model(run.run_dir).model.eval()
        predicted = model.predict(frames[:, :input_len], config.data.total_len - input_len).clamp(0, 1)
        grid[run.method] = torch.cat([frames[:, :input_len], predicted], dim=1)
    save_gif_grid(path, grid, fps=4, scale=2, input_len=input_len)


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
