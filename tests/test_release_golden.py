"""transmem against the authors' release (github thuml/transferable-memory), on its golden fixture.

``tests/fixtures/release_golden/golden.safetensors`` holds what the release's own modules
computed (``scripts/release_golden.py``; how to regenerate it: the README beside it): a plain
ConvLSTM and a TMU student with two ConvLSTM teachers, their rollouts under a mixed
scheduled-sampling mask, the first step's loss and gradients, and the weights after one
iteration of the release's training with ``reverse_input = 1``. Here the release's weights go
into transmem models (:func:`~transmem.models.release.load_release_state`), transmem's own
training step runs with the options of ``configs/<suite>/tmu_release.toml``, and everything
agrees to 1e-5 of its scale. With any one of those options set back to transmem's default,
something disagrees by more than 1e-3.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from transmem.benchmark.suites import benchmark_methods
from transmem.config import apply_settings, config_from_dict, deep_copy
from transmem.data.batch import TrainingBatch
from transmem.models import RecurrentPredictor, patchify
from transmem.models.release import load_release_state, release_state_to_transmem, release_teacher_mask
from transmem.storage.model_file import save_model
from transmem.training.setup import training_optimizer
from transmem.training.step import reversed_batch, step_loss, training_step
from transmem.transfer.methods import METHODS

FIXTURE = Path(__file__).parent / "fixtures" / "release_golden" / "golden.safetensors"
AGREE, DISAGREE = 1e-5, 1e-3

#: The options of tmu_release that make transmem's step the release's.
RELEASE = {
    "model.norm": "release",
    "model.forget_bias": 0.0,
    "train.reverse_input": True,
    "train.grad_clip": 0.0,
    "transfer.distill_weight": 0.0,
    "transfer.bank": "rollout",
}
#: Each release-exact option set back to what transmem does without it.
REVERTED = {
    "forget_bias": {"model.forget_bias": 1.0},
    "norm none": {"model.norm": "none"},
    "norm group": {"model.norm": "group"},
    "reverse_input": {"train.reverse_input": False},
    "distill_weight": {"transfer.distill_weight": 0.1},
    "bank": {"transfer.bank": "live"},
}


@pytest.fixture(scope="module")
def golden() -> dict:
    """The fixture's tensors, with ``frames`` ``(B, T, C, H, W)``, transmem's ``mask`` and ``shapes``."""
    tensors = load_file(str(FIXTURE))
    with safe_open(str(FIXTURE), framework="pt") as handle:
        shapes = json.loads(handle.metadata()["shapes"])
    tensors["frames"] = tensors["frames"].permute(0, 1, 4, 2, 3).contiguous()
    tensors["mask"] = release_teacher_mask(tensors["mask"], shapes["input_length"])
    return {**tensors, "shapes": shapes}


def part(golden: dict, prefix: str) -> dict[str, torch.Tensor]:
    """The fixture's tensors under ``prefix/`` (a release state dict), keys without it."""
    return {k[len(prefix) + 1 :]: v for k, v in golden.items() if k.startswith(prefix + "/")}


def error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """Largest difference, relative to the release's scale where that exceeds 1."""
    return float((ours.detach() - theirs).abs().max() / max(1.0, float(theirs.abs().max())))


def run_config(golden: dict, tmp_path: Path, kind: str, settings: dict):
    """The config of a transmem run as the fixture's release run: ``kind`` "plain" (method
    none) or "tmu" (its two teachers saved as sources), with ``settings`` over :data:`RELEASE`."""
    shapes = golden["shapes"]
    raw = {
        "data": {"name": "moving_digits", "frame_size": shapes["img_width"], "channels": shapes["img_channel"]},
        "model": {"hidden": [int(h) for h in shapes["num_hidden"].split(",")], "kernel": shapes["filter_size"]},
        "train": {"lr": shapes["lr"], "device": "cpu"},
    }
    raw["data"].update(input_len=shapes["input_length"], total_len=shapes["total_length"], batch_size=shapes["batch"])
    raw["model"]["patch"] = shapes["patch_size"]
    if kind == "tmu":
        teachers = {"plain/weights0": tmp_path / "teacher1.safetensors", "tmu/teacher2": tmp_path / "teacher2.safetensors"}
        sources = [save_teacher(part(golden, name), raw, path) for name, path in teachers.items()]
        raw["transfer"] = {"method": "tmu", "sources": sources, "layers": [0], "memory_merge": "sum"}
    return config_from_dict(apply_settings(deep_copy(raw), {**RELEASE, **settings}))


def save_teacher(weights: dict, raw: dict, path: Path) -> str:
    """A release ConvLSTM teacher as a transmem model file (no forget bias, as the release's)."""
    config = config_from_dict(apply_settings(deep_copy(raw), {"model.forget_bias": 0.0}))
    teacher = RecurrentPredictor("convlstm", 1, config.model.hidden, config.model.kernel, config.model.patch, forget_bias=0.0)
    load_release_state(teacher, weights)
    save_model(teacher, config, path)
    return str(path)


def release_model(config, model: RecurrentPredictor, state: dict) -> RecurrentPredictor:
    """``model``'s architecture built release-exact (norm "release", no forget bias), the
    release's ``state`` loaded: the reference a reverted model takes its parameters from."""
    exact = RecurrentPredictor(
        "convlstm", model.channels, model.hidden, config.model.kernel, model.patch, "release", model.transfer_layout,
        forget_bias=0.0, frame_size=config.data.frame_size,
    )  # fmt: skip
    load_release_state(exact, state)
    return exact


def counterpart(name: str, names) -> str | None:
    """``name``'s parameter in a model whose gate convolutions are (not) followed by a norm."""
    for candidate in (name, name.replace("gate_conv.0.", "gate_conv."), name.replace("gate_conv.", "gate_conv.0.")):
        if candidate in names:
            return candidate
    return None


def same_parameters(values: dict[str, torch.Tensor], model: RecurrentPredictor) -> dict[str, torch.Tensor]:
    """``values`` (by the release-exact model's names) renamed for ``model``, where a
    parameter of the same shape exists (a reverted norm has no LayerNorm to receive)."""
    mine = dict(model.named_parameters())
    out = {}
    for name, value in values.items():
        other = counterpart(name, mine)
        if other is not None and mine[other].shape == value.shape:
            out[other] = value
    return out


def conformance(golden: dict, tmp_path: Path, kind: str, settings: dict) -> dict[str, float]:
    """Every disagreement (:func:`error`) between the release and transmem built and trained
    with ``settings`` over :data:`RELEASE`, on the fixture's ``kind`` ("plain" or "tmu")."""
    config = run_config(golden, tmp_path, kind, settings)
    method = METHODS[config.transfer.method](config, tmp_path / "run", torch.device("cpu"))
    model = method.build_model()
    method.prepare(model, None, progress=False)
    reference = release_model(config, model, part(golden, f"{kind}/weights0"))
    with torch.no_grad():
        parameters = dict(model.named_parameters())
        for name, value in same_parameters(reference.state_dict(), model).items():
            parameters[name].copy_(value)
    batch = TrainingBatch(list(range(golden["frames"].shape[0])), golden["frames"], golden["mask"])
    errors = rollout_errors(golden, kind, model, method, batch)
    errors.update(gradient_errors(golden, kind, model, method, config, batch, reference))
    errors.update(iteration_errors(golden, kind, model, method, config, batch, reference))
    return errors


def rollout_errors(golden: dict, kind: str, model, method, batch: TrainingBatch) -> dict[str, float]:
    """Predictions and first-layer memories (TMU: distilled memories and the memory bank, on
    the batch and on the batch played backwards)."""
    with torch.no_grad():
        rollout = model(batch.frames, batch.mask, record_layers=[0], return_inputs=True)
        errors = {
            "predictions": error(rollout.predictions, golden[f"{kind}/predictions"].permute(0, 1, 4, 2, 3)),
            "memories": error(rollout.memories[0], golden[f"{kind}/memories"]),
        }
        if kind == "tmu":
            errors["distilled"] = error(rollout.distilled[0], golden["tmu/distilled"])
            bank = method.bank.get(batch, rollout.inputs)
            errors["teacher memories"] = error(torch.stack([m[0] for m in bank]), golden["tmu/teacher_memories"])
            back = reversed_batch(batch)
            bank = method.bank.get(back, model(back.frames, back.mask, return_inputs=True).inputs)
            errors["teacher memories reversed"] = error(
                torch.stack([m[0] for m in bank]), golden["tmu/teacher_memories_reversed"]
            )
    return errors


def gradient_errors(golden: dict, kind: str, model, method, config, batch: TrainingBatch, reference) -> dict[str, float]:
    """The first step's loss and gradients (TMU: the release's unused distillation term, which
    is ``N (T-1) / (B T)`` times transmem's mean)."""
    model.zero_grad(set_to_none=True)
    loss, terms = step_loss(model, model, method, config, batch, 0)
    loss.backward()
    release_grads = release_state_to_transmem(reference, part(golden, f"{kind}/grads0"), gradients=True)
    parameters = dict(model.named_parameters())
    grads = [error(parameters[name].grad, value) for name, value in same_parameters(release_grads, model).items()]
    errors = {"loss": error(loss, golden[f"{kind}/loss0"]), "gradients": max(grads)}
    if kind == "tmu":
        batch_size, total = batch.frames.shape[:2]
        scale = model.transfer_unit(0).num_sources * (total - 1) / (batch_size * total)
        errors["distill term"] = error(terms["distill"] * scale, golden["tmu/distill_term"])
    return errors


def iteration_errors(golden: dict, kind: str, model, method, config, batch: TrainingBatch, reference) -> dict[str, float]:
    """One iteration of transmem's training step: its logged loss (the release's mean of the
    two steps) and the weights after it."""
    optimizer = training_optimizer(model, config)
    loss, _ = training_step(model, model, method, optimizer, None, config, batch, 0, lambda loss: AssertionError(loss))
    after = release_state_to_transmem(reference, part(golden, f"{kind}/weights2"))
    parameters = dict(model.named_parameters())
    weights = [error(parameters[name], value) for name, value in same_parameters(after, model).items()]
    mean_loss = (golden[f"{kind}/loss0"] + golden[f"{kind}/loss1"]) / 2
    return {"iteration loss": error(loss, mean_loss), "weights after one iteration": max(weights)}


@pytest.mark.parametrize("kind", ["plain", "tmu"])
def test_transmem_with_the_release_options_agrees_with_the_release(golden, tmp_path, kind):
    errors = conformance(golden, tmp_path, kind, {})
    assert max(errors.values()) < AGREE, errors


@pytest.mark.parametrize("option", list(REVERTED))
def test_each_release_option_reverted_breaks_the_agreement(golden, tmp_path, option):
    errors = conformance(golden, tmp_path, "tmu", REVERTED[option])
    assert max(errors.values()) > DISAGREE, errors


def test_the_shipped_tmu_release_method_sets_exactly_these_options():
    spec = benchmark_methods()["tmu_release"]
    settings = {**spec.target, **{f"transfer.{key}": value for key, value in spec.transfer.items()}}
    assert {key: settings[key] for key in RELEASE} == RELEASE


def test_the_fixture_is_the_release_commit_it_names():
    with safe_open(str(FIXTURE), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["commit"] == "4f4f413" and metadata["release"] == "github thuml/transferable-memory"
    assert FIXTURE.stat().st_size < 600_000


def test_patch_channels_map_from_the_release_order_for_several_channels():
    """The release's patches order channels ``(py p + px) C + c``, transmem's ``c p^2 + py p + px``:
    a first layer loaded from the release reads transmem's patches as the release reads its own."""
    torch.manual_seed(0)
    channels, patch, hidden = 3, 2, 4
    model = RecurrentPredictor("convlstm", channels, [hidden], 3, patch, forget_bias=0.0)
    release = {
        "cell_list.0.conv.0.weight": torch.randn(4 * hidden, channels * patch * patch + hidden, 3, 3),
        "cell_list.0.conv.0.bias": torch.randn(4 * hidden),
        "conv_last.weight": torch.randn(channels * patch * patch, hidden, 1, 1),
    }
    load_release_state(model, release)
    frame = torch.rand(1, 1, channels, 4, 4)
    ours = patchify(frame, patch)[0, 0]  # (C p^2, 2, 2)
    theirs = frame[0, 0].reshape(channels, 2, patch, 2, patch).permute(2, 4, 0, 1, 3).reshape(-1, 2, 2)  # (py, px, c)
    weight = model.cells[0].gate_conv.weight[:, : channels * patch * patch]
    expected = release["cell_list.0.conv.0.weight"][:, : channels * patch * patch]
    i, f, o, g = torch.nn.functional.conv2d(theirs[None], expected, padding=1).split(hidden, dim=1)  # the release's gates
    assert torch.allclose(torch.nn.functional.conv2d(ours[None], weight, padding=1), torch.cat([i, f, g, o], 1), atol=1e-5)
    permuted = model.output.weight[:, :, 0, 0]  # output rows: transmem's order
    assert torch.equal(permuted[1], release["conv_last.weight"][channels, :, 0, 0])  # c = 0, py p + px = 1


def test_the_mapping_refuses_what_the_release_cannot_have():
    plain = RecurrentPredictor("convlstm", 1, [4], 3, 4)
    release = {"cell_list.0.conv.0.weight": torch.zeros(16, 20, 3, 3), "cell_list.0.conv.0.bias": torch.zeros(16)}
    with pytest.raises(ValueError, match="no place in the model: extra"):
        release_state_to_transmem(plain, {**release, "conv_last.weight": torch.zeros(16, 4, 1, 1), "extra": torch.zeros(1)})
    tmu = RecurrentPredictor("convlstm", 1, [4], 3, 4, "none", {0: {"source_channels": [4, 4]}})
    with pytest.raises(ValueError, match="norm = 'release'"):
        release_state_to_transmem(tmu, release)
    with pytest.raises(ValueError, match="ConvLSTM"):
        release_state_to_transmem(RecurrentPredictor("predrnn", 1, [4], 3, 4), release)
