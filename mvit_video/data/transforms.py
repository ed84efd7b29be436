"""Clip transforms on ``(T, C, H, W)`` tensors, built on ``torchvision.transforms.v2``.

Train: RandAugment on the full frames (optional, same ops on every frame), RandomResizedCrop (area 0.08-1, aspect
3/4-4/3) or short-side jitter (uniform, or inverse-uniform as SSv2) + random crop, horizontal flip, and after
normalisation random erasing of one rectangle in all frames (optional).
Val (during training, spec §6.1): short-side jitter, random crop, flip. Test: short side resized, then one
centre crop or three crops along the long side. All end with /255 and mean/std normalisation, returned as
``(C, T, H, W)`` float.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from .augment import ClipRandAugment, CubeRandomErasing


class ClipTransform:
    def __init__(
        self,
        mode: str,
        crop_size: int,
        jitter_scales: Sequence[int] = (256, 320),
        test_short_side: int | None = None,
        random_resized_crop: bool = True,
        flip: bool = True,
        mean: Sequence[float] = (0.45, 0.45, 0.45),
        std: Sequence[float] = (0.225, 0.225, 0.225),
        rand_augment: str | None = None,
        erase_prob: float = 0.0,
        inverse_uniform_jitter: bool = False,
    ) -> None:
        if mode not in ("train", "val", "test"):
            raise ValueError(f"mode must be train, val or test, got {mode!r}")
        train = mode == "train"  # RandAugment and erasing run in train mode only (spec §6.1)
        self.rand_augment = ClipRandAugment(rand_augment, mean) if train and rand_augment else None
        self.erasing = CubeRandomErasing(erase_prob) if train and erase_prob > 0 else None
        self.inverse_uniform_jitter = inverse_uniform_jitter
        self.mode, self.crop_size = mode, crop_size
        self.test_short_side = test_short_side or jitter_scales[0]
        self.mean, self.std = list(mean), list(std)
        self.jitter_scales = tuple(jitter_scales)
        self.random_resized_crop = mode == "train" and random_resized_crop
        if self.random_resized_crop:
            spatial = [v2.RandomResizedCrop(crop_size, scale=(0.08, 1.0), ratio=(0.75, 4 / 3), antialias=True)]
        else:
            spatial = [v2.RandomCrop(crop_size)]  # after a random short-side resize in __call__
        if flip:
            spatial.append(v2.RandomHorizontalFlip())
        self.spatial = v2.Compose(spatial)

    def __call__(self, frames: torch.Tensor, crop_idx: int = 1, num_crops: int = 1) -> torch.Tensor:
        """``frames (T, C, H, W)`` uint8 -> ``(C, T, crop, crop)`` float normalised."""
        video = tv_tensors.Video(frames)
        if self.rand_augment is not None:
            video = tv_tensors.wrap(self.rand_augment(video.as_subclass(torch.Tensor)), like=video)
        if self.mode == "test":
            short = self.test_short_side if num_crops == 1 else self.crop_size
            video = TF.resize(video, short, antialias=True)
            video = spatial_crop(video, self.crop_size, crop_idx if num_crops > 1 else 1)
        else:
            if not self.random_resized_crop:
                video = TF.resize(video, self.jitter_size(), antialias=True)
            video = self.spatial(video)
        return finish_clip(video, self.mean, self.std, self.erasing)  # (C, T, H, W)

    def jitter_size(self) -> int:
        """A short side in ``jitter_scales``: uniform, or uniform in 1/size (SlowFast's INV_UNIFORM_SAMPLE)."""
        lo, hi = self.jitter_scales
        if self.inverse_uniform_jitter:
            return int(round(1.0 / (1.0 / hi + torch.rand(()).item() * (1.0 / lo - 1.0 / hi))))
        return int(torch.randint(lo, hi + 1, ()).item())


def finish_clip(video: torch.Tensor, mean: Sequence[float], std: Sequence[float], erase: Callable | None = None) -> torch.Tensor:
    """The tail of every clip pipeline (classification and AVA): ``(T, C, H, W)`` uint8 -> /255, mean/std
    normalised, optionally erased (``erase`` works on ``(T, C, H, W)``), as ``(C, T, H, W)`` float (the model's
    layout)."""
    out = TF.to_dtype(video, torch.float32, scale=True)
    out = TF.normalize(out, list(mean), list(std)).as_subclass(torch.Tensor)  # (T, C, H, W)
    if erase is not None:
        out = erase(out)
    return out.permute(1, 0, 2, 3).contiguous()  # (C, T, H, W)


def spatial_crop(video: torch.Tensor, size: int, index: int) -> torch.Tensor:
    """Crop ``size x size`` at position 0/1/2 (left/centre/right, or top/centre/bottom for portrait)."""
    h, w = video.shape[-2:]
    y, x = (h - size) // 2, (w - size) // 2
    if w >= h:
        x = [0, (w - size) // 2, w - size][index]
    else:
        y = [0, (h - size) // 2, h - size][index]
    return video[..., y : y + size, x : x + size]
