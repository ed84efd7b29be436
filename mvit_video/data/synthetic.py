"""Synthetic Kinetics-format dataset: real H.264 mp4 files and ``path label`` CSVs.

Every class is a direction of motion of the same kind of object (left vs right, up vs down, growing vs
shrinking, clockwise vs counter-clockwise), with random colours, sizes, start positions, textured
backgrounds, noise, frame rates and resolutions: a single frame never gives the class away, and a clip whose
frames are shuffled in time loses it.
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from multiprocessing import get_context
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image, ImageDraw

CLASSES = (
    "moving_left",
    "moving_right",
    "moving_up",
    "moving_down",
    "growing",
    "shrinking",
    "rotating_clockwise",
    "rotating_counterclockwise",
)
SPLITS = ("train", "val", "test")
T = TypeVar("T")
RENDER_VERSION = 3  # of render_video and write_video: bump when what they write changes, so caches are regenerated


def freeze_lists(spec) -> None:
    """Give a frozen spec tuples where YAML gave lists (OmegaConf's too), so that specs compare and hash alike."""
    for f in fields(spec):
        value = getattr(spec, f.name)
        if isinstance(value, Sequence) and not isinstance(value, (str, tuple)):
            object.__setattr__(spec, f.name, tuple(value))


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate; the spec is written next to the data, and a matching spec means the cache is valid."""

    num_classes: int = 8
    train_per_class: int = 100
    val_per_class: int = 10
    test_per_class: int = 10
    min_seconds: float = 2.0
    max_seconds: float = 3.0
    fps_choices: tuple[int, ...] = (12, 15, 24, 25, 30)
    min_side: int = 56
    max_side: int = 96
    seed: int = 0
    version: int = RENDER_VERSION  # part of the cache key: a changed renderer regenerates cached datasets

    def __post_init__(self) -> None:
        freeze_lists(self)
        if not 2 <= self.num_classes <= len(CLASSES):
            raise ValueError(f"num_classes must be in [2, {len(CLASSES)}], got {self.num_classes}")


def _polygon(kind: int, cx: float, cy: float, size: float, angle: float) -> list[tuple[float, float]]:
    """An asymmetric arrow-like polygon, so that rotation direction is visible."""
    if kind == 0:  # bar with a notch
        pts = [(-1.0, -0.35), (1.0, -0.35), (1.0, 0.35), (0.2, 0.35), (0.0, 0.6), (-1.0, 0.35)]
    elif kind == 1:  # arrow
        pts = [(-1.0, -0.3), (0.3, -0.3), (0.3, -0.7), (1.0, 0.0), (0.3, 0.7), (0.3, 0.3), (-1.0, 0.3)]
    else:  # L shape
        pts = [(-1.0, -1.0), (-0.4, -1.0), (-0.4, 0.4), (1.0, 0.4), (1.0, 1.0), (-1.0, 1.0)]
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + size * (x * c - y * s), cy + size * (x * s + y * c)) for x, y in pts]


def render_video(label: int, rng: np.random.Generator, spec: SyntheticSpec) -> tuple[np.ndarray, int]:
    """Frames ``(N, H, W, 3)`` uint8 and the frame rate for one video of class ``label``."""
    fps = int(rng.choice(spec.fps_choices))
    n = max(8, int(round(rng.uniform(spec.min_seconds, spec.max_seconds) * fps)))
    w = int(rng.integers(spec.min_side, spec.max_side + 1)) // 2 * 2
    h = int(rng.integers(spec.min_side, spec.max_side + 1)) // 2 * 2
    bg = rng.integers(0, 256, size=3)
    fg = (bg + rng.integers(80, 176, size=3)) % 256  # far enough from the background to be seen
    texture = rng.normal(0, rng.uniform(2, 8), size=(h // 8 + 1, w // 8 + 1, 3)).repeat(8, 0).repeat(8, 1)[:h, :w]
    background = np.clip(bg + texture, 0, 255).astype(np.uint8)
    kind = int(rng.integers(0, 3))
    size = rng.uniform(0.25, 0.35) * min(h, w)
    angle = rng.uniform(0, 2 * math.pi)
    name = CLASSES[label]
    # Motion over the whole video; start positions drawn so both directions cover the same places.
    travel = rng.uniform(0.9, 1.3)  # fraction of the frame crossed; objects wrap around the edges
    sign = -1.0 if name in ("moving_left", "moving_up") else 1.0
    x0, y0 = rng.uniform(0.35, 0.65) * w, rng.uniform(0.35, 0.65) * h
    spin = rng.uniform(0.6, 1.2) * math.pi * (1 if name == "rotating_clockwise" else -1)  # rad / s
    grow = rng.uniform(3.0, 4.0)
    noise_sigma = rng.uniform(1, 5)
    frames = np.empty((n, h, w, 3), dtype=np.uint8)
    for i in range(n):
        p = i / (n - 1) - 0.5  # -0.5 .. 0.5 across the video
        cx, cy, sz, ang = x0, y0, size, angle
        if name in ("moving_left", "moving_right"):
            cx = x0 + sign * p * travel * w
        elif name in ("moving_up", "moving_down"):
            cy = y0 + sign * p * travel * h
        elif name in ("growing", "shrinking"):
            sz = size * grow ** (p if name == "growing" else -p)
        else:
            ang = angle + spin * i / fps
        img = Image.fromarray(background)
        draw = ImageDraw.Draw(img)
        cx, cy = cx % w, cy % h
        for dx in (-w, 0, w):  # wrap around: the object never leaves the frame
            for dy in (-h, 0, h):
                draw.polygon(_polygon(kind, cx + dx, cy + dy, sz, ang), fill=tuple(int(c) for c in fg))
        frame = np.asarray(img, dtype=np.float32) + rng.normal(0, noise_sigma, size=(h, w, 1))
        frames[i] = np.clip(frame, 0, 255).astype(np.uint8)
    return frames, fps


H264 = ("libx264", {"crf": "23", "preset": "ultrafast", "tune": "fastdecode"})  # Kinetics-style .mp4
VP9 = ("libvpx-vp9", {"deadline": "realtime", "cpu-used": "8", "crf": "30", "b:v": "0"})  # SSv2's .webm


def write_video(path: Path, frames: np.ndarray, fps: int, codec: tuple[str, dict] = H264) -> None:
    """Encode ``(N, H, W, 3)`` uint8 frames (yuv420p) with PyAV; ``codec`` is (encoder name, encoder options)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec[0], rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = dict(codec[1])
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def is_cached(marker: Path, key: dict) -> bool:
    """Whether ``marker`` (written by ``mark_cached`` when a dataset was complete) records ``key``: then the
    dataset next to it is what ``key`` describes and nothing is regenerated."""
    return marker.is_file() and json.loads(marker.read_text()) == json.loads(json.dumps(key))


def mark_cached(marker: Path, key: dict) -> None:
    marker.write_text(json.dumps(key, indent=1))


def run_jobs(fn: Callable[[Any], T], jobs: list, desc: str, workers: int | None = None) -> list[T]:
    """``fn`` over ``jobs`` in a pool of spawned processes (a progress bar on stderr); results in completion
    order. ``fn`` must be picklable: a module-level function, or a ``functools.partial`` of one."""
    from tqdm import tqdm

    with get_context("spawn").Pool(workers or min(4, os.cpu_count() or 1)) as pool:
        return list(tqdm(pool.imap_unordered(fn, jobs, chunksize=8), total=len(jobs), desc=desc))


def write_frame_list(path: Path, videos: Sequence[tuple[str, Sequence[str]]]) -> None:
    """An official 5-column frame list (AVA, SSv2 frames; read by ``annotations.read_frame_lists``) of
    ``(video id, [frame paths])`` in order."""
    rows = ["original_vido_id video_id frame_id path labels"]  # the official header, typo included
    for index, (video, frames) in enumerate(videos):
        rows += [f'{video} {index} {i} {frame} ""' for i, frame in enumerate(frames)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(rows) + "\n")


def _make_one(job: tuple[str, int, int], root: str, spec: SyntheticSpec) -> str:
    rel, label, seed = job
    frames, fps = render_video(label, np.random.default_rng(seed), spec)
    write_video(Path(root) / rel, frames, fps)
    return rel


def make_synthetic_kinetics(root: str | Path, spec: SyntheticSpec | None = None, workers: int | None = None) -> Path:
    """Write the dataset under ``root`` (``videos/``, ``{train,val,test}.csv``, ``classnames.txt``).

    Cached: if ``root/synthetic.json`` records the same spec, nothing is regenerated.
    """
    spec = spec or SyntheticSpec()
    root = Path(root)
    marker = root / "synthetic.json"
    if is_cached(marker, asdict(spec)):
        return root
    root.mkdir(parents=True, exist_ok=True)
    names = CLASSES[: spec.num_classes]
    per_split = {"train": spec.train_per_class, "val": spec.val_per_class, "test": spec.test_per_class}
    jobs, rows = [], {s: [] for s in SPLITS}
    for s_idx, split in enumerate(SPLITS):
        for label, name in enumerate(names):
            for i in range(per_split[split]):
                rel = f"videos/{split}/{name}/{name}_{i:05d}.mp4"
                seed = spec.seed * 1_000_003 + (s_idx * 100 + label) * 100_000 + i
                jobs.append((rel, label, seed))
                rows[split].append(f"{rel} {label}")
    run_jobs(functools.partial(_make_one, root=str(root), spec=spec), jobs, "synthetic videos", workers)
    for split in SPLITS:
        (root / f"{split}.csv").write_text("\n".join(rows[split]) + "\n")
    (root / "classnames.txt").write_text("\n".join(names) + "\n")
    mark_cached(marker, asdict(spec))
    return root
