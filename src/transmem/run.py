"""Run folders and self-contained trained models.

A run folder written by ``transmem train`` holds::

    config.toml          the resolved configuration
    checkpoints/         ckpt-XXXXXXXX.pt (last K) and manifest.json (SHA-256 of each)
    train.csv, val.csv   logged losses and validation metrics
    model.safetensors    the final weights; the architecture (config and TMU layout) is in
                         the safetensors metadata, so the file alone rebuilds the predictor

:func:`load` returns a :class:`Predictor` from a run folder, a ``model.safetensors`` file or
a checkpoint file. Nothing here executes code from the files it reads.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import Tensor

from transmem.config import ConfigError, RunConfig, config_from_dict
from transmem.models import RecurrentPredictor, build_predictor
from transmem.training.checkpoint import (
    CheckpointError,
    atomic_write_bytes,
    latest_good_checkpoint,
    load_checkpoint,
)

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python < 3.11
    import tomli as tomllib

MODEL_FILE = "model.safetensors"
CHECKPOINT_DIR = "checkpoints"


@dataclass
class LoadedModel:
    model: RecurrentPredictor
    config: RunConfig
    path: Path  # the file the weights came from
    digest: str  # SHA-256 of the weights (identifies a source in memory-bank caches)
    finished: bool  # final weights (True) or an intermediate checkpoint (False)


def save_model(model: RecurrentPredictor, config: RunConfig, path: Path, extra: dict | None = None) -> None:
    """Write final weights + architecture metadata to ``path`` (safetensors), atomically."""
    metadata = {
        "format": "transmem-model-1",
        "config": config.to_toml(),
        "transfer_layout": json.dumps({str(k): v for k, v in model.transfer_layout.items()}),
        "extra": json.dumps(extra or {}),
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata["sha256"] = _state_digest(tensors)  # checked on load: damaged weights are refused
    atomic_write_bytes(Path(path), save(tensors, metadata=metadata))


def _config_from_toml(text: str, where: Path) -> RunConfig:
    try:
        return config_from_dict(tomllib.loads(text), stored=True)
    except (tomllib.TOMLDecodeError, ConfigError) as error:
        raise CheckpointError(f"{where}: its stored configuration is invalid ({error})") from None


def stored_model_config(path: str | Path) -> RunConfig | None:
    """The configuration in a ``model.safetensors``'s metadata (the one its weights were
    trained with), read without loading the weights; None if the file is not a readable
    transmem model."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        return _config_from_toml(metadata["config"], Path(path)) if metadata.get("format") == "transmem-model-1" else None
    except (SafetensorError, OSError, ValueError, KeyError, CheckpointError):
        return None


def _build(config: RunConfig, layout_json: str, state: dict[str, Tensor], where: Path) -> RecurrentPredictor:
    bad = [name for name, tensor in state.items() if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if bad:
        raise CheckpointError(f"{where}: holds non-finite weights (NaN or inf) in {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}")
    layout = {int(k): v for k, v in json.loads(layout_json or "{}").items()}
    model = build_predictor(config.model, config.data.channels, layout)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise CheckpointError(f"{where}: weights do not match the stored architecture ({str(error)[:200]})") from None
    return model


def _state_digest(state: dict[str, Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a trained predictor from a run folder, ``model.safetensors`` or checkpoint file.

    A run folder gives its final model if training finished, else its newest good
    checkpoint. Raises :class:`CheckpointError` naming the file for anything unusable.
    """
    path = Path(path)
    finished = True
    if path.is_dir():
        if (path / MODEL_FILE).is_file():
            path = path / MODEL_FILE
        else:
            found = latest_good_checkpoint(path / CHECKPOINT_DIR)
            if found is None:
                raise CheckpointError(f"{path}: no trained model (no {MODEL_FILE} and no good checkpoint){_runs_inside(path)}")
            path, state = found
            return _from_checkpoint(path, state, device)
    if not path.exists():
        raise CheckpointError(f"{path}: not found")
    if path.suffix == ".safetensors":
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            raise CheckpointError(f"{path}: not a readable safetensors file ({error})") from None
        if metadata.get("format") != "transmem-model-1":
            raise CheckpointError(f"{path}: not a transmem model (missing transmem metadata)")
        config = _config_from_toml(metadata["config"], path)
        digest = _state_digest(tensors)
        if metadata.get("sha256", digest) != digest:  # files written before the checksum have none
            raise CheckpointError(f"{path}: damaged (its weights do not match the SHA-256 written with them)")
        model = _build(config, metadata.get("transfer_layout", "{}"), tensors, path)
        return LoadedModel(model.to(device), config, path, digest, finished)
    state = load_checkpoint(path)
    return _from_checkpoint(path, state, device)


def _runs_inside(folder: Path) -> str:
    """``"; it holds the runs seed0, seed1 ..."`` when ``folder``'s subfolders are runs (a
    benchmark's method folder), else ``""``."""
    runs = sorted(p.name for p in folder.iterdir() if (p / MODEL_FILE).is_file() or (p / CHECKPOINT_DIR).is_dir())
    if not runs:
        return ""
    return f"; it holds the runs {', '.join(runs)} (a benchmark method's seeds?): give one of them, e.g. {folder / runs[0]}"


def _from_checkpoint(path: Path, state: dict, device) -> LoadedModel:
    config = _config_from_toml(state["config"], path)
    model = _build(config, state.get("transfer_layout", "{}"), state["model"], path)
    return LoadedModel(model.to(device), config, path, _state_digest(state["model"]), False)


class Predictor:
    """A trained predictor ready for inference (no sources needed, even for TMU targets)."""

    def __init__(self, loaded: LoadedModel) -> None:
        self.model = loaded.model.eval()
        self.config = loaded.config
        self.path = loaded.path

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def predict(self, frames: Tensor, horizon: int | None = None) -> Tensor:
        """Predict ``horizon`` frames (default: the run's T_out) after ``frames``.

        Args:
            frames: ``(B, T_in, C, H, W)`` float in [0, 1] or uint8 (a numpy array is accepted).
        Returns:
            ``(B, horizon, C, H, W)`` float32, clipped to [0, 1].
        """
        from transmem.data import DataError, validate_frames

        frames = validate_frames(torch.as_tensor(frames), "frames")  # uint8 scaled; NaN, inf, range refused
        if frames.dim() != 5:
            raise DataError(f"frames must be (B, T_in, C, H, W), got shape {tuple(frames.shape)}")
        if frames.shape[2] != self.model.channels:
            raise DataError(f"frames have {frames.shape[2]} channels, the model takes {self.model.channels}")
        if frames.shape[-1] % self.model.patch or frames.shape[-2] % self.model.patch:
            raise DataError(f"frame size {tuple(frames.shape[-2:])} is not divisible by the patch size {self.model.patch}")
        if horizon is None:
            horizon = self.config.data.total_len - self.config.data.input_len
        out = self.model.predict(frames.to(self.device), horizon)
        if not torch.isfinite(out).all():
            raise DataError(f"{self.path}: the model predicts non-finite values (NaN or inf) for these frames")
        return out.clamp(0.0, 1.0).cpu()


def load(path: str | Path, device: str | torch.device = "cpu") -> Predictor:
    """Load a predictor from a run folder, ``model.safetensors`` or checkpoint file."""
    return Predictor(load_model(path, device))
