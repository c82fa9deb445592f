"""Evaluation of video predictions: frame-wise metrics, pictures and result tables.

* :mod:`.metrics` — :class:`FrameMetrics` (MSE, MAE, per-pixel MSE, SSIM, PSNR per
  predicted frame, accumulated batch by batch) and the copy-last-frame baseline.
* :mod:`.animations` — PNG strips and animated GIFs of frame sequences.
* :mod:`.plots` — per-frame metric plots, transfer-gate plots.
* :mod:`.report` — markdown tables, mean ± std over seeds, CSV / JSON files.
* :mod:`.training_curves` — validation curves over training, mean ± std over seeds.
"""

from .animations import save_gif, save_gif_grid, save_strip_png
from .metrics import FRAME_METRIC_NAMES, PSNR_CAP_DB, FrameMetrics, copy_last_frame_baseline
from .plots import plot_per_frame, plot_transfer_gates
from .report import (
    format_metrics_table,
    markdown_results_table,
    read_results_json,
    summarize_runs,
    write_results_csv,
    write_results_json,
)
from .training_curves import mean_curve, plot_validation_curves

__all__ = [
    "FRAME_METRIC_NAMES",
    "PSNR_CAP_DB",
    "FrameMetrics",
    "copy_last_frame_baseline",
    "format_metrics_table",
    "markdown_results_table",
    "mean_curve",
    "plot_per_frame",
    "plot_transfer_gates",
    "plot_validation_curves",
    "read_results_json",
    "save_gif",
    "save_gif_grid",
    "save_strip_png",
    "summarize_runs",
    "write_results_csv",
    "write_results_json",
]
