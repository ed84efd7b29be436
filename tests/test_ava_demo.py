"""scripts/ava_demo.py on a raw video without a box file: a person detector on each keyframe, the IoU tracker's
ids, the AVA detector's actions; the video, CSV and timeline it writes, read back. The video is written by the
ffmpeg CLI: coloured rectangles ("actors") moving, crossing near each other, one leaving and one arriving; the
person detector is ``ColourBoxDetector``, a deterministic stand-in that finds those colours (not people)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from mvit_video.data.ava import FPS
from mvit_video.models import build_model
from mvit_video.models.detector import build_ava_detector
from mvit_video.persons import (
    COCO_PERSON,
    PERSON_SCORE,
    DetectorWeightsError,
    IoUTracker,
    TorchvisionPersonDetector,
    person_boxes,
)
from mvit_video.tasks.classification import checkpoint_metadata

from .helpers import run_script

W, H, SECONDS = 320, 240, 8
ACTIONS = {11: "sit", 12: "stand", 14: "walk"}  # the tiny detector's evaluated AVA ids


def actor_boxes(t: float) -> dict[str, tuple[float, float, float, float] | None]:
    """Pixel boxes (x1, y1, x2, y2) of the actors at time ``t``, as the ffmpeg filter graph below draws them."""
    boxes: dict[str, tuple[float, float, float, float] | None] = {}
    boxes["red"] = (40 + 20 * t, 60, 100 + 20 * t, 180)  # walks right ...
    boxes["green"] = (220 - 20 * t, 90, 280 - 20 * t, 210)  # ... past green walking left (they pass at t = 4.5)
    x = 250 if t < 5 else 250 + 200 * (t - 5)
    boxes["blue"] = (x, 20, x + 50, 80) if x < W else None  # stands, then runs out of the frame
    boxes["yellow"] = (250, 150, 300, 210) if t >= 5.5 else None  # arrives
    return boxes


def write_actor_video(path: Path) -> Path:
    """The actors of ``actor_boxes`` on grey, H.264 at 30 fps, written by the ffmpeg CLI (overlay: x, y per frame)."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("the ffmpeg CLI is not installed")
    colours = [("FF0000", "60x120"), ("00FF00", "60x120"), ("0000FF", "50x60"), ("FFFF00", "50x60")]
    inputs = ["-f", "lavfi", "-i", f"color=c=0x404040:s={W}x{H}:r={FPS}:d={SECONDS}"]
    for colour, size in colours:
        inputs += ["-f", "lavfi", "-i", f"color=c=0x{colour}:s={size}:r={FPS}"]
    graph = (
        "[0][1]overlay=x='40+20*t':y=60:shortest=1[a];[a][2]overlay=x='220-20*t':y=90:shortest=1[b];"
        "[b][3]overlay=x='if(lt(t,5),250,250+200*(t-5))':y=20:shortest=1[c];"
        "[c][4]overlay=x=250:y=150:enable='gte(t,5.5)':shortest=1"
    )
    cmd = ["ffmpeg", "-v", "error", "-y", *inputs, "-filter_complex", graph, "-c:v", "libx264", "-pix_fmt", "yuv420p"]
    subprocess.run([*cmd, str(path)], check=True)
    return path


def tiny_ava_checkpoint(path: Path) -> Path:
    """An untrained tiny AVA detector saved as train.py saves one (weights under ``net.``, the metadata)."""
    torch.manual_seed(0)
    det = build_ava_detector(build_model("mvitv2_tiny", num_classes=0, drop_path_rate=0.0), num_classes=80, dropout=0.0)
    meta = checkpoint_metadata(
        det,
        {
            "num_frames": 8,
            "sampling_rate": 4,
            "target_fps": FPS,
            "crop_size": 64,
            "mean": [0.45] * 3,
            "std": [0.225] * 3,
            "action_names": ACTIONS,
        },
    )
    meta["detector"] = {"num_classes": 80}
    state = {f"net.{k}": v for k, v in det.state_dict().items()}
    torch.save({"state_dict": state, "mvit_video": meta}, path)
    return path


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_tracker_keeps_ids_of_two_persons_crossing_one_leaving_one_arriving():
    """A moves right, B left, a little lower, 0.15 of the frame per keyframe; they pass each other between
    steps 2 and 3, so at step 3 each one's last box lies on the other's new box (IoU 0.9): matched on last boxes
    they swap ids, matched on boxes predicted at constant velocity they keep them. C stands, then is gone for
    good (its track ends after ``max_age`` misses); D arrives late and gets a new id."""
    tracker = IoUTracker(min_iou=0.1, max_age=1)
    seen = []
    for step in range(5):
        a = [0.15 * step, 0.2, 0.2 + 0.15 * step, 0.7]
        b = [0.75 - 0.15 * step, 0.25, 0.95 - 0.15 * step, 0.75]
        boxes = [b, a] + ([[0.8, 0.8, 0.9, 0.95]] if step < 2 else []) + ([[0.0, 0.8, 0.1, 0.95]] if step >= 3 else [])
        seen.append(tracker.update(torch.tensor(boxes)))
    assert [s[:2] for s in seen] == [[1, 2]] * 5  # B then A, in the order given, every step
    assert [s[2:] for s in seen] == [[3], [3], [], [4], [4]]
    assert all(t.id != 3 for t in tracker.tracks)


def test_tracker_matches_the_best_pair_first():
    """The first track's best new box (IoU 0.23) is the second track's far better one (0.78); greedy on the
    best pair overall gives each track its own (the first gets its 0.14), a match track by track would not."""
    tracker = IoUTracker(min_iou=0.1)
    tracker.update(torch.tensor([[0.3, 0.0, 0.7, 0.4], [0.6, 0.0, 1.0, 0.4]]))
    ids = tracker.update(torch.tensor([[0.55, 0.0, 0.95, 0.4], [0.0, 0.0, 0.4, 0.4]]))
    assert ids == [2, 1]


def test_tracker_keeps_the_id_of_a_person_missed_on_one_keyframe():
    """A person moving 0.1 per keyframe (box 0.2 wide: IoU 0.33 with its previous box) is missed on keyframe 2;
    on 3 its box is 0.2 from the last one seen (IoU 0): only the prediction over the gap (velocity x 2) finds it."""
    tracker = IoUTracker(min_iou=0.3, max_age=2)
    seen = []
    for step in range(6):
        box = [0.1 * step, 0.1, 0.2 + 0.1 * step, 0.6]
        seen.append(tracker.update(torch.tensor([box] if step != 2 else [])))
    assert seen == [[1], [1], [], [1], [1], [1]]


def test_person_boxes_keeps_coco_persons_at_or_above_the_score_normalised(tmp_path):
    """A score of exactly PERSON_SCORE is kept, as the AVA data reader keeps its proposals (>=, SlowFast's reader)."""
    out = {
        "boxes": torch.tensor([[32.0, 24.0, 64.0, 96.0], [0.0, 0.0, 10.0, 10.0], [16.0, 0.0, 330.0, 250.0], [1.0, 2, 3, 4]]),
        "labels": torch.tensor([COCO_PERSON, 3, COCO_PERSON, COCO_PERSON]),
        "scores": torch.tensor([0.9, 0.99, 0.85, PERSON_SCORE]),
    }
    boxes, scores = person_boxes(out, 240, 320, PERSON_SCORE)  # label 3 is a car
    expected = torch.tensor([[0.1, 0.1, 0.2, 0.4], [0.05, 0.0, 1.0, 1.0], [1 / 320, 2 / 240, 3 / 320, 4 / 240]])
    torch.testing.assert_close(boxes, expected, rtol=0, atol=1.2e-7)
    torch.testing.assert_close(scores, torch.tensor([0.9, 0.85, PERSON_SCORE]))
    # The data reader on a proposal file (conf/data/ava.yaml's threshold is this value) keeps that score too.
    from mvit_video.data.annotations import read_boxes

    (tmp_path / "proposals.csv").write_text(f"v,0902,0.1,0.1,0.2,0.4,,{PERSON_SCORE:.4f}\n")
    assert len(read_boxes(tmp_path / "proposals.csv", is_groundtruth=False, score_threshold=PERSON_SCORE)) == 1


def _biased_ssdlite(path: Path) -> Path:
    """A randomly initialised torchvision SSDlite whose class logits are set (weights 0, a bias per feature level:
    background 0, other classes -10) so that its raw output holds persons far above 0.5 (level 0, softmax 0.88),
    persons far below (level 1, 0.12) and cars far above (level 2, 0.88), and nothing else; saved as a state dict."""
    from torchvision.models import get_model

    torch.manual_seed(0)
    model = get_model("ssdlite320_mobilenet_v3_large", weights=None, weights_backbone=None)
    for level, block in enumerate(model.head.classification_head.module_list):
        conv = block[-1]
        bias = torch.full((conv.out_channels // 91, 91), -10.0)  # (anchors, classes)
        bias[:, 0] = 0.0
        if level < 3:
            bias[:, (COCO_PERSON, COCO_PERSON, 3)[level]] = (2.0, -2.0, 2.0)[level]
        with torch.no_grad():
            conv.weight.zero_()
            conv.bias.copy_(bias.flatten())
    torch.save(model.state_dict(), path)
    return path


@pytest.mark.slow
def test_torchvision_adapter_loads_local_weights_and_keeps_persons(tmp_path):
    weights = _biased_ssdlite(tmp_path / "ssdlite.pth")
    name = "ssdlite320_mobilenet_v3_large"
    kw = {"topk_candidates": 5000, "detections_per_img": 5000}  # the model's own top-k: keep all
    det = TorchvisionPersonDetector(name, weights, score_threshold=0.5, **kw)
    frames = torch.randint(0, 256, (2, 3, 120, 160), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    raw = det.raw(frames)
    assert {COCO_PERSON, 3} <= set(raw[0]["labels"].tolist())  # the filter has something to drop
    assert ((raw[0]["labels"] == COCO_PERSON) & (raw[0]["scores"] < 0.5)).any()
    for (boxes, scores), r in zip(det(frames), raw):
        keep = (r["labels"] == COCO_PERSON) & (r["scores"] > 0.5)
        assert 0 < len(boxes) == int(keep.sum())
        torch.testing.assert_close(boxes, r["boxes"][keep] / torch.tensor([160, 120, 160, 120]), rtol=0, atol=1.2e-7)
        torch.testing.assert_close(scores, r["scores"][keep], rtol=0, atol=0)
        assert boxes.min() >= 0 and boxes.max() <= 1

    # The demo with it, as users type it: its persons score 0.88, under --person-score 0.9 there are none; the
    # demo still writes the video, an empty CSV and a timeline without tracks.
    video, out = tmp_path / "clip.mp4", tmp_path / "demo.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"testsrc2=s=160x120:r={FPS}:d=2", str(video)], check=True)
    args = ["--detector", name, "--detector-weights", weights, "--person-score", "0.9", "--short-side", "60", "--out", out]
    res = run_script("ava_demo.py", video, "--ckpt", tiny_ava_checkpoint(tmp_path / "ava.ckpt"), *args)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "demo.csv: 0 rows" in res.stdout and "0 tracks" in res.stdout and out.stat().st_size > 0
    records = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert [(r["second"], r["boxes"]) for r in records] == [(0, []), (1, [])]  # one line per keyframe
    assert out.with_suffix(".csv").read_text() == ""
    import av

    with av.open(str(out)) as c:  # scaled down to the short side asked for (160 x 120 -> 80 x 60)
        assert (c.streams.video[0].codec_context.width, c.streams.video[0].codec_context.height) == (80, 60)
    torch.save({"backbone.x": torch.zeros(1)}, tmp_path / "w.pth")  # a file of another model
    with pytest.raises(DetectorWeightsError, match="w.pth: these weights do not fit ssdlite320_mobilenet_v3_large"):
        TorchvisionPersonDetector(name, tmp_path / "w.pth")


def test_torchvision_adapter_names_a_bad_name_or_file(tmp_path):
    with pytest.raises(DetectorWeightsError, match="unknown detector 'yolo'.*fasterrcnn_resnet50_fpn_v2"):
        TorchvisionPersonDetector("yolo", tmp_path / "w.pth")
    with pytest.raises(DetectorWeightsError, match="w.pth: detector weights not found"):
        TorchvisionPersonDetector("ssdlite320_mobilenet_v3_large", tmp_path / "w.pth")
    (tmp_path / "t.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(DetectorWeightsError, match="t.pth: not a readable weights file"):
        TorchvisionPersonDetector("ssdlite320_mobilenet_v3_large", tmp_path / "t.pth")


@pytest.mark.slow
def test_demo_without_a_box_file_tracks_labels_and_draws(tmp_path):
    video = write_actor_video(tmp_path / "actors.mp4")
    ckpt = tiny_ava_checkpoint(tmp_path / "ava.ckpt")
    out = tmp_path / "demo.mp4"
    res = run_script("ava_demo.py", video, "--ckpt", ckpt, "--detector", "mvit_video.persons:ColourBoxDetector", "--out", out)
    assert res.returncode == 0, res.stderr[-3000:]
    records = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert [r["second"] for r in records] == list(range(SECONDS))

    # Each detected box is an actor's (IoU > 0.9 with its drawn box), and each actor keeps one id throughout.
    ids: dict[str, set[int]] = {}
    for r in records:
        truth = {k: v for k, v in actor_boxes(r["second"]).items() if v is not None}
        assert len(r["boxes"]) == len(truth) == len(r["ids"]) == len(set(r["ids"]))
        for box, tid in zip(r["boxes"], r["ids"]):
            pixel = [box[0] * W, box[1] * H, box[2] * W, box[3] * H]
            name, best = max(((k, iou(pixel, v)) for k, v in truth.items()), key=lambda kv: kv[1])
            assert best > 0.9, (r["second"], name, best)
            ids.setdefault(name, set()).add(tid)
    assert all(len(v) == 1 for v in ids.values()) and len(set().union(*ids.values())) == 4, ids
    assert ids["yellow"] == {4}  # the arriving actor gets a new id, not the one of the actor who left

    # The drawn outlines are where the boxes are: the column at each box's left edge (mid-height, below the text)
    # is the track's colour, the column just outside it is not. Edges within 8 px of another box are skipped
    # (H.264 smears two colours that touch).
    import runpy

    import av

    colour_of = runpy.run_path(str(Path(__file__).parents[1] / "scripts" / "ava_demo.py"))["colour_of"]

    def frames_of(path):
        with av.open(str(path)) as c:
            return [f.to_ndarray(format="rgb24").astype(int) for f in c.decode(video=0)]

    drawn, plain = frames_of(out), frames_of(video)
    assert len(drawn) == len(plain) == SECONDS * FPS
    checked = 0
    for r in records:
        key = r["second"] * FPS
        for j, (box, tid) in enumerate(zip(r["boxes"], r["ids"])):
            x, y1, y2 = round(box[0] * W), int(box[1] * H) + 15, int(box[3] * H) - 5  # below the id text
            others = [b for i, b in enumerate(r["boxes"]) if i != j and b[1] * H < y2 and b[3] * H > y1]
            if any(b[0] * W - 8 < x < b[2] * W + 8 for b in others):
                continue
            target = np.array(colour_of(tid))
            inside, outside = drawn[key][y1:y2, x + 1].mean(0), drawn[key][y1:y2, x - 1].mean(0)
            under = plain[key][y1:y2, x + 1].mean(0)
            assert np.abs(inside - target).max() < np.abs(under - target).max() / 3, (r["second"], tid, inside, under)
            assert np.abs(outside - target).max() > 40, (r["second"], tid, outside)
            checked += 1
    assert checked >= 18

    # The CSV: every box x every evaluated action, training's format; through ava_eval against ground truth made
    # from the actors' drawn boxes, in which every actor does every action: mAP 1 exactly when every box, second
    # and video id lines up (a misplaced box would be a false positive).
    rows = out.with_suffix(".csv").read_text().splitlines()
    assert len(rows) == sum(len(r["boxes"]) for r in records) * len(ACTIONS)
    first = rows[0].split(",")
    assert first[0] == "actors" and first[1] == "0000" and len(first[2]) == 5 and len(first[7].split(".")[1]) == 4
    gt = []
    for sec in range(SECONDS):
        for pid, b in enumerate(actor_boxes(sec).values()):
            if b is not None:
                norm = ",".join(f"{v:.3f}" for v in (b[0] / W, b[1] / H, min(b[2], W) / W, b[3] / H))
                gt += [f"actors,{sec:04d},{norm},{a},{pid}" for a in ACTIONS]
    (tmp_path / "gt.csv").write_text("\n".join(gt) + "\n")
    labelmap = "".join(f'label {{\n  name: "{n}"\n  label_id: {i}\n}}\n' for i, n in ACTIONS.items())
    (tmp_path / "labels.pbtxt").write_text(labelmap)
    res = run_script("ava_eval.py", "-l", tmp_path / "labels.pbtxt", "-g", tmp_path / "gt.csv", "-d", out.with_suffix(".csv"))
    assert res.returncode == 0, res.stderr
    # AP 1 is summed from <= 32 precision x recall steps in float64: each rounds by at most 2^-53
    assert json.loads(res.stdout.splitlines()[-1])["mAP"] == pytest.approx(1.0, rel=0, abs=32 * 2**-53)

    # The timeline: one row per track, each keyframe's top action in its colour.
    from PIL import Image

    with Image.open(tmp_path / "demo_timeline.png") as img:
        meta = json.loads(img.info["Description"])
        pixels = {tuple(p) for p in np.asarray(img.convert("RGB")).reshape(-1, 3)}
    assert sorted(meta["tracks"]) == ["1", "2", "3", "4"]
    present = {name: sum(actor_boxes(sec)[name] is not None for sec in range(SECONDS)) for name in ids}
    assert {name: len(meta["tracks"][str(min(tid))]) for name, tid in ids.items()} == present
    for colour in meta["colours"].values():
        assert tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5)) in pixels


def test_demo_refuses_no_box_source_and_a_bad_detector(tmp_path):
    """Answered before any checkpoint or video is read (so neither needs to exist here)."""
    ckpt = tmp_path / "ava.ckpt"
    res = run_script("ava_demo.py", tmp_path / "v.mp4", "--ckpt", ckpt, "--out", tmp_path / "d.mp4")
    assert res.returncode == 2 and "exactly one of --boxes CSV or --detector" in res.stderr
    res = run_script("ava_demo.py", tmp_path / "v.mp4", "--ckpt", ckpt, "--detector", "yolo", "--out", tmp_path / "d.mp4")
    assert res.returncode == 2 and "--detector yolo needs --detector-weights" in res.stderr
    args = ["--detector", "fasterrcnn_resnet50_fpn_v3", "--detector-weights", tmp_path / "w.pth", "--out", tmp_path / "d.mp4"]
    res = run_script("ava_demo.py", tmp_path / "v.mp4", "--ckpt", ckpt, *args)
    assert res.returncode == 2 and "unknown detector 'fasterrcnn_resnet50_fpn_v3'" in res.stderr, res.stderr
    # A box CSV of two videos with a raw video and no --video-id: each second would take the last video's boxes.
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("vid_b,0001,0.1,0.1,0.4,0.4,1,0\nvid_a,0001,0.5,0.5,0.9,0.9,1,0\n")
    res = run_script("ava_demo.py", tmp_path / "v.mp4", "--ckpt", ckpt, "--boxes", boxes, "--out", tmp_path / "d.mp4")
    assert res.returncode == 2 and "2 videos (vid_a, vid_b): name one with --video-id" in res.stderr, res.stderr


def test_demo_box_csv_gives_one_video_s_boxes(tmp_path):
    """With --video-id (or a frame folder's name) only that video's boxes; without one, a one-video CSV as it is."""
    import runpy

    boxes_by_second = runpy.run_path(str(Path(__file__).parents[1] / "scripts" / "ava_demo.py"))["boxes_by_second"]
    path = tmp_path / "boxes.csv"
    path.write_text("a,0001,0.1,0.1,0.4,0.4,1,0\na,0001,0.1,0.1,0.4,0.4,2,0\nb,0001,0.5,0.5,0.9,0.9,1,0\n")
    assert boxes_by_second(path, "a") == {1: [[0.1, 0.1, 0.4, 0.4]]}
    assert boxes_by_second(path, "b") == {1: [[0.5, 0.5, 0.9, 0.9]]}
    with pytest.raises(ValueError, match=r"2 videos \(a, b\)"):
        boxes_by_second(path, None)  # merged before: second 1 took b's box alone
    path.write_text("a,0001,0.1,0.1,0.4,0.4,1,0\n")
    assert boxes_by_second(path, None) == {1: [[0.1, 0.1, 0.4, 0.4]]}


# scripts/cvat_to_ava.py: a hand-written "CVAT for video 1.1" export (the structure of CVAT's docs, "XML annotation
# format", Interpolation, and of its exporter: meta/task/labels with attribute declarations, original_size, tracks
# of boxes with outside/occluded/keyframe and per-box attributes), once with only the keyframes and once with every
# frame as CVAT's own export writes it.
CVAT_HEAD = """<?xml version="1.0" encoding="utf-8"?>
<annotations>
  <version>1.1</version>
  <meta>
    <task>
      <id>7</id>
      <name>street scene</name>
      <size>150</size>
      <mode>interpolation</mode>
      <overlap>0</overlap>
      <labels>
        <label>
          <name>person</name>
          <type>rectangle</type>
          <attributes>
            <attribute>
              <name>action</name>
              <mutable>True</mutable>
              <input_type>select</input_type>
              <default_value>stand</default_value>
              <values>stand
walk
sit</values>
            </attribute>
            <attribute>
              <name>talk</name>
              <mutable>True</mutable>
              <input_type>checkbox</input_type>
              <default_value>false</default_value>
              <values>false</values>
            </attribute>
          </attributes>
        </label>
        <label>
          <name>run</name>
          <type>rectangle</type>
          <attributes>
          </attributes>
        </label>
      </labels>
      <original_size>
        <width>640</width>
        <height>480</height>
      </original_size>
    </task>
    <dumped>2026-11-26 03:00:00.000000+00:00</dumped>
  </meta>
"""
# (track id, label, group id, [(frame, outside, (xtl, ytl, xbr, ybr), {attribute: value})]): the keyframes.
CVAT_TRACKS = [
    (
        0,
        "person",
        0,
        [
            (0, 0, (64, 48, 128, 240), {"action": "stand", "talk": "false"}),
            (60, 0, (192, 48, 256, 240), {"action": "walk", "talk": "true"}),
            (75, 1, (192, 48, 256, 240), {"action": "walk", "talk": "true"}),  # leaves ...
            (105, 0, (320, 96, 384, 288), {"action": "sit", "talk": "false"}),  # ... and comes back
        ],
    ),
    (1, "run", 0, [(30, 0, (320, 240, 384, 432), {}), (90, 0, (448, 240, 512, 432), {}), (100, 1, (448, 240, 512, 432), {})]),
    (2, "run", 1, [(0, 0, (512, 0, 576, 192), {}), (1, 1, (512, 0, 576, 192), {})]),  # one person, two tracks
    (3, "person", 1, [(0, 0, (512, 0, 576, 192), {"action": "", "talk": "true"}), (1, 1, (512, 0, 576, 192), {})]),
]
# What AVA's layout must say (ids in declaration order: stand 1, walk 2, sit 3, talk 4, run 5; the group's person
# id comes after the track ids: 4 + 1); frame 30 s is interpolated halfway.
CVAT_EXPECTED = """street_scene,0900,0.100,0.100,0.200,0.500,1,0
street_scene,0900,0.800,0.000,0.900,0.400,4,5
street_scene,0900,0.800,0.000,0.900,0.400,5,5
street_scene,0901,0.200,0.100,0.300,0.500,1,0
street_scene,0901,0.500,0.500,0.600,0.900,5,1
street_scene,0902,0.300,0.100,0.400,0.500,2,0
street_scene,0902,0.300,0.100,0.400,0.500,4,0
street_scene,0902,0.600,0.500,0.700,0.900,5,1
street_scene,0903,0.700,0.500,0.800,0.900,5,1
street_scene,0904,0.500,0.200,0.600,0.600,3,0
"""


def _cvat_box(frame: int, outside: int, keyframe: int, xyxy, attrs: dict[str, str]) -> str:
    coords = " ".join(f'{k}="{v:.2f}"' for k, v in zip(("xtl", "ytl", "xbr", "ybr"), xyxy))
    body = "".join(f'\n      <attribute name="{k}">{v}</attribute>' for k, v in attrs.items())
    head = f'    <box frame="{frame}" keyframe="{keyframe}" outside="{outside}" occluded="0" {coords} z_order="0">'
    return f"{head}{body}\n    </box>\n"


def write_cvat_xml(path: Path, every_frame: bool, last_frame: int = 149) -> Path:
    """``CVAT_TRACKS`` as an export: keyframes only, or every frame the way CVAT's exporter writes a track
    (linear between keyframes, attributes of the keyframe before, nothing after an outside keyframe until the next
    keyframe, the last shape held to the task's last frame; interpolated boxes have keyframe="0")."""
    text = CVAT_HEAD
    for tid, label, group, keys in CVAT_TRACKS:
        text += f'  <track id="{tid}" label="{label}" source="manual"' + (f' group_id="{group}"' if group else "") + ">\n"
        for i, (frame, outside, xyxy, attrs) in enumerate(keys):
            text += _cvat_box(frame, outside, 1, xyxy, attrs)
            if not every_frame or outside:
                continue
            nxt = keys[i + 1] if i + 1 < len(keys) else (last_frame + 1, 0, xyxy, attrs)
            for f in range(frame + 1, nxt[0]):
                w = (f - frame) / (nxt[0] - frame)
                text += _cvat_box(f, 0, 0, [a + w * (b - a) for a, b in zip(xyxy, nxt[2])], attrs)
        text += "  </track>\n"
    path.write_text(text + "</annotations>\n")
    return path


@pytest.mark.parametrize("every_frame", [False, True], ids=["keyframes", "every_frame"])
def test_cvat_video_export_becomes_ava_layout(tmp_path, every_frame):
    from mvit_video.data.annotations import read_boxes
    from mvit_video.metrics.ava_frame_map import read_labelmap

    xml = write_cvat_xml(tmp_path / "annotations.xml", every_frame)
    res = run_script("cvat_to_ava.py", xml, "--out", tmp_path / "ava", "--split", "val")
    assert res.returncode == 0, res.stderr
    ann = tmp_path / "ava" / "annotations"
    assert (ann / "ava_val_v2.2.csv").read_text() == CVAT_EXPECTED
    assert read_labelmap(ann / "ava_action_list_v2.2_for_activitynet_2019.pbtxt") == {
        1: "stand",
        2: "walk",
        3: "sit",
        4: "talk",
        5: "run",
    }
    boxes = read_boxes(ann / "ava_val_v2.2.csv", is_groundtruth=True)  # the AVA dataset's reader takes it
    assert boxes[("street_scene", 902)][(0.3, 0.1, 0.4, 0.5)] == {2, 4}


def test_cvat_to_ava_takes_ids_from_a_label_map_and_names_bad_lines(tmp_path):
    xml = write_cvat_xml(tmp_path / "annotations.xml", every_frame=False)
    labelmap = tmp_path / "ava.pbtxt"
    labels = {"stand": 12, "walk": 14, "sit": 11, "talk": 79, "run": 10}
    labelmap.write_text("".join(f'label {{\n  name: "{n}"\n  label_id: {i}\n}}\n' for n, i in labels.items()))
    res = run_script("cvat_to_ava.py", xml, "--out", tmp_path / "ava", "--labelmap", labelmap, "--video-id", "v1")
    assert res.returncode == 0, res.stderr
    rows = (tmp_path / "ava" / "annotations" / "ava_train_v2.2.csv").read_text().splitlines()
    assert rows[0] == "v1,0900,0.100,0.100,0.200,0.500,12,0" and len(rows) == CVAT_EXPECTED.count("\n")

    lines = xml.read_text().splitlines()
    box_line = next(i for i, line in enumerate(lines) if '<track id="3"' in line) + 2  # the first talk converted
    labelmap.write_text(labelmap.read_text().replace('"talk"', '"chat"'))
    res = run_script("cvat_to_ava.py", xml, "--out", tmp_path / "ava", "--labelmap", labelmap)
    assert res.returncode == 2 and f"annotations.xml:{box_line}: action 'talk' is not in the label map" in res.stderr

    bad = tmp_path / "bad.xml"
    no_ytl = [re.sub(' ytl="[^"]*"', "", line) if i == box_line - 1 else line for i, line in enumerate(lines)]
    bad.write_text("\n".join(no_ytl))
    res = run_script("cvat_to_ava.py", bad, "--out", tmp_path / "ava")
    assert res.returncode == 2 and f"bad.xml:{box_line}: <box> has no 'ytl' attribute" in res.stderr, res.stderr
    bad.write_text("\n".join(lines[:box_line] + lines[box_line + 3 :]))  # a <box> opened, never closed
    res = run_script("cvat_to_ava.py", bad, "--out", tmp_path / "ava")
    assert res.returncode == 2 and "bad.xml:" in res.stderr and "not well-formed XML (mismatched tag)" in res.stderr
    images = CVAT_HEAD + '  <image id="0" name="f.jpg" width="640" height="480">\n  </image>\n</annotations>\n'
    bad.write_text(images)
    res = run_script("cvat_to_ava.py", bad, "--out", tmp_path / "ava")
    line = CVAT_HEAD.count("\n") + 1
    assert res.returncode == 2 and f"bad.xml:{line}: <image> elements: this is a 'CVAT for images' export" in res.stderr
