"""AVA frame-mAP on hand-computed cases, equal to the per-row reference to the last bit, and through the CLI."""

import json

import numpy as np
import pytest

from mvit_video.metrics.ava_frame_map import evaluate_files, frame_map
from tests.ava_reference import frame_map_reference

from .helpers import run_script

A, B = [0.1, 0.1, 0.4, 0.4], [0.5, 0.5, 0.9, 0.9]
OTHER = [0.6, 0.1, 0.9, 0.3]


def _arrays(rows, scored=True):
    keys = np.array([r[0] for r in rows], dtype=np.int64)
    boxes = np.array([r[1] for r in rows], dtype=float).reshape(-1, 4)
    labels = np.array([r[2] for r in rows], dtype=np.int64)
    scores = np.array([r[3] if scored else 1.0 for r in rows], dtype=float)
    return keys, boxes, labels, scores


def _map(gt_rows, det_rows, classes=(1, 2), **kw):
    gt, det = _arrays(gt_rows, scored=False), _arrays(det_rows)
    ours = frame_map(gt, det, list(classes), **kw)
    ref = frame_map_reference(gt, det, list(classes), **kw)
    assert ours[1] == pytest.approx(ref[1], abs=0, rel=0, nan_ok=True)  # the same bits (tests/test_ava_ties.py)
    assert ours[0] == ref[0] or (np.isnan(ours[0]) and np.isnan(ref[0]))
    return ours


def test_perfect_detections_give_one():
    gt = [(0, A, 1, 0), (0, B, 2, 0), (1, A, 1, 0)]
    det = [(0, A, 1, 0.9), (0, B, 2, 0.8), (1, A, 1, 0.7)]
    assert _map(gt, det)[0] == 1.0


def test_false_positive_ranked_above_true_positive():
    gt = [(0, A, 1, 0)]
    det = [(0, OTHER, 1, 0.9), (0, A, 1, 0.8)]  # precision 0, 1/2 at recall 0, 1 -> AP 0.5
    assert _map(gt, det, classes=(1,))[0] == pytest.approx(0.5)


def test_excluded_keyframe_is_dropped_from_both():
    gt = [(0, A, 1, 0), (5, B, 1, 0)]  # the missed box on keyframe 5 does not count
    det = [(0, A, 1, 0.5), (5, OTHER, 1, 0.9)]  # nor does the false positive there
    assert _map(gt, det, classes=(1,), excluded=np.array([5]))[0] == 1.0
    assert _map(gt, det, classes=(1,))[0] == pytest.approx(0.25)  # without the exclusion: FP first, 1 of 2 found


def test_top_50_cap_per_keyframe():
    gt = [(0, A, 1, 0)]
    det = [(0, OTHER, 2, 0.9 - i * 1e-3) for i in range(50)] + [(0, A, 1, 0.1)]  # the 51st row is the hit
    assert _map(gt, det, classes=(1, 2))[1][1] == 0.0
    assert _map(gt, det, classes=(1, 2), top_k=0)[1][1] == 1.0  # no cap: found


def test_duplicate_detection_is_a_false_positive():
    gt = [(0, A, 1, 0), (0, B, 1, 0)]
    det = [(0, A, 1, 0.9), (0, A, 1, 0.8), (0, B, 1, 0.7)]
    # tp = [1, 0, 1]; precision 1, 1/2, 2/3; recall 1/2, 1/2, 1 -> AP = 0.5*1 + 0.5*2/3
    assert _map(gt, det, classes=(1,))[0] == pytest.approx(0.5 + 1 / 3)


def test_class_without_ground_truth_is_ignored():
    gt = [(0, A, 1, 0)]
    det = [(0, A, 1, 0.9), (0, B, 2, 0.95)]
    mean_ap, per_class = _map(gt, det)
    assert np.isnan(per_class[2]) and mean_ap == 1.0


def test_detection_on_keyframe_without_ground_truth_is_false_positive():
    gt = [(0, A, 1, 0)]
    det = [(7, A, 1, 0.9), (0, A, 1, 0.5)]
    assert _map(gt, det, classes=(1,))[0] == pytest.approx(0.5)


def test_detections_that_overlap_no_ground_truth_enough_are_all_false_positives():
    gt = [(0, A, 1, 0)]
    det = [(0, OTHER, 1, 0.9), (0, B, 1, 0.5)]  # the right keyframe and class, IoU < 0.5 with the only box
    assert _map(gt, det, classes=(1,))[0] == 0.0


def test_random_cases_match_reference():
    rng = np.random.default_rng(0)
    for _ in range(5):
        n_gt, n_det = 300, 3000
        xy = rng.uniform(0, 0.7, (n_gt, 2))
        gt = [(int(rng.integers(0, 40)), [*xy[i], *(xy[i] + 0.3)], int(rng.integers(1, 6)), 0) for i in range(n_gt)]
        det = []
        for _ in range(n_det):
            k, box, lab, _ = gt[int(rng.integers(0, n_gt))]
            box = (np.array(box) + rng.normal(0, 0.05, 4)).tolist()
            det.append((k if rng.random() < 0.9 else int(rng.integers(0, 45)), box, int(rng.integers(1, 7)), float(rng.random())))
        _map(gt, det, classes=(1, 2, 3, 5, 6), excluded=np.array([3, 4]))


def test_ties_negative_scores_and_a_binding_cap_match_reference():
    """Scores quantised to tenths (many ties), some negative (logits), and a cap of 4 rows per keyframe."""
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 0.7, (60, 2))
    gt = [(int(rng.integers(0, 8)), [*xy[i], *(xy[i] + 0.3)], int(rng.integers(1, 4)), 0) for i in range(60)]
    det = []
    for _ in range(400):
        k, box, lab, _ = gt[int(rng.integers(0, 60))]
        box = (np.array(box) + rng.normal(0, 0.05, 4)).tolist()
        det.append((k, box, int(rng.integers(1, 4)), round(float(rng.uniform(-1, 1)), 1)))
    for top_k in (4, 50):
        _map(gt, det, classes=(1, 2, 3), top_k=top_k)


def test_cli_on_official_format_files(tmp_path):
    (tmp_path / "labelmap.pbtxt").write_text(
        'item {\n  name: "bend/bow (at the waist)"\n  id: 1\n}\nitem {\n  name: "crouch/kneel"\n  id: 3\n}\n'
    )
    (tmp_path / "gt.csv").write_text(
        "vidA,0902,0.1,0.1,0.4,0.4,1,0\nvidA,0902,0.1,0.1,0.4,0.4,3,0\nvidA,0903,0.5,0.5,0.9,0.9,1,1\n"
        "vidB,0904,0.1,0.1,0.4,0.4,2,0\nvidB,0905\n"  # class 2 is not in the label map; a 2-column keyframe row
    )
    (tmp_path / "det.csv").write_text(
        "vidA,0902,0.1,0.1,0.4,0.4,1,0.9\nvidA,0902,0.1,0.1,0.4,0.4,3,0.8\nvidA,0903,0.5,0.5,0.9,0.9,1,0.7\n"
        "vidA,0903,0.1,0.1,0.3,0.3,3,0.95\nvidB,0906,0.1,0.1,0.4,0.4,1,0.99\n"
    )
    (tmp_path / "excl.csv").write_text("vidB,0906\n")
    res = evaluate_files(tmp_path / "labelmap.pbtxt", tmp_path / "gt.csv", tmp_path / "det.csv", tmp_path / "excl.csv")
    assert res["per_class"] == {"bend/bow (at the waist)": 1.0, "crouch/kneel": pytest.approx(0.5)}
    out = run_script(
        "ava_eval.py",
        "-l",
        tmp_path / "labelmap.pbtxt",
        "-g",
        tmp_path / "gt.csv",
        "-d",
        tmp_path / "det.csv",
        "-e",
        tmp_path / "excl.csv",
        "--chance",
        "3",
    )
    assert out.returncode == 0, out.stderr
    line = json.loads(out.stdout.strip().splitlines()[-1])
    assert line["mAP"] == pytest.approx(0.75) and line["per_class"]["crouch/kneel"] == pytest.approx(0.5)
    assert 0 < line["chance_mAP"] <= 1
