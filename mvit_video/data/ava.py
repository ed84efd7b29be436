"""AVA v2.1/v2.2 in the official layout (spec §4): frames at 30 fps, frame lists, box CSVs, exclusions.

    ROOT/frames/<video>/<video>_%06d.jpg
    ROOT/frame_lists/{train,val}.csv           header, then "original_video_id video_idx frame_id path labels"
    ROOT/annotations/ava_{train,val}_v2.2.csv  video,sec,x1,y1,x2,y2,action,person_id  (ground truth)
    ROOT/annotations/<detector boxes>.csv      video,sec,x1,y1,x2,y2,[action],score     (proposals)
    ROOT/annotations/ava_val_excluded_timestamps_v2.2.csv, ava_action_list_v2.2_for_activitynet_2019.pbtxt

A keyframe at second ``s`` is frame ``(s - 900) * 30`` of its list; a clip takes ``num_frames`` frames every
``sampling_rate`` around it (the keyframe at position num_frames/2), indices clamped to the video so every clip
has its full length. Boxes follow every resize, crop and flip (``torchvision.transforms.v2`` bounding boxes).

Evaluation has two test modes (the paper's Table A.2 reports both): ``center``, the short side resized to the crop
size and a centre crop (square); ``full``, the whole frame with its short side at the crop size and its long side
``floor(long * crop / short)`` (PySlowFast's ``cv2_transform.scale``: 320x240 -> 298x224), no crop. Full-resolution
clips of a batch must share a size, so their loader batches keyframes of one frame size (``SizeGroupedBatches``).
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from .annotations import Boxes, DatasetFormatError, match_proposals, read_boxes, read_frame_lists
from .base import SeededDataset, VideoDataModule
from .decoding import read_frames
from .transforms import finish_clip

FPS = 30
FIRST_SECOND = 900  # AVA videos are cut at 900 s; frame 0 of a list is second 900
TEST_MODES = ("center", "full")
BoxFile = tuple  # (file, is ground truth, score threshold[, min IoU with a ground-truth box of the same list])


def keyframe_clip(num_source: int, keyframe: int, num_frames: int, sampling_rate: int) -> list[int]:
    """``num_frames`` frame indices every ``sampling_rate`` around frame ``keyframe``, clamped to the video (so a
    clip at either end has its full length, unlike pytorchvideo's ``Ava``)."""
    span = num_frames * sampling_rate
    return [min(max(i, 0), num_source - 1) for i in range(keyframe - span // 2, keyframe + span // 2, sampling_rate)]


def read_box_files(annotations: Path, box_files: Sequence[BoxFile]) -> Boxes:
    """The merged ``{(video, second): {box: {action ids}}}`` of a split's box files. A detector file with a fourth
    value ``min_iou`` keeps only the boxes whose IoU with a ground-truth box of the list's ground-truth files is
    above it, with that box's labels (``annotations.match_proposals``; the paper's training proposals)."""
    loaded = [(f, read_boxes(annotations / f[0], bool(f[1]), float(f[2]))) for f in box_files]
    gt: dict = defaultdict(dict)
    for f, boxes in loaded:
        for key, box_map in boxes.items() if f[1] else ():
            for box, labels in box_map.items():
                gt[key].setdefault(box, set()).update(labels)
    merged: Boxes = defaultdict(dict)
    for f, boxes in loaded:
        if len(f) > 3 and f[3] is not None:
            if f[1]:
                raise ValueError(f"{f[0]}: a minimum IoU is for detector boxes, not for a ground-truth file")
            boxes = match_proposals(boxes, gt, float(f[3]))
        for key, box_map in boxes.items():
            for box, labels in box_map.items():
                merged[key].setdefault(box, set()).update(labels)
    return merged


class AVADataset(SeededDataset):
    """One sample per keyframe with at least one box. Train: short-side jitter, random crop, flip. Val/test:
    short side to the crop size, then a centre crop (``test_mode="center"``, square) or the whole frame
    (``"full"``, non-square; the backbone's rel-pos tables are resized to its grid)."""

    def __init__(
        self,
        root: str | Path,
        split: str,
        box_files: Sequence[tuple[str, bool, float]],
        num_classes: int,
        num_frames: int = 16,
        sampling_rate: int = 4,
        crop_size: int = 224,
        jitter_scales: Sequence[int] = (256, 320),
        mean: Sequence[float] = (0.45, 0.45, 0.45),
        std: Sequence[float] = (0.225, 0.225, 0.225),
        seconds: tuple[int, int] = (902, 1798),
        exclusions: str | None = None,
        gt_file: str | None = None,
        test_mode: str = "center",
    ) -> None:
        if test_mode not in TEST_MODES:
            raise ValueError(f"test_mode must be one of {TEST_MODES}, got {test_mode!r}")
        self.root = Path(root)
        self.test_mode = test_mode
        self.train = split == "train"
        self.frames = read_frame_lists(self.root / "frame_lists" / f"{split}.csv")
        self.num_frames, self.sampling_rate = num_frames, sampling_rate
        self.crop_size, self.jitter_scales = crop_size, tuple(jitter_scales)
        self.mean, self.std = list(mean), list(std)
        self.num_classes = num_classes
        excluded = _read_exclusions(self.root / "annotations" / exclusions) if exclusions else set()
        merged = read_box_files(self.root / "annotations", box_files)
        # Evaluation: ground truth is read on its own and returned beside the boxes to classify, so that
        # keyframes whose persons no proposal found still count their ground truth.
        self.gt = read_boxes(self.root / "annotations" / gt_file, True) if gt_file else {}
        for key in self.gt:
            merged.setdefault(key, {})
        lo, hi = seconds
        self.videos = sorted(self.frames)
        self.video_index = {v: i for i, v in enumerate(self.videos)}
        self.samples = [
            (video, sec, boxes)
            for (video, sec), boxes in sorted(merged.items())
            if video in self.frames and lo <= sec <= hi and (video, sec) not in excluded and (boxes or (video, sec) in self.gt)
        ]
        if not self.samples:
            raise DatasetFormatError(f"no keyframes with boxes for split {split!r} under {self.root}")

    def __len__(self) -> int:
        return len(self.samples)

    def frame_indices(self, video: str, sec: int) -> list[int]:
        return keyframe_clip(len(self.frames[video]), (sec - FIRST_SECOND) * FPS, self.num_frames, self.sampling_rate)

    def get(self, index: int) -> dict[str, Any]:
        video, sec, box_map = self.samples[index]
        paths = self.frames[video]
        frames = read_frames([self.root / "frames" / paths[i] for i in self.frame_indices(video, sec)])  # (T, C, H, W)
        h, w = frames.shape[-2:]
        norm_boxes, labels = self._box_tensors(box_map)
        if self.train:
            vid = tv_tensors.Video(frames)
            boxes = tv_tensors.BoundingBoxes(norm_boxes * torch.tensor([w, h, w, h]), format="XYXY", canvas_size=(h, w))
            short = int(torch.randint(self.jitter_scales[0], self.jitter_scales[1] + 1, ()).item())
            vid, boxes = TF.resize(vid, short, antialias=True), TF.resize(boxes, short)
            vid, boxes = v2.RandomCrop(self.crop_size)(vid, boxes)
            vid, boxes = v2.RandomHorizontalFlip()(vid, boxes)
            clip, boxes = _finish(vid, boxes, self.mean, self.std)
        else:
            clip, boxes = eval_clip(frames, norm_boxes, self.crop_size, self.mean, self.std, self.test_mode == "full")
        gt_boxes, gt_labels = self._box_tensors(self.gt.get((video, sec), {}))
        return {
            "video": clip,  # (C, T, H, W)
            "boxes": boxes,  # (N, 4) x1 y1 x2 y2 in input pixels
            "labels": labels,  # (N, num_classes) multi-hot
            "ori_boxes": norm_boxes,  # (N, 4) normalised, as in the CSVs
            "key": torch.tensor([self.video_index[video], sec]),
            "video_id": video,
            "gt_boxes": gt_boxes,  # (M, 4) normalised ground truth (evaluation datasets only)
            "gt_labels": gt_labels,  # (M, num_classes)
        }

    @functools.cache  # noqa: B019  one header read per video; the dataset lives as long as its loader
    def frame_size(self, video: str) -> tuple[int, int]:
        """``(height, width)`` of a video's frames, from its first frame's header (AVA's videos differ in size)."""
        from PIL import Image

        with Image.open(self.root / "frames" / self.frames[video][0]) as im:
            return im.height, im.width

    def _box_tensors(self, box_map: dict[tuple[float, ...], set[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        boxes = torch.tensor(list(box_map), dtype=torch.float32).reshape(-1, 4)  # (N, 4) in [0, 1]
        labels = torch.zeros(len(box_map), self.num_classes)
        for j, acts in enumerate(box_map.values()):
            for a in acts:
                if 1 <= a <= self.num_classes:
                    labels[j, a - 1] = 1.0
        return boxes, labels


def _read_exclusions(path: Path) -> set[tuple[str, int]]:
    """The ``(video, second)`` keyframes left out of evaluation, by the evaluator's reader (one copy of it)."""
    from ..metrics.ava_frame_map import read_exclusions

    return {(str(v), int(s)) for v, s in zip(*read_exclusions(path))}


def _finish(vid: tv_tensors.Video, boxes: tv_tensors.BoundingBoxes, mean, std) -> tuple[torch.Tensor, torch.Tensor]:
    """The normalised clip ``(C, T, H, W)`` and its boxes clamped to it."""
    return finish_clip(vid, mean, std), TF.clamp_bounding_boxes(boxes).as_subclass(torch.Tensor)


def eval_clip(
    frames: torch.Tensor, norm_boxes: torch.Tensor, crop_size: int, mean, std, full: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """The evaluation preprocessing: ``frames (T, C, H, W)`` uint8 and ``norm_boxes (N, 4)`` in [0, 1] ->
    normalised clip with the short side resized to ``crop_size`` (the long side to ``floor(long * crop / short)``,
    torchvision's rule, as PySlowFast's ``cv2_transform.scale``), then centre-cropped to ``(C, T, crop, crop)``, or
    with ``full`` the whole frame ``(C, T, H', W')``; and the boxes in its pixels, clamped to it."""
    h, w = frames.shape[-2:]
    boxes = tv_tensors.BoundingBoxes(norm_boxes * torch.tensor([w, h, w, h]), format="XYXY", canvas_size=(h, w))
    vid = TF.resize(tv_tensors.Video(frames), crop_size, antialias=True)
    boxes = TF.resize(boxes, crop_size)
    if not full:
        vid, boxes = TF.center_crop(vid, crop_size), TF.center_crop(boxes, crop_size)
    return _finish(vid, boxes, mean, std)


class SizeGroupedBatches(torch.utils.data.Sampler[list[int]]):
    """Evaluation batches of up to ``batch_size`` samples of one frame size, in dataset order within a size (a
    full-resolution batch must stack). Several processes each take every ``replicas``-th sample first, as the
    evaluation ``DistributedSampler`` does (without its padding: no sample is scored twice)."""

    def __init__(self, sizes: Sequence[tuple[int, int]], batch_size: int, replicas: int = 1, rank: int = 0) -> None:
        groups: dict[tuple[int, int], list[int]] = {}
        for i in range(rank, len(sizes), replicas):
            groups.setdefault(tuple(sizes[i]), []).append(i)
        self.batches = [idx[j : j + batch_size] for idx in groups.values() for j in range(0, len(idx), batch_size)]

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def ava_collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack clips; concatenate boxes with their batch index in front (``(K, 5)``), labels, original boxes
    and the (video index, second) of every box, for evaluation; ``video_ids``: the video id of every box (one per
    row of ``keys``), as the CSVs name it."""
    boxes = [torch.cat([torch.full((len(s["boxes"]), 1), float(i)), s["boxes"]], 1) for i, s in enumerate(samples)]
    return {
        "video": torch.stack([s["video"] for s in samples]),
        "boxes": torch.cat(boxes),
        "labels": torch.cat([s["labels"] for s in samples]),
        "ori_boxes": torch.cat([s["ori_boxes"] for s in samples]),
        "keys": torch.cat([s["key"].expand(len(s["boxes"]), 2) for s in samples]),
        "video_ids": [s["video_id"] for s in samples for _ in range(len(s["boxes"]))],
        "gt_boxes": torch.cat([s["gt_boxes"] for s in samples]),
        "gt_labels": torch.cat([s["gt_labels"] for s in samples]),
        "gt_keys": torch.cat([s["key"].expand(len(s["gt_boxes"]), 2) for s in samples]),
    }


class AVADataModule(VideoDataModule):
    """AVA in the official layout; ``synthetic`` (a dict of ``SyntheticAVASpec`` fields) writes one first.
    ``num_classes``: the detector's outputs (action ids 1..num_classes); ``class_names``: the label map's (the
    evaluated) classes. There is no test split: testing runs on the validation set."""

    collate_fn = staticmethod(ava_collate)

    def __init__(
        self,
        root: str,
        num_classes: int,
        train_boxes: Sequence[tuple[str, bool, float]] = (("ava_train_v2.2.csv", True, 0.0),),
        val_boxes: Sequence[tuple[str, bool, float]] = (("ava_val_predicted_boxes.csv", False, 0.8),),
        val_groundtruth: str = "ava_val_v2.2.csv",
        exclusions: str | None = "ava_val_excluded_timestamps_v2.2.csv",
        labelmap: str = "ava_action_list_v2.2_for_activitynet_2019.pbtxt",
        num_frames: int = 16,
        sampling_rate: int = 4,
        crop_size: int = 224,
        jitter_scales: Sequence[int] = (256, 320),
        mean: Sequence[float] = (0.45, 0.45, 0.45),
        std: Sequence[float] = (0.225, 0.225, 0.225),
        seconds: Sequence[int] = (902, 1798),
        batch_size: int = 8,
        num_workers: int = 4,
        synthetic: dict | None = None,
        test_mode: str = "center",
    ) -> None:
        super().__init__(root, batch_size, num_workers, synthetic=synthetic)
        if test_mode not in TEST_MODES:
            raise ValueError(f"data.test_mode must be one of {TEST_MODES}, got {test_mode!r}")
        self.num_classes, self.test_mode = num_classes, test_mode
        self.box_files = {"train": [tuple(b) for b in train_boxes], "val": [tuple(b) for b in val_boxes]}
        self.val_groundtruth, self.exclusions, self.labelmap = val_groundtruth, exclusions, labelmap
        self.kw = dict(
            num_frames=num_frames,
            sampling_rate=sampling_rate,
            crop_size=crop_size,
            jitter_scales=tuple(jitter_scales),
            mean=mean,
            std=std,
            seconds=tuple(seconds),
        )

    def write_synthetic(self, spec: dict[str, Any]) -> None:
        from .synthetic_ava import SyntheticAVASpec, make_synthetic_ava

        make_synthetic_ava(self.root, SyntheticAVASpec(**spec))

    def required_files(self, train: bool, test: bool) -> list[Path]:
        return [self.root / rel for rel in ("frame_lists/train.csv", "frame_lists/val.csv", f"annotations/{self.labelmap}")]

    def missing_file_message(self, path: Path) -> str:
        return f"AVA file not found: {path} (see spec §4.1 for the layout)"

    @functools.cached_property
    def class_names(self) -> dict[int, str]:
        """The label map ``{action id: name}`` (the evaluated classes), read once."""
        from ..metrics.ava_frame_map import read_labelmap

        return {int(k): v for k, v in read_labelmap(self.root / "annotations" / self.labelmap).items()}

    def metadata(self) -> dict[str, Any]:
        """Preprocessing a trained detector needs, stored in its checkpoints (``action_names``: the label map)."""
        return {
            "num_frames": self.kw["num_frames"],
            "sampling_rate": self.kw["sampling_rate"],
            "target_fps": FPS,
            "crop_size": self.kw["crop_size"],
            "mean": list(self.kw["mean"]),
            "std": list(self.kw["std"]),
            "action_names": dict(self.class_names),
        }

    def make_dataset(self, split: str) -> AVADataset:
        if split == "train":
            return AVADataset(self.root, "train", self.box_files["train"], self.num_classes, **self.kw)
        # val and test: the person detector's proposals to classify, ground truth returned beside them.
        return AVADataset(
            self.root,
            "val",
            self.box_files["val"],
            self.num_classes,
            exclusions=self.exclusions,
            gt_file=self.val_groundtruth,
            test_mode=self.test_mode,
            **self.kw,
        )

    def loader(self, split: str, train: bool = False) -> torch.utils.data.DataLoader:
        """Full-resolution evaluation batches keyframes of one frame size (``SizeGroupedBatches``); the rest as the
        base's loaders."""
        if train or self.test_mode != "full":
            return super().loader(split, train)
        from torch.utils.data import DataLoader

        from .sampling import init_worker, world

        ds: AVADataset = self.datasets[split]
        replicas, rank = world()
        batch_size = self.test_batch_size if split.startswith("test") else self.batch_size
        sampler = SizeGroupedBatches([ds.frame_size(video) for video, _, _ in ds.samples], batch_size, replicas, rank)
        return DataLoader(
            ds,
            batch_sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=self.collate_fn,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator(),
            worker_init_fn=functools.partial(init_worker, rank=rank) if self.num_workers > 0 else None,
        )
