"""Transfer methods: how a target network is built and what it adds to the loss.

Each method is a class in :data:`METHODS` (keyed by ``transfer.method``). The training loop
asks a method to build the model, to prepare (load sources, build the memory bank), which
keyword arguments to pass to the model's ``forward`` and which extra loss terms to add to
the prediction MSE. The loss itself is always assembled by the training loop.

- ``none``: training from scratch.
- ``finetune``: weights initialised from one source (same architecture), then trained.
- ``tmu``: Transferable Memory Units in ``transfer.layers``; loss adds
  ``distill_weight * mean_{layers, sources} MSE(project(D^n), C^{n,l})``.
- ``distill``: the same distillers and hint loss without transfer gates (C_t = C'_t).
- ``kflow``: Knowledge Flow; teachers' hidden states (on the true frames) are mixed into
  ``transfer.layers`` with learned weights scaled from 1 to 0 by ``transfer.flow_stop``.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from transmem.config import ConfigError, RunConfig
from transmem.models import RecurrentPredictor, Rollout, build_predictor
from transmem.transfer.memory_bank import CachedMemoryBank, LiveMemoryBank, MemoryBankError
from transmem.transfer.zoo import Source, SourceError, load_zoo


class ScratchMethod:
    """Train the target from random initialisation."""

    def __init__(self, config: RunConfig, run_dir: Path, device: torch.device) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.device = device
        self.sources: list[Source] = []  # the frozen source networks the method reads

    def source_digests(self) -> dict[str, str]:
        """SHA-256 of each source's weights by path: checkpoints record them, so a resume
        can tell that a source was replaced since the run started."""
        return {str(source.path): source.digest for source in self.sources}

    def transfer_layout(self) -> dict | None:
        return None

    def build_model(self) -> RecurrentPredictor:
        return build_predictor(self.config.model, self.config.data.channels, self.transfer_layout())

    def initialize(self, model: RecurrentPredictor) -> None:
        """Set initial weights of a fresh (not resumed) model."""

    def check_data(self, train_dataset) -> None:
        """Refuse a training set the method cannot use, before anything is written."""

    def prepare(self, model: RecurrentPredictor, train_dataset, progress: bool = True) -> None:
        """Anything needed before the first step (also after a resume)."""

    def forward_kwargs(self, frames: Tensor, iteration: int) -> dict:
        """Extra keyword arguments of the model's forward for this batch ``(B, T, C, H, W)``."""
        return {}

    def losses(self, model: RecurrentPredictor, indices: list[int], rollout: Rollout) -> dict[str, tuple[float, Tensor]]:
        """Extra loss terms ``name -> (weight, value)``; the loop adds ``weight * value``."""
        return {}


class FinetuneMethod(ScratchMethod):
    """Initialise from a source with the same architecture, then train on the target."""

    def __init__(self, config: RunConfig, run_dir: Path, device: torch.device) -> None:
        super().__init__(config, run_dir, device)
        self.sources = load_zoo(config.transfer.sources, config, [0], "cpu")
        self.source = self.sources[0]

    def initialize(self, model: RecurrentPredictor) -> None:
        source = self.source.model
        mine = (model.backbone, model.hidden, model.patch, model.channels)
        theirs = (source.backbone, source.hidden, source.patch, source.channels)
        if mine != theirs or model.state_dict().keys() != source.state_dict().keys():
            raise SourceError(
                f"source {self.source.path}: finetuning needs the same architecture; source has "
                f"(backbone, hidden, patch, channels) = {theirs}, target {mine}"
            )
        try:
            model.load_state_dict(source.state_dict())
        except RuntimeError as error:
            raise SourceError(f"source {self.source.path}: weights do not fit the target ({str(error)[:200]})") from None


def memory_layouts(sources, layers: list[int], config: RunConfig, **fields) -> dict:
    """Per target layer: each source's memory channels and spatial size (None = target's)."""
    frame_size = config.data.frame_size
    target_side = frame_size // config.model.patch
    layout = {}
    for layer in layers:
        channels, sizes = [], []
        for source in sources:
            c, (h, w) = source.memory_layout(layer, frame_size)
            channels.append(c)
            sizes.append(None if (h, w) == (target_side, target_side) else [h, w])
        layout[layer] = {"source_channels": channels, "source_sizes": sizes, **fields}
    return layout


class TransferableMemoryMethod(ScratchMethod):
    """TMU target distilling the sources' memories (``tmu``; ``distill`` without gates)."""

    use_gates = True

    def __init__(self, config: RunConfig, run_dir: Path, device: torch.device) -> None:
        super().__init__(config, run_dir, device)
        self.layers = list(config.transfer.layers)
        self.sources = load_zoo(config.transfer.sources, config, self.layers, device)
        self.bank = None
        self.bank_folder = Path(config.transfer.cache_dir or run_dir / "memory_bank")
        if self.bank_folder.exists() and not self.bank_folder.is_dir():  # refused before the run folder is written
            raise ConfigError(f"transfer.cache_dir: {self.bank_folder} exists and is not a folder")

    def transfer_layout(self) -> dict:
        return memory_layouts(
            self.sources, self.layers, self.config, kind="tmu", use_gates=self.use_gates, merge=self.config.transfer.memory_merge
        )

    def bank_mode(self, train_dataset) -> str:
        """``auto`` is ``cached`` for a finite training set read forward in time, else ``live``.

        A cached bank holds each sequence's memories in forward time; with
        ``train.time_reversal`` half of the batches are played backwards, so only a live
        bank (sources read what the target reads) stays aligned.
        """
        mode = self.config.transfer.bank
        if mode == "auto":
            finite = not getattr(train_dataset, "online", False)
            return "cached" if finite and not self.config.train.time_reversal else "live"
        return mode

    def check_data(self, train_dataset) -> None:
        if self.bank_mode(train_dataset) == "cached" and getattr(train_dataset, "online", False):
            raise MemoryBankError(
                "transfer.bank = 'cached' needs a finite training set (set data.train_size > 0) or transfer.bank = 'live'"
            )

    def prepare(self, model: RecurrentPredictor, train_dataset, progress: bool = True) -> None:
        if self.bank_mode(train_dataset) == "live":
            self.bank = LiveMemoryBank(self.sources, self.layers)
            return
        self.bank = CachedMemoryBank(
            self.sources, self.layers, train_dataset, self.bank_folder, self.config.eval.batch_size, self.device, progress
        )

    def forward_kwargs(self, frames: Tensor, iteration: int) -> dict:
        return {"return_inputs": bool(self.bank is not None and self.bank.needs_inputs)}

    def losses(self, model: RecurrentPredictor, indices: list[int], rollout: Rollout) -> dict[str, tuple[float, Tensor]]:
        bank = self.bank.get(indices, rollout.inputs)
        return {"distill": (self.config.transfer.distill_weight, distillation_loss(model, rollout, bank))}


class DistillOnlyMethod(TransferableMemoryMethod):
    """Ablation: distillers and hint loss, no transfer gates (isolates the TMU)."""

    use_gates = False


class KnowledgeFlowMethod(ScratchMethod):
    """Knowledge Flow: teachers' hidden states flow into the target, then fade out."""

    def __init__(self, config: RunConfig, run_dir: Path, device: torch.device) -> None:
        super().__init__(config, run_dir, device)
        self.layers = list(config.transfer.layers)
        self.sources = load_zoo(config.transfer.sources, config, self.layers, device)

    def transfer_layout(self) -> dict:
        return memory_layouts(self.sources, self.layers, self.config, kind="kflow")

    def flow_scale(self, iteration: int) -> float:
        stop = self.config.transfer.flow_stop * self.config.train.iterations
        return max(0.0, 1.0 - iteration / stop) if stop > 0 else 0.0

    def forward_kwargs(self, frames: Tensor, iteration: int) -> dict:
        scale = self.flow_scale(iteration)
        if scale == 0.0:
            return {}
        with torch.no_grad():
            rollouts = [source.model(frames, None, record_layers=self.layers) for source in self.sources]
        teacher_hidden = {layer: [r.hiddens[layer] for r in rollouts] for layer in self.layers}
        return {"teacher_hidden": teacher_hidden, "flow_scale": scale}


def distillation_loss(model: RecurrentPredictor, rollout: Rollout, bank: list[dict[int, Tensor]]) -> Tensor:
    """Mean over layers and sources of ``MSE(project(D^n_t), C^{n,l}_t)`` over all steps.

    Args:
        rollout: the target's rollout, with ``distilled[layer]`` ``(B, T-1, N, hidden, h, w)``.
        bank: per source ``{layer: (B, T-1, c, h', w')}``.
    """
    terms = []
    for layer, distilled in rollout.distilled.items():
        unit = model.transfer_unit(layer)
        for n, memories in enumerate(bank):
            terms.append(F.mse_loss(unit.project(distilled[:, :, n], n), memories[layer]))
    return torch.stack(terms).mean()


METHODS: dict[str, type[ScratchMethod]] = {
    "none": ScratchMethod,
    "finetune": FinetuneMethod,
    "tmu": TransferableMemoryMethod,
    "distill": DistillOnlyMethod,
    "kflow": KnowledgeFlowMethod,
}
