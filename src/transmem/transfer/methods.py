"""Transfer methods: how a target network is built and what it adds to the loss.

Each method is a class in :data:`METHODS` (keyed by ``transfer.method``). A run
(:mod:`transmem.run`) asks a method to build the model, which sources to rank and then the
initial weights of a fresh run; the training loop asks it to prepare (build the memory
bank), which keyword arguments to pass to the model's ``forward`` and which extra loss
terms to add to the prediction MSE. The loss itself is always assembled by the training step.

- ``none``: training from scratch.
- ``finetune``: weights initialised from one source (same architecture), then trained.
- ``tmu``: Transferable Memory Units in ``transfer.layers``; loss adds
  ``distill_weight * mean_{layers, sources} MSE(project(D^n), C^{n,l})``.
- ``distill``: the same distillers and hint loss without transfer gates (C_t = C'_t).
- ``kflow``: Knowledge Flow; teachers' hidden states (on the true frames) are mixed into
  ``transfer.layers`` with learned weights scaled from 1 to 0 by ``transfer.flow_stop``.
- ``fusion``: the best ``transfer.fuse`` sources side by side in one wider backbone
  (:mod:`transmem.models.fusion`), all of it trained; at iteration 0 it predicts exactly as
  the best source (``fusion_head = "best"``) or as the sources' mean head (``"mean"``).

Every method but ``none`` can start its backbone from a source's weights
(``transfer.init_from``: a source, or ``"best"``, the source ranked first on the target's
validation split by :mod:`~transmem.run.ranking`); the transfer parts (distillers,
gates, mixers) start fresh. A ``distill`` target, and a ``tmu`` target with
``memory_merge = "residual"``, then predict exactly what that source predicts at iteration 0.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from transmem.config import ConfigError, RunConfig, config_from_dict
from transmem.data.batch import TrainingBatch
from transmem.models import RecurrentPredictor, Rollout, TransferLayout, build_predictor
from transmem.models.fusion import fuse_backbones, fused_hidden
from transmem.storage.run_folder import RunFolder
from transmem.transfer.memory_bank import CachedMemoryBank, LiveMemoryBank, MemoryBankError, RolloutMemoryBank
from transmem.transfer.zoo import Source, SourceError, check_same_backbone, load_zoo


class TransferMethod:
    """The base of every transfer method: what the training loop asks of one, each answer
    that of training from scratch (no sources, fresh weights, no extra loss), and the
    loading of sources and the ``init_from`` choice that methods with sources share."""

    # whether training steps run source networks, distillers or a memory bank: a cost, and
    # what a CUDA graph cannot replay (train.cuda_graph)
    reads_sources_every_step = False

    def __init__(self, config: RunConfig, run_dir: Path, device: torch.device) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.device = device
        self.sources: list[Source] = []  # the frozen source networks the method reads
        self.init_candidates: list[Source] = []  # sources the backbone may start from

    def source_digests(self) -> dict[str, str]:
        """SHA-256 of each source's weights by path: checkpoints record them, so a resume
        can tell that a source was replaced since the run started."""
        return {str(source.path): source.digest for source in self.sources}

    def transfer_layout(self) -> TransferLayout | None:
        return None

    def build_model(self) -> RecurrentPredictor:
        return build_predictor(self.config.model, self.config.data.channels, self.transfer_layout(), self.config.data.frame_size)

    def ranking_target(self) -> RunConfig | None:
        """The configuration to rank :attr:`sources` for (on its validation split) before
        :meth:`initialize`, or None when there is nothing to choose: ``init_from`` with
        several candidates (``"best"``). The run lifecycle ranks them (:mod:`transmem.run.ranking`)."""
        return self.config if len(self.init_candidates) > 1 else None

    def initialize(self, model: RecurrentPredictor, ranking: list[dict] | None = None) -> dict | None:
        """Set the initial weights of a fresh (not resumed) model, once its run folder exists.
        ``ranking``: the sources ranked for :meth:`ranking_target`, best first (one row per
        source, with its ``path``), when that named a configuration; else None.

        Returns what the run folder records about it (:data:`~transmem.storage.run_folder.INIT_FILE`), or None.
        """
        if not self.init_candidates:
            return None
        source = self._init_source(ranking)
        load_backbone(model, source)
        return {"init_from": self.config.transfer.init_from, "source": str(source.path), "name": source.name, "ranking": ranking}

    def check_data(self, train_dataset) -> None:
        """Refuse a training set the method cannot use, before anything is written."""

    def prepare(self, model: RecurrentPredictor, train_dataset, progress: bool = True) -> None:
        """Anything needed before the first step (also after a resume)."""

    def forward_kwargs(self, frames: Tensor, iteration: int) -> dict:
        """Extra keyword arguments of the model's forward for this batch ``(B, T, C, H, W)``."""
        return {}

    def losses(self, model: RecurrentPredictor, batch: TrainingBatch, rollout: Rollout) -> dict[str, tuple[float, Tensor]]:
        """Extra loss terms ``name -> (weight, value)``; the loop adds ``weight * value``."""
        return {}

    # ------------------------------------------------------------------ init_from

    def _load_sources(self, layers: list[int]) -> None:
        """Load ``transfer.sources`` frozen and pick the ``init_from`` candidates; refuses
        (before anything is written) a source that is missing, unusable or, as a
        candidate, of another architecture."""
        self.sources = load_zoo(self.config.transfer.sources, self.config, layers, self.device)
        self.init_candidates = init_candidates(self.sources, self.config)

    def _init_source(self, ranking: list[dict] | None) -> Source:
        """The one candidate, or the candidate ranked best in ``ranking``."""
        if len(self.init_candidates) == 1:
            return self.init_candidates[0]
        if ranking is None:
            raise ValueError("initialize: several init_from candidates and no ranking of them (see ranking_target)")
        usable = {str(s.path) for s in self.init_candidates}
        best = next(row for row in ranking if row["path"] in usable)
        return next(s for s in self.init_candidates if str(s.path) == best["path"])


class FinetuneMethod(TransferMethod):
    """Initialise from a source with the same architecture, then train on the target.

    One source, or several with ``transfer.init_from`` naming one of them or ``"best"``.
    """

    def __init__(self, config: RunConfig, run_dir: Path, device: torch.device) -> None:
        super().__init__(config, run_dir, device)
        self._load_sources([0])
        if not self.init_candidates:  # a single source and no init_from
            self.init_candidates = init_candidates(self.sources, config, "finetune")


def init_candidates(sources: list[Source], config: RunConfig, method: str | None = None) -> list[Source]:
    """The sources named by ``transfer.init_from``, each checked to have the target's backbone
    architecture: none for ``""``; for ``"best"``, every source of that architecture (a zoo
    may hold others, e.g. for a TMU to distil). ``method`` = ``"finetune"``: the one source
    of a plain finetune."""
    wanted = config.transfer.init_from
    if method == "finetune":
        chosen = sources[:1]
    elif not wanted:
        return []
    elif wanted == "best":
        chosen = []
        for source in sources:
            try:
                check_same_backbone(source, config)
            except SourceError:
                continue
            chosen.append(source)
        if not chosen:
            raise SourceError(
                'transfer.init_from = "best": no source has the target\'s architecture (backbone, hidden, '
                "patch, kernel, norm); name none to start from fresh weights"
            )
    else:
        chosen = [s for s in sources if wanted in (str(s.path), Path(s.path).as_posix())]  # a path names one source
        chosen = chosen or [s for s in sources if wanted == s.name]
        if not chosen:
            names = ", ".join(f"{s.name} ({s.path})" for s in sources)
            raise SourceError(f"transfer.init_from: {wanted!r} is not one of transfer.sources: {names}")
        distinct = {str(Path(s.path).resolve()): s for s in chosen}  # a source listed twice is still one
        if len(distinct) > 1:
            paths = ", ".join(str(s.path) for s in distinct.values())
            raise SourceError(
                f"transfer.init_from: {wanted!r} names {len(distinct)} sources ({paths}); give the path of the one to start from"
            )
        chosen = chosen[:1]
    verb = "finetuning" if method == "finetune" or config.transfer.method == "finetune" else "starting from a source"
    for source in chosen:
        check_same_backbone(source, config, verb)
    return chosen


def load_backbone(model: RecurrentPredictor, source: Source) -> None:
    """Copy ``source``'s weights into ``model``'s backbone; the transfer parts keep theirs.

    Every source tensor must exist in the target. One whose target has more output rows (the
    gate convolution of a ``sum`` or ``mean`` TMU cell, with N extra transfer-gate groups)
    fills the leading rows; the transfer-gate rows keep their fresh initialisation.
    """
    target = model.state_dict()
    with torch.no_grad():
        for name, value in source.model.state_dict().items():
            mine = target.get(name)
            if mine is None or mine.shape[1:] != value.shape[1:] or mine.shape[0] < value.shape[0]:
                shape = None if mine is None else tuple(mine.shape)
                raise SourceError(f"source {source.path}: its {name} {tuple(value.shape)} does not fit the target ({shape})")
            mine[: value.shape[0]].copy_(value)


def memory_layouts(sources, layers: list[int], config: RunConfig, **fields) -> TransferLayout:
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


class TransferableMemoryMethod(TransferMethod):
    """TMU target distilling the sources' memories (``tmu``; ``distill`` without gates)."""

    use_gates = True
    reads_sources_every_step = True

    def __init__(self, config: RunConfig, run_dir: Path, device: torch.device) -> None:
        super().__init__(config, run_dir, device)
        self.layers = list(config.transfer.layers)
        self._load_sources(self.layers)
        self.bank = None
        self.bank_folder = Path(config.transfer.cache_dir or RunFolder(run_dir).memory_bank)
        if self.bank_folder.exists() and not self.bank_folder.is_dir():  # refused before the run folder is written
            raise ConfigError(f"transfer.cache_dir: {self.bank_folder} exists and is not a folder")

    def transfer_layout(self) -> TransferLayout:
        transfer = self.config.transfer
        fields = {"kind": "tmu", "use_gates": self.use_gates, "merge": transfer.memory_merge}
        if not transfer.hint_to_backbone:  # recorded only when set: older layouts stay as they were
            fields["hint_to_backbone"] = False
        return memory_layouts(self.sources, self.layers, self.config, **fields)

    def bank_mode(self, train_dataset) -> str:
        """``auto`` is ``cached`` for a finite training set read forward in time, else ``live``.

        A cached bank holds each sequence's memories in forward time; with
        ``train.time_reversal`` half of the batches are played backwards (with
        ``train.reverse_input`` every batch is, in its second step), so only a live bank
        (sources read what the target reads) stays aligned.
        """
        mode = self.config.transfer.bank
        if mode == "auto":
            finite = not getattr(train_dataset, "online", False)
            forward_only = not (self.config.train.time_reversal or self.config.train.reverse_input)
            return "cached" if finite and forward_only else "live"
        return mode

    def check_data(self, train_dataset) -> None:
        if self.bank_mode(train_dataset) == "cached" and getattr(train_dataset, "online", False):
            raise MemoryBankError(
                "transfer.bank = 'cached' needs a finite training set (set data.train_size > 0) or transfer.bank = 'live'"
            )

    def prepare(self, model: RecurrentPredictor, train_dataset, progress: bool = True) -> None:
        mode = self.bank_mode(train_dataset)
        if mode in ("live", "rollout"):
            self.bank = (LiveMemoryBank if mode == "live" else RolloutMemoryBank)(self.sources, self.layers)
            return
        self.bank = CachedMemoryBank(
            self.sources, self.layers, train_dataset, self.bank_folder, self.config.eval.batch_size, self.device, progress
        )

    def forward_kwargs(self, frames: Tensor, iteration: int) -> dict:
        return {"return_inputs": bool(self.bank is not None and self.bank.needs_inputs)}

    def losses(self, model: RecurrentPredictor, batch: TrainingBatch, rollout: Rollout) -> dict[str, tuple[float, Tensor]]:
        bank = self.bank.get(batch, rollout.inputs)
        return {"distill": (self.config.transfer.distill_weight, distillation_loss(model, rollout, bank))}


class DistillOnlyMethod(TransferableMemoryMethod):
    """Ablation: distillers and hint loss, no transfer gates (isolates the TMU)."""

    use_gates = False


class KnowledgeFlowMethod(TransferMethod):
    """Knowledge Flow: teachers' hidden states flow into the target, then fade out."""

    reads_sources_every_step = True

    def __init__(self, config: RunConfig, run_dir: Path, device: torch.device) -> None:
        super().__init__(config, run_dir, device)
        self.layers = list(config.transfer.layers)
        self._load_sources(self.layers)

    def transfer_layout(self) -> TransferLayout:
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


class FusionMethod(TransferMethod):
    """The best ``transfer.fuse`` sources side by side in one wider backbone, all trained.

    The sources must share one architecture (backbone, hidden, kernel, patch, channels) with
    ``norm = "none"``, and the target's ``model.hidden`` must be ``fuse`` times theirs (checked
    before anything is written). Which sources, and in which order (best first), comes from the
    validation ranking of ``init_from = "best"`` (:mod:`~transmem.run.ranking`, run on the
    target's data with the sources' own architecture, so ``finetune_best`` shares it); with
    ``fuse = 0`` and ``fusion_head = "mean"`` every source is fused in the listed order, unranked.
    With ``fusion_partners = "random"`` only the best source is fused and the other
    ``fuse - 1`` blocks are random networks of its architecture: the same network, start and
    training as fusion but for what the second block holds.
    """

    def __init__(self, config: RunConfig, run_dir: Path, device: torch.device) -> None:
        super().__init__(config, run_dir, device)
        self._load_sources([0])
        self.fuse = config.transfer.fuse or len(self.sources)
        first, member = self.sources[0], self.member_config()
        for source in self.sources:
            check_same_backbone(source, member, "fusing it")
        if config.model.norm != "none":
            raise ConfigError("model.norm: fusion needs norm = 'none' (GroupNorm over a fused layer would mix the sources)")
        wanted = fused_hidden([first.model] * self.fuse)
        if list(config.model.hidden) != wanted:
            raise SourceError(
                f"model.hidden: fusing {self.fuse} sources of hidden {first.model.hidden} needs hidden = {wanted}, "
                f"the target has {list(config.model.hidden)}"
            )

    def member_config(self) -> RunConfig:
        """The target's configuration with the sources' (one member's) model size."""
        raw = self.config.to_dict()
        raw["model"]["hidden"] = list(self.sources[0].model.hidden)
        raw["transfer"] = {"method": "none"}
        return config_from_dict(raw, stored=True)

    def fused_source_count(self) -> int:
        """How many of the fused blocks are sources (the others, random networks)."""
        return 1 if self.config.transfer.fusion_partners == "random" else self.fuse

    def ranking_target(self) -> RunConfig | None:
        """The sources are ranked (with their own model size) when the best must come first
        (``fusion_head = "best"``) or not every source is fused."""
        partial = self.fused_source_count() < len(self.sources)
        if len(self.sources) > 1 and (partial or self.config.transfer.fusion_head == "best"):
            return self.member_config()
        return None

    def initialize(self, model: RecurrentPredictor, ranking: list[dict] | None = None) -> dict:
        transfer = self.config.transfer
        fused_sources = self.fused_source_count()
        chosen = self.sources[:fused_sources]
        if ranking is not None:
            by_path = {str(s.path): s for s in self.sources}
            chosen = [by_path[row["path"]] for row in ranking[:fused_sources]]
        random_blocks = [self.random_member(n) for n in range(fused_sources, self.fuse)]
        weights = (
            [1.0 if n == 0 else 0.0 for n in range(self.fuse)]
            if transfer.fusion_head == "best"
            else [1.0 / self.fuse] * self.fuse
        )
        fuse_backbones(model, [s.model for s in chosen] + random_blocks, weights)
        return {
            "fusion": [str(s.path) for s in chosen],
            "name": "+".join([s.name for s in chosen] + ["random"] * len(random_blocks)),
            "partners": transfer.fusion_partners,
            "head": transfer.fusion_head,
            "head_weights": weights,
            "ranking": ranking,
        }

    def random_member(self, block: int) -> RecurrentPredictor:
        """A freshly initialised member for fused block ``block`` (``fusion_partners = "random"``),
        seeded by ``train.seed`` and the block, without touching the global random state."""
        member = self.member_config()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.train.seed * 1009 + block)
            network = build_predictor(member.model, member.data.channels)
        return network.to(self.device)


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


class ScratchMethod(TransferMethod):
    """``none``: train the target from random initialisation (the base's every answer)."""


METHODS: dict[str, type[TransferMethod]] = {
    "none": ScratchMethod,
    "finetune": FinetuneMethod,
    "tmu": TransferableMemoryMethod,
    "distill": DistillOnlyMethod,
    "kflow": KnowledgeFlowMethod,
    "fusion": FusionMethod,
}
