"""Plots of metrics: per-frame scores (mean over seeds, with a band) and transfer gates over
time; and :func:`save_figure`, which writes any matplotlib figure atomically.

Figures are drawn with matplotlib's object-oriented API on an Agg canvas (no pyplot, no
global backend switch). Parent directories of ``path`` are created.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Union

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from transmem.evaluation.grid import ArrayLike, as_float_array

__all__ = ["layer_name", "plot_per_frame", "plot_transfer_gates", "save_figure"]

PathLike = Union[str, Path]


_METRIC_AXIS_LABELS = {
    "mse": "MSE per frame (sum over pixels), lower is better",
    "mae": "MAE per frame (sum over pixels), lower is better",
    "mse_pixel": "per-pixel MSE, lower is better",
    "ssim": "SSIM, higher is better",
    "psnr": "PSNR (dB), higher is better",
}


def layer_name(layer: int | str) -> str:
    """``"layer 0"`` for the first layer: 0-based, as ``transfer.layers`` and ``evaluate`` count."""
    return f"layer {int(layer)}"


def save_figure(figure: Figure, path: PathLike) -> None:
    """Render ``figure`` on an Agg canvas into ``path`` (white background; parent folders created)."""
    import io

    from transmem.storage.files import atomic_write_bytes

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()  # rendered first: an existing file is replaced only by a complete one
    figure.savefig(buffer, format=path.suffix.lstrip(".") or "png", bbox_inches="tight", facecolor="white")
    atomic_write_bytes(path, buffer.getvalue())


def _per_frame_values(values: object) -> np.ndarray:
    """Per-frame list, or a ``FrameMetrics.compute()`` entry ``{"per_frame": [...], ...}``."""
    if isinstance(values, Mapping):
        values = values["per_frame"]
    array = as_float_array(values)
    if array.ndim != 1:
        raise ValueError(f"per-frame values must be one-dimensional, got shape {array.shape}")
    return array


def plot_per_frame(
    path: PathLike,
    curves: Mapping[str, Mapping[str, object]],
    metrics: Sequence[str] = ("mse", "ssim"),
    title: str | None = None,
    bands: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
) -> None:
    """Plot metrics against the predicted frame index, one subplot per metric.

    Args:
        path: output image (format from the suffix, e.g. ``.png``, ``.pdf``).
        curves: method name -> metric name -> per-frame values (a list of ``T``
            floats, or a ``FrameMetrics.compute()`` entry with a ``"per_frame"`` key).
            Methods lacking a metric are skipped in that subplot.
        metrics: metric names, one subplot each, left to right.
        title: optional figure title.
        bands: optional method -> metric -> per-frame standard deviation; drawn as a
            shaded band ``value ± std`` around the matching line.

    The x axis is the predicted frame index ``1 .. T``; the legend is outside the subplots.

    Raises:
        ValueError: if no method provides one of ``metrics``, or a band's length
            differs from its curve's.
    """
    if not metrics:
        raise ValueError("at least one metric is required")
    figure = Figure(figsize=(4.2 * len(metrics), 3.4), dpi=100, layout="constrained")
    axes_list = figure.subplots(1, len(metrics), squeeze=False)[0]
    for axes, metric in zip(axes_list, metrics):
        plotted = 0
        for method, method_curves in curves.items():
            if metric not in method_curves:
                continue
            values = _per_frame_values(method_curves[metric])
            frames = np.arange(1, len(values) + 1)
            (line,) = axes.plot(frames, values, marker="o", markersize=3, label=method)
            band = None if bands is None else bands.get(method, {}).get(metric)
            if band is not None:
                spread = _per_frame_values(band)
                if spread.shape != values.shape:
                    raise ValueError(f"band for {method!r}/{metric!r} has {len(spread)} values, curve has {len(values)}")
                axes.fill_between(frames, values - spread, values + spread, color=line.get_color(), alpha=0.2)
            plotted += 1
        if plotted == 0:
            raise ValueError(f"no curve provides metric {metric!r}")
        axes.set_xlabel("predicted frame")
        axes.set_ylabel(_METRIC_AXIS_LABELS.get(metric, metric), fontsize=8)
        axes.set_title(metric)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
    # One legend for every subplot, outside them, so it covers no curve.
    handles = {label: handle for axes in axes_list for handle, label in zip(*axes.get_legend_handles_labels())}
    figure.legend(list(handles.values()), list(handles), loc="outside right upper", fontsize=8)
    if title:
        figure.suptitle(title)
    save_figure(figure, path)


def _gate_layers(gates: Mapping[str, ArrayLike] | ArrayLike) -> dict[str, np.ndarray]:
    """Layer name -> ``(sources, steps)`` float64 gate values, from a mapping or a ``(layers,
    sources, steps)`` array; checked to be non-empty with one source count in every layer."""
    if isinstance(gates, Mapping):
        layers = {name: as_float_array(values) for name, values in gates.items()}
    else:
        stacked = as_float_array(gates)
        if stacked.ndim != 3:
            raise ValueError(f"gates array must be (layers, sources, steps), got shape {stacked.shape}")
        layers = {layer_name(index): values for index, values in enumerate(stacked)}
    if not layers:
        raise ValueError("at least one layer is required")
    for name, values in layers.items():
        if values.ndim != 2:
            raise ValueError(f"gates of layer {name!r} must be (sources, steps), got shape {values.shape}")
    source_counts = {values.shape[0] for values in layers.values()}
    if len(source_counts) > 1:
        raise ValueError(f"all layers must have the same number of sources, got {sorted(source_counts)}")
    return layers


def plot_transfer_gates(
    path: PathLike,
    gates: Mapping[str, ArrayLike] | ArrayLike,
    source_names: Sequence[str] | None = None,
    input_len: int | None = None,
    title: str | None = None,
) -> None:
    """Plot the mean transfer-gate value of each source network over time, one subplot per layer.

    Args:
        path: output image (format from the suffix).
        gates: layer name -> ``(sources, steps)`` values (nested lists, array or
            tensor), or one ``(layers, sources, steps)`` array (layers named
            ``"layer 0"``, ``"layer 1"``, ...: 0-based, as ``transfer.layers``).  Values are gate activations averaged over batch,
            channels and pixels (in ``[0, 1]`` for sigmoid gates).
        source_names: one name per source (default ``"source 1"``, ...).
        input_len: number of input (observed) steps; a dashed vertical line is drawn
            between step ``input_len`` and ``input_len + 1``, where prediction starts.
        title: optional figure title.

    The x axis is the recurrent time step ``1 .. steps``.  The y axis spans ``[0, 1]``
    when all values lie in it.
    """
    layers = _gate_layers(gates)
    source_count = next(iter(layers.values())).shape[0]
    if source_names is None:
        source_names = [f"source {index + 1}" for index in range(source_count)]
    if len(source_names) != source_count:
        raise ValueError(f"{len(source_names)} source names for {source_count} sources")
    columns = min(4, len(layers))
    rows = math.ceil(len(layers) / columns)
    figure = Figure(figsize=(3.6 * columns, 3.0 * rows), dpi=100, layout="constrained")
    axes_grid = figure.subplots(rows, columns, squeeze=False, sharey=True)
    within_unit_interval = all(values.size == 0 or (values.min() >= 0.0 and values.max() <= 1.0) for values in layers.values())
    for axes, (layer, values) in zip(axes_grid.flat, layers.items()):
        steps = np.arange(1, values.shape[1] + 1)
        for source_name, source_values in zip(source_names, values):
            axes.plot(steps, source_values, marker="o", markersize=2.5, label=source_name)
        if input_len is not None:
            axes.axvline(input_len + 0.5, color="gray", linestyle="--", linewidth=1, label="end of input")
        if within_unit_interval:
            axes.set_ylim(-0.02, 1.02)
        axes.set_title(layer)
        axes.set_xlabel("time step")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
    for axes in axes_grid[:, 0]:
        axes.set_ylabel("mean gate value")
    for axes in list(axes_grid.flat)[len(layers) :]:
        axes.set_visible(False)
    figure.legend(*axes_grid[0, 0].get_legend_handles_labels(), loc="outside right upper", fontsize=8)
    if title:
        figure.suptitle(title)
    save_figure(figure, path)
