"""Reliability (issue 7): kill -9 and resume, refused bad input, config parser properties.

- ``transmem train`` killed with SIGKILL at many moments (including inside a checkpoint
  write, found either by polling for the temporary file or by a deterministic fault
  injected into ``os.replace``/``Path.unlink`` of the child process) and rerun until it
  finishes ends with weights identical to an uninterrupted run, logs each iteration once
  and leaves no temporary file.
- Bad input on the command line: one line ``transmem: error: ...``, exit code 2, and the
  folders involved are byte-for-byte unchanged.
- Property-based tests of the config parser (the data loaders' validation has its own in
  tests/test_data.py).
- The soak test (marker ``soak``, opt-in: ``pytest -m soak``) repeats kill/resume cycles.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import importlib.util
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import typing
from pathlib import Path

import numpy as np
import pytest
import tomli_w
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

import transmem.training.loop as loop_module
from tests.conftest import tiny_raw
from transmem.cli import main
from transmem.config import MAX_SEED, ConfigError, RunConfig, config_from_dict, load_config
from transmem.training.checkpoint import MANIFEST, latest_good_checkpoint, list_checkpoints

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python < 3.11
    import tomli as tomllib

# Fixes that live in training/loop.py (refuse before writing; logs rewritten without
# duplicates) are proposed separately; until they land these tests are expected to fail.
LOOP_CHECKS_BEFORE_WRITING = hasattr(loop_module, "check_run_dir")
LOOP_DEDUPLICATES_VAL_LOG = hasattr(loop_module, "_read_rows")
needs_loop_check_first = pytest.mark.xfail(
    not LOOP_CHECKS_BEFORE_WRITING, strict=True, reason="loop.train writes config.toml before loading the sources"
)
needs_loop_val_dedupe = pytest.mark.xfail(
    not LOOP_DEDUPLICATES_VAL_LOG, strict=True, reason="loop._validate appends val.csv again after a kill"
)

# ---------------------------------------------------------------- helpers

KILL_RUNNER = textwrap.dedent(
    """
    # `python -m transmem ...` that SIGKILLs itself at a chosen moment: KILL_AT=when:prefix:n
    # kills at the n-th os.replace (when = before | after) or Path.unlink (when = unlink)
    # whose target file name starts with prefix. STEP_PAUSE=s sleeps s seconds after every
    # optimizer step, so that a kill sent from outside lands within a few iterations of
    # when it was meant to, however loaded the machine is.
    import os, signal, sys, time
    from pathlib import Path

    if os.environ.get("STEP_PAUSE"):
        from torch.optim.optimizer import register_optimizer_step_post_hook

        pause = float(os.environ["STEP_PAUSE"])
        register_optimizer_step_post_hook(lambda *_: time.sleep(pause))
    when, prefix, n = os.environ.get("KILL_AT", "none::0").split(":")
    n, seen = int(n), [0]
    real_replace, real_unlink = os.replace, Path.unlink

    def hit(name):
        if name.startswith(prefix):
            seen[0] += 1
            if seen[0] == n:
                os.kill(os.getpid(), signal.SIGKILL)

    def replace(src, dst, *args, **kwargs):
        if when == "before":
            hit(Path(dst).name)
        result = real_replace(src, dst, *args, **kwargs)
        if when == "after":
            hit(Path(dst).name)
        return result

    def unlink(self, *args, **kwargs):
        result = real_unlink(self, *args, **kwargs)
        if when == "unlink":
            hit(self.name)
        return result

    os.replace, Path.unlink = replace, unlink
    from transmem.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)

RESUMED = re.compile(r"resuming .* from (ckpt-\d+\.pt) \(iteration (\d+)\)")
TEMPORARY = re.compile(r"^\..*\.transmem-tmp-\d+$")


def kill_raw(iterations: int = 30, checkpoint_every: int = 2, keep: int = 2) -> dict:
    """A tiny deterministic run: 16x16 frames, T = 6, hidden [8], batch 2, cosine LR."""
    return tiny_raw(
        data={"val_size": 2, "test_size": 2},
        train={
            "iterations": iterations,
            "log_every": 1,
            "checkpoint_every": checkpoint_every,
            "keep_checkpoints": keep,
            "device": "cpu",
            "deterministic": True,
            "lr_schedule": "cosine",
            "time_reversal": True,
        },
    )


def write_config(path: Path, raw: dict) -> Path:
    path.write_text(tomli_w.dumps(raw))
    return path


def train_command(config: Path, run: Path) -> list[str]:
    # -v only makes the resume point visible on stderr ("resuming ... (iteration N)").
    return [sys.executable, "-m", "transmem", "-v", "train", str(config), "--out", str(run), "--no-progress"]


def start(command: list[str], kill_at: str | None = None, step_pause: float = 0.0) -> subprocess.Popen:
    # One intra-op thread: on a small shared machine OpenMP spinning makes runs 3x slower;
    # every run of a comparison (reference included) uses the same setting.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if kill_at is not None or step_pause:
        if kill_at is not None:
            env["KILL_AT"] = kill_at
        env["STEP_PAUSE"] = str(step_pause)
        command = [command[0], "-c", KILL_RUNNER, *command[3:]]  # instead of "-m transmem"
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen, timeout: float = 180) -> tuple[int, str]:
    _, err = process.communicate(timeout=timeout)
    return process.returncode, err


def newest_checkpoint(folder: Path) -> Path | None:
    names = list_checkpoints(folder)
    return names[-1] if names else None


def wait_then_kill(process: subprocess.Popen, ready, delay: float = 0.0, timeout: float = 120, sig=signal.SIGKILL) -> bool:
    """Poll ``ready()``, then send ``sig`` (SIGKILL) after ``delay`` s. False if it ended first."""
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        if ready():
            if delay:
                time.sleep(delay)
            if process.poll() is None:
                process.send_signal(sig)
                return True
            return False
        time.sleep(getattr(ready, "interval", 0.002))
    if process.poll() is None:  # pragma: no cover - a hung child
        process.kill()
        raise AssertionError("the training process neither progressed nor finished")
    return False


def temporaries(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if TEMPORARY.match(p.name))


def temporary_checkpoint_after(folder: Path, iteration: int):
    pattern = re.compile(r"^\.ckpt-(\d+)\.pt\.transmem-tmp-\d+$")

    def ready() -> bool:
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            return False
        return any((m := pattern.match(n)) and int(m.group(1)) > iteration for n in names)

    ready.interval = 0.0  # the file lives for a few milliseconds: poll flat out
    return ready


def checkpoint_after(folder: Path, iteration: int):
    def ready() -> bool:
        newest = newest_checkpoint(folder)
        return newest is not None and int(newest.stem.split("-")[1]) > iteration

    return ready


def good_iteration(run: Path) -> int:
    found = latest_good_checkpoint(run / "checkpoints")
    return int(found[1]["iteration"]) if found else 0


def csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def assert_same_weights(a: Path, b: Path) -> None:
    first, second = load_file(str(a)), load_file(str(b))
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


def assert_clean_finished_run(run: Path, reference: Path, keep: int) -> None:
    """Same weights and losses as ``reference``; no temporaries; rotation and manifest intact."""
    assert_same_weights(run / "model.safetensors", reference / "model.safetensors")
    assert temporaries(run) == []
    rows, expected = csv_rows(run / "train.csv"), csv_rows(reference / "train.csv")
    assert [int(r["iteration"]) for r in rows] == [int(r["iteration"]) for r in expected]  # each once, in order
    timing = "seconds_per_iteration"
    assert [{k: v for k, v in r.items() if k != timing} for r in rows] == [
        {k: v for k, v in r.items() if k != timing} for r in expected
    ]
    checkpoints = [p.name for p in list_checkpoints(run / "checkpoints")]
    assert len(checkpoints) == keep, checkpoints  # nothing left behind by a kill mid-rotation
    assert sorted(json.loads((run / "checkpoints" / MANIFEST).read_text())) == checkpoints


# ---------------------------------------------------------------- kill -9 and resume


@pytest.mark.timeout(900)  # about 2 min on 2 idle cores; more when trainings share the machine
def test_kill_9_at_many_moments_then_rerun_gives_identical_weights(tmp_path):
    iterations, keep = 40, 2
    config = write_config(tmp_path / "cfg.toml", kill_raw(iterations, checkpoint_every=2, keep=keep))
    reference, run = tmp_path / "reference", tmp_path / "run"
    straight = start(train_command(config, reference))
    command = train_command(config, run)
    checkpoints = run / "checkpoints"
    rng = random.Random(7)
    attempts = [
        ("external: as soon as the first checkpoint exists", None, lambda: checkpoint_after(checkpoints, 0), 0.0),
        ("external: while a checkpoint is being written", None, lambda: temporary_checkpoint_after(checkpoints, good_iteration(run) + 2), 0.0),
        ("external: at a random moment after a new checkpoint", None, lambda: checkpoint_after(checkpoints, good_iteration(run)), rng.uniform(0.0, 0.15)),
        ("checkpoint written to its temporary file, not yet renamed", "before:ckpt-:2", None, 0.0),
        ("checkpoint renamed, manifest not yet updated", "after:ckpt-:2", None, 0.0),
        ("old checkpoint rotated away, manifest not yet updated", "unlink:ckpt-:1", None, 0.0),
        ("external: at a random moment after a new checkpoint", None, lambda: checkpoint_after(checkpoints, good_iteration(run)), rng.uniform(0.0, 0.15)),
        ("Ctrl-C (SIGINT) after a new checkpoint", None, lambda: checkpoint_after(checkpoints, good_iteration(run)), rng.uniform(0.0, 0.15)),
        ("final model written to its temporary file, not yet renamed", "before:model.safetensors:1", None, 0.0),
    ]
    kills = []
    for what, kill_at, ready, delay in attempts:
        saved = good_iteration(run) if run.exists() else 0
        # Kills sent from outside are paced (an iteration lasts at least 20 ms): a late poll on
        # a loaded machine must not let the tiny run finish before the injected kills below.
        process = start(command, kill_at, step_pause=0.02 if ready is not None else 0.0)
        interrupt = what.startswith("Ctrl-C")
        if ready is not None:
            wait_then_kill(process, ready(), delay, sig=signal.SIGINT if interrupt else signal.SIGKILL)
        code, err = finish(process)
        assert code in ((0, 130) if interrupt else (0, -signal.SIGKILL)), f"{what}: exit {code}\n{err}"
        assert "Traceback" not in err, err
        if code == 130:
            assert err.strip().splitlines()[-1] == "transmem: interrupted; rerun the same command to resume from the last checkpoint"
            assert temporaries(run) == [], "an interrupted write left its temporary file"
        resumed = RESUMED.search(err)
        # No loss of progress: a rerun starts from the newest checkpoint that was complete.
        assert (int(resumed.group(2)) if resumed else 0) == saved, f"{what}: resumed with {resumed and resumed.group(0)}, had {saved}"
        if kill_at is not None:
            assert code == -signal.SIGKILL, f"{what}: the injected kill did not happen\n{err}"
        if kill_at is not None and kill_at.startswith("before:"):
            assert temporaries(run), f"{what}: expected a temporary file to be left behind"
        kills.append((what, code, good_iteration(run), temporaries(run)))
    assert sum(code == -signal.SIGKILL for _, code, _, _ in kills) >= 6, kills

    code, err = finish(start(command))
    assert code == 0, err
    code, err = finish(straight)
    assert code == 0, err
    assert_clean_finished_run(run, reference, keep)


@needs_loop_val_dedupe
def test_kill_after_final_validation_logs_it_once(tmp_path):
    config = write_config(tmp_path / "cfg.toml", kill_raw(iterations=4, checkpoint_every=2))
    run = tmp_path / "run"
    code, _ = finish(start(train_command(config, run), "before:model.safetensors:1"))
    assert code == -signal.SIGKILL and len(csv_rows(run / "val.csv")) == 1
    code, err = finish(start(train_command(config, run)))
    assert code == 0, err
    assert [r["iteration"] for r in csv_rows(run / "val.csv")] == ["4"]


# ---------------------------------------------------------------- bad input on the command line


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` with its content hash (folders: the sorted names inside)."""
    out = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_dir():
            out[key] = "dir:" + ",".join(sorted(p.name for p in path.iterdir()))
        else:
            out[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def refused(argv: list[str], capsys, root: Path, *needles: str) -> str:
    """Run ``transmem argv``: exit 2, one error line containing ``needles``, ``root`` unchanged."""
    before = snapshot(root)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("transmem: error: "), err
    assert "\n" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)
    assert snapshot(root) == before
    return err


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, Path]:
    """(config.toml, run folder) of a finished tiny run."""
    root = tmp_path_factory.mktemp("finished")
    config = write_config(root / "cfg.toml", tiny_raw(train={"iterations": 2, "checkpoint_every": 1, "device": "cpu"}))
    assert main(["train", str(config), "--out", str(root / "run"), "--no-progress"]) == 0
    return config, root / "run"


@pytest.fixture
def workspace(tmp_path, finished) -> tuple[Path, Path]:
    """A private copy of the finished run (with its config) inside ``tmp_path``."""
    config, run = finished
    shutil.copy2(config, tmp_path / "cfg.toml")
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "cfg.toml", tmp_path / "run"


BAD_CONFIGS = [
    ("mistyped key", {"train": {"lerning_rate": 0.1}}, "train.lerning_rate: unknown key"),
    ("mistyped section", {"trian": {"lr": 0.1}}, "trian: unknown key"),
    ("mistyped option", {"data": {"options": {"num_digit": 2}}}, "data.options.num_digit: unknown key"),
    ("input_len == total_len", {"data": {"input_len": 6, "total_len": 6}}, "data.input_len: must be smaller than data.total_len"),
    ("input_len > total_len", {"data": {"input_len": 7}}, "data.input_len: must be smaller than data.total_len (7 >= 6)"),
    ("frame size not divisible by patch", {"data": {"frame_size": 18}}, "model.patch: frame size 18 is not divisible by patch 4"),
    ("empty hidden list", {"model": {"hidden": []}}, "model.hidden: needs at least one layer"),
    ("wrong type", {"model": {"hidden": "8"}}, "model.hidden: expected a list"),
]


@pytest.mark.parametrize("what, change, message", BAD_CONFIGS, ids=[b[0] for b in BAD_CONFIGS])
@pytest.mark.parametrize("target", ["new folder", "finished run"])
def test_bad_config_is_one_line_exit_2_and_touches_nothing(workspace, capsys, what, change, message, target):
    _, run = workspace
    raw = tiny_raw(train={"iterations": 2, "checkpoint_every": 1, "device": "cpu"})
    for section, values in change.items():
        raw.setdefault(section, {})
        for key, value in values.items():
            if isinstance(value, dict):
                raw[section].setdefault(key, {}).update(value)
            else:
                raw[section][key] = value
    bad = write_config(run.parent / "bad.toml", raw)
    out = run if target == "finished run" else run.parent / "new"
    refused(["train", str(bad), "--out", str(out), "--no-progress"], capsys, run.parent, message)
    assert not (run.parent / "new").exists()


def test_bad_override_and_missing_config_are_refused(workspace, capsys):
    config, run = workspace
    refused(["train", str(config), "--out", str(run), "--set", "data.total_len=3"], capsys, run.parent, "data.input_len: must be smaller")
    refused(["train", str(config), "--out", str(run), "--set", "model.hidden=[]"], capsys, run.parent, "model.hidden")
    refused(["train", str(run.parent / "nope.toml"), "--out", str(run)], capsys, run.parent, "nope.toml: config file not found")
    refused(["train", str(run), "--out", str(run)], capsys, run.parent, f"{run}: a folder, not a config file")
    (run.parent / "broken.toml").write_text("[train\nlr = 1")
    refused(["train", str(run.parent / "broken.toml"), "--out", str(run)], capsys, run.parent, "broken.toml: not valid TOML")


@pytest.mark.parametrize(
    "what, array, message",
    [
        ("rank 2", np.zeros((16, 16), np.float32), "got shape (16, 16)"),
        ("rank 6", np.zeros((1, 1, 3, 1, 16, 16), np.float32), "got shape (1, 1, 3, 1, 16, 16)"),
        ("NaN frames", np.where(np.arange(6 * 16 * 16).reshape(6, 16, 16) == 77, np.nan, 0.5).astype(np.float32), "NaN or infinite"),
        ("inf frames", np.full((1, 6, 1, 16, 16), np.inf, np.float32), "NaN or infinite"),
        ("out of range", np.full((6, 16, 16), 2.0, np.float32), "must lie in [0, 1]"),
        ("three channels", np.zeros((6, 3, 16, 16), np.uint8), "3 channels, the model takes 1"),
        ("channels last", np.zeros((6, 16, 16, 1), np.uint8), "(1, 6, 16, 16, 1) read as (B, T, C, H, W) have 16 channels"),
        ("object array", np.array([[[None]]], dtype=object), "not a plain .npy array"),
    ],
)
def test_predict_refuses_bad_frames(workspace, capsys, what, array, message):
    _, run = workspace
    frames = run.parent / "frames.npy"
    np.save(frames, array, allow_pickle=True)
    refused(["predict", str(run), "--input", str(frames), "--out", str(run.parent / "pred")], capsys, run.parent, "frames.npy", message)
    assert not (run.parent / "pred").exists()


def test_predict_refuses_an_npz_archive_and_truth_that_does_not_match(workspace, capsys):
    _, run = workspace
    frames = np.zeros((2, 3, 1, 16, 16), np.uint8)
    np.save(run.parent / "frames.npy", frames)
    np.savez(run.parent / "frames.npz", frames=frames)
    np.save(run.parent / "one.npy", frames[:1])
    np.save(run.parent / "small.npy", np.zeros((2, 3, 1, 8, 8), np.uint8))
    out = str(run.parent / "pred")
    refused(["predict", str(run), "--input", str(run.parent / "frames.npz"), "--out", out], capsys, run.parent, "frames.npz: an .npz archive")
    refused(["predict", str(run), "--input", str(run.parent), "--out", out], capsys, run.parent, "is not a file")
    for truth in ("one.npy", "small.npy"):
        argv = ["predict", str(run), "--input", str(run.parent / "frames.npy"), "--truth", str(run.parent / truth), "--out", out]
        refused(argv, capsys, run.parent, truth, "do not match the input")


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.device=banana", "train.device: expected auto, cpu, cuda or cuda:N, got 'banana'"),
        ("data.seed=9223372036854775807", "data.seed: must be in [0, 4294967295]"),
        ("train.seed=-1", "train.seed: must be in [0, 4294967295]"),
        ("transfer.cache_dir=c.toml", "c.toml exists and is not a folder"),
    ],
)
def test_bad_run_settings_are_refused_before_the_run_folder_is_written(workspace, capsys, override, message):
    config, run = workspace
    (run.parent / "c.toml").write_text("")
    target = run.parent / "new"
    argv = ["train", str(config), "--out", str(target), "--no-progress", "--set", override]
    if "cache_dir" in override:
        argv[-1] = f"transfer.cache_dir={json.dumps(str(run.parent / 'c.toml'))}"
        argv += ["--set", "transfer.method=tmu", "--set", f"transfer.sources=[{json.dumps(str(run))}]"]
    refused(argv, capsys, run.parent, message)
    assert not target.exists()


def test_a_cached_bank_on_online_data_is_refused_before_the_run_folder_is_written(workspace, capsys):
    config, run = workspace  # tiny_raw's data.train_size = 0: generated online
    target = run.parent / "new"
    argv = ["train", str(config), "--out", str(target), "--no-progress", "--set", "transfer.method=tmu"]
    argv += ["--set", f"transfer.sources=[{json.dumps(str(run))}]", "--set", "transfer.bank=cached"]
    refused(argv, capsys, run.parent, "transfer.bank = 'cached' needs a finite training set")
    assert not target.exists()


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is not None, reason="tensorboard is installed")
def test_tensorboard_without_its_package_is_refused_before_writing(workspace, capsys):
    config, run = workspace
    argv = ["train", str(config), "--out", str(run.parent / "new"), "--no-progress", "--set", "train.tensorboard=true"]
    refused(argv, capsys, run.parent, "needs the tensorboard package")
    assert not (run.parent / "new").exists()


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> Path:
    """Two finished tiny source runs: ``hidden8`` (patch 4) and ``patch8`` (patch 8)."""
    root = tmp_path_factory.mktemp("sources")
    for name, model in [("hidden8", {"hidden": [8]}), ("patch8", {"hidden": [8], "patch": 8})]:
        config = write_config(root / f"{name}.toml", tiny_raw(model=model, train={"iterations": 1, "device": "cpu"}))
        assert main(["train", str(config), "--out", str(root / name), "--no-progress"]) == 0
    return root


@needs_loop_check_first
@pytest.mark.parametrize(
    "what, source, changes, message",
    [
        ("finetune from another architecture", "hidden8", {"model": {"hidden": [4]}, "transfer": {"method": "finetune"}}, "finetuning needs the same architecture"),
        ("source whose patch does not divide the frame size", "patch8", {"data": {"frame_size": 20}, "transfer": {"method": "tmu"}}, "patch size 8 does not divide the target frame size 20"),
        ("missing source", "nope", {"transfer": {"method": "finetune"}}, "not found"),
    ],
)
def test_unusable_source_is_refused_before_anything_is_written(tmp_path, sources, capsys, what, source, changes, message):
    raw = tiny_raw(train={"iterations": 2, "device": "cpu"}, **changes)
    raw["transfer"]["sources"] = [str(sources / source)]
    config = write_config(tmp_path / "target.toml", raw)
    err = refused(["train", str(config), "--out", str(tmp_path / "target"), "--no-progress"], capsys, tmp_path, message)
    assert str(sources / source) in err
    assert not (tmp_path / "target").exists()


def test_an_unfinished_source_run_is_refused_unless_its_checkpoint_is_named(tmp_path, sources, capsys):
    unfinished = Path(shutil.copytree(sources / "hidden8", tmp_path / "unfinished"))
    (unfinished / "model.safetensors").unlink()
    raw = tiny_raw(train={"iterations": 2, "device": "cpu"}, transfer={"method": "tmu"})
    raw["transfer"]["sources"] = [str(unfinished)]
    config = write_config(tmp_path / "target.toml", raw)
    refused(["train", str(config), "--out", str(tmp_path / "target"), "--no-progress"], capsys, tmp_path, f"source {unfinished}: unfinished run")
    raw["transfer"]["sources"] = [str(list_checkpoints(unfinished / "checkpoints")[-1])]
    config = write_config(tmp_path / "target.toml", raw)
    assert main(["train", str(config), "--out", str(tmp_path / "target"), "--no-progress"]) == 0


@pytest.mark.parametrize("replacement", ["same architecture, other weights", "other architecture", "other architecture, old checkpoint"])
def test_a_resume_after_its_source_was_replaced_is_refused(tmp_path, sources, replacement, monkeypatch):
    from transmem.training import loop
    from transmem.training.loop import train
    from transmem.training.rundir import RunConflictError

    source = Path(shutil.copytree(sources / "hidden8", tmp_path / "source"))
    raw = tiny_raw(train={"iterations": 4, "checkpoint_every": 2, "device": "cpu"}, transfer={"method": "tmu", "sources": [str(source)]})
    target = config_from_dict(raw)
    train(target, tmp_path / "target", progress=False, stop_at=2)
    shutil.move(source, tmp_path / "set_aside")
    model = {"hidden": [8]} if replacement.startswith("same") else {"hidden": [4]}
    train(config_from_dict(tiny_raw(model=model, train={"iterations": 1, "seed": 7, "device": "cpu"})), source, progress=False)
    message = "source weights changed since ckpt-00000002.pt was written"
    if replacement.endswith("old checkpoint"):  # written before checkpoints recorded their sources
        latest = loop.latest_good_checkpoint

        def without_digests(*args, **kwargs):
            path, state = latest(*args, **kwargs)
            return path, {k: v for k, v in state.items() if k != "source_digests"}

        monkeypatch.setattr(loop, "latest_good_checkpoint", without_digests)
        message = "ckpt-00000002.pt does not fit this run's model"
    with pytest.raises(RunConflictError, match=message):
        train(target, tmp_path / "target", progress=False)
    # --force sets the old run aside and starts over from fresh weights.
    result = train(target, tmp_path / "target", progress=False, force=True)
    assert result.resumed_from == 0 and (tmp_path / "target" / "model.safetensors").exists()
    assert list((tmp_path / "target").glob("checkpoints.previous-*"))


def test_a_finished_run_stays_finished_when_its_source_changes_later(tmp_path, sources):
    from transmem.training.loop import train

    source = Path(shutil.copytree(sources / "hidden8", tmp_path / "source"))
    target = config_from_dict(tiny_raw(train={"iterations": 2, "device": "cpu"}, transfer={"method": "tmu", "sources": [str(source)]}))
    train(target, tmp_path / "target", progress=False)
    weights = (tmp_path / "target" / "model.safetensors").read_bytes()
    train(config_from_dict(tiny_raw(model={"hidden": [8]}, train={"iterations": 1, "seed": 7, "device": "cpu"})), source, progress=False, force=True)
    again = train(target, tmp_path / "target", progress=False)
    assert again.resumed_from == 2 and (tmp_path / "target" / "model.safetensors").read_bytes() == weights


def test_source_of_another_architecture_is_refused_by_name(tmp_path, sources, capsys):
    """The refusal itself (exit 2, one line naming the source) and no training state written."""
    raw = tiny_raw(train={"iterations": 2, "device": "cpu"}, model={"hidden": [4]}, transfer={"method": "finetune"})
    raw["transfer"]["sources"] = [str(sources / "hidden8")]
    config = write_config(tmp_path / "target.toml", raw)
    capsys.readouterr()
    assert main(["train", str(config), "--out", str(tmp_path / "target"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"transmem: error: source {sources / 'hidden8'}: finetuning needs the same architecture"), err
    assert "\n" not in err
    assert not (tmp_path / "target" / "checkpoints").exists()


def test_folder_holding_another_finished_run_is_refused_unless_forced(workspace, capsys):
    config, run = workspace
    before = snapshot(run)
    refused(
        ["train", str(config), "--out", str(run), "--set", "train.lr=0.01"],
        capsys,
        run.parent,
        "holds a finished run of a different config (differs in train.lr)",
        "--force",
    )
    # --force twice within the same second: both old runs are kept, renamed, byte for byte.
    for lr in ("0.01", "0.02"):
        assert main(["train", str(config), "--out", str(run), "--set", f"train.lr={lr}", "--force", "--no-progress"]) == 0
    after = snapshot(run)
    suffixes = sorted({m.group(1) for name in after if (m := re.search(r"(\.previous-[0-9-]+)", name))})
    assert len(suffixes) == 2, suffixes
    # train.lock belongs to the folder, not to a run: it stays (and is never renamed or removed)
    original = {k: v for k, v in before.items() if not v.startswith("dir:") and k != "train.lock"}
    assert (run / "train.lock").exists()
    kept_sets = []
    for suffix in suffixes:
        kept = {}
        for name, digest in after.items():
            top, _, rest = name.partition("/")
            if top.endswith(suffix) and not digest.startswith("dir:"):
                kept[top[: -len(suffix)] + ("/" + rest if rest else "")] = digest
        kept_sets.append(kept)
    assert original in kept_sets  # the first run: every file kept, renamed, unchanged
    assert load_config(run / "config.toml").train.lr == 0.02 and (run / "model.safetensors").exists()


def _edit_config(path: Path, section: str, **values) -> None:
    raw = tomllib.loads(path.read_text())
    raw[section].update(values)
    path.write_text(tomli_w.dumps(raw))


def test_a_finished_run_whose_config_toml_was_edited_is_refused(workspace, capsys):
    config, run = workspace
    _edit_config(run / "config.toml", "model", hidden=[16])
    edited = run.parent / "edited.toml"
    shutil.copy2(run / "config.toml", edited)
    # Training the edited config in the run folder: the weights say hidden [8].
    needle = "model.hidden = [8] in the model, [16] in the config given"
    err = refused(["train", str(edited), "--out", str(run), "--no-progress"], capsys, run.parent, "config.toml was edited after training", needle)
    assert "nothing to do" not in err
    # The config it was trained with: config.toml is the odd one out.
    refused(["train", str(config), "--out", str(run), "--no-progress"], capsys, run.parent, "config.toml was edited after training", "model.hidden")
    # --force sets the old run aside and trains the edited config.
    assert main(["train", str(edited), "--out", str(run), "--no-progress", "--force"]) == 0
    assert load_config(run / "config.toml", stored=True).model.hidden == [16] and list(run.glob("model.safetensors.previous-*"))


def test_an_unfinished_run_whose_config_toml_was_edited_is_refused_naming_the_keys(tmp_path):
    from transmem.training.loop import train
    from transmem.training.rundir import RunConflictError

    raw = tiny_raw(train={"iterations": 4, "checkpoint_every": 2, "device": "cpu"})
    train(config_from_dict(raw), tmp_path / "run", progress=False, stop_at=2)
    _edit_config(tmp_path / "run" / "config.toml", "model", hidden=[16])
    before = snapshot(tmp_path / "run")
    edited = load_config(tmp_path / "run" / "config.toml")
    message = r"ckpt-00000002\.pt was trained with another config .*model\.hidden = \[8\] in the checkpoint, \[16\] in the config given"
    with pytest.raises(RunConflictError, match=message) as info:
        train(edited, tmp_path / "run", progress=False)
    assert "source" not in str(info.value)
    assert snapshot(tmp_path / "run") == before


def _flip_inside_tensor_data(path: Path, weights: torch.Tensor) -> None:
    data = bytearray(path.read_bytes())
    position = data.find(weights.detach().contiguous().numpy().tobytes()[:32])
    assert position > 0
    data[position + 5] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["truncated", "bit flip", "bit flip, copied elsewhere", "garbage", "every checkpoint of an unfinished run"])
def test_evaluate_refuses_a_corrupted_checkpoint_by_name(workspace, capsys, damage):
    _, run = workspace
    checkpoint = list_checkpoints(run / "checkpoints")[-1]
    state = torch.load(checkpoint, weights_only=True)
    weights = next(v for v in state["model"].values() if v.numel() > 64)
    if damage == "every checkpoint of an unfinished run":
        (run / "model.safetensors").unlink()
        for path in list_checkpoints(run / "checkpoints"):
            path.write_bytes(path.read_bytes()[:1000])
        refused(["evaluate", str(run)], capsys, run.parent, str(run), "no good checkpoint")
        return
    if damage == "truncated":
        checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    elif damage.startswith("bit flip"):
        _flip_inside_tensor_data(checkpoint, weights)
        if damage.endswith("elsewhere"):
            checkpoint = Path(shutil.copy2(checkpoint, run.parent / "copy.pt"))
    else:
        checkpoint.write_bytes(os.urandom(2000))
    refused(["evaluate", str(checkpoint)], capsys, run.parent, str(checkpoint))
    refused(["predict", str(checkpoint), "--input", str(checkpoint), "--out", str(run.parent / "p")], capsys, run.parent, str(checkpoint))


@pytest.mark.parametrize("damage", ["bit flip", "NaN weights"])
def test_a_damaged_final_model_is_refused_by_name(workspace, capsys, damage):
    from safetensors.torch import load_file, save_file

    _, run = workspace
    model = run / "model.safetensors"
    tensors = load_file(str(model))
    name, weights = next((k, v) for k, v in tensors.items() if v.numel() > 64)
    frames = run.parent / "frames.npy"
    np.save(frames, np.zeros((6, 16, 16), np.uint8))
    if damage == "bit flip":  # the SHA-256 written with the weights no longer matches
        _flip_inside_tensor_data(model, weights)
        needle = "damaged"
    else:  # a consistent file (checksum dropped) whose weights are NaN
        from safetensors import safe_open

        with safe_open(str(model), framework="pt") as handle:
            metadata = {k: v for k, v in handle.metadata().items() if k != "sha256"}
        tensors[name] = torch.full_like(weights, float("nan"))
        save_file(tensors, str(model), metadata=metadata)
        needle = f"non-finite weights (NaN or inf) in {name}"
    refused(["evaluate", str(run)], capsys, run.parent, str(model), needle)
    refused(["predict", str(run), "--input", str(frames), "--out", str(run.parent / "p")], capsys, run.parent, str(model), needle)


def test_unusable_output_paths_and_horizon_are_one_line_errors(workspace, capsys):
    _, run = workspace
    frames = run.parent / "frames.npy"
    np.save(frames, np.zeros((6, 16, 16), np.uint8))
    refused(["evaluate", str(run), "--out", str(run.parent / "missing" / "m.json")], capsys, run.parent, "missing/m.json: no such file or folder")
    (run.parent / "a_file").write_text("keep me")
    refused(["predict", str(run), "--input", str(frames), "--out", str(run.parent / "a_file")], capsys, run.parent, "a_file")
    for horizon in ("0", "-2"):
        refused(["predict", str(run), "--input", str(frames), "--out", str(run.parent / "p"), "--horizon", horizon], capsys, run.parent, "--horizon: must be at least 1")
    # A message with a line break (here quoted from the input) is still printed on one line.
    err = refused(["train", str(run.parent / "cfg.toml"), "--out", str(run), "--set", "=\nx"], capsys, run.parent, "key must look like section.key")
    assert "--set = x" in err


def test_predict_warns_about_frames_unlike_training_and_refuses_what_the_model_cannot_read(workspace, capsys):
    _, run = workspace  # trained on 3 input frames of 16x16, patch 4
    for name, shape, needle in [
        ("fewer.npy", (2, 1, 16, 16), "2 input frames, fewer than the 3 the model was trained on"),
        ("larger.npy", (3, 1, 32, 32), "frames of 32x32 pixels, the model was trained on 16x16"),
    ]:
        np.save(run.parent / name, np.zeros(shape, np.uint8))
        capsys.readouterr()
        assert main(["predict", str(run), "--input", str(run.parent / name), "--out", str(run.parent / name.replace(".npy", ""))]) == 0
        err = capsys.readouterr().err.strip()
        assert err.startswith("transmem: warning: ") and needle in err and "\n" not in err, err
        assert np.load(run.parent / name.replace(".npy", "") / "prediction.npy").shape == (1, 3, 1, *shape[-2:])
    np.save(run.parent / "odd.npy", np.zeros((3, 1, 18, 18), np.uint8))
    refused(["predict", str(run), "--input", str(run.parent / "odd.npy"), "--out", str(run.parent / "odd")], capsys, run.parent, "18x18", "patch size 4")


def test_predict_length_follows_the_truth_as_its_help_says_and_writes_float32(workspace, capsys):
    from transmem.cli import _parser

    _, run = workspace
    np.save(run.parent / "in.npy", np.zeros((2, 3, 1, 16, 16), np.float64))
    np.save(run.parent / "truth.npy", np.zeros((2, 5, 1, 16, 16), np.uint8))
    argv = ["predict", str(run), "--input", str(run.parent / "in.npy"), "--truth", str(run.parent / "truth.npy"), "--out", str(run.parent / "p")]
    assert main(argv) == 0
    prediction = np.load(run.parent / "p" / "prediction.npy")
    assert prediction.dtype == np.float32 and prediction.shape == (2, 5, 1, 16, 16)  # (B, T, C, H, W), T from --truth
    assert "float32 (B, T, C, H, W)" in capsys.readouterr().out
    predict_help = " ".join(_parser()._subparsers._group_actions[0].choices["predict"].format_help().split())
    assert "default: as many as the true frames, from --truth or --input, else the run's T_out" in predict_help
    assert "always float32 (B, T, C, H, W)" in predict_help


def test_predict_refuses_to_overwrite_earlier_predictions_unless_forced(workspace, capsys):
    _, run = workspace
    frames, out = run.parent / "frames.npy", run.parent / "pred"
    np.save(frames, np.zeros((6, 16, 16), np.uint8))
    argv = ["predict", str(run), "--input", str(frames), "--out", str(out)]
    assert main(argv) == 0
    refused(argv, capsys, run.parent, f"--out {out}: holds earlier predictions (prediction.npy, prediction_0.gif, strip_0.png)", "--force")
    first = (out / "prediction.npy").read_bytes()
    assert main([*argv, "--force"]) == 0
    kept = list(out.glob("prediction.npy.previous-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == first and (out / "prediction.npy").exists()
    assert len(list(out.glob("strip_0.png.previous-*"))) == 1


def test_evaluate_refuses_a_corrupted_final_model(workspace, capsys):
    _, run = workspace
    model = run / "model.safetensors"
    model.write_bytes(model.read_bytes()[:-100])
    refused(["evaluate", str(run)], capsys, run.parent, "model.safetensors")


def test_errors_are_exactly_one_line_on_stderr_in_a_real_process(workspace):
    """No traceback or warning noise around the one error line (checked once, end to end)."""
    config, run = workspace
    checkpoint = list_checkpoints(run / "checkpoints")[-1]
    checkpoint.write_bytes(checkpoint.read_bytes()[:500])
    for argv, needle in [
        (["train", str(config), "--out", str(run), "--set", "train.lrate=1"], "train.lrate: unknown key"),
        (["evaluate", str(checkpoint)], checkpoint.name),
    ]:
        result = subprocess.run([sys.executable, "-m", "transmem", *argv], capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("transmem: error: ") and needle in lines[0], result.stderr
        assert result.stdout == ""


# ---------------------------------------------------------------- config parser properties

SECTIONS = {
    section: [f.name for f in dataclasses.fields(type(getattr(RunConfig(), section)))]
    for section in ("data", "model", "train", "eval", "transfer")
}
KNOWN_KEYS = [f"{s}.{k}" for s, keys in SECTIONS.items() for k in keys]

# Finite floats and 64-bit integers here; NaN, inf and huge integers have their own test.
toml_scalars = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.text(max_size=8),
    st.sampled_from(["none", "cosine", "standard", "reverse", "group", "cpu", "auto", "tmu", "finetune", "moving_digits"]),
)
toml_values = st.recursive(
    toml_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6,
)


def _literal(value) -> str:
    """``value`` written as the TOML literal after ``v =``."""
    return tomli_w.dumps({"v": value}).partition("=")[2].strip()


value_texts = st.one_of(
    st.text(max_size=12),
    toml_values.map(lambda v: "{}" if isinstance(v, dict) else _literal(v)),
    st.sampled_from(["[]", "[8, 8]", "[0]", "1e-3", "-0.0", "true", '"x"', "{a = 1}", "1979-05-27", "0x10", "[[1]]", "[1, 'a']"]),
)
key_texts = st.one_of(
    st.sampled_from(KNOWN_KEYS + ["data.options.num_digits", "train", "train.lr.x", "x.y", "data.options"]), st.text(max_size=12)
)


def _has_newline(value) -> bool:
    if isinstance(value, dict):
        return any(_has_newline(k) or _has_newline(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_has_newline(v) for v in value)
    return isinstance(value, str) and any(c in value for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


def accepted_or_config_error(raw: dict, overrides: list[str]) -> RunConfig | None:
    """The config, or None for a ConfigError with a one-line message (unless the input
    itself holds a line break, which the message may quote); anything else fails."""
    try:
        return config_from_dict(raw, overrides)
    except ConfigError as error:
        message = str(error)
        assert message.strip(), repr(message)
        assert len(message.splitlines()) == 1 or _has_newline([raw, overrides]), repr(message)
        return None


def assert_round_trips(config: RunConfig) -> None:
    text = config.to_toml()
    again = config_from_dict(tomllib.loads(text))
    assert again == config
    assert again.to_toml() == text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.tuples(key_texts, value_texts).map(lambda kv: f"{kv[0]}={kv[1]}"), st.text(max_size=16)), max_size=3))
def test_property_any_override_strings_give_a_config_or_a_config_error(overrides):
    config = accepted_or_config_error(tiny_raw(), overrides)
    if config is not None:
        assert_round_trips(config)


section_tables = st.dictionaries(
    st.sampled_from([*SECTIONS, "trian", "options"]),
    st.dictionaries(st.sampled_from(sorted({k.split(".")[-1] for k in KNOWN_KEYS} | {"lrr"})), toml_values, max_size=4),
    max_size=4,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(section_tables)
def test_property_any_nested_tables_give_a_config_or_a_config_error(tables):
    raw = tiny_raw()
    for section, values in tables.items():
        if isinstance(raw.get(section), dict):
            raw[section].update(values)
        else:
            raw[section] = values
    config = accepted_or_config_error(raw, [])
    if config is not None:
        assert_round_trips(config)


def _refused(override: str) -> bool:
    try:
        config_from_dict(tiny_raw(), [override])
    except ConfigError:
        return True
    except Exception:  # noqa: BLE001 - a crash is what the probe looks for
        return False
    return False


CONFIG_REFUSES_EXTREMES = all(_refused(o) for o in ["train.lr=inf", "train.lr=" + "9" * 400, "model.hidden=[true]", "transfer.sources=[1]"])
HINTS = {s: typing.get_type_hints(type(getattr(RunConfig(), s))) for s in SECTIONS}
NUMERIC_KEYS = sorted(f"{s}.{k}" for s, hints in HINTS.items() for k, t in hints.items() if t in (int, float))
EXTREMES = ["nan", "inf", "-inf", "+inf", "1e400", str(2**63), str(-(2**63) - 1), "9" * 400, "9" * 5000]


@pytest.mark.xfail(
    not CONFIG_REFUSES_EXTREMES, strict=True, reason="config.py accepts NaN/inf, crashes on huge integers (patch proposed)"
)
@settings(max_examples=120, deadline=None)
@given(key=st.sampled_from(NUMERIC_KEYS), literal=st.sampled_from(EXTREMES), via_file=st.booleans())
def test_property_non_finite_and_out_of_range_numbers_are_refused(tmp_path_factory, key, literal, via_file):
    section, name = key.split(".")
    if via_file:
        path = tmp_path_factory.mktemp("x") / "c.toml"
        text = tomli_w.dumps({k: v for k, v in tiny_raw().items() if k != section})
        text += f"\n[{section}]\n" + "".join(f"{k} = {_literal(v)}\n" for k, v in tiny_raw().get(section, {}).items() if k not in (name, "options"))
        text += f"{name} = {literal}\n"
        path.write_text(text)
        with pytest.raises(ConfigError) as info:
            load_config(path)
    else:
        with pytest.raises(ConfigError) as info:
            config_from_dict(tiny_raw(), [f"{key}={literal}"])
    assert key in str(info.value) or "not valid TOML" in str(info.value)


@pytest.mark.xfail(
    not CONFIG_REFUSES_EXTREMES, strict=True, reason="config.py accepts booleans as layer sizes and non-path sources (patch proposed)"
)
@pytest.mark.parametrize(
    "override, key",
    [
        ("model.hidden=[8, true]", "model.hidden"),
        ("model.hidden=[99999999999999999999]", "model.hidden"),
        ("transfer.layers=[false]", "transfer.layers"),
        ("transfer.sources=[1]", "transfer.sources"),
        ('transfer.sources=[""]', "transfer.sources"),
    ],
)
def test_wrong_list_elements_are_refused(override, key):
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}"):
        config_from_dict(tiny_raw(), [override])


valid_changes = st.fixed_dictionaries(
    {},
    optional={
        "data": st.fixed_dictionaries(
            {},
            optional={
                "frame_size": st.sampled_from([8, 16, 32, 64]),
                "input_len": st.integers(1, 5),
                "batch_size": st.integers(1, 64),
                "seed": st.integers(0, MAX_SEED),
                "options": st.fixed_dictionaries({}, optional={"num_digits": st.integers(1, 3)}),
            },
        ),
        "model": st.fixed_dictionaries(
            {},
            optional={
                "backbone": st.sampled_from(["convlstm", "predrnn", "predrnn_v2"]),
                "hidden": st.lists(st.integers(1, 64), min_size=1, max_size=4),
                "kernel": st.sampled_from([1, 3, 5]),
                "patch": st.sampled_from([1, 2, 4, 8]),
                "norm": st.sampled_from(["none", "group"]),
                "decouple_weight": st.floats(0, 10),
            },
        ),
        "train": st.fixed_dictionaries(
            {},
            optional={
                "iterations": st.integers(1, 10**9),
                "lr": st.floats(1e-9, 10),
                "lr_schedule": st.sampled_from(["none", "cosine", "step"]),
                "sampling": st.sampled_from(["standard", "none"]),
                "sampling_stop": st.floats(0, 1),
                "grad_clip": st.floats(0, 1e6),
                "device": st.sampled_from(["auto", "cpu", "cuda:1"]),
                "deterministic": st.booleans(),
            },
        ),
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=valid_changes)
def test_property_valid_configs_round_trip_through_toml_and_overrides(tmp_path, changes):
    raw = tiny_raw(**changes)
    raw["data"]["total_len"] = raw["data"]["input_len"] + 3
    config = config_from_dict(raw)
    assert_round_trips(config)
    path = tmp_path / "c.toml"
    path.write_text(config.to_toml())
    assert load_config(path) == config
    # The same values given as --set overrides (TOML literals) build the same config.
    overrides = [f"{s}.{k}={_literal(v)}" for s, values in changes.items() for k, v in values.items() if k != "options"]
    if "options" in changes.get("data", {}):  # a whole table replaces the options, as in the file
        overrides.append("data.options={" + ", ".join(f"{k} = {v}" for k, v in changes["data"]["options"].items()) + "}")
    base = tiny_raw()
    base["data"]["total_len"] = raw["data"]["total_len"]
    assert config_from_dict(base, overrides) == config


# ---------------------------------------------------------------- soak (opt-in)


@pytest.mark.soak
@pytest.mark.timeout(3600)
def test_soak_many_random_kill_resume_cycles(tmp_path):
    """Many short train/kill/resume cycles at random moments (seeded; TRANSMEM_SOAK_SEED,
    TRANSMEM_SOAK_CYCLES): progress is never lost (every rerun resumes from the newest
    complete checkpoint, which never goes back), and every finished run equals an
    uninterrupted one, with each iteration logged once and no temporary file left."""
    seed = int(os.environ.get("TRANSMEM_SOAK_SEED", "12345"))
    cycles = int(os.environ.get("TRANSMEM_SOAK_CYCLES", "60"))
    rng = random.Random(seed)
    iterations, keep = 60, 2
    config = write_config(tmp_path / "cfg.toml", kill_raw(iterations, checkpoint_every=3, keep=keep))
    reference, run = tmp_path / "reference", tmp_path / "run"
    code, err = finish(start(train_command(config, reference)), timeout=600)
    assert code == 0, err
    command = train_command(config, run)
    checkpoints, history, kills, finished_runs = run / "checkpoints", [], 0, 0
    for cycle in range(cycles):
        saved = good_iteration(run) if run.exists() else 0
        process = start(command)
        mode = rng.random()
        if mode < 0.3:  # anywhere, including start-up and the final validation and save
            killed = wait_then_kill(process, lambda: True, rng.uniform(0.0, 4.0))
        elif mode < 0.6:  # while a checkpoint is being written
            killed = wait_then_kill(process, temporary_checkpoint_after(checkpoints, saved + rng.choice([0, 3, 6])))
        else:  # shortly after a new checkpoint
            killed = wait_then_kill(process, checkpoint_after(checkpoints, saved), rng.uniform(0.0, 0.3))
        code, err = finish(process, timeout=600)
        kills += killed
        history.append((cycle, round(mode, 2), saved, code))
        assert code in (0, -signal.SIGKILL), f"cycle {cycle}: exit {code}\n{err}"
        assert "Traceback" not in err, err
        resumed = RESUMED.search(err)
        if resumed or code == 0:
            assert (int(resumed.group(2)) if resumed else 0) == saved, f"cycle {cycle}: lost progress ({resumed and resumed.group(0)}, had {saved})"
        elif saved:  # killed while starting up: nothing may have been undone yet
            logged = [int(r["iteration"]) for r in csv_rows(run / "train.csv")]
            assert logged[:saved] == list(range(1, saved + 1)), f"cycle {cycle}: log lost rows up to {saved}"
        now = good_iteration(run) if run.exists() else 0
        assert now >= saved, f"cycle {cycle}: the newest good checkpoint went back from {saved} to {now}"
        if code == 0:  # finished: check it, then start a fresh run in its place
            assert_clean_finished_run(run, reference, keep)
            finished_runs += 1
            shutil.rmtree(run)
    if run.exists():
        code, err = finish(start(command), timeout=600)
        assert code == 0, err
        assert_clean_finished_run(run, reference, keep)
        finished_runs += 1
    assert kills >= cycles // 2, history
    assert finished_runs >= 2, history
