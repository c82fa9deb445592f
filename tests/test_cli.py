"""The transmem command: train / evaluate / data commands end to end on tiny shapes."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from imageio import v3 as iio

from tests.support import write_tiny_config
from transmem import cli
from transmem.cli import main


def test_train_evaluate_predict_round_trip(tmp_path, capsys):
    config = write_tiny_config(tmp_path / "c.toml")
    assert main(["train", str(config), "--out", str(tmp_path / "run"), "--no-progress", "--set", "train.iterations=4"]) == 0
    assert "trained" in capsys.readouterr().out
    assert main(["train", str(config), "--out", str(tmp_path / "run"), "--no-progress", "--set", "train.iterations=4"]) == 0
    assert "already finished" in capsys.readouterr().out
    assert main(["evaluate", str(tmp_path / "run"), "--out", str(tmp_path / "m.json")]) == 0
    table = capsys.readouterr().out
    assert "mse" in table and "copy" in table
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert len(metrics["mse"]["per_frame"]) == 3 and metrics["model"]["count"] == 4
    # Scores on the validation split go next to the test scores, never over them.
    assert main(["evaluate", str(tmp_path / "run")]) == 0
    test_scores = (tmp_path / "run" / "metrics.json").read_text()
    assert main(["evaluate", str(tmp_path / "run"), "--split", "val"]) == 0
    assert (tmp_path / "run" / "metrics.json").read_text() == test_scores
    assert json.loads((tmp_path / "run" / "metrics_val.json").read_text())["split"] == "val"
    capsys.readouterr()
    frames = (np.random.default_rng(0).random((6, 16, 16)) * 255).astype(np.uint8)
    np.save(tmp_path / "frames.npy", frames)
    assert main(["predict", str(tmp_path / "run"), "--input", str(tmp_path / "frames.npy"), "--out", str(tmp_path / "pred")]) == 0
    prediction = np.load(tmp_path / "pred" / "prediction.npy")
    assert prediction.shape == (1, 3, 1, 16, 16) and prediction.min() >= 0 and prediction.max() <= 1
    assert (tmp_path / "pred" / "strip_0.png").exists() and (tmp_path / "pred" / "prediction_0.gif").exists()


def test_unknown_key_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys):
    config = write_tiny_config(tmp_path / "c.toml")
    assert main(["train", str(config), "--out", str(tmp_path / "run"), "--set", "train.lrr=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("transmem: error: train.lrr: unknown key") and "\n" not in err
    assert not (tmp_path / "run").exists()


def test_data_list_and_preview(tmp_path, capsys):
    assert main(["data", "list"]) == 0
    listing = capsys.readouterr().out
    assert "moving_digits" in listing and "kth" in listing
    out = tmp_path / "digits.gif"
    assert (
        main(
            [
                "data",
                "preview",
                "moving_digits",
                "--out",
                str(out),
                "--num",
                "2",
                "--set",
                "data.frame_size=32",
                "--set",
                "data.total_len=6",
                "--set",
                "data.input_len=3",
            ]
        )
        == 0
    )
    frames = iio.imread(out, index=None)
    assert frames.shape[0] == 6 and frames.shape[1] >= 32
    assert main(["data", "preview", "nope", "--out", str(out)]) == 2
    assert "unknown dataset 'nope'" in capsys.readouterr().err
    # Too many sequences for one GIF: a one-line error, the existing preview untouched.
    before = out.read_bytes()
    capsys.readouterr()
    assert main(["data", "preview", "moving_digits", "--out", str(out), "--num", "4000", "--set", "data.frame_size=16"]) == 2
    assert "at most 3640 fit in a GIF" in capsys.readouterr().err and out.read_bytes() == before
    assert main(["data", "preview", "moving_digits", "--out", str(out), "--num", "0"]) == 2
    assert "--num: must be at least 1" in capsys.readouterr().err


@pytest.mark.parametrize(
    "error, size",
    [
        (
            RuntimeError(
                "[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: "
                "you tried to allocate 3221225472 bytes. Error code 12"
            ),
            "3.0 GiB",
        ),
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "2.00 GiB"),
        (MemoryError("Unable to allocate 4.00 EiB for an array with shape (1, 2)"), "4.00 EiB"),
        (MemoryError(), ""),
    ],
)
def test_out_of_memory_is_one_line_exit_4(monkeypatch, capsys, error, size):
    def fail(args):
        raise error

    monkeypatch.setitem(cli.COMMANDS, "zoo", fail)
    assert main(["zoo", "list", "somewhere"]) == cli.EXIT_OUT_OF_MEMORY == 4
    err = capsys.readouterr().err.strip()
    assert err.startswith("transmem: error: out of memory") and "\n" not in err and "model.hidden" in err
    assert (f"(tried to allocate {size})" in err) == bool(size) and "rerun the same command to resume" in err


def test_other_runtime_errors_are_not_disguised_as_out_of_memory(monkeypatch):
    def fail(args):
        raise RuntimeError("a bug")

    monkeypatch.setitem(cli.COMMANDS, "zoo", fail)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["zoo", "list", "somewhere"])


def test_an_empty_config_file_is_refused_and_nothing_is_written(tmp_path, capsys):
    (tmp_path / "empty.toml").write_text("# nothing yet\n")
    assert main(["train", str(tmp_path / "empty.toml"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("transmem: error: ") and "empty config" in err and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_version_prints_the_package_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"transmem {version('transmem')}"


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("transmem: error: ") and "\n" not in err and "Errno" not in err, err
    return err


def test_bad_out_paths_are_one_clear_line_each(tmp_path, finished_run, capsys):
    """An --out at a file, under a file or at a folder where a file goes: no raw [Errno] text, nothing written."""
    config, run = finished_run
    (tmp_path / "afile").write_text("keep")
    frames = tmp_path / "frames.npy"
    np.save(frames, np.zeros((6, 16, 16), np.uint8))
    cases = [
        (["train", str(config), "--out", str(tmp_path / "afile")], "exists and is not a folder"),
        (["train", str(config), "--out", str(tmp_path / "afile" / "sub")], "afile is a file, not a folder"),
        (["evaluate", str(run), "--out", str(tmp_path / "afile" / "m.json")], "afile is a file, not a folder"),
        (["evaluate", str(run), "--out", str(tmp_path)], "is a folder; give a file name"),
        (["predict", str(run), "--input", str(frames), "--out", str(tmp_path / "afile")], "exists and is not a folder"),
        (["predict", str(run), "--input", str(frames), "--out", str(tmp_path / "afile" / "p")], "afile is a file, not a folder"),
        (["data", "preview", "moving_digits", "--out", str(tmp_path / "afile" / "x.gif")], "afile is a file, not a folder"),
        (["data", "preview", "moving_digits", "--out", str(tmp_path / "x.png")], "give a file name ending in .gif"),
        (["benchmark", "digits", "--out", str(tmp_path / "afile")], "exists and is not a folder"),
        (["benchmark", "digits", "--out", str(tmp_path / "afile" / "b")], "afile is a file, not a folder"),
        (["benchmark", "digits", "--out", str(tmp_path / "b"), "--zoo", str(tmp_path / "afile")], "--zoo"),
        (["evaluate", str(run), "--out", str(tmp_path / "missing" / "m.json")], "missing/m.json: no such file or folder"),
    ]
    for argv, needle in cases:
        assert main(argv) == 2, argv
        assert needle in _one_error_line(capsys), argv
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "frames.npy"] and (tmp_path / "afile").read_text() == "keep"
    (tmp_path / "empty.npy").write_bytes(b"")  # no data at all: refused, not a traceback
    assert main(["predict", str(run), "--input", str(tmp_path / "empty.npy"), "--out", str(tmp_path / "p")]) == 2
    assert "empty.npy: not a plain .npy array" in _one_error_line(capsys)


def test_os_errors_get_plain_words():
    import errno

    assert (
        cli._os_error_message(NotADirectoryError(errno.ENOTDIR, "Not a directory", "a/b"))
        == "a/b: a part of this path is a file, not a folder"
    )
    assert cli._os_error_message(IsADirectoryError(errno.EISDIR, "Is a directory", "d")) == "d: is a folder, not a file"
    assert cli._os_error_message(FileExistsError(errno.EEXIST, "File exists", "f")) == "f: already exists and is not a folder"


def test_evaluate_on_a_benchmark_method_folder_names_its_seed_runs(tmp_path, finished_run, capsys):
    import shutil

    _, run = finished_run
    for seed in ("seed0", "seed1"):
        shutil.copytree(run, tmp_path / "tmu" / seed)
    assert main(["evaluate", str(tmp_path / "tmu")]) == 2
    err = _one_error_line(capsys)
    assert "it holds the runs seed0, seed1" in err and str(tmp_path / "tmu" / "seed0") in err


def test_zoo_list_without_sources_is_an_error(tmp_path, capsys):
    assert main(["zoo", "list", str(tmp_path)]) == 2
    assert "no sources found" in _one_error_line(capsys)


def test_a_file_dataset_without_its_path_says_how_to_give_it(tmp_path, capsys):
    assert main(["data", "preview", "kth", "--out", str(tmp_path / "k.gif")]) == 2
    assert "--set data.options.root=" in _one_error_line(capsys)
    assert main(["data", "preview", "array_file", "--out", str(tmp_path / "a.gif")]) == 2
    assert "--set data.options.path=" in _one_error_line(capsys)
    assert not list(tmp_path.iterdir())


def test_every_expected_error_is_a_transmem_error_and_keeps_its_builtin_base():
    import transmem.errors as errors
    from transmem.config import ConfigError
    from transmem.data import DataError
    from transmem.run.conflicts import RunConflictError
    from transmem.storage.checkpoints import CheckpointError
    from transmem.storage.locks import LockedError
    from transmem.training.loop import TrainingDiverged
    from transmem.transfer.builtin import BuiltinZooError
    from transmem.transfer.memory_bank import MemoryBankError
    from transmem.transfer.zoo import SourceError

    raised_here = [ConfigError, DataError, CheckpointError, SourceError, BuiltinZooError]
    states = [RunConflictError, MemoryBankError, LockedError, TrainingDiverged]
    assert all(issubclass(e, errors.TransmemError) and issubclass(e, ValueError) for e in raised_here)
    assert all(issubclass(e, errors.TransmemError) and issubclass(e, RuntimeError) for e in states)
    # one definition each, at the bottom of the package (errors.py imports nothing of transmem)
    assert all(e.__module__ == "transmem.errors" for e in raised_here + states)
    source = Path(errors.__file__).read_text()
    assert "import" not in source.replace("imports nothing", "")


def test_methods_without_a_name_is_refused_not_read_as_every_method(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["benchmark", "digits", "--methods", "--out", str(tmp_path / "out")])
    assert info.value.code == 2 and "--methods: expected at least one argument" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
