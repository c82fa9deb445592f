"""Each method against the benchmark's reference, with its uncertainty.

The reference is ``finetune_best`` (the strong baseline: start from the source ranked best on
validation), or ``scratch`` when the benchmark has no ``finetune_best``. For each other
method: the difference in mean test MSE (method minus reference; negative is better), its
95 % confidence interval from Welch's t-test over the seeds
(:func:`scipy.stats.ttest_ind` with ``equal_var=False``), and the two-sided p-value. A method
*beats* the reference only where the whole interval lies below 0. With one seed per method
there is no interval (NaN).

A benchmark makes several such comparisons, and each interval excludes 0 by chance one time
in 20. ``p_holm`` is each p-value adjusted for all of the benchmark's comparisons (Holm's
step-down method, which controls the chance of any false "beats" or "loses" at 5 %); a
verdict that holds at ``p_holm`` < 0.05 holds for the benchmark as a whole.
"""

from __future__ import annotations

import math

from scipy import stats

from transmem.evaluation.report import markdown_table

REFERENCES = ("finetune_best", "scratch")  # the first one the benchmark ran is the reference
CONFIDENCE = 0.95


def reference_method(rows: list[dict]) -> str | None:
    methods = {row["method"] for row in rows}
    return next((m for m in REFERENCES if m in methods), None)


def compare_methods(rows: list[dict], metric: str = "mse") -> list[dict]:
    """One ``{"method", "reference", "difference", "ci_low", "ci_high", "p_value", "verdict",
    "p_holm"}`` per method but the reference, in the rows' order (``p_holm``: :func:`holm`
    over these comparisons). ``verdict``: ``"beats"``, ``"loses"``
    (the interval above 0), ``"no difference shown"`` or, with one seed on either side,
    ``"one seed: no interval"``."""
    reference = reference_method(rows)
    if reference is None:
        return []
    base = [row[metric] for row in rows if row["method"] == reference]
    comparisons = []
    for method in dict.fromkeys(row["method"] for row in rows):
        if method != reference:
            values = [row[metric] for row in rows if row["method"] == method]
            comparisons.append({"method": method, "reference": reference, **welch(values, base)})
    for comparison, adjusted in zip(comparisons, holm([c["p_value"] for c in comparisons])):
        comparison["p_holm"] = adjusted
    return comparisons


def holm(p_values: list[float]) -> list[float]:
    """Holm's adjusted p-values, in the input order: the i-th smallest of m p-values times
    ``m - i + 1`` (i from 1), kept non-decreasing and at most 1. NaN stays NaN and does not count in m."""
    ranked = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    adjusted = [float("nan")] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(ranked):
        running = max(running, min(1.0, (len(ranked) - rank) * p))
        adjusted[i] = running
    return adjusted


def welch(values: list[float], base: list[float]) -> dict:
    """Mean of ``values`` minus mean of ``base``, Welch's 95 % interval and p-value."""
    difference = math.fsum(values) / len(values) - math.fsum(base) / len(base)
    if len(values) < 2 or len(base) < 2:
        low = high = p_value = float("nan")
    else:
        result = stats.ttest_ind(values, base, equal_var=False)
        interval = result.confidence_interval(CONFIDENCE)
        low, high, p_value = float(interval.low), float(interval.high), float(result.pvalue)
    if math.isnan(low):
        verdict = "one seed: no interval"
    elif high < 0:
        verdict = "beats"
    elif low > 0:
        verdict = "loses"
    else:
        verdict = "no difference shown"
    return {"difference": difference, "ci_low": low, "ci_high": high, "p_value": p_value, "verdict": verdict}


def interval_text(comparison: dict) -> str:
    """``"[-1.61, -0.39]"``: a comparison's 95 % interval, ``"-"`` when it has none."""
    if math.isnan(comparison["ci_low"]):
        return "-"
    return f"[{comparison['ci_low']:+.2f}, {comparison['ci_high']:+.2f}]"


def comparison_markdown(comparisons: list[dict]) -> str:
    """The comparisons as a markdown table."""
    if not comparisons:
        return ""
    header = ["method", f"test MSE minus {comparisons[0]['reference']}", "95% CI (Welch)", "p", "p (Holm)", "verdict"]
    rows = [
        [
            c["method"],
            f"{c['difference']:+.2f}",
            interval_text(c),
            *(p_text(c.get(key, float("nan"))) for key in ("p_value", "p_holm")),
            c["verdict"],
        ]
        for c in comparisons
    ]
    return markdown_table(header, rows, right=(1, 2, 3, 4))


def p_text(p_value: float) -> str:
    """Three significant digits (0.0504 is not 0.050), ``"-"`` for NaN."""
    return "-" if math.isnan(p_value) else f"{p_value:.3g}"
