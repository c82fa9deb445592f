"""Every results table in README.md and docs/*.md is the one its committed data give."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from transmem.benchmark.published import BLOCK, render_text, stale_documents
from transmem.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_every_results_table_in_the_docs_is_rendered_from_committed_data():
    stale = stale_documents(ROOT)
    assert not stale, f"run `python scripts/render_results.py`: {[str(p.relative_to(ROOT)) for p in stale]}"
    blocks = [
        m.group("names") for path in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")] for m in BLOCK.finditer(path.read_text())
    ]
    assert blocks, "README and docs cite no committed results"


def _tables_outside_blocks(text: str) -> list[str]:
    """The header line of every markdown table of ``text`` outside results blocks."""
    text = BLOCK.sub("", text)
    lines = text.splitlines()
    starts = [line.lstrip().startswith("|") for line in lines]  # a table indented under a list item too
    return [line.strip() for i, line in enumerate(lines) if starts[i] and (i == 0 or not starts[i - 1])]


def test_results_md_and_readme_type_no_results_table_by_hand():
    """docs/results.md holds rendered tables only; README's only other table is the config reference."""
    assert _tables_outside_blocks((ROOT / "docs" / "results.md").read_text()) == []
    readme = _tables_outside_blocks((ROOT / "README.md").read_text())
    assert [header for header in readme if "MSE" in header or "method" in header] == []
    assert _tables_outside_blocks("| a |\n|---|\n| 1 |\n\ntext\n  | b |\n  |---|\n") == ["| a |", "| b |"]


def test_a_block_is_rendered_from_its_data_and_a_hand_edit_is_caught(tmp_path):
    rows = [
        {"method": m, "seed": s, "mse": v, "mae": 1.0, "ssim": 0.5, "psnr": 10.0, "iterations": 10, "train_flops": 1e9}
        for m, s, v in [("scratch", 0, 3.0), ("scratch", 1, 3.2), ("finetune_best", 0, 2.0), ("finetune_best", 1, 2.2)]
    ]
    (tmp_path / "docs" / "results" / "toy").mkdir(parents=True)
    (tmp_path / "docs" / "results" / "toy" / "results.json").write_text(json.dumps({"rows": rows, "budget": "flops"}))
    rendered = render_text(tmp_path, "before\n<!-- results toy -->\nanything\n<!-- end results -->\nafter\n")
    assert rendered.startswith("before\n<!-- results toy -->\n| method") and rendered.endswith("<!-- end results -->\nafter\n")
    assert "3.100 ± 0.1414" in rendered and "finetune_best 10 it" in rendered and "test MSE minus finetune_best" in rendered
    (tmp_path / "README.md").write_text(rendered.replace("3.100 ± 0.1414", "3.000 ± 0.1414"))
    assert stale_documents(tmp_path) == [tmp_path / "README.md"]


def test_a_summary_block_sets_several_benchmarks_side_by_side(tmp_path):
    def rows(iterations, values):
        return [
            {"method": m, "seed": s, "mse": v, "mae": 1.0, "ssim": 0.5, "psnr": 10.0, "iterations": it, "train_flops": 1e9}
            for (m, it), pair in zip(iterations.items(), values)
            for s, v in enumerate(pair)
        ]

    for name, budget, iterations, values in [
        ("toy_it", "iterations", {"finetune_best": 10, "fusion": 10}, [(3.0, 3.2), (2.0, 2.2)]),
        ("toy_flops", "flops", {"finetune_best": 37, "fusion": 10}, [(2.0, 2.4), (2.0, 2.2)]),
    ]:
        (tmp_path / "docs" / "results" / name).mkdir(parents=True)
        results = {"rows": rows(iterations, values), "budget": budget, "suite": "toy"}
        (tmp_path / "docs" / "results" / name / "results.json").write_text(json.dumps(results))
    rendered = render_text(tmp_path, "<!-- results toy_it toy_flops summary -->\n<!-- end results -->\n")
    lines = rendered.splitlines()
    assert lines[3] == "| toy | iterations | `finetune_best` | 2 | 10 | 3.100 ± 0.14 | reference |  |  |  |"
    # fusion minus finetune_best: -1.0 ± t(0.975, 2 df) * sqrt(0.02 / 2 + 0.02 / 2) = -1.0 ± 0.61;
    # p = 2 P(T_2 > 1 / 0.1414) = 0.0194, and one comparison leaves it unadjusted
    assert lines[4] == "|  |  | `fusion` | 2 | 10 | 2.100 ± 0.14 | -1.00 | [-1.61, -0.39] | 0.0194 | beats |"
    assert lines[5].startswith("| toy | flops | `finetune_best` | 2 | 37 | 2.200 ± 0.28 | reference")
    # Welch's degrees of freedom 0.05^2 / (0.04^2 + 0.01^2) = 1.47: -0.1 ± 1.38
    assert lines[6].endswith("| -0.10 | [-1.48, +1.28] | 0.712 | no difference shown |")

    for name, profile in [("toy_it", "full"), ("toy_flops", "lowdata")]:  # where profiles differ, each is named
        path = tmp_path / "docs" / "results" / name / "results.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "profile": profile}))
    lines = render_text(tmp_path, "<!-- results toy_it toy_flops summary -->\n<!-- end results -->\n").splitlines()
    assert lines[3].startswith("| toy (full) | iterations |") and lines[5].startswith("| toy (lowdata) | flops |")


def test_a_block_naming_no_data_or_two_benchmarks_without_summary_is_refused_in_one_line(tmp_path):
    (tmp_path / "docs" / "results" / "toy").mkdir(parents=True)
    (tmp_path / "docs" / "results" / "toy" / "results.json").write_text(json.dumps({"rows": []}))
    with pytest.raises(ConfigError, match=r"^results block 'toy toy': a table names one benchmark"):
        render_text(tmp_path, "<!-- results toy toy -->\n<!-- end results -->\n")
    with pytest.raises(ConfigError, match=r"^results block 'absent': no docs/results/absent/results.json$"):
        render_text(tmp_path, "<!-- results absent table -->\n<!-- end results -->\n")
