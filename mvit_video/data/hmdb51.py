"""HMDB51 in its official layout (``hmdb51_org.rar``, its per-class ``.rar`` files unpacked, and
``test_train_splits.rar``): three splits of 70 training and 30 test videos per class.

Layout under ``root``::

    hmdb51_org/brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi
    testTrainMulti_7030_splits/brush_hair_test_split{1,2,3}.txt   "April_09_brush_hair_u_nm_np1_ba_goo_0.avi 1 "

A split file lists every video of its class with a flag: 1 = train, 2 = test, 0 = in neither (the official lines end
with a space). The class is in the file name (class names hold underscores: ``fall_floor``); labels are the class
names in sorted order (torchvision's and mmaction2's order). Accuracy, views and the 3-split mean are UCF101's
(``ucf101.SplitVideoDataModule``).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from .annotations import DatasetFormatError, read_text_lines
from .ucf101 import SplitVideoDataModule

VIDEO_DIR = "hmdb51_org"
SPLIT_DIR = "testTrainMulti_7030_splits"
SPLIT_SUFFIX = "_test_split{split}.txt"
FLAGS = {"0": None, "1": "train", "2": "test"}
LINE_FORMAT = "'<video>.avi <flag>' per line, flag 1 = train, 2 = test, 0 = unused"


def hmdb_classes(split_dir: Path, split: int) -> list[str]:
    """Class names (sorted) from the split files' names ``<class>_test_split<split>.txt``."""
    suffix = SPLIT_SUFFIX.format(split=split)
    return sorted(p.name[: -len(suffix)] for p in split_dir.glob(f"*{suffix}"))


def read_hmdb_split(path: Path, label: int, part: str) -> list[tuple[str, int]]:
    """``(class/video.avi, label)`` of the videos flagged ``part`` (``train`` or ``test``) in one class's file."""
    cls = path.name[: path.name.rindex("_test_split")]
    items = []
    for lineno, line in read_text_lines(path):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in FLAGS:
            raise DatasetFormatError(f"{path}:{lineno}: {line.strip()!r}; expected {LINE_FORMAT}")
        if FLAGS[fields[1]] == part:
            items.append((f"{cls}/{fields[0]}", label))
    return items


class HMDB51DataModule(SplitVideoDataModule):
    """HMDB51 (see the module docstring); the clip options are ``ClipDataModule``'s."""

    def __init__(
        self, root: str, num_classes: int = 51, video_dir: str = VIDEO_DIR, split_dir: str = SPLIT_DIR, **options: Any
    ) -> None:
        super().__init__(root, num_classes, video_dir=video_dir, split_dir=split_dir, **options)

    def split_files(self, train: bool) -> list[Path]:
        suffix = SPLIT_SUFFIX.format(split=self.split)
        return [self.split_dir / f"{name}{suffix}" for name in self.class_names.values()]

    def required_files(self, train: bool, test: bool) -> list[Path]:
        return self.split_files(train)  # one file per class holds both parts

    def missing_file_message(self, path: Path) -> str:
        return f"HMDB51 file not found: {path}"

    @functools.cached_property
    def class_names(self) -> dict[int, str]:
        """From the split files' names; their count must be ``num_classes``."""
        names = hmdb_classes(self.split_dir, self.split)
        if len(names) != self.num_classes:
            pattern = self.split_dir / f"*{SPLIT_SUFFIX.format(split=self.split)}"
            raise DatasetFormatError(
                f"{pattern}: {len(names)} class split files for data.num_classes={self.num_classes}; expected the "
                f"official layout under data.root (see mvit_video/data/hmdb51.py): {SPLIT_DIR}/<class>"
                f"{SPLIT_SUFFIX} and {VIDEO_DIR}/<class>/<video>.avi"
            )
        return dict(enumerate(names))

    def read_split(self, train: bool) -> list[tuple[str, int]]:
        part = "train" if train else "test"
        items = [item for label, path in enumerate(self.split_files(train)) for item in read_hmdb_split(path, label, part)]
        if not items:
            raise DatasetFormatError(f"{self.split_dir}: no video flagged {part} in split {self.split}")
        return items

    def read_items(self, split: str) -> list[tuple[str, int]]:
        items = self.read_split(train=split == "train")
        missing = [rel for rel, _ in items if not (self.video_dir / rel).is_file()]
        if missing:  # name the class's split file that lists the first missing video
            cls = missing[0].split("/", 1)[0]
            path = self.split_dir / f"{cls}{SPLIT_SUFFIX.format(split=self.split)}"
            raise DatasetFormatError(
                f"{path}: {len(missing)} listed videos are not in {self.video_dir}, first {missing[0]} (unpack each "
                "class's .rar inside hmdb51_org)"
            )
        return [(str(self.video_dir / rel), label) for rel, label in items]
