"""One benchmark's results from the results of its parts, run into separate folders.

Runs of one suite, profile and budget can be trained apart: methods added later (with
``--budget-of`` under ``--budget flops``, so that they get the earlier budget), or seeds on
another machine. When the run folders can be gathered, rerunning the benchmark on them is
the way to combine them. When only their ``results.json`` are left, :func:`merge_results`
combines those: the rows of every part, and the summary and the comparison with the
reference recomputed from them. Parts that do not form one benchmark are refused: another
suite, profile or budget, a run in two parts, or training FLOPs that differ by more than 5 %
under ``--budget flops``.
"""

from __future__ import annotations

import shlex

from transmem.benchmark.comparison import compare_methods, comparison_markdown
from transmem.errors import ConfigError
from transmem.evaluation.metrics import REPORTED_METRIC_NAMES
from transmem.evaluation.report import markdown_results_table, summarize_runs

FLOPS_TOLERANCE = 0.05  # --budget flops: every run's training FLOPs within 5 % of each other
SAME = ("suite", "profile", "budget", "baseline_copy_last_frame")


def merge_results(parts: list[dict]) -> dict:
    """The results of one benchmark made of ``parts`` (``results.json`` contents, in order).

    Keeps the first part's suite, profile, sources and environment; ``merged_from`` lists
    each part's command and commit; ``command`` is the one benchmark that trains every run
    (the first part's command naming every method)."""
    if len(parts) < 2:
        raise ConfigError("merge: give two or more results to merge")
    first = parts[0]
    for key in SAME:
        values = {repr(part.get(key)) for part in parts}
        if len(values) > 1:
            raise ConfigError(f"merge: the parts differ in {key}: {', '.join(sorted(values))}")
    rows = [row for part in parts for row in part["rows"]]
    _check_runs(rows, first.get("budget", "iterations"))
    comparisons = compare_methods(rows)
    summary = summarize_runs(rows)
    per_frame = {}
    for part in parts:
        per_frame.update(part.get("per_frame") or {})
    methods = list(dict.fromkeys(row["method"] for row in rows))
    return {
        **{key: first.get(key) for key in (*SAME, "sources", "environment")},
        "rows": rows,
        "summary": summary,
        "comparison": comparisons,
        "command": with_methods(first["command"], methods),
        "merged_from": [{"command": p["command"], "commit": p.get("environment", {}).get("commit")} for p in parts],
        "table": markdown_results_table(summary, metrics=REPORTED_METRIC_NAMES, baseline=first.get("baseline_copy_last_frame")),
        "comparison_table": comparison_markdown(comparisons),
        "per_frame": per_frame,
        "pictures": [],
    }


def _check_runs(rows: list[dict], budget: str) -> None:
    runs = [(row["method"], row["seed"]) for row in rows]
    twice = sorted({run for run in runs if runs.count(run) > 1})
    if twice:
        raise ConfigError(f"merge: run(s) in two parts: {', '.join(f'{m} seed {s}' for m, s in twice)}")
    flops = [row["train_flops"] for row in rows]
    if budget == "flops" and max(flops) > (1 + FLOPS_TOLERANCE) * min(flops):
        raise ConfigError(
            f"merge: training FLOPs from {min(flops):.4g} to {max(flops):.4g} are not one --budget flops "
            "(train the added methods with --budget-of the costliest method)"
        )


def with_methods(command: str, methods: list[str]) -> str:
    """``command`` (a ``transmem benchmark`` line) with ``--methods`` naming ``methods``."""
    words = shlex.split(command)
    if "--methods" in words:
        start = words.index("--methods") + 1
        end = next((i for i in range(start, len(words)) if words[i].startswith("--")), len(words))
        words[start:end] = methods
    else:
        words += ["--methods", *methods]
    return shlex.join(words)
