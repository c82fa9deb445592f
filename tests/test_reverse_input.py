"""train.reverse_input (the release's): two optimiser steps per iteration, one iteration counted."""

from __future__ import annotations

import csv

import pytest
import torch

from tests.support import target_config, tiny_config
from transmem.data.batch import TrainingBatch
from transmem.errors import DataError
from transmem.models import build_predictor
from transmem.run.lifecycle import train
from transmem.storage.checkpoints import latest_good_checkpoint
from transmem.storage.model_file import load_model
from transmem.training.setup import training_optimizer
from transmem.training.step import apply_gradients, reversed_batch, step_loss, training_step
from transmem.transfer.methods import METHODS


def test_the_iteration_is_a_step_on_the_batch_then_one_on_it_played_backwards_with_the_same_mask(tmp_path):
    config = tiny_config(model={"hidden": [8]}, train={"reverse_input": True, "device": "cpu"})
    torch.manual_seed(0)
    frames = torch.rand(2, 6, 1, 16, 16)
    batch = TrainingBatch([0, 1], frames, torch.tensor([[True, True, False, True], [True, False, True, False]]))
    back = reversed_batch(batch)
    assert torch.equal(back.frames, frames.flip(1)) and back.mask is batch.mask
    models = [build_predictor(config.model, 1) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    method = METHODS["none"](config, tmp_path, torch.device("cpu"))
    optimizers = [training_optimizer(model, config) for model in models]
    loss, terms = training_step(models[0], models[0], method, optimizers[0], None, config, batch, 0, AssertionError)
    losses = []
    for step_batch in (batch, back):  # the same two steps, one by one
        step, _ = step_loss(models[1], models[1], method, config, step_batch, 0)
        losses.append(step.detach())
        apply_gradients(models[1], optimizers[1], config, step)
    assert torch.allclose(loss, (losses[0] + losses[1]) / 2) and torch.allclose(terms["prediction"], loss)
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        assert torch.equal(a, b)
    assert optimizers[0].state_dict()["state"][0]["step"] == 2  # two Adam steps


def test_a_release_run_counts_iterations_resumes_exactly_and_refuses_other_frame_sizes(tmp_path, zoo):
    """tmu_release's options on a tiny TMU target: one logged row and checkpoint per iteration,
    two Adam steps each, the same weights after a pause and resume as straight through."""
    release = {
        "model": {"hidden": [8], "norm": "release", "forget_bias": 0.0},
        "train_": {"reverse_input": True, "grad_clip": 0.0},
    }
    config = target_config([zoo["digits1"], zoo["digits2"]], bank="rollout", distill_weight=0.0, **release)
    train(config, tmp_path / "straight", progress=False)
    assert train(config, tmp_path / "resumed", progress=False, stop_at=3).iterations == 3
    assert train(config, tmp_path / "resumed", progress=False).resumed_from == 3
    straight, resumed = load_model(tmp_path / "straight").model, load_model(tmp_path / "resumed").model
    assert straight.frame_size == 16 and straight.forget_bias == 0.0
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    with open(tmp_path / "resumed" / "train.csv") as handle:
        assert [int(row["iteration"]) for row in csv.DictReader(handle)] == [2, 4, 6]
    _, checkpoint = latest_good_checkpoint(tmp_path / "resumed" / "checkpoints")
    assert checkpoint["iteration"] == 6 and checkpoint["optimizer"]["state"][0]["step"] == 12
    with pytest.raises(DataError, match="16x16 frames only"):
        straight.predict(torch.rand(1, 3, 1, 32, 32), 2)
