"""AVA frame-mAP, the algorithm of the official ActivityNet evaluator (v2.1/v2.2, with exclusions), vectorised.

What the official evaluator does (spec §4.5), and what this module reproduces:
- a label map gives the evaluated class ids (60 of 80 for v2.2); rows of other classes are dropped;
- an image key is (video id, integer second); excluded keyframes are dropped from ground truth and detections;
- at most the 50 highest-scoring detection rows per keyframe are kept (over all classes; ties keep file order);
  equal scores are ranked in file order everywhere (the official code leaves that to numpy's unstable sort);
- per class and keyframe, detections in descending score order are matched to the ground-truth box of highest
  IoU; a match needs IoU >= 0.5 and that box not matched before (no fallback to the second-best box);
  detections on keyframes without ground truth are false positives;
- per class, detections of all keyframes are ranked by score; AP is the area under the monotone precision
  envelope (VOC); mAP is the mean over classes that have ground truth.

Everything runs as array operations over all rows at once (stable numpy sorts): ``scripts/bench_ava_eval.py`` times
it against the per-row reference (``tests/ava_reference.py``) on a million rows. numpy and the standard library only
(pandas is imported by the CSV reader when it reads), so ``scripts/ava_eval.py`` starts without torch;
``mvit_video.metrics.ava.AVAFrameMAP`` is the torchmetrics wrapper.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

IOU_THRESHOLD = 0.5
TOP_K_PER_KEYFRAME = 50


ROW_FORMAT = "video_id,second,x1,y1,x2,y2,action_id[,score or person id]"
_FIELDS = ("video_id", "second", "x1", "y1", "x2", "y2", "action_id", "score or person id")


class AVAFormatError(ValueError):
    """An AVA file that does not follow the official format; the message names the file and the line."""


def read_labelmap(path: str | Path) -> dict[int, str]:
    """``{class id: name}`` from an AVA label-map pbtxt (``name:`` then ``id:`` or ``label_id:`` lines)."""
    names: dict[int, str] = {}
    name = None
    for line in Path(path).read_text().splitlines():
        if m := re.match(r"\s*name:\s*\"(.*)\"", line):
            name = m.group(1)
        elif (m := re.match(r"\s*(?:label_)?id:\s*(\d+)", line)) and name is not None:
            names[int(m.group(1))] = name
            name = None
    if not names:
        raise AVAFormatError(f"{path}: no 'name:' / 'id:' entries found; expected an AVA label-map pbtxt")
    return names


def _row_problem(fields: list[str]) -> str | None:
    """What is wrong with one CSV row (None: nothing), by the official reader's rules: 7 or 8 fields (and our
    2-field keyframe rows), numbers where numbers belong, an integer action id."""
    fields = [f.strip() for f in fields]
    while fields and not fields[-1]:
        fields.pop()
    n = len(fields)
    if n not in (0, 2, 7, 8):
        return f"{n} fields; expected 7 or 8 ('{ROW_FORMAT}'), or 2 for a keyframe without action"
    for i, value in enumerate(fields):
        if not value:
            return f"field {i + 1} ({_FIELDS[i]}) is empty; expected '{ROW_FORMAT}'"
        if i == 0:
            continue
        try:
            number = float(value)
        except ValueError:
            hint = " (a header line? AVA CSVs have none)" if i == 1 else ""
            return f"field {i + 1} ({_FIELDS[i]}) is {value!r}, not a number{hint}; expected '{ROW_FORMAT}'"
        if i == 6 and number != int(number):
            return f"field 7 (action_id) is {value!r}, not an integer"
    return None


def _raise_row_error(path: Path, line: int | None = None) -> None:
    """Raise the error of row ``line`` (None: of the first bad row), explained by :func:`_row_problem`."""
    import csv

    with path.open(newline="") as f:
        for lineno, fields in enumerate(csv.reader(f), start=1):
            problem = _row_problem(fields)
            if lineno == line or (line is None and problem):
                raise AVAFormatError(f"{path}:{lineno}: {problem or 'cannot be read'}")
    raise AVAFormatError(f"{path}:{line or '?'}: cannot be read; expected '{ROW_FORMAT}'")


def read_csv_rows(path: str | Path, with_scores: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(video ids, seconds, boxes, action ids, scores) of an AVA CSV. Rows have 7 or 8 fields, as the official
    reader requires; 2-field rows (a keyframe without action) and blank lines are accepted and returned with
    action id -1. Anything else raises :class:`AVAFormatError` naming the file and line. Column 8 is a score only
    for detections: in ground truth it is a person id and is ignored."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"AVA CSV not found: {path}")
    try:  # the fast path: pandas' C reader; a bad row is then explained by _row_problem
        df = pd.read_csv(path, header=None, dtype={0: str}, names=range(9), skipinitialspace=True, skip_blank_lines=False)
    except pd.errors.EmptyDataError:
        df = pd.DataFrame(columns=range(9))
    except pd.errors.ParserError:  # more than 9 fields
        _raise_row_error(path)
    except UnicodeDecodeError as e:
        raise AVAFormatError(f"{path}: not UTF-8 text ({e}); expected '{ROW_FORMAT}' per line") from e
    present = df.notna().to_numpy()  # (N, 9)
    n = np.where(present.any(1), 9 - np.argmax(present[:, ::-1], axis=1), 0)  # fields up to the last non-empty one
    bad = ~np.isin(n, (0, 2, 7, 8)) | (present[:, :2].sum(1) < np.minimum(n, 2)) | ((n >= 7) & ~present[:, :7].all(1))
    numbers = {}
    for col in range(1, 8):
        values = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=np.float64)
        bad |= np.isnan(values) & present[:, col]  # text where a number belongs (e.g. a header line)
        numbers[col] = values
    bad |= (n >= 7) & (numbers[6] != np.floor(numbers[6]))
    if bad.any():
        _raise_row_error(path, int(np.flatnonzero(bad)[0]) + 1)
    keep = n > 0  # blank lines
    videos = df[0].to_numpy(dtype=str)[keep]
    secs = numbers[1][keep].astype(np.int64)
    boxes = np.stack([numbers[c][keep] for c in (2, 3, 4, 5)], 1).reshape(-1, 4)  # (N, 4)
    actions = np.where(n[keep] >= 7, numbers[6][keep], -1).astype(np.int64)
    if with_scores:
        scores = np.where(n[keep] == 8, numbers[7][keep], 1.0)  # the official reader gives 7-column rows score 1.0
    else:
        scores = np.ones(int(keep.sum()))
    return videos, secs, boxes, actions, scores


def read_exclusions(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(video ids, seconds) of an excluded-timestamps CSV: ``video_id,second`` rows, as the official reader."""
    import csv

    path = Path(path)
    videos, secs = [], []
    with path.open(newline="") as f:
        for lineno, row in enumerate(csv.reader(f), start=1):
            if not any(field.strip() for field in row):
                continue
            try:
                if len(row) != 2 or not row[0].strip():
                    raise ValueError
                sec = int(float(row[1]))
            except ValueError:
                raise AVAFormatError(f"{path}:{lineno}: {row!r}; expected 'video_id,second'") from None
            videos.append(row[0].strip())
            secs.append(sec)
    return np.array(videos, dtype=str), np.array(secs, dtype=np.int64)


def _iou_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes ``a (..., 4)`` and ``b (..., 4)`` pairwise along the leading dims, as ``np_box_ops.iou``."""
    ix = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    iy = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = ix * iy
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def voc_average_precision(scores: np.ndarray, tp: np.ndarray, num_gt: int) -> float:
    """Area under the monotone precision envelope (``compute_average_precision`` of the official metrics).
    Rows of equal score keep their given order; the official code leaves that order to numpy's unstable sort."""
    if num_gt == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    tp = tp[order].astype(np.float64)
    cum_tp = np.cumsum(tp)
    cum_fp = np.cumsum(1 - tp)
    precision = cum_tp / np.maximum(cum_tp + cum_fp, 1e-300)
    recall = cum_tp / num_gt
    recall = np.concatenate([[0.0], recall, [1.0]])
    precision = np.concatenate([[0.0], precision, [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.flatnonzero(recall[1:] != recall[:-1]) + 1
    return float(np.sum((recall[idx] - recall[idx - 1]) * precision[idx]))


def _stable_argsort(x: np.ndarray) -> np.ndarray:
    """Stable ascending argsort of an integer array: equal keys keep their order (file order, the contract).
    numpy's stable sort measured faster than torch's radix sort on a million int64 rows (0.08-0.11 s vs 0.19 s)."""
    return np.argsort(np.asarray(x, dtype=np.int64), kind="stable")


def _descending_key(scores: np.ndarray) -> np.ndarray:
    """An int64 key whose ascending order is the descending order of float ``scores`` (IEEE-754 bit trick:
    non-negative floats order as their bit patterns, negative ones in reverse)."""
    bits = np.ascontiguousarray(scores, dtype=np.float64).view(np.int64)
    ascending = np.where(bits < 0, bits ^ np.int64(0x7FFFFFFFFFFFFFFF), bits)
    return ~ascending


def frame_map(
    gt: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    det: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    class_ids: list[int],
    excluded: np.ndarray | None = None,
    top_k: int = TOP_K_PER_KEYFRAME,
    iou_threshold: float = IOU_THRESHOLD,
) -> tuple[float, dict[int, float]]:
    """mAP and per-class AP. ``gt`` and ``det`` are ``(keys, boxes, labels, scores)``: integer keyframe codes
    (shared between the two), ``(N, 4)`` boxes, action ids and scores. ``excluded``: keyframe codes to drop."""
    whitelist = np.asarray(sorted(class_ids))
    n_cls = int(whitelist.max()) + 1
    g_keys, g_boxes, g_labels, _ = gt
    d_keys, d_boxes, d_labels, d_scores = det
    g_labels, d_labels = np.asarray(g_labels, dtype=np.int64), np.asarray(d_labels, dtype=np.int64)
    listed = np.zeros(max(n_cls, int(g_labels.max(initial=0)) + 1, int(d_labels.max(initial=0)) + 1), dtype=bool)
    listed[whitelist] = True
    keep_g = listed[np.clip(g_labels, 0, None)] & (g_labels >= 0)
    keep_d = listed[np.clip(d_labels, 0, None)] & (d_labels >= 0)
    if excluded is not None and len(excluded):
        keep_g &= ~np.isin(g_keys, excluded)
        keep_d &= ~np.isin(d_keys, excluded)
    g_keys, g_boxes, g_labels = g_keys[keep_g], g_boxes[keep_g], g_labels[keep_g]
    d_keys, d_boxes, d_labels, d_scores = d_keys[keep_d], d_boxes[keep_d], d_labels[keep_d], d_scores[keep_d]

    # Order rows by (key, descending score), ties in file order: two stable integer sorts. Then keep the top-k
    # rows of every keyframe. Only indices move here; the rows are gathered once, below.
    by_score = _stable_argsort(_descending_key(d_scores))
    order = by_score[_stable_argsort(d_keys[by_score])]
    if top_k > 0 and len(order):
        sorted_keys = d_keys[order]
        starts = np.r_[0, np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1]
        rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
        order = order[rank < top_k]

    # Ground truth grouped by (key, class): padded [groups, G, 4] so every detection sees its group's boxes.
    g_group = g_keys.astype(np.int64) * n_cls + g_labels
    g_order = np.argsort(g_group, kind="stable")
    g_group, g_boxes = g_group[g_order], g_boxes[g_order]
    groups, g_start, g_count = np.unique(g_group, return_index=True, return_counts=True)
    width = int(g_count.max()) if len(g_count) else 1
    padded = np.full((len(groups), width, 4), -1.0)  # zero-area padding: IoU 0, and real boxes come first
    slot = np.arange(len(g_group)) - np.repeat(g_start, g_count)
    padded[np.searchsorted(groups, g_group), slot] = g_boxes

    d_group = d_keys[order].astype(np.int64) * n_cls + d_labels[order]  # in (key, descending score) order
    pos = np.searchsorted(groups, d_group)
    if len(groups):
        has_gt = (pos < len(groups)) & (groups[np.minimum(pos, len(groups) - 1)] == d_group)
    else:
        has_gt = np.zeros(len(d_group), dtype=bool)
    tp = np.zeros(len(d_keys), dtype=bool)  # indexed by original row
    idx = np.flatnonzero(has_gt)
    if len(idx):
        best_iou = np.empty(len(idx))
        best_gt = np.empty(len(idx), dtype=np.int64)
        for chunk in np.array_split(np.arange(len(idx)), max(1, len(idx) * width // 65_536)):  # cache-sized
            cand = padded[pos[idx[chunk]]]  # (n, G, 4)
            iou = _iou_rows(d_boxes[order[idx[chunk]], None, :], cand)  # (n, G)
            best_gt[chunk] = iou.argmax(1)
            best_iou[chunk] = iou.max(1)
        hit = best_iou >= iou_threshold
        # Within a (key, class) group detections are matched in descending score order: the first detection
        # to claim a box gets it; later ones that pick the same box are false positives. Rows are already in
        # (key, descending score) order, so a stable sort by (group, box) keeps the score order inside a pair.
        cand_idx = idx[hit]
        pair = d_group[cand_idx] * width + best_gt[hit]
        claim = _stable_argsort(pair)
        first = np.r_[True, pair[claim][1:] != pair[claim][:-1]][: len(claim)]  # empty when nothing reaches the IoU
        tp[order[cand_idx[claim[first]]]] = True

    # VOC AP of every class at once: kept rows ranked by (class, descending score). Recall rises by 1/num_gt at
    # each true positive, so AP = sum over true positives of the precision envelope there, divided by num_gt.
    kept = np.zeros(len(d_keys), dtype=bool)
    kept[order] = True
    ranked = by_score[kept[by_score]]
    ranked = ranked[_stable_argsort(d_labels[ranked])]
    labels, hits = d_labels[ranked], tp[ranked]
    seg_start = np.r_[0, np.flatnonzero(labels[1:] != labels[:-1]) + 1]
    seg_len = np.diff(np.r_[seg_start, len(ranked)])
    seg = np.repeat(np.arange(len(seg_start)), seg_len)
    cum_tp = np.cumsum(hits)
    before = np.r_[0, cum_tp][seg_start]
    precision = (cum_tp - before[seg]) / (np.arange(len(ranked)) - seg_start[seg] + 1)
    # Envelope: a running max from the end of each class segment. Walking backwards, every segment is offset by
    # 2 more than the one before it (precision <= 1), so the running max never carries across a segment border.
    offset = 2.0 * (len(seg_start) - 1 - seg)
    envelope = np.maximum.accumulate((precision + offset)[::-1])[::-1] - offset
    ap_sum = np.bincount(labels[hits], weights=envelope[hits], minlength=n_cls)
    gt_count = np.bincount(g_labels, minlength=n_cls)
    per_class = {int(c): float(ap_sum[c] / gt_count[c]) if gt_count[c] else float("nan") for c in whitelist}
    values = np.array([v for v in per_class.values() if not np.isnan(v)])
    return (float(values.mean()) if len(values) else float("nan")), per_class


def evaluate_files(
    labelmap: str | Path, groundtruth: str | Path, detections: str | Path, exclusions: str | Path | None = None, chance: int = 0
) -> dict:
    """The official CLI's computation on files: ``{"mAP": ..., "per_class": {name: AP or None},
    "classes_without_groundtruth": [names]}``.

    A label-map class without ground truth has no AP: the official evaluator logs it, reports NaN for it and
    leaves it out of the mean (``np.nanmean``); here its AP is ``None`` (JSON ``null``) and it is listed. Ground
    truth with no box of any label-map class leaves nothing to average: :class:`AVAFormatError`. ``chance``: also
    ``chance_mAP``, the mean mAP of that many runs with the detection scores shuffled (the chance level of the
    same boxes and labels); the files are read once."""
    names = read_labelmap(labelmap)
    gv, gs, gb, ga, _ = read_csv_rows(groundtruth, with_scores=False)
    dv, ds, db, da, dsc = read_csv_rows(detections, with_scores=True)
    ev, es = read_exclusions(exclusions) if exclusions else (np.array([], dtype=str), np.array([], dtype=np.int64))
    # One code per (video, second) across the three files.
    videos = np.concatenate([gv, dv, ev])
    secs = np.concatenate([gs, ds, es])
    _, vid_codes = np.unique(videos, return_inverse=True)
    codes = vid_codes.astype(np.int64) * 1_000_000 + secs
    ng, nd = len(gv), len(dv)
    gt = (codes[:ng], gb, ga, np.ones(ng))
    det = (codes[ng : ng + nd], db, da, dsc)
    mean_ap, per_class = frame_map(gt, det, list(names), excluded=codes[ng + nd :])
    missing = [names[c] for c, ap in per_class.items() if np.isnan(ap)]
    if len(missing) == len(names):
        raise AVAFormatError(
            f"{groundtruth}: no ground-truth box of any of the {len(names)} classes of {labelmap} (outside the "
            f"excluded keyframes), so there is no mAP to compute; expected rows '{ROW_FORMAT}' with those action ids"
        )
    result = {
        "mAP": mean_ap,
        "per_class": {names[c]: None if np.isnan(ap) else ap for c, ap in per_class.items()},
        "classes_without_groundtruth": missing,
    }
    if chance:
        shuffled = [
            frame_map(gt, (*det[:3], np.random.default_rng(seed).permutation(dsc)), list(names), excluded=codes[ng + nd :])[0]
            for seed in range(chance)
        ]
        result["chance_mAP"] = float(np.mean(shuffled))
    return result
