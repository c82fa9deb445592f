"""Pictures of frame sequences: PNG strips and animated GIFs of predictions.

Frame sequences are ``(T, C, H, W)`` tensors (or arrays) with ``C`` = 1 (shown in
grayscale) or 3 (RGB) and values in ``[0, 1]``; values outside are clipped for
display.  Tensors may live on any device and may require grad.  All sequences in
one picture must share ``H`` and ``W``; grayscale and RGB sequences can be mixed.

The frames of every picture are laid out by :func:`transmem.evaluation.grid.paint_grid`;
labels and strips are drawn with matplotlib's object-oriented API on an Agg canvas (no
pyplot, no global backend switch), GIFs are written with imageio (Pillow).
Parent directories of ``path`` are created.

GIF conventions (``save_gif`` and ``save_gif_grid``):

* Labels are rendered once with matplotlib into a header (column labels) or a
  left margin (row labels) that is the same in every GIF frame.  Font size is
  10 px, shrunk (down to 6 px) when a label would not fit its column.
* A 3-px time bar at the bottom fills ``(t + 1) / T`` of the width at step ``t``.
  It shows where the animation is, and keeps consecutive GIF frames distinct
  (Pillow merges identical consecutive frames, which would change the frame count).
* Given ``input_len`` (the number of observed frames), pictures of a sequence use one
  time axis, frames ``1 .. T``: a status line names each GIF frame ("frame 3 / 20:
  input", "frame 13 / 20: predicted"), the time bar is blue over input frames and orange
  over predicted ones with a dark tick where prediction starts, and a PNG strip numbers its
  columns ``1 .. T``, input columns in blue and predicted ones in orange, split by a dashed
  line (see :func:`frame_phases`).
* The animation has ``T = max`` sequence length frames.  A sequence with fewer
  frames holds its last frame (``pad="hold"``, default) or shows a blank
  light-gray cell (``pad="blank"``) for the remaining steps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import imageio.v3 as iio
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from transmem.evaluation.grid import ArrayLike, on_time_axis, paint_grid, sequences_as_rgb, upscale
from transmem.evaluation.plots import PathLike, save_figure

__all__ = ["frame_phases", "save_strip_png", "save_gif", "save_gif_grid"]

_BACKGROUND = 1.0  # white, for gaps between frames
_BLANK_CELL = 0.85  # light gray, for missing frames in GIFs
_LABEL_FONT_PX = 10
_MIN_LABEL_FONT_PX = 6
_TIME_BAR_PX = 3
_TIME_BAR_COLOR = np.array([0.12, 0.47, 0.71])  # matplotlib "tab:blue"
_INPUT_COLOR = (0.12, 0.47, 0.71)  # "tab:blue": observed (input) frames
_PREDICTED_COLOR = (0.85, 0.37, 0.01)  # dark orange: predicted frames


def _fitting_font_px(labels: Sequence[str], room_px: float) -> float:
    """Largest font size (px, between 6 and 10) so that each label roughly fits ``room_px``."""
    longest = max((len(label) for label in labels), default=1)
    # DejaVu Sans averages about 0.6 em per character.
    fitting = room_px / (0.6 * max(longest, 1))
    return float(min(_LABEL_FONT_PX, max(_MIN_LABEL_FONT_PX, fitting)))


def frame_phases(steps: int, input_len: int | None) -> list[tuple[int, str]]:
    """``(frame number, "input" | "predicted")`` for frames ``1 .. steps`` of one time axis.

    Frames ``1 .. input_len`` are observed input, ``input_len + 1 .. steps`` predicted
    (``input_len`` None: every frame is ``"input"``, i.e. nothing is marked).
    """
    if input_len is not None and input_len < 0:
        raise ValueError(f"input_len must be >= 0, got {input_len}")
    return [(t, "input" if input_len is None or t <= input_len else "predicted") for t in range(1, steps + 1)]


def _status_text(frame: int, steps: int, phase: str) -> str:
    """The status line of one GIF frame: ``"frame 13 / 20: predicted"``."""
    return f"frame {frame} / {steps}: {phase}"


def _row_starts(rows: Mapping[str, object], start: Mapping[str, int] | None) -> dict[str, int]:
    """Column (time step, 0-based) of each row's first frame; rows not in ``start`` begin at 0."""
    start = dict(start or {})
    unknown = sorted(set(start) - set(rows))
    if unknown:
        raise ValueError(f"start names rows that do not exist: {unknown}")
    for name, column in start.items():
        if isinstance(column, bool) or not isinstance(column, int) or column < 0:
            raise ValueError(f"start of row {name!r} must be a non-negative integer, got {column!r}")
    return {name: start.get(name, 0) for name in rows}


def _render_labels(
    height: int,
    width: int,
    labels: Sequence[tuple[str, float, float]],
    font_px: float,
    horizontal_alignment: str = "center",
    color: tuple[float, float, float] | str = "black",
) -> np.ndarray:
    """Draw text on a white ``(height, width, 3)`` float image.

    Args:
        labels: ``(text, x, y)`` with the anchor position in pixels from the top-left corner.
        font_px: font size in pixels.
        horizontal_alignment: matplotlib ``ha`` of each text relative to its anchor.
        color: text colour.
    """
    dpi = 72  # 1 point == 1 pixel
    figure = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, facecolor="white")
    canvas = FigureCanvasAgg(figure)
    for text, x, y in labels:
        figure.text(
            x / width,
            1.0 - y / height,
            text,
            ha=horizontal_alignment,
            va="center",
            fontsize=font_px,
            color=color,
        )
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())[:height, :width, :3].astype(np.float64) / 255.0
    image = np.full((height, width, 3), _BACKGROUND)
    image[: rgba.shape[0], : rgba.shape[1]] = rgba
    return image


def _time_bar(width: int, step: int, steps: int, input_len: int | None = None) -> np.ndarray:
    """``(3, width, 3)`` bar filled over ``(step + 1) / steps`` of its width.

    With ``input_len``: blue over input frames, orange over predicted ones, and a dark
    1-px tick where prediction starts, shown in every frame.
    """
    bar = np.full((_TIME_BAR_PX, width, 3), 0.9)
    filled = round(width * (step + 1) / steps)
    bar[:, :filled] = _TIME_BAR_COLOR
    if input_len is not None and 0 < input_len < steps:
        boundary = round(width * input_len / steps)
        bar[:, boundary:filled] = _PREDICTED_COLOR
        bar[:, max(0, boundary - 1) : boundary + 1] = 0.1
    return bar


def _status_line(width: int, step: int, steps: int, input_len: int) -> np.ndarray:
    """A white strip naming GIF frame ``step`` (0-based): its frame number and whether it is input or predicted."""
    frame, phase = frame_phases(steps, input_len)[step]
    text = _status_text(frame, steps, phase)
    height = _LABEL_FONT_PX + 6
    color = _INPUT_COLOR if phase == "input" else _PREDICTED_COLOR
    return _render_labels(height, width, [(text, width / 2, height / 2)], _fitting_font_px([text], width), color=color)


def _write_gif(path: PathLike, frames: list[np.ndarray], fps: float) -> None:
    """Write ``(H, W, 3)`` float frames in [0, 1] as a looping GIF."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    video = (np.stack(frames) * 255.0 + 0.5).astype(np.uint8)
    # GIF stores delays in centiseconds; Pillow takes milliseconds.
    write_gif_frames(path, video, duration_ms=round(1000.0 / fps))


#: the largest width or height a GIF can store
GIF_MAX_SIDE = 65535


def write_gif_frames(path: PathLike, frames: np.ndarray, duration_ms: float) -> None:
    """Write uint8 frames ``(T, H, W)`` or ``(T, H, W, 3)`` as a looping GIF, atomically.

    An existing file is replaced only by a complete GIF; frames too large for the format
    are refused before anything is written.
    """
    from transmem.storage.files import atomic_write_bytes

    height, width = frames.shape[1:3]
    if max(height, width) > GIF_MAX_SIDE:
        raise ValueError(f"{path}: a GIF of {width}x{height} pixels exceeds the format's {GIF_MAX_SIDE} pixels per side")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, iio.imwrite("<bytes>", frames, extension=".gif", duration=duration_ms, loop=0))


def save_strip_png(
    path: PathLike,
    rows: Mapping[str, ArrayLike],
    title: str | None = None,
    align: Literal["left", "right"] = "left",
    start: Mapping[str, int] | None = None,
    input_len: int | None = None,
) -> None:
    """Save named frame sequences as a PNG: one row per sequence, frames side by side.

    Args:
        path: output PNG file.
        rows: name -> ``(T, C, H, W)`` sequence (e.g. ``"input"``, ``"truth"``,
            ``"prediction"``); rows are drawn top to bottom in dict order, with the
            name as label on the left.  Rows may have different ``T``.
        title: optional title above the strip.
        align: ``"left"`` (default) puts frame ``i`` of every row in column ``i``;
            ``"right"`` aligns the last frames instead.  Missing cells stay white.
        start: row name -> column of its first frame (0-based), e.g. ``{"truth": 10,
            "prediction": 10}`` to put the future after 10 input frames on one time axis;
            overrides ``align`` for those rows.
        input_len: number of observed frames: columns ``1 .. input_len`` are labelled as
            input (blue), the later ones as predicted (orange), split by a dashed line.

    Columns are labelled with the frame index within the longest row (1-based).
    Each frame is displayed at least about 64 screen pixels wide.
    """
    if align not in ("left", "right"):
        raise ValueError(f"align must be 'left' or 'right', got {align!r}")
    sequences = sequences_as_rgb(rows)
    starts = _row_starts(sequences, start)
    columns = max(starts[name] + frames.shape[0] for name, frames in sequences.items())
    offsets = {
        name: starts[name] if name in (start or {}) or align == "left" else columns - frames.shape[0]
        for name, frames in sequences.items()
    }
    height, width = next(iter(sequences.values())).shape[1:3]
    gap = max(1, min(height, width) // 16)
    cells = [[None] * offsets[name] + list(frames) for name, frames in sequences.items()]
    canvas = paint_grid(cells, gap, gap_value=_BACKGROUND)
    figure = _strip_figure(canvas, list(sequences), (height, width), gap, input_len)
    if title:
        figure.axes[0].set_title(title, pad=18 if input_len else 6)
    save_figure(figure, path)


def _strip_figure(canvas: np.ndarray, names: list[str], frame_size: tuple[int, int], gap: int, input_len: int | None) -> Figure:
    """A figure of a strip's ``(height, width, 3)`` canvas: row names on the left, frame numbers
    below, and with ``input_len`` the input and predicted spans marked."""
    height, width = frame_size
    columns = (canvas.shape[1] + gap) // (width + gap)
    zoom = max(1.0, 64.0 / min(height, width))  # screen pixels per frame pixel
    dpi = 100
    figure = Figure(
        figsize=(canvas.shape[1] * zoom / dpi + 1.5, canvas.shape[0] * zoom / dpi + (1.0 if input_len else 0.6)), dpi=dpi
    )
    axes = figure.add_axes((0.0, 0.0, 1.0, 1.0))
    axes.imshow(canvas, interpolation="nearest")
    axes.set_yticks([row * (height + gap) + (height - 1) / 2 for row in range(len(names))], labels=names)
    phases = frame_phases(columns, input_len)
    axes.set_xticks(
        [column * (width + gap) + (width - 1) / 2 for column in range(columns)],
        labels=[str(frame) for frame, _ in phases],
        fontsize=7,
    )
    axes.tick_params(length=0)
    for spine in axes.spines.values():
        spine.set_visible(False)
    if input_len is not None and 0 < input_len < columns:
        _mark_prediction_start(axes, phases, input_len, width + gap, gap)
    return figure


def _mark_prediction_start(axes, phases: list[tuple[int, str]], input_len: int, pitch: int, gap: int) -> None:
    """Colour a strip's frame numbers by phase, draw a dashed line where prediction starts and
    name both spans above the strip ("input 1-10", "predicted 11-20")."""
    for label, (_, phase) in zip(axes.get_xticklabels(), phases):
        label.set_color(_INPUT_COLOR if phase == "input" else _PREDICTED_COLOR)
    boundary = input_len * pitch - (gap + 1) / 2
    axes.axvline(boundary, color="black", linestyle="--", linewidth=1.2)
    columns = len(phases)
    spans = [("input", 1, input_len, _INPUT_COLOR), ("predicted", input_len + 1, columns, _PREDICTED_COLOR)]
    for name, first, last, color in spans:
        middle = ((first - 1) + last) / 2 * pitch - (gap + 1) / 2
        text = f"{name}: frame {first}" if last == first else f"{name}: frames {first}-{last}"
        axes.annotate(
            text,
            (middle, 1),
            xycoords=("data", "axes fraction"),
            xytext=(0, 4),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=8,
            color=color,
            fontweight="bold",
        )


def _check_gif_options(pad: str, scale: int) -> None:
    if pad not in ("hold", "blank"):
        raise ValueError(f"pad must be 'hold' or 'blank', got {pad!r}")
    if scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")


def _column_header(names: Sequence[str], width: int, gap: int) -> np.ndarray:
    """A white ``(header height, columns * (width + gap) - gap, 3)`` strip naming each column."""
    font_px = _fitting_font_px(names, width)
    header_height = int(math.ceil(font_px)) + 6
    centres = [(name, column * (width + gap) + width / 2, header_height / 2) for column, name in enumerate(names)]
    return _render_labels(header_height, len(names) * (width + gap) - gap, centres, font_px)


def _row_margin(names: Sequence[str], height: int, gap: int) -> np.ndarray:
    """A white ``(rows * (height + gap) - gap, margin width, 3)`` strip naming each row, right-aligned."""
    margin_width = int(0.6 * _LABEL_FONT_PX * max(len(name) for name in names)) + 8
    anchors = [(name, margin_width - 4, row * (height + gap) + height / 2) for row, name in enumerate(names)]
    margin_height = len(names) * (height + gap) - gap
    return _render_labels(margin_height, margin_width, anchors, _LABEL_FONT_PX, horizontal_alignment="right")


def _write_animation(path: PathLike, pictures: np.ndarray, fps: float, input_len: int | None) -> None:
    """Write ``(steps, height, width, 3)`` pictures as a GIF, each above the time bar and, with
    ``input_len``, below its status line."""
    steps, _, width, _ = pictures.shape
    gif_frames = []
    for step, picture in enumerate(pictures):
        parts = [picture, _time_bar(width, step, steps, input_len)]
        if input_len is not None:
            parts.insert(0, _status_line(width, step, steps, input_len))
        gif_frames.append(np.concatenate(parts))
    _write_gif(path, gif_frames, fps)


def save_gif(
    path: PathLike,
    rows: Mapping[str, ArrayLike],
    fps: float = 4,
    scale: int = 2,
    pad: Literal["hold", "blank"] = "hold",
    start: Mapping[str, int] | None = None,
    input_len: int | None = None,
) -> None:
    """Save named sequences as an animated GIF showing them side by side, step by step.

    GIF frame ``t`` is a horizontal grid of frame ``t`` of each sequence (in dict
    order), under a header with the sequence names, above a time bar (see module
    docstring).  The GIF has ``max(start + T)`` frames and loops forever.

    Args:
        path: output GIF file.
        rows: name -> ``(T, C, H, W)`` sequence.
        fps: frames per second (GIF delays are rounded to 10 ms by most viewers).
        scale: integer nearest-neighbour magnification of every frame.
        pad: ``"hold"`` (last frame) or ``"blank"`` for sequences shorter than the longest.
        start: row name -> GIF frame (0-based) at which the row's first frame shows, e.g.
            ``{"prediction": 10}`` after 10 input frames: one time axis for all rows;
            before it the row's cell is blank.
        input_len: number of observed frames: adds a status line ("frame 12 / 20:
            predicted") and colours the time bar by phase.
    """
    _check_gif_options(pad, scale)
    sequences = sequences_as_rgb(rows)
    starts = _row_starts(sequences, start)
    steps = max(starts[name] + frames.shape[0] for name, frames in sequences.items())
    cells = [upscale(on_time_axis(frames, steps, starts[name], pad, _BLANK_CELL), scale) for name, frames in sequences.items()]
    body = paint_grid([cells], gap=2, gap_value=_BACKGROUND)  # (steps, height, width, 3)
    header = _column_header(list(sequences), cells[0].shape[2], gap=2)
    pictures = np.concatenate([np.broadcast_to(header, (steps, *header.shape)), body], axis=1)
    _write_animation(path, pictures, fps, input_len)


def _grid_entries(grid: Mapping[str, ArrayLike]) -> dict[str, list[np.ndarray]]:
    """Name -> ``(S, T, C, H, W)`` entries as name -> S ``(T, H, W, 3)`` float64 sequences in
    [0, 1], checked to share ``S``, ``H`` and ``W``."""
    if not grid:
        raise ValueError("at least one named entry is required")
    entries: dict[str, list[np.ndarray]] = {}
    for name, batch in grid.items():
        if not isinstance(batch, torch.Tensor):
            batch = np.asarray(batch)
        if batch.ndim != 5:
            raise ValueError(f"entry {name!r} must be (S, T, C, H, W), got shape {tuple(batch.shape)}")
        entries[name] = list(sequences_as_rgb({f"{name}[{index}]": batch[index] for index in range(batch.shape[0])}).values())
    sequence_counts = {name: len(sequences) for name, sequences in entries.items()}
    if len(set(sequence_counts.values())) > 1:
        raise ValueError(f"all entries must hold the same number of sequences, got {sequence_counts}")
    frame_sizes = {name: sequences[0].shape[1:3] for name, sequences in entries.items()}
    if len(set(frame_sizes.values())) > 1:
        raise ValueError(f"all entries must share height and width, got {frame_sizes}")
    return entries


def save_gif_grid(
    path: PathLike,
    grid: Mapping[str, ArrayLike],
    fps: float = 4,
    scale: int = 1,
    pad: Literal["hold", "blank"] = "hold",
    input_len: int | None = None,
) -> None:
    """Save several methods on several test sequences as one animated GIF.

    Rows are the entries of ``grid`` in dict order (e.g. ``"truth"`` then one per
    method), labelled on the left; columns are the ``S`` test sequences.  GIF frame
    ``t`` shows frame ``t`` of every sequence, above a time bar (see module docstring).

    Args:
        path: output GIF file.
        grid: name -> ``(S, T, C, H, W)`` tensor; all entries share ``S``, ``H``, ``W``
            (``T`` and ``C`` in {1, 3} may differ).
        fps: frames per second.
        scale: integer nearest-neighbour magnification of every frame.
        pad: ``"hold"`` (last frame) or ``"blank"`` for entries shorter than the longest.
        input_len: number of observed frames (the first ``input_len`` frames of every
            entry are the input): adds a status line ("frame 12 / 20: predicted") and
            colours the time bar by phase.
    """
    _check_gif_options(pad, scale)
    entries = _grid_entries(grid)
    steps = max(sequences[0].shape[0] for sequences in entries.values())
    cells = [[upscale(on_time_axis(frames, steps, 0, pad, _BLANK_CELL), scale) for frames in row] for row in entries.values()]
    body = paint_grid(cells, gap=2, gap_value=_BACKGROUND)  # (steps, height, width, 3)
    margin = _row_margin(list(entries), cells[0][0].shape[1], gap=2)
    pictures = np.concatenate([np.broadcast_to(margin, (steps, *margin.shape)), body], axis=2)
    _write_animation(path, pictures, fps, input_len)
