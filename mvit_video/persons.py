"""Person boxes for the AVA demo on raw video: a detector interface, a torchvision adapter and an IoU tracker.

    detector = TorchvisionPersonDetector("fasterrcnn_resnet50_fpn_v2", "weights.pth", score_threshold=0.8)
    per_frame = detector(frames)            # frames (N, C, H, W) uint8 -> [(boxes (K, 4) in [0, 1], scores (K,)), ...]
    tracker = IoUTracker(min_iou=0.3, max_age=2)
    ids = tracker.update(per_frame[0][0])   # one id per box, stable across keyframes

A person detector is anything that maps frames to boxes and scores (``PersonDetector``): a torchvision detection
model with its weights from a local file (nothing is downloaded), or a plain callable. ``ColourBoxDetector`` is
such a callable for synthetic videos only (it finds rectangles of known colours); it stands in for a trained
person detector in the tests and on the synthetic demo video, it does not find people.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

COCO_PERSON = 1  # the person label of torchvision's COCO detection models (91 classes, 0 is background)
PERSON_SCORE = 0.8  # test-time person boxes with score >= 0.8, as the AVA data reader keeps proposals (SlowFast's)

FrameBoxes = tuple[torch.Tensor, torch.Tensor]  # (K, 4) normalised x1 y1 x2 y2, (K,) scores


@runtime_checkable
class PersonDetector(Protocol):
    """Frames ``(N, C, H, W)`` uint8 -> per frame, person boxes ``(K, 4)`` normalised x1 y1 x2 y2 and scores ``(K,)``."""

    def __call__(self, frames: torch.Tensor) -> list[FrameBoxes]: ...


class DetectorWeightsError(ValueError):
    """A detector name torchvision does not know, or a weights file that does not fit the model."""


def detection_model_names() -> list[str]:
    """The torchvision detection models ``--detector`` accepts."""
    import torchvision.models.detection as detection
    from torchvision.models import list_models

    return list_models(module=detection)


def person_boxes(output: dict[str, torch.Tensor], height: int, width: int, score_threshold: float) -> FrameBoxes:
    """A torchvision detection output (pixel boxes, labels, scores) -> the COCO persons scoring >= ``score_threshold``,
    boxes normalised by the frame size and clipped to [0, 1]."""
    keep = (output["labels"] == COCO_PERSON) & (output["scores"] >= score_threshold)  # (K,)
    scale = torch.tensor([width, height, width, height], dtype=torch.float32)
    boxes = (output["boxes"][keep].float() / scale).clamp(0, 1)  # (K', 4)
    return boxes, output["scores"][keep].float()


class TorchvisionPersonDetector:
    """Any torchvision detection model (``torchvision.models.get_model(name)``, built without weights) with its
    weights from a local file read with ``weights_only=True``; keeps COCO label 1 (person) at or above the threshold."""

    def __init__(
        self,
        name: str,
        weights: str | Path,
        score_threshold: float = PERSON_SCORE,
        device: str | torch.device = "cpu",
        batch_size: int = 4,
        **model_kw,
    ) -> None:
        from torchvision.models import get_model

        names = detection_model_names()
        if name not in names:
            raise DetectorWeightsError(f"unknown detector {name!r}; torchvision's detection models are: {', '.join(names)}")
        path = Path(weights)
        if not path.is_file():
            raise DetectorWeightsError(f"{path}: detector weights not found")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a pickle that would run code, a truncated or foreign file
            raise DetectorWeightsError(f"{path}: not a readable weights file for {name} ({type(e).__name__}: {e})") from e
        if isinstance(state, dict) and isinstance(state.get("model"), dict):
            state = state["model"]  # torchvision's reference scripts save {"model": ..., "optimizer": ...}
        if not isinstance(state, dict):
            raise DetectorWeightsError(f"{path}: holds a {type(state).__name__}, not a state dict of {name}")
        self.model = get_model(name, weights=None, weights_backbone=None, **model_kw)  # nothing is downloaded
        try:
            self.model.load_state_dict(state)
        except RuntimeError as e:
            first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
            raise DetectorWeightsError(f"{path}: these weights do not fit {name}: {first}") from e
        self.model.eval().to(device)
        self.device, self.score_threshold, self.batch_size = torch.device(device), score_threshold, batch_size

    @torch.inference_mode()
    def raw(self, frames: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """The model's own outputs (pixel boxes, all labels, scores) for ``frames (N, C, H, W)`` uint8, on the CPU."""
        out = []
        for chunk in frames.split(self.batch_size):
            images = list((chunk.to(self.device).float() / 255).unbind(0))  # N x (C, H, W) in [0, 1]
            out += [{k: v.cpu() for k, v in o.items()} for o in self.model(images)]
        return out

    def __call__(self, frames: torch.Tensor) -> list[FrameBoxes]:
        h, w = frames.shape[-2:]
        return [person_boxes(o, h, w, self.score_threshold) for o in self.raw(frames)]


# Saturated colours of the synthetic actors ColourBoxDetector finds (RGB).
ACTOR_COLOURS: tuple[tuple[int, int, int], ...] = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255))


@dataclass
class ColourBoxDetector:
    """A deterministic stand-in for a person detector, for synthetic videos only: one box per colour of
    ``colours`` that covers at least ``min_pixels`` pixels (a pixel matches when each channel is within
    ``tolerance``; rows and columns with fewer than ``min_line`` matches are ignored, so compression fringes do
    not widen a box). Score 1. It does not find people; a trained detector does (``TorchvisionPersonDetector``)."""

    colours: Sequence[tuple[int, int, int]] = ACTOR_COLOURS
    tolerance: int = 60
    min_pixels: int = 50
    min_line: int = 3

    def __call__(self, frames: torch.Tensor) -> list[FrameBoxes]:
        h, w = frames.shape[-2:]
        palette = torch.tensor(self.colours, dtype=torch.int16)[:, :, None, None]  # (P, C, 1, 1)
        out = []
        for frame in frames.to(torch.int16):  # (C, H, W)
            match = ((frame[None] - palette).abs() <= self.tolerance).all(1)  # (P, H, W)
            boxes = []
            for m in match:
                if m.sum() < self.min_pixels:
                    continue
                rows = (m.sum(1) >= self.min_line).nonzero().flatten()
                cols = (m.sum(0) >= self.min_line).nonzero().flatten()
                if len(rows) and len(cols):  # pixel edges: the last row/column covered is inside the box
                    boxes.append([cols[0] / w, rows[0] / h, (cols[-1] + 1) / w, (rows[-1] + 1) / h])
            b = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)  # (K, 4)
            out.append((b, torch.ones(len(b))))
        return out


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of boxes ``a (M, 4)`` and ``b (N, 4)`` (x1 y1 x2 y2) -> ``(M, N)``."""
    from torchvision.ops import box_iou as tv_box_iou

    if len(a) == 0 or len(b) == 0:
        return torch.zeros(len(a), len(b))
    return tv_box_iou(a.double(), b.double()).float()


@dataclass
class _Track:
    id: int
    box: torch.Tensor  # (4,) last matched box
    velocity: torch.Tensor  # (4,) box change per update, for the prediction
    age: int = 0  # updates since the last match

    def predicted(self) -> torch.Tensor:
        """Where the box is expected at the next update: constant velocity, also across missed updates."""
        return self.box + self.velocity * (self.age + 1)


@dataclass
class IoUTracker:
    """Keeps person ids across keyframes: each track's box is predicted at constant velocity (its last change),
    then matched greedily to the new boxes by IoU, the best pair first (a pair needs ``min_iou``). A track
    unmatched for more than ``max_age`` updates ends; an unmatched box starts a new id. Greedy on IoU, not
    Hungarian: the two agree whenever the best pairs do not conflict, and greedy needs no scipy."""

    min_iou: float = 0.3
    max_age: int = 2
    tracks: list[_Track] = field(default_factory=list)
    next_id: int = 1

    def update(self, boxes: torch.Tensor) -> list[int]:
        """``boxes (K, 4)`` of the next keyframe -> their ids, in order."""
        boxes = boxes.float().reshape(-1, 4)
        predicted = torch.stack([t.predicted() for t in self.tracks]) if self.tracks else torch.zeros(0, 4)
        iou = box_iou(predicted, boxes)  # (tracks, boxes)
        ids: list[int | None] = [None] * len(boxes)
        matched: set[int] = set()
        order = sorted(((float(iou[i, j]), i, j) for i in range(iou.shape[0]) for j in range(iou.shape[1])), reverse=True)
        for value, i, j in order:
            if value < self.min_iou:
                break
            if i in matched or ids[j] is not None:
                continue
            track = self.tracks[i]
            track.velocity = (boxes[j] - track.box) / (track.age + 1)  # per update, over the missed ones too
            track.box, track.age = boxes[j], 0
            ids[j] = track.id
            matched.add(i)
        for i, track in enumerate(self.tracks):
            if i not in matched:
                track.age += 1
        self.tracks = [t for t in self.tracks if t.age <= self.max_age]
        for j, box in enumerate(boxes):
            if ids[j] is None:
                self.tracks.append(_Track(self.next_id, box, torch.zeros(4)))
                ids[j] = self.next_id
                self.next_id += 1
        return [int(i) for i in ids]  # type: ignore[arg-type]
