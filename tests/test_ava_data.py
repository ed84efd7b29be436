"""AVA data on a synthetic dataset in the official layout: reading, clip indices, boxes through transforms."""

import pytest
import torch

from mvit_video.data.annotations import box_iou, match_proposals, read_boxes, read_frame_lists
from mvit_video.data.ava import AVADataset, ava_collate, read_box_files
from mvit_video.data.synthetic_ava import ACTIONS, SyntheticAVASpec, make_synthetic_ava
from mvit_video.metrics.ava_frame_map import read_labelmap

SPEC = SyntheticAVASpec(train_videos=2, val_videos=2, seconds=6, keyframes=(902, 904))
BOXES = [("ava_{}_v2.2.csv", True, 0.0), ("ava_{}_predicted_boxes.csv", False, 0.8)]


@pytest.fixture(scope="module")
def ava_root(tmp_path_factory):
    return make_synthetic_ava(tmp_path_factory.mktemp("ava") / "ava", SPEC)


def _ds(root, split, **kw):
    files = [(f.format(split), gt, thr) for f, gt, thr in BOXES]
    args = dict(num_classes=80, num_frames=8, sampling_rate=2, crop_size=64, jitter_scales=(64, 80))
    args.update(kw)
    return AVADataset(root, split, files, exclusions="ava_val_excluded_timestamps_v2.2.csv", **args)


def test_files_in_official_format(ava_root):
    frames = read_frame_lists(ava_root / "frame_lists" / "train.csv")
    assert len(frames) == 2 and len(frames["train000"]) == 6 * 30
    assert frames["train000"][0] == "train000/train000_000001.jpg"  # 1-based names
    gt = read_boxes(ava_root / "annotations" / "ava_train_v2.2.csv", is_groundtruth=True)
    labels = {a for boxes in gt.values() for acts in boxes.values() for a in acts}
    assert labels <= set(ACTIONS) and len(labels) >= 2
    props = read_boxes(ava_root / "annotations" / "ava_train_predicted_boxes.csv", False, score_threshold=0.8)
    assert all(not acts for boxes in props.values() for acts in boxes.values())  # proposals carry no labels
    assert read_labelmap(ava_root / "annotations" / "ava_action_list_v2.2_for_activitynet_2019.pbtxt") == ACTIONS


def test_person_id_is_never_a_score(tmp_path):
    csv = tmp_path / "gt.csv"
    csv.write_text("v,0902,0.1,0.1,0.5,0.5,12,0\nv,0902,0.6,0.1,0.9,0.5,14,3\n")
    boxes = read_boxes(csv, is_groundtruth=True, score_threshold=0.8)
    assert len(boxes[("v", 902)]) == 2  # person id 0 does not drop the row


def test_clip_indices_are_clamped_full_length(ava_root):
    ds = _ds(ava_root, "train", num_frames=8, sampling_rate=16)
    idx = ds.frame_indices("train000", 902)
    assert len(idx) == 8 and idx[0] == 0 and idx[4] == 60  # keyframe at position num_frames/2
    late = ds.frame_indices("train000", 905)
    assert len(late) == 8 and late[-1] == 6 * 30 - 1


def test_sample_shapes_and_val_boxes(ava_root):
    ds = _ds(ava_root, "val")
    s = ds[0]
    assert s["video"].shape == (3, 8, 64, 64) and s["labels"].shape[1] == 80
    # val: 128x96 -> 85x64 (short side 64), centre crop removes round((85 - 64) / 2) = 10 px on the left
    expected = s["ori_boxes"] * torch.tensor([85, 64, 85, 64]) - torch.tensor([10, 0, 10, 0])
    torch.testing.assert_close(s["boxes"], expected.clamp(0, 64), atol=0.02, rtol=0)
    keys = {(v, sec) for v, sec, _ in ds.samples}
    assert ("val000", 904) not in keys  # excluded timestamp


def test_train_boxes_follow_flip_and_crop(ava_root):
    ds = _ds(ava_root, "train", crop_size=72, jitter_scales=(72, 72))  # 128x96 -> 96x72: only crop offset, flip random
    flips, checked = set(), 0
    for seed in range(24):
        torch.manual_seed(seed)
        s = ds[0]
        scaled = s["ori_boxes"] * torch.tensor([96, 72, 96, 72])
        b = s["boxes"]
        inside = (b[:, 0] > 0.05) & (b[:, 2] < 71.95)  # boxes the crop did not clamp
        if not inside.any():
            continue
        checked += 1
        torch.testing.assert_close(b[:, 3] - b[:, 1], scaled[:, 3] - scaled[:, 1], atol=0.02, rtol=0)
        # Either x' = x - offset, or (flipped) x' = 64 - (x - offset), with one offset for all boxes.
        plain = scaled[inside, 0] - b[inside, 0]
        mirrored = scaled[inside, 2] - (72 - b[inside, 0])
        if torch.allclose(plain, plain[0].expand_as(plain), atol=0.02):
            flips.add(False)
            offset = plain[0]
        else:
            torch.testing.assert_close(mirrored, mirrored[0].expand_as(mirrored), atol=0.02, rtol=0)
            flips.add(True)
            offset = mirrored[0]
        assert -0.02 <= offset <= 24.02
    assert flips == {False, True} and checked >= 8


def test_collate_carries_batch_index(ava_root):
    ds = _ds(ava_root, "val")
    batch = ava_collate([ds[0], ds[1]])
    n0 = len(ds[0]["boxes"])
    assert batch["video"].shape[0] == 2 and batch["boxes"].shape[1] == 5
    assert (batch["boxes"][:n0, 0] == 0).all() and (batch["boxes"][n0:, 0] == 1).all()
    assert batch["keys"].shape == (len(batch["boxes"]), 2) and len(batch["labels"]) == len(batch["boxes"])
    names = sorted({v for v, _, _ in ds.samples})
    assert batch["video_ids"] == [names[int(v)] for v in batch["keys"][:, 0]]  # one video id per row of keys


def _write_boxes(tmp_path):
    """Ground truth: two persons on one keyframe. Proposals (``video,sec,box,,score``): the person-A box with IoU 0.95
    (score 0.81), IoU 0.85 (score 0.99), far from both (0.99), A's IoU 0.95 box at score 0.5 (below 0.8), B exactly,
    and a box on a keyframe without ground truth."""
    ann = tmp_path / "annotations"
    ann.mkdir()
    (ann / "gt.csv").write_text("v,0902,0.1,0.1,0.5,0.5,12,0\nv,0902,0.1,0.1,0.5,0.5,69,0\nv,0902,0.6,0.1,0.9,0.5,14,1\n")
    rows = [
        "0.1,0.1,0.5,0.48,,0.81",  # IoU 0.38/0.40 = 0.95 with A
        "0.1,0.1,0.5,0.44,,0.99",  # IoU 0.34/0.40 = 0.85 with A
        "0.2,0.6,0.4,0.9,,0.99",  # no overlap
        "0.1,0.12,0.5,0.5,,0.50",  # IoU 0.95 with A, score below 0.8
        "0.6,0.1,0.9,0.5,,0.90",  # B itself
    ]
    (ann / "props.csv").write_text("".join(f"v,0902,{r}\n" for r in rows) + "v,0903,0.1,0.1,0.5,0.5,,0.99\n")
    return ann


def test_training_proposals_are_kept_by_iou_with_ground_truth_not_by_score(tmp_path):
    """The paper's training boxes (§B.6): ground truth + proposals with IoU > 0.9 to a ground-truth box, each with
    that box's labels; a high score does not keep a box, and the IoU bound is strict."""
    ann = _write_boxes(tmp_path)
    gt = read_boxes(ann / "gt.csv", True)
    props = read_boxes(ann / "props.csv", False, 0.8)
    kept = match_proposals(props, gt, 0.9)
    assert kept == {("v", 902): {(0.1, 0.1, 0.5, 0.48): {12, 69}, (0.6, 0.1, 0.9, 0.5): {14}}}
    assert match_proposals(props, gt, 0.84)[("v", 902)][(0.1, 0.1, 0.5, 0.44)] == {12, 69}
    assert (0.6, 0.1, 0.9, 0.5) not in match_proposals(props, gt, 1.0).get(("v", 902), {})  # IoU exactly 1: not > 1
    assert box_iou((0.1, 0.1, 0.5, 0.5), (0.1, 0.1, 0.5, 0.48)) == pytest.approx(0.95, abs=1e-12)
    merged = read_box_files(ann, [("gt.csv", True, 0.0), ("props.csv", False, 0.8, 0.9)])
    assert set(merged) == {("v", 902)} and len(merged[("v", 902)]) == 3  # A, B (GT and proposal: one box), A at 0.95
    assert read_box_files(ann, [("gt.csv", True, 0.0), ("props.csv", False, 0.8)])[("v", 903)]  # no IoU: all kept
    with pytest.raises(ValueError, match="minimum IoU is for detector boxes"):
        read_box_files(ann, [("gt.csv", True, 0.0, 0.9)])
