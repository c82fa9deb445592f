"""The table ``transmem speed`` prints: one block per configuration, and the machine's line.

Times are printed in ms (s from 10 s on), rates in sequences or GFLOP per second, memory in
MB; each median comes with its spread (inter-quartile range and range).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Callable

import torch

VARIANT_LABELS = {"plain": "plain ConvLSTM", "live": "TMU, live bank", "cached": "TMU, cached bank"}
ROW = "  {:<44s} {:>16s}   {}"  # measurement, median (or value), detail


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds < 10 else f"{seconds:.2f} s"


def _spread(entry: dict, scale: Callable[[float], str] = _ms) -> str:
    return f"IQR {scale(entry['q1'])} - {scale(entry['q3'])}, range {scale(entry['min'])} - {scale(entry['max'])}"


def machine_line(threads: int, device: str = "cpu") -> str:
    """The CPU (and on CUDA the GPU), torch and Python versions, and the torch ``threads``."""
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


def _memory_row(variant: str, entry: dict) -> str:
    """The row of one variant's peak memory: on the GPU, as heap growth (Linux), or whole process."""
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
    return ROW.format(f"step memory, {VARIANT_LABELS[variant]}", value, detail)


def _time_rows(result: dict) -> list[str]:
    """The rows of the training steps, inference, GFLOP/s and the fast-path options."""
    lines = []
    for variant, entry in result["train"].items():
        lines.append(ROW.format(f"train step, {VARIANT_LABELS[variant]}", _ms(entry["median"]), _spread(entry)))
    for name, entry in result["inference"].items():
        label = "ConvLSTM" if name == "backbone" else "TMU (no source loaded)"
        rate = f"{entry['sequences_per_second']:.1f} seq/s"
        lines.append(ROW.format(f"inference, {label}", rate, f"{_ms(entry['median'])} per batch, " + _spread(entry)))
    for variant, entry in result["train"].items():
        lines.append(
            ROW.format(
                f"GFLOP/s, {VARIANT_LABELS[variant]}",
                f"{entry['step_gflops']:.1f}",
                f"{entry['conv_gflop']:.3g} GFLOP of convolutions per step; the same convolutions alone "
                f"{entry['conv_alone_gflops']:.1f} GFLOP/s ({_ms(entry['conv_alone']['median'])})",
            )
        )
    for name, entry in result.get("options", {}).items():
        lines.append(
            ROW.format(
                f"train step, {name}",
                _ms(entry["median"]),
                f"speedup x{entry['speedup']:.2f} over float32 eager; first {entry.get('first_steps', 1)} step(s) "
                f"{_ms(entry['first_step'])}; " + _spread(entry),
            )
        )
    return lines


def format_table(result: dict, repeats: int, warmup: int) -> str:
    """One configuration's block: its times, memory and ratios, each ratio marked PASS or FAIL."""
    lines = [f"== {result['config']['name']}: {result['description']}"]
    lines.append(f"   medians of {repeats} after {warmup} warm-up, spread = inter-quartile range (IQR) and min - max")
    lines.append(ROW.format("measurement", "median", "spread"))
    lines += _time_rows(result)
    lines += [_memory_row(variant, entry) for variant, entry in result["memory"].items()]
    lines.append("  ratios (targets of the speed issue):")
    for check in result["checks"]:
        status = "PASS" if check["passed"] else "FAIL"
        lines.append(f"    {check['name']:<48s} {check['value']:7.2f}   target {check['target']:<7s} {status}")
    return "\n".join(lines)
