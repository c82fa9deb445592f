"""``transmem benchmark --choose``: each method's setting chosen on the validation split."""

from __future__ import annotations

import json
import math

import pytest

from tests.support import TINY_BENCHMARK, tiny_request
from transmem.benchmark.choice import choose_on_validation
from transmem.benchmark.planning import choice_candidates, plan_benchmark
from transmem.benchmark.run_logs import validation_curve
from transmem.benchmark.runner import run_benchmark
from transmem.cli import main
from transmem.config import ConfigError, load_config, parse_setting


def _row(method, seed, val_mse, mse):
    return {"method": method, "seed": seed, "val_mse": val_mse, "mse": mse}


def test_each_method_keeps_the_setting_of_its_lowest_mean_validation_mse_never_the_test_one():
    fast = [
        _row("scratch", 0, 10.0, 50.0),
        _row("scratch", 1, 12.0, 50.0),
        _row("fusion", 0, 7.0, 1.0),
        _row("fusion", 1, 9.0, 1.0),
    ]
    slow = [
        _row("scratch", 0, 11.0, 99.0),
        _row("scratch", 1, 10.0, 99.0),
        _row("fusion", 0, 8.0, 0.5),
        _row("fusion", 1, 8.0, 0.5),
    ]
    by_candidate = {
        "train.lr=0.01": (fast, [{"from": "fast", "i": i} for i in range(4)]),
        "train.lr=0.001": (slow, [{"from": "slow", "i": i} for i in range(4)]),
    }
    rows, per_run, choice = choose_on_validation(by_candidate)
    # scratch: 11.0 against 10.5 -> 0.001 (whose test MSE is worse); fusion: 8.0 against 8.0, a tie -> the first given
    assert choice["chosen"] == {"scratch": "train.lr=0.001", "fusion": "train.lr=0.01"}
    assert choice["validation"] == {
        "scratch": {"train.lr=0.01": 11.0, "train.lr=0.001": 10.5},
        "fusion": {"train.lr=0.01": 8.0, "train.lr=0.001": 8.0},
    }
    assert choice["setting"] == "train.lr" and choice["candidates"] == ["train.lr=0.01", "train.lr=0.001"]
    assert [(r["method"], r["seed"], r["mse"], r["chosen"]) for r in rows] == [
        ("scratch", 0, 99.0, "train.lr=0.001"),
        ("scratch", 1, 99.0, "train.lr=0.001"),
        ("fusion", 0, 1.0, "train.lr=0.01"),
        ("fusion", 1, 1.0, "train.lr=0.01"),
    ]
    assert [run["from"] for run in per_run] == ["slow", "slow", "fast", "fast"]


def test_a_value_whose_runs_have_no_validation_is_never_chosen():
    scored = [_row("scratch", 0, 30.0, 1.0)]
    unscored = [_row("scratch", 0, float("nan"), 0.1)]
    by_candidate = {"train.lr=0.1": (unscored, [{}]), "train.lr=0.2": (scored, [{}])}
    assert choose_on_validation(by_candidate)[2]["chosen"] == {"scratch": "train.lr=0.2"}
    with pytest.raises(ValueError, match="--choose: no validation MSE for any value of scratch"):
        choose_on_validation({"train.lr=0.1": (unscored, [{}]), "train.lr=0.2": (unscored, [{}])})


def test_fusion_is_as_wide_as_the_sources_each_value_fuses():
    request = tiny_request("/tmp/never-written", ["fusion"], suite="far", choose=("transfer.fuse=2", "transfer.fuse=3"))
    tasks = plan_benchmark(request, count_flops=False).tasks
    widths = {task.name: task.config.model.hidden for task in tasks if "fusion" in task.name}
    assert widths == {"transfer.fuse=2: fusion seed 0": [16, 16], "transfer.fuse=3: fusion seed 0": [24, 24]}


@pytest.mark.parametrize(
    ("choose", "fixed", "message"),
    [
        (["train.lr=0.001"], [], "--choose train.lr: needs two or more distinct values"),
        (["train.lr=0.001", "train.lr=0.001"], [], "needs two or more distinct values"),
        (["train.lr=0.001", "train.lr=1e-3"], [], "needs two or more distinct values"),  # one value spelt twice
        (
            ["train.lr=0.001", "train.grad_clip=3"],
            [],
            "--choose: every value must be of one setting, got train.lr, train.grad_clip",
        ),
        (["model.hidden=[8, 8]", "model.hidden=[16]"], [], "the value must be a plain number or word"),
        (["train.lr=0.001", "train.lr=../x"], [], "--choose train.lr=../x: the value must be a plain number or word"),
        (["Train.lr=0.1", "Train.lr=0.2"], [], "--choose Train.lr=0.1: expected section.key=value"),
        (["train.lr=", "train.lr=1"], [], "--choose train.lr=: expected section.key=value"),
        (["train.seed=1", "train.seed=2"], [], "--choose train.seed: not a setting to choose"),
        (["data.train_size=50", "data.train_size=100"], [], "--choose data.train_size: not a setting to choose"),
        (["transfer.method=tmu", "transfer.method=distill"], [], "not a setting to choose"),
        (["train.lr=0.001", "train.lr=0.01"], ["train.lr=0.1"], "--choose train.lr: also set by --set or --target-set"),
    ],
)
def test_choose_refuses_what_is_not_one_setting_with_several_plain_values(choose, fixed, message):
    with pytest.raises(ConfigError, match=message):
        choice_candidates(tuple(choose), dict(parse_setting(text) for text in fixed))


def test_choose_needs_a_validation_split_and_refuses_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "bench"
    with pytest.raises(ConfigError, match="--choose: chooses each method's setting on the validation split"):
        plan_benchmark(tiny_request(out, ["scratch"], settings=["data.val_size=0"], choose=("train.lr=0.1", "train.lr=0.01")))
    command = ["benchmark", "digits", "--out", str(out), "--methods", "scratch", "--choose", "train.lr=0.1"]
    assert main(command) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "transmem: error: --choose train.lr: needs two or more distinct values, got train.lr=0.1"
    ]
    assert not out.exists()


def test_a_chosen_benchmark_trains_every_setting_as_a_benchmark_of_its_own_and_reports_the_validation_choice(tmp_path):
    out = tmp_path / "bench"
    choose = ["train.lr=0.002", "train.lr=0.0005"]
    request = tiny_request(out, ["scratch", "finetune_best"], choose=tuple(choose))
    results = run_benchmark(request, log=lambda *_: None)
    for candidate, lr in zip(choose, (0.002, 0.0005)):
        for method in ("scratch", "finetune_best"):
            assert load_config(out / candidate / "runs" / method / "seed0" / "config.toml").train.lr == lr
        assert (out / candidate / "results.md").exists() and (out / candidate / "results.json").exists()
    assert (out / "sources" / "digits1").is_dir() and not (out / choose[0] / "sources").exists()  # one zoo for both

    # the choice, recomputed from each run's own val.csv (these runs keep their last weights)
    final_val = {
        (candidate, method): validation_curve(out / candidate / "runs" / method / "seed0")[-1][1]
        for candidate in choose
        for method in ("scratch", "finetune_best")
    }
    for method in ("scratch", "finetune_best"):
        assert results["choice"]["validation"][method] == pytest.approx({c: final_val[c, method] for c in choose})
        expected = min(choose, key=lambda c: final_val[c, method])
        assert results["choice"]["chosen"][method] == expected
        row = next(r for r in results["rows"] if r["method"] == method)
        own = json.loads((out / expected / "results.json").read_text())["rows"]
        assert row["chosen"] == expected and row["mse"] == next(r["mse"] for r in own if r["method"] == method)
    # time to quality against scratch at its own chosen value; training time of every value's runs
    scratch_value = results["choice"]["chosen"]["scratch"]
    scratch_final = validation_curve(out / scratch_value / "runs" / "scratch" / "seed0")[-1][1]
    tuned = next(r for r in results["rows"] if r["method"] == "finetune_best")
    curve = validation_curve(out / tuned["chosen"] / "runs" / "finetune_best" / "seed0")
    reached = [float(iteration) for iteration, mse in curve if mse <= scratch_final]
    assert tuned["iterations_to_scratch"] == reached[0] if reached else math.isnan(tuned["iterations_to_scratch"])
    every = [r for c in choose for r in json.loads((out / c / "results.json").read_text())["rows"]]
    assert results["train_seconds"]["targets"] == pytest.approx(sum(r["train_seconds"] for r in every), abs=0.2)
    text = (out / "results.md").read_text()
    assert "chosen on the validation split (`--choose`)" in text
    assert "| method | `train.lr=0.002` | `train.lr=0.0005` | chosen |" in text
    assert "--choose train.lr=0.002 --choose train.lr=0.0005" in text  # the Reproduce line
    own = (out / choose[1] / "results.md").read_text()  # each value's: its benchmark on its own
    assert f"--zoo {out / 'sources'}" in own and "--target-set train.lr=0.0005" in own and "--choose" not in own

    # resumed: nothing trains again, the same choice
    models = sorted(out.glob("*/runs/*/seed0/model.safetensors"))
    written = [path.stat().st_mtime_ns for path in models]
    again = run_benchmark(request, log=lambda *_: None)
    assert len(models) == 4 and [path.stat().st_mtime_ns for path in models] == written
    assert again["choice"] == results["choice"]


def test_status_lists_every_settings_runs(tmp_path, capsys):
    out = tmp_path / "bench"
    command = ["benchmark", "digits", "--out", str(out), "--methods", "scratch", "--status", "--seeds", "0"]
    assert (
        main(
            [*command, *[w for v in TINY_BENCHMARK for w in ("--set", v)], "--choose", "train.lr=0.1", "--choose", "train.lr=0.2"]
        )
        == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].endswith("0 of 2 runs finished")
    assert [line.split()[0] for line in lines[1:]] == ["train.lr=0.1:", "train.lr=0.2:"]
    assert not out.exists()
