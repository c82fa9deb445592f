"""The source zoo: frozen predictive networks trained on other datasets.

A source is any finished transmem run folder, ``model.safetensors`` or checkpoint of a backbone
(ConvLSTM, PredRNN, PredRNN-V2). It is loaded frozen: ``requires_grad`` off, eval mode.
Sources read the *target's* frames, so a source must take the target's channel count and
a frame size divisible by its own patch size; its memory may have any channel count and
spatial size (the TMU projects and interpolates to match).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from transmem.errors import SourceError
from transmem.models import RecurrentPredictor
from transmem.schema import RunConfig
from transmem.storage.checkpoints import CheckpointError
from transmem.storage.model_file import load_model
from transmem.storage.run_folder import MODEL_FILE, RunFolder, source_name
from transmem.transfer.builtin import PREFIX, builtin_file, describe_builtin, is_builtin


@dataclass
class Source:
    name: str
    path: Path
    model: RecurrentPredictor  # frozen, eval mode
    config: RunConfig  # the configuration the source was trained with
    digest: str  # SHA-256 of its weights

    def memory_layout(self, layer: int, frame_size: int) -> tuple[int, tuple[int, int]]:
        """``(channels, (h, w))`` of this source's cell memory at ``layer`` on target frames."""
        side = frame_size // self.model.patch
        return self.model.hidden[layer], (side, side)


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model.eval()


def load_source(path: str | Path, device: str | torch.device = "cpu") -> Source:
    """Load a source frozen. A run folder must hold finished training (``model.safetensors``);
    a checkpoint file named explicitly is used as it is; ``builtin:NAME`` is a source that
    ships with transmem (:mod:`~transmem.transfer.builtin`), its SHA-256 checked first."""
    if is_builtin(path):
        loaded = load_model(builtin_file(path), device)
        name = str(path)[len(PREFIX) :]
        return Source(name=name, path=Path(str(path)), model=freeze(loaded.model), config=loaded.config, digest=loaded.digest)
    path = Path(path)
    try:
        loaded = load_model(path, device)
    except CheckpointError as error:
        raise SourceError(f"source {path}: {error}") from None
    if path.is_dir() and not loaded.finished:
        raise SourceError(
            f"source {path}: unfinished run (no {MODEL_FILE}; newest checkpoint {loaded.path}); "
            f"finish its training, or name the checkpoint file to transfer from it as it is"
        )
    name = path.name if path.is_dir() else source_name(path)
    return Source(name=name, path=path, model=freeze(loaded.model), config=loaded.config, digest=loaded.digest)


def check_compatible(sources: list[Source], target: RunConfig, layers: list[int]) -> None:
    """Raise SourceError if a source cannot read the target's frames or lacks a layer."""
    if not sources:
        raise SourceError("transfer.sources: the source list is empty")
    for source in sources:
        model = source.model
        if model.channels != target.data.channels:
            raise SourceError(
                f"source {source.path}: takes {model.channels}-channel frames, the target has "
                f"{target.data.channels}; a source cannot be matched across channel counts"
            )
        if target.data.frame_size % model.patch:
            raise SourceError(
                f"source {source.path}: its patch size {model.patch} does not divide the target frame size "
                f"{target.data.frame_size}"
            )
        if model.frame_size is not None and model.frame_size != target.data.frame_size:
            raise SourceError(
                f"source {source.path}: its weights are for {model.frame_size}x{model.frame_size} frames only "
                f"(model.norm = 'release'), the target's are {target.data.frame_size}x{target.data.frame_size}"
            )
        for layer in layers:
            if layer >= len(model.hidden):
                raise SourceError(f"source {source.path}: has {len(model.hidden)} layers, no layer {layer}")


def architecture(config: RunConfig) -> tuple:
    """``(backbone, hidden, patch, channels, kernel, norm)`` of ``config``'s network: what a
    source must share with a target to be finetuned into it."""
    model = config.model
    return (model.backbone, list(model.hidden), model.patch, config.data.channels, model.kernel, model.norm)


def check_same_backbone(source: Source, config: RunConfig, verb: str = "starting from a source") -> None:
    """Raise SourceError unless ``source`` has the target's backbone architecture."""
    model = source.model
    theirs = (model.backbone, model.hidden, model.patch, model.channels, source.config.model.kernel, source.config.model.norm)
    mine = architecture(config)
    if mine != theirs:
        raise SourceError(
            f"source {source.path}: {verb} needs the same architecture; source has "
            f"(backbone, hidden, patch, channels, kernel, norm) = {theirs}, target {mine}"
        )


def load_zoo(paths: list[str], target: RunConfig, layers: list[int], device="cpu") -> list[Source]:
    sources = [load_source(p, device) for p in paths]
    check_compatible(sources, target, layers)
    return sources


def describe_zoo(folder: str | Path) -> list[dict]:
    """One row per source found in ``folder`` (run folders or model files) for ``zoo list``."""
    from transmem.evaluation.evaluate import read_metrics  # here: it imports the plotting libraries

    if str(folder) == "builtin":
        return describe_builtin()
    folder = Path(folder)
    if not folder.is_dir():
        raise SourceError(f"{folder}: not a folder")
    candidates = sorted(
        p
        for p in folder.iterdir()
        if (p.is_dir() and (RunFolder(p).model.exists() or RunFolder(p).checkpoints.is_dir()))
        or p.suffix in (".safetensors", ".pt")
    )
    rows = []
    for path in candidates:
        try:
            source = load_source(path)
        except SourceError as error:
            rows.append({"name": path.name, "error": str(error)})
            continue
        metrics = read_metrics(RunFolder(path if path.is_dir() else path.parent).metrics("test"), "test") or {}
        rows.append(
            {
                "name": source.name,
                "backbone": source.model.backbone,
                "hidden": source.model.hidden,
                "dataset": source.config.data.name,
                "options": source.config.data.options,
                "frame_size": source.config.data.frame_size,
                "patch": source.model.patch,
                "test_mse": metrics.get("mse", {}).get("mean"),
                "test_ssim": metrics.get("ssim", {}).get("mean"),
            }
        )
    return rows


def format_zoo(rows: list[dict]) -> str:
    """A plain-text table of :func:`describe_zoo` rows (``transmem zoo list``)."""
    lines = [f"{'name':24s} {'backbone':11s} {'hidden':12s} {'frame':>5s} {'test mse':>9s} {'ssim':>6s}  dataset"]
    for row in rows:
        if "error" in row:
            lines.append(f"{row['name']:24s} unusable: {row['error']}")
            continue
        mse = f"{row['test_mse']:.2f}" if row["test_mse"] is not None else "-"
        ssim = f"{row['test_ssim']:.3f}" if row["test_ssim"] is not None else "-"
        dataset = row["dataset"] + "".join(f" {k}={v}" for k, v in row["options"].items())
        baseline = (
            f"  (copy last frame: mse {row['copy_mse']:.2f}, ssim {row['copy_ssim']:.3f}; {row['bytes'] / 1e6:.2f} MB)"
            if "copy_mse" in row
            else ""
        )
        lines.append(
            f"{row['name']:24s} {row['backbone']:11s} {str(row['hidden']):12s} {row['frame_size']:5d} {mse:>9s} {ssim:>6s}  {dataset}{baseline}"
        )
    return "\n".join(lines)
