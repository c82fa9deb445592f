"""Registry, generated datasets, validate_frames and previews of transmem.data."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tests.support import data_config
from transmem.config import ConfigError, DataConfig
from transmem.data import (
    DATASETS,
    NOMINAL_ONLINE_SIZE,
    DataError,
    DatasetSpec,
    SequenceDataset,
    build_dataset,
    check_options,
    validate_frames,
)
from transmem.data.balls import collide_pairs, simulate
from transmem.data.digits import MNIST_SIDE, load_digit_table, mnist_csv_path
from transmem.data.frames import check_value_range
from transmem.evaluation.preview import preview_dataset

GENERATORS = ("moving_digits", "bouncing_balls", "advection_diffusion")
SMALL = dict(frame_size=32, total_len=6, input_len=3, val_size=3, test_size=4)


def small(name: str, **changes) -> DataConfig:
    return data_config(name, **{**SMALL, **changes})


# ---------------------------------------------------------------- registry and options


def test_registry_lists_every_dataset_with_defaults():
    assert set(DATASETS) == {
        "moving_digits",
        "bouncing_balls",
        "advection_diffusion",
        "natural_video",
        "moving_mnist_file",
        "kth",
        "video_folder",
        "array_file",
    }
    for name, spec in DATASETS.items():
        assert isinstance(spec, DatasetSpec) and spec.description
        assert dataclasses.is_dataclass(spec.options)
        spec.options()  # every option has a default


def test_unknown_dataset_is_a_one_line_config_error():
    with pytest.raises(ConfigError, match=r"^data.name: unknown dataset 'nope'; known: moving_digits, ") as error:
        check_options(DataConfig(name="nope"))
    assert "\n" not in str(error.value)


def test_unknown_option_key_names_the_key():
    with pytest.raises(ConfigError, match=r"data.options.num_digitz: unknown key"):
        check_options(DataConfig(options={"num_digitz": 3}))


def test_option_type_is_checked():
    with pytest.raises(ConfigError, match=r"data.options.num_digits: expected an integer"):
        check_options(DataConfig(options={"num_digits": "two"}))


@pytest.mark.parametrize(
    "name, options, changes, message",
    [
        ("moving_digits", {"num_digits": 0}, {}, "data.options.num_digits: must be at least 1"),
        ("moving_digits", {"min_speed": 6.0}, {}, "data.options.min_speed: need 0 <= min_speed <= max_speed"),
        ("moving_digits", {"digit_size": 40}, {"frame_size": 32}, "data.options.digit_size: digits of 40 pixels"),
        ("moving_digits", {}, {"channels": 3}, "data.channels: moving_digits is grayscale"),
        ("bouncing_balls", {"num_balls": 40}, {}, "data.options.num_balls: 40 balls"),
        ("bouncing_balls", {"min_radius": 0.2, "max_radius": 0.1}, {}, "data.options.min_radius"),
        ("advection_diffusion", {"diffusion": -1.0}, {}, "data.options.diffusion: must be >= 0"),
        ("advection_diffusion", {"lifetime": 0.0}, {}, "data.options.lifetime: must be positive"),
        ("natural_video", {"clip": "cats"}, {}, "data.options.clip: unknown clip 'cats'"),
        ("natural_video", {"val_fraction": 0.5, "test_fraction": 0.5}, {}, "data.options.test_fraction"),
        ("natural_video", {}, {"channels": 2}, "data.channels: video is decoded as gray"),
        ("kth", {}, {}, "data.options.root: required"),
        ("kth", {"root": "x", "actions": ["dancing"]}, {}, "data.options.actions: choose from"),
        ("kth", {"root": "x", "val_persons": [17]}, {}, "data.options.test_persons: person 17 is also in val_persons"),
        ("kth", {"root": "x", "test_persons": [30]}, {}, "data.options.test_persons: persons are integers 1-25"),
        ("video_folder", {"root": "x", "split_by": "hash"}, {}, "data.options.split_by"),
        ("video_folder", {"root": "x", "crop": "zoom"}, {}, "data.options.crop"),
        ("moving_mnist_file", {}, {}, "data.options.path: required"),
        ("array_file", {"path": "a.npy", "test_range": [0.5, 1.0]}, {}, "overlaps"),
        ("array_file", {"path": "a.npy", "val_range": [0.9, 0.8]}, {}, "data.options.val_range: need 0 <= start"),
        ("array_file", {"path": "a.npy", "window_stride": -1}, {}, "data.options.window_stride"),
        ("array_file", {"path": "a.npy", "test_range": ["a", 1]}, {}, r"data.options.test_range: expected \[start, stop\]"),
        ("array_file", {"path": "a.npy", "test_range": [0.9]}, {}, r"data.options.test_range: expected \[start, stop\]"),
    ],
)
def test_bad_options_raise_config_error(name, options, changes, message):
    with pytest.raises(ConfigError, match=message):
        check_options(DataConfig(name=name, options=options, **changes))


def test_build_dataset_rejects_unknown_split():
    with pytest.raises(ValueError, match="split: expected one of train, val, test"):
        build_dataset(small("moving_digits"), "dev")


# ---------------------------------------------------------------- generated datasets


@pytest.mark.parametrize("name", GENERATORS)
def test_generator_shapes_ranges_and_determinism(name):
    data = small(name, seed=3)
    train = build_dataset(data, "train")
    assert isinstance(train, SequenceDataset) and train.online and len(train) == NOMINAL_ONLINE_SIZE
    sequence = train[7]
    assert sequence.shape == (6, 1, 32, 32) and sequence.dtype == torch.float32
    assert 0.0 <= float(sequence.min()) and float(sequence.max()) <= 1.0 and float(sequence.max()) > 0.1
    assert torch.equal(sequence, train[7])  # same index twice
    assert torch.equal(sequence, build_dataset(data, "train")[np.int64(7)])  # rebuilt, numpy index
    assert not torch.equal(sequence, train[8])  # another index
    assert train[10**9].shape == sequence.shape  # online: any index
    assert not torch.equal(sequence, build_dataset(small(name, seed=4), "train")[7])  # another seed
    val, test = build_dataset(data, "val"), build_dataset(data, "test")
    assert (len(val), len(test)) == (3, 4) and not (val.online or test.online)
    assert not torch.equal(val[0], train[0]) and not torch.equal(test[0], val[0])
    with pytest.raises(IndexError):
        test[4]
    with pytest.raises(IndexError):
        train[-1]
    assert torch.equal(train.batch([7, 8])[0], sequence)


@pytest.mark.parametrize("name", GENERATORS)
def test_finite_training_set_and_fingerprints(name):
    data = small(name, train_size=5)
    train = build_dataset(data, "train")
    assert not train.online and len(train) == 5
    with pytest.raises(IndexError):
        train[5]
    fingerprint = train.fingerprint()
    assert len(fingerprint) == 16 and int(fingerprint, 16) >= 0
    assert fingerprint == build_dataset(data, "train").fingerprint()
    others = {
        build_dataset(small(name, train_size=5, seed=1), "train").fingerprint(),
        build_dataset(small(name, train_size=6), "train").fingerprint(),
        build_dataset(small(name, train_size=5, total_len=7), "train").fingerprint(),
        build_dataset(data, "val").fingerprint(),
    }
    assert fingerprint not in others and len(others) == 4


def test_options_change_content_and_fingerprint():
    plain = build_dataset(small("moving_digits", train_size=2), "train")
    three = build_dataset(small("moving_digits", train_size=2, options={"num_digits": 3}), "train")
    assert plain.fingerprint() != three.fingerprint()
    assert not torch.equal(plain[0], three[0])


def test_sequences_are_identical_in_another_process():
    script = (
        "import hashlib; from transmem.config import DataConfig; from transmem.data import build_dataset\n"
        f"for name in {GENERATORS!r}:\n"
        f"    ds = build_dataset(DataConfig(name=name, **{SMALL!r}), 'train')\n"
        "    print(hashlib.sha256(ds[11].numpy().tobytes()).hexdigest())\n"
    )
    src = str(Path(__file__).resolve().parents[1] / "src")
    # A bare environment, but the same BLAS kernels: OPENBLAS_CORETYPE (set on some machines)
    # selects other matmul kernels, whose last bits differ (advection's diffusion is a matmul).
    blas = {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS_")}
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin", **blas},
    )
    here = [hashlib.sha256(build_dataset(small(n), "train")[11].numpy().tobytes()).hexdigest() for n in GENERATORS]
    assert out.stdout.split() == here


@pytest.mark.parametrize("name", GENERATORS)
def test_generators_pickle_small_for_worker_processes(name):
    import pickle

    dataset = build_dataset(small(name), "test")
    blob = pickle.dumps(dataset)
    assert len(blob) < 100_000 and torch.equal(pickle.loads(blob)[2], dataset[2])


def test_digit_images_of_test_are_never_used_in_training():
    train = build_dataset(small("moving_digits"), "train")
    val = build_dataset(small("moving_digits"), "val")
    test = build_dataset(small("moving_digits"), "test")
    assert len(train.digit_rows) == 4000 and len(test.digit_rows) == 1000
    assert np.array_equal(train.digit_rows, val.digit_rows)
    assert not set(train.digit_rows) & set(test.digit_rows)
    images, labels = load_digit_table(str(mnist_csv_path()))
    assert images.shape == (5000, MNIST_SIDE, MNIST_SIDE)
    assert np.bincount(labels[test.digit_rows]).tolist() == [100] * 10
    train_images = {images[r].tobytes() for r in train.digit_rows}
    assert not any(images[r].tobytes() in train_images for r in test.digit_rows)  # pixel-level disjointness
    for index in range(20):
        assert set(test.plan(index)[0]) <= set(test.digit_rows)
        assert set(train.plan(index)[0]) <= set(train.digit_rows)
        assert set(val.plan(index)[0]) <= set(train.digit_rows)


def test_digits_bounce_inside_the_frame():
    data = small("moving_digits", total_len=60, options={"min_speed": 4.0, "max_speed": 5.0})
    dataset = build_dataset(data, "train")
    limit = data.frame_size - dataset.side
    for index in range(5):
        _, corners = dataset.plan(index)
        assert corners.min() >= 0 and corners.max() <= limit
        steps = np.abs(np.diff(corners, axis=1)).max()
        assert steps <= 5 + 1  # at most the speed (plus rounding) per frame


def test_balls_collide_elastically():
    radii = np.array([0.1, 0.15])
    mass = radii**2
    position = np.array([[0.5, 0.4], [0.52, 0.6]])  # overlapping and approaching
    velocity = np.array([[0.0, 0.05], [0.01, -0.03]])
    before = velocity.copy()
    collide_pairs(position, velocity, radii, mass, *np.triu_indices(2, k=1))
    assert not np.allclose(velocity, before)
    assert np.allclose((mass[:, None] * velocity).sum(0), (mass[:, None] * before).sum(0))  # momentum
    assert np.isclose((mass * (velocity**2).sum(1)).sum(), (mass * (before**2).sum(1)).sum())  # energy

    centres = simulate(np.array([[0.5, 0.2], [0.5, 0.7]]), before, radii, frames=40, substeps=8)
    assert np.all(centres >= radii[None, :, None] - 1e-9) and np.all(centres <= 1 - radii[None, :, None] + 1e-9)
    assert np.linalg.norm(centres[:, 0] - centres[:, 1], axis=1).min() > 0.8 * radii.sum()
    displacement = np.diff(centres, axis=0)  # equals the velocity in frames without a bounce
    energy = (mass * (displacement**2).sum(axis=2)).sum(axis=1)
    assert np.isclose(energy, (mass * (before**2).sum(1)).sum(), rtol=1e-6).mean() > 0.5


def test_advection_moves_and_changes_the_field():
    sequence = build_dataset(small("advection_diffusion", total_len=12), "train")[0].numpy()[:, 0]
    assert float(sequence.max()) < 1.0
    assert np.abs(sequence[-1] - sequence[0]).mean() > 1e-3


# ---------------------------------------------------------------- validate_frames


uint8_frames = hnp.arrays(np.uint8, hnp.array_shapes(min_dims=3, max_dims=5, min_side=1, max_side=5))
unit_floats = hnp.arrays(
    st.sampled_from([np.float32, np.float64]),
    hnp.array_shapes(min_dims=3, max_dims=5, min_side=1, max_side=5),
    elements=st.floats(0.0, 1.0, width=32),
)


@settings(max_examples=60, deadline=None)
@given(uint8_frames)
def test_uint8_frames_are_accepted_and_scaled_exactly(array):
    out = validate_frames(array, "x")
    assert out.dtype == np.float32 and out.shape == array.shape
    assert np.array_equal(out, array.astype(np.float32) / np.float32(255))
    tensor = validate_frames(torch.from_numpy(array), "x")
    assert tensor.dtype == torch.float32 and torch.equal(tensor, torch.from_numpy(out))


@settings(max_examples=60, deadline=None)
@given(unit_floats)
def test_floats_in_unit_range_are_accepted_unchanged(array):
    out = validate_frames(array, "x")
    assert out.dtype == np.float32 and np.array_equal(out, array.astype(np.float32))


@settings(max_examples=60, deadline=None)
@given(unit_floats, st.sampled_from([np.nan, np.inf, -np.inf]), st.data())
def test_nan_or_inf_is_always_rejected(array, bad, draw):
    position = tuple(draw.draw(st.integers(0, side - 1)) for side in array.shape)
    array = array.copy()
    array[position] = bad
    with pytest.raises(DataError, match="frames.npy: contains NaN or infinite values"):
        validate_frames(array, "frames.npy")
    with pytest.raises(DataError, match="NaN or infinite"):
        validate_frames(torch.from_numpy(array), "frames.npy")


@settings(max_examples=60, deadline=None)
@given(unit_floats, st.one_of(st.floats(1.0001, 1e6), st.floats(-1e6, -0.0001)), st.data())
def test_out_of_range_floats_are_always_rejected(array, bad, draw):
    position = tuple(draw.draw(st.integers(0, side - 1)) for side in array.shape)
    array = array.copy()
    array[position] = bad
    with pytest.raises(DataError, match=r"frames.npy: float values must lie in \[0, 1\]"):
        validate_frames(array, "frames.npy")


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([np.nan, np.inf, -0.25, 1.5]), st.data())
def test_chunked_scan_names_the_first_bad_element_across_chunks(bad, draw):
    array = np.full((7, 3, 4, 5), 0.5, np.float32)
    position = tuple(draw.draw(st.integers(0, side - 1)) for side in array.shape)
    array[position] = bad
    with pytest.raises(DataError, match="frames.npy: ") as error:
        check_value_range(array, "frames.npy", chunk=2 * 3 * 4 * 5)  # two rows per chunk
    assert f"index {position} of shape (7, 3, 4, 5)" in str(error.value)


def test_float64_just_above_one_is_rejected_before_rounding_to_float32():
    array = np.full((2, 3, 3), 1.0 + 1e-12)
    assert np.float32(array[0, 0, 0]) == 1.0
    with pytest.raises(DataError, match="must lie in"):
        validate_frames(array, "a.npy")
    with pytest.raises(DataError, match="must lie in"):
        validate_frames(torch.from_numpy(array), "a.npy")


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((4, 4), np.uint8), "expected 3 to 5 dimensions"),
        (np.zeros((1, 1, 1, 1, 1, 1), np.uint8), "expected 3 to 5 dimensions"),
        (np.zeros((0, 4, 4), np.uint8), "empty array"),
        (np.zeros((2, 4, 4), np.int64), "unsupported dtype int64"),
        (np.zeros((2, 4, 4), np.uint16), "unsupported dtype uint16"),
        ([[[0.5]]], "expected a numpy array or torch tensor"),
    ],
)
def test_bad_arrays_are_rejected(array, message):
    with pytest.raises(DataError, match=message):
        validate_frames(array, "a.npy")


def test_validate_frames_can_require_a_rank():
    with pytest.raises(DataError, match=r"a.npy: expected 4 dimensions, got shape \(2, 3, 3\)"):
        validate_frames(np.zeros((2, 3, 3), np.uint8), "a.npy", ndim=4)


# ---------------------------------------------------------------- preview


def test_preview_writes_a_gif_of_sequences_side_by_side(tmp_path):
    import imageio.v3 as iio

    out = preview_dataset(small("bouncing_balls"), "val", 3, tmp_path / "sub" / "balls.gif")
    frames = iio.imread(out, index=None)
    assert frames.shape[:3] == (6, 32, 3 * 32 + 2 * 2)
    with pytest.raises(ValueError, match="has only 3 sequences"):
        preview_dataset(small("bouncing_balls"), "val", 4, tmp_path / "x.gif")
