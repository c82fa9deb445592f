"""README's walkthrough, end to end at tiny shapes: a user's own frames (.npy), a source the
user trained, a builtin source, a suite file, one ``transmem benchmark`` command, then
``transmem predict OUT/best``. And the suite files it refuses, each in one line before
anything is written."""

from __future__ import annotations

import json

import numpy as np
import pytest

from transmem.cli import main

FRAME = 16
# the builtin sources' architecture (ConvLSTM 2 x 32, 3x3, patch 4), so that they can be finetuned
SHARED = """
[model]
hidden = [32, 32]
kernel = 3
patch = 4

[train]
iterations = 2
log_every = 1
checkpoint_every = 1
"""
TARGET = f"""
[data]
name = "array_file"
frame_size = {FRAME}
input_len = 3
total_len = 6
train_size = 0
val_size = 4
test_size = 4
batch_size = 2

[data.options]
path = "frames.npy"
{SHARED}"""
SOURCE = f"""
[data]
name = "bouncing_balls"
frame_size = {FRAME}
input_len = 3
total_len = 6
train_size = 8
val_size = 2
test_size = 2
batch_size = 2
{SHARED}"""
# the quick profile's sizes, shrunk for the test (the sources are trained already)
QUICK = [
    "train.iterations=2",
    "train.val_every=1",
    "transfer.rank_probe=1",
    "data.train_size=0",
    "data.val_size=4",
    "data.test_size=4",
]


def moving_squares(count: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """``(count, length, FRAME, FRAME)`` uint8: a bright square moving one pixel per frame."""
    frames = np.zeros((count, length, FRAME, FRAME), np.uint8)
    for n in range(count):
        y, x = rng.integers(0, FRAME - 4, 2)
        dy, dx = rng.choice([-1, 1], 2)
        for t in range(length):
            yy, xx = (y + dy * t) % (FRAME - 4), (x + dx * t) % (FRAME - 4)
            frames[n, t, yy : yy + 4, xx : xx + 4] = 255
    return frames


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory):
    """A user's folder: frames.npy, target.toml, a trained source and suite.toml."""
    folder = tmp_path_factory.mktemp("user")
    np.save(folder / "frames.npy", moving_squares(40, 6, np.random.default_rng(0)))
    (folder / "target.toml").write_text(TARGET.replace('"frames.npy"', json.dumps(str(folder / "frames.npy"))))
    (folder / "source.toml").write_text(SOURCE)
    assert main(["train", str(folder / "source.toml"), "--out", str(folder / "runs" / "squares"), "--no-progress"]) == 0
    (folder / "suite.toml").write_text(
        'description = "moving squares from my own source and the builtin zoo"\n'
        'target = "target.toml"\n'
        'methods = ["scratch", "finetune_best", "fusion"]\n'
        "[sources]\n"
        'digits2 = "builtin:digits2"\n'
        'squares = "runs/squares"\n'
    )
    return folder


def test_one_command_compares_the_methods_and_exports_the_best_for_predict(user_folder, capsys):
    out = user_folder / "bench"
    argv = ["benchmark", str(user_folder / "suite.toml"), "--out", str(out), "--no-progress", "--budget", "flops"]
    assert main([*argv, *[w for s in QUICK for w in ("--set", s)]]) == 0
    printed = capsys.readouterr().out
    assert "test MSE minus finetune_best" in printed and "best on validation:" in printed
    results = json.loads((out / "results.json").read_text())
    assert {r["method"] for r in results["rows"]} == {"scratch", "finetune_best", "fusion"}
    flops = [r["train_flops"] for r in results["rows"]]
    assert max(flops) > 0 and all(np.isfinite(flops))
    best = json.loads((out / "best" / "best.json").read_text())
    by_validation = {r["method"]: r["val_mse"] for r in results["rows"]}
    assert best["method"] == min(by_validation, key=by_validation.get)  # one seed: the lowest validation MSE
    card = (out / "best" / "MODEL_CARD.md").read_text()
    assert best["method"] in card and "digits2" in card and "squares" in card and "transmem benchmark" in card
    run = next(r for r in results["rows"] if (r["method"], r["seed"]) == (best["method"], best["seed"]))
    assert f"| validation | {run['val_mse']:.2f} |" in card and f"| test | {run['mse']:.2f} | {run['mae']:.2f} |" in card
    np.save(user_folder / "inputs.npy", moving_squares(2, 3, np.random.default_rng(1))[:, :, None])  # (B, T, C, H, W)
    argv = ["predict", str(out / "best"), "--input", str(user_folder / "inputs.npy"), "--out", str(user_folder / "pred")]
    assert main(argv) == 0
    assert any((user_folder / "pred").iterdir())


def _refused(folder, capsys, suite_text: str, message: str, extra: list[str] | None = None) -> None:
    (folder / "bad.toml").write_text(suite_text)
    out = folder / "refused"
    code = main(["benchmark", str(folder / "bad.toml"), "--out", str(out), "--no-progress", *(extra or [])])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not out.exists()  # nothing written


@pytest.mark.parametrize(
    "suite_text, message",
    [
        ('target = "target.toml"\nsource = 1\n', "unknown key(s) source"),
        ('description = "no target"\n', "no target"),
        ('target = "missing.toml"\n', "config file not found"),
        ('target = "target.toml"\n[sources]\nempty = "nowhere"\n', "is not a finished run"),
        ('target = "target.toml"\n[sources]\nx = "builtin:nope"\n', "no builtin source builtin:nope"),
        ('target = "target.toml"\nmethods = ["tmu"]\n', "unknown method(s) tmu"),
    ],
)
def test_bad_suite_files_are_refused_in_one_line(user_folder, capsys, suite_text, message):
    _refused(user_folder, capsys, suite_text, message)


def test_sources_of_mixed_architectures_are_not_fused(user_folder, capsys):
    (user_folder / "small.toml").write_text(SOURCE.replace("[32, 32]", "[8, 8]"))
    assert main(["train", str(user_folder / "small.toml"), "--out", str(user_folder / "runs" / "small"), "--no-progress"]) == 0
    suite = 'target = "target.toml"\nmethods = ["fusion"]\n[sources]\nd = "builtin:digits2"\ns = "runs/small"\n'
    _refused(user_folder, capsys, suite, "fusing needs sources of one architecture")


def test_a_target_without_a_validation_split_is_refused(user_folder, capsys):
    text = (user_folder / "target.toml").read_text().replace("val_size = 4", "val_size = 0")
    (user_folder / "noval.toml").write_text(text)
    _refused(
        user_folder, capsys, 'target = "noval.toml"\nmethods = ["scratch"]\n', "validation split", ["--set", "data.val_size=0"]
    )


def test_a_target_whose_data_cannot_be_read_is_refused_before_anything_trains(user_folder, capsys):
    text = (user_folder / "target.toml").read_text().replace("frames.npy", "missing.npy")
    (user_folder / "nodata.toml").write_text(text)
    _refused(user_folder, capsys, 'target = "nodata.toml"\nmethods = ["scratch"]\n', "array file not found")


def test_a_source_named_like_a_method_suffix_is_refused(user_folder, capsys):
    suite = 'target = "target.toml"\n[sources]\nbest = "builtin:digits1"\nd = "builtin:digits2"\n'
    _refused(user_folder, capsys, suite, "two runs named 'finetune_best seed 0'")


def test_a_fusion_target_unlike_its_sources_is_refused_before_anything_trains(user_folder, capsys):
    suite = 'target = "target.toml"\nmethods = ["scratch", "fusion"]\n[sources]\nd = "builtin:digits2"\ne = "builtin:digits1"\n'
    _refused(user_folder, capsys, suite, "fusing needs the target's backbone", ["--target-set", "model.kernel=5"])
