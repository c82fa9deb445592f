"""Training FLOPs of a benchmark's runs, and the compute-fair budget (``--budget flops``).

A run's training FLOPs are counted with :class:`torch.utils.flop_counter.FlopCounterMode`
(multiply-adds count two; convolutions and matrix products, as ``transmem speed`` counts
them) on its own networks at its own shapes, built with random weights (FLOPs do not depend
on the weights):

- every iteration: the target's forward and backward pass over one batch (twice with
  ``train.reverse_input``, sources included);
- a method whose sources run at every step (a ``live`` or ``rollout`` memory bank; Knowledge
  Flow until ``transfer.flow_stop``): each source's forward pass over the same batch;
- once: a ``cached`` memory bank (each source's forward pass over every training sequence);
- once: the ranking of ``init_from = "best"`` and fusion (per source, ``rank_probe``
  finetuning iterations and two passes over the validation split).

Validation during training is evaluation, not training, and is not counted.

Under ``--budget flops`` every method gets the training FLOPs that the costliest method of
the benchmark spends in the profile's iterations, so no method trains less than it would
under ``--budget iterations``. ``--budget-of METHOD`` sets the budget to what METHOD spends
there, whether or not it is run, so that methods added later get an earlier benchmark's
budget (a run it would give fewer iterations than the profile's is refused). Each run trains ``(budget - once) / per_iteration`` iterations, and its schedule
(scheduled sampling and ``lr_step``, both fractions of the run) scales with them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from transmem.config import RunConfig
from transmem.data import build_dataset
from transmem.models import RecurrentPredictor, build_predictor
from transmem.transfer.methods import METHODS, memory_layouts
from transmem.transfer.zoo import Source

#: ``--budget flops``: every run's training FLOPs agree within this fraction (rounding a run's
#: iterations to a whole number moves it by at most half an iteration's FLOPs, far less)
FLOPS_TOLERANCE = 0.05


@dataclass(frozen=True)
class RunFlops:
    """A run's training FLOPs: ``per_iteration`` every update, ``once`` before or beside them."""

    per_iteration: float
    once: float

    def total(self, iterations: int) -> float:
        return self.once + iterations * self.per_iteration


def _count(function) -> float:
    with FlopCounterMode(display=False) as counter:
        function()
    return float(counter.get_total_flops())


def _frames(config: RunConfig, batch: int) -> torch.Tensor:
    data = config.data
    return torch.zeros(batch, data.total_len, data.channels, data.frame_size, data.frame_size)


def forward_flops(model: RecurrentPredictor, config: RunConfig, sequences: int = 1) -> float:
    """FLOPs of ``model``'s forward pass over ``sequences`` sequences of ``config``'s data."""
    with torch.no_grad():
        return _count(lambda: model(_frames(config, 1))) * sequences


def step_flops(model: RecurrentPredictor, config: RunConfig) -> float:
    """FLOPs of one training step of ``model``: forward, loss and backward over one batch."""

    def step() -> None:
        frames = _frames(config, 1)
        F.mse_loss(model(frames).predictions, frames[:, 1:]).backward()

    return _count(step) * config.data.batch_size


def _stand_in(name: str, config: RunConfig) -> Source:
    """A source of ``config``'s architecture with random weights: what FLOPs need of it."""
    model = build_predictor(config.model, config.data.channels, None, config.data.frame_size).eval()
    return Source(name, Path(name), model, config, "")


def target_model(config: RunConfig, sources: list[Source]) -> RecurrentPredictor:
    """The network ``config``'s method trains, built as the method builds it, random weights."""
    method = METHODS[config.transfer.method]
    layout = None
    if config.transfer.method in ("tmu", "distill"):
        transfer = config.transfer
        fields = {"kind": "tmu", "use_gates": method.use_gates, "merge": transfer.memory_merge}
        layout = memory_layouts(sources, list(transfer.layers), config, **fields)
    elif config.transfer.method == "kflow":
        layout = memory_layouts(sources, list(config.transfer.layers), config, kind="kflow")
    return build_predictor(config.model, config.data.channels, layout, config.data.frame_size)


def run_flops(config: RunConfig, source_configs: list[RunConfig]) -> RunFlops:
    """The training FLOPs of the run ``config`` reading sources of ``source_configs``."""
    sources = [_stand_in(f"source{n}", c) for n, c in enumerate(source_configs)]
    per_iteration = step_flops(target_model(config, sources), config)
    teacher = sum(forward_flops(s.model, config, config.data.batch_size) for s in sources)
    transfer, method = config.transfer, config.transfer.method
    once = 0.0
    if method in ("tmu", "distill"):
        sequences = _finite_train_size(config)
        if _bank_mode(config, sequences) == "cached":
            once += teacher / config.data.batch_size * sequences
        else:
            per_iteration += teacher
    elif method == "kflow":
        per_iteration += teacher * transfer.flow_stop
    if config.train.reverse_input:  # a second step (and source rollout) on the reversed batch
        per_iteration *= 2
    if transfer.init_from == "best" or (method == "fusion" and (transfer.fuse or transfer.fusion_head == "best")):
        once += _ranking_flops(config, sources)
    return RunFlops(per_iteration, once)


def _finite_train_size(config: RunConfig) -> int:
    """The number of training sequences, 0 for data generated online (as the method asks)."""
    train = build_dataset(config.data, "train")
    return 0 if getattr(train, "online", False) else len(train)


def _bank_mode(config: RunConfig, sequences: int) -> str:
    """The memory bank a TMU run uses, as the method resolves ``bank = "auto"``: cached for
    a finite training set read forward in time, else live."""
    bank = config.transfer.bank
    if bank != "auto":
        return bank
    return "cached" if sequences > 0 and not config.train.time_reversal and not config.train.reverse_input else "live"


def _ranking_flops(config: RunConfig, sources: list[Source]) -> float:
    """Per source: ``rank_probe`` finetuning steps (the source's network on the target's
    data) and two passes over the validation split (before and after the probe)."""
    total = 0.0
    for source in sources:
        if config.transfer.rank_probe:
            probe = replace(config, model=source.config.model)
            member = build_predictor(source.config.model, config.data.channels, None, config.data.frame_size)
            total += config.transfer.rank_probe * step_flops(member, probe)
        total += 2 * forward_flops(source.model, config, config.data.val_size)
    return total


def flops_budget(flops: list[RunFlops], iterations: list[int]) -> float:
    """The costliest run's training FLOPs at its ``iterations``."""
    return max(f.total(n) for f, n in zip(flops, iterations))


def iterations_within(budget: float, flops: list[RunFlops]) -> list[int]:
    """Each run's iterations under ``budget`` training FLOPs (its one-off cost included; at least one)."""
    return [max(1, round((budget - f.once) / f.per_iteration)) for f in flops]


def with_iterations(config: RunConfig, iterations: int) -> RunConfig:
    """``config`` trained ``iterations`` iterations, its schedule scaled with them (scheduled
    sampling is a fraction already; an explicit ``lr_step`` scales)."""
    train = config.train
    lr_step = round(train.lr_step * iterations / train.iterations) if train.lr_step else 0
    return replace(config, train=replace(train, iterations=iterations, lr_step=lr_step))
