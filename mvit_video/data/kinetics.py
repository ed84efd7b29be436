"""Kinetics-400/600/700 (and any dataset in that format): a datamodule over the CSV lists, clips decoded as a
window of frames at a sampling rate.

Layout (spec §6.1): ``ROOT/{train,val,test}.csv``, UTF-8, one video per line, ``path label`` separated by a
space, the label being the last field (so paths may hold spaces: every Kinetics class name does); also accepted:
``path fn label`` and ``path`` alone (label 0). Relative paths are joined to ``path_prefix`` (default: ``ROOT``).
Optional ``ROOT/classnames.txt``: one class name per line, in label order. ``check_files`` reads them all before
training starts (the readers are in ``annotations.py``; unreadable videos are handled by ``clips.ClipDataset``).
``source=stream uri=s3://bucket/prefix``: the same items from shards (``streaming.py``, ``scripts/make_shards.py``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .annotations import CSV_FORMAT, read_classnames, read_video_csv
from .clips import ClipDataModule
from .decoding import check_decoder, decode_clip


@dataclass(frozen=True)
class WindowFrames:
    """Frame loader: ``num_frames`` frames of a window of ``span`` seconds (random in train/val, clip
    ``clip_idx`` of ``num_clips`` evenly spaced ones in test)."""

    num_frames: int
    span: float  # seconds covered by a clip: num_frames x sampling_rate / target_fps
    decoder: str

    def __call__(self, path: str, clip_idx: int, num_clips: int, rng: torch.Generator | None) -> torch.Tensor:
        return decode_clip(path, self.num_frames, self.span, clip_idx, num_clips, rng, self.decoder)  # (T, C, H, W)


class KineticsDataModule(ClipDataModule):
    """Kinetics-format data; the clip options are ``ClipDataModule``'s. ``decoder``: see ``decoding.DECODERS``.
    ``source``: ``files`` (the CSVs and videos under ``root``) or ``stream`` (shards at ``uri``)."""

    def __init__(
        self,
        root: str,
        num_classes: int,
        decoder: str = "auto",
        path_prefix: str | None = None,
        train_csv: str = "train.csv",
        val_csv: str = "val.csv",
        test_csv: str = "test.csv",
        **clip_options: Any,
    ) -> None:
        if clip_options.get("source", "files") not in ("files", "stream"):
            raise ValueError(f"source must be 'files' or 'stream', got {clip_options['source']!r}")
        super().__init__(root, num_classes, **clip_options)
        self.decoder = check_decoder(decoder)
        self.path_prefix = Path(path_prefix) if path_prefix else self.root
        self.csvs = {"train": train_csv, "val": val_csv, "test": test_csv}

    def write_synthetic(self, spec: dict[str, Any]) -> None:
        from .synthetic import SyntheticSpec, make_synthetic_kinetics

        make_synthetic_kinetics(self.root, SyntheticSpec(num_classes=self.num_classes, **spec))

    def _used(self, train: bool, test: bool) -> list[str]:
        return (["train", "val"] if train else []) + (["test"] if test else [])

    def required_files(self, train: bool, test: bool) -> list[Path]:
        return [self.root / self.csvs[split] for split in self._used(train, test)]

    def missing_file_message(self, path: Path) -> str:
        split = next(s for s, name in self.csvs.items() if self.root / name == path)
        return (
            f"{split} annotation file not found: {path}\n"
            f"  expected {CSV_FORMAT}.\n"
            f"  Set data.root=DIR to where your dataset is, or make the CSVs from a folder-per-class tree of\n"
            f"  videos: python scripts/prepare_kinetics.py VIDEO_DIR --out {self.root}"
        )

    def read_annotations(self, train: bool, test: bool) -> None:
        """Every line of every split in use: a malformed line or an out-of-range label stops the run now."""
        for split in self._used(train, test):
            self.items(split)

    def read_items(self, split: str) -> list[tuple[str, int]]:
        return read_video_csv(self.root / self.csvs[split], self.num_classes, prefix=self.path_prefix)

    def frame_loader(self, mode: str) -> WindowFrames:
        return WindowFrames(self.num_frames, self.num_frames * self.sampling_rate / self.target_fps, self.decoder)

    @functools.cached_property
    def class_names(self) -> dict[int, str]:
        """``classnames.txt`` (its count checked against ``num_classes``), or the label ids as names; read once.
        Streaming: the names the shards' manifest carries."""
        if self.streaming:
            return self.stream_class_names()
        path = self.root / "classnames.txt"
        names = read_classnames(path, self.num_classes) if path.is_file() else [str(i) for i in range(self.num_classes)]
        return dict(enumerate(names))
