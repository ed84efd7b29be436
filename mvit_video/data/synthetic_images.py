"""A tiny synthetic image set in torchvision's ``ImageFolder`` layout (``ROOT/{train,val}/<class>/<image>``), so the
image path (``data=image_synthetic``, ``images.ImageFolderDataModule``) is trained and tested on real files.

Every class is a shape (filled circle, filled square, plus sign, ...) with a random colour, size and position on a
textured background of random size and aspect; class names have spaces, as many datasets' do. Images are real JPEG
(RGB) and PNG (RGB and greyscale) files, so decoding and the conversion to RGB are exercised. Written once: a
matching ``synthetic.json`` next to the data means it is already there.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .synthetic import freeze_lists, is_cached, mark_cached

CLASSES = ("filled circle", "filled square", "plus sign", "up triangle", "hollow ring", "horizontal bar")
SPLITS = ("train", "val")
RENDER_VERSION = 1  # of render_image and the file formats: bump when what they write changes (caches regenerate)
FORMATS = ((".jpg", "RGB"), (".png", "RGB"), (".png", "L"))  # image i is written as FORMATS[i % 3]


@dataclass(frozen=True)
class ImageSpec:
    """What to generate; recorded in ``synthetic.json``, whose match means the cache is valid."""

    num_classes: int = 4
    train_per_class: int = 50
    val_per_class: int = 10
    min_side: int = 40
    max_side: int = 80
    seed: int = 0
    version: int = RENDER_VERSION

    def __post_init__(self) -> None:
        freeze_lists(self)
        if not 2 <= self.num_classes <= len(CLASSES):
            raise ValueError(f"num_classes must be in [2, {len(CLASSES)}], got {self.num_classes}")


def _shape(draw: ImageDraw.ImageDraw, name: str, cx: float, cy: float, r: float, fill: tuple[int, ...]) -> None:
    """Draw class ``name`` centred at ``(cx, cy)`` with half-size ``r``."""
    box = (cx - r, cy - r, cx + r, cy + r)
    if name == "filled circle":
        draw.ellipse(box, fill=fill)
    elif name == "filled square":
        draw.rectangle(box, fill=fill)
    elif name == "plus sign":
        draw.rectangle((cx - r, cy - r / 3, cx + r, cy + r / 3), fill=fill)
        draw.rectangle((cx - r / 3, cy - r, cx + r / 3, cy + r), fill=fill)
    elif name == "up triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fill)
    elif name == "hollow ring":
        draw.ellipse(box, outline=fill, width=max(2, int(r / 3)))
    else:  # horizontal bar
        draw.rectangle((cx - r, cy - r / 4, cx + r, cy + r / 4), fill=fill)


def render_image(label: int, rng: np.random.Generator, spec: ImageSpec) -> np.ndarray:
    """One image ``(H, W, 3)`` uint8 of class ``label``."""
    w, h = (int(rng.integers(spec.min_side, spec.max_side + 1)) for _ in range(2))
    bg = rng.integers(0, 256, size=3)
    fg = (bg + rng.integers(80, 176, size=3)) % 256  # far enough from the background to be seen, grey included
    texture = rng.normal(0, rng.uniform(2, 8), size=(h // 8 + 1, w // 8 + 1, 3)).repeat(8, 0).repeat(8, 1)[:h, :w]
    img = Image.fromarray(np.clip(bg + texture, 0, 255).astype(np.uint8))
    r = rng.uniform(0.2, 0.35) * min(h, w)
    cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
    _shape(ImageDraw.Draw(img), CLASSES[label], cx, cy, r, tuple(int(c) for c in fg))
    noisy = np.asarray(img, dtype=np.float32) + rng.normal(0, rng.uniform(1, 5), size=(h, w, 1))
    return np.clip(noisy, 0, 255).astype(np.uint8)


def make_synthetic_images(root: str | Path, spec: ImageSpec | None = None) -> Path:
    """Write the set under ``root`` (``train/<class>/``, ``val/<class>/``); nothing is rewritten when
    ``root/synthetic.json`` records the same spec."""
    spec = spec or ImageSpec()
    root = Path(root)
    marker = root / "synthetic.json"
    if is_cached(marker, asdict(spec)):
        return root
    if marker.is_file():  # an older set written here: its images go, or a smaller spec would keep some
        for split in SPLITS:
            shutil.rmtree(root / split, ignore_errors=True)
        marker.unlink()
    per_split = {"train": spec.train_per_class, "val": spec.val_per_class}
    for s_idx, split in enumerate(SPLITS):
        for label, name in enumerate(CLASSES[: spec.num_classes]):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_split[split]):
                rng = np.random.default_rng(spec.seed * 1_000_003 + (s_idx * 100 + label) * 100_000 + i)
                ext, mode = FORMATS[i % len(FORMATS)]
                Image.fromarray(render_image(label, rng, spec)).convert(mode).save(folder / f"img_{i:05d}{ext}")
    mark_cached(marker, asdict(spec))
    return root
