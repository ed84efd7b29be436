"""A synthetic folder-per-class video set (``data=folder`` with ``data.synthetic``), for the fine-tuning checks.

The classes differ only by the direction of motion (``synthetic.render_video``'s left, right, up, down: the same
objects, colours, sizes, backgrounds and start positions), so one frame, or a clip with its frames shuffled in time,
says nothing about the class. Class folder names hold spaces and non-ASCII characters, and the videos cycle through
the containers and codecs people have (H.264 in mp4 and mkv, VP9 in webm, MPEG-4 Part 2 in avi), as a user's folder
would. Written once into ``root`` and cached (``synthetic_folder.json`` records the spec).
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .synthetic import H264, VP9, SyntheticSpec, freeze_lists, is_cached, mark_cached, render_video, run_jobs, write_video

# folder name -> synthetic.CLASSES label: direction of motion only
DIRECTION_CLASSES = {"moving left ←": 0, "moving right →": 1, "moving up ↑": 2, "moving down ↓": 3}
MPEG4 = ("mpeg4", {"qscale": "3"})  # DivX-style .avi
CONTAINERS = ((".mp4", H264), (".mkv", H264), (".webm", VP9), (".avi", MPEG4))


@dataclass(frozen=True)
class FolderSpec:
    """``per_class``: videos per class (one number, or one per class for an imbalanced set). The video sizes and
    lengths are ``SyntheticSpec``'s fields of the same names."""

    num_classes: int = 4
    per_class: int | tuple[int, ...] = 30
    min_seconds: float = 2.0
    max_seconds: float = 3.0
    min_side: int = 56
    max_side: int = 96
    seed: int = 0

    def __post_init__(self) -> None:
        freeze_lists(self)
        if not 2 <= self.num_classes <= len(DIRECTION_CLASSES):
            raise ValueError(f"num_classes must be in [2, {len(DIRECTION_CLASSES)}], got {self.num_classes}")
        if isinstance(self.per_class, tuple) and len(self.per_class) != self.num_classes:
            raise ValueError(f"per_class has {len(self.per_class)} counts for {self.num_classes} classes")

    def counts(self) -> list[int]:
        return list(self.per_class) if isinstance(self.per_class, tuple) else [self.per_class] * self.num_classes


def _make_one(job: tuple[str, int, int, int], root: str, spec: FolderSpec) -> str:
    rel, label, seed, container = job
    render = SyntheticSpec(
        min_seconds=spec.min_seconds, max_seconds=spec.max_seconds, min_side=spec.min_side, max_side=spec.max_side
    )
    frames, fps = render_video(label, np.random.default_rng(seed), render)  # (N, H, W, 3) uint8
    write_video(Path(root) / rel, frames, fps, CONTAINERS[container][1])
    return rel


def make_synthetic_folder(root: str | Path, spec: FolderSpec | None = None, workers: int | None = None) -> Path:
    """Write ``root/<class>/<class>_<i>.<ext>`` for ``spec``'s direction classes; cached by spec."""
    spec = spec or FolderSpec()
    root = Path(root)
    marker = root / "synthetic_folder.json"
    if is_cached(marker, asdict(spec)):
        return root
    root.mkdir(parents=True, exist_ok=True)
    jobs = []
    for (name, label), count in zip(list(DIRECTION_CLASSES.items())[: spec.num_classes], spec.counts()):
        for i in range(count):
            container = (i + label) % len(CONTAINERS)
            seed = spec.seed * 1_000_003 + label * 100_000 + i
            jobs.append((f"{name}/{name.split()[1]}_{i:04d}{CONTAINERS[container][0]}", label, seed, container))
    run_jobs(functools.partial(_make_one, root=str(root), spec=spec), jobs, "synthetic folder videos", workers)
    mark_cached(marker, asdict(spec))
    return root
