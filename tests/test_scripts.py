"""Command-line scripts on real files, called in-process through their ``main(argv)`` (``helpers.run_script``)."""

import pytest
import torch
from torchvision.models.video import mvit_v2_s

from mvit_video.data.annotations import read_video_csv

from .helpers import run_script


def test_prepare_kinetics_from_class_folders(tiny_kinetics, tmp_path):
    # The synthetic set is laid out as videos/<split>/<class>/<file>.mp4: exactly a folder-per-class tree.
    out = run_script("prepare_kinetics.py", tiny_kinetics / "videos", "--out", tmp_path / "k", "--short-side", "64")
    assert out.returncode == 0, out.stderr
    names = (tmp_path / "k" / "classnames.txt").read_text().split()
    assert names == sorted(names) and len(names) == 4
    items = read_video_csv(tmp_path / "k" / "train.csv", num_classes=4)
    assert len(items) == 16
    import av

    with av.open(items[0][0]) as c:
        assert min(c.streams.video[0].codec_context.width, c.streams.video[0].codec_context.height) == 64


def test_convert_checkpoint_reports_and_writes(tmp_path):
    torch.manual_seed(0)
    src = tmp_path / "tv.pth"
    torch.save(mvit_v2_s().state_dict(), src)
    out = run_script("convert_checkpoint.py", src, "--model", "mvitv2_s_16x4", "--out", tmp_path / "s.pt")
    assert out.returncode == 0, out.stderr
    assert "source: torchvision" in out.stdout and "all keys and shapes match" in out.stdout
    bad = run_script("convert_checkpoint.py", src, "--model", "mvitv2_b_32x3")
    assert bad.returncode == 1 and "missing keys" in bad.stderr


@pytest.mark.e2e  # every benchmark step on the tiny preset (inductor compiles it per block), 2 memory processes: ~2.5 min
def test_benchmark_smoke_run_writes_its_table(tmp_path):
    """The benchmark on the tiny preset: it runs end to end and writes the markdown table (numbers not judged)."""
    out = tmp_path / "bench.md"
    res = run_script("benchmark.py", "--tiny", "--repeats", "1", "--out", out, "--data-dir", tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    text = out.read_text()
    assert "| peak memory of a training step" in text and "pytorchvideo Kinetics" in text and "AVA frame-mAP" in text
