"""The run folder: the one module that spells the names of its files.

A run folder written by ``transmem train`` holds::

    config.toml          the resolved configuration
    checkpoints/         ckpt-XXXXXXXX.pt (last K) and manifest.json (SHA-256 of each)
    train.csv, val.csv   logged losses and validation metrics
    model.safetensors    the final weights; the architecture (config and TMU layout) is in
                         the safetensors metadata, so the file alone rebuilds the predictor
    metrics.json         test scores (metrics_val.json: validation scores), written by evaluate
    transfer_gates.png   a TMU target's mean transfer gates (transfer_gates_val.png)
    train.lock           held while the run trains (one writer per folder)
    init_source.json     the source the backbone started from, and why (transfer.init_from)
    diverged.json        the run's divergences and its resumes after them (another train.lr)
    memory_bank/         a TMU target's cached memory bank (unless transfer.cache_dir)
    source_rank/         cached source rankings (transfer.init_from = "best", unless transfer.cache_dir)
    tensorboard/         TensorBoard logs (train.tensorboard)

:class:`RunFolder` gives the path of each; every other module asks it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CONFIG_FILE = "config.toml"
CHECKPOINT_DIR = "checkpoints"
MODEL_FILE = "model.safetensors"
TRAIN_LOG = "train.csv"
VAL_LOG = "val.csv"
RUN_LOCK = "train.lock"
INIT_FILE = "init_source.json"
DIVERGED_FILE = "diverged.json"
MEMORY_BANK_DIR = "memory_bank"
RANK_DIR = "source_rank"
TENSORBOARD_DIR = "tensorboard"


def metrics_file_name(split: str) -> str:
    """``metrics.json`` for the test split, ``metrics_<split>.json`` for another."""
    return "metrics.json" if split == "test" else f"metrics_{split}.json"


def transfer_gates_file_name(split: str) -> str:
    """``transfer_gates.png`` for the test split, ``transfer_gates_<split>.png`` for another."""
    return "transfer_gates.png" if split == "test" else f"transfer_gates_{split}.png"


#: Every file a run writes into its folder: what ``--force`` sets aside (renamed) and what
#: marks a folder without ``config.toml`` as holding someone's run files.
RUN_FILES = (
    CONFIG_FILE,
    CHECKPOINT_DIR,
    MODEL_FILE,
    TRAIN_LOG,
    VAL_LOG,
    metrics_file_name("test"),
    metrics_file_name("val"),
    MEMORY_BANK_DIR,
    TENSORBOARD_DIR,
    transfer_gates_file_name("test"),
    transfer_gates_file_name("val"),
    INIT_FILE,
    RANK_DIR,
    DIVERGED_FILE,
)
SHARED_CACHES = (MEMORY_BANK_DIR, RANK_DIR)  # keyed, checksummed caches other runs may share


@dataclass(frozen=True)
class RunFolder:
    """The paths of one run folder's files (nothing is read or written here)."""

    path: Path

    def __init__(self, path: str | Path) -> None:
        object.__setattr__(self, "path", Path(path))

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def config(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINT_DIR

    @property
    def model(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def train_log(self) -> Path:
        return self.path / TRAIN_LOG

    @property
    def val_log(self) -> Path:
        return self.path / VAL_LOG

    @property
    def lock(self) -> Path:
        return self.path / RUN_LOCK

    @property
    def init_source(self) -> Path:
        return self.path / INIT_FILE

    @property
    def diverged(self) -> Path:
        return self.path / DIVERGED_FILE

    @property
    def memory_bank(self) -> Path:
        return self.path / MEMORY_BANK_DIR

    @property
    def source_rank(self) -> Path:
        return self.path / RANK_DIR

    @property
    def tensorboard(self) -> Path:
        return self.path / TENSORBOARD_DIR

    def metrics(self, split: str = "test") -> Path:
        return self.path / metrics_file_name(split)

    def transfer_gates(self, split: str = "test") -> Path:
        return self.path / transfer_gates_file_name(split)

    def has_model(self) -> bool:
        """The final model file exists: training finished (whether or not it was evaluated)."""
        return self.model.exists()

    def holds_run(self) -> bool:
        """A final model or a checkpoints folder: what loading a model from the folder reads."""
        return self.model.is_file() or self.checkpoints.is_dir()


def source_name(path: str | Path) -> str:
    """A source's short name: its run folder's name (also for ``RUN/model.safetensors``), else the file's stem."""
    path = Path(path)
    if path.name == MODEL_FILE:
        return path.parent.name
    return path.stem if path.suffix in (".safetensors", ".pt") else path.name
