"""The clip-level augmentations of the official MViTv2 recipe (spec §2.3) that no maintained library gives for video.

- ``ClipRandAugment``: timm's RandAugment ``rand-m7-n4-mstd0.5-inc1`` (the "increasing" op set, each op applied
  with probability 0.5, magnitude drawn from N(m, mstd) and clipped to [0, 10]). One set of ops and magnitudes is
  drawn per clip and applied to every frame, as SlowFast does on its list of frames. torchvision's
  ``v2.RandAugment`` has a different op set, no magnitude noise and no per-op probability, and pytorchvideo's
  transforms do not import with current torchvision; the pixel operations themselves are torchvision's.
- ``CubeRandomErasing``: one rectangle for the whole clip, fresh normal noise in every frame ("cube" mode of
  SlowFast's ``RandomErasing``, pixel mode, one box); the rectangle is drawn by torchvision's
  ``RandomErasing.get_params``.

Deviations, both small: geometric ops (shear, rotate, translate) use bilinear interpolation about the image centre
(timm picks bilinear or bicubic at random and shears about the top-left corner).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

import torch
from torchvision import transforms as T
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

MAX_LEVEL = 10.0


def _signed(value: float) -> float:
    return value if torch.rand(()) < 0.5 else -value


def _enhance(level: float) -> float:
    return 1.0 + _signed(level / MAX_LEVEL * 0.9)  # timm "...Increasing": 1 +- 0.9 at full strength


def _solarize_add(video: torch.Tensor, add: int, threshold: int = 128) -> torch.Tensor:
    return torch.where(video < threshold, (video.int() + add).clamp(0, 255).to(video.dtype), video)


def _affine(video: torch.Tensor, fill: list[float], **kw) -> torch.Tensor:
    params = {"angle": 0.0, "translate": [0.0, 0.0], "scale": 1.0, "shear": [0.0, 0.0], **kw}
    return TF.affine(video, interpolation=InterpolationMode.BILINEAR, fill=fill, **params)


def _ops(fill: list[float]) -> dict[str, Callable[[torch.Tensor, float], torch.Tensor]]:
    """timm's ``_RAND_INCREASING_TRANSFORMS`` with their level -> argument maps (``_LEVEL_DENOM`` = 10)."""

    def shear(axis: int) -> Callable:
        def op(v: torch.Tensor, m: float) -> torch.Tensor:
            deg = math.degrees(math.atan(_signed(m / MAX_LEVEL * 0.3)))
            return _affine(v, fill, shear=[deg, 0.0] if axis == 0 else [0.0, deg])

        return op

    def translate(axis: int) -> Callable:
        def op(v: torch.Tensor, m: float) -> torch.Tensor:
            shift = _signed(m / MAX_LEVEL * 0.45) * v.shape[-1 if axis == 0 else -2]  # of the width / height
            return _affine(v, fill, translate=[shift, 0.0] if axis == 0 else [0.0, shift])

        return op

    def solarize(v: torch.Tensor, m: float) -> torch.Tensor:
        threshold = 256 - int(m / MAX_LEVEL * 256)
        return v if threshold > 255 else TF.solarize(v, threshold)

    return {
        "AutoContrast": lambda v, m: TF.autocontrast(v),
        "Equalize": lambda v, m: TF.equalize(v),
        "Invert": lambda v, m: TF.invert(v),
        "Rotate": lambda v, m: TF.rotate(v, _signed(m / MAX_LEVEL * 30.0), InterpolationMode.BILINEAR, fill=fill),
        "PosterizeIncreasing": lambda v, m: TF.posterize(v, max(1, 4 - int(m / MAX_LEVEL * 4))),
        "SolarizeIncreasing": solarize,
        "SolarizeAdd": lambda v, m: _solarize_add(v, int(m / MAX_LEVEL * 110)),
        "ColorIncreasing": lambda v, m: TF.adjust_saturation(v, _enhance(m)),
        "ContrastIncreasing": lambda v, m: TF.adjust_contrast(v, _enhance(m)),
        "BrightnessIncreasing": lambda v, m: TF.adjust_brightness(v, _enhance(m)),
        "SharpnessIncreasing": lambda v, m: TF.adjust_sharpness(v, _enhance(m)),
        "ShearX": shear(0),
        "ShearY": shear(1),
        "TranslateXRel": translate(0),
        "TranslateYRel": translate(1),
    }


class ClipRandAugment:
    """RandAugment from a timm config string (``rand-m7-n4-mstd0.5-inc1``) on a ``(T, C, H, W)`` uint8 clip."""

    def __init__(self, config: str = "rand-m7-n4-mstd0.5-inc1", mean: Sequence[float] = (0.45, 0.45, 0.45)) -> None:
        parts = config.split("-")
        if parts[0] != "rand":
            raise ValueError(f"RandAugment config must start with 'rand-', got {config!r}")
        values = {"m": 9.0, "n": 2.0, "mstd": 0.0, "inc": 0.0, "p": 0.5}
        for part in parts[1:]:
            m = re.fullmatch(r"(mstd|inc|m|n|p)([\d.]+)", part)
            if m is None:
                raise ValueError(f"unknown RandAugment option {part!r} in {config!r} (known: m, n, mstd, inc, p)")
            values[m.group(1)] = float(m.group(2))
        if values["inc"] != 1:
            raise ValueError(f"{config!r}: only the 'increasing' op set (inc1) of the MViTv2 recipe is implemented")
        self.config = config
        self.magnitude, self.num_ops, self.magnitude_std = values["m"], int(values["n"]), values["mstd"]
        self.prob = values["p"]
        self.ops = _ops([round(255 * m) for m in mean])
        self.names = list(self.ops)

    def sample(self) -> list[tuple[str, float]]:
        """The ops (drawn with replacement) and magnitudes for one clip; skipped ops (prob 0.5) are left out."""
        chosen = []
        for i in torch.randint(len(self.names), (self.num_ops,)).tolist():
            if torch.rand(()) > self.prob:
                continue
            m = self.magnitude
            if self.magnitude_std > 0:
                m = float(torch.normal(torch.tensor(m), torch.tensor(self.magnitude_std)))
            chosen.append((self.names[i], min(MAX_LEVEL, max(0.0, m))))
        return chosen

    def apply(self, video: torch.Tensor, ops: list[tuple[str, float]]) -> torch.Tensor:
        for name, m in ops:
            video = self.ops[name](video, m)
        return video

    def __call__(self, video: torch.Tensor) -> torch.Tensor:
        """``(T, C, H, W)`` uint8 -> same; one draw of ops for all frames."""
        return self.apply(video, self.sample())

    def __repr__(self) -> str:
        return f"ClipRandAugment({self.config!r})"


class CubeRandomErasing:
    """Erase one rectangle (area 2%-33%, aspect 0.3-3.3) in all frames of a ``(T, C, H, W)`` float clip with
    probability ``p``, filled with per-pixel normal noise drawn anew for every frame."""

    def __init__(self, p: float = 0.25, scale: tuple[float, float] = (0.02, 1 / 3), ratio: tuple[float, float] = (0.3, 1 / 0.3)):
        self.p, self.scale, self.ratio = p, scale, ratio

    def __call__(self, video: torch.Tensor) -> torch.Tensor:
        if self.p <= 0 or torch.rand(()) >= self.p:
            return video
        y, x, h, w, _ = T.RandomErasing.get_params(video[0], scale=self.scale, ratio=self.ratio, value=None)
        if (h, w) == tuple(video.shape[-2:]):  # torchvision's "no rectangle fits" answer: leave the clip alone
            return video
        video = video.clone()
        video[:, :, y : y + h, x : x + w] = torch.randn(video.shape[0], video.shape[1], h, w, dtype=video.dtype)
        return video

    def __repr__(self) -> str:
        return f"CubeRandomErasing(p={self.p})"
