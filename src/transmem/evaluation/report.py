"""Plain-text reports of metrics: per-run tables, mean ± std over seeds, CSV / JSON files.

Numbers are printed with 4 significant digits, keeping trailing zeros
(``format(value, "#.4g")``: ``41.00``, ``0.9100``, ``1.414``).

Summaries over seeds (``summarize_runs``) use the sample standard deviation
(Bessel-corrected, ``ddof=1``) when a method has ``n > 1`` runs, and 0 when
``n == 1``.  A summary row is flat so it can go straight into a CSV file::

    {"method": "tmu", "n": 3, "mse_mean": 41.2, "mse_std": 0.8, "ssim_mean": 0.91, ...}
"""

from __future__ import annotations

import csv
import io
import json
import math
import numbers
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Union

from transmem.evaluation.metrics import REPORTED_METRIC_NAMES
from transmem.storage.files import atomic_write_text

__all__ = [
    "format_number",
    "format_metrics_table",
    "markdown_table",
    "summarize_runs",
    "markdown_results_table",
    "write_results_csv",
    "write_results_json",
    "read_results_json",
]

PathLike = Union[str, Path]

#: Keys of a run row that are not metrics.
RUN_KEYS = ("method", "seed")

#: Display name of the copy-last-frame baseline.
BASELINE_NAME = "copy last frame"


def format_number(value: float | None, digits: int = 4) -> str:
    """``value`` with ``digits`` significant digits (trailing zeros kept); ``"–"`` for ``None``."""
    if value is None:
        return "–"
    return format(float(value), f"#.{digits}g")


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]], right: Collection[int] = (), pad: bool = False) -> str:
    """A markdown pipe table (no trailing newline). ``right``: the indices of the right-aligned
    columns (numbers); the others align left. ``pad``: cells padded to their column's width, for
    a table read as plain text too (its left-aligned columns then marked ``:---``)."""
    header, rows = [str(cell) for cell in header], [[str(cell) for cell in row] for row in rows]
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)] if pad else [0] * len(header)

    def line(cells: Sequence[str]) -> str:
        fitted = [
            cell.rjust(width) if index in right else cell.ljust(width) for index, (cell, width) in enumerate(zip(cells, widths))
        ]
        return "| " + " | ".join(fitted) + " |"

    dashes = [width + 1 if pad else 3 for width in widths]
    marks = ["-" * n + ":" if index in right else (":" if pad else "") + "-" * n for index, n in enumerate(dashes)]
    return "\n".join([line(header), "|" + "|".join(marks) + "|", *(line(row) for row in rows)])


def _aligned_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A padded table: the first column left, the others right (numbers)."""
    return markdown_table(header, rows, right=range(1, len(header)), pad=True)


def _frame_metric_names(metrics: Mapping[str, Any]) -> list[str]:
    """Names of entries shaped like ``{"per_frame": [...], "mean": ...}``, in dict order."""
    return [name for name, value in metrics.items() if isinstance(value, Mapping) and "mean" in value and "per_frame" in value]


def format_metrics_table(metrics: Mapping[str, Any], baseline: Mapping[str, Any] | None = None, digits: int = 4) -> str:
    """Markdown report of one run's metrics (the dict from ``FrameMetrics.compute()``).

    The report has a table of means (one row per metric; a second column for the
    baseline when given) and a per-frame table (one row per predicted frame, one
    column per metric; with a baseline, its per-frame values follow in columns
    suffixed ``(copy last)``).  The number of sequences is stated when present.

    Args:
        metrics: ``{name: {"per_frame": [...], "mean": float}, ..., "count": int}``.
        baseline: same structure, e.g. the scores of ``copy_last_frame_baseline``.
        digits: significant digits of the numbers.

    Returns:
        Multi-line markdown text (no trailing newline).
    """
    names = _frame_metric_names(metrics)
    if not names:
        raise ValueError("metrics contains no {'per_frame': ..., 'mean': ...} entries")
    baseline_names = [] if baseline is None else [name for name in names if name in baseline]

    mean_header = ["metric", "model"] + ([BASELINE_NAME] if baseline is not None else [])
    mean_rows = []
    for name in names:
        row = [name, format_number(metrics[name]["mean"], digits)]
        if baseline is not None:
            row.append(format_number(baseline[name]["mean"] if name in baseline else None, digits))
        mean_rows.append(row)

    frame_count = max(len(metrics[name]["per_frame"]) for name in names)
    frame_header = ["frame"] + names + [f"{name} (copy last)" for name in baseline_names]

    def per_frame_value(source: Mapping[str, Any], name: str, frame: int) -> str:
        values = source[name]["per_frame"]
        return format_number(values[frame] if frame < len(values) else None, digits)

    frame_rows = [
        [str(frame + 1)]
        + [per_frame_value(metrics, name, frame) for name in names]
        + [per_frame_value(baseline, name, frame) for name in baseline_names]
        for frame in range(frame_count)
    ]

    parts = []
    if "count" in metrics:
        counts = f"{metrics['count']} sequences"
        if baseline is not None and "count" in baseline:
            counts += f" (baseline: {baseline['count']})"
        parts.append(counts)
    parts += [
        "Mean over predicted frames:",
        _aligned_table(mean_header, mean_rows),
        "Per predicted frame:",
        _aligned_table(frame_header, frame_rows),
    ]
    return "\n\n".join(parts)


def format_transfer_gates(gates: Mapping[str, Sequence[Sequence[float]]], sources: Sequence[str], input_len: int) -> str:
    """Markdown table of a TMU's mean transfer gate per layer (0-based) and source.

    Args:
        gates: layer -> ``[[gate mean per step] per source]`` (``evaluate_model``'s
            ``transfer_gates``); step ``t`` reads frame ``t``.
        sources: one name per source.
        input_len: steps ``1 .. input_len`` read input frames, the later ones the model's
            own predictions.

    Returns:
        One row per source and layer: the mean gate over the input steps, the predicted
        steps and all steps.
    """
    rows = []
    for layer, per_source in gates.items():
        for index, steps in enumerate(per_source):
            name = sources[index] if index < len(sources) else f"source {index + 1}"
            observed, predicted = steps[:input_len], steps[input_len:]
            means = [sum(part) / len(part) if part else None for part in (observed, predicted, steps)]
            rows.append([name, str(layer), *(format_number(value, 3) for value in means)])
    return _aligned_table(["source", "layer", "input steps", "predicted steps", "all steps"], rows)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def summarize_runs(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Mean and standard deviation of each metric over the runs (seeds) of each method.

    Args:
        rows: one dict per run, ``{"method": str, "seed": int, "<metric>": float, ...}``.
            Every real-number value (Python or numpy scalar, not bool) other than
            ``method`` and ``seed`` is a metric; other keys are ignored.  All runs
            of a method must report the same metrics.

    Returns:
        One dict per method, in order of first appearance:
        ``{"method": str, "n": int, "<metric>_mean": float, "<metric>_std": float, ...}``
        where ``std`` is the sample standard deviation (``ddof=1``) for ``n > 1`` and 0
        for ``n == 1``.

    Raises:
        ValueError: if a row has no ``"method"`` or the runs of a method report
            different metric sets.
    """
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        if "method" not in row:
            raise ValueError(f"run row without 'method': {dict(row)}")
        grouped.setdefault(str(row["method"]), []).append(row)

    summary = []
    for method, runs in grouped.items():
        metric_sets = [tuple(key for key, value in run.items() if key not in RUN_KEYS and _is_number(value)) for run in runs]
        if any(set(names) != set(metric_sets[0]) for names in metric_sets):
            raise ValueError(f"runs of method {method!r} report different metrics: {metric_sets}")
        entry: dict[str, Any] = {"method": method, "n": len(runs)}
        for name in metric_sets[0]:
            values = [float(run[name]) for run in runs]
            mean = math.fsum(values) / len(values)
            if len(values) > 1:
                variance = math.fsum((value - mean) ** 2 for value in values) / (len(values) - 1)
                std = math.sqrt(variance)
            else:
                std = 0.0
            entry[f"{name}_mean"] = mean
            entry[f"{name}_std"] = std
        summary.append(entry)
    return summary


def _baseline_value(baseline: Mapping[str, Any], metric: str) -> tuple[float | None, float | None]:
    """(mean, std) of ``metric`` from a baseline given as summary row, compute() dict or flat dict."""
    if f"{metric}_mean" in baseline:
        return float(baseline[f"{metric}_mean"]), (float(baseline[f"{metric}_std"]) if f"{metric}_std" in baseline else None)
    value = baseline.get(metric)
    if isinstance(value, Mapping):
        return float(value["mean"]), None
    if _is_number(value):
        return float(value), None
    return None, None


def _mean_std_cell(mean: float | None, std: float | None, digits: int) -> str:
    if mean is None:
        return "–"
    if std is None:
        return format_number(mean, digits)
    return f"{format_number(mean, digits)} ± {format_number(std, digits)}"


def markdown_results_table(
    summary: Sequence[Mapping[str, Any]],
    metrics: Sequence[str] = REPORTED_METRIC_NAMES,
    higher_is_better: Collection[str] = frozenset({"ssim", "psnr"}),
    baseline: Mapping[str, Any] | None = None,
    digits: int = 4,
) -> str:
    """Markdown table of ``mean ± std`` per method (rows) and metric (columns).

    A method with a single run (``n == 1``) shows its value alone.

    In each column the best mean among the ``summary`` rows is bold (the lowest,
    or the highest for metrics in ``higher_is_better``); exact ties are all bold.
    The baseline row, if given, comes last and is never marked best.

    Args:
        summary: rows from :func:`summarize_runs` (``method``, ``n``, ``<m>_mean``, ``<m>_std``).
        metrics: metric columns, in order.  Missing values print as ``–``.
        higher_is_better: metrics where larger is better.
        baseline: the copy-last-frame scores, as a summary row, a
            ``FrameMetrics.compute()`` dict (its ``"mean"`` is used) or a flat
            ``{metric: float}`` dict; its ``"method"`` key, if any, names the row
            (default ``"copy last frame"``).
        digits: significant digits of the numbers.

    Returns:
        Multi-line markdown text (no trailing newline).
    """
    best: dict[str, float] = {}
    for metric in metrics:
        means = [float(row[f"{metric}_mean"]) for row in summary if f"{metric}_mean" in row]
        means = [mean for mean in means if not math.isnan(mean)]
        if means:
            best[metric] = max(means) if metric in higher_is_better else min(means)

    header = ["method", "n"] + [f"{metric} {'↑' if metric in higher_is_better else '↓'}" for metric in metrics]
    table_rows = []
    for row in summary:
        cells = [str(row["method"]), str(row.get("n", ""))]
        for metric in metrics:
            mean = row.get(f"{metric}_mean")
            # one run has no spread to show: "± 0" would read as a measured zero
            std = None if row.get("n") == 1 else row.get(f"{metric}_std")
            cell = _mean_std_cell(None if mean is None else float(mean), std, digits)
            if mean is not None and metric in best and float(mean) == best[metric]:
                cell = f"**{cell}**"
            cells.append(cell)
        table_rows.append(cells)
    if baseline is not None:
        cells = [str(baseline.get("method", BASELINE_NAME)), str(baseline.get("n", "–"))]
        for metric in metrics:
            cells.append(_mean_std_cell(*_baseline_value(baseline, metric), digits))
        table_rows.append(cells)
    return _aligned_table(header, table_rows)


def _prepare_path(path: PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_results_csv(path: PathLike, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write dict rows (runs or summary rows) as CSV.

    Columns are the union of the rows' keys in order of first appearance; missing
    values are empty cells.  Parent directories are created.
    """
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    text = io.StringIO()  # written atomically: a full disk or a kill leaves the old file, never a torn one
    writer = csv.DictWriter(text, fieldnames=list(columns), restval="")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(_prepare_path(path), text.getvalue())


def _json_default(value: Any) -> Any:
    """Convert numpy / torch scalars and arrays for ``json.dump``."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def write_results_json(path: PathLike, data: Any) -> None:
    """Write results (metrics dicts, run rows, summaries) as indented UTF-8 JSON.

    numpy and torch scalars / arrays are converted with ``.tolist()``.  NaN and
    infinities are written as the non-standard ``NaN`` / ``Infinity`` that Python's
    ``json`` reads back.  Parent directories are created.
    """
    text = json.dumps(data, indent=2, ensure_ascii=False, default=_json_default) + "\n"
    atomic_write_text(_prepare_path(path), text)  # a full disk or a kill leaves the old file, never a torn one


def read_results_json(path: PathLike) -> Any:
    """Read a file written by :func:`write_results_json`."""
    with Path(path).open(encoding="utf-8") as handle:
        return json.load(handle)
