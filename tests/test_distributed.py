"""DDP scale-out: ``torchrun --nproc_per_node=2 -m transmem train`` on CPU (gloo).

Two processes each train on half of the global batch; DDP averages their gradients, so
the result must match one process training on the whole global batch. Rank 0 alone writes
the run folder, and a second launch resumes it (here: finds it finished, or continues from
a checkpoint).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.support import tiny_raw, write_config
from transmem.config import load_config
from transmem.run.lifecycle import train

pytestmark = pytest.mark.slow

TOLERANCE = 1e-5


def _config(tmp_path: Path, name: str = "cfg.toml", **sections) -> Path:
    raw = tiny_raw(
        data={"train_size": 0, "val_size": 0, "batch_size": 4, **sections.pop("data", {})},
        train={"iterations": 4, "log_every": 2, "checkpoint_every": 2, "time_reversal": False, "device": "cpu"},
        **sections,
    )
    return write_config(tmp_path / name, raw)


def _torchrun(config: Path, out: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    command = [
        sys.executable, "-m", "torch.distributed.run",
        "--standalone", "--nproc_per_node=2",  # --standalone: a free rendezvous port, picked by torchrun
        "-m", "transmem", "train", str(config), "--out", str(out), "--no-progress",
    ]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"torchrun failed ({result.returncode}):\n{result.stdout}\n{result.stderr[-4000:]}"
    return result


def _max_difference(a: Path, b: Path) -> float:
    first, second = load_file(str(a)), load_file(str(b))
    assert first.keys() == second.keys()
    return max((first[k] - second[k]).abs().max().item() for k in first)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    config = _config(tmp)
    single = tmp / "single"
    train(load_config(config, []), single, progress=False)
    ddp = tmp / "ddp"
    first = _torchrun(config, ddp)
    return {"tmp": tmp, "config": config, "single": single, "ddp": ddp, "first": first}


def test_two_processes_match_one_process_with_the_same_global_batch(runs):
    ddp = runs["ddp"]
    assert (ddp / "model.safetensors").is_file()
    assert sorted(p.name for p in (ddp / "checkpoints").glob("ckpt-*.pt")) == ["ckpt-00000002.pt", "ckpt-00000004.pt"]
    assert not list(ddp.glob(".*.transmem-tmp-*")) and not list((ddp / "checkpoints").glob(".*.transmem-tmp-*"))
    # one rank writes the log: one row per logged iteration, no duplicates
    rows = (ddp / "train.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["2", "4"]
    assert _max_difference(runs["single"] / "model.safetensors", ddp / "model.safetensors") < TOLERANCE


def test_second_launch_finds_the_run_finished(runs):
    before = (runs["ddp"] / "model.safetensors").read_bytes()
    result = _torchrun(runs["config"], runs["ddp"])
    assert "already finished" in result.stdout
    assert (runs["ddp"] / "model.safetensors").read_bytes() == before


def test_launch_resumes_an_interrupted_run_from_its_checkpoint(runs):
    # An interrupted run: final weights and the last checkpoint never written.
    interrupted = runs["tmp"] / "interrupted"
    interrupted.mkdir()
    for name in ("config.toml", "train.csv"):
        (interrupted / name).write_bytes((runs["ddp"] / name).read_bytes())
    (interrupted / "checkpoints").mkdir()
    checkpoint = "ckpt-00000002.pt"
    (interrupted / "checkpoints" / checkpoint).write_bytes((runs["ddp"] / "checkpoints" / checkpoint).read_bytes())
    state = torch.load(interrupted / "checkpoints" / checkpoint, weights_only=True)
    assert state["iteration"] == 2
    _torchrun(runs["config"], interrupted)
    assert _max_difference(runs["ddp"] / "model.safetensors", interrupted / "model.safetensors") < TOLERANCE
    assert _max_difference(runs["single"] / "model.safetensors", interrupted / "model.safetensors") < TOLERANCE


def test_tmu_target_with_cached_bank_matches_one_process(runs):
    """Two ranks share one cached memory bank (rank 0 builds it) and match one process."""
    tmp = runs["tmp"]
    sources = [str(runs["single"]), str(runs["ddp"])]  # two trained tiny ConvLSTMs
    config = _config(
        tmp,
        "tmu.toml",
        data={"train_size": 8, "options": {"num_digits": 3}},
        transfer={"method": "tmu", "sources": sources, "layers": [0], "bank": "cached"},
    )
    single, ddp = tmp / "tmu_single", tmp / "tmu_ddp"
    train(load_config(config, []), single, progress=False)
    _torchrun(config, ddp)
    assert _max_difference(single / "model.safetensors", ddp / "model.safetensors") < TOLERANCE
    (bank,) = (ddp / "memory_bank").iterdir()
    assert '"complete": true' in (bank / "meta.json").read_text()


def test_parameters_without_gradient_do_not_stall_ddp(runs):
    """TMU with distillation weight 0 and a source of another channel count: the projection
    onto that source's memory serves only the distillation loss, so it gets no gradient."""
    tmp = runs["tmp"]
    narrow = tmp / "narrow_source"
    train(load_config(_config(tmp, "narrow.toml", model={"hidden": [4]}), []), narrow, progress=False)
    config = _config(
        tmp,
        "tmu_nodistill.toml",
        data={"train_size": 8, "options": {"num_digits": 3}},
        transfer={"method": "tmu", "sources": [str(narrow)], "layers": [0], "bank": "cached", "distill_weight": 0.0},
    )
    single, ddp = tmp / "nodistill_single", tmp / "nodistill_ddp"
    train(load_config(config, []), single, progress=False)
    assert "cells.0.transfer.projections.0.weight" in load_file(str(single / "model.safetensors"))
    _torchrun(config, ddp)
    assert _max_difference(single / "model.safetensors", ddp / "model.safetensors") < TOLERANCE
