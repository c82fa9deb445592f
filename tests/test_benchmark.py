"""The transfer benchmark: every method runs, the suite resumes, tables are right."""

import csv
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tests.support import TINY_BENCHMARK, tiny_request
from transmem.benchmark.planning import plan_benchmark
from transmem.benchmark.request import BenchmarkRequest
from transmem.benchmark.results import ResultsContext, write_results
from transmem.benchmark.runner import run_benchmark
from transmem.benchmark.scheduler import threads_per_run
from transmem.benchmark.suites import PROFILES, load_suite
from transmem.cli import main
from transmem.run.lifecycle import train
from transmem.storage.locks import FileLock, LockedError

TINY = TINY_BENCHMARK
QUIET = lambda *_: None  # noqa: E731


def plan(suite, profile="full", out="unused", methods=None, **options):
    """The plan of a benchmark, its training FLOPs not counted (planning tests need none)."""
    methods = tuple(methods) if methods else None
    return plan_benchmark(BenchmarkRequest(suite, Path(out), profile, methods, **options), count_flops=False)


@pytest.fixture(scope="module")
def tiny_benchmark(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    results = run_benchmark(tiny_request(out), log=QUIET)
    return out, results


def test_every_method_runs_and_results_are_written(tiny_benchmark):
    out, results = tiny_benchmark
    methods = [row["method"] for row in results["rows"]]
    assert methods == [
        "scratch",
        "finetune_digits1",
        "finetune_digits2",
        "finetune_best",
        "distill",
        "tmu_nodistill",
        "kflow",
        "tmu",
        "tmu_rollout",
        "tmu_ft",
        "fusion",
    ]  # scratch_wide is opt-in (--methods)
    for name in ("results.md", "results.csv", "results.json", "per_frame.png", "predictions.gif", "transfer_gates.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "comparison.csv").stat().st_size > 0
    # every method the profile's iterations (--budget iterations), each with its training FLOPs
    assert {row["iterations"] for row in results["rows"]} == {2} and all(row["train_flops"] > 0 for row in results["rows"])
    assert [c["method"] for c in results["comparison"]] == [m for m in methods if m != "finetune_best"]
    assert results["best"]["method"] in methods and (out / "best" / "MODEL_CARD.md").exists()
    table = (out / "results.md").read_text()
    assert all(method in table for method in methods) and "copy last frame" in table
    with open(out / "results.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == len(methods)
    saved = json.loads((out / "results.json").read_text())
    assert saved["environment"]["torch"] and saved["sources"]["digits1"]["mse"] > 0
    assert "Time to quality" in table
    # the command that reruns it names every option that changed what ran
    assert f"Reproduce: `transmem benchmark digits --profile quick --out DIR --set {TINY[0]} --set" in table
    assert saved["command"].startswith("transmem benchmark digits --profile quick --out DIR --set")
    # the cached-bank TMU runs (tmu, tmu_ft) share one memory bank folder per (sources, dataset,
    # layers); finetune_best and tmu_ft share one source ranking
    banks = [p for p in (out / "memory_bank").iterdir() if p.is_dir() and p.name != "source_rank"]
    assert len(banks) == 1 and len(list((out / "memory_bank" / "source_rank").iterdir())) == 1
    best = next(row for row in results["rows"] if row["method"] == "finetune_best")
    tmu_ft = next(row for row in results["rows"] if row["method"] == "tmu_ft")
    assert best["init_source"] in ("digits1", "digits2") and tmu_ft["init_source"] == best["init_source"]
    assert f"finetune_best (seed 0) {best['init_source']}" in table
    chosen = next(row for row in results["rows"] if row["method"] == f"finetune_{best['init_source']}")
    assert best["mse"] == chosen["mse"]  # the same run once the source is chosen


def test_a_rerun_that_trains_nothing_reports_the_runs_training_time_and_counts_runs(tiny_benchmark):
    out, first = tiny_benchmark
    lines = []
    again = run_benchmark(tiny_request(out), log=lines.append)
    assert [line for line in lines if line.startswith("run ")][:2] == [
        "run 1 of 13: source digits1",
        "run 2 of 13: source digits2",
    ]
    from transmem.benchmark.run_logs import train_seconds

    trained = again["train_seconds"]  # from the runs' train.csv, the same as when they trained
    assert trained == first["train_seconds"]
    assert trained["targets"] == round(sum(r["train_seconds"] for r in again["rows"]), 1)
    assert trained["sources"] == round(sum(train_seconds(out / "sources" / name) for name in ("digits1", "digits2")), 1)
    total = trained["targets"] + trained["sources"]
    assert f"training the runs took {total:.0f} s (targets {trained['targets']:.0f} s" in (out / "results.md").read_text()


def test_the_lowdata_profile_is_full_with_100_sequences_and_best_validation_weights():
    low = plan("digits", "lowdata", methods=["scratch", "finetune_best"]).tasks
    full = plan("digits", "full", methods=["scratch", "finetune_best"]).tasks
    for task in low:
        config = task.config
        if task.name.startswith("source"):  # the same sources as full: a zoo trained for full is reused
            assert config == next(t.config for t in full if t.name == task.name)
        else:
            assert (config.data.train_size, config.train.val_every, config.train.weights) == (100, 100, "best_val")
            assert config.train.iterations == 1500


def test_the_reproduce_command_names_every_option_that_changes_the_runs():
    from transmem.config import parse_setting

    assert BenchmarkRequest("far", Path("x"), "full").command() == "transmem benchmark far --profile full --out DIR"
    request = BenchmarkRequest(
        "digits",
        Path("x"),
        "lowdata",
        ("scratch", "fusion"),
        (parse_setting("data.frame_size=16"),),
        (parse_setting("train.lr=0.01"),),
        seeds=(0, 1),
        zoo="builtin",
        jobs=2,
    )
    assert request.command() == (
        "transmem benchmark digits --profile lowdata --out DIR --zoo builtin --methods scratch fusion --seeds 0 1 "
        "--set data.frame_size=16 --target-set train.lr=0.01 --jobs 2"
    )
    assert replace(request, budget="flops").command().endswith("--target-set train.lr=0.01 --budget flops --jobs 2")
    quoted = BenchmarkRequest("digits", Path("x"), settings=(parse_setting('transfer.sources=["a b"]'),)).command()
    assert quoted.endswith("""--set 'transfer.sources=["a b"]'""")
    # every setting on the one line (results.md's Reproduce line), as the user would type it
    wide = BenchmarkRequest("digits", Path("x"), settings=(parse_setting("model.hidden=[8, 8]"),)).command()
    assert wide.endswith("--set 'model.hidden=[8, 8]'") and "\n" not in wide


def test_time_left_is_estimated_from_the_work_trained_so_far(tmp_path):
    from tests.support import tiny_raw
    from transmem.benchmark.scheduler import Task, TimeLeft, remaining_iterations, remaining_work
    from transmem.config import config_from_dict

    estimate = TimeLeft(3)
    assert (
        estimate.line(1, "source a", 300, 300.0)
        == "run 1 of 3: source a (300 iterations to train from here; time left estimated after the first run)"
    )
    estimate.record(400.0, 50.0)  # a wide run: 100 iterations of cost 4 each in 50 s
    estimate.record(0.0, 9.0)  # a run trained earlier: no information
    # 200 narrow iterations (cost 1 each) left: 25 s, not the 100 s that 0.5 s per iteration would say
    assert estimate.line(2, "tmu seed 0", 200, 200.0) == "run 2 of 3: tmu seed 0 (about 25 s left for 200 iterations)"
    assert estimate.line(3, "kflow seed 0", 0, 0.0) == "run 3 of 3: kflow seed 0"
    assert TimeLeft(3, jobs=2).time_left(10, 10.0) == "10 iterations to train from here; time left estimated after the first run"
    task = Task("x", config_from_dict(tiny_raw(train={"iterations": 10})), tmp_path / "run", cost=30.0)
    assert remaining_iterations(task) == 10 and remaining_work(task) == 30.0
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "ckpt-00000004.pt").write_bytes(b"")
    assert remaining_iterations(task) == 6 and remaining_work(task) == pytest.approx(18.0)
    (tmp_path / "run" / "model.safetensors").write_bytes(b"")
    assert remaining_iterations(task) == 0 and remaining_work(task) == 0.0


def test_finished_runs_are_skipped_and_interrupted_runs_resume(tiny_benchmark):
    out, _ = tiny_benchmark
    finished = out / "runs" / "scratch" / "seed0" / "model.safetensors"
    stamp = finished.stat().st_mtime_ns
    interrupted = out / "runs" / "tmu" / "seed0"
    (interrupted / "metrics.json").unlink()
    (interrupted / "model.safetensors").unlink()
    # Scores that are not the run's test scores are computed again, never put in the table.
    damaged = out / "runs" / "scratch" / "seed0" / "metrics.json"
    damaged.write_text("{bad")
    validation = out / "runs" / "finetune_digits1" / "seed0" / "metrics.json"
    validation.write_text(validation.read_text().replace('"split": "test"', '"split": "val"'))
    of_a_checkpoint = out / "runs" / "finetune_digits2" / "seed0" / "metrics.json"
    of_a_checkpoint.write_text(of_a_checkpoint.read_text().replace('"finished": true', '"finished": false'))
    run_benchmark(tiny_request(out), log=QUIET)
    assert finished.stat().st_mtime_ns == stamp
    for scores in (damaged, validation, of_a_checkpoint):
        metrics = json.loads(scores.read_text())
        assert metrics["split"] == "test" and metrics["finished"] is True
    assert (interrupted / "metrics.json").exists() and (interrupted / "model.safetensors").exists()
    rows = [r for r in csv.DictReader(open(interrupted / "train.csv"))]
    assert [int(r["iteration"]) for r in rows] == [1, 2]  # resumed from its checkpoint, no repeated rows


def test_table_marks_best_per_column_on_fake_runs(tmp_path):
    def metrics(mse, ssim):
        frame = lambda v: {"per_frame": [0.5 * v, 1.5 * v], "mean": v}  # noqa: E731
        return {
            "mse": frame(mse),
            "mae": frame(mse),
            "mse_pixel": frame(mse / 256),
            "ssim": frame(ssim),
            "psnr": frame(20.0 + ssim),
        }

    rows, per_run = [], []
    for method, seed, mse, ssim in [
        ("scratch", 0, 50.0, 0.6),
        ("scratch", 1, 54.0, 0.62),
        ("tmu", 0, 40.0, 0.7),
        ("tmu", 1, 42.0, 0.71),
    ]:
        m = metrics(mse, ssim)
        m["copy_last_frame"] = metrics(90.0, 0.5)
        rows.append(
            {
                "method": method,
                "seed": seed,
                **{k: m[k]["mean"] for k in ("mse", "mae", "mse_pixel", "ssim", "psnr")},
                "train_seconds": 1.0,
                "threads": "1",
            }
        )
        per_run.append(SimpleNamespace(method=method, seed=seed, metrics=m, run_dir=tmp_path))
    import transmem.benchmark.results as runner

    def context(source_metrics, jobs=1):
        command = BenchmarkRequest("digits", tmp_path, jobs=jobs).command()
        return ResultsContext(load_suite("digits"), "quick", PROFILES["quick"], source_metrics, 1.0, jobs, 0.0, command)

    runner_pictures = runner._write_pictures
    runner._write_pictures = lambda *a, **k: ["per_frame.png", "validation.png"]  # pictures need real runs; tested above
    try:
        write_results(tmp_path, context({}), rows, per_run)
        assert "Sources on their own test sets: none (no chosen method reads a source)" in (tmp_path / "results.md").read_text()
        assert "Weights kept" not in (tmp_path / "results.md").read_text()  # no run kept its best-validation weights
        rows[0]["kept_iteration"] = "800"  # a train.weights = "best_val" run
        results = write_results(tmp_path, context({"digits1": None}, jobs=2), rows, per_run)
    finally:
        runner._write_pictures = runner_pictures
    page = (tmp_path / "results.md").read_text()
    assert "Sources on their own test sets: digits1: no test set" in page
    kept = f"Weights kept (train.weights = best_val: those of the lowest validation MSE), iteration: {rows[0]['method']} (seed 0) 800"
    assert kept in page
    assert "tmu (seed 1) 1.0 on 1 thread(s)" in page and "threads_mean" not in results["summary"][0]
    # How to reproduce it, thread count included (it changes CPU results).
    assert "`transmem benchmark digits --profile quick --out DIR --jobs 2`" in page
    assert (
        "training the runs took 4 s (targets 4 s and sources 0 s, summed from their train.csv" in page
    )  # from the rows, not this session's 1 s
    assert f"the runs it trained had {threads_per_run(2)} torch thread(s) each" in page and results["environment"]["jobs"] == 2
    assert "![validation MSE over training](validation.png)" in page and "predictions.gif" not in page  # only those written
    lines = {line.split("|")[1].strip(): line for line in results["table"].splitlines()[2:]}
    assert "**41 ± 1.414**" in lines["tmu"] or "**41.00 ± 1.414**" in lines["tmu"]
    assert "**" not in lines["scratch"].split("|")[3]  # mse column: scratch is not best
    assert "**" not in lines["copy last frame"]
    # The per-frame MSE table: mean over seeds, frame by frame, and the copy baseline.
    assert "| frame | 1 | 2 |" in page and "| tmu | 20.5 | 61.5 |" in page and "| scratch | 26.0 | 78.0 |" in page
    assert "| copy last frame | 45.0 | 135.0 |" in page and results["per_frame"]["tmu"]["mse"] == [20.5, 61.5]


def test_threads_per_run_splits_this_process_threads():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        assert [threads_per_run(jobs) for jobs in (1, 2, 3, 8)] == [4, 2, 1, 1]
    finally:
        torch.set_num_threads(before)


def test_plan_covers_every_seed_and_finetune_source(tmp_path):
    far = load_suite("far")
    runs = plan("far", out=tmp_path).runs
    methods = {r.method for r in runs}
    assert {"finetune_balls", "finetune_advection", "finetune_video", "tmu", "kflow", "scratch"} <= methods
    # every default method (the opt-in controls scratch_wide and fusion_random are not) but "finetune",
    # one run per source instead, 3 seeds
    assert far.methods[:2] == ("scratch", "finetune") and not {"scratch_wide", "fusion_random"} & set(far.methods)
    assert len(runs) == 3 * (len(far.methods) - 1 + len(far.sources)) == 36
    assert not methods & {"scratch_wide", "fusion_random"}
    control = plan("far", out=tmp_path, methods=["scratch_wide", "fusion_random"]).runs
    assert [r.method for r in control] == ["scratch_wide", "fusion_random"] * 3
    assert control[0].sources == [] and control[1].sources == list(far.sources)
    with pytest.raises(ValueError, match="unknown method"):
        plan("far", out=tmp_path, methods=["nope"])
    # One finetune by its run name, in the suite's order whatever the order asked.
    picked = plan("far", out=tmp_path, methods=["tmu", "finetune_advection"]).runs
    assert [r.method for r in picked] == ["finetune_advection", "tmu"] * 3
    assert picked[0].sources == ["advection"] and picked[0].run_dir == tmp_path / "runs" / "finetune_advection" / "seed0"
    assert picked[0].config.transfer.sources == [str(tmp_path / "sources" / "advection")] == picked[0].source_paths
    # Only the sources the chosen runs read are trained.
    tasks = lambda methods: [t.name for t in plan("far", out=tmp_path, methods=methods).tasks if t.name.startswith("source")]  # noqa: E731
    assert tasks(["scratch"]) == [] and tasks(["finetune_video", "scratch"]) == ["source video"]
    assert tasks(None) == ["source balls", "source advection", "source video"]
    with pytest.raises(ValueError, match="unknown method.*finetune_mnist"):
        plan("far", out=tmp_path, methods=["finetune_mnist"])


def test_cli_rejects_unknown_suite(capsys):
    assert main(["benchmark", "nope", "--out", "x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["transmem: error: suite nope: neither a suite file nor a shipped suite (digits, far, video)"]
    assert main(["benchmark", "digits", "--out", "x", "--jobs", "0"]) == 2
    assert "--jobs must be at least 1, got 0" in capsys.readouterr().err


def test_time_to_quality_reads_validation_and_training_logs(tmp_path):
    from transmem.benchmark.run_logs import time_to_quality, train_seconds

    (tmp_path / "train.csv").write_text("iteration,loss,seconds_per_iteration\n10,1,0.5\n20,1,0.25\n30,1,1.0\n")
    (tmp_path / "val.csv").write_text("iteration,mse,mae,ssim,psnr\n10,90,0,0,0\n20,70,0,0,0\n30,60,0,0,0\n")
    assert train_seconds(tmp_path) == 10 * 0.5 + 10 * 0.25 + 10 * 1.0
    assert time_to_quality(tmp_path, 75.0) == (20.0, 7.5)
    assert time_to_quality(tmp_path, 90.0) == (10.0, 5.0)
    iterations, seconds = time_to_quality(tmp_path, 50.0)
    assert math.isnan(iterations) and math.isnan(seconds)  # never reached


def test_seeds_option_adds_seeds_to_a_finished_benchmark(tiny_benchmark):
    out, _ = tiny_benchmark
    scratch0 = out / "runs" / "scratch" / "seed0" / "model.safetensors"
    stamp = scratch0.stat().st_mtime_ns
    results = run_benchmark(tiny_request(out, ["scratch"], seeds=(0, 1)), log=QUIET)
    assert [(r["method"], r["seed"]) for r in results["rows"]] == [("scratch", 0), ("scratch", 1)]
    assert scratch0.stat().st_mtime_ns == stamp  # seed 0 reused, only seed 1 trained
    assert [(m["method"], m["n"]) for m in results["summary"]] == [("scratch", 2)]
    assert "2 seeds (0, 1)" in (out / "results.md").read_text()
    with pytest.raises(ValueError, match="distinct non-negative"):  # a ConfigError: one line from the CLI
        run_benchmark(tiny_request(out, ["scratch"], seeds=(1, 1)), log=QUIET)


def test_environment_names_the_source_commit_from_any_folder(tmp_path, monkeypatch):
    import subprocess
    from pathlib import Path

    from transmem.benchmark.results import environment

    here = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent)
    monkeypatch.chdir(tmp_path)  # not a git repository
    expected = here.stdout.strip() if here.returncode == 0 else "unknown"
    assert environment()["commit"] == expected


def test_zoo_is_shared_between_suites_and_a_conflicting_source_is_refused(tiny_benchmark, tmp_path, capsys):
    out, _ = tiny_benchmark
    zoo = out / "sources"
    digits2 = zoo / "digits2" / "model.safetensors"
    stamp = digits2.stat().st_mtime_ns
    video = BenchmarkRequest("video", tmp_path, "quick", ("tmu",), zoo=str(zoo))
    (tmu,) = plan_benchmark(video, preflight=False, count_flops=False).runs  # reading only: its digits2 differs
    assert str(zoo / "digits2") in tmu.config.transfer.sources  # the video suite's TMU reads the shared source
    # same name and config: reused as it is; another config under a taken name: refused, nothing written
    before = sorted(p.name for p in zoo.iterdir())
    code = main(
        [
            "benchmark",
            "digits",
            "--out",
            str(tmp_path / "b"),
            "--zoo",
            str(zoo),
            "--methods",
            "finetune",
            "--no-progress",
            *[f"--set={o}" for o in TINY],
            "--set=model.hidden=[4, 4]",
        ]
    )
    assert code == 2 and "holds a finished run of a different config" in capsys.readouterr().err
    assert digits2.stat().st_mtime_ns == stamp and sorted(p.name for p in zoo.iterdir()) == before


def test_target_overrides_leave_the_sources_alone(tiny_benchmark, tmp_path):
    out, _ = tiny_benchmark
    request = tiny_request(tmp_path, ["tmu"], zoo=str(out / "sources"), target_settings=(("train.lr", 0.002),))
    results = run_benchmark(request, log=QUIET)
    assert [r["method"] for r in results["rows"]] == ["tmu"]
    from transmem.config import load_config

    assert load_config(tmp_path / "runs" / "tmu" / "seed0" / "config.toml").train.lr == 0.002
    assert load_config(out / "sources" / "digits1" / "config.toml").train.lr == 0.001
    assert not (tmp_path / "sources").exists()


def test_a_benchmark_resumes_whatever_the_spelling_of_its_folder(tiny_benchmark, monkeypatch):
    out, _ = tiny_benchmark
    monkeypatch.chdir(out.parent)
    results = run_benchmark(tiny_request(out.name, ["tmu"]), log=QUIET)
    assert [r["method"] for r in results["rows"]] == ["tmu"]  # found finished, not refused as another config


def test_status_reports_each_run_without_writing(tiny_benchmark, tmp_path, capsys):
    from transmem.benchmark.status import benchmark_status

    out, _ = tiny_benchmark
    rows = benchmark_status(tiny_request(out))
    assert [r["state"] for r in rows] == ["finished"] * 13 and rows[0]["run"] == "source digits1"
    # a fresh benchmark: one source half trained, another process training it now
    fresh = tmp_path / "fresh"
    (source,) = [t for t in plan_benchmark(tiny_request(fresh)).tasks if t.name == "source digits1"]
    long = replace(source.config, train=replace(source.config.train, iterations=4))
    train(long, source.run_dir, progress=False, stop_at=1)
    before = sorted(str(p) for p in fresh.rglob("*"))
    rows = {r["run"]: r["state"] for r in benchmark_status(tiny_request(fresh))}
    assert rows["source digits1"] == "holds another config" and rows["source digits2"] == "not started"
    source.run_dir.joinpath("config.toml").write_text(source.config.to_toml())  # same config as the benchmark now
    holder = FileLock(source.run_dir / "train.lock")
    holder.acquire()
    try:
        argv = ["benchmark", "digits", "--out", str(fresh), "--status", *[a for item in TINY for a in ("--set", item)]]
        assert main(argv) == 0
    finally:
        holder.release()
    printed = capsys.readouterr().out
    assert "0 of 13 runs finished" in printed
    assert re.search(rf"source digits1 +at iteration 1 of 2 \(training now, pid {os.getpid()}\)\n", printed)
    assert sorted(str(p) for p in fresh.rglob("*")) == before


# ----------------------------------------------------------------------------- --jobs


def test_a_finished_run_copied_into_another_benchmark_folder_is_the_same_run(tiny_benchmark, tmp_path):
    """A target's config names its benchmark's cache folder; copied into another benchmark (the
    same run there, but another cache folder) it is found finished, while another setting is not."""
    from transmem.benchmark.status import benchmark_status

    out, _ = tiny_benchmark
    other = tmp_path / "other"
    shutil.copytree(out / "runs" / "tmu", other / "runs" / "tmu")
    request = tiny_request(other, ["tmu"], zoo=str(out / "sources"))  # the sources it was trained from
    (task,) = [t for t in plan_benchmark(request, preflight=False).tasks if t.name.startswith("tmu")]
    assert task.config.transfer.cache_dir.startswith(str(other))  # not the folder it was trained in
    states = {r["run"]: r["state"] for r in benchmark_status(request)}
    assert states[task.name] == "finished"
    retuned = replace(request, settings=(*request.settings, ("train.lr", 0.5)))
    states = {r["run"]: r["state"] for r in benchmark_status(retuned)}
    assert states[task.name] == "holds another config"


def test_parallel_benchmark_respects_source_order_and_matches_the_serial_one(tiny_benchmark, tmp_path):
    serial_out, serial = tiny_benchmark
    lines: list[str] = []

    def parallel() -> dict:
        return run_benchmark(tiny_request(tmp_path / "parallel", ["scratch", "finetune", "tmu"], jobs=2), log=lines.append)

    results = parallel()
    assert [r["method"] for r in results["rows"]] == ["scratch", "finetune_digits1", "finetune_digits2", "tmu"]
    assert lines[1] == f"6 runs on 2 worker processes, {max(1, torch.get_num_threads() // 2)} torch thread(s) each"
    started = {line[len("start ") :].split(" (")[0]: n for n, line in enumerate(lines) if line.startswith("start ")}
    assert re.fullmatch(r"start source digits1 \(run 1 of 6; 12 iterations to train from here; .*\)", lines[2]), lines[2]
    done = {line[len("done ") :].split(" (")[0]: n for n, line in enumerate(lines) if line.startswith("done ")}
    assert (
        set(started)
        == set(done)
        == {
            "source digits1",
            "source digits2",
            "scratch seed 0",
            "finetune_digits1 seed 0",
            "finetune_digits2 seed 0",
            "tmu seed 0",
        }
    )
    assert started["finetune_digits1 seed 0"] > done["source digits1"]
    assert started["finetune_digits2 seed 0"] > done["source digits2"]
    assert started["tmu seed 0"] > max(done["source digits1"], done["source digits2"])
    # Same runs as the serial benchmark (one torch thread per worker: equal up to float rounding).
    expected = {r["method"]: r["mse"] for r in serial["rows"]}
    for row in results["rows"]:
        assert row["mse"] == pytest.approx(expected[row["method"]], rel=1e-3), row["method"]
    assert (tmp_path / "parallel" / "results.md").exists()
    # Rerun: every run finished earlier is read here, no worker process starts.
    lines.clear()
    again = parallel()
    assert not [line for line in lines if line.startswith("start ")]
    assert sum(line.endswith(": finished earlier)") for line in lines) == 6
    assert [(r["method"], r["mse"], r["ssim"]) for r in again["rows"]] == [
        (r["method"], r["mse"], r["ssim"]) for r in results["rows"]
    ]


def test_a_failing_parallel_run_stops_the_benchmark_with_its_error(tmp_path):
    from tests.support import tiny_config
    from transmem.benchmark.scheduler import Task, run_tasks
    from transmem.run.conflicts import RunConflictError
    from transmem.run.lifecycle import train

    train(tiny_config(train={"lr": 1e-2}), tmp_path / "taken", progress=False)
    tasks = [Task("good", tiny_config(), tmp_path / "good"), Task("taken", tiny_config(), tmp_path / "taken")]
    with pytest.raises(RunConflictError, match="differs in train.lr"):
        run_tasks(tasks, jobs=2, log=lambda *_: None)
    with pytest.raises(ValueError, match="needs"):
        run_tasks([Task("a", tiny_config(), tmp_path / "a", needs=("b",)), Task("b", tiny_config(), tmp_path / "b")], jobs=2)


def test_with_several_gpus_each_worker_gets_the_least_busy_one(tmp_path, monkeypatch):
    from tests.support import tiny_config
    from transmem.benchmark import scheduler
    from transmem.benchmark.scheduler import Task, gpu_for, run_tasks, visible_devices

    auto, pinned, cpu = (Task(d, tiny_config(train={"device": d}), tmp_path / d) for d in ("auto", "cuda:1", "cpu"))
    assert [gpu_for(auto, busy, 3) for busy in ([], [0], [0, 1], [0, 1, 2, 0], [1, 1])] == [0, 1, 2, 1, 0]
    assert gpu_for(auto, [], 1) is None and gpu_for(pinned, [], 4) is None and gpu_for(cpu, [], 4) is None
    assert visible_devices(1, None) == "1" and visible_devices(1, "4, 6,7") == "6"
    # two workers on a (pretended) two-GPU machine: one per GPU; without CUDA they train on the CPU
    monkeypatch.setattr(scheduler, "gpu_count", lambda: 2)
    lines = []
    tasks = [Task(f"run {k}", tiny_config(), tmp_path / f"run{k}") for k in range(2)]
    results = run_tasks(tasks, jobs=2, log=lines.append)
    assert all(results[t.name] is not None for t in tasks)
    assert sorted(line.split(" (")[0] for line in lines if line.startswith("start")) == [
        "start run 0 on GPU 0",
        "start run 1 on GPU 1",
    ]


def test_a_worker_killed_from_outside_is_an_error_not_a_hang(tmp_path):
    import signal
    import threading

    from tests.support import tiny_config
    from transmem.benchmark.scheduler import Task, run_tasks

    lock = tmp_path / "slow" / "train.lock"

    def kill_the_worker():
        deadline = time.monotonic() + 120
        while not (lock.exists() and lock.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(int(lock.read_text()), signal.SIGKILL)

    killer = threading.Thread(target=kill_the_worker)
    killer.start()
    slow = Task("slow", tiny_config(train={"iterations": 1_000_000, "checkpoint_every": 1000}), tmp_path / "slow")
    with pytest.raises(RuntimeError, match="slow: its worker process ended with exit code -9 and no result"):
        run_tasks([slow], jobs=2, log=lambda *_: None)
    killer.join()


def test_killing_a_parallel_benchmark_stops_its_workers(tmp_path):
    """SIGKILL of ``transmem benchmark --jobs 2`` leaves no worker training on (their run locks free up)."""
    out = tmp_path / "bench"
    slow = [*TINY, "train.iterations=1000000", "train.checkpoint_every=1000"]
    command = [
        sys.executable,
        "-m",
        "transmem",
        "benchmark",
        "digits",
        "--out",
        str(out),
        "--jobs",
        "2",
        "--no-progress",
        "--methods",
        "finetune",
    ]
    command += [arg for item in slow for arg in ("--set", item)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    locks = [out / "sources" / name / "train.lock" for name in ("digits1", "digits2")]
    try:
        deadline = time.monotonic() + 120
        while not all(lock.exists() and lock.read_text() for lock in locks) and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = [int(lock.read_text()) for lock in locks]
        assert process.poll() is None and process.pid not in workers
    finally:
        process.kill()
        process.wait()
    deadline = time.monotonic() + 30
    for lock in locks:
        while True:
            try:
                free = FileLock(lock)
                free.acquire()
                free.release()
                break
            except LockedError:
                assert time.monotonic() < deadline, f"a worker still holds {lock}"
                time.sleep(0.1)


def test_workers_start_needed_tasks_first_then_the_costliest(tmp_path):
    from tests.support import tiny_config
    from transmem.benchmark.scheduler import Task, _longest_first

    def task(name, cost, needs=()):
        return Task(name, tiny_config(), tmp_path / name, needs, cost)

    source, cheap, costly, tie = task("source a", 1.0), task("scratch", 2.0), task("fusion", 9.0), task("distill", 2.0)
    waiting = task("tmu", 5.0, needs=("source a",))
    ready = [cheap, costly, tie, source]
    order = _longest_first(ready, [*ready, waiting])
    assert [t.name for t in order] == ["source a", "fusion", "scratch", "distill"]  # ties keep list order
    assert [t.name for t in _longest_first([cheap, source], [cheap, source])] == ["scratch", "source a"]  # needed by none


def test_training_cost_ranks_the_wide_and_source_reading_methods_first():
    methods = ["scratch", "tmu", "fusion", "finetune_best", "fusion_random"]
    tasks = plan("digits", "quick", methods=methods, zoo="builtin").tasks
    cost = {t.name.split(" seed")[0]: t.cost for t in tasks}
    assert cost["fusion"] == cost["fusion_random"] > cost["tmu"] > cost["scratch"] == cost["finetune_best"]
    control = next(t.config for t in tasks if t.name.startswith("fusion_random"))
    assert control.model.hidden == [64, 64] and control.transfer.fusion_partners == "random"
