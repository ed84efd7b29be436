"""A training sampler that makes every run's data exactly reproducible, and resumable in the middle of an epoch.

- The order of an epoch depends only on (seed, epoch), as in ``DistributedSampler``; each rank takes its share.
- Every sample comes with its own random seed, derived from (seed, epoch, position): the dataset seeds the decode
  and augmentation randomness with it. So a clip's augmentation does not depend on which worker loads it, or on
  whether the run was interrupted.
- After a mid-epoch checkpoint, the datamodule records how many batches of the epoch were done; on resume the
  sampler starts its first iteration of that epoch after them, so the rest of the epoch is what the uninterrupted
  run would have seen.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

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

    def skip_batches(self, epoch: int, batches: int) -> None:
        self._skip = (epoch, batches * self.batch_size) if batches > 0 else None

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


def make_loader(dataset, train: bool, batch_size: int, num_workers: int, collate_fn, seed: int | None = None,
                resume: tuple[int, int] | None = None):  # fmt: skip
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
        dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers, collate_fn=collate_fn,
        drop_last=train, pin_memory=torch.cuda.is_available(), persistent_workers=num_workers > 0,
        generator=torch.Generator(),  # worker seeds drawn here, not from the global generator the model uses
    )  # fmt: skip


class ResumableData:
    """Datamodule mixin: its ``state_dict`` (saved in every checkpoint) records how far into the running epoch
    training was; after a mid-epoch resume ``resume_position`` tells the training sampler what to skip."""

    resume_position: tuple[int, int] | None = None  # (epoch, batches done)

    def state_dict(self) -> dict[str, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None or not trainer.training:  # an end-of-epoch or evaluation checkpoint: nothing to skip
            return {}
        return {"epoch": trainer.current_epoch, "batches": trainer.fit_loop.epoch_loop.batch_progress.current.processed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.resume_position = (state["epoch"], state["batches"]) if state else None
