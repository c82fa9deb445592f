"""moving_mnist_file and array_file on tiny fixtures in the published layouts."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from tests.support import data_config
from transmem.config import DataConfig
from transmem.data import DataError, build_dataset

SIZE = 16


def config(name: str, path, total_len: int = 6, **options) -> DataConfig:
    return data_config(
        name,
        frame_size=SIZE,
        total_len=total_len,
        train_size=0,
        val_size=50,
        test_size=50,
        options={"path": str(path), **options},
    )


def moving_mnist_npy(tmp_path, count: int = 10, steps: int = 20, size: int = SIZE):
    """``mnist_test_seq.npy`` layout: (T, N, H, W) uint8; pixel values encode (t, n)."""
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, size=(steps, count, size, size), dtype=np.uint8)
    path = tmp_path / "mnist_test_seq.npy"
    np.save(path, array)
    return path, array


def predrnn_npz(tmp_path, count: int = 6, inputs: int = 5, outputs: int = 5, **overrides):
    """PredRNN .npz: input_raw_data (frames, C, H, W) float in [0, 1], clips (2, N, 2), dims."""
    rng = np.random.default_rng(1)
    length = inputs + outputs
    raw = rng.random((count * length, 1, SIZE, SIZE), dtype=np.float32)
    starts = np.arange(count) * length
    clips = np.stack([np.stack([starts, np.full(count, inputs)], 1), np.stack([starts + inputs, np.full(count, outputs)], 1)])
    arrays = {"input_raw_data": raw, "clips": clips.astype(np.int32), "dims": np.array([[1, SIZE, SIZE]], np.int32)}
    arrays.update(overrides)
    path = tmp_path / "moving-mnist-train.npz"
    np.savez(path, **arrays)
    return path, raw


# ---------------------------------------------------------------- moving_mnist_file


def test_mnist_test_seq_layout_loads_exactly_and_splits_disjointly(tmp_path):
    path, array = moving_mnist_npy(tmp_path)
    splits = {s: build_dataset(config("moving_mnist_file", path), s) for s in ("train", "val", "test")}
    assert [len(d) for d in splits.values()] == [7, 1, 2]
    ids = {s: set(d.sequence_ids.tolist()) for s, d in splits.items()}
    assert ids == {"train": set(range(7)), "val": {7}, "test": {8, 9}}
    test = splits["test"]
    assert test[1].shape == (6, 1, SIZE, SIZE) and test[1].dtype == torch.float32
    expected = array[:6, 9].astype(np.float32)[:, None] / np.float32(255)
    assert np.array_equal(test[1].numpy(), expected)  # first total_len frames, exactly /255
    assert not splits["train"].online and torch.equal(test[1], build_dataset(config("moving_mnist_file", path), "test")[1])


def test_memory_mapped_datasets_pickle_by_path(tmp_path):
    import pickle

    path, _ = moving_mnist_npy(tmp_path)
    dataset = build_dataset(config("moving_mnist_file", path), "train")
    blob = pickle.dumps(dataset)
    assert len(blob) < 20_000  # the 51 kB array is not copied into the pickle
    assert torch.equal(pickle.loads(blob)[3], dataset[3])


def test_window_stride_and_size_caps(tmp_path):
    path, array = moving_mnist_npy(tmp_path)
    data = config("moving_mnist_file", path, window_stride=7)
    train = build_dataset(data, "train")
    assert len(train) == 7 * 3  # windows start at 0, 7, 14 of 20 frames
    assert np.array_equal(train[1].numpy()[:, 0], array[7:13, 0] / np.float32(255))
    data.train_size = 4
    small = build_dataset(data, "train")
    assert len(small) == 4 and small.fingerprint() != train.fingerprint()


def test_predrnn_npz_layout(tmp_path):
    path, raw = predrnn_npz(tmp_path)
    data = config("moving_mnist_file", path, total_len=8, train_range=[0.0, 0.5], val_range=[0.5, 0.5], test_range=[0.5, 1.0])
    test = build_dataset(data, "test")
    assert len(test) == 3 and test.sequence_ids.tolist() == [3, 4, 5]
    assert np.array_equal(test[0].numpy(), raw[30:38])  # input part then output part
    data.val_size = 0
    assert len(build_dataset(data, "val")) == 0


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"clips": np.zeros((2, 3), np.int32)}, r"clips must have shape \(2, num_sequences, 2\)"),
        ({"clips": np.full((2, 6, 2), 50, np.int32)}, "clip of sequence 0 reaches outside input_raw_data"),
        ({"dims": np.array([[3, SIZE, SIZE]])}, "dims .* do not match"),
        ({"input_raw_data": np.full((60, 1, SIZE, SIZE), np.nan, np.float32)}, "contains NaN"),
        ({"input_raw_data": np.full((60, 1, SIZE, SIZE), 2.0, np.float32)}, r"float values must lie in \[0, 1\]"),
    ],
)
def test_bad_predrnn_npz_is_a_data_error(tmp_path, overrides, message):
    path, _ = predrnn_npz(tmp_path, **overrides)
    with pytest.raises(DataError, match=message):
        build_dataset(config("moving_mnist_file", path), "train")


def test_predrnn_npz_missing_keys(tmp_path):
    path = tmp_path / "x.npz"
    np.savez(path, frames=np.zeros((2, 2)))
    with pytest.raises(DataError, match=r"x.npz: not a PredRNN .npz \(missing clips, dims, input_raw_data; has frames\)"):
        build_dataset(config("moving_mnist_file", path), "train")


def test_moving_mnist_file_errors(tmp_path):
    with pytest.raises(DataError, match=r"nothere.npy: Moving MNIST file not found"):
        build_dataset(config("moving_mnist_file", tmp_path / "nothere.npy"), "train")
    path, _ = moving_mnist_npy(tmp_path, steps=5)
    with pytest.raises(DataError, match="sequence 0 has 5 frames, fewer than data.total_len = 6"):
        build_dataset(config("moving_mnist_file", path), "train")
    path, _ = moving_mnist_npy(tmp_path, size=20)
    with pytest.raises(DataError, match=r"frames are 20x20 but data.frame_size = 16 \(set data.options.resize"):
        build_dataset(config("moving_mnist_file", path), "train")
    resized = build_dataset(config("moving_mnist_file", path, resize=True), "train")
    assert resized[0].shape == (6, 1, SIZE, SIZE)
    np.save(tmp_path / "flat.npy", np.zeros((20, 4, 16), np.uint8))
    with pytest.raises(DataError, match=r"flat.npy: expected 4 dimensions \('T', 'N', 'H', 'W'\)"):
        build_dataset(config("moving_mnist_file", tmp_path / "flat.npy"), "train")
    (tmp_path / "seq.txt").write_text("1 2 3")
    with pytest.raises(DataError, match=r"seq.txt: expected .npy \(mnist_test_seq layout\) or .npz"):
        build_dataset(config("moving_mnist_file", tmp_path / "seq.txt"), "train")
    (tmp_path / "broken.npy").write_bytes(b"not numpy")
    with pytest.raises(DataError, match="broken.npy: cannot read as .npy"):
        build_dataset(config("moving_mnist_file", tmp_path / "broken.npy"), "train")


def test_channel_mismatch_is_a_data_error(tmp_path):
    path, _ = moving_mnist_npy(tmp_path)
    data = config("moving_mnist_file", path)
    data.channels = 3
    with pytest.raises(DataError, match="frames have 1 channels but data.channels = 3"):
        build_dataset(data, "train")


# ---------------------------------------------------------------- array_file


def test_npy_with_channels_last(tmp_path):
    rng = np.random.default_rng(2)
    array = rng.integers(0, 256, size=(5, 8, SIZE, SIZE, 3), dtype=np.uint8)
    np.save(tmp_path / "rgb.npy", array)
    data = config("array_file", tmp_path / "rgb.npy", train_range=[0.0, 0.6], val_range=[0.6, 0.6], test_range=[0.6, 1.0])
    data.channels = 3
    test = build_dataset(data, "test")
    assert len(test) == 2 and test[0].shape == (6, 3, SIZE, SIZE)
    assert np.array_equal(test[0].numpy(), array[3, :6].transpose(0, 3, 1, 2) / np.float32(255))


def test_npz_needs_a_key_when_it_holds_several_arrays(tmp_path):
    array = np.random.default_rng(3).random((4, 7, SIZE, SIZE)).astype(np.float32)
    np.savez(tmp_path / "two.npz", clips=array, other=array[:1])
    with pytest.raises(DataError, match=r"two.npz: holds 2 arrays \(clips, other\); set data.options.key"):
        build_dataset(config("array_file", tmp_path / "two.npz"), "train")
    with pytest.raises(DataError, match=r"two.npz: no array 'frames' \(arrays: clips, other\)"):
        build_dataset(config("array_file", tmp_path / "two.npz", key="frames"), "train")
    train = build_dataset(config("array_file", tmp_path / "two.npz", key="clips"), "train")
    assert np.array_equal(train[2].numpy()[:, 0], array[2, :6])


def test_hdf5_dataset(tmp_path):
    array = np.random.default_rng(4).integers(0, 256, size=(10, 9, SIZE, SIZE), dtype=np.uint8)
    with h5py.File(tmp_path / "seq.h5", "w") as handle:
        handle.create_dataset("group/frames", data=array)
        handle.create_dataset("labels", data=np.arange(10))
    data = config("array_file", tmp_path / "seq.h5", key="group/frames", window_stride=3)
    train = build_dataset(data, "train")
    assert len(train) == 7 * 2
    assert np.array_equal(train[3].numpy()[:, 0], array[1, 3:9] / np.float32(255))
    assert train.fingerprint() != build_dataset(data, "test").fingerprint()
    with pytest.raises(DataError, match=r"seq.h5: no dataset 'missing' \(datasets: group/frames, labels\)"):
        build_dataset(config("array_file", tmp_path / "seq.h5", key="missing"), "train")
    with pytest.raises(DataError, match=r"seq.h5\[labels\]: expected \(N, T, H, W\) or \(N, T, H, W, C\)"):
        build_dataset(config("array_file", tmp_path / "seq.h5", key="labels"), "train")


@pytest.mark.parametrize(
    "array, message",
    [
        (np.full((4, 8, SIZE, SIZE), np.inf, np.float32), "contains NaN or infinite values"),
        (np.full((4, 8, SIZE, SIZE), -0.5, np.float64), r"float values must lie in \[0, 1\], found range \[-0.5"),
        (np.full((4, 8, SIZE, SIZE), 3, np.int16), "unsupported dtype int16"),
        (np.zeros((4, 5, SIZE, SIZE), np.uint8), "sequence 0 has 5 frames, fewer than data.total_len = 6"),
        (np.zeros((4, SIZE, SIZE), np.uint8), r"expected \(N, T, H, W\) or \(N, T, H, W, C\)"),
        (np.zeros((0, 8, SIZE, SIZE), np.uint8), "empty array"),
        (np.zeros((4, 8, SIZE, 8), np.uint8), "frames are 16x8 but data.frame_size = 16"),
        (np.zeros((4, 8, SIZE, SIZE, 2), np.uint8), "frames have 2 channels but data.channels = 1"),
    ],
)
def test_bad_arrays_are_data_errors_naming_the_file(tmp_path, array, message):
    for suffix in (".npy", ".h5"):
        path = tmp_path / f"bad{suffix}"
        if suffix == ".npy":
            np.save(path, array)
        else:
            with h5py.File(path, "w") as handle:
                handle.create_dataset("x", data=array)
        with pytest.raises(DataError, match=f"bad{suffix}.*{message}"):
            build_dataset(config("array_file", path), "train")


def test_nan_in_a_later_sequence_is_found_when_building(tmp_path):
    array = np.zeros((6, 8, SIZE, SIZE), np.float32)
    array[5, 7, 3, 3] = np.nan
    np.save(tmp_path / "late.npy", array)
    with pytest.raises(DataError, match="late.npy: contains NaN"):
        build_dataset(config("array_file", tmp_path / "late.npy"), "train")


def test_array_file_missing_and_unsupported(tmp_path):
    with pytest.raises(DataError, match="gone.h5: array file not found"):
        build_dataset(config("array_file", tmp_path / "gone.h5"), "train")
    (tmp_path / "a.csv").write_text("1")
    with pytest.raises(DataError, match=r"a.csv: unsupported file type '.csv'"):
        build_dataset(config("array_file", tmp_path / "a.csv"), "train")
    (tmp_path / "junk.h5").write_bytes(b"junk")
    with pytest.raises(DataError, match="junk.h5: cannot read as HDF5"):
        build_dataset(config("array_file", tmp_path / "junk.h5"), "train")
    np.save(tmp_path / "tiny.npy", np.zeros((2, 8, SIZE, SIZE), np.uint8))
    with pytest.raises(DataError, match=r"tiny.npy \(test range 0.8-1.0 of 2 sequences\): no test sequences"):
        build_dataset(config("array_file", tmp_path / "tiny.npy"), "test")


def test_a_memory_mapped_float_file_gives_writable_tensors_without_a_warning(tmp_path):
    import warnings

    array = np.random.default_rng(2).random((10, 6, SIZE, SIZE), dtype=np.float32)
    np.save(tmp_path / "frames.npy", array)
    dataset = build_dataset(config("array_file", tmp_path / "frames.npy"), "train")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns when it wraps a read-only array
        sequence = dataset[0]
    sequence += 0  # writable: a transform may work in place without touching the file
    assert np.array_equal(np.load(tmp_path / "frames.npy"), array)


def test_a_file_too_short_for_a_test_split_is_refused_before_training(tmp_path):
    from transmem.config import RunConfig
    from transmem.run.lifecycle import train

    np.save(tmp_path / "two.npy", np.random.default_rng(3).random((2, 6, SIZE, SIZE), dtype=np.float32))
    run = RunConfig(data=config("array_file", tmp_path / "two.npy"))
    run.model.hidden, run.model.patch, run.train.iterations, run.train.device = [4], 4, 2, "cpu"
    with pytest.raises(DataError, match="no test sequences of 6 frames"):
        train(run, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
