"""Faults: a diverging run, a closed stdout, an ambiguous source name, a full disk. Each ends
with one line ``transmem: error: ...`` on stderr and its exit status, and loses nothing."""

from __future__ import annotations

import json
import os
import shutil
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.support import csv_rows, write_tiny_config
from transmem.cli import main
from transmem.storage.checkpoints import latest_good_checkpoint, list_checkpoints


def one_error_line(capsys) -> str:
    """The single line the last command wrote to stderr (asserted to be one ``transmem: error:`` line)."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("transmem: error: ") and "Traceback" not in err, err
    return lines[0]


def train_cli(config: Path, out: Path, *extra: str) -> int:
    return main(["train", str(config), "--out", str(out), "--no-progress", *extra])


# ----------------------------------------------------------------------------- 1. divergence


def diverging_config(tmp_path: Path, lr: float, iterations: int = 8) -> Path:
    train = {"iterations": iterations, "lr": lr, "log_every": 1, "checkpoint_every": 1, "device": "cpu"}
    return write_tiny_config(tmp_path / f"lr{lr:g}.toml", train=train)


def test_an_lr_too_large_for_float32_exits_3_saying_no_checkpoint_was_written(tmp_path, capsys):
    # Adam's step size 1e40 cannot be converted to float32: a RuntimeError in the optimiser
    assert train_cli(diverging_config(tmp_path, 1e40), tmp_path / "run") == 3
    line = one_error_line(capsys)
    assert "iteration 1:" in line and "overflow" in line
    assert "no checkpoint was written" in line and "last good checkpoint" not in line
    assert "train.lr (now 1e+40)" in line
    assert not list_checkpoints(tmp_path / "run" / "checkpoints")


def test_a_huge_lr_exits_3_naming_the_iteration_train_csv_logs_and_the_checkpoint_kept(tmp_path, capsys):
    run = tmp_path / "run"
    assert train_cli(diverging_config(tmp_path, 1e20), run) == 3
    line = one_error_line(capsys)
    logged = [int(row["iteration"]) for row in csv_rows(run / "train.csv")]
    path, saved = latest_good_checkpoint(run / "checkpoints")
    assert logged and f"iteration {logged[-1] + 1}:" in line  # the iteration that diverged, numbered as train.csv numbers
    assert saved["iteration"] == logged[-1] and f"last good checkpoint is kept ({path}" in line
    assert "loss became inf" in line or "loss became nan" in line or "gradient norm became" in line
    assert all(torch.isfinite(value).all() for value in saved["model"].values())


class InfiniteGradient(torch.autograd.Function):
    """Identity forward; its backward makes every gradient infinite (the loss stays finite)."""

    @staticmethod
    def forward(ctx, value):
        return value.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


def test_an_infinite_gradient_norm_stops_before_the_update_and_its_checkpoint(tmp_path, capsys, monkeypatch):
    import transmem.training.step as step

    calls = []
    original = step.step_loss

    def poisoned(*args, **kwargs):
        loss, terms = original(*args, **kwargs)
        calls.append(1)
        return (InfiniteGradient.apply(loss) if len(calls) == 3 else loss), terms

    monkeypatch.setattr(step, "step_loss", poisoned)
    run = tmp_path / "run"
    assert train_cli(diverging_config(tmp_path, 3e-3), run) == 3
    line = one_error_line(capsys)
    assert "iteration 3: gradient norm became" in line
    assert [row["iteration"] for row in csv_rows(run / "train.csv")] == ["1", "2"]
    path, saved = latest_good_checkpoint(run / "checkpoints")
    assert saved["iteration"] == 2 and all(torch.isfinite(value).all() for value in saved["model"].values())


def test_a_diverged_run_is_rerun_with_a_lower_lr_as_its_message_says(tmp_path, capsys):
    run = tmp_path / "run"
    assert train_cli(diverging_config(tmp_path, 1e20), run) == 3
    capsys.readouterr()
    kept = list_checkpoints(run / "checkpoints")
    assert kept
    lower = diverging_config(tmp_path, 3e-3)
    # the folder holds a run of another config: refused in one line naming the key
    assert train_cli(lower, run) == 2
    line = one_error_line(capsys)
    assert "train.lr" in line and "--force" in line
    assert list_checkpoints(run / "checkpoints") == kept  # nothing touched
    # as the divergence message says: a new --out, or this folder with --force (old files kept, renamed)
    assert train_cli(lower, run, "--force") == 0
    assert (run / "model.safetensors").is_file()
    set_aside = [p for p in run.iterdir() if p.name.startswith("checkpoints.previous-")]
    assert len(set_aside) == 1 and [p.name for p in list_checkpoints(set_aside[0])] == [p.name for p in kept]


# ----------------------------------------------------------------------------- 2. a closed stdout


def test_output_into_a_closed_pipe_ends_quietly_with_141(tmp_path):
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written: EPIPE on the first write, every time
    try:
        done = subprocess.run(
            [sys.executable, "-m", "transmem", "zoo", "list", "builtin"], stdout=write_end, stderr=subprocess.PIPE, timeout=120
        )
    finally:
        os.close(write_end)
    assert done.stderr.decode() == "" and done.returncode == 141


def test_zoo_list_piped_into_head_prints_its_first_line_and_no_error():
    command = f"{shlex.quote(sys.executable)} -m transmem zoo list builtin | head -1; exit ${{PIPESTATUS[0]}}"
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120)
    assert done.stdout.splitlines() == [done.stdout.splitlines()[0]] and done.stdout.startswith("name")
    assert done.stderr == ""
    assert done.returncode in (0, 141)  # 0 if head read everything before it exited (a race), else SIGPIPE's status


# ----------------------------------------------------------------------------- 3. an ambiguous init_from


def test_an_init_from_name_shared_by_two_sources_is_refused_naming_both(tmp_path, capsys, sources):
    for folder in ("A", "B"):
        shutil.copytree(sources / "hidden8", tmp_path / folder / "src")
    paths = [str(tmp_path / "A" / "src"), str(tmp_path / "B" / "src")]

    def config(init_from: str) -> Path:
        transfer = {"method": "finetune", "sources": paths, "init_from": init_from}
        return write_tiny_config(tmp_path / "cfg.toml", transfer=transfer, train={"iterations": 1, "device": "cpu"})

    assert train_cli(config("src"), tmp_path / "run") == 2
    line = one_error_line(capsys)
    assert "transfer.init_from: 'src' names 2 sources" in line and paths[0] in line and paths[1] in line
    assert not (tmp_path / "run").exists()  # refused before anything is written
    assert train_cli(config(paths[1]), tmp_path / "run") == 0  # a path names one of them
    assert json.loads((tmp_path / "run" / "init_source.json").read_text())["source"] == paths[1]
