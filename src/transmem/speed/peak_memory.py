"""Peak memory of one ``transmem speed`` training variant, measured in a fresh process.

:func:`measure_memory` starts a new Python process running :func:`memory_worker`, which
builds the variant's workload and runs a few training steps. On Linux it reports the peak
RSS (VmHWM, reset before the steps) and the peak anonymous RSS (sampled), elsewhere only
``ru_maxrss``.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import threading
from dataclasses import asdict
from pathlib import Path

import torch

from transmem.speed.configs import SpeedConfig
from transmem.speed.workload import build_workload


def _status_kb() -> dict[str, int]:
    """Memory fields of ``/proc/self/status`` in kB (empty off Linux)."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return {}
    fields = {}
    for line in lines:
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM", "RssAnon", "RssFile") and value.strip().endswith("kB"):
            fields[name] = int(value.split()[0])
    return fields


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) of this process (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class _AnonymousPeak:
    """Samples the process's anonymous resident memory (heap, tensors) every millisecond.

    The kernel keeps a peak only of the whole RSS, which also counts the pages of mapped
    files (the cached bank's memmap, shared libraries): page cache that the kernel may drop.
    """

    def __init__(self, interval: float = 0.001) -> None:
        self.interval, self.peak = interval, _status_kb().get("RssAnon", 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, _status_kb().get("RssAnon", 0))

    def __enter__(self) -> "_AnonymousPeak":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _status_kb().get("RssAnon", 0))


def memory_worker(payload: dict) -> dict:
    """In a fresh process: set up one training variant, run steps, report its memory.

    Linux: the peak RSS during the steps (VmHWM, reset before them) and the peak anonymous
    RSS (sampled), each also as growth over the resident memory before the steps. Elsewhere
    only ``ru_maxrss`` (whole process, an upper bound: it survives exec from a bigger parent).
    """
    spec = SpeedConfig(**{**payload["spec"], "hidden": tuple(payload["spec"]["hidden"])})
    if payload.get("threads"):
        torch.set_num_threads(payload["threads"])
    workload = build_workload(spec, payload["variant"], Path(payload["folder"]))
    before = _status_kb()
    if not before or not _reset_peak():
        for _ in range(payload["steps"]):
            workload.step()
        return {
            "peak_process_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            / (1024 if sys.platform != "darwin" else 1024**2)
        }
    with _AnonymousPeak() as anonymous:
        for _ in range(payload["steps"]):
            workload.step()
    after = _status_kb()
    mb = 1 / 1024
    return {
        "peak_process_mb": max(before["VmHWM"], after["VmHWM"]) * mb,
        "rss_before_steps_mb": before["VmRSS"] * mb,
        "peak_steps_mb": after["VmHWM"] * mb,
        "step_growth_mb": (after["VmHWM"] - before["VmRSS"]) * mb,
        "anon_before_steps_mb": before["RssAnon"] * mb,
        "peak_anon_steps_mb": anonymous.peak * mb,
        "anon_growth_mb": (anonymous.peak - before["RssAnon"]) * mb,
        "file_rss_after_mb": after["RssFile"] * mb,
        "file_rss_growth_mb": (after["RssFile"] - before["RssFile"]) * mb,
    }


def measure_memory(spec: SpeedConfig, variant: str, folder: Path, steps: int, threads: int | None) -> dict:
    """:func:`memory_worker`'s report (MB) of ``variant`` training ``steps`` steps, measured in
    a fresh Python process with ``threads`` torch threads (None: torch's choice)."""
    payload = {"spec": asdict(spec), "variant": variant, "folder": str(folder), "steps": steps, "threads": threads}
    code = "import json, sys; from transmem.speed.peak_memory import memory_worker; print(json.dumps(memory_worker(json.loads(sys.argv[1]))))"
    result = subprocess.run([sys.executable, "-c", code, json.dumps(payload)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"speed: memory measurement of {variant} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def gpu_memory(spec: SpeedConfig, variant: str, folder: Path, steps: int, device: str) -> dict:
    """On a CUDA ``device``, in this process: the peak GPU memory torch allocates while
    ``variant`` is built and trains ``steps`` steps (``torch.cuda.max_memory_allocated``,
    reset first, less what the process held before), and its growth over what was allocated
    once the variant was built (the step's own activations, gradients and optimiser state)."""
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    held = torch.cuda.memory_allocated(device)  # by anything else in this process: not counted
    workload = build_workload(spec, variant, folder, device=device)
    torch.cuda.synchronize(device)
    built = torch.cuda.memory_allocated(device) - held
    for _ in range(steps):
        workload.step()
    torch.cuda.synchronize(device)
    mb = 1 / 1024**2
    result = {"peak_gpu_mb": (torch.cuda.max_memory_allocated(device) - held) * mb, "built_gpu_mb": built * mb}
    result["gpu_growth_mb"] = result["peak_gpu_mb"] - result["built_gpu_mb"]
    del workload
    torch.cuda.empty_cache()
    return result
