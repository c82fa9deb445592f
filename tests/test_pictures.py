"""Tests of transmem.evaluation.grid, .animations and .plots: layouts, and files written and read
back with the right sizes."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from transmem.evaluation.animations import frame_phases, save_gif, save_gif_grid, save_strip_png
from transmem.evaluation.grid import on_time_axis, paint_grid
from transmem.evaluation.plots import layer_name, plot_per_frame, plot_transfer_gates

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TIME_BAR_PX = 3
GAP_PX = 2


def video(steps: int, channels: int, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(steps, channels, size, size, generator=torch.Generator().manual_seed(seed))


def read_gif(path) -> np.ndarray:
    assert path.read_bytes()[:6] in (b"GIF89a", b"GIF87a")
    frames = iio.imread(path, index=None)  # (frames, height, width, channels)
    assert frames.ndim == 4
    return frames


def assert_png(path) -> np.ndarray:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = iio.imread(path)
    assert image.ndim == 3 and image.shape[0] > 20 and image.shape[1] > 20
    return image


@pytest.mark.parametrize("channels", [1, 3])
def test_strip_png_is_written(tmp_path, channels):
    path = tmp_path / "nested" / "strip.png"
    save_strip_png(
        path,
        {"input": video(4, channels), "truth": video(3, channels, seed=1), "prediction": video(3, channels)},
        title="example",
    )
    assert_png(path)


def test_strip_png_right_alignment_and_mixed_channels(tmp_path):
    path = tmp_path / "strip.png"
    save_strip_png(path, {"input": video(5, 1), "prediction": video(2, 3)}, align="right")
    assert_png(path)
    with pytest.raises(ValueError):
        save_strip_png(path, {"input": video(2, 1)}, align="middle")


def test_strip_png_rejects_bad_sequences(tmp_path):
    with pytest.raises(ValueError, match="height and width"):
        save_strip_png(tmp_path / "x.png", {"a": video(2, 1, size=16), "b": video(2, 1, size=8)})
    with pytest.raises(ValueError, match="C in"):
        save_strip_png(tmp_path / "x.png", {"a": torch.rand(2, 2, 8, 8)})
    with pytest.raises(ValueError):
        save_strip_png(tmp_path / "x.png", {})


@pytest.mark.parametrize("channels", [1, 3])
def test_gif_has_one_frame_per_step(tmp_path, channels):
    path = tmp_path / "movie.gif"
    scale = 2
    rows = {"truth": video(5, channels), "prediction": video(5, channels, seed=1), "short": video(2, 1)}
    save_gif(path, rows, fps=5, scale=scale)
    frames = read_gif(path)
    assert frames.shape[0] == 5
    expected_width = len(rows) * (16 * scale + GAP_PX) - GAP_PX
    assert frames.shape[2] == expected_width
    assert frames.shape[1] > 16 * scale + TIME_BAR_PX  # header above the frames
    assert iio.immeta(path)["duration"] == 200  # ms per frame


def test_gif_of_constant_sequences_keeps_every_frame(tmp_path):
    # identical consecutive pictures would be merged by Pillow without the time bar
    path = tmp_path / "still.gif"
    save_gif(path, {"truth": torch.zeros(4, 1, 8, 8), "blank": torch.zeros(1, 1, 8, 8)}, pad="blank")
    assert read_gif(path).shape[0] == 4
    with pytest.raises(ValueError):
        save_gif(path, {"truth": torch.zeros(4, 1, 8, 8)}, pad="repeat")
    with pytest.raises(ValueError):
        save_gif(path, {"truth": torch.zeros(4, 1, 8, 8)}, fps=0)


def test_gif_accepts_tensors_requiring_grad(tmp_path):
    prediction = video(3, 1).requires_grad_()
    save_gif(tmp_path / "grad.gif", {"prediction": prediction * 1.5})  # out-of-range values clipped
    assert read_gif(tmp_path / "grad.gif").shape[0] == 3


@pytest.mark.parametrize("channels", [1, 3])
def test_gif_grid_layout(tmp_path, channels):
    path = tmp_path / "grid.gif"
    sequences, steps, size = 3, 4, 8
    grid = {
        "truth": torch.rand(sequences, steps, channels, size, size),
        "tmu": torch.rand(sequences, steps, channels, size, size),
        "copy last": torch.rand(sequences, 1, 1, size, size),
    }
    save_gif_grid(path, grid, fps=4)
    frames = read_gif(path)
    assert frames.shape[0] == steps
    assert frames.shape[1] == len(grid) * (size + GAP_PX) - GAP_PX + TIME_BAR_PX
    assert frames.shape[2] > sequences * (size + GAP_PX) - GAP_PX  # label margin on the left


def test_gif_grid_rejects_inconsistent_entries(tmp_path):
    with pytest.raises(ValueError, match="same number"):
        save_gif_grid(tmp_path / "g.gif", {"a": torch.rand(2, 3, 1, 8, 8), "b": torch.rand(3, 3, 1, 8, 8)})
    with pytest.raises(ValueError, match="S, T, C, H, W"):
        save_gif_grid(tmp_path / "g.gif", {"a": torch.rand(3, 1, 8, 8)})


def test_plot_per_frame(tmp_path):
    path = tmp_path / "plots" / "per_frame.png"
    curves = {
        "tmu": {"mse": [30.0, 40.0, 50.0], "ssim": [0.95, 0.9, 0.85]},
        "predrnn": {"mse": {"per_frame": [35.0, 45.0, 60.0], "mean": 46.7}, "ssim": [0.94, 0.88, 0.8]},
        "copy last": {"mse": [80.0, 90.0, 100.0]},  # no ssim: skipped in that subplot
    }
    bands = {"tmu": {"mse": [1.0, 2.0, 3.0]}}
    plot_per_frame(path, curves, metrics=("mse", "ssim"), title="Moving MNIST", bands=bands)
    assert_png(path)
    with pytest.raises(ValueError, match="psnr"):
        plot_per_frame(path, curves, metrics=("psnr",))
    with pytest.raises(ValueError, match="band"):
        plot_per_frame(path, curves, bands={"tmu": {"mse": [1.0]}})


def test_plot_transfer_gates(tmp_path):
    path = tmp_path / "gates.png"
    gates = {
        "layer 0": [[0.1, 0.2, 0.3, 0.4, 0.5], [0.9, 0.8, 0.7, 0.6, 0.5]],
        "layer 1": torch.rand(2, 5),
        "layer 2": np.full((2, 5), 0.5),
    }
    plot_transfer_gates(path, gates, source_names=["kth", "human3.6m"], input_len=3, title="gates")
    assert_png(path)
    array_path = tmp_path / "gates_array.png"
    plot_transfer_gates(array_path, np.random.default_rng(0).random((5, 3, 6)), input_len=2)
    assert_png(array_path)
    with pytest.raises(ValueError, match="source names"):
        plot_transfer_gates(path, gates, source_names=["only one"])
    with pytest.raises(ValueError, match="sources, steps"):
        plot_transfer_gates(path, {"layer 0": [0.1, 0.2]})


# ----------------------------------------------------------------------------- input vs predicted frames

ORANGE = np.array([217, 94, 3])  # _PREDICTED_COLOR as uint8
BLUE = np.array([31, 120, 181])  # tab:blue


def _has_color(pixels: np.ndarray, color: np.ndarray) -> bool:
    return bool((np.abs(pixels[..., :3].astype(int) - color).max(axis=-1) <= 12).any())


def test_frame_phases_number_frames_on_one_time_axis():
    phases = frame_phases(7, 3)
    assert [frame for frame, _ in phases] == [1, 2, 3, 4, 5, 6, 7]
    assert [phase for _, phase in phases] == ["input"] * 3 + ["predicted"] * 4
    assert {phase for _, phase in frame_phases(4, None)} == {"input"}
    assert layer_name(0) == "layer 0" and layer_name("1") == "layer 1"


def test_prediction_gif_plays_the_future_after_the_input_and_marks_it(tmp_path):
    """The future starts at GIF frame T_in + 1 (not next to input frame 1), with a status line
    and a time bar that turns orange there."""
    path = tmp_path / "p.gif"
    size, scale = 8, 2
    rows = {"input": torch.zeros(3, 1, size, size), "prediction": torch.ones(4, 1, size, size)}
    save_gif(path, rows, scale=scale, pad="blank", start={"prediction": 3}, input_len=3)
    frames = read_gif(path)
    assert frames.shape[0] == 7  # frames 1..7 on one axis
    bar = frames[:, -TIME_BAR_PX:]
    body = frames[:, -TIME_BAR_PX - size * scale : -TIME_BAR_PX]
    prediction_cell = body[:, :, size * scale + GAP_PX :]
    assert all(np.abs(prediction_cell[t].astype(int) - 217).max() <= 2 for t in range(3))  # blank while input plays
    assert all(prediction_cell[t].min() >= 250 for t in range(3, 7))  # the predicted frames after it
    assert not any(_has_color(bar[t], ORANGE) for t in range(3)) and all(_has_color(bar[t], ORANGE) for t in range(3, 7))
    status = frames[:, :16]  # the status line on top names the phase in its colour
    assert all(_has_color(status[t], BLUE) for t in range(3)) and all(_has_color(status[t], ORANGE) for t in range(3, 7))
    with pytest.raises(ValueError, match="do not exist"):
        save_gif(path, rows, start={"truth": 3})


def test_gif_grid_marks_where_prediction_starts(tmp_path):
    path = tmp_path / "grid.gif"
    save_gif_grid(path, {"truth": torch.rand(2, 5, 1, 8, 8), "tmu": torch.rand(2, 5, 1, 8, 8)}, input_len=2)
    frames = read_gif(path)
    bar = frames[:, -TIME_BAR_PX:]
    assert frames.shape[0] == 5
    assert [_has_color(bar[t], ORANGE) for t in range(5)] == [False, False, True, True, True]


def test_strip_png_puts_the_future_after_the_input(tmp_path):
    path = tmp_path / "strip.png"
    rows = {"input": video(3, 1), "truth": video(2, 1, seed=1), "prediction": video(2, 1, seed=2)}
    save_strip_png(path, rows, start={"truth": 3, "prediction": 3}, input_len=3)
    image = assert_png(path)
    assert _has_color(image, ORANGE) and _has_color(image, BLUE)  # predicted and input frame numbers
    plain = tmp_path / "plain.png"
    save_strip_png(plain, rows)
    assert not _has_color(assert_png(plain), ORANGE)
    assert assert_png(path).shape[1] > assert_png(plain).shape[1]  # 5 columns, not 3
    with pytest.raises(ValueError, match="non-negative"):
        save_strip_png(path, rows, start={"truth": -1})


# ----------------------------------------------------------------------------- the grid painter


def test_paint_grid_lays_out_cells_with_gaps_and_blanks():
    image = np.zeros((2, 3, 1), dtype=np.float32)  # (height, width, channels)
    canvas = paint_grid([[image, None], [image]], gap=1, gap_value=1.0, blank_value=0.5)
    assert canvas.shape == (2 * 2 + 1, 2 * 3 + 1, 1) and canvas.dtype == np.float32
    assert (canvas[:2, :3] == 0).all() and (canvas[3:, :3] == 0).all()  # the two images
    assert (canvas[:2, 4:] == 0.5).all() and (canvas[3:, 4:] == 0.5).all()  # None and the short row's end
    assert (canvas[2] == 1).all() and (canvas[:, 3] == 1).all()  # the gaps
    video = np.ones((4, 2, 3, 3))  # (time, height, width, channels): a sequence of grids
    assert paint_grid([[video, video]], gap=2).shape == (4, 2, 3 + 2 + 3, 3)
    with pytest.raises(ValueError, match="one shape"):
        paint_grid([[image, video]], gap=1)


def test_on_time_axis_holds_or_blanks_around_the_frames():
    frames = np.arange(2, dtype=np.float64).reshape(2, 1, 1, 1) + 1  # frames 1 and 2
    held = on_time_axis(frames, steps=5, start=1, pad="hold", blank_value=0.0)
    assert held.ravel().tolist() == [0, 1, 2, 2, 2]
    assert on_time_axis(frames, steps=5, start=1, pad="blank", blank_value=0.0).ravel().tolist() == [0, 1, 2, 0, 0]
