"""A benchmark's results: per-run rows aggregated over seeds, results.csv / .json / .md,
the pictures (per-frame curves, predictions, transfer gates, validation curves) and the
environment they were measured in."""

from __future__ import annotations

import math
import platform
import subprocess
import time
from pathlib import Path

import torch

from transmem.benchmark.markdown import GATES_PICTURE, results_markdown
from transmem.benchmark.run_logs import validation_curve
from transmem.benchmark.scheduler import threads_per_run
from transmem.benchmark.suites import Profile
from transmem.data import build_dataset
from transmem.evaluation.animations import save_gif_grid
from transmem.evaluation.plots import layer_name, plot_per_frame, plot_transfer_gates
from transmem.evaluation.report import markdown_results_table, summarize_runs, write_results_csv, write_results_json
from transmem.evaluation.training_curves import mean_curve, plot_validation_curves
from transmem.storage.model_file import load_model
from transmem.transfer.zoo import source_name

METRICS = ("mse", "mae", "mse_pixel", "ssim", "psnr")


def write_results(
    suite,
    profile_name,
    profile,
    out: Path,
    rows,
    per_run,
    source_metrics,
    seconds,
    jobs: int = 1,
    sources_seconds: float = 0.0,
    command: str | None = None,
    choice: dict | None = None,
    trained_rows: list[dict] | None = None,
) -> dict:
    """Write results.csv, results.json, results.md and the pictures; return the results.

    ``command``: the command line that reruns the benchmark (results.md's "Reproduce"; default
    the suite and profile alone). ``choice``: the setting ``--choose`` chose per method
    (:func:`~transmem.benchmark.choice.choose_on_validation`), whose rows ``rows`` are;
    ``trained_rows``: the rows of every run trained for them (every value's), whose training
    time is reported (default ``rows``).

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
        "command": command,
        "session_seconds": round(seconds, 1),
        "train_seconds": {
            "targets": round(
                math.fsum(r["train_seconds"] for r in trained_rows or rows if r["train_seconds"] == r["train_seconds"]), 1
            ),
            "sources": round(sources_seconds, 1),
        },
        "table": table,
    }
    if choice:
        results["choice"] = choice
    curves, bands = per_frame_curves(per_run)
    results["per_frame"] = curves
    results["pictures"] = _write_pictures(out, per_run, profile, curves, bands)
    write_results_json(out / "results.json", results)
    (out / "results.md").write_text(results_markdown(suite, profile_name, profile, results))
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
        plot_transfer_gates(out / GATES_PICTURE, layers, names, input_len=metrics["input_len"])
        written.append(GATES_PICTURE)
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
