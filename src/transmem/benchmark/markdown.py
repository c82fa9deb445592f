"""results.md: the benchmark's tables and notes as markdown."""

from __future__ import annotations

from transmem.benchmark.suites import Profile, Suite
from transmem.evaluation.report import markdown_table
from transmem.storage.run_folder import transfer_gates_file_name

GATES_PICTURE = transfer_gates_file_name("test")  # the benchmark's transfer-gate picture, named as a run's


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


def results_markdown(suite: Suite, profile_name: str, profile: Profile, results: dict) -> str:
    env = results["environment"]
    lines = [
        f"# Benchmark `{suite.name}` ({profile_name} profile)",
        "",
        suite.description + ".",
        "",
        f"Profile: {_seeds_text(profile.seeds)}; {profile.notes}. {budget_text(results)} "
        "Mean ± std over seeds; best per column in bold.",
        "MSE and MAE are summed over a frame's pixels, averaged over test sequences and over the predicted frames.",
        "",
        results["table"],
        "",
        *_comparison_lines(results),
        *_choice_lines(results.get("choice")),
        "Training wall time per run (s): "
        + ", ".join(
            f"{r['method']} (seed {r['seed']}) {r['train_seconds']}"
            + (f" on {r['threads']} thread(s)" if r.get("threads") else "")
            for r in results["rows"]
        ),
        "",
        "Time to quality (iterations and seconds until the validation MSE first reaches the final validation MSE "
        "of scratch with the same seed; '-' = never): " + ", ".join(_time_to_quality_text(r) for r in results["rows"]),
        "",
        *_chosen_sources_lines(results["rows"]),
        *_kept_weights_lines(results["rows"]),
        "Sources on their own test sets: "
        + (
            ", ".join(
                f"{name}: mse {m['mse']:.2f}, ssim {m['ssim']:.3f}" if m else f"{name}: no test set"
                for name, m in results["sources"].items()
            )
            or "none (no chosen method reads a source)"
        ),
        "",
        "Reproduce: `"
        + (
            results.get("command")
            or f"transmem benchmark {suite.name} --profile {profile_name} --out DIR"
            + (f" --jobs {env['jobs']}" if env["jobs"] > 1 else "")
        )
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
        GATES_PICTURE: "transfer gates",
    }
    for name in results.get("pictures") or []:
        lines += [f"![{captions[name]}]({name})", ""]
    return "\n".join(lines)


def budget_text(results: dict) -> str:
    """What every method got the same of, and each run's iterations and training FLOPs."""
    rows = (
        [r for r in results["rows"] if r["seed"] == results["rows"][0]["seed"] and "train_flops" in r] if results["rows"] else []
    )
    runs = ", ".join(f"{r['method']} {r['iterations']} it / {r['train_flops']:.3g} FLOPs" for r in rows)
    runs = f" ({runs})" if runs else ""
    if results.get("budget_of"):
        return f"Budget `flops`: every method the training FLOPs of {results['budget_of']} in the profile's iterations{runs}."
    if results.get("budget") == "flops":
        return f"Budget `flops`: every method the training FLOPs of the costliest in the profile's iterations{runs}."
    return f"Budget `iterations`: every method the profile's iterations{runs}."


def _comparison_lines(results: dict) -> list[str]:
    """Each method against the reference: difference in mean test MSE, Welch's 95% interval, p."""
    if not results.get("comparison_table"):
        return []
    return [
        "Each method against the reference (Welch's t-test over seeds; a method beats it only where the whole "
        "interval is below 0):",
        "",
        results["comparison_table"],
        "",
    ]


def _choice_lines(choice: dict | None) -> list[str]:
    """Markdown lines: the validation MSE of each ``--choose`` setting per method, the chosen in bold."""
    if not choice:
        return []
    candidates = choice["candidates"]
    lines = [
        f"Each method at the `{choice['setting']}` chosen on the validation split (`--choose`): the validation MSE of "
        "each setting's runs (mean over seeds, of the weights each run kept), lowest in bold; the table above is the "
        "test split at the chosen setting, and each setting's own results are in its folder "
        f"(`{candidates[0]}/results.md`).",
        "",
    ]
    rows = []
    for method, means in choice["validation"].items():
        best = choice["chosen"][method]
        rows.append([method, *(f"**{means[c]:.2f}**" if c == best else f"{means[c]:.2f}" for c in candidates), f"`{best}`"])
    return [*lines, markdown_table(["method", *(f"`{c}`" for c in candidates), "chosen"], rows), ""]


def _chosen_sources_lines(rows: list[dict]) -> list[str]:
    """Markdown lines naming the source each ``init_from`` run started from."""
    chosen = [f"{r['method']} (seed {r['seed']}) {r['init_source']}" for r in rows if r.get("init_source")]
    if not chosen:
        return []
    return ["Source each run started from, ranked on the target's validation split: " + ", ".join(chosen), ""]


def _kept_weights_lines(rows: list[dict]) -> list[str]:
    """Markdown lines naming the iteration each ``train.weights = "best_val"`` run kept."""
    kept = [f"{r['method']} (seed {r['seed']}) {r['kept_iteration']}" for r in rows if r.get("kept_iteration")]
    if not kept:
        return []
    return ["Weights kept (train.weights = best_val: those of the lowest validation MSE), iteration: " + ", ".join(kept), ""]


def _per_frame_table(curves: dict) -> list[str]:
    """Markdown lines: test MSE per predicted frame, one row per method (mean over seeds)."""
    if not curves:
        return []
    frames = len(next(iter(curves.values()))["mse"])
    rows = [[method, *(f"{v:.1f}" for v in curve["mse"])] for method, curve in curves.items()]
    return ["Test MSE per predicted frame (mean over seeds):", "", markdown_table(["frame", *range(1, frames + 1)], rows), ""]
