"""How long a benchmark will take on this machine, measured before it starts.

A profile that ``needs_cuda`` (``paper``: 80,000 iterations per run) times a few training
steps of its plain network on the device its runs will use, then scales by the scheduler's
cost units (:func:`~transmem.benchmark.scheduler.remaining_work`: iterations times the
squared width of the network, twice for methods that read the sources every step). On a GPU
it prints the estimate and goes on; on the CPU it refuses with the time it would take there.
``transmem benchmark ... --estimate`` prints the same estimate for any profile and trains nothing.

The estimate counts training steps only (validation, test evaluation and memory banks come
on top) and divides by the runs that train at once (``--jobs``, at most one per GPU).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from transmem.benchmark.planning import plain_step_cost
from transmem.benchmark.scheduler import Task, remaining_iterations, remaining_work
from transmem.benchmark.speed_config import SpeedConfig
from transmem.benchmark.suites import Profile
from transmem.config import ConfigError, RunConfig
from transmem.progress import format_seconds

if TYPE_CHECKING:
    import torch


def step_seconds(config: RunConfig, device: str, steps: int | None = None, warmup: int = 1) -> float:
    """Median seconds of one training step of ``config``'s plain network (no transfer) on
    ``device``, on random frames of its shapes; writes nothing but a temporary folder.
    ``steps`` timed after ``warmup`` (default: 5 after 3 on CUDA, where steps are cheap; 1
    after 1 on the CPU, where the paper's step takes seconds)."""
    import statistics

    import torch

    from transmem.benchmark.workload import build_workload, synchronizer

    data, model = config.data, config.model
    spec = SpeedConfig(
        "estimate",
        tuple(model.hidden),
        model.kernel,
        batch=data.batch_size,
        frame_size=data.frame_size,
        patch=model.patch,
        input_len=data.input_len,
        total_len=data.total_len,
        channels=data.channels,
    )
    sync = synchronizer(device)
    wait = sync or (lambda: None)
    if steps is None:
        steps, warmup = (5, 3) if sync else (1, warmup)
    deterministic = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        with tempfile.TemporaryDirectory(prefix="transmem-estimate-") as folder:
            workload = build_workload(spec, "plain", Path(folder), device=device)
            for _ in range(warmup):
                workload.step()
            seconds = []
            for _ in range(steps):
                wait()
                started = time.perf_counter()
                workload.step()
                wait()
                seconds.append(time.perf_counter() - started)
    finally:  # the workload sets torch's deterministic mode as training does; put it back
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
    return statistics.median(seconds)


@dataclass
class Estimate:
    """The training time left, measured on ``device`` (see the module docstring)."""

    seconds: float
    device: "torch.device"
    what: str  # runs, iterations, the step measured and where

    def line(self) -> str:
        return f"estimated training time: about {format_seconds(self.seconds)} ({self.what}; evaluation and memory banks come on top)"


def estimate_training(tasks: list[Task], jobs: int, measure=step_seconds) -> Estimate | None:
    """The training time of what is left of ``tasks`` with ``jobs`` workers, from one plain
    step timed now (``measure(config, device)``) on the device their runs resolve to; None
    when nothing is left to train (nothing is measured)."""
    from transmem.training.engine import resolve_device

    left = [task for task in tasks if remaining_iterations(task)]
    if not left:
        return None
    reference = left[0].config
    device = resolve_device(reference.train.device)
    step = measure(reference, str(device))
    at_once = 1  # on the CPU the workers split the cores that the timed step had to itself
    if device.type == "cuda":
        import torch

        at_once = max(1, min(jobs, torch.cuda.device_count()))
    seconds = step / plain_step_cost(reference) * sum(remaining_work(task) for task in left) / at_once
    iterations = sum(remaining_iterations(task) for task in left)
    what = (
        f"{len(left)} run{'s' if len(left) != 1 else ''}, {iterations:,} training iterations left, "
        f"{step * 1e3:.0f} ms per step of the plain {len(reference.model.hidden)} x {reference.model.hidden[0]} network "
        f"measured just now on {device}, {at_once} at once"
    )
    return Estimate(seconds, device, what)


def check_profile_device(profile_name: str, profile: Profile, tasks: list[Task], jobs: int, measure=step_seconds) -> str | None:
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
