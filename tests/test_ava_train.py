"""A short AVA detection run on synthetic AVA: trains, evaluates, writes official-format detections; the trained
detector then loads with its preprocessing and draws its detections on a video (scripts/ava_demo.py)."""

import json

import pytest
import torch

from mvit_video.inference import load_detector
from mvit_video.metrics.ava_frame_map import evaluate_files
from mvit_video.train import run

from .helpers import compose_cfg, run_script


def test_short_ava_training_run_then_demo(tmp_path):
    cfg = compose_cfg(
        [
            "experiment=ava_synthetic",
            "trainer.max_epochs=1",
            "+trainer.limit_train_batches=2",
            "data.num_workers=0",
            "data.synthetic.train_videos=2",
            "data.synthetic.val_videos=2",
            "data.synthetic.seconds=7",
            "data.synthetic.keyframes=[902,905]",
            "data.seconds=[902,905]",
            "data.crop_size=64",
            "data.jitter_scales=[64,72]",
            "callbacks.progress_bar=null",
        ],
        tmp_path / "out",
        tmp_path / "data",
    )
    metrics = run(cfg)
    assert 0.0 <= metrics["val/mAP"] <= 1.0
    ann = tmp_path / "data" / "synthetic_ava" / "annotations"
    det = tmp_path / "out" / "detections" / "detections_val.csv"
    first = det.read_text().splitlines()[0].split(",")
    assert len(first) == 8 and first[0].startswith("val") and len(first[1]) == 4
    res = evaluate_files(
        ann / "ava_action_list_v2.2_for_activitynet_2019.pbtxt",
        ann / "ava_val_v2.2.csv",
        det,
        ann / "ava_val_excluded_timestamps_v2.2.csv",
    )
    assert abs(res["mAP"] - metrics["val/mAP"]) < 1e-4  # the written CSV gives the logged number

    # The detector of that run, with its preprocessing, scores the same boxes the demo draws.
    ckpt = tmp_path / "out" / "checkpoints" / "last.ckpt"
    detector = load_detector(ckpt)
    assert detector.crop_size == 64 and set(detector.action_names) == {7, 10, 12, 14, 69}
    frames_dir = tmp_path / "data" / "synthetic_ava" / "frames" / "val000"
    out_video = tmp_path / "demo.mp4"
    res = run_script(
        "ava_demo.py", "--ckpt", ckpt, "--frames", frames_dir, "--boxes", ann / "ava_val_v2.2.csv", "--out", out_video
    )
    assert res.returncode == 0, res.stderr[-3000:]
    lines = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert [d["second"] for d in lines] == [902, 903, 904, 905]
    frames = sorted(frames_dir.iterdir())
    from mvit_video.data.decoding import read_frames

    video = read_frames(frames)
    first = lines[0]
    probs = detector.detect(video[detector.frame_indices(60, len(frames))], torch.tensor(first["boxes"]))
    expected = detector.top_actions(probs, 2)
    assert [[a for a, _ in acts] for acts in first["actions"]] == [[a for a, _ in acts] for acts in expected]
    import av

    with av.open(str(out_video)) as c:
        drawn = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(drawn) == len(frames)
    box = first["boxes"][0]
    h, w = drawn[60].shape[:2]
    edge = drawn[60][int(box[1] * h) : int(box[3] * h), int(box[0] * w)].astype(int)  # the box's left edge
    plain = video[60].permute(1, 2, 0).numpy()[int(box[1] * h) : int(box[3] * h), int(box[0] * w)].astype(int)
    assert abs(edge - plain).mean() > 20  # a box was drawn there


EDGE_TINY = [
    "experiment=ava_mvitv2_s",
    "debug=tiny",
    "data=ava_synthetic",
    "data.synthetic.actor_position=edge",
    "data.synthetic.width=160",
    "data.synthetic.height=90",
    "data.test_mode=full",
]


@pytest.mark.slow
def test_paper_experiment_runs_tiny_at_full_resolution_on_edge_actors(tmp_path):
    """`python train.py experiment=ava_mvitv2_s debug=tiny data=ava_synthetic data.synthetic.actor_position=edge
    data.synthetic.width=160 data.synthetic.height=90 data.test_mode=full`: the paper's recipe (SGD) on the tiny
    detector; validation runs on whole 113 x 64 frames (160 x 90 at short side 64), and every validation keyframe
    is in the detections file."""
    from hydra.utils import instantiate

    cfg = compose_cfg(EDGE_TINY, tmp_path / "out", tmp_path / "data")
    assert cfg.task.optimizer._target_ == "torch.optim.SGD" and cfg.model.backbone.name == "mvitv2_tiny"
    metrics = run(cfg)
    assert 0.0 <= metrics["val/mAP"] <= 1.0
    dm = instantiate(cfg.data)
    dm.setup("validate")
    batches = list(dm.val_dataloader())
    assert {tuple(b["video"].shape[-2:]) for b in batches} == {(64, 113)}
    written = {
        tuple(line.split(",")[:2]) for line in (tmp_path / "out" / "detections" / "detections_val.csv").read_text().split()
    }
    assert written == {(v, f"{s:04d}") for b in batches for v, s in zip(b["video_ids"], b["keys"][:, 1].tolist())}
