"""``transmem benchmark --choose``: each method's setting chosen on the validation split.

Every target trains once per candidate setting (e.g. ``train.lr=0.001`` and
``train.lr=0.0001``); for each method the setting whose runs have the lowest validation MSE,
mean over seeds, of the weights each run kept (its best validation with ``train.weights =
"best_val"``, else its last), is chosen, and the benchmark reports that method's runs at that
setting on the test split. The test split never chooses.
"""

from __future__ import annotations

import math


def mean_validation_mse(rows: list[dict], method: str) -> float:
    """The mean over ``method``'s runs (seeds) of the validation MSE of the weights each kept;
    NaN when one of them has none."""
    values = [row["val_mse"] for row in rows if row["method"] == method]
    return math.fsum(values) / len(values)


def choose_on_validation(by_candidate: dict[str, tuple[list[dict], list[dict]]]) -> tuple[list[dict], list[dict], dict]:
    """``by_candidate``: ``{setting: (rows, per_run)}`` as the runner builds them, one row per
    run with its ``val_mse``, the same methods and seeds in the same order for every setting.

    Returns the chosen setting's rows (each naming it as ``chosen``) and runs of every method,
    in that order, and the choice: ``{"setting": "train.lr", "candidates": [...],
    "validation": {method: {setting: mean validation MSE}}, "chosen": {method: setting}}``.
    Ties go to the setting given first; a setting whose runs have no validation MSE (NaN) is
    never chosen."""
    candidates = list(by_candidate)
    first_rows = by_candidate[candidates[0]][0]
    validation: dict[str, dict[str, float]] = {}
    for method in dict.fromkeys(row["method"] for row in first_rows):
        validation[method] = {}
        for candidate in candidates:
            validation[method][candidate] = mean_validation_mse(by_candidate[candidate][0], method)
    chosen = {}
    for method, means in validation.items():
        scored = [c for c in candidates if not math.isnan(means[c])]  # NaN: a run without a final validation
        if not scored:
            raise ValueError(f"--choose: no validation MSE for any value of {method} (its runs logged no validation)")
        chosen[method] = min(scored, key=means.get)
    rows, per_run = [], []
    for index, row in enumerate(first_rows):
        candidate = chosen[row["method"]]
        candidate_rows, candidate_runs = by_candidate[candidate]
        rows.append({**candidate_rows[index], "chosen": candidate})
        per_run.append(candidate_runs[index])
    setting = candidates[0].partition("=")[0]
    return rows, per_run, {"setting": setting, "candidates": candidates, "validation": validation, "chosen": chosen}
