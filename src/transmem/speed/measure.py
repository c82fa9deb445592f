"""One ``transmem speed`` run: every measurement of each configuration asked for, the table
printed, the JSON written and the exit status (see :mod:`transmem.speed` for what is
measured and how).

Progress goes to stderr, the table to stdout. The measurements set process-wide torch state
(threads, deterministic mode) as the training loop does; it is put back afterwards.
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from transmem.speed.checks import cpu_checks, gpu_checks
from transmem.speed.configs import CONFIGS, SpeedConfig
from transmem.speed.flops import ConvShape, step_convs, total_flops
from transmem.speed.options import time_options
from transmem.speed.peak_memory import gpu_memory, measure_memory
from transmem.speed.request import SpeedRequest
from transmem.speed.sharing import format_sharing, measure_sharing
from transmem.speed.table import format_table, machine_line
from transmem.speed.timing import Timing, measure_interleaved, synchronizer
from transmem.speed.workload import build_inference, build_workload
from transmem.storage.files import atomic_write_text

TRAIN_VARIANTS = ("plain", "live", "cached")
Log = Callable[[str], None]


def conv_alone_seconds(spec: SpeedConfig, shapes: list[ConvShape], warmup: int, repeats: int, device: str = "cpu") -> Timing:
    """Time the step's convolutions alone at the same shapes (forward, + backward if trained).

    Every distinct shape is timed on its own (median of ``repeats``) and weighted by how
    often the step runs it; the returned timing is the sum per repeat (seconds).
    """
    side = spec.frame_size // spec.patch
    distinct: dict[tuple, int] = {}
    for s in shapes:
        key = (s.in_channels, s.out_channels, s.kernel, s.backward)
        distinct[key] = distinct.get(key, 0) + s.count
    functions, weights = {}, {}
    generator = torch.Generator().manual_seed(0)
    for (cin, cout, kernel, backward), count in distinct.items():
        x = torch.randn(spec.batch, cin, side, side, generator=generator).to(device).requires_grad_(backward)
        weight = (torch.randn(cout, cin, kernel, kernel, generator=generator) * 0.05).to(device).requires_grad_(backward)
        bias = torch.zeros(cout, device=device, requires_grad=backward)
        grad = torch.randn(spec.batch, cout, side, side, generator=generator).to(device)

        def run(x=x, weight=weight, bias=bias, grad=grad, kernel=kernel, backward=backward):
            if backward:
                out = F.conv2d(x, weight, bias, padding=kernel // 2)
                torch.autograd.grad(out, (x, weight, bias), grad)
            else:
                with torch.no_grad():
                    F.conv2d(x, weight, bias, padding=kernel // 2)

        name = f"{cin}-{cout}-{kernel}-{backward}"
        functions[name], weights[name] = run, count
    timings = measure_interleaved(functions, warmup, repeats, synchronizer(device))
    return Timing([sum(weights[n] * timings[n].seconds[r] for n in functions) for r in range(repeats)])


def _time_steps(spec: SpeedConfig, request: SpeedRequest, folder: Path, log: Log) -> dict:
    """Each variant's training step timed interleaved: ``{variant: timing (s), conv_gflop}``."""
    log(f"[{spec.name}] building the variants (sources, cached bank) ...")
    workloads = {variant: build_workload(spec, variant, folder, device=request.device) for variant in TRAIN_VARIANTS}
    log(
        f"[{spec.name}] timing training steps on {request.device} ({request.warmup} warm-up, {request.repeats} repeats, interleaved) ..."
    )
    sync = synchronizer(request.device)
    steps = measure_interleaved({v: w.step for v, w in workloads.items()}, request.warmup, request.repeats, sync)
    del workloads
    return {
        variant: {**timing.summary(), "conv_gflop": total_flops(spec, step_convs(spec, variant)) / 1e9}
        for variant, timing in steps.items()
    }


def _add_convs_alone(spec: SpeedConfig, request: SpeedRequest, train: dict, log: Log) -> None:
    """Add to each variant's ``train`` entry its convolutions timed alone, and both GFLOP/s."""
    log(f"[{spec.name}] timing the step's convolutions alone ...")
    side = spec.frame_size // spec.patch
    for variant in TRAIN_VARIANTS:
        shapes = step_convs(spec, variant)
        alone = conv_alone_seconds(spec, shapes, max(1, request.warmup), request.repeats, request.device)
        entry = train[variant]
        entry["conv_alone"] = alone.summary()
        entry["step_gflops"] = entry["conv_gflop"] / entry["median"]
        entry["conv_alone_gflops"] = entry["conv_gflop"] / alone.median
        entry["conv_shapes"] = [{**asdict(s), "gflop": s.flops(spec.batch, side, side) / 1e9} for s in shapes]


def _time_inference(spec: SpeedConfig, request: SpeedRequest, log: Log) -> dict:
    """Backbone and TMU inference timed interleaved: ``{name: timing (s), sequences_per_second}``."""
    log(f"[{spec.name}] timing inference ...")
    calls = {"backbone": build_inference(spec, False, request.device), "tmu": build_inference(spec, True, request.device)}
    inference = measure_interleaved(calls, request.warmup, request.repeats, synchronizer(request.device))
    return {name: {**timing.summary(), "sequences_per_second": spec.batch / timing.median} for name, timing in inference.items()}


def _peak_memory(spec: SpeedConfig, request: SpeedRequest, folder: Path, log: Log) -> dict:
    """Each variant's peak memory (MB): on CUDA in this process, else one fresh process each."""
    if not request.memory:
        return {}
    if request.on_cuda:
        log(f"[{spec.name}] peak GPU memory per variant ...")
        return {v: gpu_memory(spec, v, folder, request.memory_steps, request.device) for v in TRAIN_VARIANTS}
    log(f"[{spec.name}] peak memory, one fresh process per variant ...")
    return {v: measure_memory(spec, v, folder, request.memory_steps, request.threads) for v in TRAIN_VARIANTS}


def measure_config(spec: SpeedConfig, request: SpeedRequest, folder: Path, log: Log) -> dict:
    """Every measurement of one configuration, and its checks (a JSON-able dict; seconds, MB)."""
    result: dict = {
        "config": asdict(spec),
        "description": spec.describe(),
        "device": request.device,
        "train": {},  # filled below; the JSON keeps this order, then options and checks
        "inference": {},
        "memory": {},
    }
    result["train"] = _time_steps(spec, request, folder, log)
    _add_convs_alone(spec, request, result["train"], log)
    result["inference"] = _time_inference(spec, request, log)
    result["options"] = time_options(spec, request, folder, log)
    result["memory"] = _peak_memory(spec, request, folder, log)
    checks = gpu_checks(spec, result) if request.on_cuda else cpu_checks(result)
    result["checks"] = [{"name": c.name, "value": c.value, "target": c.target, "passed": c.passed} for c in checks]
    return result


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _measure_configs(request: SpeedRequest, log: Log) -> tuple[str, list[dict]]:
    """The machine's line and :func:`measure_config` of each configuration asked for, with
    torch's threads and deterministic mode put back afterwards."""
    saved = (
        torch.get_num_threads(),
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    try:
        if request.threads:
            torch.set_num_threads(request.threads)
        header = f"transmem speed: {machine_line(torch.get_num_threads(), request.device)}; float32 unless stated"
        results = []
        with tempfile.TemporaryDirectory(prefix="transmem-speed-") as tmp:
            root = request.workdir or Path(tmp)
            for name in request.config_names:
                folder = root / name
                folder.mkdir(parents=True, exist_ok=True)
                results.append(measure_config(CONFIGS[name], request, folder, log))
    finally:
        torch.set_num_threads(saved[0])
        torch.use_deterministic_algorithms(saved[1], warn_only=saved[2])
    return header, results


def measure_speed(request: SpeedRequest, log: Log = _log) -> int:
    """Measure what ``request`` asks, print the table (or with ``shared_machine`` only the
    side-by-side table) and write the JSON; the exit status: 1 if ``strict`` and a target
    failed, else 0. Progress goes to ``log`` (default: stderr)."""
    if request.shared_machine:
        print(format_sharing(measure_sharing(6 if request.quick else 12, log)))
        return 0
    header, results = _measure_configs(request, log)
    print(header)
    for result in results:
        print(format_table(result, request.repeats, request.warmup))
    if request.json_path:
        atomic_write_text(request.json_path, json.dumps({"machine": header, "results": results}, indent=1))
    failed = [c for r in results for c in r["checks"] if not c["passed"]]
    return 1 if request.strict and failed else 0
