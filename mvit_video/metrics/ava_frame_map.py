"""AVA frame-mAP, the official ActivityNet evaluator (v2.1/v2.2, with exclusions) to the last bit, vectorised.

What the official evaluator does (``Evaluation/get_ava_performance.py`` and ``Evaluation/ava/``; spec §4.5, §8.4), and
what :func:`frame_map` reproduces (``tests/ava_reference.py`` restates it row by row; ``tests/test_ava_ties.py``):
- a label map gives the evaluated class ids (60 of 80 for v2.2); rows of other classes are skipped first;
- an image key is (video id, integer second); excluded keyframes are dropped from ground truth and detections;
- per keyframe a min-heap keeps at most 50 detection rows as ``(score, action_id, y1, x1, y2, x2)`` tuples, a new
  row replacing the smallest tuple only if its score is strictly greater; each keyframe's kept rows are then sorted
  by descending score with Python's stable sort, equal scores staying in heap-array order; keyframes are visited in
  order of first appearance; ground truth goes through the same reader without a cap, its "score" being column 8
  (the person id);
- boxes with x2 <= x1 or y2 <= y1 are dropped after the cap;
- per class and keyframe, detections in that order are matched to the ground-truth box of highest IoU (the first
  one on equal IoU); a match needs IoU >= 0.5 and that box not matched before (no fallback to the second-best box);
  detections on keyframes without ground truth are false positives;
- per class, the keyframes' scores are concatenated and ranked by numpy's default (unstable) ``argsort``, reversed;
  AP is the area under the monotone precision envelope (VOC); mAP is ``np.nanmean`` over class ids 1..max.

Real files carry 4-decimal scores, so ties are common and these rules decide the last digits. The common case runs
as array operations over all rows at once; a keyframe where the order among ties matters (the cap cuts through
equal scores, equal scores of one class with different outcomes, a detection with two equally good boxes) is
replayed through ``heapq`` as the official reader does, and each class's final ranking calls the same numpy
``argsort`` on the same array. ``scripts/bench_ava_eval.py`` times it against the per-row reference on a million
rows. numpy and the standard library only (pandas is imported by the CSV reader when it reads), so
``scripts/ava_eval.py`` starts without torch; ``mvit_video.metrics.ava.AVAFrameMAP`` is the torchmetrics wrapper.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

IOU_THRESHOLD = 0.5
TOP_K_PER_KEYFRAME = 50
SCORE_DECIMALS = 4  # detection CSVs: scores as %.4f (PySlowFast's format, and ours)
BOX_DECIMALS = 3  # box corners as %.3f (the official annotation files' precision)
KEYFRAME_STRIDE = 1_000_000  # keyframe codes: seconds below this (11 days), so (video, second) pairs never collide

DetectionRow = tuple[str, int, tuple[float, ...], list[float]]  # (video id, second, box x1 y1 x2 y2, class scores)


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


def csv_round(x: np.ndarray, decimals: int) -> np.ndarray:
    """``x`` (float64) as a CSV with ``decimals`` decimals gives it back: ``rint(x * 10^d) / 10^d``. The writer
    formats these values with ``decimals`` decimals, which prints the integer m = rint(x * 10^d) over 10^d exactly,
    and any reader parses that to the double nearest m / 10^d, which is this division's correctly rounded result:
    the metric and the evaluator on the written file see the same bits. (For float32 inputs x * 10^d is exact in
    float64, so m is also the true decimal rounding, half to even, as ``%.4f`` does.)"""
    scale = 10.0**decimals
    return np.rint(np.asarray(x, dtype=np.float64) * scale) / scale


def keyframe_code(video_index, second):
    """One integer per (video, second) keyframe, the key :func:`frame_map` and ``AVAFrameMAP`` group by: works on
    numpy arrays and torch tensors alike (integer video indices and seconds, ``0 <= second < KEYFRAME_STRIDE``)."""
    return video_index * KEYFRAME_STRIDE + second


def detection_csv_lines(rows: list[DetectionRow], class_ids: list[int]) -> list[str]:
    """The official detection CSV (``video,sec,x1,y1,x2,y2,action,score``), one line per box and evaluated class, in
    row order then ``class_ids`` order (the order ``AVAFrameMAP`` evaluates in: ties make the official result
    order-dependent); boxes with ``BOX_DECIMALS``, scores with ``SCORE_DECIMALS``. Values :func:`csv_round`-ed with
    the same decimals (as training stores them) print exactly; others are rounded by the formatting."""
    return [
        f"{name},{sec:04d},{','.join(f'{c:.{BOX_DECIMALS}f}' for c in box)},{c},{p:.{SCORE_DECIMALS}f}"
        for name, sec, box, scores in rows
        for c, p in zip(class_ids, scores)
    ]


def _iou_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes ``a (..., 4)`` and ``b (..., 4)`` pairwise along the leading dims, as ``np_box_ops.iou`` computes
    it (the same operations in the same order, so equal to the last bit: products commute exactly)."""
    ix = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    iy = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = ix * iy
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def average_precision(scores: np.ndarray, tp: np.ndarray, num_gt: int) -> float:
    """VOC AP of one class, as the official ``compute_precision_recall`` + ``compute_average_precision``: rows ranked
    by numpy's default (unstable) ``argsort`` of ``scores``, reversed; the area under the monotone precision envelope,
    summed by ``np.sum`` over the recall steps. The same array in gives the same order and the same bits out."""
    if num_gt == 0:
        return float("nan")
    if len(scores) == 0:
        return 0.0
    order = np.argsort(np.ascontiguousarray(scores, dtype=np.float64))[::-1]
    hits = np.asarray(tp).astype(np.int64)[order]
    cum_tp = np.cumsum(hits)
    cum_fp = np.cumsum(1 - hits)
    precision = np.concatenate([[0.0], cum_tp.astype(np.float64) / (cum_tp + cum_fp), [0.0]])
    recall = np.concatenate([[0.0], cum_tp.astype(np.float64) / num_gt, [1.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # the official backward loop of maxima (max is exact)
    steps = np.flatnonzero(recall[1:] != recall[:-1]) + 1
    return float(np.sum((recall[steps] - recall[steps - 1]) * precision[steps]))


def _kept_rows(keep: np.ndarray, a: np.ndarray) -> np.ndarray:
    """``a[keep]`` (read-only use): ``a`` itself when every row is kept, else ``np.compress``, which on (N, 4) boxes
    is faster than a boolean index (measured 0.003 s vs 0.011 s on a million rows, median of 7)."""
    return a if keep.all() else np.compress(keep, a, axis=0)


def _stable_argsort(x: np.ndarray) -> np.ndarray:
    """Stable ascending argsort of an integer array: equal keys keep their order. Keys in [0, 65536) are sorted as
    uint16, which numpy sorts by radix (measured 0.04 s vs 0.27 s for int64 on a million rows)."""
    x = np.asarray(x, dtype=np.int64)
    if len(x) and x.min() >= 0 and x.max() < 65536:
        return np.argsort(x.astype(np.uint16), kind="stable")
    return np.argsort(x, kind="stable")


def _descending_key(scores: np.ndarray) -> np.ndarray:
    """An int64 key whose ascending order is the descending order of float ``scores`` (IEEE-754 bit trick:
    non-negative floats order as their bit patterns, negative ones in reverse; -0.0 and 0.0 made equal first)."""
    bits = (np.ascontiguousarray(scores, dtype=np.float64) + 0.0).view(np.int64)
    ascending = np.where(bits < 0, bits ^ np.int64(0x7FFFFFFFFFFFFFFF), bits)
    return ~ascending


def _heap_order(rows: np.ndarray, scores: np.ndarray, labels: np.ndarray, boxes: np.ndarray, capacity: int) -> np.ndarray:
    """The official reader on one keyframe's rows (file order): which rows it keeps and in which order it hands them
    on. It pushes ``(score, action_id, y1, x1, y2, x2)`` tuples on a min-heap of at most ``capacity`` (< 1: no cap),
    a row replacing the smallest tuple only if its score is strictly greater; then sorts the heap's list by descending
    score with Python's stable sort, so equal scores stay in heap-array order, which depends on the whole push
    sequence and on the tuple comparison of (action_id, y1, x1, ...). Replayed here with heapq itself. Rows whose
    tuples are equal are interchangeable; they are handed out in file order."""
    import heapq

    items = [
        (s, a, y1, x1, y2, x2)
        for s, a, (x1, y1, x2, y2) in zip(scores[rows].tolist(), labels[rows].tolist(), boxes[rows].tolist())
    ]
    heap: list[tuple] = []
    for item in items:
        if capacity < 1 or len(heap) < capacity:
            heapq.heappush(heap, item)
        elif item[0] > heap[0][0]:
            heapq.heapreplace(heap, item)
    by_item: dict[tuple, list[int]] = {}  # the same tuple objects: found again even with a NaN inside
    for row, item in zip(rows.tolist(), items):
        by_item.setdefault(item, []).append(row)
    taken: dict[tuple, int] = {}
    out = []
    for item in sorted(heap, key=lambda t: -t[0]):
        j = taken.get(item, 0)
        taken[item] = j + 1
        out.append(by_item[item][j])
    return np.asarray(out, dtype=np.int64)


class _Order:
    """Per-row position in its keyframe's official order (-1: not kept). Starts from (descending score, file order)
    with the top ``capacity`` kept, which is the official result except where ties decide; :meth:`replay` puts the
    official reader's exact order on the keyframes named (see :func:`_heap_order`)."""

    def __init__(self, keys: np.ndarray, scores: np.ndarray, labels: np.ndarray, boxes: np.ndarray, capacity: int) -> None:
        self.scores, self.labels, self.boxes, self.capacity = scores, labels, boxes, capacity
        n = len(keys)
        # Files as written (a keyframe's rows together, keyframes ascending) need no sort: the rows are their own perm.
        self.grouped = bool(n < 2 or (keys[1:] >= keys[:-1]).all())
        self.perm = np.arange(n) if self.grouped else np.argsort(keys)  # rows by key, any order within a key
        sorted_keys = keys if self.grouped else keys[self.perm]
        self.key_starts = np.r_[0, np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1] if n else np.zeros(0, np.int64)
        self.key_counts = np.diff(np.r_[self.key_starts, n]).astype(np.int64)
        first = np.minimum.reduceat(self.perm, self.key_starts) if n else np.zeros(0, np.int64)
        self.key_of_rank = np.argsort(first)  # keyframes in order of first appearance
        rank = np.empty(len(first), dtype=np.int64)
        rank[self.key_of_rank] = np.arange(len(first))
        self.rank = np.repeat(rank, self.key_counts)  # (N,) keyframe rank of every row (here in perm order)
        if not self.grouped:
            self.rank[self.perm] = self.rank.copy()
        rows = self._candidates()
        by_score = rows[_stable_argsort(_descending_key(scores[rows]))]
        order = by_score[_stable_argsort(self.rank[by_score])]  # (key rank, descending score), ties in file order
        self.starts = np.r_[0, np.flatnonzero(np.diff(self.rank[order])) + 1] if len(order) else np.zeros(0, np.int64)
        self.counts = np.diff(np.r_[self.starts, len(order)])
        within = np.arange(len(order)) - np.repeat(self.starts, self.counts)
        kept = within < capacity if capacity > 0 else np.ones(len(order), dtype=bool)
        self.pos = np.full(n, -1, dtype=np.int64)
        self.pos[order[kept]] = within[kept]
        self.order, self.exact = order, np.zeros(len(self.starts), dtype=bool)

    def _candidates(self) -> np.ndarray:
        """Rows that can be kept: score >= the keyframe's ``capacity``-th largest (the cap keeps no row below it), so
        only these are sorted; where the cap cuts through equal scores more than ``capacity`` rows remain, which is
        how :meth:`boundary_ties` finds it. One ``np.partition`` over the keyframes padded to one width, skipped
        when the padding would cost more than the rows (one keyframe with far more rows than the others)."""
        n, cap = len(self.rank), self.capacity
        width = int(self.key_counts.max(initial=0))
        if cap < 1 or width <= cap or len(self.key_counts) * width > 4 * n:
            return np.arange(n)
        scores = self.scores if self.grouped else self.scores[self.perm]  # (N,) keyframe by keyframe
        if self.grouped and (self.key_counts == width).all():
            padded = -scores.reshape(-1, width)  # (keyframes, width) negated scores: equal keyframes need no padding
        else:
            padded = np.full((len(self.key_counts), width), np.inf)  # (keyframes, width) negated scores, inf padding
            slot = np.arange(n) - np.repeat(self.key_starts, self.key_counts)
            padded[np.repeat(np.arange(len(self.key_counts)), self.key_counts), slot] = -scores
        threshold = -np.partition(padded, cap - 1, axis=1)[:, cap - 1]  # (keyframes,) -inf where fewer rows
        keep = np.empty(n, dtype=bool)
        keep[self.perm] = scores >= np.repeat(threshold, self.key_counts)
        return np.flatnonzero(keep)

    def boundary_ties(self) -> np.ndarray:
        """Keyframe ranks where the cap cuts through equal scores: which of them the heap keeps depends on order."""
        if self.capacity < 1:
            return np.zeros(0, dtype=np.int64)
        big = np.flatnonzero(self.counts > self.capacity)
        last_kept = self.scores[self.order[self.starts[big] + self.capacity - 1]]
        first_dropped = self.scores[self.order[self.starts[big] + self.capacity]]
        return big[last_kept == first_dropped]

    def replay(self, ranks: np.ndarray) -> None:
        """Exact official order for the keyframes of these ranks."""
        for r in np.unique(ranks[~self.exact[ranks]]):
            k = self.key_of_rank[r]
            rows = np.sort(self.perm[self.key_starts[k] : self.key_starts[k] + self.key_counts[k]])  # all, file order
            self.pos[rows] = -1
            ordered = _heap_order(rows, self.scores, self.labels, self.boxes, self.capacity)
            self.pos[ordered] = np.arange(len(ordered))
            self.exact[r] = True

    def sequence(self) -> np.ndarray:
        """Kept rows, keyframe by keyframe (first-appearance order), each in its official order (no sort: every
        kept row has its own slot, its keyframe's start plus its position)."""
        sel = np.flatnonzero(self.pos >= 0)
        slots = np.full(len(self.order), -1, dtype=np.int64)
        slots[self.starts[self.rank[sel]] + self.pos[sel]] = sel
        return slots[slots >= 0]


def _match(seq, d_boxes, d_group, g_group, g_boxes, g_pos, iou_threshold):
    """True positives of the detection rows ``seq`` (official order: within a (keyframe, class) group the first row
    to pick a box gets it), and the rows whose best IoU (>= threshold) is shared by several ground-truth boxes: the
    official ``np.argmax`` then takes the first in ground-truth order, so that order must be the official one."""
    g_order = np.lexsort((g_pos, g_group))  # (group, position in the keyframe's official ground-truth order)
    groups, g_start, g_count = np.unique(g_group[g_order], return_index=True, return_counts=True)
    width = int(g_count.max()) if len(g_count) else 1
    padded = np.full((len(groups), width, 4), -1.0)  # zero-area padding: IoU 0, and real boxes come first
    slot = np.arange(len(g_order)) - np.repeat(g_start, g_count)
    padded[np.repeat(np.arange(len(groups)), g_count), slot] = g_boxes[g_order]
    grp = d_group[seq]
    pos = np.minimum(np.searchsorted(groups, grp), max(len(groups) - 1, 0))
    has_gt = (groups[pos] == grp) if len(groups) else np.zeros(len(grp), dtype=bool)
    tp = np.zeros(len(d_boxes), dtype=bool)  # indexed by row
    shared = np.zeros(0, dtype=np.int64)
    idx = np.flatnonzero(has_gt)
    if len(idx):
        best_iou = np.empty(len(idx))
        best_gt = np.empty(len(idx), dtype=np.int64)
        n_best = np.empty(len(idx), dtype=np.int64)
        for chunk in np.array_split(np.arange(len(idx)), max(1, len(idx) * width // 65_536)):  # cache-sized
            iou = _iou_rows(d_boxes[seq[idx[chunk]], None, :], padded[pos[idx[chunk]]])  # (n, G)
            best_gt[chunk] = iou.argmax(1)
            best_iou[chunk] = iou.max(1)
            n_best[chunk] = (iou == best_iou[chunk, None]).sum(1)
        hit = best_iou >= iou_threshold
        shared = seq[idx[hit & (n_best > 1)]]
        # The first row (in seq order) of every (group, box) pair claims the box: a stable sort keeps seq order.
        cand = idx[hit]
        pair = grp[cand] * width + best_gt[hit]
        claim = _stable_argsort(pair)
        first = np.r_[True, pair[claim][1:] != pair[claim][:-1]][: len(claim)]
        tp[seq[cand[claim[first]]]] = True
    return tp, shared


def _mixed_ties(seq, rank, labels, scores, tp) -> np.ndarray:
    """Keyframe ranks with equal-score rows of one class whose true/false-positive labels differ: there (and only
    there) the order among equal scores changes the labels or their positions in the class's ranking."""
    if len(seq) < 2:
        return np.zeros(0, dtype=np.int64)
    tied = (rank[seq][1:] == rank[seq][:-1]) & (scores[seq][1:] == scores[seq][:-1])  # seq: descending per keyframe
    seq = seq[np.r_[tied, False] | np.r_[False, tied]]  # rows with an equal score next to them in their keyframe
    by_class = seq[_stable_argsort(rank[seq] * (int(labels.max(initial=0)) + 1) + labels[seq])]
    same = (rank[by_class][1:] == rank[by_class][:-1]) & (labels[by_class][1:] == labels[by_class][:-1])
    same &= (scores[by_class][1:] == scores[by_class][:-1]) & (tp[by_class][1:] != tp[by_class][:-1])
    return np.unique(rank[by_class][1:][same])


def frame_map(
    gt: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    det: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    class_ids: list[int],
    excluded: np.ndarray | None = None,
    top_k: int = TOP_K_PER_KEYFRAME,
    iou_threshold: float = IOU_THRESHOLD,
) -> tuple[float, dict[int, float]]:
    """mAP and per-class AP, equal to the official evaluator's numbers (not just close: same order, same sums).

    ``gt`` and ``det`` are ``(keys, boxes, labels, scores)`` in file order: integer keyframe codes (shared between the
    two), ``(N, 4)`` boxes x1 y1 x2 y2, action ids (>= 1) and scores; for ground truth the "score" is what the
    official reader takes from column 8 (the person id, 1.0 without one), which only orders equal-IoU boxes.
    ``excluded``: keyframe codes to drop. The common case is array operations; keyframes where ties decide (the cap
    cuts through equal scores, equal scores of one class with different outcomes, a detection with two equally
    good boxes) are replayed through the official reader's heap, row by row."""
    whitelist = np.asarray(sorted(set(class_ids)), dtype=np.int64)
    if len(whitelist) == 0 or whitelist[0] < 1:
        raise ValueError(f"class ids must be >= 1 (the official evaluator's categories are 1-indexed), got {class_ids}")
    n_cls = int(whitelist[-1]) + 1
    g_keys, g_boxes, g_labels, g_scores = (np.asarray(a) for a in gt)
    d_keys, d_boxes, d_labels, d_scores = (np.asarray(a) for a in det)
    g_labels, d_labels = g_labels.astype(np.int64), d_labels.astype(np.int64)
    listed = np.zeros(max(n_cls, int(g_labels.max(initial=0)) + 1, int(d_labels.max(initial=0)) + 1), dtype=bool)
    listed[whitelist] = True
    keep_g = listed[np.clip(g_labels, 0, None)] & (g_labels >= 0)
    keep_d = listed[np.clip(d_labels, 0, None)] & (d_labels >= 0)
    if excluded is not None and len(excluded):
        keep_g &= ~np.isin(g_keys, excluded)
        keep_d &= ~np.isin(d_keys, excluded)
    g_keys, g_labels, g_scores = (_kept_rows(keep_g, a) for a in (g_keys, g_labels, g_scores))
    g_keys, g_scores = g_keys.astype(np.int64), g_scores.astype(np.float64)
    g_boxes = _kept_rows(keep_g, np.asarray(g_boxes, dtype=np.float64).reshape(-1, 4))
    d_keys, d_labels, d_scores = (_kept_rows(keep_d, a) for a in (d_keys, d_labels, d_scores))
    d_keys, d_scores = d_keys.astype(np.int64), d_scores.astype(np.float64)
    d_boxes = _kept_rows(keep_d, np.asarray(d_boxes, dtype=np.float64).reshape(-1, 4))

    # Detections: the top `top_k` rows of every keyframe, keyframes in first-appearance order (the official dict).
    det_order = _Order(d_keys, d_scores, d_labels, d_boxes, top_k)
    det_order.replay(det_order.boundary_ties())
    # Boxes with x2 <= x1 or y2 <= y1 are dropped after the cap (the official _remove_invalid_boxes).
    valid = (d_boxes[:, 0] < d_boxes[:, 2]) & (d_boxes[:, 1] < d_boxes[:, 3])
    d_group = d_keys * n_cls + d_labels
    # Ground truth: all rows; its order only matters for equal-IoU boxes, replayed only where one is hit.
    gt_order = _Order(g_keys, g_scores, g_labels, g_boxes, 0)
    g_group = g_keys * n_cls + g_labels
    seq = det_order.sequence()
    seq = seq[valid[seq]]
    tp, shared = _match(seq, d_boxes, d_group, g_group, g_boxes, gt_order.pos, iou_threshold)
    redo = seq
    while True:  # replay where ties decide, then match those keyframes again (keyframes are independent)
        g_todo = np.unique(gt_order.rank[np.isin(g_keys, d_keys[shared])])
        g_todo = g_todo[~gt_order.exact[g_todo]]
        d_todo = _mixed_ties(redo, det_order.rank, d_labels, d_scores, tp)
        d_todo = d_todo[~det_order.exact[d_todo]]
        if not len(g_todo) and not len(d_todo):
            break
        gt_order.replay(g_todo)
        det_order.replay(d_todo)
        keys = np.union1d(np.unique(g_keys[np.isin(gt_order.rank, g_todo)]), np.unique(d_keys[np.isin(det_order.rank, d_todo)]))
        seq = det_order.sequence()
        seq = seq[valid[seq]]
        redo = seq[np.isin(d_keys[seq], keys)]
        in_g = np.isin(g_keys, keys)
        again, shared = _match(redo, d_boxes, d_group, g_group[in_g], g_boxes[in_g], gt_order.pos[in_g], iou_threshold)
        tp[np.isin(d_keys, keys)] = False
        tp[redo] = again[redo]

    # Per class: rows keyframe by keyframe in official order (a stable sort by class keeps it), then the official AP.
    by_class = seq[_stable_argsort(d_labels[seq])]
    bounds = np.searchsorted(d_labels[by_class], np.r_[whitelist, n_cls])
    gt_count = np.bincount(g_labels, minlength=n_cls)
    per_class = {}
    for c, lo, hi in zip(whitelist.tolist(), bounds[:-1], bounds[1:]):
        rows = by_class[lo:hi]
        per_class[c] = average_precision(d_scores[rows], tp[rows], int(gt_count[c])) if gt_count[c] else float("nan")
    # The official mean: np.nanmean over class ids 1..max (NaN where no ground truth), with its summation order.
    aps = np.full(n_cls - 1, np.nan)
    aps[whitelist - 1] = list(per_class.values())
    mean_ap = float(np.nanmean(aps)) if np.isfinite(aps).any() else float("nan")
    return mean_ap, per_class


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
    gv, gs, gb, ga, gp = read_csv_rows(groundtruth, with_scores=True)  # column 8: the person id (orders equal IoUs)
    dv, ds, db, da, dsc = read_csv_rows(detections, with_scores=True)
    ev, es = read_exclusions(exclusions) if exclusions else (np.array([], dtype=str), np.array([], dtype=np.int64))
    # One code per (video, second) across the three files.
    videos = np.concatenate([gv, dv, ev])
    secs = np.concatenate([gs, ds, es])
    _, vid_codes = np.unique(videos, return_inverse=True)
    codes = keyframe_code(vid_codes.astype(np.int64), secs)
    ng, nd = len(gv), len(dv)
    gt = (codes[:ng], gb, ga, gp)
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
