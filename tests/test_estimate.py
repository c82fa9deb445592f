"""The ``paper`` profile: the authors' protocol, its time estimate, and its refusal on the CPU."""

from __future__ import annotations

import pytest
import torch

from tests.support import tiny_raw
from transmem.benchmark.estimate import check_profile_device, step_seconds
from transmem.benchmark.planning import plain_step_cost, plan_benchmark
from transmem.benchmark.request import BenchmarkRequest
from transmem.benchmark.suites import PROFILES
from transmem.cli import main
from transmem.config import ConfigError, config_from_dict, load_config, parse_setting


def paper_tasks(tmp_path, methods=("scratch", "tmu", "fusion")):
    return plan_benchmark(BenchmarkRequest("digits", tmp_path / "bench", "paper", tuple(methods)), count_flops=False).tasks


def test_the_paper_profile_is_the_authors_protocol_for_every_run_of_digits(tmp_path):
    tasks = {t.name: t.config for t in paper_tasks(tmp_path)}
    assert set(tasks) == {"source digits1", "source digits2"} | {
        f"{m} seed {s}" for m in ("scratch", "tmu", "fusion") for s in (0, 1, 2)
    }
    for name, config in tasks.items():
        width = 128 if name.startswith("fusion") else 64  # fusion: two sources side by side
        assert config.model.hidden == [width] * 4 and (config.model.kernel, config.model.patch) == (5, 4)
        assert (config.data.batch_size, config.data.train_size, config.train.lr) == (8, 0, 3e-4)
        assert config.train.iterations == 80_000 and config.train.sampling_stop * 80_000 == 50_000
    with pytest.raises(ConfigError, match="--profile paper: defined for suite\\(s\\) digits only, not far"):
        plan_benchmark(BenchmarkRequest("far", tmp_path / "far", "paper"), count_flops=False)


def test_on_the_cpu_the_paper_profile_is_refused_with_the_time_it_would_take(tmp_path):
    tasks = paper_tasks(tmp_path, ["scratch"])
    calls = []

    def measure(config, device, variant):
        calls.append((config.model.hidden, device, variant))
        return 6.0  # seconds per plain step

    with pytest.raises(ConfigError) as refused:
        check_profile_device("paper", PROFILES["paper"], tasks, jobs=1, measure=measure)
    message = str(refused.value)
    # 3 scratch seeds (scratch needs no source), 80,000 iterations each, plain 4 x 64: 3 x 80,000 x 6 s
    assert message.startswith("--profile paper needs a CUDA GPU: here it would train on the CPU for about 16.7 days")
    assert "3 runs, 240,000 training iterations left, 6000 ms per step of the plain 4 x 64 network" in message
    assert calls == [([64] * 4, "cpu", "plain")]
    assert check_profile_device("full", PROFILES["full"], tasks, 1, measure=measure) is None and len(calls) == 1


def test_on_cuda_every_kind_of_step_is_timed_and_the_gpus_share_the_runs(tmp_path, monkeypatch):
    import transmem.benchmark.estimate as estimate
    import transmem.training.setup as setup

    monkeypatch.setattr(setup, "resolve_device", lambda name: torch.device("cuda"))
    monkeypatch.setattr(estimate, "gpu_count", lambda: 2)
    tasks = paper_tasks(tmp_path, ["scratch", "tmu", "fusion"])
    timed = []

    def measure(config, device, variant):
        timed.append((config.model.hidden[0], variant))
        return {(64, "plain"): 0.05, (64, "live"): 0.08, (128, "plain"): 0.12}[timed[-1]]

    line = check_profile_device("paper", PROFILES["paper"], tasks, jobs=4, measure=measure)
    assert sorted(timed) == [(64, "live"), (64, "plain"), (128, "plain")]  # each kind once
    # 2 sources + 3 scratch plain 4 x 64 steps, 3 TMU with live sources, 3 fusions 4 x 128; 80,000 each, 2 GPUs
    expected = (5 * 0.05 + 3 * 0.08 + 3 * 0.12) * 80_000 / 2
    assert line.startswith(f"estimated training time: about {expected / 3600:.1f} h (11 runs, 880,000 training iterations left")
    assert "steps measured just now on cuda: 4 x 64 50 ms, 4 x 64 with sources 80 ms, 4 x 128 120 ms; 2 at once" in line
    assert plain_step_cost(tasks[0].config) == 256**2  # the CPU's scaling unit (the test above)


def test_on_cuda_runs_whose_steps_differ_are_timed_apart_and_the_step_is_the_runs(tmp_path, monkeypatch):
    from dataclasses import replace

    import transmem.benchmark.estimate as estimate
    import transmem.training.setup as setup

    monkeypatch.setattr(setup, "resolve_device", lambda name: torch.device("cuda"))
    monkeypatch.setattr(estimate, "gpu_count", lambda: 1)
    scratch = paper_tasks(tmp_path, ["scratch"])  # three seeds, one kind of step
    first = scratch[0].config
    batch16 = replace(scratch[0], name="batch 16", config=replace(first, data=replace(first.data, batch_size=16)))
    predrnn = replace(scratch[0], name="predrnn", config=replace(first, model=replace(first.model, backbone="predrnn")))
    timed = []

    def measure(config, device, variant):
        timed.append((config.data.batch_size, config.model.backbone))
        return 0.05

    estimate.estimate_training([*scratch, batch16, predrnn], jobs=1, measure=measure)
    assert sorted(timed) == [(8, "convlstm"), (8, "predrnn"), (16, "convlstm")]  # the same name, three kinds of step
    # the timed workload trains the run's network: backbone, normalisation and clipping included
    timed_config = estimate.step_spec(predrnn.config).run_config()
    assert (timed_config.model.backbone, timed_config.model.norm) == ("predrnn", first.model.norm)
    assert timed_config.model.hidden == first.model.hidden and timed_config.train.grad_clip == first.train.grad_clip > 0


def test_step_seconds_times_a_real_step_and_restores_the_deterministic_mode():
    config = config_from_dict(tiny_raw())
    assert config.train.deterministic  # the workload turns torch's deterministic mode on, as training does
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(False)
    try:
        assert step_seconds(config, "cpu") > 0 and step_seconds(config, "cpu", "live") > 0  # live: two random sources
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(before)


def test_the_cli_refuses_the_paper_profile_on_the_cpu_in_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    import transmem.benchmark.estimate as estimate

    monkeypatch.setattr(estimate, "step_seconds", lambda config, device, variant: 6.0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "paper"
    assert main(["benchmark", "digits", "--profile", "paper", "--out", str(out), "--methods", "scratch"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("transmem: error: --profile paper needs a CUDA GPU")
    assert not out.exists()


def test_estimate_prints_the_time_any_profile_would_take_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "bench"
    tiny = ["--set", "train.iterations=4", "--set", "data.frame_size=16", "--set", "model.hidden=[8]"]
    command = ["benchmark", "digits", "--profile", "quick", "--out", str(out), "--methods", "scratch", *tiny]
    assert main([*command, "--estimate"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("estimated training time: about ") and "(1 run, 4 training iterations left" in line
    assert "of the plain 1 x 8 network measured just now on cpu, the other runs scaled by their cost, 1 at once" in line
    assert not out.exists()


def test_every_method_of_the_paper_profile_trains_with_its_settings(tmp_path, monkeypatch):
    """The paper's settings (online data, 4 layers, 5x5, every method, fusion at twice the width)
    shrunk to seconds, with the CUDA check bypassed: a GPU session must not find a config that breaks."""
    import transmem.benchmark.runner as runner
    from tests.support import TINY_BENCHMARK
    from transmem.benchmark.runner import run_benchmark

    monkeypatch.setattr(runner, "check_profile_device", lambda *args: "estimated training time: (not measured in the test)")
    tiny = [o for o in TINY_BENCHMARK if not o.startswith(("data.train_size", "model.hidden"))] + ["model.hidden=[8, 8, 8, 8]"]
    lines = []
    settings = tuple(map(parse_setting, tiny))
    request = BenchmarkRequest("digits", tmp_path / "paper", "paper", settings=settings, seeds=(0,), progress=False)
    results = run_benchmark(request, log=lines.append)
    assert lines[1] == "estimated training time: (not measured in the test)"
    methods = [row["method"] for row in results["rows"]]
    assert "fusion" in methods and "tmu_rollout" in methods and len(methods) == 11  # the default methods
    assert all(row["mse"] == row["mse"] for row in results["rows"])  # every run scored (no NaN)
    config = load_config(tmp_path / "paper" / "runs" / "fusion" / "seed0" / "config.toml")
    assert config.model.hidden == [16] * 4 and config.model.kernel == 5 and config.data.train_size == 0


def test_status_and_estimate_are_refused_together_and_nothing_is_written(tmp_path, capsys):
    out = tmp_path / "bench"
    with pytest.raises(SystemExit) as refused:  # --status used to answer alone, dropping --estimate
        main(["benchmark", "digits", "--profile", "quick", "--out", str(out), "--status", "--estimate"])
    assert refused.value.code == 2
    assert "argument --estimate: not allowed with argument --status" in capsys.readouterr().err
    assert not out.exists()
