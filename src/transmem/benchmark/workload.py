"""The workloads ``transmem speed`` times: one training step of a variant, and inference.

The step is the training loop's own (:func:`transmem.training.step.training_step`): the
transfer method builds the model, prepares its bank and adds its loss terms exactly as in
training; the sources are random-init networks of the target's architecture (their weights
do not change the cost) and the training sequences are random frames held in memory (no
data generation in the timed step, the same for every variant).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from transmem.benchmark.speed_config import NUM_SOURCES, SpeedConfig, tmu_layout

if TYPE_CHECKING:  # torch is imported where it is used: `transmem --help` stays fast
    import torch
    from torch import Tensor


class RandomSequences:
    """A finite training set of random frames held in memory (``(T, C, H, W)`` items)."""

    online = False

    def __init__(self, spec: SpeedConfig, size: int, seed: int = 0) -> None:
        import torch

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
    """Save ``NUM_SOURCES`` random-init sources of the target's architecture in ``folder``."""
    import torch

    from transmem.models import build_predictor
    from transmem.storage.model_file import save_model
    from transmem.storage.run_folder import MODEL_FILE

    config = spec.run_config()
    paths = []
    for n in range(NUM_SOURCES):
        path = folder / f"source{n}"
        if not (path / MODEL_FILE).exists():
            torch.manual_seed(100 + n)
            path.mkdir(parents=True, exist_ok=True)
            save_model(build_predictor(config.model, spec.channels), config, path / MODEL_FILE)
        paths.append(str(path))
    return paths


@dataclass
class Workload:
    """A training-step closure and what it trains."""

    step: Callable[[], None]
    model: "torch.nn.Module"
    method: object


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
    import dataclasses

    import torch

    from transmem.training.cuda_graph import make_step
    from transmem.training.engine import seed_torch, training_optimizer
    from transmem.training.sampling import batch_indices, teacher_mask
    from transmem.transfer.memory_bank import TrainingBatch
    from transmem.transfer.methods import METHODS
    from transmem.transfer.ranking import rank_sources

    if variant == "plain":
        config = spec.run_config()
    else:
        sources = make_sources(spec, folder)
        config = spec.run_config("tmu", sources, variant, str(folder / "bank"))
    train = dataclasses.replace(
        config.train, precision=precision, device=device, cuda_graph=cuda_graph, channels_last=channels_last
    )
    config = dataclasses.replace(config, train=train)
    seed_torch(config)  # as the training loop does (engine._build)
    dataset = RandomSequences(spec, config.data.train_size)
    method = METHODS[config.transfer.method](config, folder / "run", torch.device(device))
    model = method.build_model().to(device)
    optimizer = training_optimizer(model, config)
    method.initialize(model, rank_sources)
    method.prepare(model, dataset, progress=False)
    forward_model = torch.compile(model) if compile_model else model
    training_step = make_step(model, forward_model, method, optimizer, None, config)
    generator = torch.Generator().manual_seed(1)
    data = config.data
    counter = {"iteration": 0}

    def diverged(loss: Tensor) -> Exception:
        return RuntimeError(f"speed: non-finite loss in the {variant} step")

    def step() -> None:
        iteration = counter["iteration"]
        counter["iteration"] += 1
        indices = batch_indices(iteration, data.batch_size, len(dataset), False, data.seed)
        mask = teacher_mask(data.batch_size, data.total_len, data.input_len, 1.0, 0.5, generator).to(device)
        frames = torch.stack([dataset[i] for i in indices]).to(device)
        training_step(TrainingBatch(indices, frames, mask), iteration, diverged)

    return Workload(step, model, method)


def build_inference(spec: SpeedConfig, tmu: bool, device: str = "cpu") -> Callable[[], Tensor]:
    """Predict T_out frames from T_in for one batch on ``device``, with no source loaded."""
    import torch

    from transmem.models import build_predictor

    torch.manual_seed(0)
    model = build_predictor(spec.run_config().model, spec.channels, tmu_layout(spec) if tmu else None).to(device).eval()
    inputs = torch.rand(spec.batch, spec.input_len, spec.channels, spec.frame_size, spec.frame_size).to(device)
    horizon = spec.total_len - spec.input_len
    return lambda: model.predict(inputs, horizon)
