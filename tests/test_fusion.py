"""Zoo fusion (``transfer.method = "fusion"``): sources side by side in one wider backbone.

The equations of models/fusion.py: with the cross weights zero, each channel block evolves as
its member alone; a one-hot head predicts exactly as that member; a ``1/N`` head under
teacher forcing predicts the members' mean. Then the method: ranking picks the blocks, the
fused target starts as the best source, and bad input is one line with nothing written.
"""

from __future__ import annotations

import json

import pytest
import torch

from tests.support import target_config
from tests.test_source_init import frames, random_source
from transmem.cli import main
from transmem.config import ConfigError
from transmem.models import RecurrentPredictor, rollout_mask
from transmem.models.fusion import block_indices, fuse_backbones, fused_hidden
from transmem.run.lifecycle import rank_init_sources, train
from transmem.storage.model_file import load_model
from transmem.storage.run_folder import INIT_FILE
from transmem.transfer.methods import METHODS
from transmem.transfer.zoo import SourceError, load_source


def random_members(backbone: str, hiddens: list[list[int]], kernel=3, patch=2) -> list[RecurrentPredictor]:
    torch.manual_seed(0)
    members = [RecurrentPredictor(backbone, 1, hidden, kernel, patch) for hidden in hiddens]
    with torch.no_grad():
        for member in members:
            for parameter in member.parameters():
                parameter.normal_(0, 0.3)
    return members


# ----------------------------------------------------------------------------- the equations


def test_block_indices_place_each_member_in_its_block_of_every_group():
    layout = [("shared", 2), ("blocks", [3, 1])]  # e.g. [frame patch, H] of a fused first layer
    fused, own = block_indices(layout, 0)
    assert fused.tolist() == [0, 1, 2, 3, 4] and own.tolist() == [0, 1, 2, 3, 4]
    fused, own = block_indices(layout, 1)
    assert fused.tolist() == [0, 1, 5] and own.tolist() == [0, 1, 2]
    fused, own = block_indices([("blocks", [2, 3])] * 2, 1)  # two gate groups
    assert fused.tolist() == [2, 3, 4, 7, 8, 9] and own.tolist() == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    "backbone, hiddens", [("convlstm", [[8, 6], [4, 5]]), ("predrnn", [[8, 8], [4, 4]]), ("predrnn_v2", [[6, 6], [6, 6]])]
)
def test_a_one_hot_head_predicts_exactly_as_that_member_and_a_mean_head_as_their_mean(backbone, hiddens):
    members = random_members(backbone, hiddens)
    target = RecurrentPredictor(backbone, 1, fused_hidden(members), 3, 2)
    assert target.hidden == [sum(h) for h in zip(*hiddens)]
    x = torch.rand(2, 6, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    mask = rollout_mask(2, 6, 3)  # test-time rollout: the target feeds back its own prediction
    with torch.no_grad():
        for chosen in range(2):
            fuse_backbones(target, members, [1.0 if n == chosen else 0.0 for n in range(2)])
            torch.testing.assert_close(target(x, mask).predictions, members[chosen](x, mask).predictions, rtol=0, atol=1e-6)
        fuse_backbones(target, members, [0.5, 0.5])
        mean = (members[0](x).predictions + members[1](x).predictions) / 2  # true frames at every step
        torch.testing.assert_close(target(x).predictions, mean, rtol=0, atol=1e-6)
        # and not trivially: the two members predict differently
        assert (members[0](x).predictions - members[1](x).predictions).abs().max() > 1e-2


def test_cross_weights_start_at_zero_and_are_trained():
    members = random_members("convlstm", [[4], [4]])
    target = RecurrentPredictor("convlstm", 1, [8], 3, 2)
    fuse_backbones(target, members, [1.0, 0.0])
    weight = target.cells[0].gate_conv.weight  # (4 gates x 8, 4 patch + 8 hidden, 3, 3)
    hidden_cols = slice(4, 12)
    block = weight[:, hidden_cols].view(4, 8, 8, 3, 3)  # gate, out channel, in channel
    assert block[:, :4, 4:].abs().max() == 0 and block[:, 4:, :4].abs().max() == 0  # member 0 <-> member 1
    torch.testing.assert_close(block[:, :4, :4], members[0].cells[0].gate_conv.weight[:, 4:].view(4, 4, 4, 3, 3))
    x = torch.rand(2, 5, 1, 8, 8)
    target(x).predictions.square().mean().backward()
    grad = weight.grad[:, hidden_cols].view(4, 8, 8, 3, 3)
    assert grad[:, :4, 4:].abs().max() > 0  # the cross weights learn
    assert target.output.weight.grad[:, 4:].abs().max() > 0  # so does the head of the zero-weighted member


def test_members_that_cannot_be_fused_are_refused():
    members = random_members("convlstm", [[4], [4]])
    with pytest.raises(ValueError, match=r"needs hidden = \[8\]"):
        fuse_backbones(RecurrentPredictor("convlstm", 1, [4], 3, 2), members, [1.0, 0.0])
    other = RecurrentPredictor("convlstm", 1, [4], 5, 2)
    with pytest.raises(ValueError, match="share"):
        fuse_backbones(RecurrentPredictor("convlstm", 1, [8], 3, 2), [members[0], other], [1.0, 0.0])
    grouped = [RecurrentPredictor("convlstm", 1, [4], 3, 2, norm="group") for _ in range(2)]
    with pytest.raises(ValueError, match="norm"):
        fuse_backbones(RecurrentPredictor("convlstm", 1, [8], 3, 2, norm="group"), grouped, [1.0, 0.0])
    with pytest.raises(ValueError, match="one head weight per member"):
        fuse_backbones(RecurrentPredictor("convlstm", 1, [8], 3, 2), members, [1.0])


# ----------------------------------------------------------------------------- the method


def fusion_config(paths, hidden=(16, 16), **transfer):
    return target_config(paths, model={"hidden": list(hidden)}, method="fusion", **transfer)


def test_a_fused_target_starts_as_the_best_ranked_source_and_records_its_blocks(tmp_path):
    paths = [random_source(tmp_path, seed=seed) for seed in (0, 1, 2)]
    config = fusion_config(paths, fuse=2, rank_probe=0, cache_dir=str(tmp_path / "cache"))
    method = METHODS["fusion"](config, tmp_path / "run", torch.device("cpu"))
    model = method.build_model()
    record = method.initialize(model, rank_init_sources(method))
    ranked = [row["path"] for row in record["ranking"]]
    assert record["fusion"] == ranked[:2] and record["head_weights"] == [1.0, 0.0]
    zero_shot = [row["zero_shot_mse"] for row in record["ranking"]]
    assert zero_shot == sorted(zero_shot)  # probe 0: ranked by zero-shot validation MSE
    best = load_source(ranked[0]).model
    x = frames()
    torch.testing.assert_close(model.predict(x[:, :3], 3), best.predict(x[:, :3], 3), rtol=0, atol=1e-6)
    mask = torch.tensor([[True, False, True, False]] * 3)
    torch.testing.assert_close(model(x, mask).predictions, best(x, mask).predictions, rtol=0, atol=1e-6)


def test_random_partners_keep_the_best_source_and_fill_the_other_block_with_a_seeded_random_network(tmp_path):
    paths = [random_source(tmp_path, seed=seed) for seed in (0, 1)]
    cache = str(tmp_path / "cache")

    def fused(partners, seed=0):
        config = fusion_config(paths, fuse=2, rank_probe=0, cache_dir=cache, fusion_partners=partners)
        config.train.seed = seed
        method = METHODS["fusion"](config, tmp_path / "run", torch.device("cpu"))
        model = method.build_model()
        state = torch.get_rng_state()
        record = method.initialize(model, rank_init_sources(method))
        assert torch.equal(torch.get_rng_state(), state)  # a random block does not move the global generator
        return model, record

    with_sources, _ = fused("sources")
    with_random, record = fused("random")
    best = record["ranking"][0]
    assert record["fusion"] == [best["path"]] and record["name"] == f"{best['name']}+random"
    assert record["partners"] == "random" and record["head_weights"] == [1.0, 0.0]
    # at iteration 0 it predicts exactly as the best source, as fusion of two sources does
    x = frames()
    source = load_source(best["path"]).model
    torch.testing.assert_close(with_random.predict(x[:, :3], 3), source.predict(x[:, :3], 3), rtol=0, atol=1e-6)
    # block 0 and every shared weight are the sources-fusion's; only the second block differs
    differing = [name for (name, a), b in zip(with_sources.named_parameters(), with_random.parameters()) if not torch.equal(a, b)]
    assert differing and all("output" not in name for name in differing)
    first_gate = dict(with_random.named_parameters())[differing[0]]
    hidden = with_random.hidden[0] // 2
    assert torch.equal(first_gate[:hidden], dict(with_sources.named_parameters())[differing[0]][:hidden])
    # seeded by train.seed: the same seed gives the same network, another seed another one
    again, _ = fused("random")
    other, _ = fused("random", seed=1)
    assert all(torch.equal(a, b) for a, b in zip(with_random.parameters(), again.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(with_random.parameters(), other.parameters()))


def test_a_mean_head_over_every_source_needs_no_ranking(tmp_path):
    paths = [random_source(tmp_path, seed=seed) for seed in (0, 1)]
    method = METHODS["fusion"](fusion_config(paths, fusion_head="mean"), tmp_path / "run", torch.device("cpu"))
    model = method.build_model()
    assert method.ranking_target() is None  # nothing to rank
    record = method.initialize(model)
    assert record["fusion"] == [str(p) for p in paths] and record["head_weights"] == [0.5, 0.5]
    x = frames()
    mean = sum(load_source(p).model(x).predictions for p in paths) / 2
    torch.testing.assert_close(model(x).predictions, mean, rtol=0, atol=1e-6)


def test_a_fusion_run_trains_records_its_sources_and_predicts_without_them(tmp_path):
    paths = [random_source(tmp_path, seed=seed) for seed in (0, 1)]
    run = tmp_path / "run"
    train(fusion_config(paths, rank_probe=2), run, progress=False)
    record = json.loads((run / INIT_FILE).read_text())
    assert sorted(record["fusion"]) == sorted(str(p) for p in paths) and record["name"].count("+") == 1
    assert (run / "source_rank").is_dir()  # probes ran in the run folder (no cache_dir)
    for path in paths:
        path.unlink()
    loaded = load_model(run)
    assert loaded.model.hidden == [16, 16] and loaded.config.transfer.method == "fusion"
    assert loaded.model.predict(frames()[:, :3], 2).shape == (3, 2, 1, 16, 16)


def test_fusion_refuses_bad_input_before_writing(tmp_path, capsys):
    paths = [random_source(tmp_path, seed=seed) for seed in (0, 1)]
    run = tmp_path / "run"
    with pytest.raises(SourceError, match=r"model.hidden: fusing 2 sources of hidden \[8, 8\] needs hidden = \[16, 16\]"):
        METHODS["fusion"](fusion_config(paths, hidden=(8, 8)), run, torch.device("cpu"))
    other = random_source(tmp_path, backbone="predrnn", seed=3)
    with pytest.raises(SourceError, match="fusing it needs the same architecture"):
        METHODS["fusion"](fusion_config([*paths, other]), run, torch.device("cpu"))
    with pytest.raises(ConfigError, match="transfer.fuse: 3 sources to fuse"):
        fusion_config(paths, fuse=3)
    with pytest.raises(ConfigError, match="transfer.init_from: method 'fusion'"):
        fusion_config(paths, init_from="best")
    with pytest.raises(ConfigError, match="transfer.fusion_head"):
        fusion_config(paths, fusion_head="median")
    with pytest.raises(ConfigError, match="transfer.fusion_partners: expected one of sources, random"):
        fusion_config(paths, fusion_partners="zeros")
    with pytest.raises(ConfigError, match=r"transfer.fuse: fusion_partners = 'random' needs fuse >= 2"):
        fusion_config(paths, fusion_partners="random")
    with pytest.raises(ConfigError, match="transfer.fusion_head: fusion_partners = 'random' needs fusion_head = 'best'"):
        fusion_config(paths, fuse=2, fusion_partners="random", fusion_head="mean")
    # the CLI: one line, exit 2, nothing written
    toml = tmp_path / "fusion.toml"
    toml.write_text(fusion_config(paths, hidden=(8, 8)).to_toml())
    assert main(["train", str(toml), "--out", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("transmem: error: model.hidden: fusing 2 sources")
    assert not run.exists()
