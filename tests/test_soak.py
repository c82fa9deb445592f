"""The soak test (marker ``soak``, opt-in: ``pytest -m soak``): many random kill/resume cycles."""

from __future__ import annotations

import os
import random
import shutil
import signal

import pytest

from tests.processes import (
    RESUMED,
    assert_clean_finished_run,
    checkpoint_after,
    finish,
    good_iteration,
    start,
    temporary_checkpoint_after,
    train_command,
    wait_then_kill,
)
from tests.support import csv_rows, kill_raw, write_config


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
            assert (int(resumed.group(2)) if resumed else 0) == saved, (
                f"cycle {cycle}: lost progress ({resumed and resumed.group(0)}, had {saved})"
            )
        elif saved:  # killed while starting up: nothing may have been undone yet
            logged = [int(r["iteration"]) for r in csv_rows(run / "train.csv")]
            assert logged[:saved] == list(range(1, saved + 1)), f"cycle {cycle}: log lost rows up to {saved}"
        now = good_iteration(run) if run.exists() else 0
        assert now >= saved, f"cycle {cycle}: the newest good checkpoint went back from {saved} to {now}"
        # Finished (a kill may land after the final model is written, before the process
        # exits): check it, then start a fresh run in its place.
        if code == 0 or (run / "model.safetensors").exists():
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
