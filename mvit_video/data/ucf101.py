"""UCF101 in its official layout, and the base it shares with HMDB51 (``hmdb51.py``): three train/test splits of
one folder of videos, ``data.split=1|2|3``, video-level accuracy over the test views (softmax summed, as Kinetics).

Layout under ``root`` (the official ``UCF101.rar`` and ``UCF101TrainTestSplits-RecognitionTask.zip`` unpacked)::

    UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi
    ucfTrainTestlist/classInd.txt           "1 ApplyEyeMakeup"  (ids 1..101, CRLF line ends)
    ucfTrainTestlist/trainlist0{1,2,3}.txt  "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1"
    ucfTrainTestlist/testlist0{1,2,3}.txt   "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi"  (no label)

A test line's class is its folder, looked up in ``classInd.txt`` without regard to case: the official files name
class 37 ``HandstandPushups`` and its videos ``v_HandStandPushups_g01_c01.avi``, so a class read from the file name
would not be found (the folder is ``HandstandPushups``, as in ``classInd.txt``). A train line's label must agree
with its folder too. The reported number of these benchmarks is the mean over the three splits (``split_mean.py``).
Validation uses the split's test list (there is no official validation set), one random clip per video.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from .annotations import DatasetFormatError, read_text_lines
from .clips import ClipDataModule
from .decoding import check_decoder
from .kinetics import WindowFrames

SPLITS = (1, 2, 3)
VIDEO_DIR = "UCF-101"
SPLIT_DIR = "ucfTrainTestlist"
CLASS_INDEX = "classInd.txt"
CLASS_INDEX_FORMAT = "'<id> <ClassName>' per line, ids 1..K in order"
TRAIN_FORMAT = "'<ClassName>/<video>.avi <class id>' per line"
TEST_FORMAT = "'<ClassName>/<video>.avi' per line"


def check_split(split: int) -> int:
    if split not in SPLITS:
        raise ValueError(f"data.split must be 1, 2 or 3 (the official splits), got {split!r}")
    return int(split)


def read_class_index(path: Path, num_classes: int) -> list[str]:
    """Class names in label order from ``classInd.txt``; ids must run 1..K, K = ``num_classes``."""
    names: list[str] = []
    for lineno, line in read_text_lines(path):
        line = line.strip()  # the official file ends its lines with CRLF
        if not line:
            continue
        fields = line.split(maxsplit=1)
        if len(fields) != 2 or not fields[0].isdigit():
            raise DatasetFormatError(f"{path}:{lineno}: {line!r}; expected {CLASS_INDEX_FORMAT}")
        if int(fields[0]) != len(names) + 1:
            raise DatasetFormatError(f"{path}:{lineno}: id {fields[0]} where {len(names) + 1} was expected; {CLASS_INDEX_FORMAT}")
        names.append(fields[1].strip())
    if len(names) != num_classes:
        raise DatasetFormatError(f"{path}: {len(names)} classes for data.num_classes={num_classes}")
    return names


def read_ucf_list(path: Path, class_ids: dict[str, int], labelled: bool) -> list[tuple[str, int]]:
    """``(relative video path, label 0..K-1)`` of a train list (``labelled``: the 1-based id after the path) or a
    test list (the class is the folder). ``class_ids`` maps lower-cased class names to labels."""
    items = []
    for lineno, line in read_text_lines(path):
        line = line.strip()
        if not line:
            continue
        fields = line.split()
        want = 2 if labelled else 1
        if len(fields) != want:
            raise DatasetFormatError(f"{path}:{lineno}: {line!r}; expected {TRAIN_FORMAT if labelled else TEST_FORMAT}")
        rel = fields[0]
        folder = rel.split("/", 1)[0] if "/" in rel else ""
        from_folder = class_ids.get(folder.lower())
        if labelled:
            if not fields[1].isdigit() or not 1 <= int(fields[1]) <= len(class_ids):
                raise DatasetFormatError(f"{path}:{lineno}: class id {fields[1]!r} is not in 1..{len(class_ids)}")
            label = int(fields[1]) - 1
            if from_folder is not None and from_folder != label:
                raise DatasetFormatError(f"{path}:{lineno}: class id {fields[1]} but the video is in folder {folder!r}")
        elif from_folder is None:
            raise DatasetFormatError(f"{path}:{lineno}: folder {folder!r} of {rel!r} is not a class of {CLASS_INDEX}")
        items.append((rel, label if labelled else from_folder))
    if not items:
        raise DatasetFormatError(f"{path}: no videos listed")
    return items


def check_videos_exist(items: list[tuple[str, int]], list_file: Path, video_dir: Path) -> None:
    """A listed video that is not on disk (a partly unpacked archive, the wrong ``video_dir``) stops the run now,
    naming the list file and the first missing paths."""
    missing = [rel for rel, _ in items if not (video_dir / rel).is_file()]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise DatasetFormatError(f"{list_file}: {len(missing)} of {len(items)} listed videos are not in {video_dir}: {shown}")


class SplitVideoDataModule(ClipDataModule):
    """A benchmark of video files with official train/test splits (UCF101, HMDB51). Subclasses read a split's
    ``(relative path, label)`` pairs (``read_split``) and the class names. The test list serves as validation too."""

    def __init__(
        self,
        root: str,
        num_classes: int,
        split: int = 1,
        video_dir: str = VIDEO_DIR,
        split_dir: str = SPLIT_DIR,
        decoder: str = "auto",
        **clip_options: Any,
    ) -> None:
        super().__init__(root, num_classes, **clip_options)
        self.split = check_split(split)
        self.video_dir, self.split_dir = self.root / video_dir, self.root / split_dir
        self.decoder = check_decoder(decoder)

    def read_split(self, train: bool) -> list[tuple[str, int]]:
        raise NotImplementedError

    def split_files(self, train: bool) -> list[Path]:
        raise NotImplementedError

    def required_files(self, train: bool, test: bool) -> list[Path]:
        return self.split_files(True) + self.split_files(False) if train else self.split_files(False)

    def read_annotations(self, train: bool, test: bool) -> None:
        for split in ("train", "val") if train else ("test",):
            self.items(split)

    def read_items(self, split: str) -> list[tuple[str, int]]:
        items = self.read_split(train=split == "train")
        check_videos_exist(items, self.split_files(split == "train")[-1], self.video_dir)
        return [(str(self.video_dir / rel), label) for rel, label in items]

    def frame_loader(self, mode: str) -> WindowFrames:
        return WindowFrames(self.num_frames, self.num_frames * self.sampling_rate / self.target_fps, self.decoder)


class UCF101DataModule(SplitVideoDataModule):
    """UCF101 (see the module docstring); the clip options are ``ClipDataModule``'s."""

    def __init__(self, root: str, num_classes: int = 101, split_dir: str = SPLIT_DIR, **options: Any) -> None:
        super().__init__(root, num_classes, split_dir=split_dir, **options)

    def split_files(self, train: bool) -> list[Path]:
        name = f"{'train' if train else 'test'}list{self.split:02d}.txt"
        return [self.split_dir / CLASS_INDEX, self.split_dir / name]

    def missing_file_message(self, path: Path) -> str:
        return (
            f"UCF101 file not found: {path}\n  expected the official layout under data.root (see mvit_video/data/"
            f"ucf101.py): {self.video_dir.name}/<Class>/<video>.avi and {self.split_dir.name}/{{{CLASS_INDEX},"
            "trainlist0N.txt,testlist0N.txt} from UCF101TrainTestSplits-RecognitionTask.zip"
        )

    @functools.cached_property
    def class_names(self) -> dict[int, str]:
        return dict(enumerate(read_class_index(self.split_dir / CLASS_INDEX, self.num_classes)))

    def read_split(self, train: bool) -> list[tuple[str, int]]:
        ids = {name.lower(): i for i, name in self.class_names.items()}
        return read_ucf_list(self.split_files(train)[-1], ids, labelled=train)
