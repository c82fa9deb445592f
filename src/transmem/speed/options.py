"""The fast-path options ``transmem speed`` times against the float32 eager step: bf16
autocast, ``torch.compile``, a CUDA graph and channels-last, alone and combined.

Each option's step is timed interleaved with the float32 eager step of the same variant, so
that both see the same load; the speed-up is the ratio of their medians.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from transmem.speed.configs import SpeedConfig
from transmem.speed.request import SpeedRequest
from transmem.speed.timing import measure_interleaved, synchronizer
from transmem.speed.workload import build_workload
from transmem.training.cuda_graph import WARMUP_STEPS


@dataclass(frozen=True)
class SpeedOption:
    """One fast-path setting timed against the float32 eager step, e.g. ``"bf16+cuda-graph"``."""

    label: str
    precision: str = "float32"
    compiled: bool = False
    graphed: bool = False  # train.cuda_graph: only a step that reads frames alone can be captured
    channels_last: bool = False
    variants: tuple[str, ...] = ("plain", "cached")


def speed_options(request: SpeedRequest) -> list[SpeedOption]:
    """The options ``--compile``, ``--cuda-graph`` and ``--channels-last`` ask to time (and
    channels-last in the CUDA graph), each in float32 and, with ``--precision bf16``, under
    bf16 too; bf16 alone first."""
    bf16 = request.precision == "bf16"
    graph = {"graphed": True, "variants": ("plain",)}  # only a step that reads frames alone can be captured
    features = []  # (label, SpeedOption fields)
    if request.compile_model:
        features.append(("compile", {"compiled": True}))
    if request.cuda_graph:
        features.append(("cuda-graph", graph))
    if request.channels_last:
        features.append(("channels-last", {"channels_last": True}))
    if request.channels_last and request.cuda_graph:
        features.append(("channels-last+cuda-graph", {**graph, "channels_last": True}))
    options = [SpeedOption("bf16", "bf16")] if bf16 else []
    for label, fields in features:
        options.append(SpeedOption(label, **fields))
        if bf16:
            options.append(SpeedOption(f"bf16+{label}", "bf16", **fields))
    return options


def time_options(spec: SpeedConfig, request: SpeedRequest, folder: Path, log: Callable[[str], None]) -> dict:
    """The step with each fast-path option asked for (:func:`speed_options`), each timed
    interleaved with the float32 eager step of its variant: ``{"<variant> <label>": timing
    (seconds), speed-up over float32, the first steps' seconds}``. Its workloads are freed on
    return, before memory is measured."""
    options = speed_options(request)
    needed = sorted({variant for option in options for variant in option.variants})
    baselines = {variant: build_workload(spec, variant, folder, device=request.device) for variant in needed}
    timed = {}
    for option in options:
        log(f"[{spec.name}] timing the step with {option.label} ...")
        for variant in option.variants:
            timed[f"{variant} {option.label}"] = _time_option(spec, option, variant, baselines[variant].step, request, folder)
    return timed


def _time_option(
    spec: SpeedConfig, option: SpeedOption, variant: str, baseline: Callable[[], None], request: SpeedRequest, folder: Path
) -> dict:
    """``variant``'s step with ``option``: its first steps (compiling, or warming up and
    capturing the CUDA graph) timed once, then its timing interleaved with ``baseline``'s."""
    workload = build_workload(
        spec, variant, folder, option.precision, option.compiled, request.device, option.graphed, option.channels_last
    )
    sync = synchronizer(request.device)
    started = time.perf_counter()
    first_steps = WARMUP_STEPS + 1 if option.graphed else 1
    for _ in range(first_steps):  # compiles or warms up and captures, if asked
        workload.step()
    sync()
    first = time.perf_counter() - started
    # interleaved with a float32 eager step of the same variant, so both see the same load
    timing = measure_interleaved({"float32": baseline, option.label: workload.step}, request.warmup, request.repeats, sync)
    return {
        **timing[option.label].summary(),
        "first_step": first,
        "first_steps": first_steps,
        "speedup": timing["float32"].median / timing[option.label].median,
    }
