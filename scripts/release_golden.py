"""Write the golden fixture of the authors' release (tests/fixtures/release_golden/).

Runs the release's own modules (github thuml/transferable-memory, imported from the checkout
given by ``--release``; none of their code is held here) on tiny shapes and records what
tests/test_release_golden.py compares transmem with:

- ``plain``: the release's ConvLSTM (``core/models/convlstm.py``), trained by its
  ``core/models/model_factory.py`` Model;
- ``tmu``: the release's TMU student (``core/models/adaptive_model.py``) with its two ConvLSTM
  teachers, trained by its ``core/models/model_adaptive.py`` Model (the first teacher holds the
  ``plain`` network's initial weights).

For each: the initial weights (release state-dict keys), the predictions and first-layer
memories of one rollout under a mixed scheduled-sampling mask, the loss and gradients of the
first optimiser step, and the weights after one iteration of the release's training with
``reverse_input = 1`` (two Adam steps: the batch, then the batch played backwards with the
same mask). The TMU part adds the distilled memories, the teachers' memories (forward and
reversed) and the release's distillation term, which its training computes and drops.

The iteration is the release's ``train`` function of ``core/trainer.py``, read from that file
and run as it is: the module itself cannot be imported here (it imports ``cv2``, which is not
installed, and ``skimage.measure.compare_ssim``, which scikit-image removed in 0.19), and its
``train`` uses neither. Everything runs in float32 on the CPU, as the release's Model casts
its inputs to float32.

    python scripts/release_golden.py --release /tmp/transferable-memory --commit 4f4f413
"""

from __future__ import annotations

import argparse
import ast
import datetime
import importlib
import json
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from safetensors.torch import save_file

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "release_golden" / "golden.safetensors"
#: The shapes: 2 layers of 8 channels, 3x3 kernels, 16x16 frames in 4x4 patches, 2 sources,
#: T = 6 frames of which 3 are inputs, batch 2; the learning rate is run.py's default.
SHAPES = {"batch": 2, "total_length": 6, "input_length": 3, "img_width": 16, "img_channel": 1, "patch_size": 4}
SHAPES.update(num_hidden="8,8", filter_size=3, stride=1, lr=0.001, seed=0)
MASK = [[1.0, 0.0], [0.0, 1.0]]  # the release's (B, T - T_in - 1): true frame (1) or own prediction (0)


def release_modules(root: Path) -> SimpleNamespace:
    """The release's modules, imported from the checkout ``root``, and its ``train`` function."""
    sys.path.insert(0, str(root))
    names = ("core.models.model_factory", "core.models.model_adaptive", "core.utils.preprocess")
    plain, adaptive, preprocess = (importlib.import_module(name) for name in names)
    return SimpleNamespace(plain=plain, adaptive=adaptive, preprocess=preprocess, train=_trainer_train(root))


def _trainer_train(root: Path):
    """``train`` of ``core/trainer.py``, compiled from that file alone (module docstring)."""
    path = root / "core" / "trainer.py"
    tree = ast.parse(path.read_text(), str(path))
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "train")
    namespace = {"np": np, "datetime": datetime}
    exec(compile(ast.Module(body=[node], type_ignores=[]), str(path), "exec"), namespace)
    return namespace["train"]


def release_configs(model_name: str, save_dir: str) -> SimpleNamespace:
    """The release's ``args`` for this fixture (run.py's names)."""
    return SimpleNamespace(
        model_name=model_name, device="cpu", save_dir=save_dir, layer_norm=1, reverse_input=1, display_interval=10**9,
        **{k: v for k, v in SHAPES.items() if k not in ("batch", "seed")},
    )  # fmt: skip


def batch_inputs(release: SimpleNamespace) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(frames (B, T, H, W, C), patches (B, T, h, w, p^2 C), mask (B, T - T_in - 1, h, w, p^2 C))``."""
    generator = torch.Generator().manual_seed(SHAPES["seed"])
    size, p, c = SHAPES["img_width"], SHAPES["patch_size"], SHAPES["img_channel"]
    frames = torch.rand(SHAPES["batch"], SHAPES["total_length"], size, size, c, generator=generator).numpy()
    patches = release.preprocess.reshape_patch(frames, p)
    mask = np.broadcast_to(
        np.array(MASK, dtype=np.float32)[:, :, None, None, None], (*np.array(MASK).shape, size // p, size // p, p * p * c)
    )
    return frames, patches, np.ascontiguousarray(mask)


def perturb_norms(network: torch.nn.Module, seed: int) -> None:
    """Give every LayerNorm random per-element affine weights (fresh ones are 1 and 0, which
    would not tell per-element from per-channel weights)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.copy_(1 + 0.3 * torch.randn(module.weight.shape, generator=generator))
                module.bias.copy_(0.3 * torch.randn(module.bias.shape, generator=generator))


def recorded_steps(model) -> list[dict]:
    """Wrap ``model.train`` (one release optimiser step) to record each step's loss and the
    gradients it applied; returns the list the records go to."""
    steps, step = [], model.train

    def recording(frames, mask, itr):
        loss = step(frames, mask, itr)
        grads = {k: p.grad.detach().clone() for k, p in model.network.named_parameters()}
        steps.append({"loss": torch.tensor(float(loss)), "grads": grads})
        return loss

    model.train = recording
    return steps


def train_iteration(release: SimpleNamespace, model, patches: np.ndarray, mask: np.ndarray, configs) -> list[dict]:
    """One iteration of the release's training (``trainer.train``, reverse_input = 1)."""
    steps = recorded_steps(model)
    release.train(model, patches, mask, configs, 1)
    assert len(steps) == 2, "reverse_input = 1 makes two optimiser steps per iteration"
    return steps


def images(release: SimpleNamespace, patches: torch.Tensor) -> torch.Tensor:
    """Release patches ``(B, T, h, w, p^2 C)`` as frames ``(B, T, H, W, C)``."""
    return torch.from_numpy(release.preprocess.reshape_patch_back(patches.numpy(), SHAPES["patch_size"]))


def stacked(states: list[torch.Tensor]) -> torch.Tensor:
    """Per-step states ``[(B, C, h, w)] * (T-1)`` as ``(B, T-1, C, h, w)``."""
    return torch.stack(states, dim=1)


def weights(prefix: str, network: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {f"{prefix}/{k}": v.detach().clone() for k, v in network.state_dict().items()}


def plain_golden(release: SimpleNamespace, patches, mask, work: str) -> dict[str, torch.Tensor]:
    """The release's ConvLSTM: weights, rollout, first step and one reverse_input iteration."""
    torch.manual_seed(SHAPES["seed"])
    configs = release_configs("convlstm", work)
    model = release.plain.Model(configs)
    out = weights("plain/weights0", model.network)
    with torch.no_grad():
        predictions, memories = model.network(torch.from_numpy(patches), torch.from_numpy(mask))
    out["plain/predictions"] = images(release, predictions)
    out["plain/memories"] = stacked(memories)
    first, second = train_iteration(release, model, patches, mask, configs)
    out.update({f"plain/grads0/{k}": g for k, g in first["grads"].items()})
    out.update({"plain/loss0": first["loss"], "plain/loss1": second["loss"]})
    out.update(weights("plain/weights2", model.network))
    return out


def tmu_model(release: SimpleNamespace, plain_weights: dict[str, torch.Tensor], work: str):
    """The release's TMU Model, its teachers loaded by its own ``load`` (teacher 1: the
    ``plain`` network's initial weights; teacher 2: a ConvLSTM of another seed)."""
    configs = release_configs("adaptive_model", work)
    torch.manual_seed(SHAPES["seed"] + 1)
    model = release.adaptive.Model(configs)
    perturb_norms(model.network, SHAPES["seed"] + 2)
    paths = [Path(work) / "teacher1.ckpt", Path(work) / "teacher2.ckpt"]
    torch.save({"net_param": plain_weights}, paths[0])
    torch.save({"net_param": model.network_teacher2.state_dict()}, paths[1])
    model.load(str(paths[0]), str(paths[1]))
    return model, configs


def tmu_rollout(model, patches: np.ndarray, mask: np.ndarray) -> dict[str, torch.Tensor]:
    """One rollout of the student beside its teachers: predictions, first-layer memories
    ``C_t``, distilled ``D^n_t``, the teachers' memories and the release's distillation term."""
    recorded = []
    hook = model.network.cell_list[0].register_forward_hook(lambda cell, inputs, out: recorded.append(out))
    frames, flags = torch.from_numpy(patches), torch.from_numpy(mask)
    with torch.no_grad():
        teachers = [model.network_teacher1(frames, flags)[1], model.network_teacher2(frames, flags)[1]]
        predictions, distill_term = model.network(frames, flags, teachers[0], teachers[1], True, 1)
    hook.remove()
    return {
        "predictions": predictions,
        "memories": stacked([out[1] for out in recorded]),
        "distilled": torch.stack([stacked([out[2] for out in recorded]), stacked([out[3] for out in recorded])], dim=2),
        "teacher_memories": torch.stack([stacked(t) for t in teachers], dim=0),
        "distill_term": distill_term.reshape(()),
    }


def tmu_golden(release: SimpleNamespace, patches, mask, plain_weights, work: str) -> dict[str, torch.Tensor]:
    """The release's TMU student: weights (its teachers' too), rollout, first step and one
    reverse_input iteration."""
    model, configs = tmu_model(release, plain_weights, work)
    out = weights("tmu/weights0", model.network)
    out.update(weights("tmu/teacher2", model.network_teacher2))
    rollout = tmu_rollout(model, patches, mask)
    rollout["predictions"] = images(release, rollout["predictions"])
    out.update({f"tmu/{k}": v for k, v in rollout.items()})
    reversed_rollout = tmu_rollout(model, np.flip(patches, axis=1).copy(), mask)
    out["tmu/teacher_memories_reversed"] = reversed_rollout["teacher_memories"]
    first, second = train_iteration(release, model, patches, mask, configs)
    out.update({f"tmu/grads0/{k}": g for k, g in first["grads"].items()})
    out.update({"tmu/loss0": first["loss"], "tmu/loss1": second["loss"]})
    out.update(weights("tmu/weights2", model.network))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--release", required=True, type=Path, help="a checkout of github thuml/transferable-memory")
    parser.add_argument("--commit", default="", help="the release's commit, recorded in the fixture")
    parser.add_argument("--out", type=Path, default=FIXTURE, help=f"the fixture file (default {FIXTURE})")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    release = release_modules(args.release.resolve())
    frames, patches, mask = batch_inputs(release)
    with tempfile.TemporaryDirectory() as work:
        out = plain_golden(release, patches, mask, work)
        plain_weights = {k.split("/", 2)[2]: v for k, v in out.items() if k.startswith("plain/weights0/")}
        out.update(tmu_golden(release, patches, mask, plain_weights, work))
    out.update(frames=torch.from_numpy(frames), mask=torch.tensor(MASK))
    out = {k: v.detach().to(torch.float32).contiguous() for k, v in out.items()}
    metadata = {"shapes": json.dumps(SHAPES), "release": "github thuml/transferable-memory", "commit": args.commit}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(args.out), metadata=metadata)
    args.out.chmod(0o644)
    print(f"wrote {args.out}: {len(out)} tensors, {args.out.stat().st_size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
