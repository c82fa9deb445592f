"""The kill harness: start ``transmem train`` in a child process, kill it at a chosen moment
(from outside, or from inside through a fault injected into its file writes), and check that
the run it leaves, once rerun to the end, is the uninterrupted one.

Configurations for these runs (:func:`tests.support.kill_raw`) are in ``tests/support.py``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.support import csv_rows
from transmem.storage.checkpoints import MANIFEST, latest_good_checkpoint, list_checkpoints

KILL_RUNNER = textwrap.dedent(
    """
    # `python -m transmem ...` that SIGKILLs itself at a chosen moment: KILL_AT=when:prefix:n
    # kills at the n-th os.replace (when = before | after) or Path.unlink (when = unlink)
    # whose target file name starts with prefix. STEP_PAUSE=s sleeps s seconds after every
    # optimizer step, so that a kill sent from outside lands within a few iterations of
    # when it was meant to, however loaded the machine is.
    import os, signal, sys, time
    from pathlib import Path

    # Ctrl-C as in a terminal, even under a parent started in the background (whose shell
    # ignores SIGINT, and its children inherit that): the Ctrl-C test needs it delivered.
    signal.signal(signal.SIGINT, signal.default_int_handler)

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
