"""Transfer: frozen source zoo, memory banks, distillation loss, TMU targets end to end.

The tiny source zoo (``zoo``, trained once per session) is described in ``tests/support.py``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from tests.support import STEPS, TARGET_DATA, target_config, tiny_config
from transmem.cli import main
from transmem.config import ConfigError
from transmem.data import TrainingBatch, build_dataset
from transmem.models import build_predictor, rollout_mask
from transmem.predictor import load
from transmem.run.lifecycle import train
from transmem.storage.locks import FileLock
from transmem.storage.model_file import load_model, save_model
from transmem.transfer import (
    CachedMemoryBank,
    LiveMemoryBank,
    SourceError,
    distillation_loss,
    load_source,
    load_zoo,
)
from transmem.transfer.memory_bank import BUILD_LOCK
from transmem.transfer.methods import TransferableMemoryMethod


def file_digests(folder: Path) -> dict[str, str]:
    """SHA-256 of the weights files of a run folder (model and checkpoints)."""
    files = [folder / "model.safetensors", *sorted((folder / "checkpoints").iterdir())]
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="module")
def tmu_run(zoo, tmp_path_factory):
    """A TMU target on digits1 + digits2, with the sources' files hashed before training."""
    before = {name: file_digests(zoo[name]) for name in ("digits1", "digits2")}
    states = {name: {k: v.clone() for k, v in load_source(zoo[name]).model.state_dict().items()} for name in before}
    run = tmp_path_factory.mktemp("tmu") / "run"
    train(target_config([zoo["digits1"], zoo["digits2"]]), run, progress=False)
    return {"run": run, "files_before": before, "states_before": states}


def target_set():
    return build_dataset(tiny_config(data=TARGET_DATA).data, "train")


# ----------------------------------------------------------------------------- 1. frozen sources


def test_sources_are_frozen_and_unchanged_by_target_training(zoo, tmu_run):
    for name in ("digits1", "digits2"):
        assert file_digests(zoo[name]) == tmu_run["files_before"][name], name
        source = load_source(zoo[name])
        after = source.model.state_dict()
        for key, value in tmu_run["states_before"][name].items():
            assert torch.equal(after[key], value), (name, key)
        assert all(not p.requires_grad for p in source.model.parameters())
        assert not source.model.training
    assert (tmu_run["run"] / "model.safetensors").is_file()


@pytest.mark.parametrize("bank", ["live", "cached"])
def test_a_target_step_sends_no_gradient_into_sources(zoo, tmp_path, bank):
    config = target_config([zoo["digits1"], zoo["small"]], bank=bank)
    method = TransferableMemoryMethod(config, tmp_path, torch.device("cpu"))
    model = method.build_model()
    method.prepare(model, build_dataset(config.data, "train"), progress=False)
    source_params = [p for s in method.sources for p in s.model.parameters()]
    assert not {id(p) for p in source_params} & {id(p) for p in model.parameters()}
    before = [p.clone() for p in source_params]

    train_set = build_dataset(config.data, "train")
    indices = [1, 6]
    frames = train_set.batch(indices)
    mask = torch.tensor([[True, False, True, False]] * 2)  # scheduled-sampling inputs
    rollout = model(frames, mask, **method.forward_kwargs(frames, 0))
    assert (rollout.inputs is not None) == (bank == "live")
    batch = TrainingBatch(indices, frames, mask)
    bank_memories = method.bank.get(batch, rollout.inputs)
    assert all(not m.requires_grad for memories in bank_memories for m in memories.values())
    ((weight, value),) = method.losses(model, batch, rollout).values()
    assert weight == pytest.approx(0.1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    (F.mse_loss(rollout.predictions, frames[:, 1:]) + weight * value).backward()
    optimizer.step()
    assert all(p.grad is None for p in source_params)
    assert all(torch.equal(p, b) for p, b in zip(source_params, before))
    assert all(p.grad is not None for p in model.transfer_unit(0).parameters())


# ----------------------------------------------------------------------------- 2. distillation loss


def test_distillation_loss_matches_definition_and_reaches_only_distillers(zoo, tmp_path):
    config = target_config([zoo["digits1"], zoo["small"], zoo["coarse"]], bank="live")
    method = TransferableMemoryMethod(config, tmp_path, torch.device("cpu"))
    torch.manual_seed(0)
    model = method.build_model()
    method.prepare(model, None, progress=False)
    frames = build_dataset(config.data, "train").batch([0, 1])
    rollout = model(frames, None, return_inputs=True)  # teacher forcing: inputs = true frames
    bank = method.bank.get(TrainingBatch([0, 1], frames), rollout.inputs)
    loss = distillation_loss(model, rollout, bank)

    # independent computation: mean over sources of MSE(interp(W_proj * D^n), C^n)
    unit = model.transfer_unit(0)
    terms = []
    for n, memories in enumerate(bank):
        d = rollout.distilled[0][:, :, n].reshape(-1, 8, 4, 4)
        if n == 1:  # small: 1x1 projection 8 -> 4 channels, then 4x4 -> 8x8
            d = F.conv2d(d, unit.projections[1].weight)
        size = memories[0].shape[-2:]
        if tuple(size) != (4, 4):
            d = F.interpolate(d, size=tuple(size), mode="bilinear", align_corners=False)
        terms.append(((d.reshape(memories[0].shape) - memories[0]) ** 2).mean())
    assert loss.item() == pytest.approx(torch.stack(terms).mean().item(), rel=1e-5)

    named = dict(model.named_parameters())
    grads = torch.autograd.grad(0.1 * loss, list(named.values()), allow_unused=True)
    grads = dict(zip(named, grads))
    for name, grad in grads.items():
        if ".transfer.distillers." in name or ".transfer.projections." in name:
            assert grad is not None and grad.abs().sum() > 0, name
    # with true inputs the output head does not influence the memories: no gradient there
    assert grads["output.weight"] is None or grads["output.weight"].abs().sum() == 0
    # the sources were not part of the graph
    assert all(p.grad is None for s in method.sources for p in s.model.parameters())


def test_zero_distill_weight_sends_no_distillation_gradient(zoo, tmp_path, monkeypatch):
    sources = [zoo["digits1"], zoo["digits2"]]
    config0 = target_config(sources, distill_weight=0.0)
    method = TransferableMemoryMethod(config0, tmp_path / "m", torch.device("cpu"))
    model = method.build_model()
    method.prepare(model, build_dataset(config0.data, "train"), progress=False)
    frames = build_dataset(config0.data, "train").batch([2, 3])
    rollout = model(frames, None, **method.forward_kwargs(frames, 0))
    ((weight, value),) = method.losses(model, TrainingBatch([2, 3], frames), rollout).values()
    assert weight == 0.0 and value.item() > 0 and value.requires_grad

    train(config0, tmp_path / "zero", progress=False)
    train(target_config(sources, distill_weight=0.1), tmp_path / "tenth", progress=False)
    monkeypatch.setattr(TransferableMemoryMethod, "losses", lambda self, model, batch, rollout: {})
    train(config0, tmp_path / "prediction_only", progress=False)

    zero = load_model(tmp_path / "zero").model.state_dict()
    alone = load_model(tmp_path / "prediction_only").model.state_dict()
    tenth = load_model(tmp_path / "tenth").model.state_dict()
    for key in zero:
        assert torch.equal(zero[key], alone[key]), key
    distiller = "cells.0.transfer.distillers.0.0.weight"
    assert not torch.equal(tenth[distiller], alone[distiller])  # the term does train the distillers
    rows = (tmp_path / "zero" / "train.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert all(float(r.split(",")[header.index("distill")]) > 0 for r in rows[1:])  # still logged


# ----------------------------------------------------------------------------- 3. cached vs live bank


def test_cached_and_live_banks_agree_on_true_frames(zoo, tmp_path):
    sources = load_zoo([str(zoo[n]) for n in ("digits1", "small", "coarse")], target_config([zoo["digits1"]]), [0])
    dataset = target_set()
    cached = CachedMemoryBank(sources, [0], dataset, tmp_path, batch_size=3, progress=False)
    live = LiveMemoryBank(sources, [0])
    indices = [5, 0, 7]
    frames = dataset.batch(indices)
    from_cache = cached.get(TrainingBatch(indices, frames))
    from_live = live.get(TrainingBatch(indices, frames), frames[:, :-1])
    shapes = [(3, STEPS, 8, 4, 4), (3, STEPS, 4, 8, 8), (3, STEPS, 8, 2, 2)]
    for n, shape in enumerate(shapes):
        a, b = from_cache[n][0], from_live[n][0]
        assert a.shape == b.shape == shape and a.dtype == torch.float32
        assert a.abs().max() > 1e-3
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3 * float(b.abs().max()))

    # live memories follow the inputs causally: changing the input of step 3 changes steps 3..
    changed = frames[:, :-1].clone()
    changed[:, 3] = 1.0 - changed[:, 3]
    other = live.get(TrainingBatch(indices, frames), changed)
    for n in range(3):
        assert torch.equal(other[n][0][:, :3], from_live[n][0][:, :3])
        assert not torch.allclose(other[n][0][:, 3:], from_live[n][0][:, 3:])


@pytest.mark.parametrize(
    "bank, train_size, time_reversal, expected",
    [("auto", 8, False, "cached"), ("auto", 0, False, "live"), ("auto", 8, True, "live"), ("live", 8, False, "live")],
)
def test_auto_bank_is_cached_only_for_finite_forward_time_training(zoo, tmp_path, bank, train_size, time_reversal, expected):
    # a cached bank holds forward-time memories: played backwards, a sequence would meet
    # the memories of the opposite frames, so time reversal needs the live bank
    config = target_config([zoo["digits1"]], data={"train_size": train_size}, train_={"time_reversal": time_reversal}, bank=bank)
    method = TransferableMemoryMethod(config, tmp_path, torch.device("cpu"))
    assert method.bank_mode(build_dataset(config.data, "train")) == expected


# ----------------------------------------------------------------------------- 4. N sources, heterogeneous


@pytest.mark.parametrize(
    "names, backbone, bank, merge",
    [
        (["digits1"], "convlstm", "cached", "sum"),
        (["digits1", "digits2"], "predrnn", "cached", "mean"),
        (["digits1", "small", "coarse"], "convlstm", "live", "sum"),
    ],
)
def test_n_sources_train_end_to_end_and_layout_is_recorded(zoo, tmp_path, names, backbone, bank, merge):
    data = {"train_size": 0} if bank == "live" else None
    config = target_config([zoo[n] for n in names], data=data, model={"backbone": backbone}, bank=bank, memory_merge=merge)
    result = train(config, tmp_path / "run", progress=False)
    assert all(np.isfinite(v) for v in result.val.values())
    assert (tmp_path / "run" / "memory_bank").is_dir() == (bank == "cached")

    expected_channels = {"digits1": 8, "digits2": 8, "small": 4, "coarse": 8}
    expected_sizes = {"digits1": None, "digits2": None, "small": [8, 8], "coarse": [2, 2]}
    model = load_model(tmp_path / "run").model
    assert list(model.transfer_layout) == [0]
    layout = model.transfer_layout[0]
    assert layout["source_channels"] == [expected_channels[n] for n in names]
    assert layout["source_sizes"] == [expected_sizes[n] for n in names]
    assert layout["use_gates"] is True and layout.get("kind", "tmu") == "tmu"
    unit = model.transfer_unit(0)
    assert unit.num_sources == len(names) and layout["merge"] == unit.merge == merge  # restored from the file
    for n, name in enumerate(names):
        projection = unit.projections[n]
        if expected_channels[name] == 8:
            assert isinstance(projection, torch.nn.Identity)
        else:
            assert isinstance(projection, torch.nn.Conv2d) and projection.out_channels == expected_channels[name]
    rows = (tmp_path / "run" / "train.csv").read_text().splitlines()
    header = rows[0].split(",")
    distill = [float(r.split(",")[header.index("distill")]) for r in rows[1:]]
    assert len(distill) == 3 and all(np.isfinite(distill)) and all(d > 0 for d in distill)


# ----------------------------------------------------------------------------- 5. no sources at inference


def test_memory_scale_is_the_rms_of_the_test_time_memory_and_inspect_prints_it(tmu_run, capsys):
    from transmem.evaluation.memory_scale import memory_scale

    loaded = load_model(tmu_run["run"])
    model, config = loaded.model.eval(), loaded.config
    frames = torch.stack([build_dataset(config.data, "val")[i] for i in range(3)])
    scale = memory_scale(model, frames, config.data.input_len)
    with torch.no_grad():  # test time: truth for the observed frames, own predictions after
        rollout = model(frames, rollout_mask(3, STEPS + 1, config.data.input_len), record_layers=[0])
    expected = [float(rollout.memories[0][:, t].double().pow(2).mean().sqrt()) for t in range(STEPS)]
    assert scale[0]["memory_rms"] == pytest.approx(expected, rel=1e-9)
    gates = scale[0]["gate_means"]
    assert len(gates) == STEPS and all(len(g) == 2 and all(0 < v < 1 for v in g) for g in gates)
    with pytest.raises(ValueError, match="input_len"):
        memory_scale(model, frames, STEPS + 1)

    assert main(["inspect", str(tmu_run["run"]), "--sequences", "2"]) == 0
    out = capsys.readouterr().out
    assert "2 val sequences" in out and "layer 0 memory rms" in out and "gate digits1" in out and "gate digits2" in out
    assert main(["inspect", str(tmu_run["run"]), "--sequences", "0"]) == 2
    assert "--sequences must be >= 1" in capsys.readouterr().err


def test_tmu_checkpoint_predicts_without_sources(zoo, tmp_path):
    copies = tmp_path / "zoo"
    for name in ("digits1", "small"):
        shutil.copytree(zoo[name], copies / name)
    run = tmp_path / "run"
    train(target_config([copies / "digits1", copies / "small"]), run, progress=False)
    frames = build_dataset(tiny_config(data=TARGET_DATA).data, "test").batch([0, 1])[:, :3]
    before = load(run).predict(frames, 4)
    shutil.rmtree(copies)
    shutil.rmtree(run / "memory_bank")

    predictor = load(run)
    after = predictor.predict(frames, 4)
    assert after.shape == (2, 4, 1, 16, 16)
    assert torch.equal(before, after)
    assert torch.equal(load(run / "checkpoints" / "ckpt-00000006.pt").predict(frames, 4), after)

    np.save(tmp_path / "input.npy", frames[0, :, 0].numpy())  # (T, H, W)
    out = tmp_path / "pred"
    assert main(["predict", str(run), "--input", str(tmp_path / "input.npy"), "--out", str(out), "--horizon", "4"]) == 0
    written = np.load(out / "prediction.npy")
    assert written.shape == (1, 4, 1, 16, 16)
    np.testing.assert_allclose(written[0], after[0].numpy(), atol=1e-6)
    with Image.open(out / "strip_0.png") as png:
        assert png.format == "PNG"
    with Image.open(out / "prediction_0.gif") as gif:
        assert gif.format == "GIF" and gif.n_frames >= 4

    assert main(["evaluate", str(run)]) == 0  # scoring needs no source either
    assert "transfer_gates" in json.loads((run / "metrics.json").read_text())


# ----------------------------------------------------------------------------- 6. clear errors


def test_source_with_other_channel_count_is_refused_by_name(zoo, tmp_path):
    rgb = tiny_config(data={"name": "array_file", "channels": 3, "options": {"path": str(tmp_path / "unused.npy")}})
    path = tmp_path / "rgb_source.safetensors"
    save_model(build_predictor(rgb.model, 3), rgb, path)
    assert load_source(path).model.channels == 3  # a valid source in itself
    config = target_config([zoo["digits1"], path])
    with pytest.raises(SourceError, match="3-channel") as info:
        train(config, tmp_path / "run", progress=False)
    assert str(path) in str(info.value)
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_source_that_cannot_read_target_frames_or_lacks_a_layer(zoo):
    odd = tiny_config(data={"frame_size": 12, **TARGET_DATA}, transfer={"method": "tmu", "sources": ["x"]})
    with pytest.raises(SourceError, match="patch size 8") as info:
        load_zoo([str(zoo["digits1"]), str(zoo["coarse"])], odd, [0])
    assert str(zoo["coarse"]) in str(info.value)
    deep = target_config([zoo["digits1"]], model={"hidden": [8, 8]}, layers=[1])
    with pytest.raises(SourceError, match="no layer 1") as info:
        load_zoo([str(zoo["digits1"])], deep, [1])
    assert str(zoo["digits1"]) in str(info.value)


def _not_checkpoints(folder: Path) -> list[Path]:
    folder.mkdir()
    rng = np.random.default_rng(0)
    (folder / "random.safetensors").write_bytes(rng.bytes(4096))
    (folder / "random.pt").write_bytes(rng.bytes(4096))
    torch.save({"model": {"w": torch.zeros(3)}}, folder / "plain_dict.pt")
    (folder / "empty_run").mkdir()
    return [
        folder / "random.safetensors",
        folder / "random.pt",
        folder / "plain_dict.pt",
        folder / "empty_run",
        folder / "missing",
    ]


def test_non_transmem_source_files_raise_source_error(zoo, tmp_path):
    for bad in _not_checkpoints(tmp_path / "bad"):
        with pytest.raises(SourceError) as info:
            train(target_config([zoo["digits1"], bad]), tmp_path / f"run_{bad.name}", progress=False)
        assert str(bad) in str(info.value)


def test_empty_source_list_is_a_config_error():
    with pytest.raises(ConfigError, match="transfer.sources"):
        tiny_config(data=TARGET_DATA, transfer={"method": "tmu", "sources": []})
    with pytest.raises(ConfigError, match="transfer.sources"):
        tiny_config(transfer={"method": "distill"})


@pytest.mark.parametrize("damage", ["flip", "truncate", "incomplete"])
def test_corrupted_cache_is_detected_and_rebuilt(zoo, tmp_path, caplog, damage):
    sources = load_zoo([str(zoo["digits1"]), str(zoo["small"])], target_config([zoo["digits1"]]), [0])
    dataset = target_set()
    bank = CachedMemoryBank(sources, [0], dataset, tmp_path, batch_size=4, progress=False)
    original = bank.get(TrainingBatch(list(range(8)), None))
    file = bank.folder / "source1_layer0.f16"
    raw = bytearray(file.read_bytes())
    del bank
    if damage == "flip":
        for offset in range(100, 4000, 97):
            raw[offset] ^= 0xFF
        file.write_bytes(bytes(raw))
        corrupted = np.fromfile(file, np.float16)
        assert not np.array_equal(corrupted, original[1][0].numpy().astype(np.float16).ravel())
    elif damage == "truncate":
        file.write_bytes(bytes(raw[:-10]))
    else:
        meta = json.loads((file.parent / "meta.json").read_text())
        (file.parent / "meta.json").write_text(json.dumps({**meta, "complete": False}))

    with caplog.at_level(logging.WARNING, logger="transmem.transfer.memory_bank"):
        rebuilt = CachedMemoryBank(sources, [0], dataset, tmp_path, batch_size=4, progress=False)
    assert any("rebuilding" in r.getMessage() for r in caplog.records)
    assert rebuilt.folder == file.parent
    again = rebuilt.get(TrainingBatch(list(range(8)), None))
    for n in range(2):
        assert torch.equal(again[n][0], original[n][0])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="transmem.transfer.memory_bank"):
        CachedMemoryBank(sources, [0], dataset, tmp_path, batch_size=4, progress=False)
    assert not caplog.records  # a valid cache is reused silently


def test_stale_cache_key_builds_a_new_folder(zoo, tmp_path):
    sources = load_zoo([str(zoo["digits1"])], target_config([zoo["digits1"]]), [0])
    first = CachedMemoryBank(sources, [0], target_set(), tmp_path, progress=False)
    files = {p.name: p.read_bytes() for p in first.folder.iterdir()}
    other_data = build_dataset(tiny_config(data={**TARGET_DATA, "seed": 1}).data, "train")
    assert other_data.fingerprint() != target_set().fingerprint()
    second = CachedMemoryBank(sources, [0], other_data, tmp_path, progress=False)
    other_sources = load_zoo([str(zoo["digits2"])], target_config([zoo["digits1"]]), [0])
    third = CachedMemoryBank(other_sources, [0], target_set(), tmp_path, progress=False)
    assert len({first.folder, second.folder, third.folder}) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(b.folder.name for b in (first, second, third))
    assert {p.name: p.read_bytes() for p in first.folder.iterdir()} == files
    assert not torch.equal(first.get(TrainingBatch([0], None))[0][0], second.get(TrainingBatch([0], None))[0][0])


def test_a_bank_being_built_by_another_process_is_waited_for_then_reused(zoo, tmp_path):
    sources = load_zoo([str(zoo["digits1"])], target_config([zoo["digits1"]]), [0])
    reference = CachedMemoryBank(sources, [0], target_set(), tmp_path / "reference", progress=False)
    folder = tmp_path / "shared" / reference.key
    folder.mkdir(parents=True)
    builder = FileLock(folder / BUILD_LOCK)
    builder.acquire()  # another process is building this bank
    waiting: list = []
    thread = threading.Thread(
        target=lambda: waiting.append(CachedMemoryBank(sources, [0], target_set(), tmp_path / "shared", progress=False))
    )
    thread.start()
    try:
        thread.join(timeout=1.0)
        assert thread.is_alive() and not (folder / "meta.json").exists()  # it waits, writes nothing
        shutil.copytree(reference.folder, folder, dirs_exist_ok=True)  # the other process finishes
        stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    finally:
        builder.release()
    thread.join(timeout=60)
    (bank,) = waiting
    assert bank.folder == folder
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.name != BUILD_LOCK} == {
        k: v for k, v in stamps.items() if k != BUILD_LOCK
    }  # reused, not rebuilt
    first = TrainingBatch([0, 1], None)
    assert torch.equal(bank.get(first)[0][0], reference.get(first)[0][0])


# ----------------------------------------------------------------------------- 7. zoo list


def test_zoo_list_describes_each_source(zoo, tmp_path, capsys):
    folder = tmp_path / "zoo"
    for name in ("digits1", "small", "coarse"):
        shutil.copytree(zoo[name], folder / name)
    (folder / "junk.pt").write_bytes(b"not a checkpoint")
    for name in ("digits1", "coarse"):
        assert main(["evaluate", str(folder / name)]) == 0
    capsys.readouterr()
    assert main(["zoo", "list", str(folder)]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert set(lines) == {"digits1", "small", "coarse", "junk.pt"}
    expected = {"digits1": ("convlstm", "[8]"), "small": ("convlstm", "[4]"), "coarse": ("predrnn", "[8]")}
    for name, (backbone, hidden) in expected.items():
        fields = lines[name].split()
        assert fields[1] == backbone and fields[2] == hidden, lines[name]
        # columns: name backbone hidden frame mse ssim dataset options...
        assert fields[3] == "16" and fields[6] == "moving_digits", lines[name]
        assert f"num_digits={1 if name != 'digits2' else 2}" in lines[name]
        if name == "small":
            assert fields[4:6] == ["-", "-"]
        else:
            metrics = json.loads((folder / name / "metrics.json").read_text())
            assert fields[4] == f"{metrics['mse']['mean']:.2f}"
            assert fields[5] == f"{metrics['ssim']['mean']:.3f}"
    assert "unusable" in lines["junk.pt"] and str(folder / "junk.pt") in lines["junk.pt"]


# ----------------------------------------------------------------------------- 8. evaluate a TMU run


def test_evaluate_tmu_run_reports_transfer_gates(tmu_run, capsys):
    run = tmu_run["run"]
    assert main(["evaluate", str(run)]) == 0
    out = capsys.readouterr().out
    assert "mean transfer gate" in out and "| source  | layer |" in out
    metrics = json.loads((run / "metrics.json").read_text())
    gates = metrics["transfer_gates"]
    assert list(gates) == ["0"]
    values = np.array(gates["0"])
    input_len = metrics["input_len"]
    for index, name in enumerate(["digits1", "digits2"]):  # a table row per source, named, layer 0-based
        row = next(line for line in out.splitlines() if f" {name} " in line)
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        expected = [values[index, :input_len].mean(), values[index, input_len:].mean(), values[index].mean()]
        assert cells[:2] == [name, "0"] and [float(c) for c in cells[2:]] == pytest.approx(expected, abs=6e-3)
    assert values.shape == (2, STEPS)  # sources x steps
    assert ((values > 0) & (values < 1)).all()
    assert [Path(s).name for s in metrics["sources"]] == ["digits1", "digits2"]
    with Image.open(run / "transfer_gates.png") as png:
        assert png.format == "PNG"
    test_picture = (run / "transfer_gates.png").read_bytes()
    assert main(["evaluate", str(run), "--split", "val"]) == 0  # its own picture, the test one kept
    assert (run / "transfer_gates_val.png").exists() and (run / "transfer_gates.png").read_bytes() == test_picture
    capsys.readouterr()

    # independent: mean gate per source and step over the test set, test-time rollout
    loaded = load_model(run)
    model, config = loaded.model.eval(), loaded.config
    frames = build_dataset(config.data, "test").batch(range(config.data.test_size))
    with torch.no_grad():
        rollout = model(frames, rollout_mask(len(frames), config.data.total_len, config.data.input_len))
        cell = model.cells[0]
        expected = rollout.gate_means[0].mean(dim=0).T.numpy()
    assert cell.transfer.num_sources == 2
    np.testing.assert_allclose(values, expected, rtol=1e-5)


def test_sources_given_as_model_files_are_named_by_their_run_folder(zoo, tmp_path, capsys):
    from transmem.transfer.zoo import source_name

    assert source_name("runs/digits1/model.safetensors") == "digits1" and source_name("x/ckpt-00000002.pt") == "ckpt-00000002"
    assert source_name("runs/digits1") == "digits1"
    files = [zoo["digits1"] / "model.safetensors", zoo["digits2"] / "model.safetensors"]
    train(target_config(files, train_={"iterations": 2}), tmp_path / "run", progress=False)
    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "run"), "--sequences", "2"]) == 0
    assert main(["evaluate", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "gate digits1" in out and "gate digits2" in out and " digits1 " in out and "model.safetensors" not in out
