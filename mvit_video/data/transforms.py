"""Clip transforms on ``(T, C, H, W)`` tensors, built on ``torchvision.transforms.v2``.

Train: RandomResizedCrop (area 0.08-1, aspect 3/4-4/3) or short-side jitter + random crop, horizontal flip.
Val (during training, spec §6.1): short-side jitter, random crop, flip. Test: short side resized, then one
centre crop or three crops along the long side. All end with /255 and mean/std normalisation, returned as
``(C, T, H, W)`` float.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF


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
    ) -> None:
        if mode not in ("train", "val", "test"):
            raise ValueError(f"mode must be train, val or test, got {mode!r}")
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
        if self.mode == "test":
            short = self.test_short_side if num_crops == 1 else self.crop_size
            video = TF.resize(video, short, antialias=True)
            video = spatial_crop(video, self.crop_size, crop_idx if num_crops > 1 else 1)
        else:
            if not self.random_resized_crop:
                lo, hi = self.jitter_scales
                video = TF.resize(video, int(torch.randint(lo, hi + 1, ()).item()), antialias=True)
            video = self.spatial(video)
        out = TF.to_dtype(video, torch.float32, scale=True)
        out = TF.normalize(out, self.mean, self.std)
        return out.as_subclass(torch.Tensor).permute(1, 0, 2, 3).contiguous()  # (C, T, H, W)


def spatial_crop(video: torch.Tensor, size: int, index: int) -> torch.Tensor:
    """Crop ``size x size`` at position 0/1/2 (left/centre/right, or top/centre/bottom for portrait)."""
    h, w = video.shape[-2:]
    y, x = (h - size) // 2, (w - size) // 2
    if w >= h:
        x = [0, (w - size) // 2, w - size][index]
    else:
        y = [0, (h - size) // 2, h - size][index]
    return video[..., y : y + size, x : x + size]
