"""Using a trained model: load with its preprocessing, predict on video files, export, and clear errors."""

import numpy as np
import pytest
import torch

import mvit_video
from mvit_video.data.annotations import DatasetFormatError
from mvit_video.data.synthetic import write_video
from mvit_video.inference import CheckpointMetadataError, VideoReadError
from mvit_video.train import run

from .helpers import run_script
from .test_train import _cfg


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_kinetics):
    tmp = tmp_path_factory.mktemp("ckpt")
    run(_cfg(tmp, tiny_kinetics, ["debug=tiny", "test=false"]))  # the tiny model, 8 frames; crop and views: BASE
    return tmp / "out" / "checkpoints" / "last.ckpt"


def test_load_gives_the_model_and_its_preprocessing(checkpoint):
    model = mvit_video.load(checkpoint)
    p = model.preprocessing
    assert (p.num_frames, p.crop_size, p.test_num_clips, p.test_num_crops) == (8, 48, 2, 1)
    assert p.class_names[:2] == ("moving_left", "moving_right") and not model.training
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    assert torch.equal(model.model.head.projection.weight, saved["net.head.projection.weight"])


@pytest.mark.parametrize("fps,size,seconds,audio", [(7, (50, 90), 0.6, False), (60, (120, 64), 2.0, True)])
def test_predict_on_any_readable_video(checkpoint, tmp_path, fps, size, seconds, audio):
    """Odd frame rates, portrait or landscape, shorter than a clip, with an audio track."""
    import av

    h, w = size
    frames = (np.random.default_rng(0).random((max(2, int(fps * seconds)), h, w, 3)) * 255).astype(np.uint8)
    path = tmp_path / "clip.mp4"
    write_video(path, frames, fps)
    if audio:  # remux with a sine audio stream
        with_audio = tmp_path / "clip_audio.mkv"
        with av.open(str(path)) as src, av.open(str(with_audio), "w") as dst:
            v_in = src.streams.video[0]
            v_out = dst.add_stream_from_template(v_in)
            a_out = dst.add_stream("aac", rate=16000)
            for packet in src.demux(v_in):
                if packet.dts is not None:
                    packet.stream = v_out
                    dst.mux(packet)
            t = np.arange(16000 * seconds) / 16000
            samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
            frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
            frame.sample_rate = 16000
            for packet in a_out.encode(frame):
                dst.mux(packet)
            for packet in a_out.encode():
                dst.mux(packet)
        path = with_audio
    top = mvit_video.load(checkpoint).predict(path, topk=3)
    assert len(top) == 3 and all(name in {"moving_left", "moving_right", "moving_up", "moving_down"} for name, _ in top)
    assert 0.99 <= sum(p for _, p in mvit_video.load(checkpoint).predict(path, topk=4)) <= 1.01


def test_predict_script_prints_names_and_probabilities(checkpoint, tiny_kinetics):
    video = tiny_kinetics / (tiny_kinetics / "test.csv").read_text().split()[0]
    out = run_script("predict.py", video, "--ckpt", checkpoint, "--topk", "2")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert "2 views" in lines[0] and len(lines) == 3 and lines[1].strip().endswith("%")


def test_predict_sees_the_frames_training_sees_on_a_rotated_phone_video(checkpoint, video_zoo, tmp_path):
    """A phone video (display rotation 90): ``predict``'s views are the datamodule's test views, frame for frame,
    whichever decoder reads it (they were PyAV's sideways frames while training's torchcodec saw them upright)."""
    import shutil

    from mvit_video.data.kinetics import KineticsDataModule

    model = mvit_video.load(checkpoint)
    p = model.preprocessing
    root = tmp_path / "phone"
    root.mkdir()
    shutil.copy(video_zoo["rotate90.mp4"], root / "rotate90.mp4")
    for split in ("train", "val", "test"):
        (root / f"{split}.csv").write_text("rotate90.mp4 0\n")
    dm = KineticsDataModule(
        str(root),
        num_classes=len(p.class_names),
        num_frames=p.num_frames,
        sampling_rate=p.sampling_rate,
        target_fps=p.target_fps,
        crop_size=p.crop_size,
        test_short_side=p.test_short_side,
        mean=p.mean,
        std=p.std,
        test_num_clips=p.test_num_clips,
        test_num_crops=p.test_num_crops,
        num_workers=0,
    )
    dm.setup("test")
    trained = torch.stack([dm.datasets["test"][i]["video"] for i in range(len(dm.datasets["test"]))])  # (V, C, T, H, W)
    views = model.views(root / "rotate90.mp4")
    assert views.shape == trained.shape and torch.equal(views, trained)
    for decoder in ("pyav", "pytorchvideo"):
        assert torch.equal(model.views(root / "rotate90.mp4", decoder=decoder), trained), decoder
    top = model.predict(root / "rotate90.mp4", topk=1)
    probs = model.model(trained).softmax(-1).mean(0)  # (K,) what the test split scores
    assert top[0][0] == p.class_names[int(probs.argmax())] and abs(top[0][1] - float(probs.max())) < 1e-5


def test_bad_inputs_give_clear_errors(checkpoint, tmp_path):
    model = mvit_video.load(checkpoint)
    junk = tmp_path / "not_a_video.mp4"
    junk.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(VideoReadError, match="cannot decode .*not_a_video.mp4"):
        model.predict(junk)
    with pytest.raises(VideoReadError, match="no such video file"):
        model.predict(tmp_path / "missing.mp4")
    bare = tmp_path / "bare.ckpt"
    torch.save({"state_dict": torch.load(checkpoint, weights_only=True)["state_dict"]}, bare)
    with pytest.raises(CheckpointMetadataError, match="no mvit_video metadata"):
        mvit_video.load(bare)
    names = tmp_path / "names.txt"
    names.write_text("a\nb\nc\n")
    with pytest.raises(DatasetFormatError, match="3 class names for num_classes=4"):
        mvit_video.load(checkpoint, class_names=names)
    out = run_script("predict.py", junk, "--ckpt", checkpoint)
    assert out.returncode == 2 and out.stderr.startswith("error: cannot decode") and "Traceback" not in out.stderr


def _tiny_models():
    from mvit_video.models import build_model
    from mvit_video.models.detector import build_ava_detector

    torch.manual_seed(0)
    classifier = build_model("mvitv2_tiny", num_classes=5, num_frames=4, input_size=32).eval()
    backbone = build_model("mvitv2_tiny", num_classes=0, num_frames=4, input_size=64, depths=(1, 2, 2))
    return {"classifier": classifier, "detector": build_ava_detector(backbone, num_classes=80).eval()}


@pytest.mark.parametrize("kind", ["classifier", "detector"])
def test_torch_export_gives_the_eager_outputs(kind, tmp_path):
    from mvit_video.export import example_inputs, export_program

    model = _tiny_models()[kind]
    inputs = example_inputs(model)
    program = export_program(model, inputs, tmp_path / "model.pt2")
    loaded = torch.export.load(str(tmp_path / "model.pt2"))
    with torch.no_grad():
        eager = model(*inputs)
        torch.testing.assert_close(program.module()(*inputs), eager, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(loaded.module()(*inputs), eager, rtol=1e-5, atol=1e-5)
        fresh = tuple(torch.randn_like(x) if x.ndim == 5 else x for x in inputs)  # new clip, same shapes
        torch.testing.assert_close(loaded.module()(*fresh), model(*fresh), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["classifier", "detector"])
def test_onnx_export_gives_the_eager_outputs(kind, tmp_path):
    from mvit_video.export import example_inputs, export_onnx, run_onnx

    model = _tiny_models()[kind]
    inputs = example_inputs(model)
    path = export_onnx(model, inputs, tmp_path / "model.onnx")
    with torch.no_grad():
        torch.testing.assert_close(run_onnx(path, inputs), model(*inputs), rtol=1e-4, atol=1e-4)


def test_scripts_share_one_set_of_argument_types():
    """predict.py and extract_features.py take windows, views and batch sizes through ``mvit_video.cli``: one rule,
    one message (two copies had drifted: ``+2`` or ``nan`` were read differently)."""
    import argparse

    from mvit_video.cli import positive_float, positive_int

    assert (positive_int("+2"), positive_int("7"), positive_float("0.5"), positive_float("3")) == (2, 7, 0.5, 3.0)
    for parse, bad in [(positive_int, ("0", "-1", "1.5", "x", "")), (positive_float, ("0", "-2", "nan", "inf", "x"))]:
        for text in bad:
            with pytest.raises(argparse.ArgumentTypeError, match=f"got {text!r}"):
                parse(text)
    for script in ("predict.py", "extract_features.py"):
        for option, value, rule in [("--window", "nan", "seconds > 0"), ("--batch-size", "+0", "an integer >= 1")]:
            out = run_script(script, "v.mp4", "--ckpt", "c.ckpt", "--out", "o", option, value)
            assert out.returncode == 2 and f"{option}: expected {rule}, got {value!r}" in out.stderr, (script, out.stderr)
