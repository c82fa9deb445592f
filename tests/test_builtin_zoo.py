"""The builtin source zoo: shipped sources, their checks, ``zoo build`` and ``--zoo builtin``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import TINY_SETTINGS, tiny_config, tiny_request
from transmem.benchmark import zoo_build
from transmem.benchmark.planning import plan_benchmark
from transmem.benchmark.request import BenchmarkRequest
from transmem.benchmark.runner import run_benchmark
from transmem.benchmark.suites import PROFILES, load_suite
from transmem.cli import main
from transmem.config import config_from_dict, config_with, parse_setting, read_config_file, tomllib
from transmem.data import build_dataset
from transmem.evaluation.evaluate import evaluate_model
from transmem.storage.files import sha256_file
from transmem.storage.model_file import load_model
from transmem.transfer import builtin
from transmem.transfer.builtin import CHECK_SEQUENCES, BuiltinZooError, builtin_file, builtin_index
from transmem.transfer.zoo import load_source

SHIPPED = {"digits1", "digits2", "balls", "advection", "bikes", "bunny", "carphone"}  # the builtin sources this version ships
# Sources whose test MSE does not beat copying the last frame (README says so): the natural-video
# clips barely move, so over 10 predicted frames copying the last one is hard to beat.
WEAKER_THAN_COPYING = {"bikes", "bunny", "carphone"}


# ----------------------------------------------------------------------------- what ships


def test_every_shipped_source_is_verified_described_and_reproduces_its_recorded_mse():
    index = builtin_index()
    assert SHIPPED <= set(index), sorted(index)
    for name, entry in index.items():
        path = builtin_file(f"builtin:{name}")
        assert sha256_file(path) == entry["sha256"] and path.stat().st_size == entry["bytes"]
        source = load_source(f"builtin:{name}")
        assert source.name == name and str(source.path) == f"builtin:{name}"
        assert all(not p.requires_grad for p in source.model.parameters())
        config = load_model(path).config
        # the index's config is the model's (stored by an older transmem it lacks later keys, at their defaults)
        assert config_from_dict(tomllib.loads(entry["config"]), stored=True) == config
        assert config == zoo_build.builtin_config(name)  # trained by the shipped configs and profile
        assert (entry["backbone"], entry["hidden"], entry["dataset"], entry["iterations"]) == (
            config.model.backbone,
            list(config.model.hidden),
            config.data.name,
            config.train.iterations,
        )
        assert entry["transmem_version"] and entry["command"].startswith("transmem zoo build")
        test, baseline = entry["test"], entry["copy_last_frame"]
        # a source that predicts its own data (bikes: worse than copying, as README states)
        assert (test["mse"]["mean"] < baseline["mse"]["mean"]) == (name not in WEAKER_THAN_COPYING), name
        frames = build_dataset(config.data, "test")
        check = evaluate_model(source.model, frames, config, max_sequences=CHECK_SEQUENCES)["model"]["mse"]["mean"]
        assert check == pytest.approx(entry["check_mse"], rel=1e-4), name


def test_zoo_list_builtin_names_every_shipped_source(capsys):
    assert main(["zoo", "list", "builtin"]) == 0
    out = capsys.readouterr().out
    assert all(f"builtin:{name}" in out for name in SHIPPED) and "copy last frame" in out


# ----------------------------------------------------------------------------- the mechanism, on a tiny zoo


@pytest.fixture
def tiny_builtin(tmp_path, monkeypatch):
    """An empty builtin folder and builtin sources of the benchmark's tiny quick profile."""
    folder = tmp_path / "package" / "builtin_zoo"
    monkeypatch.setattr(builtin, "builtin_folder", lambda: folder)
    monkeypatch.setattr(zoo_build, "builtin_folder", lambda: folder)

    def config(name):
        suite, source = zoo_build.zoo_recipe()[name]
        settings = {**PROFILES["quick"].source_settings, **dict(TINY_SETTINGS)}
        return config_with(read_config_file(load_suite(suite).sources[source]), settings)

    monkeypatch.setattr(zoo_build, "builtin_config", config)
    return folder


def test_zoo_build_trains_packs_and_installs_verified_sources(tiny_builtin, tmp_path, capsys):
    assert builtin_index() == {}
    code = main(["zoo", "build", "--out", str(tmp_path / "build"), "--sources", "digits1", "--install"])
    assert code == 0, capsys.readouterr().err
    entry = builtin_index()["digits1"]
    assert (tiny_builtin / "digits1.safetensors").stat().st_size == entry["bytes"]
    assert entry["suite"] == "digits" and entry["iterations"] == 2 and entry["check_sequences"] == CHECK_SEQUENCES
    source = load_source("builtin:digits1")
    assert source.config.data.frame_size == 16

    # building again reuses the finished run: the same weights, the same checksum
    sha = entry["sha256"]
    assert main(["zoo", "build", "--out", str(tmp_path / "build"), "--sources", "digits1", "--install"]) == 0
    assert builtin_index()["digits1"]["sha256"] == sha

    data = bytearray((tiny_builtin / "digits1.safetensors").read_bytes())
    data[-3] ^= 0xFF
    (tiny_builtin / "digits1.safetensors").write_bytes(bytes(data))
    with pytest.raises(BuiltinZooError, match="damaged"):
        load_source("builtin:digits1")
    with pytest.raises(BuiltinZooError, match="no builtin source named 'digits9'"):
        load_source("builtin:digits9")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["zoo", "build", "--out", "{x}", "--sources", "mnist"], "unknown builtin source"),
        (["train", "{config}", "--out", "{run}"], "damaged"),
    ],
)
def test_builtin_errors_are_one_line_exit_2(tiny_builtin, tmp_path, capsys, argv, message):
    (tiny_builtin).mkdir(parents=True)
    (tiny_builtin / "digits1.safetensors").write_bytes(b"not weights")
    (tiny_builtin / "index.json").write_text(
        json.dumps({"sources": {"digits1": {"file": "digits1.safetensors", "sha256": "0" * 64}}})
    )
    config = tmp_path / "cfg.toml"
    config.write_text(tiny_config(transfer={"method": "finetune", "sources": ["builtin:digits1"]}).to_toml())
    argv = [a.format(config=config, run=tmp_path / "run", x=tmp_path / "x") for a in argv]
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "run").exists() and not (tmp_path / "x").exists()


def test_benchmark_takes_matching_builtin_sources_and_trains_the_others(tiny_builtin, tmp_path):
    zoo_build.build_builtin_zoo(tmp_path / "build", ["digits1"], install=True, log=lambda *_: None)
    out = tmp_path / "bench"
    results = run_benchmark(tiny_request(out, ["finetune", "tmu"], zoo="builtin"), log=lambda *_: None)
    assert not (out / "sources" / "digits1").exists() and (out / "sources" / "digits2" / "model.safetensors").exists()
    tmu = load_model(out / "runs" / "tmu" / "seed0").config
    assert tmu.transfer.sources == ["builtin:digits1", str(out / "sources" / "digits2")]
    assert results["sources"]["digits1"]["mse"] == pytest.approx(builtin_index()["digits1"]["test"]["mse"]["mean"])

    # another source config (here: more iterations) does not match: the benchmark trains its own
    other = tmp_path / "other"
    run_benchmark(tiny_request(other, ["finetune_digits1"], settings=["train.iterations=3"], zoo="builtin"), log=lambda *_: None)
    assert (other / "sources" / "digits1" / "model.safetensors").exists()


def test_a_suite_takes_a_builtin_of_the_same_name_built_for_another_suite_when_the_configs_agree():
    def plan(*settings):
        settings = tuple(map(parse_setting, settings))
        request = BenchmarkRequest("video", Path("unused"), "full", ("fusion",), settings, zoo="builtin")
        return plan_benchmark(request, count_flops=False)

    # the video suite's digits2 source is the digits suite's (same config file content)
    planned = plan()
    assert not [t for t in planned.tasks if t.name.startswith("source")]
    assert planned.runs[0].source_paths == ["builtin:bunny", "builtin:carphone", "builtin:digits2"]
    assert planned.runs[0].config.transfer.sources == planned.runs[0].source_paths
    assert zoo_build.zoo_recipe()["bikes"] == ("far", "video")  # configs/builtin_zoo.toml: the far suite's "video"
    assert set(zoo_build.zoo_recipe()) == set(builtin_index())  # every recipe ships, and nothing else
    # another config of the same name is not taken: the benchmark trains its own
    tasks = plan("train.iterations=7").tasks
    assert [t.name for t in tasks if t.name.startswith("source")] == ["source bunny", "source carphone", "source digits2"]
