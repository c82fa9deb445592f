"""``transmem speed``: the table, its ratios and the FLOP counting (no timing is asserted)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from transmem.cli import _parser, _speed_request, main
from transmem.config import ConfigError
from transmem.speed import checks, configs, flops, measure, sharing, timing
from transmem.speed.request import SpeedRequest


def _request(*argv: str) -> SpeedRequest:
    """The request ``transmem speed ARGV`` makes."""
    return _speed_request(_parser().parse_args(["speed", *argv]))


def test_conv_flops_by_hand():
    # 2 * Cin * Cout * k * k * H * W * B
    assert flops.conv_flops(48, 128, 3, 16, 16, 8) == 2 * 48 * 128 * 9 * 16 * 16 * 8 == 226_492_416
    assert flops.conv_flops(32, 16, 1, 16, 16) == 262_144


def test_step_flops_of_the_small_configuration_by_hand():
    spec = configs.CONFIGS["small"]  # ConvLSTM 2 x 32, 3x3, batch 8, 64x64 frames, patch 4 -> 16x16, 19 steps
    hw_b = 16 * 16 * 8
    layer0 = 2 * (16 + 32) * (4 * 32) * 9 * hw_b  # gates of [x (16 patch channels), H]
    layer1 = 2 * (32 + 32) * (4 * 32) * 9 * hw_b
    output = 2 * 32 * 16 * hw_b  # 1x1, back to 16 patch channels
    plain = 19 * 3 * (layer0 + layer1 + output)  # forward + backward (2x forward), 19 steps
    assert flops.total_flops(spec, flops.step_convs(spec, "plain")) == plain

    tmu_layer0 = 2 * (16 + 32) * (6 * 32) * 9 * hw_b  # 4 + N = 6 gate groups for N = 2 sources
    distillers = 2 * 32 * (2 * 32) * hw_b  # two 1x1 distillers
    cached = 19 * 3 * (tmu_layer0 + distillers + layer1 + output)
    assert flops.total_flops(spec, flops.step_convs(spec, "cached")) == cached

    sources = 2 * 19 * (layer0 + layer1 + output)  # two frozen sources, forward only
    assert flops.total_flops(spec, flops.step_convs(spec, "live")) == cached + sources


def test_paper_configuration_shapes():
    spec = configs.CONFIGS["paper"]
    assert (spec.hidden, spec.kernel, spec.batch, spec.frame_size, spec.patch) == ((64, 64, 64, 64), 5, 8, 64, 4)
    assert (spec.input_len, spec.total_len) == (10, 20)
    shapes = flops.step_convs(spec, "plain")
    assert [(s.in_channels, s.out_channels, s.kernel) for s in shapes] == [
        (80, 256, 5),
        (128, 256, 5),
        (128, 256, 5),
        (128, 256, 5),
        (64, 16, 1),
    ]


def test_check_marks_pass_and_fail():
    assert checks.Check("a", 1.2, "<= 1.25").passed
    assert not checks.Check("a", 1.3, "<= 1.25").passed
    assert checks.Check("b", 1.9, ">= 1.8").passed
    assert not checks.Check("b", 1.5, ">= 1.8").passed


def test_timing_statistics():
    measured = timing.Timing([4.0, 1.0, 3.0, 2.0, 5.0])
    assert measured.median == 3.0
    assert measured.quartiles == (2.0, 4.0)
    assert measured.summary()["min"] == 1.0 and measured.summary()["max"] == 5.0


@pytest.mark.slow
def test_run_prints_every_row_and_ratio(tmp_path, capsys):
    out = tmp_path / "speed.json"
    request = SpeedRequest(repeats=2, warmup=1, memory_steps=1, precision="bf16", channels_last=True, json_path=out, tiny=True)
    assert measure.measure_speed(request) == 0
    table = capsys.readouterr().out
    for row in (
        "train step, plain ConvLSTM",
        "train step, TMU, live bank",
        "train step, TMU, cached bank",
        "inference, ConvLSTM",
        "inference, TMU (no source loaded)",
        "GFLOP/s, plain ConvLSTM",
        "GFLOP/s, TMU, cached bank",
        "step memory, TMU, live bank",
        "step memory, TMU, cached bank",
        "train step, plain bf16",
        "train step, cached bf16",
        "train step, plain channels-last",
        "train step, cached bf16+channels-last",
        "TMU cached / plain step time",
        "TMU live / cached step time",
        "plain step / its convs alone, GFLOP/s",
        "cached step / its convs alone, GFLOP/s",
        "TMU / backbone inference time",
        "cached / live peak memory",
    ):
        assert row in table, row
    assert table.count("PASS") + table.count("FAIL") == 6
    assert "IQR" in table and "seq/s" in table
    saved = json.loads(out.read_text())
    (result,) = saved["results"]
    assert len(result["checks"]) == 6
    assert set(result["train"]) == {"plain", "live", "cached"}
    for entry in result["train"].values():
        assert entry["n"] == 2 and entry["median"] > 0 and entry["conv_alone_gflops"] > 0
    assert all(entry["peak_process_mb"] > 0 for entry in result["memory"].values())
    assert result["device"] == "cpu"  # --device auto on a machine without CUDA


@pytest.mark.cuda
def test_on_cuda_the_table_times_the_gpu_and_reports_its_memory(tmp_path, capsys):
    out = tmp_path / "speed.json"
    request = SpeedRequest(
        device="cuda", repeats=2, warmup=1, memory_steps=1, cuda_graph=True, channels_last=True, json_path=out, tiny=True
    )
    assert measure.measure_speed(request) == 0
    table = capsys.readouterr().out
    assert "CUDA" in table and "peak GPU memory allocated" in table and "train step, plain cuda-graph" in table
    assert "train step, plain channels-last+cuda-graph" in table
    (result,) = json.loads(out.read_text())["results"]
    assert result["device"] == "cuda" and {c["name"] for c in result["checks"]} == {
        "TMU live / cached step time",
        "TMU / backbone inference time",
        "cached / live peak GPU memory",
    }
    assert all(entry["peak_gpu_mb"] > entry["built_gpu_mb"] > 0 for entry in result["memory"].values())


def test_a_device_that_is_not_here_is_refused_in_one_line(monkeypatch):
    assert SpeedRequest().device == ("cuda" if torch.cuda.is_available() else "cpu")
    for name in ("tpu", "meta"):  # not a device torch knows; one it knows but that does not train
        with pytest.raises(ConfigError, match=f"--device: expected auto, cpu, cuda or cuda:N, got '{name}'"):
            SpeedRequest(device=name, tiny=True)
    with pytest.raises(ConfigError, match="--cuda-graph: captures the step in a CUDA graph and needs --device cuda, not cpu"):
        SpeedRequest(device="cpu", cuda_graph=True, tiny=True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="--device = 'cuda:0' but CUDA is not available here"):
        SpeedRequest(device="cuda:0", tiny=True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match="--device = 'cuda:1' but this machine has 1 CUDA device"):
        SpeedRequest(device="cuda:1", tiny=True)


def test_the_command_line_makes_a_checked_frozen_request():
    request = _request(
        "--device", "cpu", "--config", "small", "--repeats", "4", "--warmup", "0", "--precision", "bf16", "--compile",
        "--channels-last", "--threads", "2", "--no-memory", "--memory-steps", "5", "--json", "out.json",
        "--workdir", "work", "--strict", "--shared-machine", "--tiny",
    )  # fmt: skip
    assert request == SpeedRequest(
        device="cpu", config="small", repeats=4, warmup=0, precision="bf16", compile_model=True, channels_last=True,
        threads=2, memory=False, memory_steps=5, json_path=Path("out.json"), workdir=Path("work"), strict=True,
        shared_machine=True, tiny=True,
    )  # fmt: skip
    assert request.config_names == ("tiny",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.repeats = 1
    # every option of the command is a field of the request
    fields = {f.name for f in dataclasses.fields(SpeedRequest)}
    renamed = {"compile": "compile_model", "no_memory": "memory", "json": "json_path"}
    options = vars(_parser().parse_args(["speed"]))
    assert {renamed.get(name, name) for name in options} - {"command", "verbose"} == fields
    # the counts left unset take their defaults, fewer with --quick
    assert (_request().repeats, _request().warmup, _request().memory_steps) == (10, 2, 3)
    assert (_request("--quick").repeats, _request("--quick").warmup, _request("--quick").memory_steps) == (3, 1, 2)
    assert _request().config_names == ("small", "paper") and _request("--config", "paper").config_names == ("paper",)


def test_a_bad_count_or_choice_is_refused_in_one_line(capsys):
    for fields in ({"repeats": 0}, {"warmup": -1}, {"memory_steps": 0}, {"threads": 0}):
        with pytest.raises(ConfigError, match="speed: --repeats, --memory-steps and --threads must be >= 1, --warmup >= 0"):
            SpeedRequest(**fields)
    with pytest.raises(ConfigError, match="--config: expected small, paper, both, got 'large'"):
        SpeedRequest(config="large")
    with pytest.raises(ConfigError, match="--precision: expected float32 or bf16, got 'fp16'"):
        SpeedRequest(precision="fp16")
    assert main(["speed", "--tiny", "--repeats", "0"]) == 2  # the command prints the one line
    assert capsys.readouterr().err.strip() == (
        "transmem: error: speed: --repeats, --memory-steps and --threads must be >= 1, --warmup >= 0"
    )


def test_synchronize_brackets_every_timed_call():
    events = []
    timings = timing.measure_interleaved(
        {"a": lambda: events.append("a"), "b": lambda: events.append("b")}, 1, 2, lambda: events.append("sync")
    )
    assert events[:2] == ["a", "b"]  # warm-up, not timed
    assert events[2:] == ["sync", "a", "sync", "sync", "b", "sync"] * 2
    assert [len(t.seconds) for t in timings.values()] == [2, 2]


def test_gpu_checks_are_the_speed_issue_targets():
    def entry(seconds):
        return {"median": seconds}

    result = {
        "train": {"plain": entry(0.020), "live": entry(0.036), "cached": entry(0.028)},
        "inference": {"backbone": entry(0.010), "tmu": entry(0.011)},
        "memory": {"live": {"peak_gpu_mb": 900.0}, "cached": {"peak_gpu_mb": 800.0}},
    }
    paper = {c.name: (round(c.value, 3), c.passed) for c in checks.gpu_checks(configs.CONFIGS["paper"], result)}
    assert paper == {
        "TMU live / cached step time": (1.286, True),
        "TMU / backbone inference time": (1.1, True),
        "plain step (fastest timed), ms": (20.0, True),
        "TMU cached step (fastest timed), ms": (28.0, True),
        "release TMU step (H200) / TMU cached step": (3.111, True),
        "release TMU step (H200) / TMU live step": (2.419, False),  # 36 ms: not 3x the release's 87.1 ms
        "cached / live peak GPU memory": (0.889, True),
    }
    # the fastest option counts: a CUDA graph's 12 ms plain step passes where eager's 30 ms would not
    result["train"]["plain"] = entry(0.030)
    result["options"] = {"plain cuda-graph": entry(0.012), "cached bf16": entry(0.040)}
    by_name = {c.name: c for c in checks.gpu_checks(configs.CONFIGS["paper"], result)}
    assert by_name["plain step (fastest timed), ms"].value == pytest.approx(12.0)
    assert by_name["TMU cached step (fastest timed), ms"].value == pytest.approx(28.0)
    small = [c.name for c in checks.gpu_checks(configs.CONFIGS["small"], result)]
    assert small == ["TMU live / cached step time", "TMU / backbone inference time", "cached / live peak GPU memory"]


def test_strict_exit_status_follows_the_checks(monkeypatch, tmp_path, capsys):
    def fake(spec, request, folder, log):
        return {
            "config": {"name": spec.name}, "description": "", "train": {}, "inference": {}, "memory": {},
            "checks": [{"name": "x", "value": 2.0, "target": "<= 1.25", "passed": False}],
        }  # fmt: skip

    monkeypatch.setattr(measure, "measure_config", fake)
    assert measure.measure_speed(SpeedRequest(tiny=True, quick=True)) == 0
    assert measure.measure_speed(SpeedRequest(tiny=True, quick=True, strict=True)) == 1
    assert "FAIL" in capsys.readouterr().out
    assert main(["speed", "--tiny", "--quick", "--strict"]) == 1  # the command returns the status


def test_an_unwritable_json_path_is_refused_before_measuring(tmp_path, monkeypatch):
    measured = []
    monkeypatch.setattr(measure, "measure_config", lambda *a, **k: measured.append(1))
    for path in (tmp_path / "missing" / "speed.json", tmp_path):
        with pytest.raises(ConfigError, match="is a folder, or its folder does not exist"):
            SpeedRequest(json_path=path, tiny=True)
        assert main(["speed", "--tiny", "--json", str(path)]) == 2
    assert measured == []


def test_shared_machine_settings_the_timing_it_reads_and_its_table(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    before = sharing._environment(sharing.SETTINGS["libgomp default"], 4)
    assert before["GOMP_SPINCOUNT"] == "300000" and "OMP_WAIT_POLICY" not in before and before["OMP_NUM_THREADS"] == "4"
    passive = sharing._environment(sharing.SETTINGS["passive"], 4)
    assert passive["OMP_WAIT_POLICY"] == "PASSIVE" and passive["OMP_NUM_THREADS"] == "4"
    assert sharing._environment(sharing.SETTINGS["1 thread"], 4)["OMP_NUM_THREADS"] == "1"
    shared = sharing._environment(sharing.SETTINGS["transmem default"], 4)  # nothing pinned: transmem shares
    assert not {"OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & set(shared)
    assert sharing.torch_default_threads() >= 1  # asked of a process without OMP_NUM_THREADS (set to 2 here)
    (tmp_path / "train.csv").write_text("iteration,seconds_per_iteration\n2,9.0\n4,0.5\n6,0.7\n")
    assert sharing._seconds_per_iteration(tmp_path) == pytest.approx(0.6)  # the first (warm-up) row left out
    rows = [
        {"setting": "transmem default", "alone": 0.21, "pair": [0.4, 0.42], "slowdown": 2.0},
        {"setting": "libgomp default", "alone": 0.2, "pair": [4.0, 3.0], "slowdown": 20.0},
        {"setting": "passive", "alone": 0.22, "pair": [0.45, 0.44], "slowdown": 0.45 / 0.22},
    ]
    table = sharing.format_sharing(rows).splitlines()
    assert table[2] == "| transmem default | 0.210 | 0.400 / 0.420 | 2.00x | 1.05x |"  # against libgomp default's lone run
    assert table[3] == "| libgomp default | 0.200 | 4.000 / 3.000 | 20.00x | 1.00x |"
    assert table[4] == "| passive | 0.220 | 0.450 / 0.440 | 2.05x | 1.10x |"
    assert _request("--shared-machine").shared_machine
    assert (Path(sharing.__file__).parents[1] / "configs" / sharing.TRAINED_CONFIG).is_file()  # what each process trains
