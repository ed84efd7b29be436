"""Data layer on real files: synthetic mp4s in the Kinetics CSV format."""

import logging
import shutil

import pytest
import torch

from mvit_video.data.annotations import DatasetFormatError, read_video_csv
from mvit_video.data.kinetics import KineticsDataModule
from mvit_video.data.synthetic import CLASSES

from .video_zoo import require_decoder


def _dm(root, **kw):
    args = dict(
        num_classes=4,
        num_frames=8,
        sampling_rate=2,
        crop_size=48,
        train_jitter_scales=(48, 60),
        random_resized_crop=False,
        flip=False,
        test_num_clips=2,
        test_num_crops=3,
        batch_size=4,
        num_workers=0,
    )
    args.update(kw)
    return KineticsDataModule(str(root), **args)


def test_synthetic_files_are_real_videos(tiny_kinetics):
    import av

    lines = (tiny_kinetics / "train.csv").read_text().splitlines()
    assert len(lines) == 16 and lines[0].split(" ")[1] == "0"
    with av.open(str(tiny_kinetics / lines[0].split(" ")[0])) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert sum(1 for _ in c.decode(video=0)) >= 8
    assert (tiny_kinetics / "classnames.txt").read_text().split() == list(CLASSES[:4])


def test_train_batch_shapes_dtypes_labels(tiny_kinetics):
    dm = _dm(tiny_kinetics)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["video"].shape == (4, 3, 8, 48, 48) and batch["video"].dtype == torch.float32
    assert batch["label"].min() >= 0 and batch["label"].max() < 4
    assert batch["unreadable"] == []  # no file failed
    assert -3 < batch["video"].mean() < 3  # normalised


def test_test_split_has_every_view(tiny_kinetics):
    dm = _dm(tiny_kinetics)
    dm.setup("test")
    ds = dm.datasets["test"]
    assert len(ds) == 8 * 2 * 3
    views = [ds[i] for i in range(6)]
    assert {v["video_index"] for v in views} == {0}
    assert not torch.equal(views[0]["video"], views[1]["video"])  # left vs centre crop
    assert not torch.equal(views[0]["video"], views[3]["video"])  # first vs last clip


def test_time_shuffle_keeps_frames_changes_order(tiny_kinetics):
    """time_shuffle_control: the test loaders are the test split, then the same with frames shuffled in time."""
    dm = _dm(tiny_kinetics, test_num_clips=1, test_num_crops=1, time_shuffle_control=True)
    dm.setup("test")
    loaders = dm.test_dataloader()
    assert len(loaders) == 2 and _dm(tiny_kinetics).splits("test") == ("test",)  # without the control: one
    plain = loaders[0].dataset[0]["video"]
    shuffled = loaders[1].dataset[0]["video"]
    assert not torch.equal(plain, shuffled)
    assert torch.allclose(plain.sum(1), shuffled.sum(1), atol=1e-3)  # same frames, other order


def test_corrupt_video_is_skipped_and_counted(tiny_kinetics, tmp_path, caplog):
    root = tmp_path / "ds"
    shutil.copytree(tiny_kinetics, root)
    first = (root / "train.csv").read_text().splitlines()[0].split(" ")[0]
    (root / first).write_bytes(b"this is not an mp4 file")
    dm = _dm(root)
    dm.setup("fit")
    with caplog.at_level(logging.WARNING):
        sample = dm.datasets["train"][0]
    assert len(sample["unreadable"]) == 1
    assert first.split("/")[-1] in caplog.text
    assert sample["video"].shape == (3, 8, 48, 48)


@pytest.mark.parametrize(
    ("content", "match"),
    [("a.mp4 0\nb.mp4 x\n", r"train\.csv:2: label 'x'"), ("a.mp4 7\n", r"train\.csv:1: label 7 is out of range \[0, 4\)")],
    # other separators: test_kinetics_files.py::test_csv_with_another_separator_names_file_line_and_format
)
def test_bad_csv_names_file_and_line(tmp_path, content, match):
    (tmp_path / "train.csv").write_text(content)
    with pytest.raises(DatasetFormatError, match=match):
        read_video_csv(tmp_path / "train.csv", num_classes=4)


def test_missing_csv_says_how_to_make_it(tmp_path):
    dm = _dm(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"(?s)train annotation file not found: .*prepare_kinetics\.py"):
        dm.check_files()


@pytest.mark.parametrize("clip_idx", [0, 1, 2])
def test_pyav_decoder_matches_pytorchvideo(tiny_kinetics, clip_idx):
    from mvit_video.data.decoding import decode_clip

    path = str(tiny_kinetics / (tiny_kinetics / "val.csv").read_text().split()[0])
    ours = decode_clip(path, 8, 0.5, clip_idx, 3, decoder="pyav")
    ref = decode_clip(path, 8, 0.5, clip_idx, 3, decoder="pytorchvideo")
    assert ours.shape == ref.shape and ours.dtype == torch.uint8
    assert torch.equal(ours, ref)


@pytest.mark.parametrize("clip_idx", [0, 1, 2])
def test_torchcodec_decodes_the_same_frames_as_pyav(tiny_kinetics, clip_idx):
    """Seeking by index (frame i at i / fps) selects the frames that PyAV's timestamp window selects."""
    from mvit_video.data.decoding import check_decoder, decode_clip

    require_decoder("torchcodec")  # skips, saying what to install, when torchcodec or FFmpeg's libraries are missing
    assert check_decoder("auto") == "torchcodec"  # the datamodule's default then
    for line in (tiny_kinetics / "val.csv").read_text().splitlines()[:4]:
        path = str(tiny_kinetics / line.split()[0])
        ours = decode_clip(path, 8, 0.5, clip_idx, 3, decoder="pyav")
        assert torch.equal(decode_clip(path, 8, 0.5, clip_idx, 3, decoder="torchcodec"), ours)


def test_decord_decodes_the_same_frames_or_refuses_clearly(tiny_kinetics):
    from mvit_video.data.decoding import DecordMisreadError, decode_clip

    require_decoder("decord")
    decoded = 0
    for line in (tiny_kinetics / "val.csv").read_text().splitlines():
        path = str(tiny_kinetics / line.split()[0])
        try:
            clip = decode_clip(path, 8, 0.5, 1, 3, decoder="decord")
        except DecordMisreadError as e:  # decord 0.6 misreads some frame sizes (4 channels): named, not silent
            assert "not RGB" in str(e) and path in str(e)
            continue
        assert torch.equal(clip, decode_clip(path, 8, 0.5, 1, 3, decoder="pyav"))
        decoded += 1
    assert decoded > 0


def test_select_frames_covers_the_window_uniformly():
    from mvit_video.data.decoding import select_frames

    every = [i / 10 for i in range(100)]  # 10 fps
    assert select_frames(every, 1.0, 1.0, 5) == [10, 12, 14, 16, 19]  # frames 10..19 show in [1.0, 2.0)
    assert select_frames(every, 9.5, 1.0, 3) == [95, 97, 99]  # clipped at the last frame
    assert select_frames([i / 30 for i in range(4)], 0.0, 2.0, 8) == [0, 0, 0, 1, 1, 2, 2, 3]  # short: repeats
    # Variable rate: 0.1 s apart, then 1/30 s apart from 1.0 s. [0, 1) holds frames 0..9, not 17 (1.0 s x 17 fps).
    vfr = [i / 10 for i in range(10)] + [1 + i / 30 for i in range(31)]
    assert select_frames(vfr, 0.0, 1.0, 4) == [0, 3, 6, 9]
    assert select_frames(vfr, 0.95, 0.04, 2) == [9, 9]  # no frame starts in the window: the one on screen


def test_unknown_decoder_is_rejected(tiny_kinetics):
    with pytest.raises(ValueError, match="decoder must be one of"):
        _dm(tiny_kinetics, decoder="ffmpeg-cli")


def test_annotation_readers_do_not_import_torch():
    """Command-line tools that only read or check annotation files start without torch."""
    import subprocess
    import sys

    code = "import sys, mvit_video.data.annotations; sys.exit('torch' in sys.modules or 'numpy' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
