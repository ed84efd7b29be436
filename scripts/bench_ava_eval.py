#!/usr/bin/env python
"""AVA evaluation speed: the vectorised evaluator vs a straightforward per-row implementation of the same
algorithm, on a generated case (default: 1,000,000 detection rows, 50,000 ground-truth boxes). Prints the
median time of each over a few interleaved runs, the ratio, and both mAPs (they must be equal, to the last bit).
``--decimals 4`` writes the scores as real detection files do (``%.4f``): ties, and keyframes replayed row by row.

The one copy of the AVA speed benchmark (``scripts/benchmark.py`` runs :func:`measure`). The per-row reference is
test-only code (``tests/ava_reference.py``, not part of the installed package); it is loaded by its path in this
checkout, as the tests load the scripts, so nothing edits ``sys.path``."""

from __future__ import annotations

import argparse
import runpy
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from mvit_video.metrics.ava_frame_map import frame_map

REFERENCE = Path(__file__).resolve().parents[1] / "tests" / "ava_reference.py"


def make_case(num_gt: int, num_det: int, num_keys: int, seed: int = 0, decimals: int | None = None):
    rng = np.random.default_rng(seed)
    g_keys = rng.integers(0, num_keys, num_gt)
    xy = rng.uniform(0, 0.7, (num_gt, 2))
    g_boxes = np.concatenate([xy, xy + rng.uniform(0.1, 0.3, (num_gt, 2))], 1)
    g_labels = rng.integers(1, 81, num_gt)
    src = rng.integers(0, num_gt, num_det)
    d_boxes = g_boxes[src] + rng.normal(0, 0.04, (num_det, 4))
    d_keys = np.where(rng.random(num_det) < 0.95, g_keys[src], rng.integers(0, num_keys, num_det))
    d_labels = np.where(rng.random(num_det) < 0.5, g_labels[src], rng.integers(1, 81, num_det))
    scores = rng.random(num_det) if decimals is None else np.round(rng.random(num_det), decimals)
    return (g_keys, g_boxes, g_labels, np.ones(num_gt)), (d_keys, d_boxes, d_labels, scores)


def make_csv_like_case(num_gt: int, num_det: int, classes: int = 60, boxes_per_key: int = 5, seed: int = 0):
    """As detection CSVs are written: every person box on a row per evaluated class (so the 50-row cap binds on
    every keyframe), scores with 4 decimals and skewed to 0 like sigmoid outputs (many ties); ``num_gt`` is unused
    (the ground truth is one action per box)."""
    rng = np.random.default_rng(seed)
    keys = max(1, num_det // (boxes_per_key * classes))
    g_keys = np.repeat(np.arange(keys), boxes_per_key)
    xy = rng.uniform(0, 0.6, (len(g_keys), 2))
    g_boxes = np.round(np.concatenate([xy, xy + 0.3], 1), 3)
    g_labels = rng.integers(1, classes + 1, len(g_keys))
    d_boxes = np.repeat(np.round(g_boxes + rng.normal(0, 0.03, g_boxes.shape), 3), classes, 0)
    d_labels = np.tile(np.arange(1, classes + 1), len(g_keys))
    scores = np.round(rng.beta(0.3, 5, len(d_labels)), 4)
    return (g_keys, g_boxes, g_labels, np.ones(len(g_keys))), (np.repeat(g_keys, classes), d_boxes, d_labels, scores)


def measure(
    detections: int = 1_000_000,
    groundtruth: int = 50_000,
    repeats: int = 3,
    reference: bool = True,
    decimals: int | None = None,
    csv_like: bool = False,
) -> dict:
    """Median seconds of the vectorised evaluator (and of the per-row reference, interleaved so both see the same
    machine state) on one generated case, and the mAPs."""
    if csv_like:
        gt, det = make_csv_like_case(groundtruth, detections)
    else:
        gt, det = make_case(groundtruth, detections, num_keys=max(1, groundtruth // 3), decimals=decimals)
    classes = list(range(1, 61))
    frame_map_reference = runpy.run_path(str(REFERENCE))["frame_map_reference"] if reference else None
    fast_times, slow_times, slow = [], [], float("nan")
    for _ in range(repeats):
        t = time.perf_counter()
        fast, _ = frame_map(gt, det, classes)
        fast_times.append(time.perf_counter() - t)
        if frame_map_reference is not None:
            t = time.perf_counter()
            slow, _ = frame_map_reference(gt, det, classes)
            slow_times.append(time.perf_counter() - t)
    return {
        "detections": detections,
        "decimals": 4 if csv_like else decimals,
        "layout": "every box x 60 classes (as detection CSVs)" if csv_like else "random rows",
        "groundtruth": len(gt[0]),
        "classes": len(classes),
        "repeats": repeats,
        "fast_s": statistics.median(fast_times),
        "fast_first_s": fast_times[0],
        "fast_map": fast,
        "slow_s": statistics.median(slow_times) if slow_times else None,
        "slow_first_s": slow_times[0] if slow_times else None,
        "slow_map": slow,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--detections", type=int, default=1_000_000)
    parser.add_argument("--groundtruth", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--decimals", type=int, default=None, help="round the scores (4: as detection CSVs hold them)")
    parser.add_argument("--csv-like", action="store_true", help="every box on 60 rows (one per class), 4-decimal scores")
    args = parser.parse_args(argv)
    r = measure(args.detections, args.groundtruth, args.repeats, decimals=args.decimals, csv_like=args.csv_like)
    scores = "full-precision scores" if r["decimals"] is None else f"scores with {r['decimals']} decimals"
    print(f"rows: {r['detections']:,} detections ({r['layout']}), {r['groundtruth']:,} ground-truth boxes, {scores}")
    print(f"vectorised: median {r['fast_s']:.3f} s (first call {r['fast_first_s']:.3f} s) over {r['repeats']} runs")
    print(f"per-row reference: median {r['slow_s']:.3f} s")
    print(f"speed-up (median): {r['slow_s'] / r['fast_s']:.1f}x   first call: {r['slow_first_s'] / r['fast_first_s']:.1f}x")
    diff = abs(r["fast_map"] - r["slow_map"])
    print(f"mAP vectorised {r['fast_map']!r}  reference {r['slow_map']!r}  |diff| {diff}  equal: {diff == 0}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
