"""Evaluate a trained predictor on a fixed test (or validation) set.

The model reads ``data.input_len`` true frames and predicts the remaining
``total_len - input_len`` frames from its own predictions. Scores use
:class:`transmem.evaluation.metrics.FrameMetrics` (definitions there and in docs/metrics.md),
next to the copy-last-input-frame baseline. For a TMU target the mean transfer-gate value
per layer, source and step is also returned (which source the target relies on, and when).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from transmem.evaluation.gate_means import TransferGateMeans
from transmem.evaluation.metrics import METRIC_NAMES, FrameMetrics, copy_last_frame_baseline
from transmem.models import RecurrentPredictor, rollout_mask
from transmem.schema import RunConfig
from transmem.storage.run_folder import metrics_file_name, transfer_gates_file_name


def read_metrics(path: str | Path, split: str = "test") -> dict | None:
    """The metrics JSON written by :func:`evaluate_run` for ``split``, or None.

    None when the file is missing, is not such a JSON (damaged, edited by hand) or holds
    another split's scores: callers then evaluate again or show no score, never a wrong one.
    """
    try:
        metrics = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(metrics, dict) or metrics.get("split") != split:
        return None
    for scores in (metrics, metrics.get("copy_last_frame")):  # what the benchmark's tables and plots read
        if not isinstance(scores, dict):
            return None
        for name in METRIC_NAMES:
            entry = scores.get(name)
            if not (
                isinstance(entry, dict)
                and isinstance(entry.get("mean"), (int, float))
                and isinstance(entry.get("per_frame"), list)
            ):
                return None
    if not isinstance(metrics.get("transfer_gates"), dict):
        return None
    return metrics


@torch.no_grad()
def evaluate_model(
    model: RecurrentPredictor,
    dataset,
    config: RunConfig,
    device: str | torch.device = "cpu",
    max_sequences: int | None = None,
) -> dict:
    """Score ``model`` on ``dataset`` (items ``(T, C, H, W)``).

    Returns ``{"model": metrics, "copy_last_frame": metrics, "transfer_gates": {layer:
    [[gate mean per step] per source]}, "input_len": int}`` where ``metrics`` is the dict of
    :meth:`FrameMetrics.compute`.
    """
    was_training = model.training
    model.eval()
    data = config.data
    horizon = data.total_len - data.input_len
    limit = max_sequences if max_sequences is not None else config.eval.max_sequences
    count = min(len(dataset), limit) if limit else len(dataset)
    scores, baseline, gates = FrameMetrics(horizon), FrameMetrics(horizon), TransferGateMeans()
    batch_size = config.eval.batch_size
    for start in range(0, count, batch_size):
        frames = torch.stack([dataset[i] for i in range(start, min(start + batch_size, count))]).to(device)
        mask = rollout_mask(frames.shape[0], data.total_len, data.input_len, device)
        rollout = model(frames, mask)
        truth = frames[:, data.input_len :]
        scores.update(rollout.predictions[:, data.input_len - 1 :], truth)
        baseline.update(copy_last_frame_baseline(frames[:, : data.input_len], horizon), truth)
        gates.update(rollout.gate_means)  # layer -> (B, T-1, N)
    model.train(was_training)
    return {
        "model": scores.compute(),
        "copy_last_frame": baseline.compute(),
        "transfer_gates": gates.compute(),
        "input_len": data.input_len,
    }


def evaluate_run(run_dir: str | Path, out: str | Path | None = None, split: str = "test", device: str = "cpu") -> dict:
    """Evaluate the model of ``run_dir`` on its test set; write JSON (and a gate plot for TMU).

    The JSON goes to ``out``, by default ``RUN/metrics.json`` for the test split and
    ``RUN/metrics_val.json`` for the validation split (which never replaces the test scores).

    The JSON holds every metric per frame and averaged, the baseline, the transfer gates,
    the source names and the number of sequences.
    """
    from transmem.data import DataError, build_dataset
    from transmem.evaluation.plots import layer_name, plot_transfer_gates
    from transmem.storage.files import atomic_write_text
    from transmem.storage.model_file import load_model
    from transmem.storage.run_folder import source_name

    run_dir = Path(run_dir)
    loaded = load_model(run_dir, device)
    config = loaded.config
    dataset = build_dataset(config.data, split)
    if len(dataset) == 0:
        raise DataError(f"{run_dir}: the run's {split} split is empty (data.{split}_size = 0)")
    result = evaluate_model(loaded.model, dataset, config, device)
    result["split"] = split
    result["weights"] = str(loaded.path)
    result["finished"] = loaded.finished
    result["sources"] = list(config.transfer.sources)
    # Top-level means for quick reading (and for `transmem zoo list`).
    for name in METRIC_NAMES:
        result[name] = result["model"][name]
    out = Path(out) if out else (run_dir if run_dir.is_dir() else run_dir.parent) / metrics_file_name(split)
    atomic_write_text(out, json.dumps(result, indent=1))
    if result["transfer_gates"]:
        names = [source_name(s) for s in config.transfer.sources]
        layers = {layer_name(k): v for k, v in result["transfer_gates"].items()}
        plot_transfer_gates(out.with_name(transfer_gates_file_name(split)), layers, names, input_len=config.data.input_len)
    return result
