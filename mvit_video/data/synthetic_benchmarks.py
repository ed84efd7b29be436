"""Tiny UCF101, HMDB51 and Charades datasets in their official layouts, so the real readers are tested on files laid
out as the downloads are (``ucf101.py``, ``hmdb51.py``, ``charades.py`` describe each layout).

The videos are the synthetic motion classes of ``synthetic.render_video`` (class i of a benchmark shows motion i),
so a model trained on them beats chance only by using motion. What each writer reproduces of the real files:

- UCF101: MPEG-4 Part 2 AVI files with B-frames (as the DivX/XviD originals), 25 fps; ``classInd.txt`` and the split
  lists with CRLF line ends; class ``HandstandPushups`` whose files are named ``v_HandStandPushups_g01_c01.avi``;
  groups ``gNN`` of clips ``cNN``, split k testing on group k (the official splits test on 7 groups each).
- HMDB51: AVI files at 30 fps; per-class ``<class>_test_split{1,2,3}.txt`` with flags 1/2/0 and the official trailing
  space; class names with underscores.
- Charades: ``Charades_v1_{train,test}.csv`` with every official column (quoted scripts with commas), actions
  ``c001 0.00 1.20;c003 1.20 2.50`` (a video may have none), ``Charades_v1_classes.txt``, H.264 ``Charades_v1_480/ID.mp4``
  at 30 fps and ``Charades_v1_rgb/ID/ID-000001.jpg`` frames that the ffmpeg CLI extracts from the mp4 at 24 fps, as
  the official RGB release was made. A video is a sequence of segments, each one motion class: its actions.
"""

from __future__ import annotations

import csv
import functools
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import synthetic
from .synthetic import H264, SyntheticSpec, freeze_lists, is_cached, mark_cached, render_video, run_jobs, write_video

UCF_CLASSES = ("ApplyEyeMakeup", "HandstandPushups", "JumpRope", "PlayingDhol", "Rowing", "Surfing", "WalkingWithDog", "YoYo")
UCF_FILE_STEM = {"HandstandPushups": "HandStandPushups"}  # the official files' spelling differs from the folder's
HMDB_CLASSES = ("brush_hair", "cartwheel", "fall_floor", "kick_ball", "pour", "shoot_ball", "sword_exercise", "wave")
CHARADES_CLASSES = (  # the first official classes (Charades_v1_classes.txt)
    "Holding some clothes",
    "Putting clothes somewhere",
    "Taking some clothes from somewhere",
    "Throwing clothes somewhere",
    "Tidying some clothes",
    "Washing some clothes",
    "Closing a door",
    "Fixing a door",
)
CHARADES_COLUMNS = (
    "id",
    "subject",
    "scene",
    "quality",
    "relevance",
    "verified",
    "script",
    "objects",
    "descriptions",
    "actions",
    "length",
)
CHARADES_FRAME_FPS = 24  # the official RGB frames
MPEG4_AVI = ("mpeg4", {"bf": "2", "qscale": "4"})  # DivX/XviD-like: B-frames packed in AVI


@dataclass(frozen=True)
class BenchmarkSpec:
    """UCF101/HMDB51: ``groups`` groups of ``clips`` clips per class (split k tests on group k)."""

    num_classes: int = 4
    groups: int = 3
    clips: int = 2
    min_seconds: float = 1.0
    max_seconds: float = 1.5
    min_side: int = 56
    max_side: int = 72
    seed: int = 0
    version: int = 1

    def __post_init__(self) -> None:
        if not 2 <= self.num_classes <= len(UCF_CLASSES) or self.groups < 3:
            raise ValueError(f"num_classes in [2, {len(UCF_CLASSES)}] and groups >= 3 (one test group per split)")


@dataclass(frozen=True)
class CharadesSpec:
    """``segments`` actions per video, each ``segment_seconds`` long (a range); every ``empty_every``-th video has
    no action at all (as some official videos)."""

    num_classes: int = 4
    train_videos: int = 8
    test_videos: int = 4
    segments: int = 2
    segment_seconds: tuple[float, float] = (1.0, 1.5)
    side: int = 64
    fps: int = 30
    empty_every: int = 5
    seed: int = 0
    version: int = 1

    def __post_init__(self) -> None:
        freeze_lists(self)
        if not 2 <= self.num_classes <= len(CHARADES_CLASSES):
            raise ValueError(f"num_classes must be in [2, {len(CHARADES_CLASSES)}]")


def _map(fn: Callable[[Any], Any], jobs: list, desc: str, workers: int | None) -> list:
    """``run_jobs`` in a process pool, or in this process with ``workers=0`` (tests: no pool start-up)."""
    return [fn(job) for job in jobs] if workers == 0 else run_jobs(fn, jobs, desc, workers)


def _render(label: int, seed: int, spec: BenchmarkSpec, fps: int) -> np.ndarray:
    render_spec = SyntheticSpec(
        min_seconds=spec.min_seconds,
        max_seconds=spec.max_seconds,
        fps_choices=(fps,),
        min_side=spec.min_side,
        max_side=spec.max_side,
    )
    return render_video(label, np.random.default_rng(seed), render_spec)[0]  # (N, H, W, 3)


def _write_avi(job: tuple[str, int, int], root: str, spec: BenchmarkSpec, fps: int) -> None:
    rel, label, seed = job
    write_video(Path(root) / rel, _render(label, seed, spec, fps), fps, MPEG4_AVI)


def _cached(root: Path, name: str, spec: Any) -> tuple[Path, dict, bool]:
    marker = root / name
    key = {**asdict(spec), "render_version": synthetic.RENDER_VERSION}
    return marker, key, is_cached(marker, key)


def make_synthetic_ucf101(root: str | Path, spec: BenchmarkSpec | None = None, workers: int | None = None) -> Path:
    """``root/UCF-101/<Class>/v_<Class>_gNN_cNN.avi`` and ``root/ucfTrainTestlist/`` (cached by spec)."""
    spec, root = spec or BenchmarkSpec(), Path(root)
    marker, key, done = _cached(root, "synthetic_ucf101.json", spec)
    if done:
        return root
    names = UCF_CLASSES[: spec.num_classes]
    jobs, groups = [], {g: [] for g in range(1, spec.groups + 1)}
    for label, name in enumerate(names):
        stem = UCF_FILE_STEM.get(name, name)
        for g in groups:
            for c in range(1, spec.clips + 1):
                rel = f"{name}/v_{stem}_g{g:02d}_c{c:02d}.avi"
                jobs.append((f"UCF-101/{rel}", label, spec.seed * 1_000_003 + (label * 100 + g) * 100 + c))
                groups[g].append((rel, label))
    _map(functools.partial(_write_avi, root=str(root), spec=spec, fps=25), jobs, "synthetic UCF101", workers)
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True, exist_ok=True)
    crlf = lambda lines: "".join(f"{line}\r\n" for line in lines).encode()  # noqa: E731  the official line ends
    (lists / "classInd.txt").write_bytes(crlf(f"{i + 1} {name}" for i, name in enumerate(names)))
    for split in (1, 2, 3):
        train = [f"{rel} {label + 1}" for g, items in groups.items() if g != split for rel, label in items]
        (lists / f"trainlist{split:02d}.txt").write_bytes(crlf(train))
        (lists / f"testlist{split:02d}.txt").write_bytes(crlf(rel for rel, _ in groups[split]))
    mark_cached(marker, key)
    return root


def make_synthetic_hmdb51(root: str | Path, spec: BenchmarkSpec | None = None, workers: int | None = None) -> Path:
    """``root/hmdb51_org/<class>/<video>.avi`` and ``root/testTrainMulti_7030_splits/<class>_test_split{1,2,3}.txt``:
    in split k group k is tested, one clip of group k+1 is unused (flag 0), the rest train."""
    spec, root = spec or BenchmarkSpec(), Path(root)
    marker, key, done = _cached(root, "synthetic_hmdb51.json", spec)
    if done:
        return root
    jobs, videos = [], {}
    for label, name in enumerate(HMDB_CLASSES[: spec.num_classes]):
        videos[name] = []
        for g in range(1, spec.groups + 1):
            for c in range(spec.clips):
                video = f"Synthetic_{g}_{name}_f_cm_np1_fr_med_{c}.avi"
                jobs.append((f"hmdb51_org/{name}/{video}", label, spec.seed * 1_000_003 + (label * 100 + g) * 100 + c))
                videos[name].append((video, g, c))
    _map(functools.partial(_write_avi, root=str(root), spec=spec, fps=30), jobs, "synthetic HMDB51", workers)
    splits = root / "testTrainMulti_7030_splits"
    splits.mkdir(parents=True, exist_ok=True)
    for name, entries in videos.items():
        for split in (1, 2, 3):
            unused = split % spec.groups + 1  # this group's first clip is in neither part
            flags = [2 if g == split else 0 if (g == unused and c == 0) else 1 for _, g, c in entries]
            lines = [f"{video} {flag} \n" for (video, _, _), flag in zip(entries, flags)]  # the official trailing space
            (splits / f"{name}_test_split{split}.txt").write_text("".join(lines))
    mark_cached(marker, key)
    return root


def _charades_video(job: tuple[str, list[int], int], root: str, spec: CharadesSpec) -> str:
    """Render one video of ``segments`` (a class each), write its mp4 and its 24 fps JPEG frames; returns the
    actions field ``c001 0.00 1.20;...``."""
    vid, labels, seed = job
    rng = np.random.default_rng(seed)
    render_spec = SyntheticSpec(fps_choices=(spec.fps,), min_side=spec.side, max_side=spec.side)
    parts, actions, start = [], [], 0.0
    for label in labels:
        seconds = rng.uniform(*spec.segment_seconds)
        seg_spec = SyntheticSpec(**{**asdict(render_spec), "min_seconds": seconds, "max_seconds": seconds})
        frames = render_video(label, rng, seg_spec)[0]  # (N, H, W, 3)
        end = start + len(frames) / spec.fps
        parts.append(frames)
        actions.append(f"c{label:03d} {start:.2f} {end:.2f}")
        start = end
    if not parts:  # a video without actions: a still background
        parts.append(np.full((spec.fps, spec.side, spec.side, 3), int(rng.integers(0, 256)), dtype=np.uint8))
    video = Path(root) / "Charades_v1_480" / f"{vid}.mp4"
    write_video(video, np.concatenate(parts), spec.fps, H264)
    frame_dir = Path(root) / "Charades_v1_rgb" / vid
    frame_dir.mkdir(parents=True, exist_ok=True)
    cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(video), "-vf", f"fps={CHARADES_FRAME_FPS}"]
    subprocess.run([*cmd, "-q:v", "2", str(frame_dir / f"{vid}-%06d.jpg")], check=True)
    return ";".join(actions)


def make_synthetic_charades(root: str | Path, spec: CharadesSpec | None = None, workers: int | None = None) -> Path:
    """The official Charades files under ``root`` (cached by spec). Needs the ``ffmpeg`` CLI for the frames."""
    spec, root = spec or CharadesSpec(), Path(root)
    marker, key, done = _cached(root, "synthetic_charades.json", spec)
    if done:
        return root
    if shutil.which("ffmpeg") is None:
        raise RuntimeError("synthetic Charades needs the ffmpeg CLI (apt install ffmpeg) to extract the 24 fps frames")
    rng = np.random.default_rng(spec.seed)
    jobs, rows = [], {"train": [], "test": []}
    for split, count in (("train", spec.train_videos), ("test", spec.test_videos)):
        for i in range(count):
            vid = f"{'TV'[split == 'test']}{i:04d}"  # 5 characters, as the official ids (46GP8)
            empty = spec.empty_every and i % spec.empty_every == spec.empty_every - 1
            labels = [] if empty else [int(c) for c in rng.choice(spec.num_classes, spec.segments, replace=False)]
            jobs.append((vid, labels, spec.seed * 1_000_003 + len(jobs)))
            rows[split].append(vid)
    actions = dict(
        zip(
            [j[0] for j in jobs],
            _map(functools.partial(_charades_video, root=str(root), spec=spec), jobs, "synthetic Charades", workers),
        )
    )
    for split, vids in rows.items():
        with (root / f"Charades_v1_{split}.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(CHARADES_COLUMNS)
            for vid in vids:
                length = sum(float(a.split()[2]) - float(a.split()[1]) for a in actions[vid].split(";") if a) or 1.0
                script = 'A person moves a thing, then "another" thing.'  # commas and quotes, as the scripts have
                writer.writerow(
                    [
                        vid,
                        "SYN1",
                        "Bedroom",
                        6,
                        7,
                        "Yes",
                        script,
                        "thing;another",
                        "A thing moves.",
                        actions[vid],
                        f"{length:.2f}",
                    ]
                )
    (root / "Charades_v1_classes.txt").write_text(
        "".join(f"c{i:03d} {n}\n" for i, n in enumerate(CHARADES_CLASSES[: spec.num_classes]))
    )
    mark_cached(marker, key)
    return root
