"""Combine the results of one benchmark's parts, run into separate folders, into one.

python scripts/merge_results.py OUT PART PART ...

Each PART is a folder holding a benchmark's results.json (e.g. docs/results/far_equal_compute
and the folder of methods added later with --budget-of). OUT (it may be one of the parts)
gets the combined results.json, results.csv and comparison.csv; `python
scripts/render_results.py` then renders the docs' tables from them. Parts that are not one
benchmark (another suite, profile, budget or setting, a run twice) are refused in one line,
and nothing is written.
"""

from __future__ import annotations

import sys
from pathlib import Path

from transmem.benchmark.merge import merge_results
from transmem.errors import ConfigError, TransmemError
from transmem.evaluation.report import read_results_json, write_results_csv, write_results_json


def main(arguments: list[str]) -> int:
    if len(arguments) < 3:
        raise ConfigError("usage: merge_results.py OUT PART PART ...")
    out, parts = Path(arguments[0]), [Path(a) for a in arguments[1:]]
    missing = [str(part / "results.json") for part in parts if not (part / "results.json").is_file()]
    if missing:
        raise ConfigError(f"merge: no {', '.join(missing)}")
    merged = merge_results([read_results_json(part / "results.json") for part in parts])
    write_results_csv(out / "results.csv", merged["rows"])
    write_results_csv(out / "comparison.csv", merged["comparison"])
    write_results_json(out / "results.json", merged)
    print(f"wrote {out / 'results.json'}: {len(merged['rows'])} runs of {len(merged['summary'])} methods")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except TransmemError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
