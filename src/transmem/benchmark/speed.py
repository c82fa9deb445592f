"""``transmem speed``: training-step and inference speed, memory and efficiency, with ratios.

Measures, in one run and on this machine, for the small configuration (ConvLSTM 2 x 32,
3x3 kernels) and the paper's (4 x 64, 5x5), both with batch 8, 64x64 frames, patch 4 and
10 + 10 frames:

- training step time of the plain ConvLSTM, of a TMU target with a *live* memory bank (2
  frozen sources re-run every step) and with a *cached* bank (the sources' memories read
  from float16 memory-mapped files, :class:`~transmem.transfer.memory_bank.CachedMemoryBank`);
- inference throughput (sequences per second) of the backbone and of the TMU target, which
  needs no source at inference;
- peak memory of each training variant: resident memory on the CPU, each in a fresh
  process; GPU memory allocated by torch on CUDA, in this process (what it held before
  not counted);
- achieved GFLOP/s of the whole training step next to the GFLOP/s of the same convolutions
  run alone at the same shapes (the machine's practical ceiling);
- the ratios behind the targets of the speed issue, each marked PASS or FAIL.

The step is the training loop's (:func:`transmem.training.step.training_step`, or
:mod:`transmem.training.cuda_graph`'s with ``--cuda-graph``): the transfer method
builds the model, prepares its bank and adds its loss terms exactly as in training; the
sources are random-init networks of the target's architecture (their weights do not change
the cost) and the training sequences are random frames held in memory (no data generation
in the timed step, the same for every variant). Times are medians after warm-up with the
inter-quartile range; variants are timed in interleaved rounds so that a machine whose load
drifts affects them alike. No number is asserted by the tests: re-run on a quiet machine.

The parts: :mod:`~transmem.benchmark.speed_config` (the configurations),
:mod:`~transmem.benchmark.workload` (the timed training step and inference),
:mod:`~transmem.benchmark.flops` (FLOP counting) and :mod:`~transmem.benchmark.peak_memory`
(peak memory, one process per variant). This module times them, checks the ratios, prints
the table and is the command line (``transmem speed``, ``python -m transmem.benchmark.speed``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from transmem.benchmark.flops import ConvShape, step_convs, total_flops
from transmem.benchmark.peak_memory import gpu_memory, measure_memory
from transmem.benchmark.speed_config import CONFIGS, SpeedConfig
from transmem.benchmark.timing import Timing, measure_interleaved, synchronizer
from transmem.benchmark.workload import build_inference, build_workload
from transmem.storage.files import atomic_write_text

TRAIN_VARIANTS = ("plain", "live", "cached")
#: The authors' release (thuml/transferable-memory), its TMU training step with two live
#: teachers at the paper's configuration, batch 8, measured on one NVIDIA H200 (issue 19's
#: table, torch 2.11, cu130): the reference of the GPU targets, meaningful on an H200-class GPU.
RELEASE_TMU_STEP_H200 = 0.0871
VARIANT_LABELS = {"plain": "plain ConvLSTM", "live": "TMU, live bank", "cached": "TMU, cached bank"}


def speed_device(name: str) -> str:
    """``--device``: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``, as the
    training loop resolves ``train.device``; a ConfigError names what is wrong."""
    from transmem.config import ConfigError
    from transmem.training.engine import resolve_device

    device = resolve_device(name, "--device")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device: expected auto, cpu, cuda or cuda:N, got {name!r}")
    return str(device)


def conv_alone_seconds(spec: SpeedConfig, shapes: list[ConvShape], warmup: int, repeats: int, device: str = "cpu") -> Timing:
    """Time the step's convolutions alone at the same shapes (forward, + backward if trained).

    Every distinct shape is timed on its own (median of ``repeats``) and weighted by how
    often the step runs it; the returned timing is the sum per repeat.
    """
    import torch
    import torch.nn.functional as F

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
    total = Timing([sum(weights[n] * timings[n].seconds[r] for n in functions) for r in range(repeats)])
    return total


# ----------------------------------------------------------------------------- the benchmark


@dataclass
class Check:
    name: str
    value: float
    target: str  # e.g. "<= 1.25"

    @property
    def passed(self) -> bool:
        op, bound = self.target.split()
        return self.value <= float(bound) if op == "<=" else self.value >= float(bound)


@dataclass(frozen=True)
class SpeedOption:
    """One fast-path setting timed against the float32 eager step, e.g. ``"bf16+cuda-graph"``."""

    label: str
    precision: str = "float32"
    compiled: bool = False
    graphed: bool = False  # train.cuda_graph: only a step that reads frames alone can be captured
    channels_last: bool = False
    variants: tuple[str, ...] = ("plain", "cached")


def speed_options(args) -> list[SpeedOption]:
    """The options ``--compile``, ``--cuda-graph`` and ``--channels-last`` ask to time (and
    channels-last in the CUDA graph), each in float32 and, with ``--precision bf16``, under
    bf16 too; bf16 alone first."""
    bf16 = args.precision == "bf16"
    graph = {"graphed": True, "variants": ("plain",)}  # only a step that reads frames alone can be captured
    features = []  # (label, SpeedOption fields)
    if args.compile:
        features.append(("compile", {"compiled": True}))
    if args.cuda_graph:
        features.append(("cuda-graph", graph))
    if args.channels_last:
        features.append(("channels-last", {"channels_last": True}))
    if args.channels_last and args.cuda_graph:
        features.append(("channels-last+cuda-graph", {**graph, "channels_last": True}))
    options = [SpeedOption("bf16", "bf16")] if bf16 else []
    for label, fields in features:
        options.append(SpeedOption(label, **fields))
        if bf16:
            options.append(SpeedOption(f"bf16+{label}", "bf16", **fields))
    return options


def benchmark_config(spec: SpeedConfig, args, folder: Path, log: Callable[[str], None]) -> dict:
    """Every measurement of one configuration (a JSON-able dict)."""
    warmup, repeats, device = args.warmup, args.repeats, args.device
    sync, on_cuda = synchronizer(device), device.startswith("cuda")
    side = spec.frame_size // spec.patch
    result: dict = {
        "config": asdict(spec),
        "description": spec.describe(),
        "device": device,
        "train": {},
        "inference": {},
        "memory": {},
    }

    log(f"[{spec.name}] building the variants (sources, cached bank) ...")
    workloads = {variant: build_workload(spec, variant, folder, device=device) for variant in TRAIN_VARIANTS}
    log(f"[{spec.name}] timing training steps on {device} ({warmup} warm-up, {repeats} repeats, interleaved) ...")
    steps = measure_interleaved({v: w.step for v, w in workloads.items()}, warmup, repeats, sync)
    del workloads
    for variant, timing in steps.items():
        shapes = step_convs(spec, variant)
        result["train"][variant] = {**timing.summary(), "conv_gflop": total_flops(spec, shapes) / 1e9}

    log(f"[{spec.name}] timing the step's convolutions alone ...")
    for variant in TRAIN_VARIANTS:
        shapes = step_convs(spec, variant)
        alone = conv_alone_seconds(spec, shapes, max(1, warmup), repeats, device)
        entry = result["train"][variant]
        entry["conv_alone"] = alone.summary()
        entry["step_gflops"] = entry["conv_gflop"] / entry["median"]
        entry["conv_alone_gflops"] = entry["conv_gflop"] / alone.median
        entry["conv_shapes"] = [{**asdict(s), "gflop": s.flops(spec.batch, side, side) / 1e9} for s in shapes]

    log(f"[{spec.name}] timing inference ...")
    inference = measure_interleaved(
        {"backbone": build_inference(spec, False, device), "tmu": build_inference(spec, True, device)}, warmup, repeats, sync
    )
    for name, timing in inference.items():
        result["inference"][name] = {**timing.summary(), "sequences_per_second": spec.batch / timing.median}

    result["options"] = time_options(spec, args, folder, log)

    if not args.no_memory and on_cuda:
        log(f"[{spec.name}] peak GPU memory per variant ...")
        for variant in TRAIN_VARIANTS:
            result["memory"][variant] = gpu_memory(spec, variant, folder, args.memory_steps, device)
    elif not args.no_memory:
        log(f"[{spec.name}] peak memory, one fresh process per variant ...")
        for variant in TRAIN_VARIANTS:
            result["memory"][variant] = measure_memory(spec, variant, folder, args.memory_steps, args.threads)
    result["checks"] = [
        {"name": c.name, "value": c.value, "target": c.target, "passed": c.passed}
        for c in (gpu_checks(spec, result) if on_cuda else cpu_checks(result))
    ]
    return result


def time_options(spec: SpeedConfig, args, folder: Path, log: Callable[[str], None]) -> dict:
    """The step with each fast-path option asked for (:func:`speed_options`), each timed
    interleaved with the float32 eager step of its variant: ``{"<variant> <label>": timing,
    speed-up over float32, the first steps' seconds}``. Its workloads are freed on return,
    before memory is measured."""
    from transmem.training.cuda_graph import WARMUP_STEPS

    warmup, repeats, device = args.warmup, args.repeats, args.device
    sync = synchronizer(device)
    extra = speed_options(args)
    options = {}
    needed = sorted({variant for option in extra for variant in option.variants})
    baselines = {variant: build_workload(spec, variant, folder, device=device) for variant in needed}
    for option in extra:
        log(f"[{spec.name}] timing the step with {option.label} ...")
        for variant in option.variants:
            workload = build_workload(
                spec, variant, folder, option.precision, option.compiled, device, option.graphed, option.channels_last
            )
            started = time.perf_counter()
            first_steps = WARMUP_STEPS + 1 if option.graphed else 1
            for _ in range(first_steps):  # compiles or warms up and captures, if asked
                workload.step()
            sync()
            first = time.perf_counter() - started
            # interleaved with a float32 eager step of the same variant, so both see the same load
            timing = measure_interleaved({"float32": baselines[variant].step, option.label: workload.step}, warmup, repeats, sync)
            options[f"{variant} {option.label}"] = {
                **timing[option.label].summary(),
                "first_step": first,
                "first_steps": first_steps,
                "speedup": timing["float32"].median / timing[option.label].median,
            }
    return options


def cpu_checks(result: dict) -> list[Check]:
    """The CPU targets: TMU's overhead over the backbone, the live bank's cost, efficiency, memory."""
    train, inf = result["train"], result["inference"]
    checks = [
        Check("TMU cached / plain step time", train["cached"]["median"] / train["plain"]["median"], "<= 1.25"),
        Check("TMU live / cached step time", train["live"]["median"] / train["cached"]["median"], ">= 1.8"),
        Check(
            "plain step / its convs alone, GFLOP/s", train["plain"]["step_gflops"] / train["plain"]["conv_alone_gflops"], ">= 0.6"
        ),
        Check(
            "cached step / its convs alone, GFLOP/s",
            train["cached"]["step_gflops"] / train["cached"]["conv_alone_gflops"],
            ">= 0.6",
        ),
        Check("TMU / backbone inference time", inf["tmu"]["median"] / inf["backbone"]["median"], "<= 1.15"),
    ]
    memory = result["memory"]
    if memory:
        # the steps' own growth of the anonymous memory (Linux), else whole-process peaks
        key = "anon_growth_mb" if "anon_growth_mb" in memory["cached"] else "peak_process_mb"
        label = "step heap growth" if key == "anon_growth_mb" else "process peak"
        checks.append(Check(f"cached / live peak memory ({label})", memory["cached"][key] / memory["live"][key], "<= 1.0"))
    return checks


def fastest(result: dict, variant: str) -> float:
    """The fastest median step of ``variant``: float32 eager or any option timed (bf16,
    compile, a CUDA graph), since the targets are for the step a GPU user can have."""
    options = [entry["median"] for name, entry in result.get("options", {}).items() if name.split()[0] == variant]
    return min([result["train"][variant]["median"], *options])


def gpu_checks(spec: SpeedConfig, result: dict) -> list[Check]:
    """The GPU targets of the speed issue: at the paper's configuration the plain step in at
    most 25 ms, TMU cached in 30 ms (each the fastest of eager and the options timed, see
    :func:`fastest`), every TMU step 3x faster than the release's
    (:data:`RELEASE_TMU_STEP_H200`, an H200-class reference); at any size a live bank at most
    1.3x a cached one, and TMU inference as fast as the backbone's."""
    train, inf = result["train"], result["inference"]
    checks = [
        Check("TMU live / cached step time", train["live"]["median"] / train["cached"]["median"], "<= 1.3"),
        Check("TMU / backbone inference time", inf["tmu"]["median"] / inf["backbone"]["median"], "<= 1.15"),
    ]
    if spec.name == "paper":
        plain, cached = (fastest(result, variant) for variant in ("plain", "cached"))
        checks += [
            Check("plain step (fastest timed), ms", plain * 1e3, "<= 25"),
            Check("TMU cached step (fastest timed), ms", cached * 1e3, "<= 30"),
            Check("release TMU step (H200) / TMU cached step", RELEASE_TMU_STEP_H200 / cached, ">= 3"),
            Check("release TMU step (H200) / TMU live step", RELEASE_TMU_STEP_H200 / train["live"]["median"], ">= 3"),
        ]
    memory = result["memory"]
    if memory:
        checks.append(
            Check("cached / live peak GPU memory", memory["cached"]["peak_gpu_mb"] / memory["live"]["peak_gpu_mb"], "<= 1.0")
        )
    return checks


# ----------------------------------------------------------------------------- the table


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds < 10 else f"{seconds:.2f} s"


def _spread(entry: dict, scale: Callable[[float], str] = _ms) -> str:
    return f"IQR {scale(entry['q1'])} - {scale(entry['q3'])}, range {scale(entry['min'])} - {scale(entry['max'])}"


def machine_line(threads: int, device: str = "cpu") -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    line = (
        f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, {threads} threads, Python {platform.python_version()}"
    )
    if device.startswith("cuda"):
        line = f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda}, {device}); host: {line}"
    return line


def format_table(result: dict, repeats: int, warmup: int) -> str:
    lines = [f"== {result['config']['name']}: {result['description']}"]
    lines.append(f"   medians of {repeats} after {warmup} warm-up, spread = inter-quartile range (IQR) and min - max")
    row = "  {:<44s} {:>16s}   {}"
    lines.append(row.format("measurement", "median", "spread"))
    for variant, entry in result["train"].items():
        lines.append(row.format(f"train step, {VARIANT_LABELS[variant]}", _ms(entry["median"]), _spread(entry)))
    for name, entry in result["inference"].items():
        label = "ConvLSTM" if name == "backbone" else "TMU (no source loaded)"
        rate = f"{entry['sequences_per_second']:.1f} seq/s"
        lines.append(row.format(f"inference, {label}", rate, f"{_ms(entry['median'])} per batch, " + _spread(entry)))
    for variant, entry in result["train"].items():
        lines.append(
            row.format(
                f"GFLOP/s, {VARIANT_LABELS[variant]}",
                f"{entry['step_gflops']:.1f}",
                f"{entry['conv_gflop']:.3g} GFLOP of convolutions per step; the same convolutions alone "
                f"{entry['conv_alone_gflops']:.1f} GFLOP/s ({_ms(entry['conv_alone']['median'])})",
            )
        )
    for name, entry in result.get("options", {}).items():
        lines.append(
            row.format(
                f"train step, {name}",
                _ms(entry["median"]),
                f"speedup x{entry['speedup']:.2f} over float32 eager; first {entry.get('first_steps', 1)} step(s) "
                f"{_ms(entry['first_step'])}; " + _spread(entry),
            )
        )
    for variant, entry in result["memory"].items():
        if "peak_gpu_mb" in entry:
            value = f"{entry['peak_gpu_mb']:.0f} MB"
            detail = (
                f"peak GPU memory allocated (torch.cuda.max_memory_allocated), {entry['built_gpu_mb']:.0f} MB once built, "
                f"+{entry['gpu_growth_mb']:.0f} MB in the steps"
            )
        elif "anon_growth_mb" in entry:
            value = f"+{entry['anon_growth_mb']:.0f} MB"
            detail = (
                f"heap (anonymous RSS, sampled every ms) peak {entry['peak_anon_steps_mb']:.0f} MB over "
                f"{entry['anon_before_steps_mb']:.0f} MB before the steps; whole RSS peak {entry['peak_steps_mb']:.0f} MB "
                f"(+{entry['step_growth_mb']:.0f} MB, mapped files +{entry['file_rss_growth_mb']:.0f} MB)"
            )
        else:
            value, detail = f"{entry['peak_process_mb']:.0f} MB", "whole process peak (ru_maxrss)"
        lines.append(row.format(f"step memory, {VARIANT_LABELS[variant]}", value, detail))
    lines.append("  ratios (targets of the speed issue):")
    for check in result["checks"]:
        status = "PASS" if check["passed"] else "FAIL"
        lines.append(f"    {check['name']:<48s} {check['value']:7.2f}   target {check['target']:<7s} {status}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", default="auto", help="where to measure: auto (CUDA when available), cpu, cuda or cuda:N (default auto)"
    )
    parser.add_argument("--config", default="both", choices=["small", "paper", "both"], help="configuration(s) to measure")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per measurement (default 10, --quick 3)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed warm-up calls (default 2, --quick 1)")
    parser.add_argument("--quick", action="store_true", help="few repeats: a rough table in a short time")
    parser.add_argument(
        "--precision", default="float32", choices=["float32", "bf16"], help="also time the step under bf16 autocast"
    )
    parser.add_argument("--compile", action="store_true", help="also time the step with torch.compile")
    parser.add_argument(
        "--cuda-graph",
        action="store_true",
        help="also time the plain step captured in a CUDA graph (train.cuda_graph; CUDA only)",
    )
    parser.add_argument(
        "--channels-last",
        action="store_true",
        help="also time the step with channels-last weights and states (train.channels_last)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    parser.add_argument(
        "--memory-steps", type=int, default=None, help="training steps per peak-memory process (default 3, --quick 2)"
    )
    parser.add_argument("--json", help="also write every measurement to this JSON file")
    parser.add_argument("--workdir", help="folder for the sources and the cached bank (default: a temporary folder)")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 if a target fails")
    parser.add_argument(
        "--shared-machine",
        action="store_true",
        help="only measure two trainings side by side against one alone, per OpenMP wait policy (see benchmark/sharing.py)",
    )
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # tests: a tiny configuration


def measure_speed(args) -> int:
    import torch

    from transmem.config import ConfigError

    if args.repeats is None:
        args.repeats = 3 if args.quick else 10
    if args.warmup is None:
        args.warmup = 1 if args.quick else 2
    if args.memory_steps is None:
        args.memory_steps = 2 if args.quick else 3
    if args.repeats < 1 or args.warmup < 0 or args.memory_steps < 1 or (args.threads is not None and args.threads < 1):
        raise ConfigError("speed: --repeats, --memory-steps and --threads must be >= 1, --warmup >= 0")
    if args.json and (Path(args.json).is_dir() or not Path(args.json).resolve().parent.is_dir()):  # before minutes of measuring
        raise ConfigError(f"--json: {args.json} is a folder, or its folder does not exist")
    args.device = speed_device(args.device)
    if args.cuda_graph and not args.device.startswith("cuda"):
        raise ConfigError(f"--cuda-graph: captures the step in a CUDA graph and needs --device cuda, not {args.device}")
    names = ["tiny"] if args.tiny else (["small", "paper"] if args.config == "both" else [args.config])

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    if args.shared_machine:
        from transmem.benchmark.sharing import format_sharing, measure_sharing

        print(format_sharing(measure_sharing(6 if args.quick else 12, log)))
        return 0

    # the workloads set process-wide torch state as the training loop does; put it back afterwards
    saved = (
        torch.get_num_threads(),
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    try:
        if args.threads:
            torch.set_num_threads(args.threads)
        header = f"transmem speed: {machine_line(torch.get_num_threads(), args.device)}; float32 unless stated"
        results = []
        with tempfile.TemporaryDirectory(prefix="transmem-speed-") as tmp:
            root = Path(args.workdir) if args.workdir else Path(tmp)
            for name in names:
                folder = root / name
                folder.mkdir(parents=True, exist_ok=True)
                results.append(benchmark_config(CONFIGS[name], args, folder, log))
    finally:
        torch.set_num_threads(saved[0])
        torch.use_deterministic_algorithms(saved[1], warn_only=saved[2])
    print(header)
    for result in results:
        print(format_table(result, args.repeats, args.warmup))
    if args.json:
        atomic_write_text(Path(args.json), json.dumps({"machine": header, "results": results}, indent=1))
    failed = [c for r in results for c in r["checks"] if not c["passed"]]
    return 1 if args.strict and failed else 0


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - ``python -m transmem.benchmark.speed``
    parser = argparse.ArgumentParser(prog="transmem speed", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return measure_speed(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
