"""One benchmark's results from the results of its parts, run into separate folders.

Runs of one suite, profile and budget can be trained apart: methods added later (with
``--budget-of`` under ``--budget flops``, so that they get the earlier budget), or seeds on
another machine. When the run folders can be gathered, rerunning the benchmark on them is
the way to combine them. When only their ``results.json`` are left, :func:`merge_results`
combines those: the rows of every part, and the summary and the comparison with the
reference recomputed from them. Parts that do not form one benchmark are refused: another
suite, profile or budget, other settings (their commands may differ only in ``--methods``,
``--seeds``, ``--budget-of`` and ``--jobs``), ``--choose``, a run in two parts, or training
FLOPs that differ by more than 5 % under ``--budget flops``.
"""

from __future__ import annotations

import math
import shlex

from transmem.benchmark.budget import FLOPS_TOLERANCE
from transmem.benchmark.results import result_tables
from transmem.benchmark.suites import benchmark_methods, catalogue_method
from transmem.errors import ConfigError

SAME = ("suite", "profile", "budget", "baseline_copy_last_frame")
#: options of a part's command that may differ between parts (what it ran, not how)
PART_OPTIONS = ("--methods", "--seeds", "--budget-of", "--jobs")


def merge_results(parts: list[dict]) -> dict:
    """The results of one benchmark made of ``parts`` (``results.json`` contents, in order).

    Keeps the first part's suite, profile and environment, and every part's sources;
    ``merged_from`` lists the command and commit of every benchmark that trained the runs (a
    part merged earlier gives its own parts); ``command`` is the one benchmark
    that trains every run (the first part's command naming every method and seed)."""
    if len(parts) < 2:
        raise ConfigError("merge: give two or more results to merge")
    first = parts[0]
    for key in SAME:
        values = {repr(part.get(key)) for part in parts}
        if len(values) > 1:
            raise ConfigError(f"merge: the parts differ in {key}: {', '.join(sorted(values))}")
    _check_commands(parts)
    rows = sorted((row for part in parts for row in part["rows"]), key=_planned_order)
    _check_runs(rows, first.get("budget", "iterations"))
    budget_of = _budget_of(parts)
    tables = result_tables(rows, first.get("baseline_copy_last_frame"))
    per_frame = {}
    for part in parts:
        per_frame.update(part.get("per_frame") or {})
    methods = list(dict.fromkeys(row["method"] for row in rows))
    seeds = sorted({row["seed"] for row in rows})
    return {
        **{key: first.get(key) for key in (*SAME, "environment")},
        **({"budget_of": budget_of} if budget_of else {}),
        "sources": _sources(parts),
        "rows": rows,
        "command": rerun_command(first["command"], methods, seeds, budget_of),
        "merged_from": [ran for part in parts for ran in _commands_that_ran(part)],
        **tables,
        "per_frame": per_frame,
        "pictures": [],
    }


def _planned_order(row: dict) -> tuple[int, int, str]:
    """Where a benchmark of every part's runs plans ``row``: by seed, then in the method
    catalogue's order (a per-source method such as ``finetune_digits1`` where its method is)."""
    catalogue, spec = list(benchmark_methods()), catalogue_method(row["method"])
    return row["seed"], catalogue.index(spec) if spec else len(catalogue), row["method"]


def _commands_that_ran(part: dict) -> list[dict]:
    """The commands and commits that trained ``part``'s runs: its parts' when it is a merge itself."""
    if part.get("merged_from"):
        return part["merged_from"]
    return [{"command": part["command"], "commit": part.get("environment", {}).get("commit")}]


def _check_commands(parts: list[dict]) -> None:
    """Refuse parts run with other settings (``--set``, ``--target-set``, ``--zoo``, ...) or ``--choose``."""
    if any(not part.get("command") for part in parts):
        raise ConfigError("merge: a part's results.json has no command, so what it ran cannot be checked")
    if any(part.get("choice") for part in parts):
        raise ConfigError("merge: a part chose settings with --choose; merge the runs of one setting instead")
    settings = {shlex.join(_without_part_options(shlex.split(part["command"]))) for part in parts}
    if len(settings) > 1:
        raise ConfigError(f"merge: the parts ran with other settings: {' | '.join(sorted(settings))}")


def _without_part_options(words: list[str]) -> list[str]:
    kept, skipping = [], False
    for word in words:
        if word.startswith("--"):
            skipping = word in PART_OPTIONS
        if not skipping:
            kept.append(word)
    return kept


def _check_runs(rows: list[dict], budget: str) -> None:
    if not rows:
        raise ConfigError("merge: the parts hold no runs")
    runs = [(row["method"], row["seed"]) for row in rows]
    twice = sorted({run for run in runs if runs.count(run) > 1})
    if twice:
        raise ConfigError(f"merge: run(s) in two parts: {', '.join(f'{m} seed {s}' for m, s in twice)}")
    if budget != "flops":
        return
    flops = [row.get("train_flops", math.nan) for row in rows]
    if any(not isinstance(f, (int, float)) or math.isnan(f) for f in flops):
        raise ConfigError("merge: a run has no training FLOPs, so its --budget flops cannot be checked")
    if max(flops) > (1 + FLOPS_TOLERANCE) * min(flops):
        raise ConfigError(
            f"merge: training FLOPs from {min(flops):.4g} to {max(flops):.4g} are not one --budget flops "
            "(train the added methods with --budget-of the costliest method)"
        )


def _budget_of(parts: list[dict]) -> str | None:
    named = {part["budget_of"] for part in parts if part.get("budget_of")}
    if len(named) > 1:
        raise ConfigError(f"merge: the parts' budgets are set by different methods: {', '.join(sorted(named))}")
    return next(iter(named), None)


def _sources(parts: list[dict]) -> dict:
    """Every part's sources and their test scores; a source the parts score differently is refused."""
    merged: dict = {}
    for part in parts:
        for name, scores in (part.get("sources") or {}).items():
            if merged.get(name) not in (None, scores) and scores is not None:
                raise ConfigError(f"merge: the parts' source {name} differs (other test scores)")
            merged[name] = merged.get(name) or scores
    return merged


def rerun_command(command: str, methods: list[str], seeds: list[int], budget_of: str | None = None) -> str:
    """``command`` (a ``transmem benchmark`` line) naming ``methods`` and ``seeds`` (and
    ``--budget-of``), the options a part's command may differ in."""
    words = _with_option(shlex.split(command), "--methods", methods)
    words = _with_option(words, "--seeds", [str(seed) for seed in seeds])
    return shlex.join(_with_option(words, "--budget-of", [budget_of]) if budget_of else words)


def _with_option(words: list[str], option: str, values: list[str]) -> list[str]:
    """``words`` with ``option``'s values replaced by ``values`` (added at the end if absent)."""
    if option not in words:
        return [*words, option, *values]
    start = words.index(option) + 1
    end = next((i for i in range(start, len(words)) if words[i].startswith("--")), len(words))
    return [*words[:start], *values, *words[end:]]
