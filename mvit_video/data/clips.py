"""Clip classification data (Kinetics format, SSv2): one clip dataset that takes a frame loader, and the
datamodule base with the clip options they share.

A frame loader turns one item's source (a video path, a list of frame paths) into the clip's frames
``(T, C, H, W)`` uint8: a window at a sampling rate for Kinetics (``kinetics.WindowFrames``), segments for SSv2
(``ssv2.SegmentFrames``). The dataset does the rest once: views (clips x crops) in test mode, unreadable videos,
the time-shuffle control, repeated augmentation, the transform.

``source=stream``: the same items read from shards (``uri``, made by ``scripts/make_shards.py``; ``streaming.py``):
the manifest lists them in the files' order, and each file's bytes go to the same frame loader, so a streamed
dataset gives the same samples as the files, index for index and seed for seed.

Unreadable videos: in training a sample whose file cannot be decoded is replaced by a random other one; in val and
test it is not (it would be scored twice) but comes back marked ``valid=False``. Every sample carries the names of
the files that failed for it (``unreadable``), which the task counts once per file across workers and processes.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, default_collate

from .base import SeededDataset, VideoDataModule
from .streaming import StorageError
from .transforms import ClipTransform

log = logging.getLogger(__name__)

# (source, clip index, number of clips, generator or None in test mode) -> frames (T, C, H, W) uint8
FrameLoader = Callable[[Any, int, int, "torch.Generator | None"], torch.Tensor]


def source_name(source: Any) -> str:
    """A video's name in warnings and counts: its path, or the folder of a frame list."""
    if isinstance(source, (list, tuple)):
        return str(Path(source[0]).parent) if source else "<empty frame list>"
    return str(source)


class ClipDataset(SeededDataset):
    """Map-style clip dataset over ``(source, label)`` items (DistributedSampler shards it). Test mode yields every
    (clip, crop) view of every video: ``len = videos x num_clips x num_crops``, view id -> clip = id // crops,
    crop = id % crops."""

    def __init__(
        self,
        items: Sequence[tuple[Any, int]],
        load_frames: FrameLoader,
        transform: ClipTransform,
        num_frames: int,
        mode: str = "train",
        num_clips: int = 1,
        num_crops: int = 1,
        max_retries: int = 10,
        time_shuffle: bool = False,
        num_samples: int = 1,
    ) -> None:
        self.items = list(items)
        self.load_frames = load_frames
        self.transform = transform
        self.num_frames = num_frames
        self.mode = mode
        self.num_clips, self.num_crops = (num_clips, num_crops) if mode == "test" else (1, 1)
        self.max_retries = max_retries
        self.time_shuffle = time_shuffle  # a control: destroys the order of frames, not their content
        self.num_samples = num_samples if mode == "train" else 1  # repeated augmentation (AUG.NUM_SAMPLE)
        self._warned: set[str] = set()  # unreadable files already named in a warning by this process

    def __len__(self) -> int:
        return len(self.items) * self.num_clips * self.num_crops

    def get(self, index: int) -> dict[str, Any]:
        """A sample, and under ``unreadable`` the names of the files that failed for it. In training an unreadable
        video is replaced by a random other one; in val/test it is not (a replacement would be scored twice): the
        sample comes back with ``valid=False`` and a blank clip, for the task to leave out and count."""
        unreadable: list[str] = []
        views = self.num_clips * self.num_crops
        for _ in range(self.max_retries + 1):
            video_idx, view = divmod(index, views)
            source, label = self.items[video_idx]
            clip_idx, crop_idx = divmod(view, self.num_crops)
            rng = None
            if self.mode != "test":
                rng = torch.Generator().manual_seed(torch.randint(0, 2**62, ()).item())
            try:
                frames = self.load_frames(source, clip_idx, self.num_clips, rng)  # (T, C, H, W) uint8
            except StorageError:  # the shards, not this video: stop the run (no shrunk test set, no new order)
                raise
            except Exception as e:  # noqa: BLE001  any decoder failure: skip this file
                name = source_name(source)
                unreadable.append(name)
                if name not in self._warned:  # once per file and process, not once per view or retry
                    self._warned.add(name)
                    log.warning("unreadable video %s (%s: %s)", name, type(e).__name__, e)
                if self.mode != "train":
                    return self._sample(self.blank_clip(), label, video_idx, view, unreadable, valid=False)
                index = int(torch.randint(len(self), ()))
                continue
            if self.time_shuffle:
                frames = frames[torch.randperm(frames.shape[0], generator=torch.Generator().manual_seed(index))]
            # One decoded clip, num_samples independent augmentations of it (SlowFast's NUM_SAMPLE).
            clips = [self.transform(frames, crop_idx, self.num_crops) for _ in range(self.num_samples)]
            video = clips[0] if self.num_samples == 1 else torch.stack(clips)  # (C, T, H, W) or (S, C, T, H, W)
            return self._sample(video, label, video_idx, view, unreadable, valid=True)
        raise RuntimeError(f"{self.max_retries + 1} videos in a row could not be decoded; last: {source_name(source)}")

    @staticmethod
    def _sample(video: torch.Tensor, label: int, video_idx: int, view: int, unreadable: list[str], valid: bool) -> dict[str, Any]:
        return {"video": video, "label": label, "video_index": video_idx, "view": view, "valid": valid, "unreadable": unreadable}

    def blank_clip(self) -> torch.Tensor:
        """Zeros shaped like a val/test clip ``(C, T, crop, crop)``, in the place of an unreadable video."""
        return torch.zeros(3, self.num_frames, self.transform.crop_size, self.transform.crop_size)


def collate_clips(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """``default_collate``, then repeated augmentation ``(B, S, C, T, H, W)`` flattened to ``B*S`` clips, the other
    fields repeated to match (the two clips of a video sit next to each other, as in SlowFast). ``unreadable``
    becomes one list of file names for the whole batch."""
    unreadable = [name for sample in batch for name in sample.pop("unreadable", ())]
    out = default_collate(batch)
    if out["video"].ndim == 6:
        s = out["video"].shape[1]
        out = {k: v.flatten(0, 1) if k == "video" else torch.repeat_interleave(v, s, 0) for k, v in out.items()}
    out["unreadable"] = unreadable
    return out


TIME_SHUFFLED = "test_time_shuffled"  # the test split again, every clip's frames shuffled in time


class ClipDataModule(VideoDataModule):
    """Training (random clip), validation and multi-view testing of a clip classifier. Subclasses give the items
    of a split (``read_items``), the frame loader of a mode (``frame_loader``), their files and class names.

    ``batch_size`` counts videos; with repeated augmentation a training batch has ``batch_size x num_samples``
    clips. ``rand_augment`` (a timm string such as ``rand-m7-n4-mstd0.5-inc1``) and ``erase_prob`` apply to
    training clips only. ``time_shuffle_control``: ``test_dataloader()`` returns ``[test, test with every clip's
    frames shuffled in time]`` (a control for how much the model uses motion)."""

    dataset_class: type[ClipDataset] = ClipDataset  # a subclass's own (Charades: clip labels from the span)

    collate_fn = staticmethod(collate_clips)

    def __init__(
        self,
        root: str,
        num_classes: int,
        num_frames: int = 16,
        sampling_rate: int = 4,
        target_fps: int = 30,
        crop_size: int = 224,
        train_jitter_scales: Sequence[int] = (256, 320),
        test_short_side: int | None = None,
        random_resized_crop: bool = True,
        flip: bool = True,
        mean: Sequence[float] = (0.45, 0.45, 0.45),
        std: Sequence[float] = (0.225, 0.225, 0.225),
        test_num_clips: int = 5,
        test_num_crops: int = 1,
        batch_size: int = 8,
        test_batch_size: int | None = None,
        num_workers: int = 4,
        max_retries: int = 10,
        synthetic: dict | None = None,
        rand_augment: str | None = None,
        erase_prob: float = 0.0,
        num_samples: int = 1,
        inverse_uniform_jitter: bool = False,
        time_shuffle_control: bool = False,
        source: str = "files",
        uri: str | None = None,
        cache_dir: str | None = None,
        storage_options: dict | None = None,
    ) -> None:
        super().__init__(root, batch_size, num_workers, test_batch_size, synthetic)
        self.source, self.streaming = source, source == "stream"
        if self.streaming and not uri:
            raise ValueError(
                "data.source=stream needs data.uri=URI (s3://bucket/prefix or a folder made by scripts/make_shards.py)"
            )
        self.uri, self.cache_dir = uri, cache_dir
        self.storage_options = dict(storage_options) if storage_options else None
        self.num_classes = num_classes
        self.num_frames, self.sampling_rate, self.target_fps = num_frames, sampling_rate, target_fps
        self.crop_size = crop_size
        self.mean, self.std = list(mean), list(std)
        self.test_short_side = test_short_side or train_jitter_scales[0]
        self.tf_kwargs = dict(
            crop_size=crop_size,
            jitter_scales=tuple(train_jitter_scales),
            test_short_side=self.test_short_side,
            mean=mean,
            std=std,
            rand_augment=rand_augment,
            erase_prob=erase_prob,
            inverse_uniform_jitter=inverse_uniform_jitter,
            random_resized_crop=random_resized_crop,
        )
        self.flip = flip
        self.num_samples = num_samples
        self.test_num_clips, self.test_num_crops = test_num_clips, test_num_crops
        self.max_retries = max_retries
        self.time_shuffle_control = time_shuffle_control
        self._items: dict[str, list[tuple[Any, int]]] = {}  # read_items, parsed once per split

    def read_items(self, split: str) -> list[tuple[Any, int]]:
        """``(source, label)`` pairs of a split (``train``, ``val`` or ``test``)."""
        raise NotImplementedError

    def items(self, split: str) -> list[tuple[Any, int]]:
        """``read_items(split)``, parsed once: ``check_files`` reads the splits before ``setup`` builds on them.
        Streaming: the same items as shard samples, from the manifest."""
        if split not in self._items:
            if self.streaming:
                from .streaming import stream_items

                self._items[split] = stream_items(self.manifest, split, self.num_classes)
            else:
                self._items[split] = self.read_items(split)
        return self._items[split]

    @functools.cached_property
    def manifest(self):
        """The shards' ``streaming.Manifest`` (``source=stream``), read once."""
        from .streaming import read_manifest

        return read_manifest(self.uri, self.storage_options)

    def stream_class_names(self) -> dict[int, str]:
        """Class names from the shards' manifest, their count checked against ``num_classes``."""
        names = self.manifest.class_names
        if len(names) != self.num_classes:
            raise ValueError(f"{self.uri}/manifest.json lists {len(names)} classes, but data.num_classes={self.num_classes}")
        return dict(enumerate(names))

    def prepare_data(self) -> None:
        """Streaming: nothing to write (a synthetic spec is for the files under ``root``)."""
        if not self.streaming:
            super().prepare_data()

    def check_files(self, train: bool = True, test: bool = True) -> None:
        """Streaming: the manifest instead of the annotation files (each split in use, every label checked)."""
        if not self.streaming:
            return super().check_files(train, test)
        for split in (["train", "val"] if train else []) + (["test"] if test else []):
            self.items(split)
        self.class_names  # noqa: B018  read and checked now

    def frame_loader(self, mode: str) -> FrameLoader:
        """How a clip's frames are read in ``mode`` (``train``, ``val`` or ``test``)."""
        raise NotImplementedError

    def splits(self, stage: str | None) -> tuple[str, ...]:
        splits = super().splits(stage)
        return splits + (TIME_SHUFFLED,) if self.time_shuffle_control and "test" in splits else splits

    def make_dataset(self, split: str) -> ClipDataset:
        mode = "test" if split.startswith("test") else split
        tf = ClipTransform(mode, flip=self.flip and mode != "test", **self.tf_kwargs)
        load = self.frame_loader(mode)
        if self.streaming:
            from .streaming import StreamFrames

            load = StreamFrames(load, self.cache_dir, self.storage_options)
        return self.dataset_class(
            self.items(mode),
            load,
            tf,
            self.num_frames,
            mode,
            self.test_num_clips,
            self.test_num_crops,
            self.max_retries,
            time_shuffle=split == TIME_SHUFFLED,
            num_samples=self.num_samples,
            **self.dataset_kwargs(mode),
        )

    def dataset_kwargs(self, mode: str) -> dict[str, Any]:
        """What a subclass's ``dataset_class`` takes besides ``ClipDataset``'s arguments (Charades: each video's
        actions)."""
        return {}

    def test_dataloader(self) -> DataLoader | list[DataLoader]:
        if self.time_shuffle_control:
            return [self.loader("test"), self.loader(TIME_SHUFFLED)]
        return self.loader("test")

    def metadata(self) -> dict[str, Any]:
        """Preprocessing a trained model needs, stored in its checkpoints (``class_names``: in label order)."""
        return {
            "num_frames": self.num_frames,
            "sampling_rate": self.sampling_rate,
            "target_fps": self.target_fps,
            "crop_size": self.crop_size,
            "mean": self.mean,
            "std": self.std,
            "class_names": list(self.class_names.values()),
            "test_num_clips": self.test_num_clips,
            "test_num_crops": self.test_num_crops,
            "test_short_side": self.test_short_side,
        }
