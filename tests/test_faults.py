"""Faults: a diverging run, a closed stdout, an ambiguous source name, a full disk. Each ends
with one line ``transmem: error: ...`` on stderr and its exit status, and loses nothing."""

from __future__ import annotations

import errno
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.processes import assert_same_weights, finish, start, train_command
from tests.support import TINY_BENCHMARK, csv_rows, kill_raw, write_config, write_tiny_config
from transmem.cli import main
from transmem.config import tomllib
from transmem.errors import DiskFullError
from transmem.storage.checkpoints import latest_good_checkpoint, list_checkpoints, load_checkpoint
from transmem.storage.files import TEMPORARY_MARK, allocate_file, atomic_write_bytes
from transmem.storage.model_file import load_model


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
    assert "--set train.lr=... (now 1e+40" in line and "to start it again" in line
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


@pytest.mark.cuda
def test_a_graphed_step_with_an_infinite_gradient_norm_stops_before_its_checkpoint(tmp_path, monkeypatch):
    import transmem.training.cuda_graph as cuda_graph
    from tests.support import tiny_config
    from transmem.errors import TrainingDiverged
    from transmem.run.lifecycle import train

    original = cuda_graph.step_loss

    def poisoned(*args, **kwargs):  # the captured step (after the eager warm-up) has infinite gradients
        loss, terms = original(*args, **kwargs)
        return InfiniteGradient.apply(loss), terms

    monkeypatch.setattr(cuda_graph, "step_loss", poisoned)
    config = tiny_config(train={"device": "cuda", "cuda_graph": True, "iterations": 8, "checkpoint_every": 1, "log_every": 1})
    with pytest.raises(TrainingDiverged, match=f"iteration {cuda_graph.WARMUP_STEPS + 1}: gradient norm became"):
        train(config, tmp_path / "run", progress=False)
    path, saved = latest_good_checkpoint(tmp_path / "run" / "checkpoints")
    assert saved["iteration"] == cuda_graph.WARMUP_STEPS
    assert all(torch.isfinite(value).all() for value in saved["model"].values())


def nan_batch_at(patch, n: int) -> None:
    """Make the ``n``-th training batch drawn NaN (through ``patch``, a monkeypatch): the run
    diverges at that iteration, its first ``n - 1`` are fine."""
    import transmem.training.loop as loop

    calls, original = [], loop._load_batch

    def poisoned(dataset, indices, device):
        calls.append(1)
        frames = original(dataset, indices, device)
        return frames * float("nan") if len(calls) == n else frames

    patch.setattr(loop, "_load_batch", poisoned)


def retune_config(tmp_path: Path, lr: float, **train) -> Path:
    train = {"iterations": 8, "lr": lr, "log_every": 1, "checkpoint_every": 1, "device": "cpu", "deterministic": True, **train}
    return write_tiny_config(tmp_path / f"retune-lr{lr:g}.toml", data={"val_size": 2, "test_size": 2}, train=train)


def events(run: Path) -> list[str]:
    return [event["event"] for event in json.loads((run / "diverged.json").read_text())["events"]]


def test_a_diverged_run_resumes_from_its_kept_checkpoint_with_a_lower_lr(tmp_path, capsys, monkeypatch):
    run, high, low = tmp_path / "run", 1e-2, 1e-3
    with monkeypatch.context() as patch:
        nan_batch_at(patch, 5)
        assert train_cli(retune_config(tmp_path, high), run) == 3
    line = one_error_line(capsys)
    assert "iteration 5: loss became nan" in line and "iteration 4)" in line
    assert (
        "rerun the same command with a lower --set train.lr=... (now 0.01" in line
        and "to resume from the kept checkpoint" in line
    )
    record = json.loads((run / "diverged.json").read_text())["events"]
    assert [(e["event"], e["iteration"], e["lr"], e["kept_checkpoint"]) for e in record] == [("diverged", 5, high, 4)]

    # the same command with a lower lr resumes from the kept checkpoint (iteration 4) and finishes
    assert train_cli(retune_config(tmp_path, high), run, "--set", f"train.lr={low}") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{run}: resuming the diverged run from iteration 4 with train.lr 0.001 (was 0.01)"
    rows = csv_rows(run / "train.csv")
    assert [row["iteration"] for row in rows] == [str(i) for i in range(1, 9)]
    assert [float(row["lr"]) for row in rows] == [high] * 4 + [low] * 4
    assert tomllib.loads((run / "config.toml").read_text())["train"]["lr"] == low
    assert events(run) == ["diverged", "resumed"]
    assert json.loads((run / "diverged.json").read_text())["events"][1]["iteration"] == 4

    # the same weights as one run that trains 4 iterations with the high lr, then 4 with the low one
    import transmem.training.loop as loop

    original = loop.draw_batch

    def switching(state, iteration):
        for group in state.optimizer.param_groups:
            group["lr"] = high if iteration < 4 else low
        return original(state, iteration)

    with monkeypatch.context() as patch:
        patch.setattr(loop, "draw_batch", switching)
        assert train_cli(retune_config(tmp_path, high), tmp_path / "straight") == 0
    straight, resumed = (load_model(folder).model.state_dict() for folder in (tmp_path / "straight", run))
    assert all(torch.equal(straight[name], resumed[name]) for name in straight)


def test_a_diverged_run_resumes_with_another_lr_and_grad_clip_on_its_schedule(tmp_path, capsys, monkeypatch):
    run, cosine = tmp_path / "run", {"lr_schedule": "cosine"}
    with monkeypatch.context() as patch:
        nan_batch_at(patch, 5)
        assert train_cli(retune_config(tmp_path, 1e-2, **cosine), run) == 3
    capsys.readouterr()
    changes = ["--set", "train.lr=1e-3", "--set", "train.grad_clip=0.5"]
    assert train_cli(retune_config(tmp_path, 1e-2, **cosine), run, *changes) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith("iteration 4 with train.lr 0.001 (was 0.01), train.grad_clip 0.5")
    saved = tomllib.loads((run / "config.toml").read_text())["train"]
    assert (saved["lr"], saved["grad_clip"]) == (1e-3, 0.5)
    # the schedule goes on from where it was, scaled to the new lr: as a run of lr 1e-3 throughout
    assert train_cli(retune_config(tmp_path, 1e-3, **cosine), tmp_path / "low") == 0
    resumed, low = ([float(row["lr"]) for row in csv_rows(folder / "train.csv")][4:] for folder in (run, tmp_path / "low"))
    assert resumed == pytest.approx(low, rel=1e-5)
    _, last = latest_good_checkpoint(run / "checkpoints")  # the schedule's state after the resume
    assert last["scheduler"]["base_lrs"] == [1e-3]


def test_a_resume_after_divergence_killed_before_its_next_checkpoint_resumes_again(tmp_path, capsys, monkeypatch):
    import transmem.training.loop as loop
    from transmem.config import load_config
    from transmem.run.lifecycle import train

    run, every4 = tmp_path / "run", {"checkpoint_every": 4}
    with monkeypatch.context() as patch:
        nan_batch_at(patch, 6)
        assert train_cli(retune_config(tmp_path, 1e-2, **every4), run) == 3  # keeps ckpt 4
    capsys.readouterr()
    original = loop.draw_batch

    def interrupted(state, iteration):  # Ctrl-C during iteration 6, before checkpoint 8
        if iteration == 5:
            raise KeyboardInterrupt
        return original(state, iteration)

    lower = ("--set", "train.lr=1e-3")
    with monkeypatch.context() as patch:
        patch.setattr(loop, "draw_batch", interrupted)
        with pytest.raises(KeyboardInterrupt):  # in-process: the CLI would end pytest's process (exit 130)
            train(load_config(retune_config(tmp_path, 1e-2, **every4), ["train.lr=1e-3"]), run, progress=False)
    # its last attempt was interrupted, not diverged: yet another lr is refused
    assert train_cli(retune_config(tmp_path, 1e-2, **every4), run, "--set", "train.lr=5e-4") == 2
    assert "differs in train.lr" in one_error_line(capsys)
    # checkpoint 4 still holds lr 1e-2; config.toml and the recorded resume 1e-3: it resumes again
    assert train_cli(retune_config(tmp_path, 1e-2, **every4), run, *lower) == 0
    assert [float(row["lr"]) for row in csv_rows(run / "train.csv")] == [1e-2] * 4 + [1e-3] * 4
    assert events(run) == ["diverged", "resumed"]


def test_after_a_divergence_any_other_change_is_refused_in_one_line_and_force_starts_over(tmp_path, capsys):
    run = tmp_path / "run"
    assert train_cli(diverging_config(tmp_path, 1e20), run) == 3
    capsys.readouterr()
    kept = list_checkpoints(run / "checkpoints")
    saved = (run / "config.toml").read_text()
    assert kept
    lower = diverging_config(tmp_path, 3e-3)
    assert train_cli(lower, run, "--set", "model.kernel=5") == 2
    line = one_error_line(capsys)
    assert (
        "differs in model.kernel, train.lr" in line and "after a divergence only train.lr and train.grad_clip may change" in line
    )
    assert list_checkpoints(run / "checkpoints") == kept and (run / "config.toml").read_text() == saved  # nothing touched
    assert events(run) == ["diverged"]
    # --force starts over, the old files kept renamed (the diverged run's record too)
    assert train_cli(lower, run, "--force") == 0
    assert (run / "model.safetensors").is_file() and not (run / "diverged.json").exists()
    set_aside = [p for p in run.iterdir() if p.name.startswith("checkpoints.previous-")]
    assert len(set_aside) == 1 and [p.name for p in list_checkpoints(set_aside[0])] == [p.name for p in kept]
    assert [p.name.startswith("diverged.json.previous-") for p in run.iterdir()].count(True) == 1


def test_a_diverged_run_rerun_with_the_same_lr_resumes_and_may_diverge_again(tmp_path, capsys):
    run, config = tmp_path / "run", diverging_config(tmp_path, 1e20)
    assert train_cli(config, run) == 3  # iteration 1's huge step leaves huge (finite) weights in checkpoint 1
    capsys.readouterr()
    assert train_cli(config, run) == 3
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [f"{run}: resuming the diverged run from iteration 1 with train.lr 1e+20"]
    assert "training diverged at iteration 2" in captured.err
    assert events(run) == ["diverged", "resumed", "diverged"]


def test_a_run_that_diverged_before_its_first_checkpoint_starts_again_with_a_lower_lr(tmp_path, capsys):
    run = tmp_path / "run"
    assert train_cli(diverging_config(tmp_path, 1e40), run) == 3
    capsys.readouterr()
    assert train_cli(diverging_config(tmp_path, 1e40), run, "--set", "train.lr=3e-3") == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert (
        line == f"{run}: the diverged run kept no checkpoint; starting it again from iteration 0 with train.lr 0.003 (was 1e+40)"
    )
    assert [row["iteration"] for row in csv_rows(run / "train.csv")] == [str(i) for i in range(1, 9)]
    assert events(run) == ["diverged", "resumed"]


def test_a_run_that_did_not_diverge_still_refuses_another_lr(tmp_path, capsys):
    from transmem.config import load_config
    from transmem.run.lifecycle import train

    config, run = retune_config(tmp_path, 3e-3), tmp_path / "run"
    train(load_config(config), run, progress=False, stop_at=2)  # paused, as a killed run
    assert train_cli(config, run, "--set", "train.lr=1e-3") == 2
    line = one_error_line(capsys)
    assert "differs in train.lr" in line and "after a divergence" not in line
    assert not (run / "diverged.json").exists()


def test_the_kept_checkpoint_continues_with_another_lr_as_a_finetune_source(tmp_path, capsys, monkeypatch):
    import transmem.training.loop as loop

    calls, original = [], loop._load_batch

    def poisoned(dataset, indices, device):  # the 5th batch is NaN: divergence at iteration 5
        calls.append(1)
        frames = original(dataset, indices, device)
        return frames * float("nan") if len(calls) == 5 else frames

    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(loop, "_load_batch", poisoned)
        assert train_cli(diverging_config(tmp_path, 3e-3), run) == 3
    line = one_error_line(capsys)
    kept = run / "checkpoints" / "ckpt-00000004.pt"
    assert "iteration 5: loss became nan" in line and f"last good checkpoint is kept ({kept}, iteration 4)" in line
    # the documented way on with another lr: a new run that starts from the kept weights
    lower = diverging_config(tmp_path, 1e-3)
    sources = f'transfer.sources=["{kept}"]'
    assert train_cli(lower, tmp_path / "on", "--set", "transfer.method=finetune", "--set", sources) == 0
    assert json.loads((tmp_path / "on" / "init_source.json").read_text())["source"] == str(kept)


def test_a_run_diverging_inside_a_parallel_benchmark_exits_3_with_the_benchmarks_remedy(tmp_path, capsys):
    """A benchmark's --set changes every run, so "rerun the same command with a lower --set
    train.lr" would be refused by its finished runs: the advice is a new --out. The error
    crosses the worker process (--jobs 2) and still names the run and the iteration."""
    out = tmp_path / "bench"
    settings = [*TINY_BENCHMARK, "train.iterations=8", "train.lr=1e20"]
    command = ["benchmark", "digits", "--out", str(out), "--methods", "scratch", "--seeds", "0", "--jobs", "2"]
    assert main([*command, *[word for item in settings for word in ("--set", item)]]) == 3
    line = one_error_line(capsys)
    assert f"{out / 'runs' / 'scratch' / 'seed0'}: training diverged at iteration " in line
    assert "in a new --out" in line and "rerun the same command" not in line
    assert not (out / "results.md").exists() and (out / "runs" / "scratch" / "seed0" / "diverged.json").exists()


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


# ----------------------------------------------------------------------------- 4. a full disk


def no_space(path="") -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), *([path] if path else []))


def fail_fsync_of(monkeypatch, name: str) -> list[str]:
    """Make the first fsync of a file whose name contains ``name`` raise ENOSPC (as a full disk
    does, at write or fsync); returns the list of the files it failed."""
    real_fsync, failed = os.fsync, []

    def fsync(fd):
        target = os.readlink(f"/proc/self/fd/{fd}")
        if name in Path(target).name and not failed:
            failed.append(target)
            raise no_space()
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return failed


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if TEMPORARY_MARK in p.name]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads /proc/self/fd")
def test_a_full_disk_in_an_atomic_write_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "notes.json"
    path.write_text("old")
    fail_fsync_of(monkeypatch, "notes.json")
    with pytest.raises(DiskFullError) as caught:
        atomic_write_bytes(path, b"x" * 5000)
    message = str(caught.value)
    assert message.startswith(f"{path}: no space left on device: writing it needs 5000 bytes (5.0 kB)") and "free" in message
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(path)
    assert path.read_text() == "old" and not temporaries(tmp_path)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads /proc/self/fd")
@pytest.mark.parametrize("failing", ["ckpt-00000004.pt", "manifest.json", "model.safetensors"])
def test_a_full_disk_while_training_exits_2_in_one_line_and_the_rerun_loses_nothing(tmp_path, capsys, monkeypatch, failing):
    raw = kill_raw(iterations=6, checkpoint_every=2, keep=5)
    config = write_config(tmp_path / "cfg.toml", raw)
    assert train_cli(config, tmp_path / "straight") == 0
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        failed = fail_fsync_of(patch, failing)
        assert train_cli(config, run) == 2
    line = one_error_line(capsys)
    assert failed and f"{run}" in line and "no space left on device" in line and "bytes" in line
    assert failing in line and not temporaries(run)
    if failing != "model.safetensors":
        assert not (run / "model.safetensors").exists()
    # every checkpoint left is whole (checksums match) and the rerun resumes to the same weights
    assert all(load_checkpoint(p) for p in list_checkpoints(run / "checkpoints"))
    assert train_cli(config, run) == 0
    straight, resumed = (load_model(folder).model.state_dict() for folder in (tmp_path / "straight", run))
    assert all(torch.equal(straight[name], resumed[name]) for name in straight)
    logged = [row["iteration"] for row in csv_rows(run / "train.csv")]
    assert logged == [str(i) for i in range(1, 7)]


def test_a_full_disk_while_appending_to_train_csv_leaves_no_torn_row(tmp_path, monkeypatch):
    from transmem.run.records import CsvLog

    log = CsvLog(tmp_path / "train.csv", ["iteration", "loss"], 0)
    log.write({"iteration": 1, "loss": 0.5})
    before = (tmp_path / "train.csv").read_bytes()
    real_open = open

    class HalfWrite:  # writes 3 bytes of the row, then finds the disk full
        def __init__(self, handle):
            self.handle, self.calls = handle, 0

        def __getattr__(self, name):
            return getattr(self.handle, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, data):
            self.calls += 1
            if self.calls > 1:
                raise no_space()
            return self.handle.write(bytes(data[:3]))

    monkeypatch.setattr("builtins.open", lambda *args, **kwargs: HalfWrite(real_open(*args, **kwargs)))
    with pytest.raises(DiskFullError, match="train.csv: no space left on device"):
        log.write({"iteration": 2, "loss": 0.25})
    monkeypatch.undo()
    assert (tmp_path / "train.csv").read_bytes() == before


def bank_config(tmp_path: Path, zoo, **transfer) -> Path:
    transfer = {"method": "tmu", "sources": [str(zoo["digits1"])], "layers": [0], "bank": "cached", **transfer}
    data = {"train_size": 8, "options": {"num_digits": 3}}
    return write_tiny_config(tmp_path / "tmu.toml", data=data, transfer=transfer, train={"iterations": 2, "device": "cpu"})


def test_a_memory_bank_that_finds_the_disk_full_exits_2_and_is_rebuilt_by_the_rerun(tmp_path, capsys, monkeypatch, zoo):
    config, run = bank_config(tmp_path, zoo), tmp_path / "run"
    calls = []

    def full(fd, offset, length):
        calls.append(length)
        raise no_space()

    with monkeypatch.context() as patch:
        patch.setattr(os, "posix_fallocate", full, raising=False)
        assert train_cli(config, run) == 2
    line = one_error_line(capsys)
    assert calls and "no space left on device: the cached memory bank" in line and f"{run / 'memory_bank'}" in line
    (bank,) = (run / "memory_bank").iterdir()
    assert not list(bank.glob("*.f16"))  # the unallocated files are removed; meta.json says incomplete
    assert json.loads((bank / "meta.json").read_text())["complete"] is False
    assert train_cli(config, run) == 0
    assert json.loads((bank / "meta.json").read_text())["complete"] is True


def test_allocate_file_writes_zeros_where_posix_fallocate_is_unsupported(tmp_path, monkeypatch):
    def unsupported(fd, offset, length):
        raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))

    monkeypatch.setattr(os, "posix_fallocate", unsupported, raising=False)
    allocate_file(tmp_path / "bank.f16", 3 << 20 | 5)
    assert (tmp_path / "bank.f16").read_bytes() == bytes(3 << 20 | 5)


@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB tmpfs (needs root and ``mount``; skipped elsewhere), unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_a_real_full_disk_gives_one_line_for_the_bank_and_the_checkpoint(tmp_path, small_disk, zoo):
    # in a child process: a memory-mapped page on a full disk would kill it with SIGBUS
    def transmem_train(config: Path, out: Path) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "transmem", "train", str(config), "--out", str(out), "--no-progress"]
        return subprocess.run(command, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})

    # a bank of 64 sequences (160 KB) in transfer.cache_dir on the small disk
    config = bank_config(tmp_path, zoo, cache_dir=str(small_disk))
    raw = tomllib.loads(config.read_text())
    raw["data"]["train_size"] = 64
    write_config(config, raw)
    done = transmem_train(config, tmp_path / "run")
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "no space left on device: the cached memory bank" in done.stderr
    assert not list(small_disk.rglob("*.f16")) and not temporaries(small_disk)

    # a run folder on the small disk: its first checkpoint (about 90 KB) does not fit
    done = transmem_train(write_tiny_config(tmp_path / "plain.toml", train={"device": "cpu"}), small_disk / "run")
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "no space left on device" in done.stderr and "ckpt-" in done.stderr
    assert not temporaries(small_disk) and not list_checkpoints(small_disk / "run" / "checkpoints")


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads /proc/self/fd")
def test_a_full_disk_while_predicting_leaves_no_torn_prediction(tmp_path, capsys, monkeypatch, finished_run):
    import numpy as np

    _, run = finished_run
    frames = tmp_path / "frames.npy"
    np.save(frames, np.random.default_rng(0).integers(0, 255, (6, 16, 16), dtype=np.uint8))
    failed = fail_fsync_of(monkeypatch, "prediction.npy")
    assert main(["predict", str(run), "--input", str(frames), "--out", str(tmp_path / "out")]) == 2
    line = one_error_line(capsys)
    assert failed and f"{tmp_path / 'out' / 'prediction.npy'}: no space left on device: writing it needs" in line
    assert not (tmp_path / "out" / "prediction.npy").exists() and not temporaries(tmp_path / "out")


def test_any_other_write_that_finds_the_disk_full_is_one_line_exit_2(capsys, monkeypatch):
    import transmem.cli as cli

    def full(args):
        raise no_space()  # e.g. a lock file or a folder being made: an OSError naming no file

    monkeypatch.setitem(cli.COMMANDS, "data", full)
    assert main(["data", "list"]) == 2
    assert one_error_line(capsys) == (
        "transmem: error: a write: no space left on device; free some space and rerun the same command "
        "(a run resumes from its last checkpoint)"
    )


@pytest.mark.parametrize(
    "kill_at",
    [
        "before:rank.json:1",  # the ranking computed, not yet stored
        "before:meta.json:2",  # the memory bank written, not yet marked complete
        "after:meta.json:2",  # the bank complete, the target not yet started
    ],
)
def test_kill_9_inside_the_ranking_and_bank_writers_then_rerun_gives_the_uninterrupted_run(tmp_path, zoo, kill_at):
    """Every writer a TMU target from the best source uses before it trains: kill -9 in its
    critical section, rerun, and the run is the one trained without interruption."""
    sources = [str(zoo["digits1"]), str(zoo["digits2"])]
    config = bank_config(tmp_path, zoo, sources=sources, init_from="best", rank_probe=1)
    reference, run = tmp_path / "reference", tmp_path / "run"
    assert finish(start(train_command(config, reference)))[0] == 0
    code, err = finish(start(train_command(config, run), kill_at=kill_at))
    assert code == -signal.SIGKILL, err
    assert finish(start(train_command(config, run)))[0] == 0
    assert_same_weights(run / "model.safetensors", reference / "model.safetensors")
    assert temporaries(run) == []
