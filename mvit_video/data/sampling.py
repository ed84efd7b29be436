"""A training sampler that makes every run's data exactly reproducible, and resumable in the middle of an epoch.

- The order of an epoch depends only on (seed, epoch), as in ``DistributedSampler``; each rank takes its share.
- Every sample comes with its own random seed, derived from (seed, epoch, position): the dataset seeds the decode
  and augmentation randomness with it. So a clip's augmentation does not depend on which worker loads it, or on
  whether the run was interrupted.
- Every checkpoint records where training goes on: (epoch, batches of it done), ``(e + 1, 0)`` once epoch ``e`` has
  run all its batches. On resume the sampler starts at that epoch and skips those batches, so the rest is what the
  uninterrupted run would have seen. The sampler is set to that epoch when it is made, because a DataLoader with
  workers draws its first indices when Lightning creates the iterator, before Lightning calls ``set_epoch``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DistributedSampler

_MIX = 0x9E3779B97F4A7C15  # a 64-bit odd constant (golden ratio): spreads (seed, epoch, position) apart


def sample_seed(seed: int, epoch: int, position: int) -> int:
    return (seed * _MIX + epoch * 1_000_003 + position * 7919) % (2**62)


class ResumableSampler(DistributedSampler):
    """Yields ``(index, seed)`` pairs; ``skip_batches(epoch, n)`` makes the next iteration of ``epoch`` start at
    batch ``n`` of this rank's share (``batch_size`` samples per batch)."""

    def __init__(
        self, dataset, batch_size: int, num_replicas: int = 1, rank: int = 0, shuffle: bool = True, seed: int = 0
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=True)
        self.batch_size = batch_size
        self._skip: tuple[int, int] | None = None  # (epoch, samples of this rank to skip)
        self._resume_epoch: int | None = None  # the epoch the first set_epoch must confirm (see skip_batches)

    def skip_batches(self, epoch: int, batches: int) -> None:
        """Resume at batch ``batches`` of ``epoch``: the sampler moves to ``epoch`` now (a loader with workers
        iterates before Lightning's ``set_epoch``), and the first ``set_epoch`` must name the same epoch."""
        self.set_epoch(epoch)
        self._resume_epoch = epoch
        self._skip = (epoch, batches * self.batch_size) if batches > 0 else None

    def set_epoch(self, epoch: int) -> None:
        if self._resume_epoch is not None and epoch != self._resume_epoch:
            raise RuntimeError(
                f"resume: the checkpoint's data position is epoch {self._resume_epoch} (data/sampling.py), but the "
                f"trainer restarts at epoch {epoch}; the loader may already have drawn the other epoch's samples. "
                "Was the checkpoint written by another version of mvit_video?"
            )
        self._resume_epoch = None
        super().set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = list(super().__iter__())  # this rank's share of the (seed, epoch) permutation
        start = 0
        if self._skip is not None and self._skip[0] == self.epoch:
            start, self._skip = self._skip[1], None
        for pos in range(start, len(indices)):
            global_pos = pos * self.num_replicas + self.rank  # the same seed whatever the number of ranks
            yield indices[pos], sample_seed(self.seed, self.epoch, global_pos)


def seeded(index) -> tuple[int, int | None]:
    """``dataset[i]`` or ``dataset[(i, seed)]``: the index and the sample's seed (None: draw one)."""
    if isinstance(index, (tuple, list)):
        return int(index[0]), int(index[1])
    return int(index), None


@contextlib.contextmanager
def fork_rng(seed: int | None):
    """Within it, torch's global generator is seeded with ``seed`` (and restored afterwards); a no-op for None."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def world() -> tuple[int, int]:
    """(number of processes, this rank) of the initialised process group, or (1, 0)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


def gather_lists(items: list) -> list:
    """Every process's ``items`` concatenated in rank order (picklable objects), or ``items`` alone without a
    process group: per-process results (unreadable files, AVA detections) joined for one report."""
    replicas, _ = world()
    if replicas == 1:
        return list(items)
    parts: list[list | None] = [None] * replicas
    torch.distributed.all_gather_object(parts, list(items))
    return [item for part in parts for item in part or ()]


def make_loader(
    dataset,
    train: bool,
    batch_size: int,
    num_workers: int,
    collate_fn,
    seed: int | None = None,
    resume: tuple[int, int] | None = None,
):
    """The DataLoader of a split, with its sampler made here rather than by Lightning (the trainer runs with
    ``use_distributed_sampler=False``): training gets a ``ResumableSampler`` over this rank's share (``resume``:
    (epoch, batches) already done), evaluation a non-shuffling ``DistributedSampler`` when there are several
    processes, as Lightning would give it."""
    from torch.utils.data import DataLoader

    replicas, rank = world()
    if train:
        seed = torch.initial_seed() % 2**62 if seed is None else seed
        sampler = ResumableSampler(dataset, batch_size, replicas, rank, shuffle=True, seed=seed)
        if resume is not None:
            sampler.skip_batches(*resume)
    else:
        sampler = DistributedSampler(dataset, replicas, rank, shuffle=False) if replicas > 1 else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_fn,
        drop_last=train,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=num_workers > 0,
        generator=torch.Generator(),  # worker seeds drawn here, not from the global generator the model uses
        worker_init_fn=functools.partial(init_worker, rank=rank) if num_workers > 0 else None,
    )


STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGUSR2")  # what callbacks.Preemption turns into a checkpoint and a stop


def init_worker(worker_id: int, rank: int) -> None:
    """A DataLoader worker ignores the stop signals: a terminal's Ctrl-C reaches the whole process group and SLURM
    signals every process of the step, and a worker killed by one would crash the main process before it saves
    its checkpoint. The main process shuts the workers down. Seeds the worker as Lightning would have."""
    for name in STOP_SIGNALS:
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    if int(os.environ.get("PL_SEED_WORKERS", "0")):  # seed_everything(workers=True): Lightning's own worker seeding
        from lightning.fabric.utilities.seed import pl_worker_init_function

        pl_worker_init_function(worker_id, rank=rank)


class ResumableData:
    """Datamodule mixin: counts the training batches it hands out in the running epoch (``on_after_batch_transfer``,
    called as each batch goes to the model), and its ``state_dict`` (saved in every checkpoint) records how far
    into that epoch training was; after a mid-epoch resume ``resume_position`` tells the training sampler what to
    skip."""

    resume_position: tuple[int, int] | None = None  # (epoch, batches done), from the checkpoint
    _position: tuple[int, int] | None = None  # (epoch, training batches handed out in it) in this run

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        trainer = getattr(self, "trainer", None)
        if trainer is not None and trainer.training:
            epoch = trainer.current_epoch
            done = self._position[1] if self._position is not None and self._position[0] == epoch else 0
            self._position = (epoch, done + 1)
        return batch

    def state_dict(self) -> dict[str, int]:
        """Where training goes on from this checkpoint, the way Lightning's loops restart from it: the running
        epoch and its batches done, or the next epoch once all batches of an epoch ran (saved at its batch end, in
        its validation or at its end)."""
        trainer = getattr(self, "trainer", None)
        if trainer is None or trainer.state.fn != "fit":
            return {}
        epoch = trainer.current_epoch
        if self._position is None or self._position[0] != epoch:  # between epochs: at an epoch's end or start
            return {"epoch": epoch, "batches": 0}
        batches = self._position[1]
        if batches >= trainer.num_training_batches:  # the epoch's last batch ran
            return {"epoch": epoch + 1, "batches": 0}
        return {"epoch": epoch, "batches": batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.resume_position = (state["epoch"], state["batches"]) if state else None
        self._position = self.resume_position
