"""Suites are data, budgets are fair, differences come with their uncertainty."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
from scipy import stats

from tests.support import TINY_BENCHMARK
from transmem.benchmark.budget import (
    FLOPS_TOLERANCE,
    RunFlops,
    flops_budget,
    iterations_within,
    run_flops,
    step_flops,
    with_iterations,
)
from transmem.benchmark.comparison import compare_methods, comparison_markdown, holm, welch
from transmem.benchmark.planning import plan_benchmark
from transmem.benchmark.request import BenchmarkRequest
from transmem.benchmark.suites import benchmark_methods, catalogue_method, configs_root, load_suite, shipped_suites
from transmem.config import ConfigError, TransferConfig, apply_settings, build_dataclass, deep_copy, load_config, parse_setting
from transmem.models import build_predictor

TINY = tuple(parse_setting(text) for text in TINY_BENCHMARK)


@pytest.mark.parametrize("suite", ["digits", "far", "video"])
def test_each_shipped_method_config_is_the_suite_target_with_the_catalogue_transfer(suite):
    """configs/<suite>/<method>.toml (for `transmem train`) and methods.toml say the same: the
    suite's target with the method's [transfer] table and its other target settings."""
    assert suite in shipped_suites()
    loaded = load_suite(suite)
    target = load_config(loaded.target).to_dict()
    for name, spec in benchmark_methods().items():
        shipped = load_config(configs_root() / suite / f"{name}.toml").to_dict()
        expected = {**deep_copy(target), "transfer": dataclasses.asdict(build_dataclass(TransferConfig, spec.transfer))}
        apply_settings(expected, spec.target)
        shipped["transfer"]["sources"] = []
        if spec.wide:
            shipped["model"]["hidden"] = target["model"]["hidden"]  # the planner sets it
        assert shipped == expected, name


def test_a_suite_without_sources_runs_the_methods_that_read_none(tmp_path):
    (tmp_path / "suite.toml").write_text(f'target = "{configs_root() / "digits" / "scratch.toml"}"\n')
    suite = load_suite(tmp_path / "suite.toml")
    assert suite.methods == ("scratch",)
    with pytest.raises(ConfigError, match="unknown method"):
        plan_benchmark(BenchmarkRequest(str(tmp_path / "suite.toml"), tmp_path / "out", methods=("tmu",)))


def test_the_budget_gives_every_method_the_costliest_methods_flops_within_5_percent(tmp_path):
    request = BenchmarkRequest("digits", tmp_path, settings=(*TINY, ("train.iterations", 20)), budget="flops", zoo="builtin")
    plan = plan_benchmark(request)
    flops = [run.train_flops for run in plan.runs]
    assert max(flops) / min(flops) < 1 + FLOPS_TOLERANCE
    assert max(plan.runs, key=lambda run: run.flops.per_iteration).method == "fusion"
    by_method = {run.method: run.config.train.iterations for run in plan.runs}
    assert by_method["fusion"] == 20  # the costliest trains the profile's iterations
    assert by_method["scratch"] > 20 and by_method["finetune_best"] > 20  # cheaper methods train longer
    same = plan_benchmark(BenchmarkRequest("digits", tmp_path, settings=(*TINY, ("train.iterations", 20)), zoo="builtin"))
    assert {run.config.train.iterations for run in same.runs} == {20}  # --budget iterations: today's behaviour


def test_budget_of_gives_methods_added_later_the_earlier_benchmarks_budget(tmp_path):
    settings = (*TINY, ("train.iterations", 20))
    earlier = plan_benchmark(
        BenchmarkRequest("digits", tmp_path, methods=("scratch", "fusion"), settings=settings, budget="flops", zoo="builtin")
    )
    added = BenchmarkRequest(
        "digits", tmp_path, methods=("scratch",), settings=settings, budget="flops", budget_of="fusion", zoo="builtin"
    )
    later = plan_benchmark(added)
    assert [run.method for run in later.runs] == ["scratch"] and not any("fusion" in task.name for task in later.tasks)
    iterations = {run.method: run.config.train.iterations for run in earlier.runs}
    assert later.runs[0].config.train.iterations == iterations["scratch"] > 20  # fusion's budget, fusion not run
    alone = plan_benchmark(replace(added, budget_of=None))
    assert alone.runs[0].config.train.iterations == 20  # without it scratch is its own costliest method
    assert added.command().endswith("--budget flops --budget-of fusion")
    with pytest.raises(ConfigError, match="--budget-of: unknown method"):
        plan_benchmark(replace(added, budget_of="fusoin"))
    with pytest.raises(ConfigError, match="--budget-of scratch: fusion would train [0-9]+ of its 20 iterations"):
        plan_benchmark(replace(added, methods=("fusion",), budget_of="scratch"))  # no method trains less
    with pytest.raises(ConfigError, match="--budget-of fusion needs --budget flops"):
        BenchmarkRequest("digits", tmp_path, budget_of="fusion")


def test_flops_count_the_sources_that_run_beside_the_target():
    config = load_config(configs_root() / "digits" / "tmu_rollout.toml", list(TINY_BENCHMARK))
    source = load_config(configs_root() / "digits" / "source_digits1.toml", list(TINY_BENCHMARK))
    rollout = run_flops(config, [source, source])
    plain = step_flops(build_predictor(config.model, 1), config)
    teacher_pass = step_flops(build_predictor(source.model, 1), source) / 3  # forward only: a third of a step
    assert rollout.once == 0
    assert rollout.per_iteration > plain + 2 * teacher_pass * 0.9  # two teachers' forward passes every step
    cached = run_flops(load_config(configs_root() / "digits" / "tmu.toml", list(TINY_BENCHMARK)), [source, source])
    assert cached.once > 0 and cached.per_iteration < rollout.per_iteration  # a cached bank is built once


def test_a_method_target_table_sets_the_target_after_the_profile_and_before_the_user(tmp_path):
    """tmu_release's `target` table (methods.toml) builds the release's step; --target-set still wins."""
    request = BenchmarkRequest("digits", tmp_path, methods=("tmu_release", "tmu_rollout"), settings=TINY, zoo="builtin")
    runs = {run.method: run for run in plan_benchmark(request).runs}
    release, rollout = runs["tmu_release"].config, runs["tmu_rollout"].config
    assert (release.model.norm, release.model.forget_bias, release.train.reverse_input) == ("release", 0.0, True)
    assert (release.train.grad_clip, release.train.sampling_stop, release.transfer.distill_weight) == (0.0, 0.625, 0.0)
    assert (rollout.model.norm, rollout.model.forget_bias, rollout.train.reverse_input) == ("none", 1.0, False)
    # two optimiser steps (and source rollouts) per iteration: twice tmu_rollout's FLOPs
    assert runs["tmu_release"].flops.per_iteration == pytest.approx(2 * runs["tmu_rollout"].flops.per_iteration, rel=0.02)
    mine = replace(request, methods=("tmu_release",), target_settings=(("model.forget_bias", 1.0),))
    assert plan_benchmark(mine).runs[0].config.model.forget_bias == 1.0
    assert "tmu_release" not in load_suite("digits").methods  # opt-in: --methods names it


def test_scratch_release_is_the_release_step_without_the_tmu_layer_or_sources(tmp_path):
    """The control of tmu_release: the same training step on the plain network, reading no source."""
    request = BenchmarkRequest("digits", tmp_path, methods=("scratch", "scratch_release"), settings=TINY)
    plan = plan_benchmark(request)
    runs = {run.method: run for run in plan.runs}
    control, scratch = runs["scratch_release"].config, runs["scratch"].config
    assert (control.model.forget_bias, control.train.grad_clip, control.train.reverse_input) == (0.0, 0.0, True)
    assert (control.train.sampling_stop, control.transfer.method, control.transfer.sources) == (0.625, "none", [])
    assert control.model.hidden == scratch.model.hidden
    assert (scratch.model.forget_bias, scratch.train.reverse_input) == (1.0, False)
    assert runs["scratch_release"].flops.per_iteration == pytest.approx(2 * runs["scratch"].flops.per_iteration, rel=0.02)
    assert not any("source" in task.name for task in plan.tasks)  # nothing is built or ranked for it
    assert "scratch_release" not in load_suite("digits").methods  # opt-in: --methods names it


def test_equal_flops_iterations_and_the_scaled_schedule():
    flops = [RunFlops(10.0, 0.0), RunFlops(37.0, 0.0), RunFlops(10.0, 70.0)]
    budget = flops_budget(flops, [100, 100, 100])
    assert budget == 3700 and iterations_within(budget, flops) == [370, 100, 363]
    assert iterations_within(50.0, flops) == [5, 1, 1]  # never fewer than one iteration
    config = load_config(configs_root() / "digits" / "scratch.toml", ["train.lr_schedule=step", "train.lr_step=100"])
    longer = with_iterations(config, 6000)
    assert longer.train.iterations == 6000 and longer.train.lr_step == 300
    assert longer.train.sampling_stop == config.train.sampling_stop  # a fraction: it scales by itself


def test_holm_adjusts_each_p_value_for_the_benchmarks_comparisons():
    # sorted: 0.005 x 4, 0.01 x 3, 0.03 x 2, then 0.04 x 1 kept at the running maximum 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    adjusted = holm([0.4, float("nan"), 0.02])  # NaN (one seed) is not a comparison: m = 2
    assert adjusted[0] == pytest.approx(0.4) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.04)
    assert holm([0.6, 0.7]) == [1.0, 1.0]
    rows = [
        {"method": m, "seed": s, "mse": v}
        for m, vs in (("finetune_best", (1, 2, 3)), ("a", (5, 6, 8)), ("b", (2, 3, 4)))
        for s, v in enumerate(vs)
    ]
    comparisons = compare_methods(rows)
    assert [c["p_holm"] for c in comparisons] == pytest.approx(holm([c["p_value"] for c in comparisons]))
    assert "| p | p (Holm) | verdict |" in comparison_markdown(comparisons)


def test_welch_interval_and_p_value_follow_the_textbook_formula():
    a, b = [154.8, 153.0, 152.1], [157.6, 156.2, 158.9, 157.0]
    result = welch(a, b)
    va, vb = stats.tvar(a) / len(a), stats.tvar(b) / len(b)
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = stats.t.ppf(0.975, dof) * math.sqrt(va + vb)
    difference = sum(a) / len(a) - sum(b) / len(b)
    assert result["difference"] == pytest.approx(difference)
    assert (result["ci_low"], result["ci_high"]) == pytest.approx((difference - half, difference + half))
    assert result["p_value"] == pytest.approx(2 * stats.t.sf(abs(difference) / math.sqrt(va + vb), dof))
    assert result["verdict"] == "beats"
    assert welch([1.0, 1.1], [1.0, 1.2])["verdict"] == "no difference shown"
    one = welch([1.0], [2.0])
    assert math.isnan(one["ci_low"]) and one["verdict"] == "one seed: no interval"


def test_methods_are_compared_with_finetune_best_else_scratch():
    rows = [
        {"method": m, "mse": v} for m, v in [("scratch", 3.0), ("scratch", 3.2), ("finetune_best", 2.0), ("finetune_best", 2.1)]
    ]
    (only,) = compare_methods(rows)
    assert only["method"] == "scratch" and only["reference"] == "finetune_best" and only["verdict"] == "loses"
    assert compare_methods([r for r in rows if r["method"] == "scratch"]) == []
    assert compare_methods(rows[:2] + [{"method": "tmu", "mse": 1.0}])[0]["reference"] == "scratch"


def test_the_suite_file_paths_are_relative_to_the_file(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "target.toml").write_text((configs_root() / "digits" / "scratch.toml").read_text())
    (folder / "suite.toml").write_text('target = "target.toml"\n[sources]\na = "../src.toml"\nb = "builtin:digits1"\n')
    suite = load_suite(folder / "suite.toml")
    assert suite.target == folder / "target.toml"
    assert suite.sources == {"a": str(tmp_path / "src.toml"), "b": "builtin:digits1"}
    assert suite.trains("a") and not suite.trains("b") and suite.name == "suite"
    assert Path(suite.path) == folder / "suite.toml"


#: SHA-256 (first 16 hex digits) of every task a shipped suite planned before suites were files
#: (name, config, run folder, needs, cost), out = /tmp/benchout: the same runs, bit for bit.
PLANNED_BEFORE = {
    ("digits", "quick", None, False): "85113674ea8ac7cf",
    ("digits", "quick", "builtin", False): "85113674ea8ac7cf",
    ("far", "quick", "builtin", True): "35839897c37a1e1d",
    ("digits", "full", None, False): "3144c08a9ed01aa2",
    ("far", "full", None, False): "69bd67f1505ce23c",
    ("video", "full", None, False): "4857b363c864c5bf",
    ("digits", "lowdata", None, False): "72bb3e69c26e1eba",
    ("far", "lowdata", None, False): "2da5dd6414818adb",
    ("video", "lowdata", None, False): "a6a411f4a539bf87",
    ("far", "quick", None, False): "b3f8bd52231726ad",
    ("video", "quick", None, False): "79a707ce54d383ba",
}


ADDED_SINCE = {"tmu_release", "scratch_release"}  # methods added to the catalogue since
KEYS_ADDED_SINCE = {("model", "forget_bias"): 1.0, ("train", "reverse_input"): False}  # at their defaults


def _as_before(config) -> dict:
    raw = config.to_dict()
    for (section, key), default in KEYS_ADDED_SINCE.items():
        assert raw[section].pop(key) == default
    return raw


@pytest.mark.parametrize("key", list(PLANNED_BEFORE))
def test_the_shipped_suites_plan_the_runs_they_planned_before_they_were_files(key):
    suite, profile, zoo, every_method = key
    settings = (("data.train_size", 40),) if profile == "quick" else ()
    methods = tuple(m for m in benchmark_methods() if m not in ADDED_SINCE) if every_method else None
    request = BenchmarkRequest(suite, Path("/tmp/benchout"), profile, methods, settings, zoo=zoo)
    tasks = [
        {"name": t.name, "config": _as_before(t.config), "run_dir": str(t.run_dir), "needs": list(t.needs), "cost": t.cost}
        for t in plan_benchmark(request, count_flops=False).tasks
    ]
    assert hashlib.sha256(json.dumps(tasks, sort_keys=True).encode()).hexdigest()[:16] == PLANNED_BEFORE[key]


def test_a_tables_method_name_resolves_to_its_catalogue_method():
    assert catalogue_method("finetune_digits1") == "finetune"  # a per-source method's run
    assert catalogue_method("finetune_best") == "finetune_best" and catalogue_method("tmu_ft") == "tmu_ft"
    assert catalogue_method("tmu_digits1") is None  # tmu is not per-source
    assert catalogue_method("nope") is None
