"""Batch-mode mixup / cutmix with label smoothing, as the official recipe applies them (spec §2.3).

One lambda per batch; sample i is mixed with sample B-1-i; with both enabled cutmix is chosen with
``switch_prob``; the cutmix box is the same on every frame and lambda is corrected to the clipped area.
No maintained library does this for 5-D video batches with these semantics, so it is written here.
"""

from __future__ import annotations

import numpy as np
import torch


def smooth_one_hot(labels: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    off = smoothing / num_classes
    out = torch.full((labels.shape[0], num_classes), off, device=labels.device)
    return out.scatter_(1, labels[:, None], 1.0 - smoothing + off)  # (B, K)


class MixupCutmix:
    def __init__(
        self,
        num_classes: int,
        mixup_alpha: float = 0.8,
        cutmix_alpha: float = 1.0,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        label_smoothing: float = 0.1,
    ) -> None:
        self.num_classes = num_classes
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.prob, self.switch_prob = prob, switch_prob
        self.label_smoothing = label_smoothing

    def __call__(self, video: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``video (B, C, T, H, W)``, ``labels (B,)`` -> mixed video and soft targets ``(B, K)`` summing to 1."""
        target = smooth_one_hot(labels, self.num_classes, self.label_smoothing)
        use_mix = self.prob > 0 and np.random.rand() < self.prob and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)
        if not use_mix:
            return video, target
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha <= 0 or np.random.rand() < self.switch_prob)
        lam = float(np.random.beta(*(2 * [self.cutmix_alpha if use_cutmix else self.mixup_alpha])))
        flipped = video.flip(0)
        if use_cutmix:
            h, w = video.shape[-2:]
            ratio = np.sqrt(1 - lam)
            ch, cw = int(h * ratio), int(w * ratio)
            cy, cx = np.random.randint(h), np.random.randint(w)
            y0, y1 = np.clip(cy - ch // 2, 0, h), np.clip(cy + ch // 2, 0, h)
            x0, x1 = np.clip(cx - cw // 2, 0, w), np.clip(cx + cw // 2, 0, w)
            video = video.clone()
            video[..., y0:y1, x0:x1] = flipped[..., y0:y1, x0:x1]  # same box on every frame
            lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
        else:
            video = video * lam + flipped * (1 - lam)
        return video, target * lam + target.flip(0) * (1 - lam)
