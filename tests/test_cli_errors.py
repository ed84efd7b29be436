"""Bad arguments and bad checkpoint files, as users meet them: one `error:` line naming the file, exit status 2, no
traceback, in the library (``load_file``) and in every script that reads a checkpoint."""

import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from mvit_video.data.synthetic import write_video
from mvit_video.models import build_model
from mvit_video.models.convert import CheckpointReadError, load_file

from .helpers import run_script

ROOT = Path(__file__).resolve().parents[1]


def _bad_checkpoints(tmp_path: Path) -> dict[str, Path]:
    """An empty, a truncated and three foreign files, each named as a checkpoint would be."""
    torch.save({"state_dict": {"net.w": torch.zeros(64, 64)}}, tmp_path / "good.ckpt")
    data = (tmp_path / "good.ckpt").read_bytes()
    files = {"empty": b"", "truncated": data[: len(data) // 2], "text": b"not a checkpoint\n", "pickle": pickle.dumps({"a": 1})}
    for name, content in files.items():
        (tmp_path / f"{name}.ckpt").write_bytes(content)
    with zipfile.ZipFile(tmp_path / "zip.ckpt", "w") as z:
        z.writestr("notes.txt", "a zip, but not torch's")
    return {name: tmp_path / f"{name}.ckpt" for name in [*files, "zip"]}


def _classifier_and_video(tmp_path: Path) -> tuple[Path, Path]:
    """A valid (untrained) classifier checkpoint with our metadata, and a short real video it can read."""
    model = build_model("mvitv2_tiny", num_classes=3, num_frames=4, input_size=32)
    meta = {
        "preset": "mvitv2_tiny",
        "model": model.cfg.to_dict(),
        "num_frames": 4,
        "sampling_rate": 2,
        "crop_size": 32,
        "mean": [0.45] * 3,
        "std": [0.225] * 3,
        "class_names": ["a", "b", "c"],
    }
    torch.save({"state_dict": {f"net.{k}": v for k, v in model.state_dict().items()}, "mvit_video": meta}, tmp_path / "c.ckpt")
    frames = (np.random.default_rng(0).random((12, 40, 40, 3)) * 255).astype(np.uint8)  # (T, H, W, C)
    write_video(tmp_path / "clip.mp4", frames, 15)
    return tmp_path / "c.ckpt", tmp_path / "clip.mp4"


def _run(*args):
    res = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True, check=False)
    return res.returncode, res.stdout, res.stderr


def _run_in_process(script: str, args):
    """The script's own code (argument parsing, error handling, exit status) without another interpreter start."""
    res = run_script(script, *args)
    return res.returncode, res.stdout, res.stderr


def _assert_one_error_line(code, err, *needles):
    assert code == 2, err
    assert "Traceback" not in err and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert str(needle) in err, err


@pytest.mark.parametrize("kind", ["empty", "truncated", "text", "pickle", "zip"])
def test_load_file_names_the_file_it_cannot_read(tmp_path, kind):
    path = _bad_checkpoints(tmp_path)[kind]
    with pytest.raises(CheckpointReadError) as info:
        load_file(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("kind", ["empty", "truncated", "text", "pickle", "zip"])
def test_predict_on_a_bad_checkpoint(tmp_path, kind):
    path = _bad_checkpoints(tmp_path)[kind]
    code, out, err = _run_in_process("predict.py", ["clip.mp4", "--ckpt", path])
    _assert_one_error_line(code, err, path)
    assert out == ""


@pytest.mark.parametrize(("flag", "value"), [("--topk", "0"), ("--clips", "-1"), ("--clips", "0"), ("--crops", "2")])
def test_predict_rejects_view_and_topk_counts_below_one(tmp_path, flag, value):
    ckpt, video = _classifier_and_video(tmp_path)
    code, out, err = _run_in_process("predict.py", [video, "--ckpt", ckpt, "--topk", "2"])
    assert code == 0 and "views of 4 frames" in out, err  # the checkpoint and the video are fine
    code, _, err = _run_in_process("predict.py", [video, "--ckpt", ckpt, flag, value])
    assert code == 2 and "Traceback" not in err and f"argument {flag}:" in err, err


def test_predict_as_users_run_it(tmp_path):
    """A real interpreter start: the exit status and stderr a shell sees."""
    bad = _bad_checkpoints(tmp_path)
    code, out, err = _run("scripts/predict.py", "clip.mp4", "--ckpt", bad["truncated"], "--topk", "3")
    _assert_one_error_line(code, err, bad["truncated"], "not a readable PyTorch checkpoint")
    assert out == ""


@pytest.mark.parametrize(
    ("script", "args", "kind", "message"),
    [
        ("export.py", ["--ckpt", "{ckpt}", "--out", "{tmp}/m.pt2"], "text", "PyTorch checkpoint"),
        ("ava_demo.py", ["--ckpt", "{ckpt}", "--frames", "{tmp}", "--boxes", "{tmp}/b.csv", "--out", "{tmp}/d.mp4"], "zip", ""),
        ("convert_checkpoint.py", ["{ckpt}", "--model", "mvitv2_tiny"], "pickle", "would run code"),
        ("convert_checkpoint.py", ["{ckpt}", "--model", "mvitv2_tiny"], "empty", "empty file"),
    ],
)
def test_every_checkpoint_script_names_a_bad_file(tmp_path, script, args, kind, message):
    ckpt = _bad_checkpoints(tmp_path)[kind]
    args = [a.format(ckpt=ckpt, tmp=tmp_path) for a in args]
    (tmp_path / "b.csv").write_text(f"{tmp_path.name},0902,0.1,0.1,0.5,0.9\n")  # a valid box file (read first) for --frames
    code, _, err = _run_in_process(script, args)
    _assert_one_error_line(code, err, ckpt, message)


def test_convert_checkpoint_names_a_file_without_weights(tmp_path):
    torch.save({"epoch": 3}, tmp_path / "no_weights.pth")  # readable, but nothing to convert
    args = [tmp_path / "no_weights.pth", "--model", "mvitv2_tiny"]
    code, _, err = _run_in_process("convert_checkpoint.py", args)
    _assert_one_error_line(code, err, tmp_path / "no_weights.pth", "no state dict of tensors")
