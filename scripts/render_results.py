"""Render every results table of README.md and docs/*.md from docs/results/<name>/results.json.

python scripts/render_results.py          # rewrite the tables
python scripts/render_results.py --check  # exit 1 if a table differs from the data
"""

from __future__ import annotations

import sys
from pathlib import Path

from transmem.benchmark.published import render_all, stale_documents

ROOT = Path(__file__).resolve().parent.parent

if __name__ == "__main__":
    if "--check" in sys.argv[1:]:
        stale = stale_documents(ROOT)
        for path in stale:
            print(f"{path.relative_to(ROOT)}: a results table differs from its data")
        sys.exit(1 if stale else 0)
    for path in render_all(ROOT):
        print(f"rendered {path.relative_to(ROOT)}")
