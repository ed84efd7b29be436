"""Kinetics-400/600/700 (and any dataset in that format): CSV parsing, a map-style dataset, a datamodule.

Layout (spec §6.1): ``ROOT/{train,val,test}.csv``, UTF-8, one video per line, ``path label`` separated by a
space, the label being the last field (so paths may hold spaces: every Kinetics class name does); also accepted:
``path fn label`` and ``path`` alone (label 0). Relative paths are joined to ``path_prefix`` (default: ``ROOT``).
Optional ``ROOT/classnames.txt``: one class name per line, in label order. ``check_files`` reads them all before
training starts.

Unreadable videos: in training a sample whose file cannot be decoded is replaced by a random other one; in val and
test it is not (it would be scored twice) but comes back marked ``valid=False``. Every sample carries the names of
the files that failed for it (``unreadable``), which the task counts once per file across workers and processes.
"""

from __future__ import annotations

import codecs
import functools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from .decoding import check_decoder, decode_clip
from .sampling import ResumableData, fork_rng, make_loader, seeded
from .transforms import ClipTransform

log = logging.getLogger(__name__)

CSV_FORMAT = (
    "UTF-8 text, one video per line: 'path label' separated by a space, the label being the last field (paths may "
    "contain spaces), or 'path fn label', or 'path' alone (label 0)"
)
VIDEO_EXTS = {".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp"}
FOREIGN_SEPARATORS = {"\t": "tab", ",": "comma", ";": "semicolon"}


class DatasetFormatError(ValueError):
    """A malformed annotation file; the message names the file, the line and the expected format."""


def read_text_lines(path: Path) -> list[tuple[int, str]]:
    """``(line number, text)`` of every line of a UTF-8 file (a byte-order mark is dropped, not glued to the first
    path). Bytes that are not UTF-8 (a Latin-1 or UTF-16 file) are an error naming the line: a path decoded with
    the wrong encoding would name a file that does not exist."""
    data = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    lines = []
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        try:
            lines.append((lineno, raw.decode("utf-8")))
        except UnicodeDecodeError as e:
            bad = raw[e.start : e.start + 4]
            raise DatasetFormatError(
                f"{path}:{lineno}: bytes {bad!r} at column {e.start + 1} are not UTF-8; expected a UTF-8 text file "
                f"(convert it, e.g. iconv -f latin1 -t utf-8 {path.name} > {path.stem}.utf8{path.suffix})"
            ) from None
    return lines


def _foreign_separator(line: str, sep: str) -> str:
    """' (the line looks tab-separated)', or '' when no other usual separator is in it."""
    found = [name for s, name in FOREIGN_SEPARATORS.items() if s != sep and s in line]
    return f" (the line looks {'/'.join(found)}-separated)" if found else ""


def parse_video_line(path: Path, lineno: int, line: str, num_classes: int, sep: str, prefix: Path) -> tuple[str, int]:
    """One ``path label`` line: the label is the last field, everything before it is the path (spaces and all).
    ``path fn label`` (a frame count in the middle, as frame-folder lists have) is read as such only when the
    path with the count in it does not exist and the shorter one does, or neither exists and the path has no
    other separator. Two or more fields after a video file name (``a.mp4 1 2 3``) are extra columns, unless a
    file of that whole name exists."""
    fields = line.rsplit(sep, 1)
    if len(fields) == 1:
        hint = _foreign_separator(line, sep)
        if hint:  # 'a.mp4,3' or 'a.mp4\t3': one column, which would silently become label 0
            raise DatasetFormatError(f"{path}:{lineno}: no {sep!r} separator in {line!r}{hint}; expected {CSV_FORMAT}")
        return _join(prefix, line), 0
    video, label_text = fields
    try:
        label = int(label_text)
    except ValueError:
        raise DatasetFormatError(
            f"{path}:{lineno}: label {label_text!r} is not an integer{_foreign_separator(line, sep)}; expected {CSV_FORMAT}"
        ) from None
    if not 0 <= label < num_classes:
        raise DatasetFormatError(
            f"{path}:{lineno}: label {label} is out of range [0, {num_classes}) (data.num_classes={num_classes})"
        )
    tokens = video.split(sep)
    ends = [i for i, tok in enumerate(tokens[:-2]) if Path(tok).suffix.lower() in VIDEO_EXTS]
    if ends and not Path(_join(prefix, video)).exists():  # 'a.mp4 1 2 3': columns after a file name, not a name
        raise DatasetFormatError(f"{path}:{lineno}: {len(tokens) + 1} columns in {line!r}; expected {CSV_FORMAT}")
    head, _, middle = video.rpartition(sep)
    if head and middle.isdigit():  # 'path fn label' or a file name ending in ' 12'
        whole, short = _join(prefix, video), _join(prefix, head)
        exists_whole, exists_short = Path(whole).exists(), Path(short).exists()
        if exists_short and not exists_whole or not exists_whole and sep not in head:
            return short, label
        return whole, label
    return _join(prefix, video), label


def _join(prefix: Path, video: str) -> str:
    return video if Path(video).is_absolute() else str(prefix / video)


def read_video_csv(path: str | Path, num_classes: int, sep: str = " ", prefix: str | Path = "") -> list[tuple[str, int]]:
    """``(video path, label)`` of every line; format errors name the file and the line (``CSV_FORMAT``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"annotation file not found: {path}\n  expected {CSV_FORMAT}.\n"
            "  Make it from a folder-per-class tree of videos with: "
            "python scripts/prepare_kinetics.py VIDEO_DIR --out DATA_ROOT"
        )
    items = [
        parse_video_line(path, lineno, line.strip(), num_classes, sep, Path(prefix))
        for lineno, line in read_text_lines(path)
        if line.strip()
    ]
    if not items:
        raise DatasetFormatError(f"{path}: no videos listed; expected {CSV_FORMAT}")
    return items


def read_classnames(path: str | Path, num_classes: int) -> list[str]:
    """One class name per line, in label order: a blank line inside, a repeated name or a count other than
    ``num_classes`` would put the wrong names on the classes (and fail at the first checkpoint save)."""
    path = Path(path)
    lines = [(n, text.strip()) for n, text in read_text_lines(path)]
    while lines and not lines[-1][1]:
        lines.pop()
    seen: dict[str, int] = {}
    for lineno, name in lines:
        if not name:
            raise DatasetFormatError(f"{path}:{lineno}: empty line; expected one class name per line, in label order")
        if name in seen:
            raise DatasetFormatError(f"{path}:{lineno}: class name {name!r} again (first on line {seen[name]})")
        seen[name] = lineno
    if len(lines) != num_classes:
        where = f"; line {num_classes + 1} is {lines[num_classes][1]!r}" if len(lines) > num_classes else ""
        raise DatasetFormatError(
            f"{path}: {len(lines)} class names for num_classes={num_classes}{where}; expected one name per line, in "
            f"label order (or set data.num_classes={len(lines)})"
        )
    return [name for _, name in lines]


def source_name(source: Any) -> str:
    """A video's name in warnings and counts: its path, or the folder of a frame list."""
    if isinstance(source, (list, tuple)):
        return str(Path(source[0]).parent) if source else "<empty frame list>"
    return str(source)


class KineticsDataset(Dataset):
    """Map-style clip dataset (DistributedSampler shards it). Test mode yields every (clip, crop) view of
    every video: ``len = videos x num_clips x num_crops``, view id -> clip = id // crops, crop = id % crops."""

    def __init__(
        self,
        items: Sequence[tuple[str, int]],
        transform: ClipTransform,
        num_frames: int,
        sampling_rate: int,
        target_fps: int = 30,
        mode: str = "train",
        num_clips: int = 1,
        num_crops: int = 1,
        decoder: str = "auto",
        max_retries: int = 10,
        time_shuffle: bool = False,
        num_samples: int = 1,
    ) -> None:
        self.items = list(items)
        self.transform = transform
        self.num_frames = num_frames
        self.span = num_frames * sampling_rate / target_fps  # seconds covered by a clip
        self.mode = mode
        self.num_clips, self.num_crops = (num_clips, num_crops) if mode == "test" else (1, 1)
        self.decoder = check_decoder(decoder)
        self.max_retries = max_retries
        self.time_shuffle = time_shuffle  # a control: destroys the order of frames, not their content
        self.num_samples = num_samples if mode == "train" else 1  # repeated augmentation (AUG.NUM_SAMPLE)
        self._warned: set[str] = set()  # unreadable files already named in a warning by this process

    def __len__(self) -> int:
        return len(self.items) * self.num_clips * self.num_crops

    def __getitem__(self, index) -> dict[str, Any]:
        """``index``: an int, or ``(int, seed)`` from ``ResumableSampler``: then the clip window, the augmentation
        and any replacement of an unreadable video are all drawn from ``seed`` (reproducible across restarts)."""
        index, seed = seeded(index)
        with fork_rng(seed):
            return self._get(index)

    def _get(self, index: int) -> dict[str, Any]:
        """A sample, and under ``unreadable`` the names of the files that failed for it. In training an unreadable
        video is replaced by a random other one; in val/test it is not (a replacement would be scored twice): the
        sample comes back with ``valid=False`` and a blank clip, for the task to leave out and count."""
        unreadable: list[str] = []
        views = self.num_clips * self.num_crops
        for _ in range(self.max_retries + 1):
            video_idx, view = divmod(index, views)
            path, label = self.items[video_idx]
            clip_idx, crop_idx = divmod(view, self.num_crops)
            rng = None
            if self.mode != "test":
                rng = torch.Generator().manual_seed(torch.randint(0, 2**62, ()).item())
            try:
                frames = self.load_frames(path, clip_idx, rng)  # (T, C, H, W) uint8
            except Exception as e:  # noqa: BLE001  any decoder failure: skip this file
                name = source_name(path)
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
        raise RuntimeError(f"{self.max_retries + 1} videos in a row could not be decoded; last: {source_name(path)}")

    @staticmethod
    def _sample(video: torch.Tensor, label: int, video_idx: int, view: int, unreadable: list[str], valid: bool) -> dict[str, Any]:
        """``unreadable``: the names of the files that failed for this sample, which the task counts once per file
        across workers and processes."""
        return {
            "video": video, "label": label, "video_index": video_idx, "view": view, "valid": valid,
            "unreadable": unreadable,
        }  # fmt: skip

    def blank_clip(self) -> torch.Tensor:
        """Zeros shaped like a val/test clip ``(C, T, crop, crop)``, in the place of an unreadable video."""
        return torch.zeros(3, self.num_frames, self.transform.crop_size, self.transform.crop_size)

    def load_frames(self, path: str, clip_idx: int, rng: torch.Generator | None) -> torch.Tensor:
        """The clip's frames ``(T, C, H, W)`` uint8: a window of ``span`` seconds (random in train/val)."""
        return decode_clip(path, self.num_frames, self.span, clip_idx, self.num_clips, rng, self.decoder)


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


class KineticsDataModule(ResumableData, L.LightningDataModule):
    """Kinetics-format data for training (random clip), validation and multi-view testing."""

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
        decoder: str = "auto",
        path_prefix: str | None = None,
        train_csv: str = "train.csv",
        val_csv: str = "val.csv",
        test_csv: str = "test.csv",
        max_retries: int = 10,
        synthetic: dict | None = None,
        rand_augment: str | None = None,
        erase_prob: float = 0.0,
        num_samples: int = 1,
        inverse_uniform_jitter: bool = False,
    ) -> None:
        """``batch_size`` counts videos; with repeated augmentation a training batch has ``batch_size x
        num_samples`` clips. ``rand_augment`` (a timm string such as ``rand-m7-n4-mstd0.5-inc1``) and
        ``erase_prob`` apply to training clips only."""
        super().__init__()
        self.root = Path(root)
        self.num_classes = num_classes
        self.num_frames, self.sampling_rate, self.target_fps = num_frames, sampling_rate, target_fps
        self.crop_size = crop_size
        self.mean, self.std = list(mean), list(std)
        self.test_short_side = test_short_side or train_jitter_scales[0]
        self.tf_kwargs = dict(
            crop_size=crop_size, jitter_scales=tuple(train_jitter_scales), test_short_side=self.test_short_side,
            mean=mean, std=std, rand_augment=rand_augment, erase_prob=erase_prob,
            inverse_uniform_jitter=inverse_uniform_jitter,
        )  # fmt: skip
        self.num_samples = num_samples
        self.random_resized_crop, self.flip = random_resized_crop, flip
        self.test_num_clips, self.test_num_crops = test_num_clips, test_num_crops
        self.batch_size, self.test_batch_size = batch_size, test_batch_size or batch_size
        self.num_workers = num_workers
        self.decoder = check_decoder(decoder)
        self.path_prefix = Path(path_prefix) if path_prefix else self.root
        self.csvs = {"train": train_csv, "val": val_csv, "test": test_csv}
        self.max_retries = max_retries
        self.synthetic = synthetic
        self.time_shuffle_test = False
        self.datasets: dict[str, KineticsDataset] = {}

    def prepare_data(self) -> None:
        if self.synthetic is not None:
            from .synthetic import SyntheticSpec, make_synthetic_kinetics

            make_synthetic_kinetics(self.root, SyntheticSpec(num_classes=self.num_classes, **self.synthetic))

    def check_files(self, train: bool = True, test: bool = True) -> None:
        """Fail fast, before a model is built or a step is run: a missing annotation file (with how to make it), a
        malformed line or out-of-range label in any split that will be used, and a ``classnames.txt`` whose
        count does not match (it is read at every checkpoint save). Each error names the file and the line."""
        splits = (["train", "val"] if train else []) + (["test"] if test else [])
        for split in splits:
            path = self.root / self.csvs[split]
            if not path.is_file():
                raise FileNotFoundError(
                    f"{split} annotation file not found: {path}\n"
                    f"  expected {CSV_FORMAT}.\n"
                    f"  Set data.root=DIR to where your dataset is, or make the CSVs from a folder-per-class tree of\n"
                    f"  videos: python scripts/prepare_kinetics.py VIDEO_DIR --out {self.root}"
                )
            self.read_items(split)
        self.class_names  # noqa: B018  reads and checks classnames.txt (cached for the checkpoints)

    dataset_class: type[KineticsDataset] = KineticsDataset

    def read_items(self, split: str) -> list[tuple[Any, int]]:
        """``(video, label)`` pairs of a split."""
        return read_video_csv(self.root / self.csvs[split], self.num_classes, prefix=self.path_prefix)

    def _dataset(self, split: str) -> KineticsDataset:
        items = self.read_items(split)
        mode = "test" if split == "test" else ("train" if split == "train" else "val")
        tf = ClipTransform(
            mode, random_resized_crop=self.random_resized_crop, flip=self.flip and mode != "test", **self.tf_kwargs
        )
        return self.dataset_class(
            items, tf, self.num_frames, self.sampling_rate, self.target_fps, mode,
            self.test_num_clips, self.test_num_crops, self.decoder, self.max_retries,
            time_shuffle=self.time_shuffle_test and split == "test", num_samples=self.num_samples,
        )  # fmt: skip

    def setup(self, stage: str | None = None) -> None:
        splits = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        for split in splits.get(stage, ("train", "val", "test")):
            self.datasets[split] = self._dataset(split)

    def set_time_shuffle(self, enabled: bool) -> None:
        """Shuffle the frames of every test clip in time (a control for how much the model uses motion)."""
        self.time_shuffle_test = enabled
        if "test" in self.datasets:
            self.datasets["test"].time_shuffle = enabled

    @functools.cached_property
    def class_names(self) -> list[str]:
        """Read once (checkpoints store them at every save)."""
        path = self.root / "classnames.txt"
        return read_classnames(path, self.num_classes) if path.is_file() else [str(i) for i in range(self.num_classes)]

    def metadata(self) -> dict[str, Any]:
        """Preprocessing a trained model needs, stored in its checkpoints."""
        return {
            "num_frames": self.num_frames, "sampling_rate": self.sampling_rate, "target_fps": self.target_fps,
            "crop_size": self.crop_size, "mean": self.mean, "std": self.std, "class_names": self.class_names,
            "test_num_clips": self.test_num_clips, "test_num_crops": self.test_num_crops,
            "test_short_side": self.test_short_side,
        }  # fmt: skip

    def _loader(self, split: str, shuffle: bool, batch_size: int) -> DataLoader:
        resume = self.resume_position if shuffle else None
        return make_loader(self.datasets[split], shuffle, batch_size, self.num_workers, collate_clips, resume=resume)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True, self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False, self.batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False, self.test_batch_size)
