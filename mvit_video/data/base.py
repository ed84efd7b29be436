"""The one base of every datamodule, and of every dataset that reads ``(index, seed)`` from the resumable sampler.

A datamodule states its files and how to make a split's dataset; the base owns the rest, the same for every
dataset: the synthetic hook in ``prepare_data``, the required-files check (``check_files``, run by ``train.run``
before the model is built), ``setup``, the loaders (``sampling.make_loader``) and the resumable state
(``sampling.ResumableData``). After ``check_files`` the datamodule also answers ``class_names`` (label id -> name)
and ``metadata()`` (the preprocessing stored in checkpoints), before ``setup``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
from torch.utils.data import DataLoader, Dataset, default_collate

from .sampling import ResumableData, fork_rng, make_loader, seeded

STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}


def files_under(folder: Path, extensions: tuple[str, ...], kind: str, error: type[Exception] = ValueError) -> list[str]:
    """Every file under ``folder`` (sub-folders and symlinks followed, hidden entries skipped), sorted by folder then
    name: the one walk of the folder-per-class layouts (videos, images). A file without one of ``extensions`` is an
    ``error`` naming it: a stray file in a class folder is a mistake to show, not to skip."""
    files = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(f for f in filenames if not f.startswith(".")):
            path = os.path.join(dirpath, name)
            if not name.lower().endswith(extensions):
                raise error(f"{path}: not {kind} file (extensions: {' '.join(extensions)})")
            files.append(path)
    return files


class SeededDataset(Dataset):
    """``dataset[i]`` or ``dataset[(i, seed)]`` (from ``ResumableSampler``): with a seed, everything random in
    ``get`` (clip window, augmentation, replacement of an unreadable video) is drawn from it, so a sample does not
    depend on the worker that loads it or on whether the run was interrupted."""

    def __getitem__(self, index) -> dict[str, Any]:
        index, seed = seeded(index)
        with fork_rng(seed):
            return self.get(index)

    def get(self, index: int) -> dict[str, Any]:
        raise NotImplementedError


class VideoDataModule(ResumableData, L.LightningDataModule):
    """Subclasses give ``required_files``, ``make_dataset``, ``class_names`` and ``metadata``, and where they have
    one, ``write_synthetic`` (``synthetic``: the generator's spec fields, written into ``root`` once and cached)."""

    collate_fn = staticmethod(default_collate)

    def __init__(
        self,
        root: str | Path,
        batch_size: int,
        num_workers: int,
        test_batch_size: int | None = None,
        synthetic: dict | None = None,
    ) -> None:
        super().__init__()
        self.root = Path(root)
        self.batch_size, self.test_batch_size = batch_size, test_batch_size or batch_size
        self.num_workers = num_workers
        self.synthetic = synthetic
        self.datasets: dict[str, Dataset] = {}

    # What a dataset states -------------------------------------------------------------------------------------

    def write_synthetic(self, spec: dict[str, Any]) -> None:
        raise NotImplementedError(f"{type(self).__name__} has no synthetic generator (set data.synthetic=null)")

    def required_files(self, train: bool, test: bool) -> list[Path]:
        """The annotation files the splits in use need."""
        raise NotImplementedError

    def missing_file_message(self, path: Path) -> str:
        """What a missing required file's error says: the file, and where the layout is described."""
        return f"{type(self).__name__}: file not found: {path}"

    def read_annotations(self, train: bool, test: bool) -> None:
        """Read (and so check the format of) what the splits in use need, before the first step."""

    def make_dataset(self, split: str) -> Dataset:
        raise NotImplementedError

    @property
    def class_names(self) -> dict[int, str]:
        """Label id -> name of the classes the model predicts (and is evaluated on)."""
        raise NotImplementedError

    def metadata(self) -> dict[str, Any]:
        """Preprocessing a trained model needs, stored in its checkpoints."""
        raise NotImplementedError

    def splits(self, stage: str | None) -> tuple[str, ...]:
        """The datasets ``setup(stage)`` makes."""
        return STAGE_SPLITS.get(stage, ("train", "val", "test"))

    # What the base does with it --------------------------------------------------------------------------------

    def prepare_data(self) -> None:
        if self.synthetic is not None:
            self.write_synthetic(dict(self.synthetic))

    def check_files(self, train: bool = True, test: bool = True) -> None:
        """Fail fast, before a model is built or a step is run: a missing annotation file (with how to make it), a
        malformed line in any split that will be used, class names that do not match ``num_classes``. Each error
        names the file (and the line)."""
        for path in self.required_files(train, test):
            if not path.is_file():
                raise FileNotFoundError(self.missing_file_message(path))
        self.read_annotations(train, test)
        self.class_names  # noqa: B018  read and checked now (cached for the checkpoints)

    def setup(self, stage: str | None = None) -> None:
        for split in self.splits(stage):
            self.datasets[split] = self.make_dataset(split)

    def loader(self, split: str, train: bool = False) -> DataLoader:
        """A split's loader; training resumes where the checkpoint's ``resume_position`` says."""
        resume = self.resume_position if train else None
        batch_size = self.test_batch_size if split.startswith("test") else self.batch_size
        return make_loader(self.datasets[split], train, batch_size, self.num_workers, self.collate_fn, resume=resume)

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader("val")

    def test_dataloader(self) -> DataLoader | list[DataLoader]:
        return self.loader("test")
