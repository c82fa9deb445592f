"""Timing a call: medians with quartiles after warm-up, in interleaved rounds, and on CUDA
with the device synchronised around it (used by ``transmem speed`` and the benchmark's
estimate)."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import torch


@dataclass
class Timing:
    """The seconds of each timed call of one function, and their statistics (seconds)."""

    seconds: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def quartiles(self) -> tuple[float, float]:
        if len(self.seconds) < 2:
            return self.seconds[0], self.seconds[0]
        q1, _, q3 = statistics.quantiles(self.seconds, n=4, method="inclusive")
        return q1, q3

    def summary(self) -> dict:
        q1, q3 = self.quartiles
        return {
            "median": self.median,
            "q1": q1,
            "q3": q3,
            "min": min(self.seconds),
            "max": max(self.seconds),
            "n": len(self.seconds),
        }


def measure_interleaved(
    functions: dict[str, Callable[[], object]], warmup: int, repeats: int, synchronize: Callable[[], None] = lambda: None
) -> dict[str, Timing]:
    """Time each function ``repeats`` times after ``warmup`` calls, in interleaved rounds.

    ``synchronize`` (on CUDA, :func:`synchronizer`) waits for the device before the clock
    starts and before it stops, so that a timing holds the GPU work the call launched.
    """
    for fn in functions.values():
        for _ in range(warmup):
            fn()
    timings = {name: Timing() for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            synchronize()
            start = time.perf_counter()
            fn()
            synchronize()
            timings[name].seconds.append(time.perf_counter() - start)
    return timings


def synchronizer(device: str) -> Callable[[], None]:
    """A function that waits for ``device``: ``torch.cuda.synchronize`` on CUDA, nothing on the
    CPU (its work is done when a call returns)."""
    return (lambda: torch.cuda.synchronize(device)) if device.startswith("cuda") else (lambda: None)
