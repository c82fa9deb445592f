"""Bad input on the command line: one line ``transmem: error: ...``, exit code 2, and the
folders involved are byte-for-byte unchanged (bad configs and overrides, bad frames, unusable
sources, replaced sources, edited configs, damaged checkpoints and models, unusable paths).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tomli_w
import torch

from tests.support import tiny_raw, write_config
from transmem.cli import main
from transmem.config import config_from_dict, load_config
from transmem.storage.checkpoints import list_checkpoints

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python < 3.11
    import tomli as tomllib


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


@pytest.fixture
def workspace(tmp_path, finished_run) -> tuple[Path, Path]:
    """A private copy of the session's finished run (with its config) inside ``tmp_path``."""
    config, run = finished_run
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
    refused(
        ["train", str(config), "--out", str(run), "--set", "data.total_len=3"],
        capsys,
        run.parent,
        "data.input_len: must be smaller",
    )
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
        (
            "NaN frames",
            np.where(np.arange(6 * 16 * 16).reshape(6, 16, 16) == 77, np.nan, 0.5).astype(np.float32),
            "NaN or infinite",
        ),
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
    refused(
        ["predict", str(run), "--input", str(frames), "--out", str(run.parent / "pred")],
        capsys,
        run.parent,
        "frames.npy",
        message,
    )
    assert not (run.parent / "pred").exists()


def test_predict_refuses_an_npz_archive_and_truth_that_does_not_match(workspace, capsys):
    _, run = workspace
    frames = np.zeros((2, 3, 1, 16, 16), np.uint8)
    np.save(run.parent / "frames.npy", frames)
    np.savez(run.parent / "frames.npz", frames=frames)
    np.save(run.parent / "one.npy", frames[:1])
    np.save(run.parent / "small.npy", np.zeros((2, 3, 1, 8, 8), np.uint8))
    out = str(run.parent / "pred")
    refused(
        ["predict", str(run), "--input", str(run.parent / "frames.npz"), "--out", out],
        capsys,
        run.parent,
        "frames.npz: an .npz archive",
    )
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


@pytest.mark.parametrize(
    "what, source, changes, message",
    [
        (
            "finetune from another architecture",
            "hidden8",
            {"model": {"hidden": [4]}, "transfer": {"method": "finetune"}},
            "finetuning needs the same architecture",
        ),
        (
            "source whose patch does not divide the frame size",
            "patch8",
            {"data": {"frame_size": 20}, "transfer": {"method": "tmu"}},
            "patch size 8 does not divide the target frame size 20",
        ),
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
    refused(
        ["train", str(config), "--out", str(tmp_path / "target"), "--no-progress"],
        capsys,
        tmp_path,
        f"source {unfinished}: unfinished run",
    )
    raw["transfer"]["sources"] = [str(list_checkpoints(unfinished / "checkpoints")[-1])]
    config = write_config(tmp_path / "target.toml", raw)
    assert main(["train", str(config), "--out", str(tmp_path / "target"), "--no-progress"]) == 0


@pytest.mark.parametrize(
    "replacement", ["same architecture, other weights", "other architecture", "other architecture, old checkpoint"]
)
def test_a_resume_after_its_source_was_replaced_is_refused(tmp_path, sources, replacement, monkeypatch):
    from transmem.run import resume
    from transmem.run.conflicts import RunConflictError
    from transmem.run.lifecycle import train

    source = Path(shutil.copytree(sources / "hidden8", tmp_path / "source"))
    raw = tiny_raw(
        train={"iterations": 4, "checkpoint_every": 2, "device": "cpu"}, transfer={"method": "tmu", "sources": [str(source)]}
    )
    target = config_from_dict(raw)
    train(target, tmp_path / "target", progress=False, stop_at=2)
    shutil.move(source, tmp_path / "set_aside")
    model = {"hidden": [8]} if replacement.startswith("same") else {"hidden": [4]}
    train(config_from_dict(tiny_raw(model=model, train={"iterations": 1, "seed": 7, "device": "cpu"})), source, progress=False)
    message = "source weights changed since ckpt-00000002.pt was written"
    if replacement.endswith("old checkpoint"):  # written before checkpoints recorded their sources
        latest = resume.latest_good_checkpoint

        def without_digests(*args, **kwargs):
            path, state = latest(*args, **kwargs)
            return path, {k: v for k, v in state.items() if k != "source_digests"}

        monkeypatch.setattr(resume, "latest_good_checkpoint", without_digests)
        message = "ckpt-00000002.pt does not fit this run's model"
    with pytest.raises(RunConflictError, match=message):
        train(target, tmp_path / "target", progress=False)
    # --force sets the old run aside and starts over from fresh weights.
    result = train(target, tmp_path / "target", progress=False, force=True)
    assert result.resumed_from == 0 and (tmp_path / "target" / "model.safetensors").exists()
    assert list((tmp_path / "target").glob("checkpoints.previous-*"))


def test_a_finished_run_stays_finished_when_its_source_changes_later(tmp_path, sources):
    from transmem.run.lifecycle import train

    source = Path(shutil.copytree(sources / "hidden8", tmp_path / "source"))
    target = config_from_dict(
        tiny_raw(train={"iterations": 2, "device": "cpu"}, transfer={"method": "tmu", "sources": [str(source)]})
    )
    train(target, tmp_path / "target", progress=False)
    weights = (tmp_path / "target" / "model.safetensors").read_bytes()
    train(
        config_from_dict(tiny_raw(model={"hidden": [8]}, train={"iterations": 1, "seed": 7, "device": "cpu"})),
        source,
        progress=False,
        force=True,
    )
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
    err = refused(
        ["train", str(edited), "--out", str(run), "--no-progress"],
        capsys,
        run.parent,
        "config.toml was edited after training",
        needle,
    )
    assert "nothing to do" not in err
    # The config it was trained with: config.toml is the odd one out.
    refused(
        ["train", str(config), "--out", str(run), "--no-progress"],
        capsys,
        run.parent,
        "config.toml was edited after training",
        "model.hidden",
    )
    # --force sets the old run aside and trains the edited config.
    assert main(["train", str(edited), "--out", str(run), "--no-progress", "--force"]) == 0
    assert load_config(run / "config.toml", stored=True).model.hidden == [16] and list(run.glob("model.safetensors.previous-*"))


def test_an_unfinished_run_whose_config_toml_was_edited_is_refused_naming_the_keys(tmp_path):
    from transmem.run.conflicts import RunConflictError
    from transmem.run.lifecycle import train

    raw = tiny_raw(train={"iterations": 4, "checkpoint_every": 2, "device": "cpu"})
    train(config_from_dict(raw), tmp_path / "run", progress=False, stop_at=2)
    _edit_config(tmp_path / "run" / "config.toml", "model", hidden=[16])
    before = snapshot(tmp_path / "run")
    edited = load_config(tmp_path / "run" / "config.toml")
    message = (
        r"ckpt-00000002\.pt was trained with another config .*model\.hidden = \[8\] in the checkpoint, \[16\] in the config given"
    )
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


@pytest.mark.parametrize(
    "damage", ["truncated", "bit flip", "bit flip, copied elsewhere", "garbage", "every checkpoint of an unfinished run"]
)
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
    refused(
        ["predict", str(checkpoint), "--input", str(checkpoint), "--out", str(run.parent / "p")],
        capsys,
        run.parent,
        str(checkpoint),
    )


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
    refused(
        ["evaluate", str(run), "--out", str(run.parent / "missing" / "m.json")],
        capsys,
        run.parent,
        "missing/m.json: no such file or folder",
    )
    (run.parent / "a_file").write_text("keep me")
    refused(["predict", str(run), "--input", str(frames), "--out", str(run.parent / "a_file")], capsys, run.parent, "a_file")
    for horizon in ("0", "-2"):
        refused(
            ["predict", str(run), "--input", str(frames), "--out", str(run.parent / "p"), "--horizon", horizon],
            capsys,
            run.parent,
            "--horizon: must be at least 1",
        )
    # A message with a line break (here quoted from the input) is still printed on one line.
    err = refused(
        ["train", str(run.parent / "cfg.toml"), "--out", str(run), "--set", "=\nx"],
        capsys,
        run.parent,
        "key must look like section.key",
    )
    assert "--set = x" in err


def test_predict_warns_about_frames_unlike_training_and_refuses_what_the_model_cannot_read(workspace, capsys):
    _, run = workspace  # trained on 3 input frames of 16x16, patch 4
    for name, shape, needle in [
        ("fewer.npy", (2, 1, 16, 16), "2 input frames, fewer than the 3 the model was trained on"),
        ("larger.npy", (3, 1, 32, 32), "frames of 32x32 pixels, the model was trained on 16x16"),
    ]:
        np.save(run.parent / name, np.zeros(shape, np.uint8))
        capsys.readouterr()
        assert (
            main(["predict", str(run), "--input", str(run.parent / name), "--out", str(run.parent / name.replace(".npy", ""))])
            == 0
        )
        err = capsys.readouterr().err.strip()
        assert err.startswith("transmem: warning: ") and needle in err and "\n" not in err, err
        assert np.load(run.parent / name.replace(".npy", "") / "prediction.npy").shape == (1, 3, 1, *shape[-2:])
    np.save(run.parent / "odd.npy", np.zeros((3, 1, 18, 18), np.uint8))
    refused(
        ["predict", str(run), "--input", str(run.parent / "odd.npy"), "--out", str(run.parent / "odd")],
        capsys,
        run.parent,
        "18x18",
        "patch size 4",
    )


def test_predict_length_follows_the_truth_as_its_help_says_and_writes_float32(workspace, capsys):
    from transmem.cli import _parser

    _, run = workspace
    np.save(run.parent / "in.npy", np.zeros((2, 3, 1, 16, 16), np.float64))
    np.save(run.parent / "truth.npy", np.zeros((2, 5, 1, 16, 16), np.uint8))
    argv = [
        "predict",
        str(run),
        "--input",
        str(run.parent / "in.npy"),
        "--truth",
        str(run.parent / "truth.npy"),
        "--out",
        str(run.parent / "p"),
    ]
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
    refused(
        argv,
        capsys,
        run.parent,
        f"--out {out}: holds earlier predictions (prediction.npy, prediction_0.gif, strip_0.png)",
        "--force",
    )
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
