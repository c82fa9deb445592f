"""The benchmark's answer: the method chosen on validation, exported as ``OUT/best/``.

The method with the lowest mean validation MSE (over seeds, of the weights each run kept)
wins; the test split never chooses. Its seed with the lowest validation MSE is exported:
``OUT/best/`` holds that run's ``model.safetensors`` and ``config.toml`` (so ``transmem
predict OUT/best`` and ``transmem.load("OUT/best")`` take it), ``best.json`` (the choice as
data) and ``MODEL_CARD.md``. Each file is replaced atomically when a rerun chooses again;
nothing else in the folder is touched.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from transmem.benchmark.choice import mean_validation_mse
from transmem.evaluation.report import markdown_table
from transmem.storage.files import atomic_write_bytes, atomic_write_text
from transmem.storage.run_folder import CONFIG_FILE, INIT_FILE, MODEL_FILE

BEST_DIR = "best"
CARD_FILE = "MODEL_CARD.md"
BEST_FILE = "best.json"


def choose_best(rows: list[dict]) -> dict | None:
    """``{"method", "seed", "val_mse", "method_val_mse", "row"}`` of the method with the lowest
    mean validation MSE and its seed with the lowest; None when no run has a validation MSE."""
    means = {method: mean_validation_mse(rows, method) for method in dict.fromkeys(row["method"] for row in rows)}
    means = {method: mean for method, mean in means.items() if not math.isnan(mean)}
    if not means:
        return None
    method = min(means, key=means.get)  # ties: the first in the table's order
    row = min((r for r in rows if r["method"] == method), key=lambda r: r["val_mse"])
    return {"method": method, "seed": row["seed"], "val_mse": row["val_mse"], "method_val_mse": means[method], "row": row}


def export_best(out: Path, best: dict, run_dir: Path, card: str) -> Path:
    """Copy the chosen run's model and config into ``out/best/`` and write its card."""
    folder = Path(out) / BEST_DIR
    folder.mkdir(exist_ok=True)
    atomic_write_bytes(folder / MODEL_FILE, (run_dir / MODEL_FILE).read_bytes())
    atomic_write_text(folder / CONFIG_FILE, (run_dir / CONFIG_FILE).read_text())
    record = {k: v for k, v in best.items() if k != "row"} | {"run": str(run_dir)}
    atomic_write_text(folder / BEST_FILE, json.dumps(record, indent=1))
    atomic_write_text(folder / CARD_FILE, card)
    return folder


def source_ranking(run_dir: Path) -> list[dict]:
    """The ranking of the sources the chosen run started from, if it ranked them."""
    try:
        record = json.loads((Path(run_dir) / INIT_FILE).read_text())
    except (OSError, ValueError):
        return []
    return list(record.get("ranking") or [])


def model_card(best: dict, context: dict) -> str:
    """MODEL_CARD.md: what the model is, how it was chosen and trained, and its scores.

    ``context``: ``suite``, ``description``, ``profile``, ``budget``, ``command``, ``config``
    (the run's RunConfig), ``sources`` (name -> where), ``ranking`` (rows), ``test`` (metric ->
    mean of the run), ``flops`` (its training FLOPs)."""
    row, config = best["row"], context["config"]
    data, model = config.data, config.model
    lines = [
        f"# {best['method']} (seed {best['seed']}): the best target model of benchmark `{context['suite']}`",
        "",
        f"{context['description']}.",
        "",
        "## How it was chosen",
        "",
        f"Of the methods compared, `{best['method']}` has the lowest validation MSE (mean over seeds "
        f"{best['method_val_mse']:.2f}); this is its seed with the lowest ({best['val_mse']:.2f}). "
        "The test split did not choose.",
        "",
        "## Sources",
        "",
        *([f"- `{name}`: {where}" for name, where in context["sources"].items()] or ["none: trained from random weights"]),
        "",
        *_ranking_lines(context["ranking"]),
        "## Data and training",
        "",
        f"- data: `{data.name}` {dict(data.options) or ''}, {data.frame_size}x{data.frame_size} frames, "
        f"{data.input_len} in -> {data.total_len - data.input_len} out, data.train_size = {data.train_size} (0: the whole file, or generated online)",
        f"- network: {model.backbone} hidden {list(model.hidden)}, kernel {model.kernel}, patch {model.patch}",
        f"- transfer: {config.transfer.method}",
        f"- budget ({context['budget']}): {config.train.iterations} iterations, {row['train_flops']:.3g} training FLOPs",
        "",
        "## Scores",
        "",
        markdown_table(
            ["split", "MSE", "MAE", "SSIM", "PSNR"],
            [
                ["validation", f"{best['val_mse']:.2f}", "", "", ""],
                ["test", f"{row['mse']:.2f}", f"{row['mae']:.2f}", f"{row['ssim']:.4f}", f"{row['psnr']:.2f}"],
            ],
            right=(1, 2, 3, 4),
        ),
        "",
        "MSE and MAE are summed over a frame's pixels, averaged over sequences and predicted frames.",
        "",
        f"Made by: `{context['command']}`",
        "",
        'Use it: `transmem predict best --input frames.npy --out predictions/` or `transmem.load("best")`.',
        "",
    ]
    return "\n".join(lines)


def _ranking_lines(ranking: list[dict]) -> list[str]:
    if not ranking:
        return []
    lines = ["Ranking on the target's validation split (best first):", ""]
    for n, row in enumerate(ranking, 1):
        probe = row.get("probe_mse")
        scores = f"zero-shot MSE {row.get('zero_shot_mse', float('nan')):.2f}" + (
            f", probe MSE {probe:.2f}" if isinstance(probe, (int, float)) else ""
        )
        lines.append(f"{n}. `{row.get('name', row.get('path'))}`: {scores}")
    return [*lines, ""]
