#!/usr/bin/env python
"""AVA evaluation speed: the vectorised evaluator vs a straightforward per-row implementation of the same
algorithm, on a generated case (default: 1,000,000 detection rows, 50,000 ground-truth boxes). Prints the
median time of each over a few interleaved runs, the ratio, and both mAPs (they must be equal)."""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from mvit_video.metrics.ava import frame_map
from mvit_video.metrics.ava_reference import frame_map_reference


def make_case(num_gt: int, num_det: int, num_keys: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    g_keys = rng.integers(0, num_keys, num_gt)
    xy = rng.uniform(0, 0.7, (num_gt, 2))
    g_boxes = np.concatenate([xy, xy + rng.uniform(0.1, 0.3, (num_gt, 2))], 1)
    g_labels = rng.integers(1, 81, num_gt)
    src = rng.integers(0, num_gt, num_det)
    d_boxes = g_boxes[src] + rng.normal(0, 0.04, (num_det, 4))
    d_keys = np.where(rng.random(num_det) < 0.95, g_keys[src], rng.integers(0, num_keys, num_det))
    d_labels = np.where(rng.random(num_det) < 0.5, g_labels[src], rng.integers(1, 81, num_det))
    return (g_keys, g_boxes, g_labels, np.ones(num_gt)), (d_keys, d_boxes, d_labels, rng.random(num_det))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--detections", type=int, default=1_000_000)
    parser.add_argument("--groundtruth", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    gt, det = make_case(args.groundtruth, args.detections, num_keys=args.groundtruth // 3)
    classes = list(range(1, 61))
    fast_times, slow_times = [], []
    for _ in range(args.repeats):  # interleaved, so both see the same machine state
        t = time.perf_counter()
        fast, _ = frame_map(gt, det, classes)
        fast_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        slow, _ = frame_map_reference(gt, det, classes)
        slow_times.append(time.perf_counter() - t)
    t_fast, t_slow = statistics.median(fast_times), statistics.median(slow_times)
    print(f"rows: {args.detections:,} detections, {args.groundtruth:,} ground-truth boxes, {len(classes)} classes")
    print(f"vectorised: median {t_fast:.3f} s (first call {fast_times[0]:.3f} s) over {args.repeats} runs")
    print(f"per-row reference: median {t_slow:.3f} s")
    print(f"speed-up (median): {t_slow / t_fast:.1f}x   first call: {slow_times[0] / fast_times[0]:.1f}x")
    print(f"mAP vectorised {fast:.6f}  reference {slow:.6f}  equal: {abs(fast - slow) < 1e-9}")

if __name__ == "__main__":
    main()
