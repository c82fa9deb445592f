"""Tests of transmem.evaluation.report: summaries over seeds, tables and result files."""

from __future__ import annotations

import csv
import math
import statistics

import numpy as np
import pytest

from transmem.evaluation.report import (
    format_metrics_table,
    markdown_results_table,
    markdown_table,
    read_results_json,
    summarize_runs,
    write_results_csv,
    write_results_json,
)

RUNS = [
    {"method": "tmu", "seed": 0, "mse": 40.0, "ssim": 0.90, "checkpoint": "a.pt"},
    {"method": "tmu", "seed": 1, "mse": 44.0, "ssim": 0.92, "checkpoint": "b.pt"},
    {"method": "tmu", "seed": 2, "mse": 39.0, "ssim": 0.91, "checkpoint": "c.pt"},
    {"method": "finetune", "seed": 0, "mse": 50.0, "ssim": 0.95},
    {"method": "finetune", "seed": 1, "mse": 52.0, "ssim": 0.93},
    {"method": "scratch", "seed": 0, "mse": 60.0, "ssim": 0.80},
]


def table_cells(table: str) -> dict[str, list[str]]:
    """Markdown table -> first cell of each body row -> the other cells."""
    body = table.splitlines()[2:]
    cells = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in body]
    return {row[0]: row[1:] for row in cells}


def test_summarize_runs_mean_and_sample_std():
    summary = summarize_runs(RUNS)
    assert [row["method"] for row in summary] == ["tmu", "finetune", "scratch"]
    tmu = summary[0]
    assert tmu["n"] == 3
    assert tmu["mse_mean"] == pytest.approx(41.0)
    assert tmu["mse_std"] == pytest.approx(statistics.stdev([40.0, 44.0, 39.0]))  # ddof=1
    assert tmu["ssim_std"] == pytest.approx(0.01)
    assert "checkpoint_mean" not in tmu and "seed_mean" not in tmu
    assert summary[1]["mse_std"] == pytest.approx(math.sqrt(2.0))
    assert summary[2]["n"] == 1 and summary[2]["mse_std"] == 0.0


def test_summarize_runs_accepts_numpy_scalars_and_rejects_bad_rows():
    summary = summarize_runs([{"method": "a", "seed": 0, "mse": np.float32(2.0)}])
    assert summary[0]["mse_mean"] == 2.0
    with pytest.raises(ValueError, match="method"):
        summarize_runs([{"seed": 0, "mse": 1.0}])
    with pytest.raises(ValueError, match="different metrics"):
        summarize_runs([{"method": "a", "mse": 1.0}, {"method": "a", "ssim": 0.5}])


def test_best_is_bold_for_lower_and_higher_is_better():
    table = markdown_results_table(summarize_runs(RUNS), metrics=("mse", "ssim"))
    rows = table_cells(table)
    assert rows["tmu"][1].startswith("**41.00 ±")  # lowest mse
    assert rows["finetune"][2].startswith("**0.9400 ±")  # highest ssim
    bold = [(method, column) for method, cells in rows.items() for column, cell in enumerate(cells) if "**" in cell]
    assert sorted(bold) == [("finetune", 2), ("tmu", 1)]
    assert rows["scratch"][0] == "1" and rows["scratch"][1] == "60.00"  # one run: no spread shown
    assert "mse ↓" in table.splitlines()[0] and "ssim ↑" in table.splitlines()[0]


def test_baseline_is_shown_but_never_best():
    baseline_scores = {  # as returned by FrameMetrics.compute(): better than every method
        "mse": {"per_frame": [1.0, 3.0], "mean": 2.0},
        "ssim": {"per_frame": [0.99, 0.99], "mean": 0.99},
        "count": 10,
    }
    rows = table_cells(markdown_results_table(summarize_runs(RUNS), metrics=("mse", "ssim", "psnr"), baseline=baseline_scores))
    assert rows["copy last frame"] == ["–", "2.000", "0.9900", "–"]
    assert rows["tmu"][1].startswith("**") and rows["finetune"][2].startswith("**")
    flat = table_cells(
        markdown_results_table(summarize_runs(RUNS), metrics=("mse",), baseline={"method": "persistence", "mse": 1.0})
    )
    assert flat["persistence"] == ["–", "1.000"] and flat["tmu"][1].startswith("**")


def test_ties_are_all_bold_and_missing_values_are_dashes():
    summary = [
        {"method": "a", "n": 2, "mse_mean": 5.0, "mse_std": 0.0},
        {"method": "b", "n": 2, "mse_mean": 5.0, "mse_std": 0.0, "psnr_mean": 20.0, "psnr_std": 1.0},
    ]
    rows = table_cells(markdown_results_table(summary, metrics=("mse", "psnr")))
    assert rows["a"][1].startswith("**") and rows["b"][1].startswith("**")
    assert rows["a"][2] == "–" and rows["b"][2] == "**20.00 ± 1.000**"


def test_format_metrics_table_with_baseline():
    metrics = {
        "mse": {"per_frame": [10.0, 20.0, 30.0], "mean": 20.0},
        "ssim": {"per_frame": [0.9, 0.8, 0.7], "mean": 0.8},
        "count": 6,
    }
    baseline = {"mse": {"per_frame": [15.0, 30.0, 45.0], "mean": 30.0}, "count": 6}
    text = format_metrics_table(metrics, baseline=baseline)
    assert text.startswith("6 sequences")
    tables = [part for part in text.split("\n\n") if part.startswith("|")]
    means, per_frame = table_cells(tables[0]), table_cells(tables[1])
    assert means["mse"] == ["20.00", "30.00"] and means["ssim"] == ["0.8000", "–"]
    assert list(per_frame) == ["1", "2", "3"]
    assert per_frame["3"] == ["30.00", "0.7000", "45.00"]
    assert "mse (copy last)" in tables[1].splitlines()[0]
    assert "copy last" not in format_metrics_table(metrics)
    with pytest.raises(ValueError):
        format_metrics_table({"count": 3})


def test_csv_and_json_files(tmp_path):
    csv_path = tmp_path / "out" / "runs.csv"
    write_results_csv(csv_path, RUNS)
    with csv_path.open(newline="") as handle:
        read_back = list(csv.DictReader(handle))
    assert list(read_back[0]) == ["method", "seed", "mse", "ssim", "checkpoint"]
    assert read_back[3]["checkpoint"] == "" and float(read_back[1]["mse"]) == 44.0

    json_path = tmp_path / "out" / "summary.json"
    data = {"summary": summarize_runs(RUNS), "array": np.arange(3), "scalar": np.float32(0.5)}
    write_results_json(json_path, data)
    loaded = read_results_json(json_path)
    assert loaded["summary"][0]["mse_mean"] == pytest.approx(41.0)
    assert loaded["array"] == [0, 1, 2] and loaded["scalar"] == 0.5


def test_markdown_table_aligns_the_columns_it_is_told_and_pads_only_when_asked():
    rows = [["scratch", 12.5, "loses"], ["tmu", 3, ""]]
    assert markdown_table(["method", "mse", "verdict"], rows, right=(1,)).splitlines() == [
        "| method | mse | verdict |",
        "|---|---:|---|",
        "| scratch | 12.5 | loses |",
        "| tmu | 3 |  |",
    ]
    assert markdown_table(["method", "mse"], [["scratch", 12.5], ["tmu", 3]], right=(1,), pad=True).splitlines() == [
        "| method  |  mse |",
        "|:--------|-----:|",
        "| scratch | 12.5 |",
        "| tmu     |    3 |",
    ]
