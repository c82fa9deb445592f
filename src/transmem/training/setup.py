"""What a training run is built of: its device, seed, data, model, optimiser and scheduler.

The parts come together in the order that makes a run reproducible: torch is seeded with
``train.seed`` before the data and the model are built, and the sampling generator
(``train.seed + 1``) comes last. Everything here that can refuse a config (a device this
machine lacks, an uneven global batch, an empty test split, a step a CUDA graph cannot
capture) does so before a run writes anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from transmem.config import ConfigError, RunConfig
from transmem.data import DataError, build_dataset
from transmem.models import RecurrentPredictor
from transmem.training.cuda_graph import check_graphable
from transmem.training.distributed import DistributedContext, init_distributed
from transmem.transfer.methods import TransferMethod


@dataclass
class TrainingState:
    """What the steps of one training run share; the loop updates the model, optimiser,
    scheduler, generator and ``best`` in place, and a resume restores them."""

    config: RunConfig
    run_dir: Path  # where the run's files go (the transfer method keeps its caches there too)
    device: torch.device
    ctx: DistributedContext
    train_set: object  # items (T, C, H, W) in [0, 1]
    val_set: object | None  # None with data.val_size = 0
    method: TransferMethod
    model: RecurrentPredictor
    optimizer: torch.optim.Optimizer
    scheduler: object | None  # a torch learning-rate scheduler, None for a constant rate
    generator: torch.Generator  # scheduled sampling and time reversal
    # train.weights = "best_val": the validation with the lowest MSE so far (with
    # train.val_start, the starting weights are one of them),
    # {"iteration", "means", "model": state dict}; saved in every checkpoint
    best: dict | None = None


def resolve_device(name: str, option: str = "train.device") -> torch.device:
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N`` as a device; a
    ConfigError naming ``option`` for a name torch does not know, CUDA where there is none,
    or a GPU index this machine does not have."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"{option}: expected auto, cpu, cuda or cuda:N, got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f'{option} = {name!r} but CUDA is not available here (use "auto" or "cpu")')
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"{option} = {name!r} but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def training_devices(config: RunConfig) -> tuple[torch.device, DistributedContext]:
    """The device of this process and its distributed context (refuses an uneven global batch)."""
    device = resolve_device(config.train.device)
    ctx = init_distributed(device)
    if config.data.batch_size % ctx.world_size:
        raise ConfigError(
            f"data.batch_size: the global batch {config.data.batch_size} must be divisible by the "
            f"{ctx.world_size} processes (uneven shards would change the gradient average)"
        )
    if device.type == "cuda" and ctx.enabled:
        device = torch.device("cuda", ctx.local_rank)
    return device, ctx


def seed_torch(config: RunConfig) -> None:
    """Seed torch's global generator with ``train.seed`` and, with ``train.deterministic``,
    turn on torch's deterministic algorithms (warning, not failing, where an op has none)."""
    torch.manual_seed(config.train.seed)
    if config.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        # Deterministic results do not need every fresh tensor NaN-filled (a debugging aid, 1-3 % of a step).
        torch.utils.deterministic.fill_uninitialized_memory = False


def training_data(config: RunConfig, check_test_split: bool = True) -> tuple[object, object | None]:
    """``(train_set, val_set or None)``; with ``check_test_split``, refuses data whose test
    split is empty (found now, not after training, by evaluate)."""
    train_set = build_dataset(config.data, "train")
    val_set = build_dataset(config.data, "val") if config.data.val_size > 0 else None
    if check_test_split and len(build_dataset(config.data, "test")) == 0:
        raise DataError(f"data: the {config.data.name} test split is empty; a run needs test sequences (data.test_size)")
    return train_set, val_set


def training_optimizer(model: torch.nn.Module, config: RunConfig) -> torch.optim.Adam:
    """Put ``model`` (already on its device) in its training layout and return its Adam
    optimiser: ``train.channels_last`` first, since Adam's moments take the weights' layout;
    ``capturable`` under ``train.cuda_graph``, whose replayed graph steps Adam too (its step
    counter must then live on the GPU)."""
    if config.train.channels_last:
        model.use_channels_last()
    return torch.optim.Adam(model.parameters(), lr=config.train.lr, capturable=config.train.cuda_graph)


def make_scheduler(optimizer: torch.optim.Optimizer, config: RunConfig):
    """The learning-rate schedule of ``train.lr_schedule`` (None for a constant rate)."""
    train = config.train
    if train.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=train.iterations)
    if train.lr_schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=train.lr_step or max(1, train.iterations // 3), gamma=0.5)
    return None


def build_training(
    config: RunConfig,
    run_dir: Path,
    device: torch.device,
    ctx: DistributedContext,
    data: tuple[object, object | None],
    method: TransferMethod,
) -> TrainingState:
    """The run's state at iteration 0, after :func:`seed_torch` and :func:`training_data`
    (``data``): ``method`` checks the data and builds the model, then come the optimiser,
    scheduler and sampling generator."""
    train_set, val_set = data
    method.check_data(train_set)
    check_graphable(config, device, method, ctx.enabled)
    model = method.build_model().to(device)
    optimizer = training_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config)
    generator = torch.Generator().manual_seed(config.train.seed + 1)
    return TrainingState(config, run_dir, device, ctx, train_set, val_set, method, model, optimizer, scheduler, generator)


def prepare_method(state: TrainingState, progress: bool) -> None:
    """Rank 0 builds shared files (a cached memory bank) alone; the other ranks then find them valid."""
    if state.ctx.is_main:
        state.method.prepare(state.model, state.train_set, progress)
    state.ctx.barrier()
    if not state.ctx.is_main:
        state.method.prepare(state.model, state.train_set, False)


def forward_model(state: TrainingState) -> torch.nn.Module:
    """The module the training forward runs: the model, wrapped for DDP and compiled if asked."""
    model, forward = state.model, state.model
    if state.ctx.enabled:
        # Parameters without a gradient in some steps: Knowledge Flow mixers once the teachers
        # have faded out; distillers and projections when the distillation loss is off.
        unused = len(model.flow) > 0 or (bool(model.memory_transfer_layers) and state.config.transfer.distill_weight == 0)
        forward = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=unused)
    if state.config.train.compile:
        # Only the training forward is compiled; checkpoints, validation and the saved model
        # use ``model`` itself, so their state-dict keys do not change.
        forward = torch.compile(forward)
    return forward
