"""The configuration's schema: typed sections, each checking its own keys.

A run is described by one :class:`RunConfig` made of sections (``[data]``, ``[model]``,
``[train]``, ``[eval]``, ``[transfer]``). Every section is a dataclass whose ``validate``
checks its own values; :func:`build_dataclass` checks every key and value type. Errors are
:class:`ConfigError`, whose message is one line that names the offending key
(``train.lr: expected a number, got 'fast'``).

This module sits below the registries (datasets, backbones, transfer methods) and imports
none of them: checks against a registry, and between sections, are made one floor up by
:func:`transmem.config.validate`, which :func:`transmem.config.load_config` calls.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import types
import typing
from dataclasses import dataclass, field
from typing import Any, get_args, get_origin, get_type_hints

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

import tomli_w

from transmem.errors import ConfigError

# ---------------------------------------------------------------- sections


@dataclass
class DataConfig:
    """What sequences to train and test on.

    ``name`` selects a builder of :data:`transmem.data.DATASETS`; ``options`` holds that
    builder's own keys (checked against its options dataclass).
    """

    name: str = "moving_digits"
    frame_size: int = 64  # frames are frame_size x frame_size pixels
    channels: int = 1
    input_len: int = 10  # T_in: frames given to the model
    total_len: int = 20  # T_in + T_out
    train_size: int = 0  # number of training sequences; 0 = generated online (fresh every batch)
    val_size: int = 200
    test_size: int = 500
    batch_size: int = 8
    seed: int = 0
    options: dict = field(default_factory=dict)

    def validate(self) -> None:
        _positive(self, "frame_size", "channels", "input_len", "total_len", "batch_size")
        _non_negative(self, "train_size", "val_size", "test_size")
        if self.input_len >= self.total_len:
            raise ConfigError(f"data.input_len: must be smaller than data.total_len ({self.input_len} >= {self.total_len})")
        if self.test_size < 1:
            raise ConfigError("data.test_size: must be at least 1")


#: model.norm: how the cells normalise their convolutions (see :class:`ModelConfig`).
NORMS = ("none", "group", "release")


@dataclass
class ModelConfig:
    """The predictive backbone (see :data:`transmem.models.BACKBONES`)."""

    backbone: str = "convlstm"  # convlstm | predrnn | predrnn_v2
    hidden: list = field(default_factory=lambda: [32, 32])  # channels of each layer
    kernel: int = 3
    patch: int = 4  # space-to-depth patch size
    # none: biased convolutions, no normalisation | group: GroupNorm(1, C) after every
    # convolution (not tied to a frame size) | release: the authors' release, ConvLSTM only:
    # a TMU layer's gate convolution (with bias) and each distiller's 1x1 convolution are
    # followed by LayerNorm over (C, h, w) with per-element affine weights, the other layers
    # are biased convolutions without normalisation. A model with a TMU layer is then tied to
    # data.frame_size: it refuses frames of any other size (training, evaluation, prediction).
    norm: str = "none"
    # added to the forget gate's pre-activation, f = sigmoid(z_f + forget_bias): 1.0 as in
    # PredRNN; the release adds none (0.0). Where the gate has a learned bias, as in every
    # shipped architecture, it only shifts where that bias starts: a fresh model's forget
    # gates start more open with 1.0.
    forget_bias: float = 1.0
    decouple_weight: float = 0.01  # PredRNN-V2 memory-decoupling loss weight

    def validate(self) -> None:
        """This section's own checks; the backbone's name is checked against the registry by
        :func:`transmem.config.validate`."""
        if not self.hidden:
            raise ConfigError("model.hidden: needs at least one layer")
        for h in self.hidden:
            if isinstance(h, bool) or not isinstance(h, int) or not 1 <= h < 2**31:
                raise ConfigError(f"model.hidden: every layer size must be a positive integer, got {h!r}")
        _positive(self, "kernel", "patch")
        if self.kernel % 2 == 0:
            raise ConfigError(f"model.kernel: must be odd to keep the frame size, got {self.kernel}")
        if self.norm not in NORMS:
            raise ConfigError(f"model.norm: expected one of {', '.join(NORMS)}, got {self.norm!r}")
        if self.norm == "release" and self.backbone != "convlstm":
            raise ConfigError(
                f"model.norm: 'release' is the authors' ConvLSTM TMU; it needs backbone = 'convlstm', not {self.backbone!r}"
            )
        if self.decouple_weight < 0:
            raise ConfigError("model.decouple_weight: must be >= 0")


@dataclass
class TrainConfig:
    """Optimisation, scheduled sampling and checkpointing."""

    iterations: int = 2000
    lr: float = 1e-3
    lr_schedule: str = "none"  # none | cosine | step
    lr_step: int = 0  # iterations between LR halvings for lr_schedule = "step" (0: iterations // 3)
    grad_clip: float = 0.0  # max gradient norm; 0 disables
    sampling: str = "standard"  # standard (PredRNN) | reverse (PredRNN-V2) | none (always own predictions)
    sampling_stop: float = 0.5  # fraction of iterations after which eta = 0 (standard and reverse)
    reverse_start: float = 0.25  # reverse sampling: fraction where the input-part ratio starts rising
    time_reversal: bool = False  # augment by playing sequences backwards with probability 1/2
    # the release's --reverse_input 1: every iteration makes a second optimiser step on the
    # same batch played backwards in time, with the same scheduled-sampling mask (two updates,
    # each source rolled out again on the reversed frames); still one iteration for the
    # schedules, logs and checkpoints, whose logged loss terms are the means of the two steps
    reverse_input: bool = False
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    log_every: int = 50
    checkpoint_every: int = 200
    keep_checkpoints: int = 3
    val_every: int = 0  # 0 = only at the end
    # the weights a finished run keeps: "last" (those of the last iteration) or "best_val"
    # (those of the validation with the lowest MSE, every val_every iterations and at the end)
    weights: str = "last"
    # also validate the starting weights (iteration 0, before any update): a row of val.csv and,
    # with weights = "best_val", a candidate, so that a source-initialised target that the
    # target data only make worse keeps the source's weights
    val_start: bool = False
    deterministic: bool = True
    tensorboard: bool = False
    precision: str = "float32"  # float32 | bf16 (autocast of the training step; opt-in)
    compile: bool = False  # torch.compile the training forward (opt-in; first steps pay the compilation)
    # CUDA only: capture the whole training step in one CUDA graph and replay it (opt-in; see
    # transmem.training.cuda_graph for what it refuses: CPU, torchrun, compile, lr schedules,
    # methods that read sources every step)
    cuda_graph: bool = False
    # training (its steps and validations) stores the weights and runs channels-last (NHWC),
    # cuDNN's tensor-core layout (opt-in; the same arithmetic, predictions agree to float
    # rounding); evaluate and predict load the saved model in the default layout
    channels_last: bool = False

    def validate(self) -> None:
        _positive(self, "iterations", "log_every", "checkpoint_every", "keep_checkpoints")
        if not self.lr > 0:
            raise ConfigError(f"train.lr: must be positive, got {self.lr}")
        if self.lr_schedule not in ("none", "cosine", "step"):
            raise ConfigError(f"train.lr_schedule: expected none, cosine or step, got {self.lr_schedule!r}")
        if self.sampling not in ("standard", "reverse", "none"):
            raise ConfigError(f"train.sampling: expected standard, reverse or none, got {self.sampling!r}")
        for key in ("sampling_stop", "reverse_start"):
            value = getattr(self, key)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"train.{key}: must be a fraction in [0, 1], got {value}")
        _non_negative(self, "grad_clip", "lr_step", "val_every")
        if self.weights not in ("last", "best_val"):
            raise ConfigError(f"train.weights: expected 'last' or 'best_val', got {self.weights!r}")
        if self.precision not in ("float32", "bf16"):
            raise ConfigError(f"train.precision: expected 'float32' or 'bf16', got {self.precision!r}")
        if self.sampling == "reverse" and self.reverse_start > self.sampling_stop:
            raise ConfigError("train.reverse_start: must not exceed train.sampling_stop")
        if self.reverse_input and self.time_reversal:
            raise ConfigError(
                "train.reverse_input: already trains on every batch in both directions; set train.time_reversal = false"
            )
        if self.cuda_graph and self.reverse_input:
            raise ConfigError("train.cuda_graph: captures one optimiser step per iteration; use it without train.reverse_input")
        if self.cuda_graph and self.compile:
            raise ConfigError("train.cuda_graph: replays the eager step's kernels; use it without train.compile")
        if self.cuda_graph and self.lr_schedule != "none":
            raise ConfigError(
                f"train.cuda_graph: needs lr_schedule = 'none' (the captured Adam step bakes in the learning rate), got {self.lr_schedule!r}"
            )


@dataclass
class EvalConfig:
    batch_size: int = 16
    max_sequences: int = 0  # 0 = the whole test set

    def validate(self) -> None:
        _positive(self, "batch_size")
        _non_negative(self, "max_sequences")


BANKS = ("auto", "cached", "live", "rollout")  # transfer.bank (see transmem.transfer.memory_bank)
#: transfer.method: the names of :data:`transmem.transfer.methods.METHODS`, in its order. The
#: schema holds the names because stored models are read (and their configs checked) below
#: the transfer package; tests/test_transfer.py checks that the two agree.
METHOD_NAMES = ("none", "finetune", "tmu", "distill", "kflow", "fusion")
FUSION_HEADS = ("best", "mean")  # transfer.fusion_head (see transmem.models.fusion)
FUSION_PARTNERS = ("sources", "random")  # transfer.fusion_partners
#: transfer.memory_merge: how a TMU forms C_t (see :class:`transmem.models.tmu.TransferableMemory`).
MEMORY_MERGES = ("sum", "mean", "residual")


@dataclass
class TransferConfig:
    """How the target uses the source zoo (see :data:`transmem.transfer.METHODS`)."""

    method: str = "none"  # none | tmu | distill | finetune | kflow | fusion
    sources: list = field(default_factory=list)  # run folders or checkpoint files
    layers: list = field(default_factory=lambda: [0])  # target/source layers (0 = first)
    # auto (cached for a finite training set, else live) | cached (sources read the true frames,
    # computed once) | live (sources read what the target read) | rollout (each source runs its
    # own rollout under the target's scheduled-sampling mask: the authors' release)
    bank: str = "auto"
    distill_weight: float = 0.1
    cache_dir: str = ""  # "" = <run>/memory_bank
    flow_stop: float = 0.5  # kflow: fraction of training after which teachers no longer flow in
    # tmu: memory carried to the next step. "sum": C_t = C'_t + sum_n M^n_t (METHOD.md, the
    # authors' release); "mean": that sum divided by N + 1, which keeps C_t at the scale of C'_t.
    # memory_merge = "residual": the mean merge as a correction of C'_t with a learned scale that
    # starts at zero, so a source-initialised target starts as its source (init_from).
    memory_merge: str = "sum"
    # tmu, distill, kflow, finetune: start the target's backbone from a source's weights:
    # "" (fresh weights; finetune's single source), a source of `sources` (its path or name),
    # or "best" (the source ranked first on the target's validation split, see `zoo rank`).
    init_from: str = ""
    rank_probe: int = 100  # init_from = "best": iterations of the finetune probe per source (0: zero-shot MSE)
    hint_to_backbone: bool = True  # tmu, distill: False stops the distillation gradient at the distillers
    # fusion: the target holds `fuse` sources side by side in one wider backbone (model.hidden =
    # their hidden sizes summed): the best `fuse` by the validation ranking, 0 = every source.
    fuse: int = 0
    # fusion: the output head starts as the best source's ("best": the target predicts exactly as
    # that source at iteration 0) or as the mean of the fused sources' heads ("mean").
    fusion_head: str = "best"
    # fusion: what fills the blocks beside the best source: the next-ranked sources ("sources"),
    # or freshly initialised networks of the sources' architecture ("random": the control that
    # asks whether the second source adds anything beyond the extra width; fuse counts blocks).
    fusion_partners: str = "sources"

    def validate(self) -> None:
        if self.method not in METHOD_NAMES:
            raise ConfigError(f"transfer.method: unknown method {self.method!r}; known: {', '.join(METHOD_NAMES)}")
        if self.bank not in BANKS:
            raise ConfigError(f"transfer.bank: expected one of {', '.join(BANKS)}, got {self.bank!r}")
        if self.memory_merge not in MEMORY_MERGES:
            raise ConfigError(f"transfer.memory_merge: expected one of {', '.join(MEMORY_MERGES)}, got {self.memory_merge!r}")
        if self.distill_weight < 0:
            raise ConfigError("transfer.distill_weight: must be >= 0")
        if self.method == "distill" and self.distill_weight == 0:
            raise ConfigError(
                "transfer.distill_weight: must be > 0 for method 'distill' (its distillers learn from the "
                "distillation loss alone; with weight 0 the run is training from scratch: method = 'none')"
            )
        if self.method != "none" and not self.sources:
            raise ConfigError(f"transfer.sources: method {self.method!r} needs at least one source")
        for source in self.sources:
            if not isinstance(source, str) or not source:
                raise ConfigError(f"transfer.sources: every source is a path (a non-empty string), got {source!r}")
        if self.method == "finetune" and not self.init_from and len(self.sources) != 1:
            raise ConfigError(
                "transfer.sources: finetune takes exactly one source, or several with transfer.init_from "
                'naming one of them or "best"'
            )
        if self.init_from and self.method == "none":
            raise ConfigError(
                "transfer.init_from: method 'none' trains from scratch; use method 'finetune' to start from a source"
            )
        if self.fuse < 0:
            raise ConfigError(f"transfer.fuse: must be >= 0 (0 = every source), got {self.fuse}")
        if self.fusion_partners not in FUSION_PARTNERS:
            raise ConfigError(
                f"transfer.fusion_partners: expected one of {', '.join(FUSION_PARTNERS)}, got {self.fusion_partners!r}"
            )
        if self.method == "fusion" and self.fusion_partners == "random":
            if self.fuse < 2:
                raise ConfigError(
                    f"transfer.fuse: fusion_partners = 'random' needs fuse >= 2 (the best source and fuse - 1 random blocks), got {self.fuse}"
                )
            if self.fusion_head != "best":
                raise ConfigError(
                    "transfer.fusion_head: fusion_partners = 'random' needs fusion_head = 'best' (a mean head would mix a random network's prediction in)"
                )
        elif self.method == "fusion" and self.fuse > len(self.sources):
            raise ConfigError(f"transfer.fuse: {self.fuse} sources to fuse, but transfer.sources names {len(self.sources)}")
        if self.fusion_head not in FUSION_HEADS:
            raise ConfigError(f"transfer.fusion_head: expected one of {', '.join(FUSION_HEADS)}, got {self.fusion_head!r}")
        if self.method == "fusion" and self.init_from:
            raise ConfigError("transfer.init_from: method 'fusion' starts from every fused source; set transfer.fuse instead")
        if self.rank_probe < 0:
            raise ConfigError(f"transfer.rank_probe: must be >= 0, got {self.rank_probe}")
        if not 0.0 <= self.flow_stop <= 1.0:
            raise ConfigError(f"transfer.flow_stop: must be a fraction in [0, 1], got {self.flow_stop}")
        if not self.layers:
            raise ConfigError("transfer.layers: needs at least one layer")
        for layer in self.layers:
            if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < 2**31:
                raise ConfigError(f"transfer.layers: layers are non-negative integers, got {layer!r}")


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())


# ---------------------------------------------------------------- loading


MAX_SEED = 2**32 - 1


def check_seed(section, name: str) -> None:
    if not 0 <= section.seed <= MAX_SEED:
        raise ConfigError(f"{name}.seed: must be in [0, {MAX_SEED}], got {section.seed}")


def _positive(section: Any, *keys: str) -> None:
    for key in keys:
        if getattr(section, key) <= 0:
            raise ConfigError(f"{_section_name(section)}.{key}: must be positive, got {getattr(section, key)}")


def _non_negative(section: Any, *keys: str) -> None:
    for key in keys:
        if getattr(section, key) < 0:
            raise ConfigError(f"{_section_name(section)}.{key}: must be >= 0, got {getattr(section, key)}")


def _section_name(section: Any) -> str:
    return type(section).__name__.replace("Config", "").lower()


def _check_type(value: Any, annotation: Any, where: str) -> Any:
    """Return ``value`` converted to ``annotation`` or raise ConfigError naming ``where``."""
    origin = get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in get_args(annotation):
            try:
                return _check_type(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: unexpected value {value!r}")
    if annotation is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected nothing, got {value!r}")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if not -(2**63) <= value < 2**63:
                raise ConfigError(f"{where}: integer out of range (64 bits)")
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value) if isinstance(value, float) or abs(value) < 2**63 else math.inf
            if not math.isfinite(number):
                raise ConfigError(f"{where}: must be a finite number, got {number}")
            return number
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if annotation is list or origin is list:
        if isinstance(value, (list, tuple)):
            args = get_args(annotation)
            return [_check_type(v, args[0], f"{where}[{i}]") if args else v for i, v in enumerate(value)]
        raise ConfigError(f"{where}: expected a list, got {value!r}")
    if annotation is dict or origin is dict:
        if isinstance(value, dict):
            return dict(value)
        raise ConfigError(f"{where}: expected a table, got {value!r}")
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return build_dataclass(annotation, value, where)
    return value


def build_dataclass(cls: type, mapping: dict, where: str = "") -> Any:
    """Build dataclass ``cls`` from ``mapping``, checking every key and value type.

    Unknown keys raise ConfigError naming the key and suggesting the known ones.
    ``where`` is the dotted prefix used in messages (``"data.options"``).
    """
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in mapping.items():
        full = f"{where}.{key}" if where else key
        if key not in names:
            close = [n for n in sorted(names) if n.startswith(key[:3]) or key.startswith(n[:3])]
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{full}: unknown key{hint}; known keys: {', '.join(sorted(names))}")
        kwargs[key] = _check_type(value, hints[key], full)
    return cls(**kwargs)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``section.key=value``; the value is read as TOML (``1e-3``, ``[32, 32]``,
    ``true``, ``"x"``) and falls back to a bare string."""
    if "=" not in text:
        raise ConfigError(f"--set {text}: expected section.key=value")
    key, raw = text.split("=", 1)
    path = key.strip().split(".")
    if len(path) < 2 or not all(path):
        raise ConfigError(f"--set {text}: key must look like section.key")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except ValueError:  # TOMLDecodeError, or an integer literal of over 4300 digits
        value = raw.strip()
    return path, value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``section.key=value`` strings (``--set``) to a raw config dict, in order."""
    return apply_settings(raw, dict(parse_setting(text) for text in overrides))


def parse_setting(text: str) -> tuple[str, Any]:
    """``"train.lr=1e-3"`` -> ``("train.lr", 0.001)``: a ``--set`` string as a typed setting."""
    path, value = parse_override(text)
    return ".".join(path), value


def apply_settings(raw: dict, settings: dict[str, Any]) -> dict:
    """Set each ``"section.key": value`` of ``settings`` in the raw config dict ``raw`` (in place;
    returned). Values are typed already: they are checked when the config is built."""
    for key, value in settings.items():
        path = key.split(".")
        node = raw
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {key}: {part} is not a table")
            node = child
        node[path[-1]] = value
    return raw


def format_setting(key: str, value: Any) -> str:
    """The ``--set`` string of a typed setting: the inverse of :func:`parse_setting`, on one
    line (``model.hidden=[8, 8]``: tomli_w alone writes an array over several lines)."""
    return f"{key}={_inline_toml(value)}"


def _inline_toml(value: Any) -> str:
    """``value`` as a one-line TOML value (arrays and tables inline)."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_inline_toml(item) for item in value) + "]"
    if isinstance(value, dict):
        keys = {key: tomli_w.dumps({key: 0}).strip()[: -len(" = 0")] for key in value}
        return "{" + ", ".join(f"{keys[key]} = {_inline_toml(item)}" for key, item in value.items()) + "}"
    return tomli_w.dumps({"v": value}).strip()[len("v = ") :]


#: Keys that earlier versions wrote into saved configs and that no longer exist. They had
#: no effect on results, so a stored configuration (a run's config.toml, a model or
#: checkpoint) holding them still loads; in a user's config file they are unknown keys.
RETIRED_KEYS: dict[str, tuple[str, ...]] = {"train": ("data_workers",)}


#: Sections a user's config file must hold (a stored or built-in configuration need not).
REQUIRED_SECTIONS = ("data", "model")


def deep_copy(raw: dict) -> dict:
    return {k: deep_copy(v) if isinstance(v, dict) else v for k, v in raw.items()}
