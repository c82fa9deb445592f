"""The workloads ``transmem speed`` times: one training step of a variant, and inference.

The step is the training loop's own (:func:`transmem.training.step.training_step`): the
transfer method builds the model, prepares its bank and adds its loss terms exactly as in
training; the sources are random-init networks of the target's architecture (their weights
do not change the cost) and the training sequences are random frames held in memory (no
data generation in the timed step, the same for every variant).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from transmem.config import RunConfig
from transmem.data.batch import TrainingBatch
from transmem.models import build_predictor
from transmem.speed.configs import NUM_SOURCES, SpeedConfig, tmu_layout
from transmem.storage.model_file import save_model
from transmem.storage.run_folder import MODEL_FILE
from transmem.training.cuda_graph import make_step
from transmem.training.sampling import batch_indices, teacher_mask
from transmem.training.setup import seed_torch, training_optimizer
from transmem.transfer.methods import METHODS


class RandomSequences:
    """A finite training set of random frames held in memory (``(T, C, H, W)`` items)."""

    online = False

    def __init__(self, spec: SpeedConfig, size: int, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        shape = (size, spec.total_len, spec.channels, spec.frame_size, spec.frame_size)
        self.frames = torch.rand(shape, generator=generator)
        self.seed = seed

    def __len__(self) -> int:
        return self.frames.shape[0]

    def __getitem__(self, index: int) -> Tensor:
        return self.frames[index]

    def fingerprint(self) -> str:
        return f"speed-random-{tuple(self.frames.shape)}-{self.seed}"


def make_sources(spec: SpeedConfig, folder: Path) -> list[str]:
    """Save ``NUM_SOURCES`` random-init sources of the target's architecture in ``folder``
    (kept when there already); their run folders' paths."""
    config = spec.run_config()
    paths = []
    for n in range(NUM_SOURCES):
        path = folder / f"source{n}"
        if not (path / MODEL_FILE).exists():
            torch.manual_seed(100 + n)
            path.mkdir(parents=True, exist_ok=True)
            save_model(build_predictor(config.model, spec.channels, None, spec.frame_size), config, path / MODEL_FILE)
        paths.append(str(path))
    return paths


@dataclass
class Workload:
    """A training-step closure and what it trains."""

    step: Callable[[], None]
    model: torch.nn.Module
    method: object


def step_config(
    spec: SpeedConfig,
    variant: str,
    folder: Path,
    precision: str = "float32",
    device: str = "cpu",
    cuda_graph: bool = False,
    channels_last: bool = False,
) -> RunConfig:
    """The run config of ``variant``'s step: no transfer (``"plain"``), or a TMU target with a
    ``"live"`` or ``"cached"`` bank of random-init sources saved in ``folder``
    (:func:`make_sources`), trained on ``device`` with ``precision``, ``cuda_graph`` and
    ``channels_last`` as ``train.*``."""
    if variant == "plain":
        config = spec.run_config()
    else:
        sources = make_sources(spec, folder)
        config = spec.run_config("tmu", sources, variant, str(folder / "bank"))
    train = dataclasses.replace(
        config.train, precision=precision, device=device, cuda_graph=cuda_graph, channels_last=channels_last
    )
    return dataclasses.replace(config, train=train)


def build_workload(
    spec: SpeedConfig,
    variant: str,
    folder: Path,
    precision: str = "float32",
    compile_model: bool = False,
    device: str = "cpu",
    cuda_graph: bool = False,
    channels_last: bool = False,
) -> Workload:
    """One training step of ``variant`` on ``device`` as the training loop runs it (see module
    docstring); the training frames stay on the CPU and are copied to ``device`` every step, as
    in training. On CUDA the step returns before the GPU has finished (time it with a
    synchronisation). ``cuda_graph``: the step of ``train.cuda_graph`` (plain only; its first
    :data:`~transmem.training.cuda_graph.WARMUP_STEPS` + 1 calls warm up and capture).
    ``channels_last``: the target runs channels-last (``train.channels_last``)."""
    config = step_config(spec, variant, folder, precision, device, cuda_graph, channels_last)
    seed_torch(config)  # as the training loop does
    dataset = RandomSequences(spec, config.data.train_size)
    method = METHODS[config.transfer.method](config, folder / "run", torch.device(device))
    model = method.build_model().to(device)
    optimizer = training_optimizer(model, config)
    method.initialize(model)  # its sources are never ranked: no init_from
    method.prepare(model, dataset, progress=False)
    forward_model = torch.compile(model) if compile_model else model
    training_step = make_step(model, forward_model, method, optimizer, None, config)
    return Workload(_feeding(training_step, dataset, config, variant, device), model, method)


def _feeding(training_step, dataset: RandomSequences, config: RunConfig, variant: str, device: str) -> Callable[[], None]:
    """``training_step`` fed as the training loop feeds it: each call takes the next batch of
    ``dataset`` (``(B, T, C, H, W)`` frames, copied to ``device``) and a scheduled-sampling
    mask drawn from its own generator, at the next iteration."""
    generator = torch.Generator().manual_seed(1)
    data = config.data
    counter = {"iteration": 0}

    def diverged(value: Tensor, what: str = "loss") -> Exception:
        return RuntimeError(f"speed: non-finite {what} in the {variant} step")

    def step() -> None:
        iteration = counter["iteration"]
        counter["iteration"] += 1
        indices = batch_indices(iteration, data.batch_size, len(dataset), False, data.seed)
        mask = teacher_mask(data.batch_size, data.total_len, data.input_len, 1.0, 0.5, generator).to(device)
        frames = torch.stack([dataset[i] for i in indices]).to(device)
        training_step(TrainingBatch(indices, frames, mask), iteration, diverged)

    return step


def build_inference(spec: SpeedConfig, tmu: bool, device: str = "cpu") -> Callable[[], Tensor]:
    """Predict T_out frames from T_in for one batch on ``device``, with no source loaded: a
    call returns the ``(B, T_out, C, H, W)`` prediction (backbone, or a TMU target if ``tmu``)."""
    torch.manual_seed(0)
    model = (
        build_predictor(spec.run_config().model, spec.channels, tmu_layout(spec) if tmu else None, spec.frame_size)
        .to(device)
        .eval()
    )
    inputs = torch.rand(spec.batch, spec.input_len, spec.channels, spec.frame_size, spec.frame_size).to(device)
    horizon = spec.total_len - spec.input_len
    return lambda: model.predict(inputs, horizon)
