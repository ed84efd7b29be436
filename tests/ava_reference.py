"""The official AVA evaluator's semantics, row by row (activitynet/ActivityNet ``Evaluation/get_ava_performance.py``
and ``Evaluation/ava/``), restated in plain Python and numpy along the official control flow.

Test-only code: the per-row reference that the vectorised ``ava_frame_map.frame_map`` must equal to the last bit
(``tests/test_ava_metric.py``, ``tests/test_ava_ties.py``) and is timed against (``scripts/bench_ava_eval.py``).
Nothing here is shared with the module under test. What it does, step by step:

1. ``read_csv``: rows of classes outside the label map are skipped before anything else; every image key (keyframe)
   keeps a ``heapq`` min-heap of ``(score, action_id, y1, x1, y2, x2)`` tuples, at most ``capacity`` of them (50 for
   detections, no cap for ground truth); when full, a row replaces the heap's smallest tuple only if its score is
   strictly greater. Tuples compare field by field, so among equal scores the smallest action id, then y1, ... is
   the one at the top. Then each heap's *list* is sorted with ``sorted(key=-score)`` (stable: equal scores stay in
   heap-array order). Keys come out in order of first appearance (a dict). For ground truth the "score" is column 8,
   the person id (1.0 without one).
2. Excluded keys are skipped, in ground truth and detections.
3. Per detected image: boxes with ``y1 >= y2`` or ``x1 >= x2`` are removed; per class (in class order), detections
   in the image's order are matched against that class's ground-truth boxes in their order: ``np.argmax`` of the IoU
   row (first maximum), a true positive if IoU >= 0.5 and that box is not taken yet. Scores and labels are appended
   to the class's lists (classes without detections append nothing, so only those present are visited here).
4. Per class with ground truth: the lists are concatenated, ranked by ``np.argsort(scores)[::-1]`` (numpy's default,
   unstable sort), cumulative precision/recall, the envelope by a backward loop of maxima, ``np.sum`` of
   ``(recall step) * precision`` over the recall changes; a class with ground truth and no detection has AP 0.
5. mAP: ``np.nanmean`` over the array of class ids 1..max (NaN where a class has no ground truth).
"""

from __future__ import annotations

import heapq

import numpy as np


def read_rows(keys, boxes, labels, scores, whitelist: set[int], capacity: int) -> dict:
    """Step 1 on rows given in file order: ``{key: (boxes [y1 x1 y2 x2] (n, 4), labels (n,), scores (n,))}``."""
    entries: dict[int, list[tuple]] = {}
    for key, (x1, y1, x2, y2), action, score in zip(
        np.asarray(keys).tolist(),
        np.asarray(boxes, dtype=float).reshape(-1, 4).tolist(),
        np.asarray(labels).tolist(),
        np.asarray(scores, dtype=float).tolist(),
    ):
        if whitelist and action not in whitelist:
            continue
        heap = entries.setdefault(key, [])
        if capacity < 1 or len(heap) < capacity:
            heapq.heappush(heap, (score, action, y1, x1, y2, x2))
        elif score > heap[0][0]:
            heapq.heapreplace(heap, (score, action, y1, x1, y2, x2))
    out = {}
    for key, heap in entries.items():
        items = sorted(heap, key=lambda t: -t[0])
        out[key] = (
            np.array([t[2:] for t in items], dtype=float).reshape(-1, 4),
            np.array([t[1] for t in items], dtype=int),
            np.array([t[0] for t in items], dtype=float),
        )
    return out


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of ``[y1 x1 y2 x2]`` boxes, ``(N, 4) x (M, 4) -> (N, M)``, as ``np_box_ops.iou``."""
    ay1, ax1, ay2, ax2 = np.split(a, 4, axis=1)
    by1, bx1, by2, bx2 = np.split(b, 4, axis=1)
    heights = np.maximum(np.zeros((len(a), len(b))), np.minimum(ay2, by2.T) - np.maximum(ay1, by1.T))
    widths = np.maximum(np.zeros((len(a), len(b))), np.minimum(ax2, bx2.T) - np.maximum(ax1, bx1.T))
    inter = heights * widths
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return inter / union


def true_positives(det_boxes: np.ndarray, gt_boxes: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Step 3 for one class of one image."""
    tp = np.zeros(len(det_boxes), dtype=bool)
    if gt_boxes.size == 0:
        return tp
    iou = iou_matrix(det_boxes, gt_boxes)
    best = np.argmax(iou, axis=1)
    taken = np.zeros(len(gt_boxes), dtype=bool)
    for i in range(len(det_boxes)):
        j = best[i]
        if iou[i, j] >= iou_threshold and not taken[j]:
            tp[i] = taken[j] = True
    return tp


def class_ap(scores: np.ndarray, tp: np.ndarray, num_gt: int) -> float:
    """Step 4 for one class."""
    ranked = np.argsort(scores)[::-1]
    hits = tp.astype(int)[ranked]
    cum_tp = np.cumsum(hits)
    cum_fp = np.cumsum(1 - hits)
    precision = cum_tp.astype(float) / (cum_tp + cum_fp)
    recall = cum_tp.astype(float) / num_gt
    if not precision.size:
        return 0.0
    recall = np.concatenate([[0], recall, [1]])
    precision = np.concatenate([[0], precision, [0]])
    for i in range(len(precision) - 2, -1, -1):
        precision[i] = np.maximum(precision[i], precision[i + 1])
    steps = np.where(recall[1:] != recall[:-1])[0] + 1
    return float(np.sum((recall[steps] - recall[steps - 1]) * precision[steps]))


def frame_map_reference(gt, det, class_ids, excluded=None, top_k=50, iou_threshold=0.5):
    """``(mAP, {class id: AP})`` of ``gt``/``det`` = ``(keys, boxes x1 y1 x2 y2, labels, scores)`` in file order."""
    whitelist = set(int(c) for c in class_ids)
    num_class = max(whitelist)
    excluded = set() if excluded is None else {int(k) for k in excluded}
    gt_images = {k: v for k, v in read_rows(*gt, whitelist, 0).items() if k not in excluded}
    num_gt = np.zeros(num_class, dtype=int)
    for _, labels, _ in gt_images.values():
        for c in range(num_class):
            num_gt[c] += np.sum(labels - 1 == c)
    scores_per_class: list[list[np.ndarray]] = [[] for _ in range(num_class)]
    tp_per_class: list[list[np.ndarray]] = [[] for _ in range(num_class)]
    for key, (boxes, labels, scores) in read_rows(*det, whitelist, top_k).items():
        if key in excluded:
            continue
        valid = (boxes[:, 0] < boxes[:, 2]) & (boxes[:, 1] < boxes[:, 3])
        boxes, cls, scores = boxes[valid], labels[valid] - 1, scores[valid]
        g_boxes, g_labels, _ = gt_images.get(key, (np.zeros((0, 4)), np.zeros(0, dtype=int), None))
        for c in sorted(set(cls.tolist())):
            scores_per_class[c].append(scores[cls == c])
            tp_per_class[c].append(true_positives(boxes[cls == c], g_boxes[g_labels - 1 == c], iou_threshold))
    aps = np.full(num_class, np.nan)
    for c in range(num_class):
        if num_gt[c] == 0:
            continue
        s = np.concatenate(scores_per_class[c]) if scores_per_class[c] else np.array([], dtype=float)
        t = np.concatenate(tp_per_class[c]) if tp_per_class[c] else np.array([], dtype=bool)
        aps[c] = class_ap(s, t, num_gt[c])
    mean_ap = float(np.nanmean(aps)) if np.isfinite(aps).any() else float("nan")
    return mean_ap, {c: float(aps[c - 1]) for c in sorted(whitelist)}
