"""Folders of videos: ``kth`` (KTH actions, published layout) and ``video_folder`` (any).

Both decode whole videos with PyAV into square ``frame_size`` frames -- ``crop = "full"``
scales the whole frame to a square (aspect not kept; what PredRNN does with KTH's 160x120),
``crop = "center"`` scales the shorter side to ``frame_size`` and keeps the central square --
and cut them into windows of ``total_len`` frames every ``stride`` frames. Sequence ``i`` of
a split is its ``i``-th window (videos in sorted path order, then time); if fewer sequences
are asked for than there are windows, an evenly spaced subset is used. Decoded videos are
cached per process (:data:`~.video_io.DECODED_VIDEOS_CACHED`).

KTH: files ``personXX_ACTION_dY_uncomp.avi`` anywhere under ``root`` (ACTION in boxing,
handclapping, handwaving, jogging, running, walking; other files are ignored). Split by
person: persons 1-15 train, person 16 val, persons 17-25 test (the usual 1-16 / 17-25 split
with person 16 held out for validation); all three lists are options. Grayscale.

video_folder: every ``.mp4 .avi .mov .mkv`` file under ``root`` (recursive, sorted by
relative path). ``split_by = "file"``: the last ``round(test_fraction * n)`` files (at least
one) are test, the ``round(val_fraction * n)`` before them val, the rest train.
``split_by = "time"``: every video is cut into train / val / test time spans separated by
gaps of ``total_len`` frames (see :func:`~.video_io.time_spans`).

A video shorter than ``total_len`` frames raises DataError (nothing is dropped silently).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from transmem.schema import ConfigError, DataConfig

from .base import DatasetSpec, SequenceDataset, evenly_spaced, finite_size
from .frames import DataError, file_stamp, require_folder
from .natural_video import check_time_fractions
from .video_io import VIDEO_EXTENSIONS, cover_size, decode_video, probe_video, time_spans, window_starts

KTH_ACTIONS = ("boxing", "handclapping", "handwaving", "jogging", "running", "walking")
KTH_PERSONS = 25
KTH_FILE = re.compile(r"^person(\d\d)_([a-z]+)_d(\d)_uncomp\.avi$")


class VideoWindows(SequenceDataset):
    """Windows ``(path, start)`` of decoded square videos."""

    def __init__(self, name: str, data: DataConfig, options, split: str, windows: list, source: str):
        super().__init__(name, data, options, split, 0)
        self.source = source
        self.available = windows
        self.windows = [windows[i] for i in evenly_spaced(len(windows), finite_size(data, split, len(windows), source))]
        self.size = len(self.windows)

    def frame_range(self, index: int) -> tuple[Path, int, int]:
        """Video file, first and stop frame of sequence ``index``."""
        path, start = self.windows[self._check_index(index)]
        return path, start, start + self.data.total_len

    def make_sequence(self, index: int) -> np.ndarray:
        path, first, stop = self.frame_range(index)
        video = decode_square(path, self.data.channels, self.data.frame_size, self.options.crop)
        if len(video) < stop:
            raise DataError(f"{path}: header says {probe_video(path).frames} frames but only {len(video)} decode")
        return video[first:stop].astype(np.float32) / np.float32(255.0)

    def identity(self) -> dict:
        files = sorted({file_stamp(path) for path, _ in self.available})
        digest = hashlib.sha256("\n".join(files).encode()).hexdigest()
        return {**super().identity(), "source": self.source, "files": digest, "windows": len(self.available)}


def decode_square(path: Path, channels: int, size: int, crop: str) -> np.ndarray:
    """Video as uint8 ``(N, channels, size, size)``, whole frame squeezed or centre-cropped."""
    if crop == "full":
        return decode_video(path, channels, size, size)
    width, height = cover_size(probe_video(path), size)
    video = decode_video(path, channels, width, height)
    top, left = (height - size) // 2, (width - size) // 2
    return video[:, :, top : top + size, left : left + size]


def windows_of(paths: list[Path], data: DataConfig, stride: int, spans_of=None) -> list[tuple[Path, int]]:
    """All windows of the videos; ``spans_of(frames)`` gives the usable (first, stop) span."""
    windows = []
    for path in paths:
        frames = probe_video(path).frames
        if frames < data.total_len:
            raise DataError(f"{path}: {frames} frames, fewer than data.total_len = {data.total_len}")
        first, stop = spans_of(frames) if spans_of else (0, frames)
        windows.extend((path, start) for start in window_starts(first, stop, data.total_len, stride))
    return windows


def _check_crop_and_stride(options) -> None:
    if options.crop not in ("full", "center"):
        raise ConfigError(f"data.options.crop: expected 'full' or 'center', got {options.crop!r}")
    if options.stride < 1:
        raise ConfigError(f"data.options.stride: must be at least 1, got {options.stride}")
    if not options.root:
        raise ConfigError(
            "data.options.root: required (the folder holding the videos): give it with --set data.options.root=FOLDER "
            'or as root = "FOLDER" under [data.options] in the config'
        )


# ---------------------------------------------------------------- KTH


@dataclass
class KTHOptions:
    root: str = ""  # folder holding personXX_ACTION_dY_uncomp.avi files (searched recursively)
    actions: list = field(default_factory=lambda: list(KTH_ACTIONS))
    train_persons: list = field(default_factory=lambda: list(range(1, 16)))
    val_persons: list = field(default_factory=lambda: [16])
    test_persons: list = field(default_factory=lambda: list(range(17, 26)))
    stride: int = 10
    crop: str = "full"  # full | center

    def validate(self, data: DataConfig) -> None:
        _check_crop_and_stride(self)
        unknown = [a for a in self.actions if a not in KTH_ACTIONS]
        if unknown or not self.actions:
            raise ConfigError(f"data.options.actions: choose from {', '.join(KTH_ACTIONS)}, got {self.actions!r}")
        seen: dict[int, str] = {}
        for key in ("train_persons", "val_persons", "test_persons"):
            for person in getattr(self, key):
                if not isinstance(person, int) or not 1 <= person <= KTH_PERSONS:
                    raise ConfigError(f"data.options.{key}: persons are integers 1-{KTH_PERSONS}, got {person!r}")
                if person in seen:
                    raise ConfigError(f"data.options.{key}: person {person} is also in {seen[person]}")
                seen[person] = key
        if data.channels != 1:
            raise ConfigError(f"data.channels: KTH is grayscale, set channels = 1 (got {data.channels})")


def find_kth_videos(root: Path) -> dict[Path, tuple[int, str]]:
    """KTH videos under ``root``: path -> (person, action), sorted by path."""
    videos = {}
    for path in sorted(root.rglob("*.avi")):
        match = KTH_FILE.match(path.name)
        if match and match.group(2) in KTH_ACTIONS:
            videos[path] = (int(match.group(1)), match.group(2))
    if not videos:
        raise DataError(f"{root}: no KTH videos named personXX_ACTION_dY_uncomp.avi")
    return videos


def build_kth(data: DataConfig, options: KTHOptions, split: str) -> VideoWindows:
    root = require_folder(options.root)
    persons = set(getattr(options, f"{split}_persons"))
    paths = [p for p, (person, action) in find_kth_videos(root).items() if person in persons and action in options.actions]
    source = f"{root} (KTH persons {sorted(persons)}, actions {', '.join(options.actions)})"
    if not paths and (split != "val" or data.val_size > 0):
        raise DataError(f"{source}: no {split} videos found")
    return VideoWindows("kth", data, options, split, windows_of(paths, data, options.stride), source)


KTH_SPEC = DatasetSpec(
    options=KTHOptions,
    build=build_kth,
    description="KTH actions from a local folder (personXX_ACTION_dY_uncomp.avi); persons 1-15/16/17-25",
)


# ---------------------------------------------------------------- any folder


@dataclass
class VideoFolderOptions:
    root: str = ""  # folder of .mp4 / .avi / .mov / .mkv files (searched recursively)
    split_by: str = "file"  # file | time
    val_fraction: float = 0.15
    test_fraction: float = 0.2
    stride: int = 10
    crop: str = "center"  # center | full

    def validate(self, data: DataConfig) -> None:
        _check_crop_and_stride(self)
        if self.split_by not in ("file", "time"):
            raise ConfigError(f"data.options.split_by: expected 'file' or 'time', got {self.split_by!r}")
        check_time_fractions(self.val_fraction, self.test_fraction)
        if data.channels not in (1, 3):
            raise ConfigError(f"data.channels: video is decoded as gray (1) or RGB (3), got {data.channels}")


def find_videos(root: Path) -> list[Path]:
    videos = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
    if not videos:
        raise DataError(f"{root}: no video files ({', '.join(VIDEO_EXTENSIONS)})")
    return videos


def split_files(paths: list[Path], split: str, val_fraction: float, test_fraction: float, root: Path) -> list[Path]:
    """The files of ``split`` under the by-file rule (train first, val, then test, sorted)."""
    count = len(paths)
    test = max(1, round(test_fraction * count))
    val = round(val_fraction * count)
    train = count - val - test
    if train < 1:
        raise DataError(
            f"{root}: {count} videos are too few to split by file (val {val}, test {test}); use data.options.split_by = 'time'"
        )
    bounds = {"train": (0, train), "val": (train, train + val), "test": (train + val, count)}
    first, stop = bounds[split]
    return paths[first:stop]


def build_video_folder(data: DataConfig, options: VideoFolderOptions, split: str) -> VideoWindows:
    root = require_folder(options.root)
    paths = find_videos(root)
    if options.split_by == "file":
        paths = split_files(paths, split, options.val_fraction, options.test_fraction, root)
        windows = windows_of(paths, data, options.stride)
        source = f"{root} ({split} files {paths[0].name}..{paths[-1].name})" if paths else f"{root} ({split} files)"
    else:

        def span(frames: int) -> tuple[int, int]:
            return time_spans(frames, data.total_len, options.val_fraction, options.test_fraction)[split]

        windows = windows_of(paths, data, options.stride, span)
        example = probe_video(paths[0])
        source = f"{root} ({split} time spans of {len(paths)} videos, e.g. frames {span(example.frames)} of {paths[0].name})"
    return VideoWindows("video_folder", data, options, split, windows, source)


VIDEO_FOLDER_SPEC = DatasetSpec(
    options=VideoFolderOptions,
    build=build_video_folder,
    description="any folder of videos (mp4/avi/mov/mkv), split by file or by time span",
)
