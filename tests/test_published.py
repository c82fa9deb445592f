"""Every results table in README.md and docs/*.md is the one its committed data give."""

from __future__ import annotations

import json
from pathlib import Path

from transmem.benchmark.published import BLOCK, render_text, stale_documents

ROOT = Path(__file__).resolve().parent.parent


def test_every_results_table_in_the_docs_is_rendered_from_committed_data():
    stale = stale_documents(ROOT)
    assert not stale, f"run `python scripts/render_results.py`: {[str(p.relative_to(ROOT)) for p in stale]}"
    blocks = [
        m.group("name") for path in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")] for m in BLOCK.finditer(path.read_text())
    ]
    assert blocks, "README and docs cite no committed results"


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
