"""Session fixtures: tiny runs trained once per test session (helpers: tests/support.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import SOURCE_SPECS, tiny_config, tiny_raw, write_config


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` skip where torch sees no CUDA device (``pytest -m cuda`` runs them on a GPU)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def tiny():
    return tiny_config


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    """The tiny source zoo of :data:`tests.support.SOURCE_SPECS`, by name."""
    from transmem.run.lifecycle import train

    root = tmp_path_factory.mktemp("zoo")
    for name, sections in SOURCE_SPECS.items():
        train(tiny_config(**sections), root / name, progress=False)
    return {name: root / name for name in SOURCE_SPECS}


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> tuple[Path, Path]:
    """(config.toml, run folder) of a finished tiny run trained by ``transmem train`` (2
    iterations, a checkpoint after each). Read it, or copy it before changing anything."""
    from transmem.cli import main

    root = tmp_path_factory.mktemp("finished")
    config = write_config(root / "cfg.toml", tiny_raw(train={"iterations": 2, "checkpoint_every": 1, "device": "cpu"}))
    assert main(["train", str(config), "--out", str(root / "run"), "--no-progress"]) == 0
    return config, root / "run"


@pytest.fixture(scope="session")
def sources(tmp_path_factory) -> Path:
    """A folder of two finished tiny source runs: ``hidden8`` (patch 4) and ``patch8`` (patch 8)."""
    from transmem.cli import main

    root = tmp_path_factory.mktemp("sources")
    for name, model in [("hidden8", {"hidden": [8]}), ("patch8", {"hidden": [8], "patch": 8})]:
        config = write_config(root / f"{name}.toml", tiny_raw(model=model, train={"iterations": 1, "device": "cpu"}))
        assert main(["train", str(config), "--out", str(root / name), "--no-progress"]) == 0
    return root
