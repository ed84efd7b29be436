"""A straightforward per-row AVA frame-mAP (the official evaluator's loops, in plain Python).

Test-only code: the readable reference that the vectorised ``ava_frame_map.frame_map`` is tested against
(``tests/test_ava_metric.py``) and timed against (``scripts/bench_ava_eval.py``).
"""

from __future__ import annotations

import heapq
from collections import defaultdict

import numpy as np

from mvit_video.metrics.ava_frame_map import voc_average_precision


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def frame_map_reference(gt, det, class_ids, excluded=None, top_k=50, iou_threshold=0.5):
    whitelist = set(class_ids)
    excluded = set() if excluded is None else {int(k) for k in excluded}
    gt_boxes = defaultdict(list)  # (key, class) -> boxes
    num_gt = defaultdict(int)
    for key, box, label in zip(*gt[:3]):
        if label in whitelist and int(key) not in excluded:
            gt_boxes[(int(key), int(label))].append(box)
            num_gt[int(label)] += 1
    heaps = defaultdict(list)  # key -> min-heap of (score, -row, label, box), as the official reader
    for row, (key, box, label, score) in enumerate(zip(*det)):
        if label not in whitelist:
            continue
        entry = (score, -row, int(label), tuple(box))
        h = heaps[int(key)]
        if top_k < 1 or len(h) < top_k:
            heapq.heappush(h, entry)
        elif score > h[0][0]:
            heapq.heapreplace(h, entry)
    ranked = defaultdict(list)  # class -> (row, score, tp); equal scores are ranked in file order
    for key, h in heaps.items():
        if key in excluded:
            continue
        by_class = defaultdict(list)
        for score, neg_row, label, box in h:
            by_class[label].append((score, neg_row, box))
        for label, dets in by_class.items():
            dets.sort(key=lambda d: (-d[0], -d[1]))
            boxes = gt_boxes.get((key, label), [])
            taken = [False] * len(boxes)
            for score, neg_row, box in dets:
                tp = False
                if boxes:
                    ious = [_iou(box, g) for g in boxes]
                    j = int(np.argmax(ious))
                    if ious[j] >= iou_threshold and not taken[j]:
                        taken[j] = tp = True
                ranked[label].append((-neg_row, score, tp))
    per_class = {}
    for c in sorted(whitelist):
        rows = sorted(ranked[c])
        scores = np.array([r[1] for r in rows], dtype=float)
        per_class[c] = voc_average_precision(scores, np.array([r[2] for r in rows], dtype=bool), num_gt[c])
    values = [v for v in per_class.values() if not np.isnan(v)]
    return (float(np.mean(values)) if values else float("nan")), per_class
