"""Validation curves over training: how fast each method learns, mean ± std over seeds.

Each run's ``val.csv`` holds the validation metrics every ``train.val_every`` iterations.
:func:`mean_curve` averages the curves of one method's seeds (at the iterations they all
logged), :func:`plot_validation_curves` draws one line per method with a ``± std``
band, so that a head start (transfer) and a late catch-up (scratch) are both visible.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator

from transmem.evaluation.plots import save_figure

Curve = Sequence[tuple[int, float]]


def mean_curve(curves: Sequence[Curve]) -> tuple[list[int], list[float], list[float]]:
    """Iterations, mean and std (0 for one seed) of several runs' ``(iteration, value)`` curves.

    Only the iterations every curve logged are kept: an unfinished seed, or a run resumed
    after a kill that lost one validation row, does not shift the others.

    Raises:
        ValueError: no curve, or no iteration shared by all of them.
    """
    curves = [dict(c) for c in curves if c]
    if not curves:
        raise ValueError("no validation curve to average")
    iterations = sorted(set.intersection(*(set(c) for c in curves)))
    if not iterations:
        raise ValueError("the runs share no validated iteration")
    values = np.array([[c[it] for it in iterations] for c in curves], dtype=np.float64)
    std = values.std(axis=0, ddof=1) if len(curves) > 1 else np.zeros(len(iterations))
    return iterations, values.mean(axis=0).tolist(), std.tolist()


def plot_validation_curves(
    path: str | Path,
    curves: Mapping[str, tuple[Sequence[int], Sequence[float], Sequence[float]]],
    metric: str = "validation MSE per frame (sum over pixels)",
    title: str = "Validation MSE over training (mean ± std over seeds)",
) -> None:
    """One line per method (``name -> (iterations, mean, std)``), a shaded ``mean ± std`` band.

    The y axis is logarithmic (early validation errors can be several times the final ones),
    with round tick values (:func:`log_ticks`); the legend sits right of the plot.

    Args:
        path: output image (format from the suffix; parent folders are created).
        curves: e.g. from :func:`mean_curve` per method.
        metric: y-axis label.
        title: the figure's title.
    """
    if not curves:
        raise ValueError("no curve to plot")
    figure = Figure(figsize=(6.4, 4.0), dpi=100, layout="constrained")
    axes = figure.subplots()
    for method, (iterations, mean, std) in curves.items():
        if not (len(iterations) == len(mean) == len(std)) or not iterations:
            raise ValueError(f"{method!r}: iterations, mean and std must be non-empty and of one length")
        x, m, s = np.asarray(iterations), np.asarray(mean), np.asarray(std)
        (line,) = axes.plot(x, m, marker="o", markersize=3, label=method)
        if np.any(s > 0):
            axes.fill_between(x, m - s, m + s, color=line.get_color(), alpha=0.15)
    axes.set_yscale("log")
    low, high = axes.get_ylim()
    axes.yaxis.set_major_locator(FixedLocator(log_ticks(low, high)))
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))  # 200, 300 rather than 2 x 10^2
    axes.yaxis.set_minor_locator(NullLocator())
    axes.set_ylim(low, high)
    axes.set_xlabel("training iteration")
    axes.set_ylabel(metric, fontsize=8)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    save_figure(figure, path)


_NICE_STEPS = (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)


def log_ticks(low: float, high: float, most: int = 8) -> list[float]:
    """Round tick values (1, 1.5, 2, 3, 4, 5, 6, 8 times a power of ten) inside ``[low, high]``
    for a logarithmic axis, thinned to at most ``most``; a range too narrow for four of them
    gets evenly spaced round values (35, 40, 45, 50)."""
    if not 0 < low < high:
        raise ValueError(f"a log axis needs 0 < low < high, got {low}, {high}")
    ticks = [
        step * 10.0**power
        for power in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
        for step in _NICE_STEPS
        if low <= step * 10.0**power <= high
    ]
    if len(ticks) < 4:  # a narrow range (31 to 51): evenly spaced round values instead
        return [float(t) for t in MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]).tick_values(low, high) if low <= t <= high]
    for keep in ((1.0, 2.0, 5.0), (1.0, 3.0), (1.0,)):  # too many: keep the roundest
        if len(ticks) <= most:
            break
        fewer = [t for t in ticks if round(t / 10.0 ** math.floor(math.log10(t)), 6) in keep]
        ticks = fewer if len(fewer) >= 2 else ticks[:: math.ceil(len(ticks) / most)]
    return ticks
