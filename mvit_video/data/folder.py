"""Any labelled folder of videos: one folder per class, no CSV to write (``data=folder``, ``experiment=finetune``).

Layouts (class names are the folder names, any characters a file system allows, label ids their sorted order, as
torchvision's ``ImageFolder`` does):

- ``ROOT/<class>/<video>``: a seeded, stratified split (``val_fraction``, ``test_fraction`` of each class) is made
  once and written to ``split_file`` (default ``ROOT/splits.json``), then reused: the same run on the same folder
  trains on the same videos. If videos were added or removed since, the run stops and names them (delete the file
  or point ``data.split_file`` elsewhere for a new split); so does a changed seed or fraction.
- ``ROOT/train/<class>/<video>`` and ``ROOT/val/<class>/<video>``, optionally ``ROOT/test/<class>/<video>``: the
  user's split (no test folder: the test split is ``val``). The classes are the training split's; a val/test class
  missing from train is an error.

Videos may sit in sub-folders of a class folder; hidden files are skipped; any other file that is not a video (by
extension, ``VIDEO_EXTENSIONS``) is an error naming it, as is an empty class folder. Clips are read as Kinetics
clips are (``kinetics.WindowFrames``: a window of ``num_frames x sampling_rate`` frames at ``target_fps``).

The sample list of a split is a plain list of ``(path, label)`` records (``items(split)``), which a sharder can
read. ``num_classes: null`` counts the class folders; the configs give the model the same count through the
``${folder_num_classes:ROOT}`` resolver (``register_resolvers``).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
from pathlib import Path
from typing import Any

from .base import files_under
from .clips import ClipDataModule
from .decoding import check_decoder
from .kinetics import WindowFrames

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (
    ".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts", ".mts", ".m2ts",
    ".ogv", ".gif",
)  # fmt: skip
SPLITS = ("train", "val", "test")
LAYOUT = "ROOT/<class name>/<video> or ROOT/{train,val[,test]}/<class name>/<video>"
SPLIT_FORMAT = 1  # of the split file: bump when its fields change


class FolderLayoutError(ValueError):
    """A folder or file that breaks the layout; the message names it."""


def has_split_folders(root: Path) -> bool:
    """Whether ``root`` holds the user's own split (a ``train/`` folder) rather than class folders."""
    return (root / "train").is_dir()


def class_folders(folder: Path) -> list[str]:
    """The class folders of ``folder``, sorted (label order); hidden entries are skipped, a loose file is an error."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder; expected {LAYOUT}")
    names = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            if entry.name.endswith(".json"):  # the split file (or the synthetic set's marker): not a class
                continue
            raise FolderLayoutError(f"{entry.path}: a file outside a class folder; expected {LAYOUT}")
        names.append(entry.name)
    if not names:
        raise FolderLayoutError(f"{folder}: no class folders; expected {LAYOUT}")
    return names


def class_videos(folder: Path) -> list[str]:
    """Every video under a class folder (sub-folders included), as paths relative to it, sorted. A file that is not
    a video and an empty folder are errors naming them."""
    files = [os.path.relpath(p, folder) for p in files_under(folder, VIDEO_EXTENSIONS, "a video", FolderLayoutError)]
    if not files:
        raise FolderLayoutError(f"{folder}: empty class folder (no video in it); expected {LAYOUT}")
    return files


def scan_classes(folder: Path) -> dict[str, list[str]]:
    """``{class name: [video path relative to folder/<class>]}`` in label order."""
    return {name: class_videos(folder / name) for name in class_folders(folder)}


NO_ROOT_CLASSES = 2  # the count before data.root exists: the fewest a classifier has, so its config builds


def count_classes(root: str | Path) -> int:
    """The number of classes under ``root`` (its ``train/`` folder in the split layout). Before ``root`` exists,
    ``NO_ROOT_CLASSES``, so that a config composes and builds without the data (``check_files`` then stops the run,
    naming the missing folder, before a model is built)."""
    root = Path(root)
    if not root.is_dir():
        return NO_ROOT_CLASSES
    return len(class_folders(root / "train" if has_split_folders(root) else root))


def register_resolvers() -> None:
    """``${folder_num_classes:ROOT}``: the class count of a folder dataset, for the model and task configs."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("folder_num_classes"):
        OmegaConf.register_new_resolver("folder_num_classes", lambda root: count_classes(root))


register_resolvers()  # importing the datamodule (instantiating data=folder) makes the model's count resolvable


def stratified_split(
    videos: dict[str, list[str]], seed: int, val_fraction: float, test_fraction: float
) -> dict[str, list[tuple[str, int]]]:
    """``{split: [(ROOT-relative path, label)]}``: each class's videos shuffled by a generator seeded with
    ``(seed, class name)`` (so adding a class does not reshuffle the others), then ``round(n x fraction)`` of them,
    at least one when the fraction is positive, go to val and test, the rest to train (at least one)."""
    out: dict[str, list[tuple[str, int]]] = {s: [] for s in SPLITS}
    for label, (name, files) in enumerate(videos.items()):
        order = sorted(files)
        random.Random(f"{seed}/{name}").shuffle(order)
        n_val = max(round(len(order) * val_fraction), 1 if val_fraction > 0 else 0)
        n_test = max(round(len(order) * test_fraction), 1 if test_fraction > 0 else 0)
        if len(order) - n_val - n_test < 1:
            raise FolderLayoutError(
                f"class {name!r} has {len(order)} video(s): too few for a val/test split of {val_fraction}/"
                f"{test_fraction} with one left to train on (add videos or lower data.val_fraction/test_fraction)"
            )
        parts = {"val": order[:n_val], "test": order[n_val : n_val + n_test], "train": order[n_val + n_test :]}
        for split, rels in parts.items():
            out[split] += [(f"{name}/{rel}", label) for rel in sorted(rels)]
    return out


class FolderDataModule(ClipDataModule):
    """A folder-per-class dataset (module docstring); the clip options are ``ClipDataModule``'s.

    ``num_classes``: ``None`` counts the class folders; a number is checked against them. ``split_file``: where the
    seeded split is written (default ``ROOT/splits.json``; a read-only ``ROOT`` needs another path).
    ``split_seed``, ``val_fraction``, ``test_fraction``: the split (``test_fraction=0``: test on ``val``).
    ``path_prefix``: the Kinetics group's key (this group extends it), which must stay null here."""

    def __init__(
        self,
        root: str,
        num_classes: int | None = None,
        decoder: str = "auto",
        split_file: str | None = None,
        split_seed: int = 0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        path_prefix: str | None = None,
        **clip_options: Any,
    ) -> None:
        if path_prefix is not None:
            raise ValueError(f"data.path_prefix={path_prefix!r}: a folder dataset's paths are under data.root")
        self.expected_classes = num_classes
        super().__init__(root, num_classes if num_classes is not None else count_classes(root), **clip_options)
        self.decoder = check_decoder(decoder)
        self.split_file = Path(split_file) if split_file else self.root / "splits.json"
        self.split_seed, self.val_fraction, self.test_fraction = split_seed, val_fraction, test_fraction
        if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
            raise ValueError(
                f"val_fraction and test_fraction must be in [0, 1) with a sum < 1, got {val_fraction}, {test_fraction}"
            )

    def write_synthetic(self, spec: dict[str, Any]) -> None:
        from .synthetic_folder import FolderSpec, make_synthetic_folder

        make_synthetic_folder(self.root, FolderSpec(**spec))

    def required_files(self, train: bool, test: bool) -> list[Path]:
        return []  # folders, not files: ``read_annotations`` checks them and names what breaks the layout

    def read_annotations(self, train: bool, test: bool) -> None:
        """The whole tree, every split in use, and the class count (this also writes or checks the split file)."""
        self.splits_on_disk  # noqa: B018
        for split in (["train", "val"] if train else []) + (["test"] if test else []):
            self.items(split)

    @functools.cached_property
    def classes(self) -> list[str]:
        root = self.root / "train" if has_split_folders(self.root) else self.root
        names = class_folders(root)
        if len(names) < 2:
            raise FolderLayoutError(f"{root}: one class folder ({names[0]!r}); a classifier needs at least two")
        if self.expected_classes is not None and len(names) != self.expected_classes:
            raise FolderLayoutError(
                f"{root}: {len(names)} class folders, but data.num_classes={self.expected_classes} "
                "(leave data.num_classes=null to use the folders' count)"
            )
        self.num_classes = len(names)  # counted now: a synthetic set is written after __init__ (prepare_data)
        return names

    @functools.cached_property
    def splits_on_disk(self) -> dict[str, list[tuple[str, int]]]:
        """``{split: [(ROOT-relative path, label)]}``: the user's split folders, or the seeded split (written or
        checked against ``split_file``)."""
        if not self.root.is_dir():
            raise FileNotFoundError(f"data.root: no such folder: {self.root}; expected {LAYOUT}")
        ids = {name: label for label, name in enumerate(self.classes)}
        if has_split_folders(self.root):
            if not (self.root / "val").is_dir():
                raise FolderLayoutError(
                    f"{self.root / 'train'} exists but {self.root / 'val'} does not: give val/<class>/<video> too, or move "
                    f"the class folders up into {self.root} for a seeded split"
                )
            out = {}
            for split in SPLITS:
                if not (self.root / split).is_dir():
                    log.info("%s: no %s/ folder: testing on val/", self.root, split)
                    out[split] = out["val"]
                    continue
                out[split] = []
                for name, files in scan_classes(self.root / split).items():
                    if name not in ids:
                        raise FolderLayoutError(
                            f"{self.root / split / name}: class folder not among the {len(ids)} classes of "
                            f"{self.root / 'train'} (every {split} class needs training videos)"
                        )
                    out[split] += [(f"{split}/{name}/{rel}", ids[name]) for rel in files]
            return out
        videos = scan_classes(self.root)
        split = stratified_split(videos, self.split_seed, self.val_fraction, self.test_fraction)
        self._check_or_write(split)
        if self.test_fraction == 0:
            split["test"] = split["val"]
        return split

    def _split_record(self, split: dict[str, list[tuple[str, int]]]) -> dict[str, Any]:
        return {
            "format": SPLIT_FORMAT,
            "seed": self.split_seed,
            "val_fraction": self.val_fraction,
            "test_fraction": self.test_fraction,
            "classes": self.classes,
            **{s: [list(item) for item in split[s]] for s in SPLITS},
        }

    def _check_or_write(self, split: dict[str, list[tuple[str, int]]]) -> None:
        """Write the split, or, when ``split_file`` exists, refuse a folder or settings that no longer give it."""
        record = self._split_record(split)
        path = self.split_file
        if path.is_file():
            try:
                saved = json.loads(path.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as e:
                raise FolderLayoutError(f"{path}: not a split file written by mvit_video ({e}); delete it for a new split") from e
            if saved == record:
                log.info("reusing the split in %s", path)
                return
            raise FolderLayoutError(self._difference(path, saved, record))
        try:
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
            os.replace(tmp, path)  # atomic: processes of one job write the same split, none reads half of one
        except OSError as e:
            raise OSError(f"cannot write the split file {path} ({e}); set data.split_file=PATH to a writable place") from e
        sizes = ", ".join(f"{s} {len(split[s])}" for s in SPLITS)
        log.info("wrote a seeded split of %s to %s (%s)", self.root, path, sizes)

    def _difference(self, path: Path, saved: dict[str, Any], record: dict[str, Any]) -> str:
        """What changed between the split file and the folder/settings, in a message that says what to do."""
        head = f"{path}: the folder or the split settings changed since this split was written, so it would not be the same split"
        fix = f"  Restore the folder, or delete {path} (or set data.split_file=NEW_PATH) to make a new split."
        lines = [head]
        for key in ("format", "seed", "val_fraction", "test_fraction"):
            if saved.get(key) != record[key]:
                lines.append(f"  {key}: {saved.get(key)!r} in the file, {record[key]!r} now")
        if saved.get("classes") != record["classes"]:
            lines.append(f"  classes: {saved.get('classes')} in the file, {record['classes']} now")
        was = {p for s in SPLITS for p, _ in saved.get(s, [])}
        now = {p for s in SPLITS for p, _ in record[s]}
        for word, paths in (("added", sorted(now - was)), ("removed", sorted(was - now))):
            if paths:
                more = f" and {len(paths) - 5} more" if len(paths) > 5 else ""
                lines.append(f"  {word}: {', '.join(paths[:5])}{more}")
        return "\n".join([*lines, fix])

    def read_items(self, split: str) -> list[tuple[str, int]]:
        return [(str(self.root / rel), label) for rel, label in self.splits_on_disk[split]]

    def frame_loader(self, mode: str) -> WindowFrames:
        return WindowFrames(self.num_frames, self.num_frames * self.sampling_rate / self.target_fps, self.decoder)

    @property
    def class_names(self) -> dict[int, str]:
        return dict(enumerate(self.classes))

    def class_counts(self) -> list[int]:
        """Training videos per class, in label order (for ``task.class_weights=balanced``)."""
        counts = [0] * len(self.classes)
        for _, label in self.items("train"):
            counts[label] += 1
        return counts

    def metadata(self) -> dict[str, Any]:
        return {**super().metadata(), "train_class_counts": self.class_counts()}
