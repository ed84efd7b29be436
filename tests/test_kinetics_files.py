"""Kinetics-format files as users make them: class folders with spaces written by the ffmpeg CLI and prepared by our
script, CSVs in the wrong separator or encoding, a wrong class-name file, unreadable videos in every split."""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from mvit_video.data.annotations import DatasetFormatError, read_classnames, read_video_csv
from mvit_video.data.kinetics import KineticsDataModule

from .helpers import compose_cfg, run_script
from .video_zoo import H264, ffmpeg

CLASSES = ("air drumming", "café au lait", "playing ice hockey")  # sorted: the labels prepare_kinetics gives
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg CLI")


def _dm(root: Path, **kw) -> KineticsDataModule:
    args = dict(
        num_classes=3,
        num_frames=4,
        sampling_rate=2,
        crop_size=32,
        train_jitter_scales=(32, 40),
        random_resized_crop=False,
        flip=False,
        test_num_clips=1,
        test_num_crops=1,
        batch_size=3,
        num_workers=0,
        decoder="pyav",
    )
    args.update(kw)
    return KineticsDataModule(str(root), **args)


@pytest.fixture(scope="module")
def class_tree(tmp_path_factory) -> Path:
    """``VIDEO_DIR/{train,val}/<class name with spaces>/<file>.mp4``, every file written by the ffmpeg CLI (two
    sizes, copied into place: the tree, not the codec, is under test here)."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("needs the ffmpeg CLI")
    root = tmp_path_factory.mktemp("tree") / "video dir"
    sources = []
    for i, size in enumerate(("64x48", "48x64")):
        sources.append(root.parent / f"src{i}.mp4")
        ffmpeg("-f", "lavfi", "-i", f"testsrc=s={size}:r=15", "-t", "1", *H264, str(sources[-1]))  # the zoo's H.264
    for split, per_class in (("train", 2), ("val", 1)):
        for c, name in enumerate(CLASSES):
            for j in range(per_class):
                dst = root / split / name / (f"my clip {j}.mp4" if j == 0 else f"clip_{j}.mp4")
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(sources[(c + j) % 2], dst)
    return root


def _prepare(*args) -> subprocess.CompletedProcess:
    return run_script("prepare_kinetics.py", *args)


@needs_ffmpeg
@pytest.mark.parametrize("short_side", [None, 32])
def test_prepare_kinetics_class_names_with_spaces_round_trip(class_tree, tmp_path, short_side):
    """Every path, spaces and 'é' included, comes back from the CSVs with its class; a batch loads."""
    out = tmp_path / "data"
    extra = ["--short-side", short_side] if short_side else []
    done = _prepare(class_tree, "--out", out, *extra)
    assert done.returncode == 0, done.stderr
    assert read_classnames(out / "classnames.txt", 3) == list(CLASSES)
    dm = _dm(out)
    dm.check_files()
    for split, count in (("train", 6), ("val", 3), ("test", 3)):
        items = dm.read_items(split)
        assert len(items) == count
        for path, label in items:
            assert Path(path).is_file(), path
            assert CLASSES[label] in Path(path).parts, (path, label)  # the class folder is the label's
        assert {Path(p).name for p, _ in items} >= {"my clip 0.mp4"}
    if short_side:
        import av

        with av.open(dm.read_items("train")[0][0]) as c:
            ctx = c.streams.video[0].codec_context
            assert min(ctx.width, ctx.height) == short_side
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["video"].shape == (3, 3, 4, 32, 32) and batch["valid"].all() and batch["unreadable"] == []
    val = next(iter(dm.val_dataloader()))
    assert sorted(val["label"].tolist()) == [0, 1, 2] and val["valid"].all()


def test_prepare_kinetics_without_train_dir_says_what_it_expects(tmp_path):
    (tmp_path / "videos" / "air drumming").mkdir(parents=True)  # classes at the top, no train/ split folder
    done = _prepare(tmp_path / "videos", "--out", tmp_path / "data")
    assert done.returncode != 0
    assert "train not found" in done.stderr and "VIDEO_DIR/train/<class name>/<video files>" in done.stderr


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("air drumming/my clip.mp4 2", ("air drumming/my clip.mp4", 2)),  # two spaces in the path
        ("playing ice hockey/a.mp4 1", ("playing ice hockey/a.mp4", 1)),
        ("café au lait/b.mp4 0", ("café au lait/b.mp4", 0)),
        ("frames/abc 300 2", ("frames/abc", 2)),  # the 'path fn label' form
        ("a.mp4", ("a.mp4", 0)),
    ],
)
def test_csv_label_is_the_last_field(tmp_path, line, expected):
    (tmp_path / "train.csv").write_text(line + "\n", encoding="utf-8")
    path, label = read_video_csv(tmp_path / "train.csv", num_classes=3, prefix=tmp_path)[0]
    assert (path, label) == (str(tmp_path / expected[0]), expected[1])


def test_csv_path_ending_in_a_number_is_kept_when_that_file_exists(tmp_path):
    (tmp_path / "clip 12").write_bytes(b"")  # a file named 'clip 12': not 'path fn label'
    (tmp_path / "a.mp4 1 2").write_bytes(b"")  # a name that would otherwise be 'a.mp4' and two extra columns
    (tmp_path / "train.csv").write_text("clip 12 1\na.mp4 1 2 0\n")
    assert read_video_csv(tmp_path / "train.csv", 3, prefix=tmp_path) == [
        (str(tmp_path / "clip 12"), 1),
        (str(tmp_path / "a.mp4 1 2"), 0),
    ]
    (tmp_path / "train.csv").write_text("clip 12 1\nb.mp4 1 2 0\n")
    with pytest.raises(DatasetFormatError, match=r"train\.csv:2: 4 columns in 'b\.mp4 1 2 0'"):
        read_video_csv(tmp_path / "train.csv", 3, prefix=tmp_path)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("a.mp4 0\nb.mp4\t1\n", r"train\.csv:2: .*tab-separated.*expected UTF-8 text, one video per line: 'path label'"),
        ("a.mp4,1\n", r"train\.csv:1: .*comma-separated"),
        # the official Kinetics annotation file (YouTube ids), given where our CSV belongs
        ("label,youtube_id,time_start,time_end,split\nair drumming,-abc,1,11,train\n", r"train\.csv:1: .*comma-separated"),
        ("a.mp4 0\nair drumming,-abc,1,11 train\n", r"train\.csv:2: label 'train' is not an integer \(the line looks comma"),
    ],
)
def test_csv_with_another_separator_names_file_line_and_format(tmp_path, content, match):
    (tmp_path / "train.csv").write_text(content)
    with pytest.raises(DatasetFormatError, match=match):
        read_video_csv(tmp_path / "train.csv", num_classes=3)


def test_csv_utf8_bom_is_not_part_of_the_first_path(tmp_path):
    (tmp_path / "train.csv").write_bytes("\ufeffcafé/a.mp4 1\nb.mp4 2\n".encode())
    assert read_video_csv(tmp_path / "train.csv", 3) == [("café/a.mp4", 1), ("b.mp4", 2)]
    (tmp_path / "classnames.txt").write_bytes("\ufeffair drumming\nb\nc\n".encode())
    assert read_classnames(tmp_path / "classnames.txt", 3)[0] == "air drumming"


def test_csv_latin1_bytes_name_file_line_and_encoding(tmp_path):
    (tmp_path / "train.csv").write_bytes("a.mp4 0\ncafé/b.mp4 1\n".encode("latin-1"))
    with pytest.raises(DatasetFormatError, match=r"train\.csv:2: bytes .* are not UTF-8; expected a UTF-8 text file"):
        read_video_csv(tmp_path / "train.csv", 3)


def _write_split(root: Path, name: str, lines: list[str]) -> None:
    (root / name).write_text("".join(f"{line}\n" for line in lines))


@pytest.mark.parametrize(
    ("bad_file", "content", "match"),
    [
        ("classnames.txt", "a\nb\n", r"classnames\.txt: 2 class names for num_classes=3"),
        ("classnames.txt", "a\nb\nc\nd\n", r"classnames\.txt: 4 class names .*line 4 is 'd'"),
        ("classnames.txt", "a\n\nb\nc\n", r"classnames\.txt:2: empty line"),
        ("test.csv", "a.mp4 0\nb.mp4 1\nc.mp4 9\n", r"test\.csv:3: label 9 is out of range \[0, 3\)"),
        ("val.csv", "a.mp4 0\nb.mp4\t1\n", r"val\.csv:2: .*tab-separated"),
    ],
)
def test_check_files_validates_every_split_and_the_class_names(tmp_path, bad_file, content, match):
    """Found before the first step (train.py calls check_files before it builds the model), not after an epoch."""
    for split in ("train", "val", "test"):
        _write_split(tmp_path, f"{split}.csv", ["a.mp4 0", "b.mp4 1", "c.mp4 2"])
    _write_split(tmp_path, "classnames.txt", ["a", "b", "c"])
    _dm(tmp_path).check_files()  # all good
    (tmp_path / bad_file).write_text(content)
    with pytest.raises(DatasetFormatError, match=match):
        _dm(tmp_path).check_files()
    if bad_file == "test.csv":
        _dm(tmp_path).check_files(train=True, test=False)  # training only: the test split is not read


def test_wrong_class_names_stop_training_before_the_model_is_built(tmp_path, tiny_kinetics, monkeypatch):
    """Before, training ran a whole epoch and then crashed at the first checkpoint save."""
    import mvit_video.train as train_mod

    root = tmp_path / "ds"
    shutil.copytree(tiny_kinetics, root)
    (root / "classnames.txt").write_text("one\ntwo\nthree\n")  # 3 names, 4 classes
    built = []
    real = train_mod.instantiate
    monkeypatch.setattr(train_mod, "instantiate", lambda cfg, *a, **kw: built.append(cfg.get("_target_")) or real(cfg, *a, **kw))
    cfg = compose_cfg(
        ["debug=tiny", "data.num_classes=4", f"data.root={root}", "data.synthetic=null"], tmp_path / "out", tmp_path / "data"
    )
    with pytest.raises(DatasetFormatError, match=r"classnames\.txt: 3 class names for num_classes=4"):
        train_mod.run(cfg)
    assert built == [cfg.data._target_]  # the datamodule only: no model, no trainer


def test_unreadable_val_video_is_not_replaced(tiny_kinetics, tmp_path, caplog):
    root = tmp_path / "ds"
    shutil.copytree(tiny_kinetics, root)
    bad = root / (root / "val.csv").read_text().splitlines()[1].split(" ")[0]
    bad.write_bytes(b"not a video")
    dm = _dm(root, num_classes=4)
    dm.setup("validate")
    with caplog.at_level(logging.WARNING):
        sample = dm.datasets["val"][1]
    assert sample["video_index"] == 1 and not sample["valid"] and sample["unreadable"] == [str(bad)]
    assert sample["video"].shape == dm.datasets["val"][0]["video"].shape and not sample["video"].any()
    assert str(bad) in caplog.text


def test_unreadable_videos_are_counted_once_per_file_in_every_split(tmp_path, tiny_kinetics, caplog):
    """Half the training files, one val and one test file broken; two worker processes. The training count is
    of distinct files (not of attempts), the val/test metrics cover the 7 readable videos of 8 (a replacement
    video is not scored twice, a bad one does not vanish from the counts), and the bad files are named."""
    from mvit_video.train import run

    root = tmp_path / "ds"
    shutil.copytree(tiny_kinetics, root)
    train_files = [line.split(" ")[0] for line in (root / "train.csv").read_text().splitlines()]
    for rel in train_files[::2]:
        (root / rel).write_bytes(b"")
    bad_val = root / (root / "val.csv").read_text().splitlines()[3].split(" ")[0]
    bad_test = root / (root / "test.csv").read_text().splitlines()[5].split(" ")[0]
    bad_val.write_bytes(b"truncated")
    bad_test.write_bytes(b"truncated")
    cfg = compose_cfg(
        [
            "debug=tiny",
            "data.num_classes=4",
            f"data.root={root}",
            "data.synthetic=null",
            "data.num_workers=2",
            "data.num_frames=4",
            "trainer.limit_train_batches=1.0",
            "trainer.limit_val_batches=1.0",
            "trainer.limit_test_batches=1.0",
        ],
        tmp_path / "out",
        tmp_path / "data",
    )
    with caplog.at_level(logging.WARNING):
        metrics = run(cfg)
    assert metrics["train/skipped_videos"] == 8
    assert metrics["val/videos"] == 7 and metrics["val/unreadable_videos"] == 1
    assert metrics["test/videos"] == 7 and metrics["test/unreadable_videos"] == 1
    hits = metrics["test/top1"] * 7
    assert abs(hits - round(hits)) < 1e-5  # hits out of the 7 readable videos
    assert f"test: 1 unreadable video(s), not scored: {bad_test}" in caplog.text
    assert f"val: 1 unreadable video(s), not scored: {bad_val}" in caplog.text
    assert torch.isfinite(torch.tensor(metrics["val/loss"]))


def _timestamps(path: Path) -> list[float]:
    import av

    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        return [round(float(f.pts * stream.time_base), 3) for f in c.decode(stream)]


def test_prepare_kinetics_short_side_keeps_phone_rotation_and_timestamps(video_zoo, tmp_path):
    """--short-side re-encodes upright (the output has no rotation for a decoder to forget), keeps a variable
    frame rate's timestamps and a trimmed download's start time. Before: rotated files came out sideways and VFR
    files were skipped as unreadable (their timestamps collided in the encoder's 1/fps time base)."""
    import torch.nn.functional as F

    from .video_zoo import ffmpeg_frames

    tree = tmp_path / "videos" / "train" / "air drumming"
    tree.mkdir(parents=True)
    names = ("rotate90.mp4", "rotate270.mp4", "vfr.mp4", "start_offset.mp4")
    for name in names:
        shutil.copy(video_zoo[name], tree / name)
    done = _prepare(tmp_path / "videos", "--out", tmp_path / "data", "--short-side", 32)
    assert done.returncode == 0 and "train: 4 videos" in done.stdout, done.stdout + done.stderr
    out = tmp_path / "data" / "videos" / "train" / "air drumming"
    for name in ("vfr.mp4", "start_offset.mp4"):
        assert _timestamps(out / name) == _timestamps(video_zoo[name]), name
    for name in ("rotate90.mp4", "rotate270.mp4"):
        ours = ffmpeg_frames(out / name)[0].float()  # (C, H, W), as stored
        upright = ffmpeg_frames(video_zoo[name])[0].float()[None]  # the ffmpeg CLI applies the rotation
        assert ours.shape[1:] == (48, 32), name  # 96x64 landscape pixels shown as portrait
        ref = F.interpolate(upright, size=ours.shape[1:], mode="area")[0]
        assert (ours - ref).abs().mean() < 0.5 * (ours - ref.flip(1, 2)).abs().mean(), name  # not upside down
