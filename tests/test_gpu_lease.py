"""scripts/gpu_lease.sh --dry-run: the GPU lease's whole plan on the CPU at tiny shapes (about 30 s)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_lease.sh"
METHODS = {"scratch", "finetune_best", "fusion", "tmu_ft", "tmu_release"}


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash and timeout")
def test_the_dry_run_runs_the_plan_and_packs_every_output(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "WORK": str(tmp_path / "work"), "PYTHON": sys.executable}
    env.setdefault("OMP_NUM_THREADS", "1")
    done = subprocess.run(["bash", str(SCRIPT), "--dry-run"], env=env, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]

    # at most 8 files come back from a lease: the archive and the main files, loose
    assert {path.name for path in out.iterdir()} == {
        "gpu_lease.tar.gz",
        "summary.txt",
        "lease.log",
        "speed.json",
        "results.md",
        "results.csv",
    }
    speed = json.loads((out / "speed.json").read_text())
    assert [result["device"] for result in speed["results"]] == ["cpu"]
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert {(row["method"], row["seed"]) for row in rows} == {(m, s) for m in METHODS for s in ("0", "1")}
    assert {row["iterations"] for row in rows} == {"6"}  # the dry run's ITERS: the plan found they fit
    summary = (out / "summary.txt").read_text()
    for line in ("prepare        rc 0", "pilot          rc 0", "speed          rc 0", "comparison     rc 0", "exit status 0"):
        assert line in summary

    with tarfile.open(out / "gpu_lease.tar.gz") as archive:
        names = set(archive.getnames())
        plan = archive.extractfile("gpu_lease/plan.txt").read().decode()
    logs = ["lease.log", "summary.txt", "device.txt", "prepare.log", "pilot.log", "speed.log", "comparison.log"]
    for name in [*logs, "speed.json", "plan_first.txt", "plan.txt"]:
        assert f"gpu_lease/{name}" in names
    for folder in ("pilot", "comparison"):
        for name in ("results.csv", "results.md", "results.json", "comparison.csv"):
            assert f"gpu_lease/{folder}/{name}" in names
        for method in METHODS:
            for seed in (0, 1):
                for log in ("train.csv", "val.csv", "metrics.json", "config.toml"):
                    assert f"gpu_lease/{folder}/runs/{method}/seed{seed}/{log}" in names
    assert not any(name.endswith((".safetensors", ".pt")) for name in names)  # no models or checkpoints
    # the plan: each run's timed step and expected time, and what was chosen
    assert "tmu_release seed 1" in plan and "ms/it" in plan
    assert plan.splitlines()[-1].split()[:2] == ["PLAN", "6"]
