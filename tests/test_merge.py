"""Combining a benchmark's parts run apart (scripts/merge_results.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from transmem.benchmark.comparison import compare_methods
from transmem.benchmark.markdown import budget_text
from transmem.benchmark.merge import merge_results, rerun_command
from transmem.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
WHOLE = json.loads((ROOT / "docs" / "results" / "digits_equal_compute" / "results.json").read_text())


def _part(methods: tuple[str, ...], seeds: tuple[int, ...] = (0, 1, 2), **changes) -> dict:
    """The committed digits equal-compute benchmark as if only ``methods`` and ``seeds`` had been run."""
    rows = [row for row in WHOLE["rows"] if row["method"] in methods and row["seed"] in seeds]
    return {**WHOLE, "rows": rows, "command": rerun_command(WHOLE["command"], list(methods), list(seeds)), **changes}


def test_parts_merge_into_the_benchmark_they_were_split_from():
    merged = merge_results([_part(("finetune_best", "fusion")), _part(("scratch", "tmu_ft"))])
    assert sorted((r["method"], r["seed"]) for r in merged["rows"]) == sorted(
        (r["method"], r["seed"]) for r in WHOLE["rows"] if r["method"] in ("finetune_best", "fusion", "scratch", "tmu_ft")
    )
    by_method = {c["method"]: c for c in merged["comparison"]}
    whole = {c["method"]: c for c in compare_methods(WHOLE["rows"])}
    for method in ("fusion", "scratch", "tmu_ft"):  # each against finetune_best, though it was in another part
        assert by_method[method]["reference"] == "finetune_best"
        assert by_method[method]["ci_low"] == pytest.approx(whole[method]["ci_low"])
        assert by_method[method]["verdict"] == whole[method]["verdict"]
    assert "--methods scratch finetune_best tmu_ft fusion" in merged["command"]  # one benchmark trains them all
    assert [p["command"] for p in merged["merged_from"]] == [
        _part(m)["command"] for m in (("finetune_best", "fusion"), ("scratch", "tmu_ft"))
    ]


def test_a_merge_of_a_merge_lists_every_command_that_trained_its_runs():
    parts = [_part(("finetune_best",)), _part(("fusion",)), _part(("scratch",))]
    merged = merge_results([merge_results(parts[:2]), parts[2]])
    assert [p["command"] for p in merged["merged_from"]] == [part["command"] for part in parts]
    assert merged["rows"] == merge_results(parts)["rows"]


def test_merged_runs_are_listed_as_one_benchmark_plans_them():
    """By seed, then in the method catalogue's order, whatever the parts' order; so are the tables."""
    merged = merge_results([_part(("tmu_ft", "fusion")), _part(("scratch", "finetune_best"))])
    catalogue = ["scratch", "finetune_best", "tmu_ft", "fusion"]
    assert [(r["seed"], r["method"]) for r in merged["rows"]] == [(s, m) for s in (0, 1, 2) for m in catalogue]
    assert [row["method"] for row in merged["summary"]] == catalogue
    table_rows = [line.split("|")[1].strip() for line in merged["table"].splitlines()[2:]]
    assert table_rows[: len(catalogue)] == catalogue


def test_parts_that_are_not_one_benchmark_are_refused():
    fb, scratch = _part(("finetune_best",)), _part(("scratch",))
    with pytest.raises(ConfigError, match="differ in suite"):
        merge_results([fb, {**scratch, "suite": "far"}])
    with pytest.raises(ConfigError, match="finetune_best seed 0"):
        merge_results([fb, _part(("finetune_best", "scratch"))])
    cheaper = {**scratch, "rows": [{**row, "train_flops": row["train_flops"] * 0.9} for row in scratch["rows"]]}
    with pytest.raises(ConfigError, match="not one --budget flops"):
        merge_results([fb, cheaper])
    with pytest.raises(ConfigError, match="two or more"):
        merge_results([fb])
    other = {**scratch, "command": scratch["command"] + " --target-set train.lr=0.0001"}
    with pytest.raises(ConfigError, match="other settings"):
        merge_results([fb, other])
    with pytest.raises(ConfigError, match="--choose"):
        merge_results([fb, {**scratch, "choice": {"scratch": "train.lr=0.001"}}])
    with pytest.raises(ConfigError, match="hold no runs"):
        merge_results([_part(()), _part((), seeds=())])
    without = {**scratch, "rows": [{k: v for k, v in row.items() if k != "train_flops"} for row in scratch["rows"]]}
    with pytest.raises(ConfigError, match="no training FLOPs"):
        merge_results([fb, without])
    with pytest.raises(ConfigError, match="different methods"):
        merge_results([{**fb, "budget_of": "fusion"}, {**scratch, "budget_of": "tmu_ft"}])


def test_rerun_command_replaces_only_the_methods_seeds_and_budget_of():
    command = "transmem benchmark far --profile full --out DIR --methods scratch --seeds 0 1 --budget flops --jobs 2"
    assert rerun_command(command, ["finetune_best", "scratch"], [0, 1, 2]) == (
        "transmem benchmark far --profile full --out DIR --methods finetune_best scratch --seeds 0 1 2 --budget flops --jobs 2"
    )
    assert rerun_command("transmem benchmark far", ["scratch"], [3], "fusion").endswith(
        "far --methods scratch --seeds 3 --budget-of fusion"
    )


def test_the_script_writes_the_merged_results_or_nothing(tmp_path):
    for name, methods in (("a", ("finetune_best", "fusion")), ("b", ("scratch",)), ("c", ("fusion",))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(_part(methods)))
    script = [sys.executable, str(ROOT / "scripts" / "merge_results.py")]
    refused = subprocess.run(
        [*script, str(tmp_path / "out"), str(tmp_path / "a"), str(tmp_path / "c")], capture_output=True, text=True
    )
    assert refused.returncode == 2 and "fusion seed 0" in refused.stderr and len(refused.stderr.splitlines()) == 1
    assert not (tmp_path / "out").exists()
    done = subprocess.run(
        [*script, str(tmp_path / "a"), str(tmp_path / "a"), str(tmp_path / "b")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    merged = json.loads((tmp_path / "a" / "results.json").read_text())
    assert {r["method"] for r in merged["rows"]} == {"finetune_best", "fusion", "scratch"}
    assert (tmp_path / "a" / "comparison.csv").read_text().count("\n") == 3  # header, fusion, scratch


def test_the_budget_line_names_the_method_that_set_the_budget():
    scratch = _part(("scratch",))
    assert "the costliest" in budget_text(scratch)
    assert "the training FLOPs of fusion in the profile's iterations" in budget_text({**scratch, "budget_of": "fusion"})
