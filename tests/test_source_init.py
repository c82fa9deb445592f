"""Transfer on a source-initialised target, the release's rollout bank, and source ranking.

- ``transfer.init_from``: the backbone starts from a source's weights; a ``distill`` target
  and a ``tmu`` target with ``memory_merge = "residual"`` then predict exactly what the
  source predicts;
- ``transfer.bank = "rollout"``: each source runs its own rollout under the target's mask;
- ``transmem zoo rank`` / ``init_from = "best"``: sources ranked on the validation split only.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from tests.support import target_config, tiny_config
from transmem.cli import main
from transmem.config import ConfigError
from transmem.data import build_dataset
from transmem.data.batch import TrainingBatch
from transmem.models import build_predictor
from transmem.run import ranking
from transmem.run.lifecycle import rank_init_sources, train
from transmem.run.ranking import rank_sources
from transmem.storage.model_file import load_model, save_model
from transmem.storage.run_folder import INIT_FILE
from transmem.training import setup
from transmem.transfer.memory_bank import RolloutMemoryBank
from transmem.transfer.methods import METHODS, distillation_loss
from transmem.transfer.zoo import SourceError, load_source


def random_source(folder, backbone="convlstm", norm="none", seed=0):
    """A source file with random (non-trivial) weights of a tiny target's architecture."""
    config = tiny_config(model={"backbone": backbone, "norm": norm, "hidden": [8, 8]})
    torch.manual_seed(seed)
    model = build_predictor(config.model, 1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    path = folder / f"{backbone}_{norm}_{seed}.safetensors"
    save_model(model, config, path)
    return path


def frames(batch=3, total=6, seed=1):
    return torch.rand(batch, total, 1, 16, 16, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- init_from


@pytest.mark.parametrize("backbone", ["convlstm", "predrnn"])
@pytest.mark.parametrize("norm", ["none", "group"])
@pytest.mark.parametrize("method, merge", [("tmu", "residual"), ("distill", "sum"), ("kflow", "sum")])
def test_a_source_initialised_target_starts_as_its_source(tmp_path, backbone, norm, method, merge):
    paths = [random_source(tmp_path, backbone, norm, seed) for seed in (0, 1)]
    config = target_config(
        paths,
        model={"backbone": backbone, "norm": norm, "hidden": [8, 8]},
        layers=[0, 1],
        method=method,
        memory_merge=merge,
        init_from=paths[1].stem,
    )
    target = METHODS[method](config, tmp_path / "run", torch.device("cpu"))
    torch.manual_seed(5)
    model = target.build_model()
    record = target.initialize(model, rank_init_sources(target))
    assert record["source"] == str(paths[1]) and record["ranking"] is None
    source = load_source(paths[1]).model
    x = frames()
    # (kflow: at test time no teacher flows in, and its backbone is the source's)
    torch.testing.assert_close(model.predict(x[:, :3], 3), source.predict(x[:, :3], 3), rtol=0, atol=1e-6)
    if method == "kflow":
        return
    mask = torch.tensor([[True, False, True, False]] * 3)  # training-time scheduled sampling too
    torch.testing.assert_close(model(x, mask).predictions, source(x, mask).predictions, rtol=0, atol=1e-6)
    transfer_parts = [n for n, p in model.named_parameters() if ".transfer" in n]
    assert transfer_parts  # they exist, and start fresh (not all zero)
    assert any(p.abs().sum() > 0 for n, p in model.named_parameters() if ".transfer.distillers" in n)


@pytest.mark.parametrize("merge", ["sum", "mean"])
def test_sum_and_mean_merges_do_not_start_as_the_source(tmp_path, merge):
    # why the residual merge exists: a sigmoid gate is never exactly closed, and "sum" adds
    # N + 1 copies of the memory, so these targets leave the source's predictions at step 0
    paths = [random_source(tmp_path, seed=seed) for seed in (0, 1)]
    config = target_config(paths, model={"hidden": [8, 8]}, memory_merge=merge, init_from=paths[0].stem)
    target = METHODS["tmu"](config, tmp_path / "run", torch.device("cpu"))
    model = target.build_model()
    target.initialize(model, rank_init_sources(target))
    x = frames()
    gap = (model.predict(x[:, :3], 3) - load_source(paths[0]).model.predict(x[:, :3], 3)).abs().max()
    assert gap > 1e-3
    # its gate convolution holds the source's rows, the transfer-gate rows are fresh
    source_rows = load_source(paths[0]).model.state_dict()["cells.0.gate_conv.weight"]
    mine = model.state_dict()["cells.0.gate_conv.weight"]
    assert mine.shape[0] == source_rows.shape[0] + 2 * 8
    assert torch.equal(mine[: source_rows.shape[0]], source_rows)


def test_residual_transfer_scale_starts_at_zero_and_learns_from_the_prediction_loss(tmp_path):
    paths = [random_source(tmp_path, seed=seed) for seed in (0, 1)]
    config = target_config(paths, model={"hidden": [8, 8]}, memory_merge="residual", init_from=paths[0].stem)
    target = METHODS["tmu"](config, tmp_path / "run", torch.device("cpu"))
    model = target.build_model()
    unit = model.transfer_unit(0)
    assert unit.transfer_scale.shape == (2, 8, 1, 1) and torch.equal(unit.transfer_scale, torch.zeros(2, 8, 1, 1))
    x = frames()
    rollout = model(x)
    assert torch.equal(rollout.gate_means[0], torch.zeros(3, 5, 2))  # the effective gates a^n T^n start closed
    F.mse_loss(rollout.predictions, x[:, 1:]).backward()
    assert unit.transfer_scale.grad.abs().sum() > 0
    # the gates get no gradient while the scale is zero: the transfer opens through the scale
    gate_grad = model.cells[0].transfer_gate_conv.weight.grad
    assert gate_grad is None or gate_grad.abs().sum() == 0


@pytest.mark.parametrize("reaches", [True, False])
def test_hint_to_backbone_decides_whether_the_distillation_gradient_reaches_the_cell(zoo, tmp_path, reaches):
    config = target_config([zoo["digits1"], zoo["digits2"]], bank="live", hint_to_backbone=reaches)
    method = METHODS["tmu"](config, tmp_path, torch.device("cpu"))
    model = method.build_model()
    method.prepare(model, None, progress=False)
    x = build_dataset(config.data, "train").batch([0, 1])
    rollout = model(x, None, return_inputs=True)
    loss = distillation_loss(model, rollout, method.bank.get(TrainingBatch([0, 1], x), rollout.inputs))
    cell_weight = model.cells[0].gate_conv.weight
    distiller = model.cells[0].transfer.distillers[0][0].weight
    cell_grad, distiller_grad = torch.autograd.grad(loss, [cell_weight, distiller], allow_unused=True)
    assert distiller_grad.abs().sum() > 0
    assert (cell_grad is not None and cell_grad.abs().sum() > 0) == reaches
    assert model.transfer_layout[0].get("hint_to_backbone", True) == reaches  # saved with the model


def test_init_from_refuses_an_unknown_source_and_another_architecture(zoo, tmp_path):
    config = target_config([zoo["digits1"], zoo["digits2"]], init_from="digits3")
    with pytest.raises(SourceError, match="transfer.init_from: 'digits3' is not one of transfer.sources"):
        METHODS["tmu"](config, tmp_path, torch.device("cpu"))
    config = target_config([zoo["digits1"], zoo["small"]], init_from="small")
    with pytest.raises(SourceError, match="starting from a source needs the same architecture"):
        METHODS["tmu"](config, tmp_path, torch.device("cpu"))
    config = target_config([zoo["small"], zoo["coarse"]], init_from="best")
    with pytest.raises(SourceError, match="no source has the target's architecture"):
        METHODS["tmu"](config, tmp_path, torch.device("cpu"))
    with pytest.raises(ConfigError, match="transfer.init_from: method 'none'"):
        tiny_config(transfer={"method": "none", "init_from": "best"})
    with pytest.raises(ConfigError, match="transfer.sources"):
        tiny_config(transfer={"method": "tmu", "init_from": "best", "sources": []})
    with pytest.raises(ConfigError, match="finetune takes exactly one source"):
        tiny_config(transfer={"method": "finetune", "sources": ["a", "b"]})
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_a_refused_init_from_writes_nothing_from_the_cli(zoo, tmp_path, capsys):
    config = tmp_path / "target.toml"
    config.write_text(target_config([zoo["digits1"], zoo["small"]], init_from="small").to_toml())
    code = main(["train", str(config), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "same architecture" in err
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- rollout bank


def test_rollout_bank_sources_feed_back_their_own_predictions_where_the_mask_is_false(zoo):
    source = load_source(zoo["digits2"])
    bank = RolloutMemoryBank([source], [0])
    x = frames(batch=2)
    mask = torch.tensor([[True, False, False, True], [False, True, False, False]])
    memories = bank.get(TrainingBatch([0, 1], x, mask))[0][0]

    # independent construction, step by step: at a masked step the source reads its own
    # prediction of that frame, made from what it read before (never the target's)
    fed = x.clone()
    for step in range(1, x.shape[1] - 1):
        for b in range(2):
            if not mask[b, step - 1]:
                own = source.model(fed[b : b + 1, : step + 1], None).predictions[:, step - 1]
                fed[b, step] = own[0]
    expected = source.model(fed, None, record_layers=[0]).memories[0]
    torch.testing.assert_close(memories, expected, rtol=1e-5, atol=1e-6)

    # not the true frames' memories (the cached bank), and truth wherever the mask is all True
    truth = source.model(x, None, record_layers=[0]).memories[0]
    assert not torch.allclose(memories, truth, atol=1e-4)
    all_true = bank.get(TrainingBatch([0, 1], x, torch.ones(2, 4, dtype=torch.bool)))[0][0]
    torch.testing.assert_close(all_true, truth)


def test_tmu_with_the_rollout_bank_trains_end_to_end(zoo, tmp_path):
    config = target_config([zoo["digits1"], zoo["digits2"]], bank="rollout", data={"train_size": 0})
    result = train(config, tmp_path / "run", progress=False)
    assert result.val and all(math.isfinite(v) for v in result.val.values())
    assert not (tmp_path / "run" / "memory_bank").exists()
    rows = (tmp_path / "run" / "train.csv").read_text().splitlines()
    distill = [float(r.split(",")[rows[0].split(",").index("distill")]) for r in rows[1:]]
    assert distill and all(d > 0 for d in distill)


def test_unknown_bank_is_refused():
    with pytest.raises(ConfigError, match="transfer.bank: expected one of auto, cached, live, rollout"):
        tiny_config(transfer={"method": "tmu", "sources": ["a"], "bank": "teacher"})


# ----------------------------------------------------------------------------- ranking


def _spy_splits(monkeypatch) -> list[str]:
    splits: list[str] = []
    real = build_dataset

    def spy(config, split):
        splits.append(split)
        return real(config, split)

    for module in (ranking, setup):
        monkeypatch.setattr(module, "build_dataset", spy)
    return splits


def test_rank_sources_reads_only_the_validation_split_and_is_cached(zoo, tmp_path, monkeypatch):
    splits = _spy_splits(monkeypatch)
    sources = [load_source(zoo[name]) for name in ("digits1", "digits2", "small")]
    target = target_config([zoo["digits1"]], method="none")
    rows = rank_sources(sources, target, tmp_path / "rank", probe=2)
    assert "test" not in splits and "val" in splits and "train" in splits

    assert [row["rank"] for row in rows] == [1, 2, 3]
    assert rows[-1]["name"] == "small" and rows[-1]["probe_mse"] is None and "other architecture" in rows[-1]["note"]
    probed = rows[:2]
    assert probed[0]["probe_mse"] <= probed[1]["probe_mse"]
    assert all(row["zero_shot_mse"] > 0 for row in rows)

    # the probe is a finetune of the target's settings: its val MSE is that run's val MSE
    (home,) = (tmp_path / "rank").iterdir()
    probe_run = next(home.glob("probe0_*"))
    probe_model = load_model(probe_run).model
    from transmem.evaluation.evaluate import evaluate_model

    val = build_dataset(target.data, "val")
    by_name = {row["name"]: row for row in rows}
    assert evaluate_model(probe_model, val, target)["model"]["mse"]["mean"] == pytest.approx(by_name["digits1"]["probe_mse"])

    stamp = (home / "rank.json").stat().st_mtime_ns
    splits.clear()
    assert rank_sources(sources, target, tmp_path / "rank", probe=2) == rows  # read back, nothing retrained
    assert (home / "rank.json").stat().st_mtime_ns == stamp and splits == ["val"]


def test_a_probe_scores_its_last_weights_whatever_the_target_keeps(zoo):
    # a best_val target that also validates its start would otherwise score min(zero-shot, probe)
    target = target_config([zoo["digits1"]], method="none", train_={"weights": "best_val", "val_start": True, "val_every": 1})
    probe = ranking.probe_config(target, str(zoo["digits1"]), 2).train
    assert (probe.weights, probe.val_start, probe.val_every, probe.iterations) == ("last", False, 0, 2)


def test_zero_shot_ranking_orders_by_zero_shot_mse(zoo, tmp_path):
    sources = [load_source(zoo[name]) for name in ("digits1", "digits2")]
    rows = rank_sources(sources, target_config([zoo["digits1"]], method="none"), tmp_path, probe=0)
    assert rows[0]["zero_shot_mse"] <= rows[1]["zero_shot_mse"] and all(r["probe_mse"] is None for r in rows)
    assert not list(next(tmp_path.iterdir()).glob("probe*"))  # no probe trained


def test_ranking_refuses_a_target_without_validation_split(zoo, tmp_path):
    from transmem.data import DataError

    target = target_config([zoo["digits1"]], method="none", data={"val_size": 0})
    with pytest.raises(DataError, match="no validation split"):
        rank_sources([load_source(zoo["digits1"])], target, tmp_path, probe=2)


def test_finetune_best_is_the_finetune_of_the_top_ranked_source(zoo, tmp_path):
    names = ("digits1", "digits2")
    sources = [str(zoo[name]) for name in names]
    best = target_config(sources, method="finetune", init_from="best", rank_probe=2, cache_dir=str(tmp_path / "cache"))
    train(best, tmp_path / "best", progress=False)
    record = json.loads((tmp_path / "best" / INIT_FILE).read_text())
    chosen = record["ranking"][0]
    assert record["source"] == chosen["path"] and record["name"] == chosen["name"]
    assert (tmp_path / "cache" / "source_rank").is_dir() and not (tmp_path / "best" / "source_rank").exists()

    plain = target_config([chosen["path"]], method="finetune")
    train(plain, tmp_path / "plain", progress=False)
    a, b = load_model(tmp_path / "best").model.state_dict(), load_model(tmp_path / "plain").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit for bit: the same run once the source is chosen


def test_tmu_from_the_best_source_trains_and_records_its_choice(zoo, tmp_path):
    config = target_config(
        [zoo["digits1"], zoo["digits2"], zoo["small"]],
        init_from="best",
        memory_merge="residual",
        rank_probe=0,
    )
    train(config, tmp_path / "run", progress=False)
    record = json.loads((tmp_path / "run" / INIT_FILE).read_text())
    assert record["name"] in ("digits1", "digits2")  # never the source of another architecture
    assert [row["rank"] for row in record["ranking"]] == [1, 2, 3]
    assert (tmp_path / "run" / "source_rank").is_dir()


def test_zoo_rank_cli_prints_a_table_and_writes_json(zoo, tmp_path, capsys):
    config = tmp_path / "target.toml"
    config.write_text(target_config([zoo["digits1"]], method="none").to_toml())
    code = main(
        [
            "zoo",
            "rank",
            str(zoo["digits1"]),
            str(zoo["coarse"]),
            "--target",
            str(config),
            "--probe",
            "2",
            "--out",
            str(tmp_path / "r"),
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "zero-shot val mse" in out and "digits1" in out and "coarse" in out
    stored = json.loads((tmp_path / "r" / "rank.json").read_text())
    assert [row["name"] for row in stored["rows"]] == ["digits1", "coarse"] and stored["probe"] == 2


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "zoo rank: no sources given"),
        (["{missing}"], "source"),
        (["{digits1}", "--probe", "-1"], "--probe must be >= 0"),
    ],
)
def test_zoo_rank_bad_input_is_one_line_exit_2(zoo, tmp_path, capsys, args, message):
    config = tmp_path / "target.toml"
    config.write_text(target_config([zoo["digits1"]], method="none").to_toml())
    args = [a.format(digits1=zoo["digits1"], missing=tmp_path / "nowhere") for a in args]
    code = main(["zoo", "rank", *args, "--target", str(config), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "r").exists()


def test_the_ranking_key_follows_the_settings_a_probe_trains_with_and_no_other():
    import dataclasses
    from types import SimpleNamespace

    from transmem.schema import TrainConfig

    sources = [SimpleNamespace(digest="a"), SimpleNamespace(digest="b")]
    target = tiny_config()
    key = ranking.ranking_key(sources, target, 2)
    # what the probe trains and scores with changes the key ...
    assert ranking.ranking_key(sources, tiny_config(train={"lr": 1e-4}), 2) != key
    assert ranking.ranking_key(sources, tiny_config(data={"train_size": 16}), 2) != key
    assert ranking.ranking_key(sources, target, 3) != key
    assert ranking.ranking_key(sources[::-1], target, 2) != key
    # ... what the probe overrides does not (it always keeps its last weights, seed 0) ...
    assert ranking.ranking_key(sources, tiny_config(train={"weights": "best_val", "val_start": True, "seed": 5}), 2) == key
    # ... nor an option added to transmem later, at a default that keeps the old behaviour
    later = dataclasses.make_dataclass("TrainConfig", [("future_option", bool, False)], bases=(TrainConfig,))
    probe = ranking.probe_config(target, "-", 2)
    train = dataclasses.asdict(probe.train)
    newer = dataclasses.replace(probe, train=later(**train))
    assert ranking.changed_settings(newer) == ranking.changed_settings(probe)
    set_later = dataclasses.replace(probe, train=later(**train, future_option=True))
    assert ranking.changed_settings(set_later)["train"]["future_option"] is True  # once set, it counts
