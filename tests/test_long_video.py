"""Long videos: per-window timelines (``predict.py --window``) and feature extraction (``extract_features.py``).

Videos come from the ffmpeg CLI (``testsrc2``), in FFV1 with RGB planes (lossless, every frame a key frame), so a
window cut out with ``ffmpeg -ss S -t W`` holds exactly the pixels of the long file and ``predict`` on it must give
the window's numbers bit for bit: the same frames, the same views, the same batch shape, the same kernels.
"""

import json
import os
import subprocess
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

import mvit_video
from mvit_video.inference import Preprocessing, VideoClassifier
from mvit_video.models import build_model
from mvit_video.tasks.classification import checkpoint_metadata
from mvit_video.timeline import WindowStream, frame_timeline, plan_windows, predict_timeline

from .helpers import run_script
from .video_zoo import has_ffmpeg

pytestmark = pytest.mark.skipif(not has_ffmpeg(), reason="the ffmpeg CLI writes the test videos (apt install ffmpeg)")

FPS = 10
# 8 frames x 2 at 10 fps: a clip spans 1.6 s, so a 2 s window holds two clips (at 0 and 0.4 s) and a 1 s one is
# shorter than a clip (both clips cover it whole). 2 clips x 3 crops: every view path of predict is exercised.
PRE = Preprocessing(
    num_frames=8,
    sampling_rate=2,
    crop_size=32,
    mean=(0.45, 0.45, 0.45),
    std=(0.225, 0.225, 0.225),
    class_names=("a", "b", "c", "d"),
    target_fps=FPS,
    test_num_clips=2,
    test_num_crops=3,
    test_short_side=32,
)


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def write_testsrc(path: Path, seconds: float, size: str = "48x32", fps: int = FPS, codec: tuple = ("ffv1", "gbrp")) -> Path:
    ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=s={size}:r={fps}", "-t", str(seconds), "-c:v", codec[0], "-pix_fmt", codec[1], str(path)
    )
    return path


def save_checkpoint(model: torch.nn.Module, p: Preprocessing, path: Path) -> Path:
    """A checkpoint as train.py writes it: the net's weights under ``net.`` and the ``mvit_video`` metadata."""
    meta = checkpoint_metadata(model, {**asdict(p), "class_names": list(p.class_names)})
    torch.save({"mvit_video": meta, "state_dict": {f"net.{k}": v for k, v in model.state_dict().items()}}, path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """An 8 s video, a random tiny model's checkpoint, and the classifier ``load`` gives."""
    tmp = tmp_path_factory.mktemp("long")
    torch.manual_seed(0)
    ckpt = save_checkpoint(build_model("mvitv2_tiny", num_classes=4), PRE, tmp / "tiny.ckpt")
    return {"video": write_testsrc(tmp / "src.mkv", 8), "ckpt": ckpt, "model": mvit_video.load(ckpt), "tmp": tmp}


@pytest.mark.parametrize("window,stride,start", [(2.0, 1.5, 3.0), (1.0, 2.5, 5.0)])
def test_a_window_equals_predict_on_the_span_cut_by_ffmpeg(files, window, stride, start):
    model, tmp = files["model"], files["tmp"]
    cut = tmp / f"cut_{window}_{start}.mkv"
    ffmpeg("-ss", str(start), "-t", str(window), "-i", str(files["video"]), "-c:v", "ffv1", "-pix_fmt", "gbrp", str(cut))
    tl = predict_timeline(model, files["video"], window, stride, batch_size=1)
    assert tl.starts == [k * stride for k in range(int((8 - window) / stride) + 1)]
    row = tl.starts.index(start)
    assert tl.ends[row] == start + window
    expected = dict(model.predict(cut, topk=4))  # softmax averaged over the 2 x 3 test views of the cut file
    assert {name: float(p) for name, p in zip(PRE.class_names, tl.probs[row])} == expected


def test_a_video_shorter_than_the_window_is_one_window_equal_to_predict(files):
    short = write_testsrc(files["tmp"] / "short.mkv", 1.2)
    tl = predict_timeline(files["model"], short, window=2.0, stride=1.0)
    assert tl.starts == [0.0] and tl.ends == [pytest.approx(1.2, abs=1e-9)]  # 12 frames of 0.1 s
    assert {name: float(p) for name, p in zip(PRE.class_names, tl.probs[0])} == dict(files["model"].predict(short, topk=4))


def test_multilabel_checkpoints_score_sigmoid_max_over_views(files):
    """A checkpoint whose metadata says ``multilabel`` (Charades) is scored as it was tested: the sigmoid of each view,
    the maximum over the views; predict, and the timeline's window over the whole video, both. (Checkpoints without
    the key stay softmax averaged over the views: the other tests here.)"""
    tmp = files["tmp"]
    meta = torch.load(files["ckpt"], map_location="cpu", weights_only=True)
    meta["mvit_video"]["multilabel"] = True
    torch.save(meta, tmp / "multilabel.ckpt")
    model = mvit_video.load(tmp / "multilabel.ckpt")
    short = write_testsrc(tmp / "short_ml.mkv", 1.2)
    seen: list[torch.Tensor] = []
    hook = model.model.register_forward_hook(lambda module, args, out: seen.append(out))  # predict's own logits
    top = dict(model.predict(short, topk=4, num_clips=2, num_crops=1))
    hook.remove()
    (logits,) = seen
    assert logits.shape == (2, 4)  # 2 clips, the centre crop
    by_hand = {name: float(p) for name, p in zip(PRE.class_names, logits.double().sigmoid().max(0).values)}
    assert top == pytest.approx(by_hand, rel=4 * torch.finfo(torch.float32).eps)  # fp32 sigmoid: a few roundings
    tl = predict_timeline(model, short, window=2.0, stride=1.0, num_clips=2, num_crops=1)
    assert {name: float(p) for name, p in zip(PRE.class_names, tl.probs[0])} == top  # the same views, the same numbers


def test_batches_of_windows_give_the_unbatched_numbers(files):
    """In fp64, so only summation order differs between batch shapes: each probability within 2^12 fp64 epsilons
    (a growth factor of 4096 for the few hundred sums on the way through 5 blocks, far above what they can reach)."""
    model = VideoClassifier(build_model("mvitv2_tiny", num_classes=4).double(), PRE)
    one = predict_timeline(model, files["video"], 2.0, 1.0, batch_size=1, num_clips=1, num_crops=1)
    three = predict_timeline(model, files["video"], 2.0, 1.0, batch_size=3, num_clips=1, num_crops=1)
    assert len(one.starts) == 7 and one.starts == three.starts
    np.testing.assert_allclose(three.probs, one.probs, rtol=0, atol=4096 * torch.finfo(torch.float64).eps)


def test_timeline_script_writes_csv_json_and_png(files, tmp_path):
    from PIL import Image

    out = run_script("predict.py", files["video"], "--ckpt", files["ckpt"], "--window", "2", "--stride", "1.5", "--topk", "2",
                     "--batch-size", "3", "--out", tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "5 windows of 2 s every 1.5 s, 2x3 views" in out.stdout
    stem = f"{files['video'].name}.timeline"
    rows = (tmp_path / f"{stem}.csv").read_text().splitlines()
    assert rows[0] == "start,end,class1,prob1,class2,prob2" and len(rows) == 6
    doc = json.loads((tmp_path / f"{stem}.json").read_text())
    assert [(w["start"], w["end"]) for w in doc["windows"]] == [(0.0, 2.0), (1.5, 3.5), (3.0, 5.0), (4.5, 6.5), (6.0, 8.0)]
    assert (doc["window"], doc["stride"], doc["views"]) == (2.0, 1.5, {"clips": 2, "crops": 3})
    for line, w in zip(rows[1:], doc["windows"]):
        start, end, c1, p1, c2, p2 = line.split(",")
        assert [c1, c2] == [t["class"] for t in w["top"]] and float(p1) >= float(p2) > 0
        assert abs(float(p1) - w["top"][0]["prob"]) <= 5e-7  # the CSV's 6 decimals
    tl = predict_timeline(files["model"], files["video"], 2.0, 1.5)
    assert [t["prob"] for t in doc["windows"][2]["top"]] == sorted(tl.probs[2].tolist(), reverse=True)[:2]
    with Image.open(tmp_path / f"{stem}.png") as img:
        assert img.size[0] > 500 and img.size[1] > 200
    bad = run_script("predict.py", files["video"], "--ckpt", files["ckpt"], "--stride", "1")
    assert bad.returncode == 2 and "--stride needs --window" in bad.stderr
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video")
    bad = run_script("predict.py", junk, "--ckpt", files["ckpt"], "--window", "2")
    assert bad.returncode == 2 and bad.stderr.startswith(f"error: cannot read {junk} as a video")


def test_frames_held_do_not_grow_with_the_video(tmp_path):
    """The streaming decoder of a 1 and a 10 minute video holds the same most frames at once: those of the windows
    in flight (a window of 2 s every 1 s: two windows of 2 clips x 8 frames, shared in part), not the file."""
    peaks = []
    for minutes in (1, 10):
        path = write_testsrc(tmp_path / f"{minutes}min.mp4", 60 * minutes, size="32x24", fps=5, codec=("libx264", "yuv420p"))
        tl = frame_timeline(str(path))
        assert len(tl.times) == 300 * minutes
        p = Preprocessing(**{**asdict(PRE), "target_fps": 5})  # a clip spans 3.2 s: longer than the window
        stream = WindowStream(path, plan_windows(tl.times, tl.duration, p, 2.0, 1.0, num_clips=2))
        count = sum(1 for _ in stream)
        assert count == 60 * minutes - 1
        peaks.append(stream.peak_frames)
    assert peaks[0] == peaks[1] <= 2 * 2 * 8


def test_feature_extraction_resumes_without_redoing_finished_files(files, tmp_path, monkeypatch):
    from mvit_video import timeline

    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a", "b", "c"):
        write_testsrc(videos / f"{name}.mkv", 4, size=f"{40 + 8 * ord(name) % 24}x32")
    args = ["--ckpt", files["ckpt"], "--window", "2", "--batch-size", "2"]
    ref = run_script("extract_features.py", videos, "--out", tmp_path / "ref", *args)
    assert ref.returncode == 0, ref.stderr
    (videos / "b_broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not a video")  # sorted between b and c

    calls: list[str] = []
    real = timeline.video_features

    def counted(model, path, *a, **kw):
        calls.append(Path(path).name)
        if interrupt and len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C while the second video is being read
        return real(model, path, *a, **kw)

    monkeypatch.setattr(timeline, "video_features", counted)
    out = tmp_path / "out"
    interrupt = True
    stopped = run_script("extract_features.py", videos, "--out", out, *args)
    assert stopped.returncode == 130 and "run the same command again to resume" in stopped.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "a.npy"]  # no temporary file left behind
    done_at = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}

    calls.clear()
    interrupt = False
    again = run_script("extract_features.py", videos, "--out", out, *args)
    assert again.returncode == 1 and "1 failed" in again.stdout
    assert calls == ["b.mkv", "b_broken.mp4", "c.mkv"]  # a is not redone
    assert {n: (out / n).stat().st_mtime_ns for n in done_at} == done_at
    assert (out / "failures.txt").read_text().startswith(f"{videos / 'b_broken.mp4'}\t")
    for name in ("a", "b", "c"):
        feats = np.load(out / f"{name}.npy")
        assert feats.dtype == np.float32 and feats.shape == (2, files["model"].model.num_features)
        assert np.array_equal(feats, np.load(tmp_path / "ref" / f"{name}.npy"))
        doc = json.loads((out / f"{name}.json").read_text())
        assert doc["windows"] == [{"start": 0.0, "end": 2.0}, {"start": 2.0, "end": 4.0}] and doc["fps"] == FPS
        assert doc["config"]["views"] == {"clips": 1, "crops": 1} and doc["config"]["preprocessing"]["num_frames"] == 8

    calls.clear()
    third = run_script("extract_features.py", videos / "a.mkv", videos / "c.mkv", "--out", out, *args)
    assert third.returncode == 0 and calls == [] and "0 done, 2 already done" in third.stdout
    assert not (out / "failures.txt").exists()

    ckpt_time = files["ckpt"].stat().st_mtime_ns
    os.utime(files["ckpt"], ns=(ckpt_time + 10**9, ckpt_time + 10**9))  # retrained in place (same path, same size)
    calls.clear()
    retrained = run_script("extract_features.py", videos / "a.mkv", "--out", out, *args)
    assert retrained.returncode == 0 and calls == ["a.mkv"] and "1 done, 0 already done" in retrained.stdout
    assert json.loads((out / "a.json").read_text())["config"]["checkpoint"]["mtime_ns"] == ckpt_time + 10**9


# ------------------------------------------------------------------ done when: change points of a 60 s video
MOTIONS = {"moving_left": (-1, 0), "moving_right": (1, 0), "moving_up": (0, -1)}  # (dx, dy) per step, image axes
MOTION_FPS, SIDE = 8, 32
SPEEDS = (1.0, 1.5)  # pixels per frame: at most 4.5 between sampled frames, under half the shortest wavelength


def plaid(rng: np.random.Generator, positions: list[np.ndarray]) -> np.ndarray:
    """``(N, SIDE, SIDE, 3)`` uint8 frames of a plaid (a vertical and a horizontal grating, random wavelengths,
    phases and colours) shifted to ``positions[i]`` (x, y pixels) at frame ``i``, with pixel noise. A single frame
    shows no direction; the gratings' phase advances between frames do."""
    lam, phase, colour = rng.uniform(10, 20, 2), rng.uniform(0, 2 * np.pi, 2), rng.uniform(0.3, 1.0, (2, 3))
    yy, xx = np.mgrid[:SIDE, :SIDE]  # (SIDE, SIDE)
    frames = []
    for x, y in positions:
        gx = np.cos(2 * np.pi * (xx - x) / lam[0] + phase[0])[..., None]  # (SIDE, SIDE, 1)
        gy = np.cos(2 * np.pi * (yy - y) / lam[1] + phase[1])[..., None]
        frames.append(128 + 60 * (gx * colour[0] + gy * colour[1]) + rng.normal(0, 6, (SIDE, SIDE, 3)))
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)


def path_of(directions: list[tuple[int, int]], speed: float, start: np.ndarray) -> list[np.ndarray]:
    """Positions of a pattern moving ``speed`` pixels per frame in ``directions[i]`` at frame ``i``."""
    positions = [start]
    for d in directions[:-1]:
        positions.append(positions[-1] + speed * np.array(d))
    return positions


def train_motion_model(p: Preprocessing, steps: int, seed: int = 0) -> torch.nn.Module:
    """The tiny MViT trained on clips of one motion each, sampled as a window of the model's span samples them."""
    from mvit_video.data.transforms import ClipTransform
    from mvit_video.timeline import clip_frames, model_span

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = build_model("mvitv2_tiny", num_classes=len(MOTIONS), drop_path_rate=0.0)
    tf = ClipTransform("test", p.crop_size, test_short_side=p.test_short_side, mean=p.mean, std=p.std)
    span_frames = round(model_span(p) * MOTION_FPS)
    idx = list(clip_frames([i / MOTION_FPS for i in range(span_frames)], 0.0, model_span(p), p.num_frames))
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1 - step / steps)  # linear decay: no late spikes
    net.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a loaded machine 2 OpenMP threads made each backward ~50x slower (measured)
    try:
        _train(net, opt, sched, rng, tf, idx, span_frames, steps)
    finally:
        torch.set_num_threads(threads)
    return net.eval()


def _train(net, opt, sched, rng, tf, idx: list[int], span_frames: int, steps: int) -> None:
    for _ in range(steps):
        labels = rng.integers(0, len(MOTIONS), 16)
        clips = []
        for y in labels:
            moves = [list(MOTIONS.values())[y]] * span_frames
            frames = plaid(rng, path_of(moves, rng.uniform(*SPEEDS), rng.uniform(0, 20, 2)))[idx]  # (T, H, W, 3)
            clips.append(tf(torch.from_numpy(frames).permute(0, 3, 1, 2)))  # (C, T, H, W)
        loss = torch.nn.functional.cross_entropy(net(torch.stack(clips)), torch.from_numpy(labels))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


@pytest.mark.slow
def test_timeline_change_points_of_a_left_right_up_video_lie_within_one_stride(tmp_path):
    """Done when (issue 18): 20 s left, 20 s right, 20 s up (H.264 by PyAV); a tiny MViT trained on 2 s clips of
    the three motions; ``predict.py --window 2 --stride 1``: the top class changes twice, within 1 s of 20 and 40 s."""
    from mvit_video.data.synthetic import write_video

    p = Preprocessing(**{**asdict(PRE), "class_names": tuple(MOTIONS), "target_fps": MOTION_FPS, "test_num_clips": 1,
                         "test_num_crops": 1})  # fmt: skip
    segments = [d for d in MOTIONS.values() for _ in range(20 * MOTION_FPS)]
    video = tmp_path / "left_right_up.mp4"
    rng = np.random.default_rng(123)
    write_video(
        video,
        plaid(rng, path_of(segments, sum(SPEEDS) / 2, np.zeros(2))),
        MOTION_FPS,
        ("libx264", {"crf": "12", "preset": "ultrafast"}),
    )
    ckpt = save_checkpoint(train_motion_model(p, steps=60), p, tmp_path / "motion.ckpt")
    out = run_script("predict.py", video, "--ckpt", ckpt, "--window", "2", "--stride", "1", "--out", tmp_path)
    assert out.returncode == 0, out.stderr
    doc = json.loads((tmp_path / "left_right_up.mp4.timeline.json").read_text())
    assert len(doc["windows"]) == 59
    changes = [(c["time"], c["from"], c["to"]) for c in doc["change_points"]]
    print(out.stdout)
    assert [(a, b) for _, a, b in changes] == [("moving_left", "moving_right"), ("moving_right", "moving_up")]
    assert abs(changes[0][0] - 20) <= 1.0 and abs(changes[1][0] - 40) <= 1.0
