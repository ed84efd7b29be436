"""Use a trained model: ``mvit_video.load(ckpt)`` returns it with the preprocessing its checkpoint records.

    model = mvit_video.load("logs/demo/runs/.../checkpoints/last.ckpt")
    model.predict("video.mp4", topk=5)      # [("moving_left", 0.93), ...], softmax averaged over the test views
                                            # (multi-label checkpoints: sigmoid, the maximum over the views)
    model.preprocessing.crop_size           # frames, sampling rate, crop, mean/std, class names, test views

Any video FFmpeg reads works (any frame rate, constant or variable, resolution, rotation or length, with or without
audio), decoded by the decoder training uses by default (``auto``: torchcodec, else PyAV; all give the same
frames). Bad inputs raise one clear error each: ``CheckpointMetadataError``, ``VideoReadError``,
``DatasetFormatError`` (class names).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .data.annotations import DatasetFormatError, read_classnames
from .data.decoding import VideoReadError, decode_clip  # noqa: F401  VideoReadError: raised by predict, caught by users
from .data.transforms import ClipTransform
from .models import build_model
from .models.convert import convert_state_dict, load_file


class CheckpointMetadataError(ValueError):
    """A checkpoint without the ``mvit_video`` metadata (model preset and preprocessing)."""


@dataclass(frozen=True)
class Preprocessing:
    """How the model's training data was prepared; inference must do the same."""

    num_frames: int
    sampling_rate: int
    crop_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]
    target_fps: int = 30
    test_num_clips: int = 1
    test_num_crops: int = 1
    test_short_side: int | None = None
    multilabel: bool = False  # sigmoid, max over views (Charades); old checkpoints lack the key: softmax, mean

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> Preprocessing:
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in meta.items() if k in known}
        for key in ("mean", "std", "class_names"):
            kw[key] = tuple(kw[key])
        return cls(**kw)


def view_scores(logits: torch.Tensor, multilabel: bool = False) -> torch.Tensor:
    """``(..., V, K)`` logits of V views of one video -> ``(..., K)`` scores, as the model was trained and tested:
    softmax averaged over the views (single-label), or sigmoid and the maximum over the views (multi-label:
    SlowFast's ``HEAD_ACT: sigmoid``, ``DATA.ENSEMBLE_METHOD: max``, what ``tasks.multilabel`` tests)."""
    if multilabel:
        return logits.sigmoid().amax(-2)  # (..., K)
    return logits.softmax(-1).mean(-2)  # (..., K)


class VideoClassifier(nn.Module):
    """A classifier with its preprocessing: ``predict(path)`` decodes the test views and scores them
    (``view_scores``)."""

    def __init__(self, model: nn.Module, preprocessing: Preprocessing) -> None:
        super().__init__()
        self.model = model
        self.preprocessing = preprocessing
        self.eval()
        if len(preprocessing.class_names) != model.num_classes:
            raise DatasetFormatError(f"{len(preprocessing.class_names)} class names for a model with {model.num_classes} classes")

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.model(video)

    def set_class_names(self, path: str | Path) -> None:
        """Replace the class names with a file of one name per line (its length must match the classifier)."""
        names = read_classnames(path, self.model.num_classes)
        self.preprocessing = replace(self.preprocessing, class_names=tuple(names))

    def views(
        self, path: str | Path, num_clips: int | None = None, num_crops: int | None = None, decoder: str = "auto"
    ) -> torch.Tensor:
        """The test views of a video as a batch ``(clips x crops, C, T, H, W)``. ``decoder``: the datamodules'
        default, so inference sees the frames training saw (every decoder gives the same ones)."""
        p = self.preprocessing
        clips, crops = num_clips or p.test_num_clips, num_crops or p.test_num_crops
        tf = ClipTransform("test", p.crop_size, test_short_side=p.test_short_side, mean=p.mean, std=p.std)
        span = p.num_frames * p.sampling_rate / p.target_fps
        out = []
        for clip in range(clips):
            frames = decode_clip(path, p.num_frames, span, clip, clips, decoder=decoder)  # (T, C, H, W) uint8
            out += [tf(frames, crop, crops) for crop in range(crops)]
        return torch.stack(out)  # (V, C, T, H, W)

    @torch.inference_mode()
    def predict(self, path: str | Path, topk: int = 5, **view_kw) -> list[tuple[str, float]]:
        """Top-k (class name, probability): ``view_scores`` of the views (softmax mean, or sigmoid max if multi-label)."""
        probs = view_scores(self.model(self.views(path, **view_kw)), self.preprocessing.multilabel)  # (K,)
        values, idx = probs.topk(min(topk, probs.numel()))
        return [(self.preprocessing.class_names[i], float(v)) for v, i in zip(values.tolist(), idx.tolist())]


def read_metadata(path: str | Path, key: str = "class_names") -> tuple[dict[str, Any], dict[str, Any]]:
    """(metadata, whole checkpoint) of one of our checkpoints; a clear error for anything else. ``key``: what the
    metadata must name (``class_names`` for a classifier, ``action_names`` for a detector)."""
    ckpt = load_file(path)
    meta = ckpt.get("mvit_video") if isinstance(ckpt, dict) else None
    if not meta or not meta.get("preset") or key not in meta:
        raise CheckpointMetadataError(
            f"{path} has no mvit_video metadata (model preset, frames, crop, mean/std, class names), so the model and "
            "its preprocessing cannot be rebuilt from it. It was not written by `python train.py`. Build the model "
            "yourself: mvit_video.models.build_model(name, num_classes=...), then "
            "mvit_video.models.convert.load_pretrained(model, path)."
        )
    return meta, ckpt


def load(path: str | Path, class_names: str | Path | None = None) -> VideoClassifier:
    """The classifier of a checkpoint written by ``train.py``, in eval mode, with its preprocessing."""
    meta, ckpt = read_metadata(path)
    classifier = classifier_from_checkpoint(meta, ckpt)
    if class_names is not None:
        classifier.set_class_names(class_names)
    return classifier


def classifier_from_checkpoint(meta: dict[str, Any], ckpt: dict[str, Any]) -> VideoClassifier:
    """The classifier of a checkpoint already read (``read_metadata``), so the file is read once."""
    model = build_model(meta["preset"], **(meta.get("model") or {}))  # the saved config, field by field
    model.load_state_dict(convert_state_dict(ckpt, "mvit_video", model))
    return VideoClassifier(model, Preprocessing.from_metadata(meta))


class ActionDetector(nn.Module):
    """An AVA detector with its preprocessing: ``detect(frames, boxes)`` scores the actions of each person box."""

    def __init__(self, model: nn.Module, meta: dict[str, Any]) -> None:
        super().__init__()
        self.model = model
        self.num_frames, self.sampling_rate = meta["num_frames"], meta["sampling_rate"]
        self.crop_size, self.mean, self.std = meta["crop_size"], tuple(meta["mean"]), tuple(meta["std"])
        self.action_names: dict[int, str] = {int(k): v for k, v in meta["action_names"].items()}
        self.eval()

    def frame_indices(self, keyframe: int, num_source: int) -> list[int]:
        """The clip around frame ``keyframe`` that the detector was trained on (clamped to the video)."""
        from .data.ava import keyframe_clip

        return keyframe_clip(num_source, keyframe, self.num_frames, self.sampling_rate)

    @torch.inference_mode()
    def detect(self, frames: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """``frames (T, C, H, W)`` uint8 around a keyframe, ``boxes (N, 4)`` normalised x1 y1 x2 y2 -> ``(N, 80)``
        probabilities of action ids 1..80 (the evaluated ones are in ``action_names``)."""
        from .data.ava import eval_clip

        clip, pixel_boxes = eval_clip(frames, boxes.float(), self.crop_size, self.mean, self.std)
        rois = torch.cat([torch.zeros(len(pixel_boxes), 1), pixel_boxes], 1)  # (N, 5): batch index 0
        return self.model(clip[None], rois)

    def top_actions(self, probs: torch.Tensor, k: int = 3) -> list[list[tuple[str, float]]]:
        """The ``k`` most likely evaluated actions of each box."""
        ids = torch.tensor(sorted(self.action_names))
        scores = probs[:, ids - 1]  # (N, evaluated classes)
        top = scores.topk(min(k, len(ids)), dim=1)
        return [
            [(self.action_names[int(ids[j])], float(v)) for v, j in zip(vals.tolist(), idx.tolist())]
            for vals, idx in zip(top.values, top.indices)
        ]


def load_detector(path: str | Path) -> ActionDetector:
    """The AVA detector of a checkpoint written by ``train.py experiment=ava_...``, with its preprocessing."""
    from .models.detector import build_ava_detector

    meta, ckpt = read_metadata(path, key="action_names")
    backbone = build_model(meta["preset"], **(meta.get("model") or {}))  # the saved backbone config
    detector = build_ava_detector(backbone, num_classes=meta["detector"]["num_classes"])
    state = {k.removeprefix("net."): v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    detector.load_state_dict(state)
    return ActionDetector(detector, meta)
