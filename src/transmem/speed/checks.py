"""The targets ``transmem speed`` checks its measurements against, each marked PASS or FAIL.

On the CPU: the TMU's overhead over the backbone, the live bank's cost, the step's efficiency
against its convolutions alone, and memory. On a GPU: step times at the paper's configuration
against the authors' release, the live bank's cost, inference, and memory. A result is the
dict :func:`~transmem.speed.measure.measure_config` returns (times in seconds, memory in MB).
"""

from __future__ import annotations

from dataclasses import dataclass

from transmem.speed.configs import SpeedConfig

#: The authors' release (thuml/transferable-memory), its TMU training step with two live
#: teachers at the paper's configuration, batch 8, measured on one NVIDIA H200 (torch 2.11,
#: cu130), in seconds: the reference of the GPU targets, meaningful on an H200-class GPU.
RELEASE_TMU_STEP_H200 = 0.0871


@dataclass
class Check:
    """One ratio and its target, e.g. ``"<= 1.25"`` or ``">= 1.8"``."""

    name: str
    value: float
    target: str  # e.g. "<= 1.25"

    @property
    def passed(self) -> bool:
        op, bound = self.target.split()
        return self.value <= float(bound) if op == "<=" else self.value >= float(bound)


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
    """The GPU targets: at the paper's configuration the plain step in at
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
