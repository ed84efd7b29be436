"""Synthetic Something-Something-v2 in the official layout: VP9 ``.webm`` videos at 12 fps, the same videos as JPEG
frame folders with frame lists, and the labels / train / validation JSON files.

The templates depend on direction and order: a horizontal flip swaps "left to right" with "right to left" and
clockwise with counterclockwise, and playing a video backwards swaps every template with its partner. So a model
that learns them must use motion, and a pipeline that flips SSv2 clips breaks the labels (see the tests).
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import synthetic
from .annotations import template_to_label
from .synthetic import VP9, SyntheticSpec, is_cached, mark_cached, render_video, run_jobs, write_frame_list, write_video

# template (with brackets, as in the split files) -> the synthetic motion class that shows it
TEMPLATES = {
    "Moving [something] from right to left": 0,  # moving_left
    "Moving [something] from left to right": 1,  # moving_right
    "Moving [something] up": 2,
    "Moving [something] down": 3,
    "Approaching [something] with your camera": 4,  # growing
    "Moving away from [something] with your camera": 5,  # shrinking
    "Turning [something] clockwise": 6,
    "Turning [something] counterclockwise": 7,
}
# What a horizontal flip does to each template (the others keep their meaning).
FLIPPED = {
    "Moving something from right to left": "Moving something from left to right",
    "Moving something from left to right": "Moving something from right to left",
    "Turning something clockwise": "Turning something counterclockwise",
    "Turning something counterclockwise": "Turning something clockwise",
}


@dataclass(frozen=True)
class SyntheticSSv2Spec:
    train_per_class: int = 60
    val_per_class: int = 10
    min_side: int = 56
    max_side: int = 96
    seed: int = 0
    version: int = 1  # of this file's layout; the renderer's own version (synthetic.RENDER_VERSION) is keyed too


def _make_one(job: tuple[str, int, int], root: str, render_spec: SyntheticSpec) -> tuple[str, int]:
    """Render one video, write its webm and its JPEG frames; returns (id, frame count)."""
    from PIL import Image

    vid, label, seed = job
    frames, fps = render_video(label, np.random.default_rng(seed), render_spec)
    write_video(Path(root) / "20bn-something-something-v2" / f"{vid}.webm", frames, fps, VP9)
    folder = Path(root) / "frames" / vid
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{vid}_{i + 1:06d}.jpg", quality=90)
    return vid, len(frames)


def make_synthetic_ssv2(root: str | Path, spec: SyntheticSSv2Spec | None = None, workers: int | None = None) -> Path:
    """Write the dataset under ``root``; cached: a ``root/synthetic_ssv2.json`` with the same spec and the same
    renderer version (the videos come from synthetic.render_video) means nothing to do."""
    spec = spec or SyntheticSSv2Spec()
    root = Path(root)
    marker = root / "synthetic_ssv2.json"
    key = {**asdict(spec), "render_version": synthetic.RENDER_VERSION}
    if is_cached(marker, key):
        return root
    root.mkdir(parents=True, exist_ok=True)
    labels = {template_to_label(t): str(i) for i, t in enumerate(TEMPLATES)}
    (root / "something-something-v2-labels.json").write_text(json.dumps(labels, indent=1))
    jobs, entries = [], {"train": [], "val": []}
    for s_idx, (split, per_class) in enumerate((("train", spec.train_per_class), ("val", spec.val_per_class))):
        for t_idx, (template, motion) in enumerate(TEMPLATES.items()):
            for i in range(per_class):
                vid = str(100000 * (s_idx + 1) + 1000 * t_idx + i)
                label = template_to_label(template)
                entries[split].append({"id": vid, "label": label.lower(), "template": template, "placeholders": ["thing"]})
                jobs.append((vid, motion, spec.seed * 1_000_003 + int(vid)))
    render_spec = SyntheticSpec(fps_choices=(12,), min_side=spec.min_side, max_side=spec.max_side)
    make_one = functools.partial(_make_one, root=str(root), render_spec=render_spec)
    counts = dict(run_jobs(make_one, jobs, "synthetic SSv2", workers))
    for split, name in (("train", "train"), ("val", "validation")):
        (root / f"something-something-v2-{name}.json").write_text(json.dumps(entries[split], indent=1))
        videos = [(e["id"], [f"{e['id']}/{e['id']}_{i + 1:06d}.jpg" for i in range(counts[e["id"]])]) for e in entries[split]]
        write_frame_list(root / "frame_lists" / f"{split}.csv", videos)
    mark_cached(marker, key)
    return root
