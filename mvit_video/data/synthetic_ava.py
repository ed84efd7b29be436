"""Synthetic AVA in the official layout: JPEG frames at 30 fps, frame lists, ground-truth CSV with person ids,
proposal CSV with scores, exclusions and a label map. "Persons" (a body and a head) act by motion: standing
still, walking, running, jumping, waving an arm (waving combines with standing or walking: several labels per
person), several persons per frame.

``actor_position`` places them: ``any`` (anywhere, wrapping around the frame), ``edge`` (in bands at the left and right
edges, ``ACTOR_BANDS``: outside a centre crop of a 16:9 frame, which keeps x in [0.22, 0.78] of the width) or
``centre`` (a central band); in a band, walkers and runners bounce between its ends. The full-resolution test
(``data.test_mode=full``) sees edge actors that the centre crop cuts off."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..metrics.ava_frame_map import BOX_DECIMALS, SCORE_DECIMALS
from .synthetic import freeze_lists, is_cached, mark_cached, write_frame_list

# AVA v2.2 action ids and names (all in the 60-class evaluation list).
ACTIONS = {7: "jump/leap", 10: "run/jog", 12: "stand", 14: "walk", 69: "hand wave"}
# Where a person's centre may be, as fractions of the width. Edge bands: a person (at most 0.16 wide) ends before 0.2,
# or starts after 0.8.
ACTOR_BANDS = {"edge": ((0.03, 0.12), (0.88, 0.97)), "centre": ((0.4, 0.6),)}


@dataclass(frozen=True)
class SyntheticAVASpec:
    train_videos: int = 6
    val_videos: int = 3
    seconds: int = 8  # frames for seconds 900 .. 900 + seconds - 1
    keyframes: tuple[int, int] = (902, 905)
    width: int = 128
    height: int = 96
    persons: tuple[int, int] = (2, 3)
    seed: int = 0
    actor_position: str = "any"  # or "edge", "centre" (ACTOR_BANDS)
    version: int = 3

    def __post_init__(self) -> None:
        freeze_lists(self)
        if self.actor_position not in ("any", *ACTOR_BANDS):
            raise ValueError(f"actor_position must be 'any', 'edge' or 'centre', got {self.actor_position!r}")


def _bounce(u: np.ndarray, length: float) -> np.ndarray:
    """``u`` folded into ``[0, length]``, reflecting at both ends (a walk back and forth)."""
    return length - np.abs(np.mod(u, 2 * length) - length)


def _person_track(
    rng: np.random.Generator, n: int, w: int, h: int, position: str = "any"
) -> tuple[np.ndarray, list[int], float, float]:
    """Per-frame (x, y) of a person's centre, its actions, its body width and height."""
    bw, bh = rng.uniform(0.12, 0.16) * w, rng.uniform(0.4, 0.5) * h  # about a cell of the last stage or more
    x0, y0 = rng.uniform(0.2, 0.8) * w, rng.uniform(0.45, 0.6) * h
    band = None
    if position != "any":
        bands = ACTOR_BANDS[position]
        lo, hi = bands[int(rng.integers(len(bands)))]
        band = (lo * w, hi * w)
        x0 = rng.uniform(*band)
    base = int(rng.choice([7, 10, 12, 14]))
    actions = [base] + ([69] if base in (12, 14) and rng.random() < 0.5 else [])
    t = np.arange(n) / 30.0
    direction = rng.choice([-1.0, 1.0])
    xs, ys = np.full(n, x0), np.full(n, y0)
    if base == 14:  # walking: slow, steady
        xs = x0 + direction * 0.08 * w * t
    elif base == 10:  # running: fast, with a quick bob
        xs = x0 + direction * 0.3 * w * t
        ys = y0 - np.abs(np.sin(2 * math.pi * 3.0 * t)) * 0.04 * h
    elif base == 7:
        ys = y0 - np.abs(np.sin(2 * math.pi * 1.2 * t)) * 0.2 * h
    # wrap around the frame, or bounce inside the band
    xs = np.mod(xs, w) if band is None else band[0] + _bounce(xs - band[0], band[1] - band[0])
    return np.stack([xs, ys], 1), actions, bw, bh


def _csv_box(box) -> str:
    """x1,y1,x2,y2 with the official files' decimals."""
    return ",".join(f"{c:.{BOX_DECIMALS}f}" for c in box)


def make_synthetic_ava(root: str | Path, spec: SyntheticAVASpec | None = None) -> Path:
    """Write the dataset under ``root`` (cached by spec)."""
    spec = spec or SyntheticAVASpec()
    root = Path(root)
    marker = root / "synthetic_ava.json"
    if is_cached(marker, asdict(spec)):
        return root
    rng = np.random.default_rng(spec.seed)
    n = spec.seconds * 30
    w, h = spec.width, spec.height
    ann = root / "annotations"
    ann.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", spec.train_videos), ("val", spec.val_videos)):
        frame_lists: list[tuple[str, list[str]]] = []
        gt_rows, prop_rows = [], []
        for v in range(count):
            vid = f"{split}{v:03d}"
            tracks = [
                _person_track(rng, n, w, h, spec.actor_position)
                for _ in range(int(rng.integers(spec.persons[0], spec.persons[1] + 1)))
            ]
            bg = rng.integers(40, 200, size=3)
            colours = [tuple(int(c) for c in (bg + rng.integers(70, 150, 3)) % 256) for _ in tracks]
            (root / "frames" / vid).mkdir(parents=True, exist_ok=True)
            frame_lists.append((vid, []))
            for i in range(n):
                img = Image.new("RGB", (w, h), tuple(int(c) for c in bg))
                draw = ImageDraw.Draw(img)
                for (pos, actions, bw, bh), col in zip(tracks, colours):
                    cx, cy = pos[i]
                    draw.rectangle([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], fill=col)
                    draw.ellipse([cx - bw / 2, cy - bh / 2 - bw, cx + bw / 2, cy - bh / 2], fill=col)
                    if 69 in actions:  # an arm swinging up and down
                        a = math.sin(2 * math.pi * 2.0 * i / 30) * 1.0
                        ax, ay = cx + bw / 2 + 0.6 * bw * math.cos(a), cy - bh / 4 - 0.6 * bw * math.sin(a) * 2
                        draw.line([cx + bw / 2, cy - bh / 4, ax, ay], fill=col, width=max(2, int(bw / 3)))
                name = f"{vid}/{vid}_{i + 1:06d}.jpg"
                img.save(root / "frames" / name, quality=90)
                frame_lists[-1][1].append(name)
            for sec in range(spec.keyframes[0], spec.keyframes[1] + 1):
                i = (sec - 900) * 30
                for pid, (pos, actions, bw, bh) in enumerate(tracks):
                    cx, cy = pos[i]
                    box = np.clip([(cx - bw / 2) / w, (cy - bh / 2 - bw) / h, (cx + bw / 2) / w, (cy + bh / 2) / h], 0, 1)
                    if 69 in actions:
                        box[2] = min(1.0, box[2] + 0.6 * bw / w)
                    gt_rows += [f"{vid},{sec:04d},{_csv_box(box)},{a},{pid}" for a in actions]
                    jit = np.clip(box + rng.normal(0, 0.01, 4), 0, 1)
                    prop_rows.append(f"{vid},{sec:04d},{_csv_box(jit)},,{rng.uniform(0.85, 1):.{SCORE_DECIMALS}f}")
                low = rng.uniform(0.1, 0.5)  # a proposal below the test-time person threshold
                prop_rows.append(f"{vid},{sec:04d},{_csv_box([0.0, 0.0, 0.2, 0.2])},,{low:.{SCORE_DECIMALS}f}")
        write_frame_list(root / "frame_lists" / f"{split}.csv", frame_lists)
        (ann / f"ava_{split}_v2.2.csv").write_text("\n".join(gt_rows) + "\n")
        (ann / f"ava_{split}_predicted_boxes.csv").write_text("\n".join(prop_rows) + "\n")
    (ann / "ava_val_excluded_timestamps_v2.2.csv").write_text(f"val000,{spec.keyframes[1]:04d}\n")
    (ann / "ava_action_list_v2.2_for_activitynet_2019.pbtxt").write_text(
        "".join(
            f'label {{\n  name: "{name}"\n  label_id: {i}\n  label_type: PERSON_MOVEMENT\n}}\n' for i, name in ACTIONS.items()
        )
    )
    mark_cached(marker, asdict(spec))
    return root
