"""Charades (multi-label, 157 classes) in its official layout, from the 480p videos or the 24 fps RGB frames.

Layout under ``root``::

    Charades_v1_classes.txt              "c000 Holding some clothes"
    Charades_v1_train.csv, _test.csv     id,subject,scene,quality,relevance,verified,script,objects,descriptions,
                                         actions,length; actions = "c092 11.90 21.20;c147 0.00 12.60" or empty
    Charades_v1_480/ID.mp4               source: video
    Charades_v1_rgb/ID/ID-000001.jpg     source: frames (24 fps, frame i shown from (i-1)/24 s)

Labels: a training clip's target is the set of actions whose interval overlaps the clip's time span (SlowFast's
Charades loader: the union of the per-frame labels of the frames from the clip's first to its last); so a clip
outside every action has no positive. Test views carry the video's actions (the official evaluator's ground truth)
and are scored by the maximum over views (``metrics.charades.CharadesMAP``). ``Charades_v1_test.csv`` is the
validation set of the papers; it serves as val and test. Frame sampling from frames is SlowFast's
``get_seq_frames``: ``num_frames`` frames ``sampling_rate`` apart, a random start in training, evenly spaced starts
over the test clips; from videos it is the Kinetics window (``decoding.decode_clip``) at ``target_fps``.
"""

from __future__ import annotations

import csv
import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .annotations import DatasetFormatError, read_text_lines
from .clips import ClipDataModule, ClipDataset
from .decoding import check_decoder, clip_start, decode_clip, frame_timeline, read_frames

CLASSES_FILE = "Charades_v1_classes.txt"
SPLIT_FILES = {"train": "Charades_v1_train.csv", "test": "Charades_v1_test.csv"}
VIDEO_DIR = "Charades_v1_480"
FRAME_DIR = "Charades_v1_rgb"
FRAME_FPS = 24  # the official RGB frames
ACTIONS_FORMAT = "'cNNN start end' items separated by ';' (seconds), or empty"

Action = tuple[int, float, float]  # (class, start s, end s)


def read_charades_classes(path: Path, num_classes: int) -> list[str]:
    """Names in id order from ``Charades_v1_classes.txt`` (``c000 Holding some clothes``); ids must run 0..K-1."""
    names: list[str] = []
    for lineno, line in read_text_lines(path):
        line = line.strip()
        if not line:
            continue
        cid, _, name = line.partition(" ")
        if cid != f"c{len(names):03d}" or not name.strip():
            raise DatasetFormatError(f"{path}:{lineno}: {line!r}; expected 'c{len(names):03d} <class name>' (ids in order)")
        names.append(name.strip())
    if len(names) != num_classes:
        raise DatasetFormatError(f"{path}: {len(names)} classes for data.num_classes={num_classes}")
    return names


def parse_actions(text: str, where: str, num_classes: int) -> list[Action]:
    """``c092 11.90 21.20;c147 0.00 12.60`` -> ``[(92, 11.9, 21.2), (147, 0.0, 12.6)]``; ``where`` (file:line) names
    the row in errors."""
    actions = []
    for item in filter(None, (a.strip() for a in text.split(";"))):
        parts = item.split()
        try:
            if len(parts) != 3 or parts[0][0] != "c":
                raise ValueError
            action = (int(parts[0][1:]), float(parts[1]), float(parts[2]))
        except ValueError:
            raise DatasetFormatError(f"{where}: action {item!r}; expected {ACTIONS_FORMAT}") from None
        if not 0 <= action[0] < num_classes:
            raise DatasetFormatError(f"{where}: class {parts[0]} is out of range c000..c{num_classes - 1:03d}")
        actions.append(action)
    return actions


def read_charades_csv(path: Path, num_classes: int) -> list[tuple[str, list[Action]]]:
    """``(video id, actions)`` of every row of ``Charades_v1_{train,test}.csv`` (quoted fields may hold commas and
    line breaks; errors name the row's line)."""
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"id", "actions"} - set(reader.fieldnames or ())
        if missing:
            raise DatasetFormatError(f"{path}:1: no column {', '.join(sorted(missing))} in the header {reader.fieldnames}")
        rows = []
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if not row["id"] or row["actions"] is None:
                raise DatasetFormatError(f"{where}: a row without id or actions: {row}")
            rows.append((row["id"], parse_actions(row["actions"], where, num_classes)))
    if not rows:
        raise DatasetFormatError(f"{path}: no videos listed")
    return rows


def multi_hot(actions: Sequence[Action], num_classes: int, span: tuple[float, float] | None = None) -> torch.Tensor:
    """``(K,)`` float 0/1: the classes of ``actions``, or with ``span = (t0, t1)`` of those whose interval overlaps
    ``[t0, t1)`` (``start < t1`` and ``end > t0``)."""
    target = torch.zeros(num_classes)
    for label, start, end in actions:
        if span is None or (start < span[1] and end > span[0]):
            target[label] = 1.0
    return target


def seq_frames(
    num_source: int, num_frames: int, rate: int, clip_idx: int, num_clips: int, rng: torch.Generator | None
) -> list[int]:
    """SlowFast's Charades ``get_seq_frames``: a random start (train) or the ``clip_idx``-th of ``num_clips`` evenly
    spaced starts (test), then ``num_frames`` indices ``rate`` apart, clamped to the video."""
    clip_length = (num_frames - 1) * rate + 1
    if rng is not None:
        low, high = sorted((0, num_source - clip_length))
        start = int(torch.randint(low, high + 1, (), generator=rng))
    else:
        gap = max(num_source - clip_length, 0) / max(num_clips - 1, 1)
        start = round(gap * clip_idx) if num_clips > 1 else max(num_source - clip_length, 0) // 2
    return [max(min(start + i * rate, num_source - 1), 0) for i in range(num_frames)]


@dataclass
class CharadesFrames:
    """Frame loader over a video id's frame folder or video file; ``last_span`` holds the seconds the last clip it
    loaded covers (read right after the load by ``CharadesClipDataset``, in the same process). For a video the window
    is drawn again from the same generator state on our timeline's duration; decord measures the duration itself,
    so with ``decoder=decord`` the span can differ from the frames' by a fraction of a frame."""

    num_frames: int
    sampling_rate: int
    target_fps: float
    decoder: str
    last_span: tuple[float, float] = field(default=(0.0, 0.0), compare=False)

    def __call__(self, source: str, clip_idx: int, num_clips: int, rng: torch.Generator | None) -> torch.Tensor:
        if os.path.isdir(source):
            names = sorted(n for n in os.listdir(source) if n.lower().endswith(".jpg"))
            if not names:
                raise FileNotFoundError(f"no .jpg frames in {source}")
            idx = seq_frames(len(names), self.num_frames, self.sampling_rate, clip_idx, num_clips, rng)
            frames = read_frames([os.path.join(source, names[i]) for i in idx])  # (T, C, H, W)
            self.last_span = (idx[0] / FRAME_FPS, (idx[-1] + 1) / FRAME_FPS)
            return frames
        span = self.num_frames * self.sampling_rate / self.target_fps
        state = rng.get_state() if rng is not None else None  # the window decode_clip draws, drawn again below
        frames = decode_clip(source, self.num_frames, span, clip_idx, num_clips, rng, self.decoder)  # (T, C, H, W)
        again = torch.Generator().set_state(state) if state is not None else None
        start = clip_start(frame_timeline(source).duration, span, clip_idx, num_clips, again)
        self.last_span = (start, start + span)
        return frames


class CharadesClipDataset(ClipDataset):
    """``ClipDataset`` whose training samples carry the clip's labels (``multi_hot`` over the clip's span); val and
    test samples keep the video's labels (the items' label)."""

    def __init__(self, *args: Any, actions: Sequence[list[Action]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.actions = list(actions)

    def get(self, index: int) -> dict[str, Any]:
        sample = super().get(index)
        if self.mode == "train" and sample["valid"]:
            actions = self.actions[sample["video_index"]]
            sample["label"] = multi_hot(actions, len(sample["label"]), self.load_frames.last_span)
        return sample


class CharadesDataModule(ClipDataModule):
    """Charades (see the module docstring); the clip options are ``ClipDataModule``'s. ``source``: ``video``
    (``Charades_v1_480``) or ``frames`` (``Charades_v1_rgb``)."""

    dataset_class = CharadesClipDataset

    def __init__(
        self,
        root: str,
        num_classes: int = 157,
        source: str = "frames",
        video_dir: str = VIDEO_DIR,
        frame_dir: str = FRAME_DIR,
        decoder: str = "auto",
        **clip_options: Any,
    ) -> None:
        if source not in ("frames", "video"):
            raise ValueError(f"source must be 'frames' or 'video', got {source!r}")
        super().__init__(root, num_classes, **clip_options)
        self.source, self.video_dir, self.frame_dir = source, self.root / video_dir, self.root / frame_dir
        self.decoder = check_decoder(decoder)
        self._actions: dict[str, list[list[Action]]] = {}

    def required_files(self, train: bool, test: bool) -> list[Path]:
        return [self.root / CLASSES_FILE] + [self.root / SPLIT_FILES[s] for s in (("train", "test") if train else ("test",))]

    def missing_file_message(self, path: Path) -> str:
        return (
            f"Charades file not found: {path}\n  expected the official layout under data.root (see mvit_video/data/"
            f"charades.py): {CLASSES_FILE}, {SPLIT_FILES['train']}, {SPLIT_FILES['test']} and {VIDEO_DIR}/ID.mp4 "
            f"(data.source=video) or {FRAME_DIR}/ID/ID-000001.jpg (data.source=frames)"
        )

    def read_annotations(self, train: bool, test: bool) -> None:
        for split in ("train", "val") if train else ("test",):
            self.items(split)

    @functools.cached_property
    def class_names(self) -> dict[int, str]:
        return dict(enumerate(read_charades_classes(self.root / CLASSES_FILE, self.num_classes)))

    def _source(self, vid: str) -> str:
        return str(self.frame_dir / vid if self.source == "frames" else self.video_dir / f"{vid}.mp4")

    def read_items(self, split: str) -> list[tuple[str, torch.Tensor]]:
        name = "train" if split == "train" else "test"
        rows = read_charades_csv(self.root / SPLIT_FILES[name], self.num_classes)
        missing = [vid for vid, _ in rows if not os.path.exists(self._source(vid))]
        if missing:
            where = self.frame_dir if self.source == "frames" else self.video_dir
            raise DatasetFormatError(
                f"{self.root / SPLIT_FILES[name]}: {len(missing)} of {len(rows)} videos are not in {where} (first: "
                f"{missing[0]}); data.source={self.source}"
            )
        self._actions[split] = [actions for _, actions in rows]
        return [(self._source(vid), multi_hot(actions, self.num_classes)) for vid, actions in rows]

    def frame_loader(self, mode: str) -> CharadesFrames:
        return CharadesFrames(self.num_frames, self.sampling_rate, self.target_fps, self.decoder)

    def dataset_kwargs(self, mode: str) -> dict[str, Any]:
        return {"actions": self._actions[mode]}
