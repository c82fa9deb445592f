"""kill -9 and resume: ``transmem train`` killed with SIGKILL at many moments (including
inside a checkpoint write, found either by polling for the temporary file or by a
deterministic fault injected into ``os.replace``/``Path.unlink`` of the child process) and
rerun until it finishes ends with weights identical to an uninterrupted run, logs each
iteration once and leaves no temporary file. The harness is in tests/processes.py.
"""

from __future__ import annotations

import random
import signal

import pytest

from tests.processes import (
    RESUMED,
    assert_clean_finished_run,
    checkpoint_after,
    finish,
    good_iteration,
    start,
    temporaries,
    temporary_checkpoint_after,
    train_command,
    wait_then_kill,
)
from tests.support import csv_rows, kill_raw, write_config


@pytest.mark.slow
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
        (
            "external: while a checkpoint is being written",
            None,
            lambda: temporary_checkpoint_after(checkpoints, good_iteration(run) + 2),
            0.0,
        ),
        (
            "external: at a random moment after a new checkpoint",
            None,
            lambda: checkpoint_after(checkpoints, good_iteration(run)),
            rng.uniform(0.0, 0.15),
        ),
        ("checkpoint written to its temporary file, not yet renamed", "before:ckpt-:2", None, 0.0),
        ("checkpoint renamed, manifest not yet updated", "after:ckpt-:2", None, 0.0),
        ("old checkpoint rotated away, manifest not yet updated", "unlink:ckpt-:1", None, 0.0),
        (
            "external: at a random moment after a new checkpoint",
            None,
            lambda: checkpoint_after(checkpoints, good_iteration(run)),
            rng.uniform(0.0, 0.15),
        ),
        (
            "Ctrl-C (SIGINT) after a new checkpoint",
            None,
            lambda: checkpoint_after(checkpoints, good_iteration(run)),
            rng.uniform(0.0, 0.15),
        ),
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
            assert (
                err.strip().splitlines()[-1] == "transmem: interrupted; rerun the same command to resume from the last checkpoint"
            )
            assert temporaries(run) == [], "an interrupted write left its temporary file"
        resumed = RESUMED.search(err)
        # No loss of progress: a rerun starts from the newest checkpoint that was complete.
        assert (int(resumed.group(2)) if resumed else 0) == saved, (
            f"{what}: resumed with {resumed and resumed.group(0)}, had {saved}"
        )
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


def test_kill_after_final_validation_logs_it_once(tmp_path):
    config = write_config(tmp_path / "cfg.toml", kill_raw(iterations=4, checkpoint_every=2))
    run = tmp_path / "run"
    code, _ = finish(start(train_command(config, run), "before:model.safetensors:1"))
    assert code == -signal.SIGKILL and len(csv_rows(run / "val.csv")) == 1
    code, err = finish(start(train_command(config, run)))
    assert code == 0, err
    assert [r["iteration"] for r in csv_rows(run / "val.csv")] == ["4"]
