"""The configurations ``transmem speed`` measures: their shapes and the run config of each.

Shared by the FLOP counting, the workloads, the peak-memory processes, and the transfer
benchmark's time estimate (which times its runs' steps as a :class:`SpeedConfig`).
"""

from __future__ import annotations

from dataclasses import dataclass

from transmem.config import RunConfig, config_from_dict

NUM_SOURCES = 2
BANK_SIZE_BATCHES = 4  # cached bank over 4 batches of training sequences


@dataclass(frozen=True)
class SpeedConfig:
    """The shapes of one benchmark configuration, and the few settings besides them that change
    a training step's kernels (the benchmark's estimate copies them from a run)."""

    name: str
    hidden: tuple[int, ...]
    kernel: int
    batch: int = 8
    frame_size: int = 64
    patch: int = 4
    input_len: int = 10
    total_len: int = 20
    channels: int = 1
    backbone: str = "convlstm"
    norm: str = "none"
    grad_clip: float = 0.0

    def describe(self) -> str:
        """One line: the network, batch, frame and sequence shapes."""
        backbone = "ConvLSTM" if self.backbone == "convlstm" else self.backbone
        return (
            f"{backbone} {len(self.hidden)} x {self.hidden[0]}, {self.kernel}x{self.kernel}, batch {self.batch}, "
            f"{self.frame_size}x{self.frame_size} frames, patch {self.patch}, "
            f"{self.input_len}+{self.total_len - self.input_len} frames, {NUM_SOURCES} sources"
        )

    def run_config(
        self, method: str = "none", sources: list[str] | None = None, bank: str = "cached", cache_dir: str = ""
    ) -> RunConfig:
        """The run config of this shape on the CPU: ``method`` with ``sources`` (paths) and a
        ``bank`` (``"live"`` or ``"cached"``, in ``cache_dir``); ``train_size`` holds
        :data:`BANK_SIZE_BATCHES` batches."""
        raw = {
            "data": {
                "frame_size": self.frame_size,
                "channels": self.channels,
                "input_len": self.input_len,
                "total_len": self.total_len,
                "train_size": self.batch * BANK_SIZE_BATCHES,
                "val_size": 0,
                "test_size": 1,
                "batch_size": self.batch,
            },
            "model": {
                "backbone": self.backbone,
                "hidden": list(self.hidden),
                "kernel": self.kernel,
                "patch": self.patch,
                "norm": self.norm,
            },
            "train": {"device": "cpu", "time_reversal": False, "grad_clip": self.grad_clip},
            "eval": {"batch_size": self.batch},
            "transfer": {"method": method, "sources": list(sources or []), "layers": [0], "bank": bank, "cache_dir": cache_dir},
        }
        return config_from_dict(raw)


CONFIGS = {
    "small": SpeedConfig("small", (32, 32), 3),
    "paper": SpeedConfig("paper", (64, 64, 64, 64), 5),
    # the tests' configuration: seconds, not minutes
    "tiny": SpeedConfig("tiny", (8,), 3, batch=2, frame_size=16, input_len=3, total_len=6),
}


def tmu_layout(spec: SpeedConfig) -> dict:
    """The transfer layout of a TMU target of ``spec``: layer 0 reads :data:`NUM_SOURCES`
    sources of its own width, with gates."""
    return {
        0: {
            "kind": "tmu",
            "source_channels": [spec.hidden[0]] * NUM_SOURCES,
            "source_sizes": [None] * NUM_SOURCES,
            "use_gates": True,
        }
    }
