"""What one ``transmem speed`` run is asked to measure: every option of the command, checked.

The command line builds a :class:`SpeedRequest` from its options; nothing below it reads the
command line. A request is checked and completed when it is made, in one place
(``__post_init__``): the counts left unset take their defaults (fewer with ``quick``), the
device is resolved, and anything invalid raises a one-line ConfigError naming the option,
before minutes of measuring.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from transmem.errors import ConfigError
from transmem.training.setup import resolve_device

CONFIG_CHOICES = ("small", "paper", "both")
PRECISIONS = ("float32", "bf16")


@dataclass(frozen=True)
class SpeedRequest:
    """The options of ``transmem speed`` (the flag of each in brackets). Once made, ``device``
    is resolved (``"cpu"``, ``"cuda"`` or ``"cuda:N"``) and ``repeats``, ``warmup`` and
    ``memory_steps`` are set."""

    device: str = "auto"  # [--device] auto (CUDA when available), cpu, cuda or cuda:N
    config: str = "both"  # [--config] small, paper or both
    repeats: int | None = None  # [--repeats] timed calls per measurement; None: 10, quick 3
    warmup: int | None = None  # [--warmup] untimed calls before them; None: 2, quick 1
    quick: bool = False  # [--quick] fewer repeats, warm-up calls and memory steps
    precision: str = "float32"  # [--precision] bf16: also time the step under bf16 autocast
    compile_model: bool = False  # [--compile] also time the step with torch.compile
    cuda_graph: bool = False  # [--cuda-graph] also time the plain step captured in a CUDA graph
    channels_last: bool = False  # [--channels-last] also time the step channels-last
    threads: int | None = None  # [--threads] torch threads; None: torch's choice
    memory: bool = True  # [--no-memory: False] measure each variant's peak memory
    memory_steps: int | None = None  # [--memory-steps] steps per memory measurement; None: 3, quick 2
    json_path: Path | None = None  # [--json] also write every measurement there
    workdir: Path | None = None  # [--workdir] sources and cached bank; None: a temporary folder
    strict: bool = False  # [--strict] exit status 1 when a target fails
    shared_machine: bool = False  # [--shared-machine] only the trainings-side-by-side table
    tiny: bool = False  # [--tiny, hidden] the tests' tiny configuration only

    def __post_init__(self) -> None:
        """Fill in the defaults, resolve the device, and check every option (module docstring)."""
        self._set("repeats", self.repeats if self.repeats is not None else (3 if self.quick else 10))
        self._set("warmup", self.warmup if self.warmup is not None else (1 if self.quick else 2))
        self._set("memory_steps", self.memory_steps if self.memory_steps is not None else (2 if self.quick else 3))
        if self.json_path is not None:
            self._set("json_path", Path(self.json_path))
        if self.workdir is not None:
            self._set("workdir", Path(self.workdir))
        self._check_choices()
        if self.repeats < 1 or self.warmup < 0 or self.memory_steps < 1 or (self.threads is not None and self.threads < 1):
            raise ConfigError("speed: --repeats, --memory-steps and --threads must be >= 1, --warmup >= 0")
        if self.json_path and (self.json_path.is_dir() or not self.json_path.resolve().parent.is_dir()):
            raise ConfigError(f"--json: {self.json_path} is a folder, or its folder does not exist")
        self._set("device", _speed_device(self.device))
        if self.cuda_graph and not self.device.startswith("cuda"):
            raise ConfigError(f"--cuda-graph: captures the step in a CUDA graph and needs --device cuda, not {self.device}")

    def _set(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)  # the request is frozen once __post_init__ returns

    def _check_choices(self) -> None:
        if self.config not in CONFIG_CHOICES:
            raise ConfigError(f"--config: expected {', '.join(CONFIG_CHOICES)}, got {self.config!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"--precision: expected {' or '.join(PRECISIONS)}, got {self.precision!r}")

    @property
    def config_names(self) -> tuple[str, ...]:
        """The configurations to measure, by name (:data:`~transmem.speed.configs.CONFIGS`)."""
        if self.tiny:
            return ("tiny",)
        return ("small", "paper") if self.config == "both" else (self.config,)

    @property
    def on_cuda(self) -> bool:
        return self.device.startswith("cuda")


def _speed_device(name: str) -> str:
    """``--device``: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``, as the
    training loop resolves ``train.device``; a ConfigError names what is wrong."""
    device = resolve_device(name, "--device")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device: expected auto, cpu, cuda or cuda:N, got {name!r}")
    return str(device)
