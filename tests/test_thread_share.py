"""Trainings on one machine split torch's threads (transmem.training.thread_share)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from transmem.training import thread_share
from transmem.training.thread_share import ThreadShare, running_trainings, share


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """A private registry folder, torch's default pretended to be 4 threads, nothing pinned."""
    folder = tmp_path / "trainings"
    monkeypatch.setattr(thread_share, "registry_folder", lambda: folder)
    monkeypatch.setattr(thread_share, "DEFAULT_THREADS", 4)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    saved = torch.get_num_threads()
    torch.set_num_threads(4)
    yield folder
    torch.set_num_threads(saved)


@pytest.fixture
def other_training(registry):
    """Another live process registered as a training."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    registry.mkdir(parents=True, exist_ok=True)
    (registry / str(process.pid)).touch()
    yield process
    process.kill()
    process.wait()


def test_share_divides_the_default_threads_and_never_goes_below_one():
    assert [share(n, default=4) for n in (0, 1, 2, 3, 4, 9)] == [4, 4, 2, 1, 1, 1]


def test_alone_a_training_keeps_every_thread_and_unregisters_on_exit(registry):
    with ThreadShare() as threads:
        assert threads.adapts and torch.get_num_threads() == 4
        assert sorted(p.name for p in registry.iterdir()) == [str(os.getpid())]
    assert list(registry.iterdir()) == [] and torch.get_num_threads() == 4


def test_beside_another_training_it_takes_half_and_takes_back_the_cores_when_it_ends(registry, other_training):
    with ThreadShare() as threads:
        assert running_trainings() == 2 and torch.get_num_threads() == 2
        other_training.kill()
        other_training.wait()
        assert threads.recount() == 2  # recounted at most once a second
        assert threads.recount(force=True) == 4
        assert not (registry / str(other_training.pid)).exists()  # a dead training's entry is removed
    assert torch.get_num_threads() == 4


def test_dead_entries_and_foreign_files_are_not_counted(registry):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    registry.mkdir()
    (registry / str(dead.pid)).touch()
    (registry / "notes.txt").write_text("not a training")
    assert running_trainings() == 0
    assert (registry / "notes.txt").exists()


@pytest.mark.parametrize("pin", ["environment", "set_num_threads"])
def test_a_pinned_thread_count_is_never_changed_but_counts_for_the_others(registry, other_training, monkeypatch, pin):
    if pin == "environment":
        monkeypatch.setenv("OMP_NUM_THREADS", "4")
    else:
        torch.set_num_threads(3)
    before = torch.get_num_threads()
    with ThreadShare() as threads:
        assert not threads.adapts
        assert threads.recount(force=True) == before
        assert (registry / str(os.getpid())).exists()  # the others still see it


def test_a_nested_training_follows_the_outer_share_and_registers_once(registry, other_training):
    with ThreadShare():
        assert torch.get_num_threads() == 2
        with ThreadShare() as inner:  # e.g. a source ranking's probe run inside a training
            assert inner.adapts  # the outer share's 2 threads are not a pin
            assert running_trainings() == 2
        assert (registry / str(os.getpid())).exists()
    assert not (registry / str(os.getpid())).exists()


def test_train_run_logs_the_shared_thread_count(registry, other_training, tmp_path):
    from tests.support import tiny_config
    from transmem.run.lifecycle import train

    train(tiny_config(["train.iterations=2"]), tmp_path / "run", progress=False)
    logged = (tmp_path / "run" / "train.csv").read_text().splitlines()
    assert logged[-1].split(",")[-1] == "2"  # 4 threads' worth of cores, two trainings
    assert torch.get_num_threads() == 4  # restored after the run
