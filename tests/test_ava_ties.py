"""The AVA evaluator equals the official one where ties decide (4-decimal scores make them common): hand-made cases
for each rule, the per-row restatement of the official code (``tests/ava_reference.py``) on tie-heavy random cases
to the last bit, and the in-training metric equal to the evaluator on the CSV the same run writes."""

import numpy as np
import pytest
import torch

from mvit_video.metrics import ava_frame_map
from mvit_video.metrics.ava import AVAFrameMAP
from mvit_video.metrics.ava_frame_map import (
    BOX_DECIMALS,
    SCORE_DECIMALS,
    csv_round,
    detection_csv_lines,
    evaluate_files,
    frame_map,
)
from tests.ava_reference import frame_map_reference

from .helpers import ava_tiny_run, compose_cfg

A, OTHER = [0.1, 0.1, 0.4, 0.4], [0.6, 0.1, 0.9, 0.3]
LABELMAP = "".join(f'item {{\n  name: "action {c}"\n  id: {c}\n}}\n' for c in (1, 2))


def _arrays(rows):
    """(keys, boxes, labels, scores) of ``(key, box, label, score)`` rows, in file order."""
    keys = np.array([r[0] for r in rows], dtype=np.int64)
    boxes = np.array([r[1] for r in rows], dtype=float).reshape(-1, 4)
    return keys, boxes, np.array([r[2] for r in rows], dtype=np.int64), np.array([r[3] for r in rows], dtype=float)


def _both(gt_rows, det_rows, classes=(1, 2), **kw):
    """Our evaluator and the per-row reference on the same rows; they must agree exactly."""
    ours = frame_map(_arrays(gt_rows), _arrays(det_rows), list(classes), **kw)
    ref = frame_map_reference(_arrays(gt_rows), _arrays(det_rows), list(classes), **kw)
    assert ours[1] == pytest.approx(ref[1], abs=0, rel=0, nan_ok=True)
    return ours


def test_the_cap_evicts_the_smallest_tuple_among_tied_scores():
    """50 rows at 0.5, the true positive (class 1) first, then a 0.9 row: the heap replaces its smallest tuple,
    (0.5, 1, ...) < (0.5, 2, ...), so the true positive goes. Ranking ties in file order (the code before) kept it."""
    gt = [(0, A, 1, 1.0)]
    det = [(0, A, 1, 0.5)] + [(0, OTHER, 2, 0.5)] * 49 + [(0, OTHER, 2, 0.9)]
    assert _both(gt, det)[1][1] == 0.0  # file order: 1.0
    assert _both(gt, det[:50])[1][1] == 1.0  # without the 51st row nothing is evicted


def test_equal_scores_across_keyframes_are_ranked_by_numpy_argsort_reversed():
    """A true positive on keyframe 0 and a false positive on keyframe 1, both 0.5: the class's scores are [0.5, 0.5]
    in keyframe order and the official ranking is ``np.argsort(scores)[::-1]``; on this numpy the false positive
    comes first (AP 0.5), where file order (the code before) gave 1.0."""
    gt = [(0, A, 1, 1.0)]
    det = [(0, A, 1, 0.5), (1, A, 1, 0.5)]
    first_is_tp = [True, False][np.argsort(np.array([0.5, 0.5]))[::-1][0]]
    assert _both(gt, det, classes=(1,))[0] == (1.0 if first_is_tp else 0.5)


def test_invalid_boxes_are_dropped_after_the_cap():
    """A box with x2 < x1 is no detection at all (not a false positive), but it takes its place under the cap."""
    gt = [(0, A, 1, 1.0)]
    det = [(0, [0.5, 0.1, 0.2, 0.4], 1, 0.9), (0, A, 1, 0.5)]
    assert _both(gt, det, classes=(1,))[0] == 1.0  # counted as a false positive before: 0.5
    assert _both(gt, det, classes=(1,), top_k=1)[0] == 0.0  # the invalid row kept the only slot


# G1 and G2 overlap D equally (IoU 0.625/0.875 both, exact in binary); E is G2 itself and overlaps G1 by 0.5.
G1, G2, D = [0.0, 0.0, 0.75, 1.0], [0.25, 0.0, 1.0, 1.0], [0.125, 0.0, 0.875, 1.0]


@pytest.mark.parametrize(("person_ids", "expected"), [((0, 1), 0.5), ((1, 0), 1.0)])
def test_equal_iou_goes_to_the_box_first_in_person_id_order(tmp_path, person_ids, expected):
    """The official reader sorts ground truth by descending column 8 (the person id) and ``np.argmax`` takes the first
    of equal IoUs: D takes G2 when G2's person id is higher, and E (IoU 1 with G2 only) is then a false positive."""
    gt = [(0, G1, 1, float(person_ids[0])), (0, G2, 1, float(person_ids[1]))]
    det = [(0, D, 1, 0.9), (0, G2, 1, 0.8)]
    assert _both(gt, det, classes=(1,))[0] == expected
    # The same through the files: the CLI reads column 8 of the ground truth as the person id.
    (tmp_path / "l.pbtxt").write_text(LABELMAP)
    (tmp_path / "gt.csv").write_text("".join(f"v,0902,{','.join(map(str, r[1]))},1,{int(r[3])}\n" for r in gt))
    (tmp_path / "det.csv").write_text("".join(f"v,0902,{','.join(map(str, r[1]))},1,{r[3]}\n" for r in det))
    assert evaluate_files(tmp_path / "l.pbtxt", tmp_path / "gt.csv", tmp_path / "det.csv")["mAP"] == expected


def test_equal_iou_with_equal_person_ids_replays_the_official_ground_truth_order():
    """Equal person ids (G2 then G1 in the file): the order among them is the official reader's heap order, not file
    order, so the equal-IoU detection D must be replayed. The official answer: D takes G1, E takes G2 (AP 1.0);
    matching in file order without the replay gives D G2 and E a false positive (0.5)."""
    gt = [(0, G2, 1, 1.0), (0, G1, 1, 1.0)]
    det = [(0, D, 1, 0.9), (0, G2, 1, 0.8)]
    assert frame_map_reference(_arrays(gt), _arrays(det), [1])[0] == 1.0
    assert _both(gt, det, classes=(1,))[0] == 1.0


def _tie_heavy_case(seed, n_keys, n_det, n_labels, decimals):
    """Boxes on a coarse grid (equal boxes and equal IoUs are common), scores with ``decimals`` decimals, more than
    50 rows per keyframe (a binding cap, often cut through equal scores), labels beyond the evaluated classes,
    some invalid boxes, person ids 0-3 on the ground truth."""
    rng = np.random.default_rng(seed)
    n_gt = 4 * n_keys
    g_keys = rng.integers(0, n_keys, n_gt)
    xy = rng.integers(0, 5, (n_gt, 2)) / 10
    g_boxes = np.concatenate([xy, xy + rng.integers(2, 6, (n_gt, 2)) / 10], 1)
    g_labels = rng.integers(1, n_labels + 1, n_gt)
    src = rng.integers(0, n_gt, n_det)
    d_boxes = np.round(g_boxes[src] + rng.integers(-1, 2, (n_det, 4)) / 10, 3)  # ~3% with x2 <= x1 or y2 <= y1
    d_keys = np.where(rng.random(n_det) < 0.9, g_keys[src], rng.integers(0, n_keys + 3, n_det))
    d_labels = np.where(rng.random(n_det) < 0.5, g_labels[src], rng.integers(1, n_labels + 1, n_det))
    d_scores = np.round(rng.random(n_det) ** 2, decimals)
    return (g_keys, g_boxes, g_labels, rng.integers(0, 4, n_gt).astype(float)), (d_keys, d_boxes, d_labels, d_scores)


CASES = {  # name: (keyframes, detection rows, labels, evaluated classes, score decimals)
    "2 decimals, 12 classes": (20, 2000, 12, list(range(1, 13)), 2),
    "1 decimal, cap cut through ties": (8, 1600, 6, [1, 2, 3, 5, 6], 1),
    "4 decimals, 80 labels, 60 evaluated": (10, 3000, 80, list(range(1, 81))[::4] + list(range(2, 81, 4)), 4),
}


@pytest.mark.parametrize("name", CASES)
def test_tie_heavy_cases_equal_the_official_semantics_to_the_last_bit(name, monkeypatch):
    n_keys, n_det, n_labels, classes, decimals = CASES[name]
    replays = []
    heap_order = ava_frame_map._heap_order
    monkeypatch.setattr(ava_frame_map, "_heap_order", lambda *a: replays.append(1) or heap_order(*a))
    worst, worst_class = 0.0, 0.0
    for seed in range(4):
        gt, det = _tie_heavy_case(seed, n_keys, n_det, n_labels, decimals)
        excluded = np.array([seed % n_keys])
        ours = frame_map(gt, det, classes, excluded=excluded)
        ref = frame_map_reference(gt, det, classes, excluded=excluded)
        worst = max(worst, abs(ours[0] - ref[0]))
        worst_class = max([worst_class] + [abs(ours[1][c] - ref[1][c]) for c in classes if not np.isnan(ref[1][c])])
        assert ours[0] == ref[0]
        assert ours[1] == pytest.approx(ref[1], abs=0, rel=0, nan_ok=True)
    print(f"{name}: max |mAP diff| {worst}, max |AP diff| {worst_class}, keyframes replayed {len(replays)}")
    assert worst == worst_class == 0.0
    assert replays  # the exact path ran (the cases are built to need it)


@pytest.mark.parametrize("top_k", [1, 7, 0])
def test_one_crowded_keyframe_and_other_caps_equal_the_official_semantics(top_k):
    """Half the rows on one keyframe (the padded partition that pre-selects rows is skipped then), caps of 1 and 7,
    and no cap (0: the official capacity 0), with 1-decimal scores."""
    gt, (keys, *rest) = _tie_heavy_case(5, 12, 1500, 6, 1)
    det = (np.where(np.arange(len(keys)) % 2 == 0, keys[0], keys), *rest)
    ours = frame_map(gt, det, [1, 2, 3, 4, 5, 6], top_k=top_k)
    ref = frame_map_reference(gt, det, [1, 2, 3, 4, 5, 6], top_k=top_k)
    assert ours[0] == ref[0] and ours[1] == pytest.approx(ref[1], abs=0, rel=0, nan_ok=True)


@pytest.mark.parametrize("equal_counts", [False, True])
def test_rows_grouped_by_keyframe_as_files_are_written_equal_the_official_semantics(equal_counts):
    """Rows of a keyframe together and keyframes ascending, as detection CSVs are written (the evaluator then skips
    the sort by keyframe), with ragged keyframes or all of one size (no padding before the partition); 1-decimal
    scores, so the cap cuts through ties."""
    gt, (keys, boxes, labels, scores) = _tie_heavy_case(3, 8, 1600, 6, 1)
    if equal_counts:
        keys = np.repeat(np.arange(8), 200)  # 8 keyframes of 200 rows
    by_key = np.argsort(keys, kind="stable")  # file order within each keyframe
    det = (keys[by_key], boxes[by_key], labels[by_key], scores[by_key])
    assert (np.diff(det[0]) >= 0).all() and (len(set(np.bincount(det[0]))) == 1) == equal_counts
    for top_k in (50, 7):
        ours = frame_map(gt, det, [1, 2, 3, 4, 5, 6], top_k=top_k)
        ref = frame_map_reference(gt, det, [1, 2, 3, 4, 5, 6], top_k=top_k)
        assert ours[0] == ref[0] and ours[1] == pytest.approx(ref[1], abs=0, rel=0, nan_ok=True)


def test_metric_equals_the_evaluator_on_the_csv_it_would_write(tmp_path):
    """``AVAFrameMAP`` as the detection task builds it (rounding as the CSV writer) on float32 scores and boxes, and
    ``evaluate_files`` on the CSV that ``detection_csv_lines`` writes from the same rows: the same number, exactly.
    Scores on a 1/64 grid plus noise below 4e-5: distinct as computed, many ties once written with 4 decimals."""
    g = torch.Generator().manual_seed(0)
    classes = [1, 2, 4]
    n = 40
    sec = torch.randint(902, 906, (n,), generator=g)
    xy = torch.randint(0, 500, (n, 2), generator=g).double() / 1000
    gt_boxes64 = torch.cat([xy, xy + 0.3], 1)  # (n, 4) 3-decimal values, as the ground-truth CSV holds them
    gt_labels = torch.rand(n, 4, generator=g) < 0.4
    det_boxes = (gt_boxes64 + torch.randn(n, 4, generator=g) * 0.02).float()  # float32, as the dataset gives them
    probs = (torch.randint(1, 64, (n, 4), generator=g) / 64 + torch.rand(n, 4, generator=g) * 4e-5).float()  # (n, 4)
    keys = torch.stack([torch.zeros(n, dtype=torch.long), sec], 1)
    metric = AVAFrameMAP(classes, score_decimals=SCORE_DECIMALS, box_decimals=BOX_DECIMALS)
    for part in (slice(0, 25), slice(25, n)):  # two batches
        k = keys[part, 1]
        metric.update(k, det_boxes[part], probs[part], k, gt_boxes64[part].float(), gt_labels[part])
    rows = [
        ("vid", int(s), tuple(b), p)
        for s, b, p in zip(
            sec.tolist(),
            csv_round(det_boxes.double().numpy(), BOX_DECIMALS).tolist(),
            csv_round(probs[:, [c - 1 for c in classes]].double().numpy(), SCORE_DECIMALS).tolist(),
        )
    ]
    (tmp_path / "det.csv").write_text("\n".join(detection_csv_lines(rows, classes)) + "\n")
    gt_lines = [
        f"vid,{s:04d},{','.join(f'{c:.3f}' for c in box)},{c + 1},{i}"
        for i, (s, box, labels) in enumerate(zip(sec.tolist(), gt_boxes64.tolist(), gt_labels.tolist()))
        for c in range(4)
        if labels[c]
    ]
    (tmp_path / "gt.csv").write_text("\n".join(gt_lines) + "\n")
    (tmp_path / "l.pbtxt").write_text("".join(f'item {{\n  name: "a{c}"\n  id: {c}\n}}\n' for c in classes))
    logged = metric.compute().item()
    written = evaluate_files(tmp_path / "l.pbtxt", tmp_path / "gt.csv", tmp_path / "det.csv")["mAP"]
    assert logged == written and 0.2 < logged < 1.0
    unrounded = AVAFrameMAP(classes)  # without the rounding the metric sees other values (here: another mAP)
    unrounded.update(keys[:, 1], det_boxes, probs, keys[:, 1], gt_boxes64.float(), gt_labels)
    assert unrounded.compute().item() != written


@pytest.mark.slow
def test_logged_val_map_equals_ava_eval_on_the_runs_csv(tmp_path):
    """A tiny detection run: its logged val/mAP (float64) is exactly what the evaluator gives on its detections CSV."""
    from mvit_video.train import run

    metrics = run(compose_cfg(ava_tiny_run(val_videos=3), tmp_path / "out", tmp_path / "data"))
    ann = tmp_path / "data" / "synthetic_ava" / "annotations"
    res = evaluate_files(
        ann / "ava_action_list_v2.2_for_activitynet_2019.pbtxt",
        ann / "ava_val_v2.2.csv",
        tmp_path / "out" / "detections" / "detections_val.csv",
        ann / "ava_val_excluded_timestamps_v2.2.csv",
    )
    print(f"logged val/mAP {metrics['val/mAP']!r}, ava_eval on the CSV {res['mAP']!r}")
    assert metrics["val/mAP"] == res["mAP"]
