"""How long a benchmark will take on this machine, measured before it starts.

A profile that ``needs_cuda`` (``paper``: 80,000 iterations per run) times training steps on
the device its runs will use before anything trains. On a GPU it prints the estimate and goes
on; on the CPU it refuses with the time it would take there. ``transmem benchmark ...
--estimate`` prints the same estimate for any profile and trains nothing.

- **On CUDA**, where kernel launches rather than arithmetic set a small network's step time,
  every kind of step the runs take is timed: each network width, with the run's precision
  and ``train.cuda_graph``, as a plain step, or as a TMU step with two live sources for the
  methods that read sources every step (TMU, distillation, Knowledge Flow).
- **On the CPU**, where a step of the paper's network takes seconds, one plain step of the
  first run left is timed and scaled to the others by the scheduler's cost units
  (:func:`~transmem.benchmark.scheduler.remaining_work`: iterations times the squared width,
  twice for methods that read the sources), which follow the arithmetic there.

The estimate counts training steps only (validation, test evaluation and memory banks come
on top) and divides by the runs that train at once (``--jobs``, at most one per GPU; on the
CPU the workers share the cores the timed step had, so one at a time).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from transmem.benchmark.planning import plain_step_cost
from transmem.benchmark.scheduler import Task, gpu_count, remaining_iterations, remaining_work
from transmem.benchmark.suites import Profile
from transmem.config import ConfigError, RunConfig
from transmem.progress import format_seconds
from transmem.speed.configs import SpeedConfig
from transmem.transfer.methods import METHODS

if TYPE_CHECKING:
    import torch


def step_spec(config: RunConfig) -> SpeedConfig:
    """The shapes and settings of ``config``'s training step, as :mod:`~transmem.speed.workload` builds it."""
    data, model = config.data, config.model
    return SpeedConfig(
        "estimate",
        tuple(model.hidden),
        model.kernel,
        batch=data.batch_size,
        frame_size=data.frame_size,
        patch=model.patch,
        input_len=data.input_len,
        total_len=data.total_len,
        channels=data.channels,
        backbone=model.backbone,
        norm=model.norm,
        grad_clip=config.train.grad_clip,
    )


def step_seconds(config: RunConfig, device: str, variant: str = "plain", steps: int | None = None) -> float:
    """Median seconds of one training step of ``config``'s network (:func:`step_spec`) on
    ``device``, on random frames of its shapes, with its ``train.precision`` and
    ``train.channels_last`` (and ``train.cuda_graph`` for a plain step; ``train.compile`` is
    not applied: the eager step is timed): ``variant`` ``"plain"`` (no transfer) or ``"live"``
    (a TMU target with two live sources of its size). ``steps`` timed after the warm-up
    (default: 5 after 3 on CUDA, plus the CUDA graph's own warm-up and capture; 1 after 1 on
    the CPU, where the paper's step takes seconds). Writes nothing but a temporary folder."""
    import torch

    from transmem.speed.timing import measure_interleaved, synchronizer
    from transmem.speed.workload import build_workload
    from transmem.training.cuda_graph import WARMUP_STEPS

    on_cuda = device.startswith("cuda")
    graphed = config.train.cuda_graph and variant == "plain"
    warmup = (3 + (WARMUP_STEPS + 1 if graphed else 0)) if on_cuda else 1
    deterministic = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        with tempfile.TemporaryDirectory(prefix="transmem-estimate-") as folder:
            workload = build_workload(
                step_spec(config),
                variant,
                Path(folder),
                config.train.precision,
                device=device,
                cuda_graph=graphed,
                channels_last=config.train.channels_last,
            )
            timing = measure_interleaved({"step": workload.step}, warmup, steps or (5 if on_cuda else 1), synchronizer(device))
            del workload
    finally:  # the workload sets torch's deterministic mode as training does; put it back
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
        if on_cuda:
            torch.cuda.empty_cache()  # the GPU memory goes to the runs
    return timing["step"].median


@dataclass
class Estimate:
    """The training time left, measured on ``device`` (see the module docstring)."""

    seconds: float
    device: "torch.device"
    what: str  # runs, iterations, the steps measured and where

    def line(self) -> str:
        return f"estimated training time: about {format_seconds(self.seconds)} ({self.what}; evaluation and memory banks come on top)"


def step_kind(config: RunConfig) -> tuple[str, str]:
    """``(name, variant)`` of the step a run takes, as :func:`estimate_training` times it on
    CUDA: e.g. ``("4 x 64 with sources, bf16", "live")``."""
    reads = METHODS[config.transfer.method].reads_sources_every_step
    hidden = config.model.hidden
    name = f"{len(hidden)} x {hidden[0]}" + (" with sources" if reads else "")
    name += ", bf16" if config.train.precision == "bf16" else ""
    name += ", CUDA graph" if config.train.cuda_graph and not reads else ""
    name += ", channels-last" if config.train.channels_last else ""
    return name, "live" if reads else "plain"


def estimate_training(tasks: list[Task], jobs: int, measure=None) -> Estimate | None:
    """The training time of what is left of ``tasks`` with ``jobs`` workers, from steps timed
    now (``measure(config, device, variant)``, module docstring) on the device their runs
    resolve to (default :func:`step_seconds`); None when nothing is left to train (nothing is measured)."""
    from transmem.training.setup import resolve_device

    measure = measure or step_seconds
    iterations = {task.name: remaining_iterations(task) for task in tasks}
    left = [task for task in tasks if iterations[task.name]]
    if not left:
        return None
    device = resolve_device(left[0].config.train.device)
    total = sum(iterations[task.name] for task in left)
    runs = f"{len(left)} run{'s' if len(left) != 1 else ''}, {total:,} training iterations left"
    if device.type == "cuda":
        at_once = max(1, min(jobs, gpu_count()))
        # one measurement per kind of step: its shapes and settings, as the runs train it
        kinds: dict[tuple, tuple[str, float, int]] = {}  # key -> (name, seconds per step, iterations left)
        for task in left:
            name, variant = step_kind(task.config)
            train = task.config.train
            key = (step_spec(task.config), variant, train.precision, train.cuda_graph, train.channels_last)
            if key not in kinds:
                kinds[key] = (name, measure(task.config, str(device), variant), 0)
            name, step, n = kinds[key]
            kinds[key] = (name, step, n + iterations[task.name] * (2 if train.reverse_input else 1))  # steps per iteration
        seconds = sum(step * n for _, step, n in kinds.values()) / at_once
        steps = ", ".join(f"{name} {step * 1e3:.0f} ms" for name, step, _ in kinds.values())
        return Estimate(seconds, device, f"{runs}, steps measured just now on {device}: {steps}; {at_once} at once")
    reference = left[0].config
    step = measure(reference, str(device), "plain")
    work = sum(remaining_work(task, iterations[task.name]) for task in left)
    seconds = step / plain_step_cost(reference) * work
    what = (
        f"{runs}, {step * 1e3:.0f} ms per step of the plain {len(reference.model.hidden)} x {reference.model.hidden[0]} "
        "network measured just now on cpu, the other runs scaled by their cost, 1 at once"
    )
    return Estimate(seconds, device, what)


def check_profile_device(profile_name: str, profile: Profile, tasks: list[Task], jobs: int, measure=None) -> str | None:
    """For a profile that ``needs_cuda``: the line that estimates its training time on the
    runs' device, or a ConfigError on the CPU saying how long it would take there. None for
    other profiles (nothing is measured) and when nothing is left to train."""
    if not profile.needs_cuda:
        return None
    estimate = estimate_training(tasks, jobs, measure)
    if estimate is None:
        return None
    if estimate.device.type != "cuda":
        raise ConfigError(
            f"--profile {profile_name} needs a CUDA GPU: here it would train on the CPU for about "
            f"{format_seconds(estimate.seconds)} ({estimate.what}); use --profile full on a CPU"
        )
    return estimate.line()
