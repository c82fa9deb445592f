"""Training loop: scheduled sampling, batch order, exact resume, run folders, divergence."""

import csv
import json
import math
import os
import pickle
import shutil

import pytest
import torch
from safetensors import safe_open

from tests.support import csv_rows, tiny_config
from transmem.benchmark.run_logs import kept_iteration, kept_validation_mse
from transmem.config import ConfigError, TrainConfig, config_from_dict
from transmem.errors import TrainingDiverged
from transmem.run.conflicts import RunConflictError
from transmem.run.lifecycle import train
from transmem.storage.checkpoints import CheckpointError, latest_good_checkpoint, list_checkpoints, load_checkpoint
from transmem.storage.locks import FileLock, LockedError
from transmem.storage.model_file import load_model
from transmem.training.sampling import batch_indices, sampling_probabilities, teacher_mask


def test_standard_schedule_decays_linearly_to_zero():
    train_cfg = TrainConfig(iterations=100, sampling="standard", sampling_stop=0.5)
    assert sampling_probabilities(train_cfg, 0) == (1.0, 1.0)
    assert sampling_probabilities(train_cfg, 25) == (1.0, 0.5)
    assert sampling_probabilities(train_cfg, 50) == (1.0, 0.0)
    assert sampling_probabilities(train_cfg, 99) == (1.0, 0.0)


def test_reverse_schedule_rises_on_inputs_and_falls_on_predictions():
    train_cfg = TrainConfig(iterations=100, sampling="reverse", reverse_start=0.2, sampling_stop=0.7)
    assert sampling_probabilities(train_cfg, 10) == (0.5, 0.5)
    mid_in, mid_out = sampling_probabilities(train_cfg, 45)
    assert mid_in == pytest.approx(1 - 0.5 * math.exp(-25 / 10))
    assert mid_out == pytest.approx(0.25)
    assert sampling_probabilities(train_cfg, 70) == (1.0, 0.0)


def test_teacher_mask_probabilities_per_phase():
    generator = torch.Generator().manual_seed(0)
    mask = teacher_mask(4000, 10, 4, 0.8, 0.3, generator)
    assert mask.shape == (4000, 8) and mask.dtype == torch.bool
    # steps 1..3 are input steps (columns 0..2), 4..8 predicted (columns 3..7)
    assert mask[:, :3].float().mean().item() == pytest.approx(0.8, abs=0.02)
    assert mask[:, 3:].float().mean().item() == pytest.approx(0.3, abs=0.02)
    assert teacher_mask(3, 10, 4, 1.0, 0.0, generator)[:, :3].all()
    assert not teacher_mask(3, 10, 4, 1.0, 0.0, generator)[:, 3:].any()


def test_batch_order_is_deterministic_and_walks_epochs():
    assert batch_indices(3, 4, 0, True, 0) == [12, 13, 14, 15]
    epoch = [i for it in range(5) for i in batch_indices(it, 2, 10, False, seed=7)]
    assert sorted(epoch) == list(range(10))
    # The order is a pure function of (iteration, seed): the global generators do not move it,
    # and it is the order every earlier version drew (a resumed old run reads the same batches).
    torch.rand(3)
    assert batch_indices(6, 2, 10, False, 7) == [7, 0]
    assert [i for it in range(5, 10) for i in batch_indices(it, 2, 10, False, 7)] != epoch


@pytest.mark.parametrize("backbone, sampling", [("convlstm", "standard"), ("predrnn_v2", "reverse")])
def test_exact_resume_gives_identical_weights(tmp_path, backbone, sampling):
    config = tiny_config(model={"backbone": backbone, "hidden": [8, 8]}, train={"sampling": sampling, "time_reversal": True})
    straight = train(config, tmp_path / "straight", progress=False)
    paused = train(config, tmp_path / "resumed", progress=False, stop_at=2)
    assert paused.iterations == 2
    resumed = train(config, tmp_path / "resumed", progress=False)
    assert resumed.resumed_from == 2 and resumed.iterations == 6
    a = load_model(tmp_path / "straight").model.state_dict()
    b = load_model(tmp_path / "resumed").model.state_dict()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert straight.val == resumed.val


def test_run_folder_contents_and_finished_run_is_not_retrained(tmp_path):
    config = tiny_config()
    train(config, tmp_path / "run", progress=False)
    names = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"config.toml", "checkpoints", "model.safetensors", "train.csv", "val.csv"} <= names
    assert len(list_checkpoints(tmp_path / "run" / "checkpoints")) == 2  # at 3 and 6
    rows = (tmp_path / "run" / "train.csv").read_text().splitlines()
    assert rows[0].startswith("iteration,loss,prediction") and len(rows) == 4
    again = train(config, tmp_path / "run", progress=False)
    assert again.resumed_from == 6 and again.val == {}


def test_different_config_in_same_folder_is_refused_unless_forced(tmp_path):
    train(tiny_config(), tmp_path / "run", progress=False)
    with pytest.raises(RunConflictError, match=r"finished run of a different config \(differs in train\.lr\)"):
        train(tiny_config(train={"lr": 1e-2}), tmp_path / "run", progress=False)
    train(tiny_config(train={"lr": 1e-2}), tmp_path / "run", progress=False, force=True)
    previous = [p.name for p in (tmp_path / "run").iterdir() if ".previous-" in p.name]
    assert any(name.startswith("model.safetensors.previous-") for name in previous)
    assert any(name.startswith("checkpoints.previous-") for name in previous)


def test_a_folder_of_user_files_is_never_overwritten_nor_cleaned(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "train.csv").write_text("date,amount\n2024-01-01,5\n")
    (folder / ".draft.tmp-2024").write_text("x")  # looks like a temporary, is not ours
    (folder / ".notes.transmem-tmp-old").write_text("y")
    with pytest.raises(RunConflictError, match=r"holds train\.csv but no config\.toml"):
        train(tiny_config(), folder, progress=False)
    assert sorted(p.name for p in folder.iterdir()) == [".draft.tmp-2024", ".notes.transmem-tmp-old", "train.csv"]
    train(tiny_config(), folder, progress=False, force=True)
    assert [p.name for p in folder.glob("train.csv.previous-*")] and (folder / ".draft.tmp-2024").exists()
    assert (folder / ".notes.transmem-tmp-old").exists()
    kept = next(folder.glob("train.csv.previous-*")).read_text()
    assert kept == "date,amount\n2024-01-01,5\n"


def test_a_run_whose_config_was_removed_is_not_resumed_with_another_config(tmp_path):
    train(tiny_config(train={"iterations": 4}), tmp_path / "run", progress=False)
    (tmp_path / "run" / "config.toml").unlink()
    with pytest.raises(RunConflictError, match="but no config.toml"):
        train(tiny_config(train={"iterations": 8, "lr": 1e-4}), tmp_path / "run", progress=False)


def test_a_finished_run_whose_checkpoints_were_deleted_is_not_trained_again(tmp_path):
    config = tiny_config(train={"iterations": 4})
    train(config, tmp_path / "run", progress=False)
    weights = (tmp_path / "run" / "model.safetensors").read_bytes()
    shutil.rmtree(tmp_path / "run" / "checkpoints")  # to save space, say
    again = train(config, tmp_path / "run", progress=False)
    assert again.resumed_from == 4 and (tmp_path / "run" / "model.safetensors").read_bytes() == weights
    assert not (tmp_path / "run" / "checkpoints").exists() or not list((tmp_path / "run" / "checkpoints").iterdir())


def test_corrupted_newest_checkpoint_falls_back_to_previous(tmp_path):
    train(tiny_config(), tmp_path / "run", progress=False)
    folder = tmp_path / "run" / "checkpoints"
    newest = list_checkpoints(folder)[-1]
    newest.write_bytes(newest.read_bytes()[:100])
    path, state = latest_good_checkpoint(folder)
    assert path.name == "ckpt-00000003.pt" and state["iteration"] == 3
    with pytest.raises(CheckpointError, match="ckpt-00000006.pt"):
        load_checkpoint(newest)


def test_out_of_memory_while_resuming_is_raised_not_taken_for_damage(tmp_path, monkeypatch):
    """A checkpoint that cannot be loaded for lack of memory is not skipped: skipping every
    one would restart the run from iteration 0 over its logs."""
    import transmem.storage.checkpoints as checkpoint

    config = tiny_config(train={"iterations": 6, "checkpoint_every": 2})
    train(config, tmp_path / "run", progress=False, stop_at=4)
    log = (tmp_path / "run" / "train.csv").read_text()

    def no_memory(*args, **kwargs):
        raise MemoryError("Unable to allocate 4.00 EiB")

    monkeypatch.setattr(checkpoint.torch, "load", no_memory)
    with pytest.raises(MemoryError):
        train(config, tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "train.csv").read_text() == log
    assert [p.name for p in list_checkpoints(tmp_path / "run" / "checkpoints")][-1] == "ckpt-00000004.pt"
    monkeypatch.undo()
    assert train(config, tmp_path / "run", progress=False).resumed_from == 4


class _Exploit:
    def __reduce__(self):
        return (print, ("pwned",))


def test_crafted_pickle_is_refused(tmp_path):
    path = tmp_path / "ckpt-00000001.pt"
    torch.save({"format": "transmem-checkpoint-1", "payload": _Exploit()}, path)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(path)
    plain = tmp_path / "plain.pt"
    with open(plain, "wb") as handle:
        pickle.dump({"format": "transmem-checkpoint-1", "x": _Exploit()}, handle)
    with pytest.raises(CheckpointError):
        load_checkpoint(plain)


@pytest.mark.parametrize("content", [b"[train]\nlr = 1\n", b"\x80\x04garbage" * 50])
def test_a_file_that_is_no_checkpoint_is_named_as_such(tmp_path, content):
    path = tmp_path / "ckpt-00000001.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="not a transmem checkpoint") as caught:
        load_checkpoint(path)
    assert "weights_only" not in str(caught.value)


def test_divergence_stops_with_clear_error_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    import transmem.training.loop as loop

    calls = []
    original = loop._load_batch

    def poisoned(dataset, indices, device):
        calls.append(1)
        frames = original(dataset, indices, device)
        return frames * float("nan") if len(calls) == 5 else frames

    monkeypatch.setattr(loop, "_load_batch", poisoned)
    config = tiny_config(train={"iterations": 40, "checkpoint_every": 1})
    with pytest.raises(TrainingDiverged, match="loss became (nan|inf)") as info:
        train(config, tmp_path / "run", progress=False)
    assert "last good checkpoint is kept" in str(info.value)
    found = latest_good_checkpoint(tmp_path / "run" / "checkpoints")
    assert found is not None and found[1]["iteration"] == 4
    assert all(torch.isfinite(v).all() for v in found[1]["model"].values())
    lock = FileLock(tmp_path / "run" / "train.lock")
    lock.acquire()  # the failed run released its folder
    lock.release()


def test_bf16_training_runs_resumes_exactly_and_stays_close_to_float32(tmp_path):
    config = tiny_config(train={"precision": "bf16"})
    train(config, tmp_path / "straight", progress=False)
    train(config, tmp_path / "resumed", progress=False, stop_at=3)
    train(config, tmp_path / "resumed", progress=False)
    a = load_model(tmp_path / "straight").model.state_dict()
    b = load_model(tmp_path / "resumed").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(v.dtype == torch.float32 for v in a.values())  # weights stay float32 under autocast
    train(tiny_config(), tmp_path / "fp32", progress=False)
    c = load_model(tmp_path / "fp32").model.state_dict()
    assert any(not torch.equal(a[k], c[k]) for k in a)  # bf16 really changed the arithmetic
    assert all(torch.allclose(a[k], c[k], atol=5e-2) for k in a)


def test_compiled_training_matches_eager_and_resumes_exactly(tmp_path):
    config = tiny_config(train={"compile": True})
    train(config, tmp_path / "compiled", progress=False)
    train(config, tmp_path / "resumed", progress=False, stop_at=3)
    train(config, tmp_path / "resumed", progress=False)
    train(tiny_config(), tmp_path / "eager", progress=False)
    compiled = load_model(tmp_path / "compiled").model.state_dict()
    resumed = load_model(tmp_path / "resumed").model.state_dict()
    eager = load_model(tmp_path / "eager").model.state_dict()
    assert compiled.keys() == eager.keys()  # no "_orig_mod." prefix in saved weights
    assert all(torch.equal(compiled[k], resumed[k]) for k in compiled)
    assert all(torch.allclose(compiled[k], eager[k], atol=1e-5) for k in compiled)


def _losses(run) -> list[float]:
    """The training losses ``run``/train.csv logged, in order."""
    return [float(row["loss"]) for row in csv.DictReader(open(run / "train.csv"))]


def test_channels_last_training_matches_the_default_layout_and_resumes_exactly(tmp_path, monkeypatch):
    from transmem.models import RecurrentPredictor

    seen = []  # the layout of the weights every training forward runs with
    forward = RecurrentPredictor.forward

    def recording(self, *args, **kwargs):
        convs = [m.weight for m in self.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)]
        seen.append(all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous() for w in convs))
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(RecurrentPredictor, "forward", recording)
    layout = {"model": {"norm": "group"}}
    config = tiny_config(train={"channels_last": True}, **layout)
    train(config, tmp_path / "nhwc", progress=False)
    train(config, tmp_path / "resumed", progress=False, stop_at=3)
    train(config, tmp_path / "resumed", progress=False)
    assert seen and all(seen)  # every step and validation, resumed or not, ran channels-last
    seen.clear()
    train(tiny_config(**layout), tmp_path / "default", progress=False)
    assert seen and not any(seen)
    nhwc = load_model(tmp_path / "nhwc").model.state_dict()
    resumed = load_model(tmp_path / "resumed").model.state_dict()
    default = load_model(tmp_path / "default").model.state_dict()
    assert all(torch.equal(nhwc[k], resumed[k]) for k in nhwc)
    # The same arithmetic, up to rounding: the logged losses agree to 1e-4 relative. Adam
    # divides each gradient by its own root mean square, so a rounding difference in a near-zero
    # gradient moves that weight by up to lr per step (measured: 1.1e-5 here, more on other CPUs);
    # 1e-4 is 0.6 % of the lr * iterations a weight can travel.
    assert _losses(tmp_path / "nhwc") == pytest.approx(_losses(tmp_path / "default"), rel=1e-4)
    assert all(torch.allclose(nhwc[k], default[k], rtol=0, atol=1e-4) for k in nhwc)


def test_a_run_killed_between_validation_and_checkpoint_logs_every_validation(tmp_path, monkeypatch):
    import transmem.training.loop as loop

    config = tiny_config(
        data={"train_size": 8, "val_size": 2}, train={"iterations": 6, "checkpoint_every": 2, "val_every": 2, "log_every": 1}
    )
    validate, calls = loop._record_validation, []

    def killed_after_validating_at_4(state, recorder, iteration):
        result = validate(state, recorder, iteration)  # scored and logged
        calls.append(iteration)
        if iteration == 4 and calls.count(4) == 1:
            raise KeyboardInterrupt  # the kill lands before checkpoint 4 is written
        return result

    monkeypatch.setattr(loop, "_record_validation", killed_after_validating_at_4)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "run", progress=False)
    assert [int(n.stem.split("-")[1]) for n in list_checkpoints(tmp_path / "run" / "checkpoints")] == [2]
    train(config, tmp_path / "run", progress=False)  # resumes from 2, so validates at 4 again
    rows = (tmp_path / "run" / "val.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == [2, 4, 6]


# ----------------------------------------------------------------------------- run lock


def test_file_lock_is_exclusive_names_its_holder_and_frees_on_release(tmp_path):
    first, second = FileLock(tmp_path / "x.lock"), FileLock(tmp_path / "x.lock")
    first.acquire()
    first.acquire()  # already held: no-op
    with pytest.raises(LockedError, match=rf"locked by another process \(pid {os.getpid()}\)"):
        second.acquire()
    assert not second.held and second.holder() == str(os.getpid())
    first.release()
    assert second.holder() is None
    assert FileLock(tmp_path / "missing.lock").holder() is None and not (tmp_path / "missing.lock").exists()
    second.acquire()
    assert second.held
    second.release()


def test_a_run_folder_being_trained_is_refused_without_a_write(tmp_path):
    config = tiny_config()
    train(config, tmp_path / "run", progress=False, stop_at=3)
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    holder = FileLock(tmp_path / "run" / "train.lock")
    holder.acquire()  # another process training this run
    with pytest.raises(LockedError, match="train.lock: locked by another process"):
        train(config, tmp_path / "run", progress=False)
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()} == before
    holder.release()
    assert train(config, tmp_path / "run", progress=False).resumed_from == 3


def test_a_run_trained_by_another_process_while_this_one_starts_is_refused(tmp_path, monkeypatch):
    import transmem.run.resume as resume

    config = tiny_config()
    train(config, tmp_path / "run", progress=False, stop_at=3)
    original, calls = resume.latest_good_checkpoint, []

    def read_then_other_process_saves(*args, **kwargs):
        found = original(*args, **kwargs)  # this process read checkpoint 3 ...
        calls.append(1)
        if len(calls) == 1:
            train(config, tmp_path / "run", progress=False, stop_at=4)  # ... then another one went on
        return found

    monkeypatch.setattr(resume, "latest_good_checkpoint", read_then_other_process_saves)
    with pytest.raises(LockedError, match="another process trained this run while this one started"):
        train(config, tmp_path / "run", progress=False)
    monkeypatch.undo()
    assert train(config, tmp_path / "run", progress=False).resumed_from == 4


def test_train_csv_records_the_thread_count_even_across_a_resume_with_another(tmp_path, monkeypatch):
    from transmem.benchmark.run_logs import train_threads
    from transmem.training import thread_share

    # trainings of other processes on this machine would change this one's share of threads
    monkeypatch.setattr(thread_share, "registry_folder", lambda: tmp_path / "trainings")

    config = tiny_config(train={"iterations": 4, "checkpoint_every": 2, "log_every": 1})
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        train(config, tmp_path / "run", progress=False, stop_at=2)
        torch.set_num_threads(2)
        train(config, tmp_path / "run", progress=False)
    finally:
        torch.set_num_threads(before)
    rows = list(csv.DictReader(open(tmp_path / "run" / "train.csv")))
    assert [(r["iteration"], r["threads"]) for r in rows] == [("1", "1"), ("2", "1"), ("3", "2"), ("4", "2")]
    assert train_threads(tmp_path / "run") == "1, 2"
    # A log of an older version, without the column: rows kept, the count unknown.
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "train.csv").write_text("iteration,loss,seconds_per_iteration\n10,1,0.5\n")
    assert train_threads(tmp_path / "old") == "" and train_threads(tmp_path / "missing") == ""
    # Resumed past the upgrade: the count of the first part is unknown, and says so.
    (tmp_path / "old" / "train.csv").write_text("iteration,seconds_per_iteration,threads\n10,0.5,\n20,0.5,2\n")
    assert train_threads(tmp_path / "old") == "unknown, 2"


def test_progress_in_a_log_is_plain_lines_and_validation_does_not_count_in_the_rate():
    import io

    from transmem.progress import LineProgress, progress_bar

    now = [0.0]
    stream = io.StringIO()
    bar = LineProgress(10, 0, "train", "it", stream, every=0.0, clock=lambda: now[0])
    for _ in range(2):
        now[0] += 1.0
        bar.update()
    now[0] += 100.0  # validation
    bar.unpause()
    now[0] += 1.0
    bar.set_postfix(loss="0.5")
    bar.update()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and len(lines) == 3
    assert lines[-1] == "train 3/10 it (30%), 1 s/it, ETA 7 s, loss 0.5"
    assert isinstance(progress_bar(5, stream=io.StringIO()), LineProgress)

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    assert not isinstance(progress_bar(5, stream=Terminal()), LineProgress)


def test_training_with_progress_into_a_log_writes_no_carriage_returns(tmp_path, capsys):
    train(tiny_config(train={"iterations": 2}), tmp_path / "run", progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err and "train 2/2 it (100%)" in err


# ----------------------------------------------------------------------------- train.weights


def _scripted_validation(monkeypatch, scores: dict[int, float]):
    """Validation MSE by iteration from ``scores`` (the real validation still runs and logs)."""
    import transmem.training.loop as loop

    real = loop._record_validation

    def validate(state, recorder, iteration):
        means = real(state, recorder, iteration)
        return {**means, "mse": scores[iteration]}

    monkeypatch.setattr(loop, "_record_validation", validate)


def test_best_val_keeps_the_weights_of_the_lowest_validation_mse_and_resumes_to_them(tmp_path, monkeypatch):
    _scripted_validation(monkeypatch, {2: 5.0, 4: 3.0, 6: 4.0})  # best at iteration 4, the last is worse
    config = tiny_config(
        train={"iterations": 6, "val_every": 2, "checkpoint_every": 2, "keep_checkpoints": 5, "weights": "best_val"}
    )
    result = train(config, tmp_path / "run", progress=False)
    kept = load_model(tmp_path / "run")
    at_four = load_checkpoint(tmp_path / "run" / "checkpoints" / "ckpt-00000004.pt")["model"]
    last = load_checkpoint(tmp_path / "run" / "checkpoints" / "ckpt-00000006.pt")["model"]
    assert all(torch.equal(kept.model.state_dict()[k], at_four[k].cpu()) for k in at_four)
    assert not all(torch.equal(at_four[k], last[k]) for k in at_four)  # it trained on after the best
    assert result.val["mse"] == 3.0  # the validation of the weights kept
    with safe_open(str(tmp_path / "run" / "model.safetensors"), framework="pt") as handle:
        extra = json.loads(handle.metadata()["extra"])
    assert extra == {"iterations": 6, "weights": "best_val", "selected_iteration": 4, "selected_val_mse": 3.0}
    assert kept_iteration(tmp_path / "run") == "4"  # what the benchmark's results.md names
    # paused after iteration 4 (the best so far is in the checkpoint) and resumed: the same weights kept
    train(config, tmp_path / "resumed", progress=False, stop_at=4)
    train(config, tmp_path / "resumed", progress=False)
    again = load_model(tmp_path / "resumed").model.state_dict()
    assert all(torch.equal(again[k], kept.model.state_dict()[k]) for k in again)
    # "last" (the default) keeps the last iteration's weights whatever the validation says
    train(tiny_config(train={"iterations": 6, "val_every": 2, "checkpoint_every": 2}), tmp_path / "last", progress=False)
    final = load_model(tmp_path / "last").model.state_dict()
    assert all(torch.equal(final[k], last[k].cpu()) for k in final)
    assert kept_iteration(tmp_path / "last") == "" and kept_iteration(tmp_path / "nothing") == ""
    # the validation MSE of the weights kept, what benchmark --choose chooses on: the best (the
    # scripted score best_val chose), or the last iteration's row of val.csv (real: it logs the real one)
    assert kept_validation_mse(tmp_path / "run") == 3.0
    last_row = csv_rows(tmp_path / "last" / "val.csv")[-1]
    assert last_row["iteration"] == "6" and kept_validation_mse(tmp_path / "last") == float(last_row["mse"])
    assert math.isnan(kept_validation_mse(tmp_path / "nothing"))


def test_best_val_needs_a_validation_split_and_more_than_the_final_validation():
    with pytest.raises(
        ValueError, match="train.weights: 'best_val' chooses on the validation split, which needs data.val_size > 0"
    ):
        tiny_config(train={"weights": "best_val", "val_every": 2}, data={"val_size": 0})
    with pytest.raises(ValueError, match="train.weights: expected 'last' or 'best_val', got 'best'"):
        tiny_config(train={"weights": "best"})
    with pytest.raises(ValueError, match="with val_every = 0 and val_start = false the only one is at the end"):
        tiny_config(train={"weights": "best_val", "val_every": 0})
    assert tiny_config(train={"weights": "best_val", "val_start": True}).train.weights == "best_val"  # two candidates
    # a run saved before the check keeps loading (and resuming)
    saved = config_from_dict(tiny_config().to_dict(), ["train.weights=best_val", "train.val_every=0"], stored=True)
    assert saved.train.weights == "best_val"


def test_val_start_makes_the_starting_weights_a_candidate_and_resumes_to_them(tmp_path, monkeypatch, sources):
    # a finetune that the target data only make worse: best_val with val_start keeps the source
    _scripted_validation(monkeypatch, {0: 1.0, 2: 5.0, 4: 3.0, 6: 4.0})
    source = str(sources / "hidden8")
    schedule = {"iterations": 6, "val_every": 2, "checkpoint_every": 2, "weights": "best_val", "val_start": True}
    config = tiny_config(model={"hidden": [8]}, train=schedule, transfer={"method": "finetune", "sources": [source]})
    result = train(config, tmp_path / "run", progress=False)
    kept, start = load_model(tmp_path / "run").model.state_dict(), load_model(source).model.state_dict()
    assert all(torch.equal(kept[k], start[k]) for k in start)
    assert result.val["mse"] == 1.0 and kept_iteration(tmp_path / "run") == "0"
    with open(tmp_path / "run" / "val.csv") as handle:
        assert [int(row["iteration"]) for row in csv.DictReader(handle)] == [0, 2, 4, 6]
    train(config, tmp_path / "resumed", progress=False, stop_at=2)  # the start's weights travel in the checkpoint
    train(config, tmp_path / "resumed", progress=False)
    again = load_model(tmp_path / "resumed").model.state_dict()
    assert all(torch.equal(again[k], start[k]) for k in start)


def test_val_start_validates_without_changing_what_trains(tmp_path):
    config = tiny_config(train={"iterations": 4, "val_every": 2})
    train(config, tmp_path / "plain", progress=False)
    train(tiny_config(train={"iterations": 4, "val_every": 2, "val_start": True}), tmp_path / "start", progress=False)
    a, b = load_model(tmp_path / "plain").model.state_dict(), load_model(tmp_path / "start").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with open(tmp_path / "start" / "val.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["iteration"]) for row in rows] == [0, 2, 4] and float(rows[0]["mse"]) > float(rows[-1]["mse"])
    with pytest.raises(ConfigError, match=r"train.val_start: .* needs data.val_size > 0"):
        tiny_config(train={"val_start": True}, data={"val_size": 0})


def test_seconds_per_iteration_counts_training_steps_only_and_a_pause_checkpoints_once(tmp_path, monkeypatch):
    """A fake clock: every training step takes 1 s, every validation 100 s. Each logged row says
    1 s per iteration, also when a validation (every 3) falls inside its log interval (every 2);
    a pause on a checkpoint's iteration writes that checkpoint once."""
    import transmem.training.loop as loop
    from transmem.run.records import RunRecorder

    now = [0.0]
    monkeypatch.setattr(loop, "perf_counter", lambda: now[0])  # this module's clock only
    real_step, real_validation = loop.make_step, loop._record_validation

    def timed_step(*args, **kwargs):
        step = real_step(*args, **kwargs)

        def one(*step_args, **step_kwargs):
            now[0] += 1.0
            return step(*step_args, **step_kwargs)

        return one

    def timed_validation(*args, **kwargs):
        now[0] += 100.0
        return real_validation(*args, **kwargs)

    saved = []
    real_save = RunRecorder.save_checkpoint
    monkeypatch.setattr(loop, "make_step", timed_step)
    monkeypatch.setattr(loop, "_record_validation", timed_validation)
    monkeypatch.setattr(RunRecorder, "save_checkpoint", lambda self, it: (saved.append(it), real_save(self, it))[1])
    config = tiny_config(train={"iterations": 8, "log_every": 2, "val_every": 3, "checkpoint_every": 4})
    train(config, tmp_path / "run", progress=False, stop_at=4)
    train(config, tmp_path / "run", progress=False)
    rows = csv_rows(tmp_path / "run" / "train.csv")
    assert [int(r["iteration"]) for r in rows] == [2, 4, 6, 8]
    assert [float(r["seconds_per_iteration"]) for r in rows] == [1.0, 1.0, 1.0, 1.0]
    assert saved == [4, 8]
