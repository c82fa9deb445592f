"""Evaluation of video predictions: frame-wise metrics, pictures and result tables.

* :mod:`.metrics` — :class:`FrameMetrics` (MSE, MAE, per-pixel MSE, SSIM, PSNR per
  predicted frame, accumulated batch by batch) and the copy-last-frame baseline.
* :mod:`.gate_means` — :class:`TransferGateMeans`, a TMU's mean transfer gate per layer,
  source and step, accumulated batch by batch.
* :mod:`.evaluate` — a trained predictor scored on its test set.
* :mod:`.grid` — one picture of many frame sequences, side by side (GIFs, strips, previews).
* :mod:`.animations` — PNG strips and animated GIFs of frame sequences.
* :mod:`.plots` — per-frame metric plots, transfer-gate plots.
* :mod:`.report` — markdown tables, mean ± std over seeds, CSV / JSON files.
* :mod:`.training_curves` — validation curves over training, mean ± std over seeds.

Importing the package loads none of them: each name below loads its module when first
used, so that only code that draws a picture imports matplotlib.
"""

from __future__ import annotations

import importlib

_MODULE_OF = {
    "METRIC_NAMES": "metrics",
    "REPORTED_METRIC_NAMES": "metrics",
    "PSNR_CAP_DB": "metrics",
    "FrameMetrics": "metrics",
    "copy_last_frame_baseline": "metrics",
    "TransferGateMeans": "gate_means",
    "save_gif": "animations",
    "save_gif_grid": "animations",
    "save_strip_png": "animations",
    "plot_per_frame": "plots",
    "plot_transfer_gates": "plots",
    "format_metrics_table": "report",
    "markdown_results_table": "report",
    "read_results_json": "report",
    "summarize_runs": "report",
    "write_results_csv": "report",
    "write_results_json": "report",
    "mean_curve": "training_curves",
    "plot_validation_curves": "training_curves",
}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    """Load the module that defines ``name`` on first use (PEP 562)."""
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
