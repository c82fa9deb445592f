"""Result tables in the docs, rendered from committed benchmark results.

Each benchmark the docs cite commits its ``results.csv`` and ``results.json`` (one row per
run) under ``docs/results/<name>/``. In README.md and docs/*.md a block::

    <!-- results NAME -->            (or <!-- results NAME table -->: the first table only)
    ...
    <!-- end results -->

holds the tables rendered from ``docs/results/NAME/results.json``: mean ± std per method,
each run's budget, and each method against the reference (Welch's 95 % interval).
``<!-- results NAME NAME ... summary -->`` holds one short table of several benchmarks (each
method's iterations and test MSE, its difference from the reference and the Holm-adjusted
p-value), e.g. one suite under both budgets; where their profiles differ, each suite is named
with its profile (``digits (lowdata)``).
``python scripts/render_results.py`` rewrites every block; a test fails when a block differs
from what the data give, so no number in them is typed by hand.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from transmem.benchmark.comparison import compare_methods, interval_text, p_text
from transmem.benchmark.markdown import budget_text
from transmem.benchmark.results import result_tables
from transmem.errors import ConfigError
from transmem.evaluation.report import format_number, markdown_table, summarize_runs

BLOCK = re.compile(
    r"(<!-- results (?P<names>[\w.-]+(?: [\w.-]+)*?)(?: (?P<view>table|summary))? -->\n)(?P<body>.*?)(<!-- end results -->)",
    re.DOTALL,
)
RESULTS_DIR = Path("docs") / "results"


def render_block(results: dict, view: str | None = None) -> str:
    """The markdown of one block: the results table, then (unless ``view`` is ``"table"``)
    the budget line, the comparison and where the data are."""
    tables = result_tables(results["rows"], results.get("baseline_copy_last_frame"))
    lines = [tables["table"], ""]
    if view == "table":
        return "\n".join(lines)
    lines += [budget_text(results), ""]
    if tables["comparison_table"]:
        lines += [tables["comparison_table"], ""]
    lines.append(f"Data: `docs/results/{results['name']}/`; command: `{results.get('command') or 'see its results.json'}`.")
    return "\n".join(lines) + "\n"


def render_summary(benchmarks: list[dict]) -> str:
    """One row per method of each benchmark: its suite and budget, iterations, test MSE
    (mean ± std over seeds) and its difference from the reference with Welch's 95 % interval
    and the p-value adjusted for the benchmark's comparisons (Holm)."""
    header = [
        "suite",
        "budget",
        "method",
        "n",
        "iterations",
        "test MSE",
        "minus reference",
        "95% CI (Welch)",
        "p (Holm)",
        "verdict",
    ]
    rows = []
    profiles = {results.get("profile") for results in benchmarks}
    for results in benchmarks:
        comparisons = {c["method"]: c for c in compare_methods(results["rows"])}
        suite = results.get("suite", results["name"])
        suite += f" ({results.get('profile')})" if len(profiles) > 1 else ""  # the profile, where they differ
        for index, summary in enumerate(summarize_runs(results["rows"])):
            method = summary["method"]
            first = [suite, results.get("budget", "iterations")] if index == 0 else ["", ""]
            rows.append([*first, f"`{method}`", *_summary_cells(summary, comparisons.get(method))])
    return markdown_table(header, rows, right=range(3, 9)) + "\n"


def _summary_cells(summary: dict, comparison: dict | None) -> list[str]:
    test = f"{format_number(summary['mse_mean'])} ± {format_number(summary['mse_std'], 2)}"
    cells = [str(summary["n"]), f"{summary['iterations_mean']:.0f}", test]
    if comparison is None:
        return [*cells, "reference", "", "", ""]
    return [
        *cells,
        f"{comparison['difference']:+.2f}",
        interval_text(comparison),
        p_text(comparison["p_holm"]),
        comparison["verdict"],
    ]


def read_results(root: Path, name: str) -> dict:
    path = root / RESULTS_DIR / name / "results.json"
    if not path.is_file():
        raise ConfigError(f"results block {name!r}: no {path.relative_to(root)}")
    return {**json.loads(path.read_text()), "name": name}


def render_text(root: Path, text: str) -> str:
    """``text`` with every results block rendered from ``root``'s committed data."""

    def render(match: re.Match) -> str:
        names = match.group("names").split()
        if match.group("view") == "summary":
            body = render_summary([read_results(root, name) for name in names])
        else:
            if len(names) != 1:
                raise ConfigError(
                    f"results block {' '.join(names)!r}: a table names one benchmark; a summary ends with 'summary'"
                )
            body = render_block(read_results(root, names[0]), match.group("view"))
        return match.group(1) + body + match.group(5)

    return BLOCK.sub(render, text)


def documents(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def stale_documents(root: Path) -> list[Path]:
    """The documents whose results blocks differ from what the committed data give."""
    return [path for path in documents(root) if render_text(root, path.read_text()) != path.read_text()]


def render_all(root: Path) -> list[Path]:
    """Rewrite every results block of README.md and docs/*.md; return the files changed."""
    changed = stale_documents(root)
    for path in changed:
        path.write_text(render_text(root, path.read_text()))
    return changed
