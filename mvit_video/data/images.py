"""Image classification data in torchvision's ``ImageFolder`` layout (ImageNet), with the official MViTv2 image
recipe's transforms. The image side exists to feed video (IN-1K / IN-21K models are the video models' init).

Layout: ``ROOT/{train,val}/<class>/<image>`` (files may sit in sub-folders of a class folder, as torchvision
allows). Class names are the folder names, label ids their sorted order (torchvision's ``find_classes`` and the
official ``mvit/datasets/imagenet.py``): ``n01440764``, ``great white shark``, anything but a hidden name. The
classes are the training split's; the other splits may only use those. ``check_files`` reads every split in use
before the first step and names the file or folder that breaks the layout.

Transforms (facebookresearch/mvit ``mvit/datasets/{imagenet,transform}.py``, values in ``conf/data/imagenet.yaml``):
train: RandomResizedCrop (area 0.08-1, aspect 3/4-4/3, ``AUG.INTERPOLATION``), horizontal flip, RandAugment
(``AUG.AA_TYPE``) on the crop, ImageNet mean/std, random erasing (``AUG.RE_PROB``, pixel mode, one box). Val/test:
resize the short side to ``int(crop / DATA.VAL_CROP_RATIO)`` (256 for 224), centre crop. RandAugment and erasing
are ``augment.py``'s clip versions on a one-frame clip, so images and videos share one implementation; their small
deviations from timm are stated there. Unreadable images are handled as unreadable videos are
(``clips.ClipDataset``): replaced in training, left out of val/test and counted, each named in a warning.

A batch is ``{"video": (B, 3, H, W), "label", "video_index", "view", "valid", "unreadable"}``: the classification
task's keys, one view per image; image models take the 4-D batch.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from ..recipes import IMAGENET_MEAN, IMAGENET_STD
from .augment import ClipRandAugment, CubeRandomErasing
from .base import VideoDataModule, files_under
from .clips import ClipDataset, collate_clips
from .transforms import finish_clip

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # torchvision's
LAYOUT = "ROOT/{train,val}/<class name>/<image> (torchvision's ImageFolder layout)"


class ImageReadError(RuntimeError):
    """An image file that cannot be decoded; the message names it."""


def load_image(path: str, *_: Any) -> torch.Tensor:
    """A ``clips.FrameLoader``: the image at ``path`` as a one-frame clip ``(1, 3, H, W)`` uint8 RGB (grey, palette
    and alpha images converted, as the official loader does)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ImageReadError(f"cannot read image {path}: {e}") from e
    return TF.pil_to_tensor(rgb)[None]  # (1, 3, H, W)


class ImageTransform:
    """``(1, C, H, W)`` uint8 -> ``(C, crop, crop)`` float: the official image recipe (module docstring). Called
    as ``ClipDataset`` calls a clip transform; an image has one view, so the crop index is ignored."""

    def __init__(
        self,
        mode: str,
        crop_size: int,
        val_crop_ratio: float = 0.875,
        interpolation: str = "bicubic",
        flip: bool = True,
        mean: Sequence[float] = tuple(IMAGENET_MEAN),
        std: Sequence[float] = tuple(IMAGENET_STD),
        rand_augment: str | None = None,
        erase_prob: float = 0.0,
    ) -> None:
        if mode not in ("train", "val", "test"):
            raise ValueError(f"mode must be train, val or test, got {mode!r}")
        interp = v2.InterpolationMode(interpolation)
        self.crop_size, self.mean, self.std = crop_size, list(mean), list(std)
        train = mode == "train"
        if train:
            spatial = [v2.RandomResizedCrop(crop_size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), interpolation=interp)]
            spatial += [v2.RandomHorizontalFlip()] if flip else []
        elif val_crop_ratio == 0.0:  # DATA.VAL_CROP_RATIO 0: the whole image squeezed to the crop
            spatial = [v2.Resize((crop_size, crop_size), interp)]
        else:
            resize = int((1.0 / val_crop_ratio) * crop_size)  # the official expression: 256 for 224 at 0.875
            spatial = [v2.Resize(resize, interp), v2.CenterCrop(crop_size)]
        self.spatial = v2.Compose(spatial)
        self.rand_augment = ClipRandAugment(rand_augment, mean) if train and rand_augment else None
        self.erasing = CubeRandomErasing(erase_prob) if train and erase_prob > 0 else None

    def __call__(self, image: torch.Tensor, crop_idx: int = 0, num_crops: int = 1) -> torch.Tensor:
        image = self.spatial(image)  # (1, C, crop, crop) uint8
        if self.rand_augment is not None:  # on the crop, after the flip (the official order)
            image = self.rand_augment(image)
        return finish_clip(image, self.mean, self.std, self.erasing)[:, 0]  # (C, crop, crop)


class ImageDataset(ClipDataset):
    """``ClipDataset`` over ``(image path, label)`` items: one frame, one view; an unreadable image's blank in
    val/test is ``(3, crop, crop)``."""

    def blank_clip(self) -> torch.Tensor:
        return torch.zeros(3, self.transform.crop_size, self.transform.crop_size)


def find_classes(split_dir: Path) -> list[str]:
    """The class folders of a split, sorted (label order); hidden entries are skipped, a loose file is an error."""
    names = []
    for entry in sorted(os.scandir(split_dir), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            raise ValueError(
                f"{entry.path}: a file outside a class folder; expected {LAYOUT} (ImageNet's val archive is flat:"
                " move each image into its class's folder first, as torchvision.datasets.ImageNet does)"
            )
        names.append(entry.name)
    if not names:
        raise ValueError(f"{split_dir}: no class folders; expected {LAYOUT}")
    return names


def scan_split(split_dir: Path, class_ids: dict[str, int]) -> list[tuple[str, int]]:
    """``(image path, label)`` of every image under ``split_dir``'s class folders, in (class, path) order. A class
    unknown to ``class_ids``, an empty class folder or a file that is not an image is an error naming it."""
    items = []
    for name in find_classes(split_dir):
        folder = split_dir / name
        if name not in class_ids:
            raise ValueError(f"{folder}: class folder not in the training split's {len(class_ids)} classes")
        files = files_under(folder, IMG_EXTENSIONS, "an image")
        if not files:
            raise ValueError(f"{folder}: empty class folder; expected {LAYOUT}")
        items += [(path, class_ids[name]) for path in files]
    return items


class ImageFolderDataModule(VideoDataModule):
    """ImageNet-style folders (module docstring). ``test_split``: the folder ``trainer.test`` scores (ImageNet's
    labelled evaluation set is ``val``). ``num_frames`` exists because the model group reads ``data.num_frames``;
    an image is one frame."""

    collate_fn = staticmethod(collate_clips)

    def __init__(
        self,
        root: str,
        num_classes: int,
        num_frames: int = 1,
        crop_size: int = 224,
        val_crop_ratio: float = 0.875,
        interpolation: str = "bicubic",
        flip: bool = True,
        mean: Sequence[float] = tuple(IMAGENET_MEAN),
        std: Sequence[float] = tuple(IMAGENET_STD),
        rand_augment: str | None = None,
        erase_prob: float = 0.0,
        batch_size: int = 32,
        test_batch_size: int | None = None,
        num_workers: int = 8,
        max_retries: int = 10,
        train_split: str = "train",
        val_split: str = "val",
        test_split: str = "val",
        synthetic: dict | None = None,
    ) -> None:
        if num_frames != 1:
            raise ValueError(f"images are one frame: data.num_frames must be 1 (the model group reads it), got {num_frames}")
        super().__init__(root, batch_size, num_workers, test_batch_size, synthetic)
        self.num_classes, self.num_frames, self.crop_size = num_classes, 1, crop_size
        self.mean, self.std = list(mean), list(std)
        self.val_crop_ratio, self.interpolation = val_crop_ratio, interpolation
        self.tf_kwargs = dict(
            crop_size=crop_size,
            val_crop_ratio=val_crop_ratio,
            interpolation=interpolation,
            flip=flip,
            mean=mean,
            std=std,
            rand_augment=rand_augment,
            erase_prob=erase_prob,
        )
        self.max_retries = max_retries
        self.split_dirs = {"train": self.root / train_split, "val": self.root / val_split, "test": self.root / test_split}
        self._items: dict[str, list[tuple[str, int]]] = {}  # folder -> items

    def write_synthetic(self, spec: dict[str, Any]) -> None:
        from .synthetic_images import ImageSpec, make_synthetic_images

        make_synthetic_images(self.root, ImageSpec(num_classes=self.num_classes, **spec))

    def required_files(self, train: bool, test: bool) -> list[Path]:
        return []  # folders, not files: read_annotations checks them

    def read_annotations(self, train: bool, test: bool) -> None:
        """Every split in use is scanned now: a missing folder or a file that breaks the layout stops the run."""
        for split in (["train", "val"] if train else []) + (["test"] if test else []):
            self.items(split)

    def items(self, split: str) -> list[tuple[str, int]]:
        """``(path, label)`` of a split, each folder scanned once (ImageNet's val serves val and test)."""
        folder = self.split_dirs[split]
        if str(folder) not in self._items:
            if not folder.is_dir():
                raise FileNotFoundError(f"{split} folder not found: {folder}\n  expected {LAYOUT}; set data.root=DIR")
            ids = {name: i for i, name in self.class_names.items()}
            self._items[str(folder)] = scan_split(folder, ids)
        return self._items[str(folder)]

    @functools.cached_property
    def class_names(self) -> dict[int, str]:
        """The training split's class folders (the val folder's when there is no training folder), sorted; their
        count must be ``num_classes``."""
        folder = next((d for d in (self.split_dirs["train"], self.split_dirs["val"]) if d.is_dir()), None)
        if folder is None:
            raise FileNotFoundError(f"no train or val folder under {self.root}; expected {LAYOUT}; set data.root=DIR")
        names = find_classes(folder)
        if len(names) != self.num_classes:
            raise ValueError(f"{folder}: {len(names)} class folders, but data.num_classes={self.num_classes}")
        return dict(enumerate(names))

    def make_dataset(self, split: str) -> ImageDataset:
        tf = ImageTransform(split, **self.tf_kwargs)
        return ImageDataset(self.items(split), load_image, tf, 1, split, max_retries=self.max_retries)

    def metadata(self) -> dict[str, Any]:
        """Preprocessing a trained image model needs, stored in its checkpoints (``class_names``: label order)."""
        return {
            "num_frames": 1,
            "crop_size": self.crop_size,
            "val_crop_ratio": self.val_crop_ratio,
            "interpolation": self.interpolation,
            "mean": self.mean,
            "std": self.std,
            "class_names": list(self.class_names.values()),
            "test_num_clips": 1,
            "test_num_crops": 1,
        }
