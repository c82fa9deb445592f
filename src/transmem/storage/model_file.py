"""The model file, ``model.safetensors``, and loading a trained model from any of its forms.

A model file holds the final weights; the architecture (config and TMU layout) is in the
safetensors metadata, so the file alone rebuilds the predictor, and a SHA-256 of the weights
is checked on load. :func:`load_model` takes a run folder, a model file or a checkpoint file.
Nothing here executes code from the files it reads.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save
from torch import Tensor

from transmem.config import ConfigError, RunConfig, config_from_dict, tomllib
from transmem.models import RecurrentPredictor, build_predictor, layout_from_json, layout_to_json
from transmem.storage.checkpoints import CheckpointError, latest_good_checkpoint, load_checkpoint
from transmem.storage.files import atomic_write_bytes
from transmem.storage.run_folder import MODEL_FILE, RunFolder

MODEL_FORMAT = "transmem-model-1"


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
        "format": MODEL_FORMAT,
        "config": config.to_toml(),
        "transfer_layout": layout_to_json(model.transfer_layout),
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


def _stored_metadata(path: str | Path) -> dict | None:
    """A transmem ``model.safetensors``'s metadata, read without loading the weights; None if
    the file is not a readable transmem model."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError):
        return None
    return metadata if metadata.get("format") == MODEL_FORMAT else None


def stored_model_config(path: str | Path) -> RunConfig | None:
    """The configuration in a ``model.safetensors``'s metadata (the one its weights were
    trained with), read without loading the weights; None if the file is not a readable
    transmem model."""
    metadata = _stored_metadata(path)
    try:
        return _config_from_toml(metadata["config"], Path(path)) if metadata is not None else None
    except (KeyError, ValueError, CheckpointError):
        return None


def stored_model_extra(path: str | Path) -> dict:
    """What a ``model.safetensors`` records about its training (``save_model``'s ``extra``:
    iterations, and with ``train.weights = "best_val"`` the iteration kept), read without
    loading the weights; ``{}`` if the file is not a readable transmem model."""
    try:
        extra = json.loads((_stored_metadata(path) or {}).get("extra") or "{}")
    except ValueError:
        return {}
    return extra if isinstance(extra, dict) else {}


def _build(config: RunConfig, layout_json: str, state: dict[str, Tensor], where: Path) -> RecurrentPredictor:
    bad = [name for name, tensor in state.items() if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if bad:
        raise CheckpointError(
            f"{where}: holds non-finite weights (NaN or inf) in {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}"
        )
    layout = layout_from_json(layout_json)
    model = build_predictor(config.model, config.data.channels, layout, config.data.frame_size)
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
        folder = RunFolder(path)
        if folder.model.is_file():
            path = folder.model
        else:
            found = latest_good_checkpoint(folder.checkpoints)
            if found is None:
                raise CheckpointError(f"{path}: no trained model (no {MODEL_FILE} and no good checkpoint){_runs_inside(path)}")
            path, state = found
            return _from_checkpoint(path, state, device)
    if not path.exists():
        raise CheckpointError(f"{path}: not found")
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            raise CheckpointError(f"{path}: not a readable safetensors file ({error})") from None
        if metadata.get("format") != MODEL_FORMAT:
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
    runs = sorted(p.name for p in folder.iterdir() if RunFolder(p).holds_run())
    if not runs:
        return ""
    return f"; it holds the runs {', '.join(runs)} (a benchmark method's seeds?): give one of them, e.g. {folder / runs[0]}"


def _from_checkpoint(path: Path, state: dict, device) -> LoadedModel:
    config = _config_from_toml(state["config"], path)
    model = _build(config, state.get("transfer_layout", "{}"), state["model"], path)
    return LoadedModel(model.to(device), config, path, _state_digest(state["model"]), False)
