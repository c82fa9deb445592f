"""Render every results table of README.md and docs/*.md from docs/results/<name>/results.json.

python scripts/render_results.py          # rewrite the tables
python scripts/render_results.py --check  # exit 1 if a table differs from the data
"""

from __future__ import annotations

import sys
from pathlib import Path

from transmem.benchmark.published import render_all, stale_documents
from transmem.errors import TransmemError

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    if "--check" in sys.argv[1:]:
        stale = stale_documents(ROOT)
        for path in stale:
            print(f"{path.relative_to(ROOT)}: a results table differs from its data")
        return 1 if stale else 0
    for path in render_all(ROOT):
        print(f"rendered {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except TransmemError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
