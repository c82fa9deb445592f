"""``train.cuda_graph``: the refusals (everywhere) and the captured step (CUDA only)."""

from __future__ import annotations

import pytest
import torch

from tests.support import csv_rows, tiny_config, write_tiny_config
from transmem.cli import main
from transmem.config import ConfigError
from transmem.errors import TrainingDiverged
from transmem.run.lifecycle import train
from transmem.storage.model_file import load_model
from transmem.storage.run_folder import TRAIN_LOG
from transmem.training.cuda_graph import WARMUP_STEPS, check_graphable
from transmem.transfer.methods import METHODS


def test_settings_a_graph_cannot_replay_are_refused_by_the_config():
    with pytest.raises(ConfigError, match="train.cuda_graph: replays the eager step's kernels; use it without train.compile"):
        tiny_config(train={"cuda_graph": True, "compile": True})
    with pytest.raises(ConfigError, match="train.cuda_graph: needs lr_schedule = 'none'.*got 'cosine'"):
        tiny_config(train={"cuda_graph": True, "lr_schedule": "cosine"})
    assert tiny_config(train={"cuda_graph": True}).train.cuda_graph


def test_only_methods_whose_step_reads_frames_alone_can_be_captured():
    graphable = {name: not cls.reads_sources_every_step for name, cls in METHODS.items()}
    assert graphable == {"none": True, "finetune": True, "tmu": False, "distill": False, "kflow": False, "fusion": True}
    config = tiny_config(train={"cuda_graph": True})
    cuda = torch.device("cuda")  # a device object needs no GPU
    check_graphable(config, cuda, object.__new__(METHODS["none"]), distributed=False)
    check_graphable(tiny_config(), torch.device("cpu"), object.__new__(METHODS["tmu"]), distributed=True)  # off: no check
    with pytest.raises(ConfigError, match="needs a CUDA device, not cpu"):
        check_graphable(config, torch.device("cpu"), object.__new__(METHODS["none"]), distributed=False)
    with pytest.raises(ConfigError, match="not supported under torchrun"):
        check_graphable(config, cuda, object.__new__(METHODS["none"]), distributed=True)
    tmu = tiny_config(train={"cuda_graph": True}, transfer={"method": "tmu", "sources": ["runs/a", "runs/b"]})
    with pytest.raises(ConfigError, match="method 'tmu' reads sources or a memory bank at every step"):
        check_graphable(tmu, cuda, object.__new__(METHODS["tmu"]), distributed=False)
    with pytest.raises(ConfigError, match="method 'tmu' reads sources"):  # the class will do (benchmark planning)
        check_graphable(tmu, cuda, METHODS["tmu"], distributed=False)


def test_a_graphed_run_on_the_cpu_is_refused_in_one_line_and_writes_nothing(tmp_path, capsys):
    config = write_tiny_config(tmp_path / "graph.toml", train={"cuda_graph": True, "device": "cpu"})
    run = tmp_path / "run"
    assert main(["train", str(config), "--out", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "transmem: error: train.cuda_graph: captures the training step in a CUDA graph and needs a CUDA device, not cpu"
    ]
    assert not run.exists()


def test_a_benchmark_refuses_a_graph_it_cannot_capture_before_any_run_trains(tmp_path, capsys, monkeypatch):
    """Planning checks every run: a TMU target would otherwise be refused when its turn came,
    after the sources and the other targets had trained."""
    import transmem.benchmark.planning as planning

    out = tmp_path / "bench"
    command = ["benchmark", "digits", "--profile", "quick", "--out", str(out), "--zoo", "builtin"]
    graphed = ["--target-set", "train.cuda_graph=true"]
    assert main([*command, "--methods", "scratch", *graphed, "--estimate"]) == 2  # on this CPU
    assert capsys.readouterr().err.strip().splitlines() == [
        "transmem: error: train.cuda_graph: captures the training step in a CUDA graph and needs a CUDA device, not cpu"
    ]
    assert main([*command, "--methods", "scratch", *graphed, "--status"]) == 0  # reading where runs stand is no training
    assert capsys.readouterr().out.strip().endswith("not started")
    monkeypatch.setattr(planning, "resolve_device", lambda name: torch.device("cuda"))  # as on a GPU machine
    assert main([*command, "--methods", "scratch", "tmu", *graphed]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.cuda_graph: method 'tmu' reads sources or a memory bank at every step" in err[0]
    assert not out.exists()


def _graphed(**train_fields):
    return tiny_config(train={"device": "cuda", "iterations": 12, "checkpoint_every": 4, "log_every": 1, **train_fields})


@pytest.mark.cuda
def test_a_graphed_run_trains_as_the_eager_one_and_resumes(tmp_path):
    eager, graphed, resumed = tmp_path / "eager", tmp_path / "graphed", tmp_path / "resumed"
    train(_graphed(), eager, progress=False)
    train(_graphed(cuda_graph=True), graphed, progress=False)
    # same kernels on the same batches: the losses agree to rounding (cuDNN may pick other algorithms in the graph)
    losses = [[float(row["loss"]) for row in csv_rows(run / TRAIN_LOG)] for run in (eager, graphed)]
    assert len(losses[1]) == 12 and losses[1] == pytest.approx(losses[0], rel=1e-3)
    assert losses[1][WARMUP_STEPS:] != losses[1][:1] * (12 - WARMUP_STEPS)  # the replays do train
    # paused after iteration 6 and resumed: warms up and captures again, ends where the uninterrupted run ends
    train(_graphed(cuda_graph=True), resumed, progress=False, stop_at=6)
    train(_graphed(cuda_graph=True), resumed, progress=False)
    a, b = (load_model(run).model.state_dict() for run in (graphed, resumed))
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-3, atol=1e-5)


@pytest.mark.cuda
def test_a_graphed_run_that_diverges_stops_with_the_last_good_checkpoint(tmp_path):
    with pytest.raises(TrainingDiverged, match="(loss|gradient norm) became (nan|inf)"):
        train(_graphed(cuda_graph=True, lr=1e6, iterations=200, grad_clip=0.0), tmp_path / "run", progress=False)
