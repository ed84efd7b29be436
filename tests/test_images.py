"""The image side (issue 15 §1): the ImageFolder datamodule (torchvision's layout, its errors, unreadable images, the
official image transforms), the synthetic image set, and a tiny image training through ``train.run``."""

from __future__ import annotations

import logging
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from mvit_video.data.images import ImageFolderDataModule, ImageTransform, load_image
from mvit_video.data.synthetic_images import CLASSES, ImageSpec, make_synthetic_images
from mvit_video.models import build_model
from mvit_video.models.convert import load_pretrained
from mvit_video.recipes import IMAGENET_MEAN, IMAGENET_STD
from mvit_video.train import run

from .helpers import assert_same_final_state, compose_cfg

# 4 classes: ImageNet's first two synsets, a name with spaces, one that sorts first (upper case)
NAMES = ["n01440764", "n01443537", "great white shark", "Zebra"]


def _write(path, size=(40, 30), colour=(200, 30, 60), mode="RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).convert(mode).save(path)


def _tree(root, names=NAMES, per_class=2):
    """``root/{train,val}/<name>/``: ``per_class`` JPEG/PNG images per class, one PNG in a sub-folder."""
    for split in ("train", "val"):
        for name in names:
            for i in range(per_class):
                _write(root / split / name / f"img{i}.{'jpg' if i % 2 == 0 else 'png'}", mode="RGB" if i else "L")
    _write(root / "train" / names[0] / "extra" / "deep.png")
    (root / "train" / names[0] / ".DS_Store").write_bytes(b"\0")  # hidden: skipped, as torchvision does
    return root


def _dm(root, num_classes: int = 4, **kw) -> ImageFolderDataModule:
    return ImageFolderDataModule(str(root), num_classes, crop_size=32, batch_size=2, num_workers=0, **kw)


def test_reads_torchvision_layout_with_synsets_and_spaces(tmp_path):
    dm = _dm(_tree(tmp_path))
    dm.check_files()
    assert list(dm.class_names.values()) == sorted(NAMES)  # torchvision's label order: sorted folder names
    ids = {name: i for i, name in dm.class_names.items()}
    train = dm.items("train")
    assert len(train) == 2 * len(NAMES) + 1  # the sub-folder image counts; the hidden file does not
    assert all(label == ids[os.path.relpath(path, tmp_path / "train").split(os.sep)[0]] for path, label in train)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    assert batch["video"].shape == (2, 3, 32, 32) and batch["valid"].all() and batch["view"].tolist() == [0, 0]


@pytest.mark.parametrize(
    "breakage, error, names",
    [
        (lambda r: _write(r / "train" / "loose.jpg"), ValueError, "train/loose.jpg"),
        (lambda r: (r / "train" / "Zebra" / "notes.txt").write_text("x"), ValueError, "Zebra/notes.txt"),
        (lambda r: _write(r / "val" / "okapi" / "a.png"), ValueError, "val/okapi"),
        (lambda r: (r / "train" / "empty class").mkdir(), ValueError, "train/empty class"),
        (lambda r: shutil.rmtree(r / "val"), FileNotFoundError, r"val folder not found: .*/val\n"),
    ],
    ids=["loose file", "not an image", "unknown val class", "empty class", "no val folder"],
)
def test_layout_errors_name_the_file(tmp_path, breakage, error, names):
    root = _tree(tmp_path)
    breakage(root)
    num_classes = len(NAMES) + (1 if "empty class" in names else 0)
    with pytest.raises(error, match=names):
        _dm(root, num_classes).check_files()


def test_class_count_mismatch_names_the_folder(tmp_path):
    with pytest.raises(ValueError, match=r"train: 4 class folders, but data.num_classes=5"):
        _dm(_tree(tmp_path), 5).check_files()


def test_unreadable_image_is_named_replaced_in_train_and_not_scored_in_val(tmp_path, caplog):
    root = _tree(tmp_path, per_class=1)
    bad = root / "train" / "Zebra" / "img0.jpg"
    bad.write_bytes(b"not a jpeg")
    (root / "val" / "Zebra" / "img0.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(RuntimeError, match="img0.jpg"):
        load_image(str(bad))
    dm = _dm(root)
    dm.check_files()  # the layout is right: decoding is checked when an image is read
    dm.setup("fit")
    train, val = dm.datasets["train"], dm.datasets["val"]
    index = [p for p, _ in train.items].index(str(bad))
    with caplog.at_level(logging.WARNING):
        sample = train[(index, 7)]
    assert sample["valid"] and sample["unreadable"] == [str(bad)] and sample["video"].shape == (3, 32, 32)
    assert str(bad) in caplog.text
    index = [p for p, _ in val.items].index(str(root / "val" / "Zebra" / "img0.jpg"))
    sample = val[index]
    assert not sample["valid"] and sample["video"].shape == (3, 32, 32) and not sample["video"].any()


def test_val_transform_resizes_by_the_crop_ratio_and_centre_crops():
    """Val: short side to int(crop / 0.875), then a centre crop (the official expression). A 64^2 image, white in its
    central 32^2: crop 28 resizes it to 32^2 (scale 1/2, the square to 16^2, edges on pixel boundaries, so by
    symmetry each edge pixel lands on the side of the threshold its centre is on) and keeps all 16^2 = 256 white
    pixels; resizing straight to 28 would keep 14^2, cropping without a resize 28^2."""
    tf = ImageTransform("val", crop_size=28)
    img = torch.zeros(1, 3, 64, 64, dtype=torch.uint8)
    img[..., 16:48, 16:48] = 255
    out = tf(img)  # (3, 28, 28)
    assert out.shape == (3, 28, 28) and torch.equal(out, tf(img))  # deterministic
    midpoint = (0.5 - IMAGENET_MEAN[0]) / IMAGENET_STD[0]
    assert int((out[0] > midpoint).sum()) == 256
    # A flat image is normalised exactly (weights sum to 1: no interpolation error); |x| < 3, so ~10 fp32 eps.
    out = tf(torch.full((1, 3, 48, 64), 128, dtype=torch.uint8))
    want = (128 / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(out, want[:, None, None].expand(3, 28, 28), atol=1e-6, rtol=0)


def test_train_transform_is_random_with_the_recipe_randaugment():
    img = torch.randint(0, 256, (1, 3, 48, 64), dtype=torch.uint8)
    tf = ImageTransform("train", 32, rand_augment="rand-m9-n6-mstd0.5-inc1", erase_prob=1.0)
    a, b = tf(img), tf(img)
    assert a.shape == b.shape == (3, 32, 32) and not torch.equal(a, b)
    assert ImageTransform("train", 32).rand_augment is None and tf.rand_augment.num_ops == 6


def test_synthetic_images_are_real_files_written_once(tmp_path):
    spec = ImageSpec(num_classes=3, train_per_class=3, val_per_class=1)
    root = make_synthetic_images(tmp_path / "s", spec)
    files = sorted((root / "train").rglob("img_*"))
    assert [p.parent.name for p in files[::3]] == list(CLASSES[:3]) and " " in CLASSES[0]
    formats = {(p.suffix, Image.open(p).format, Image.open(p).mode) for p in files}
    assert formats == {(".jpg", "JPEG", "RGB"), (".png", "PNG", "RGB"), (".png", "PNG", "L")}
    mtimes = [p.stat().st_mtime_ns for p in files]
    make_synthetic_images(root, spec)
    assert [p.stat().st_mtime_ns for p in files] == mtimes  # cached: not rewritten
    make_synthetic_images(root, ImageSpec(num_classes=2, train_per_class=1, val_per_class=1))
    assert sorted(p.parent.name for p in (root / "train").rglob("img_*")) == sorted(CLASSES[:2])  # no stale files
    pixels = np.asarray(Image.open(files[0]))
    assert pixels.std() > 10  # a shape on a textured background, not a blank


def test_image_experiment_trains_and_tests_tiny_on_cpu(tmp_path):
    """``python train.py experiment=in1k_mvitv2_t debug=tiny data=image_synthetic``: the tiny image model on
    (B, 3, 32, 32) batches, validation and a one-view test over the 4 validation images."""
    cfg = compose_cfg(["experiment=in1k_mvitv2_t", "debug=tiny", "data=image_synthetic"], tmp_path / "out", tmp_path / "data")
    assert cfg.data.num_frames == 1 and cfg.model.video is False
    metrics = run(cfg)
    assert metrics["test/videos"] == 4 and metrics["val/videos"] == 4 and metrics["test/unreadable_videos"] == 0
    assert np.isfinite(metrics["train/loss_epoch"])
    ckpt = torch.load(tmp_path / "out" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    meta = ckpt["mvit_video"]
    assert meta["preset"] == "mvitv2_tiny" and meta["model"]["video"] is False and meta["num_frames"] == 1
    assert meta["class_names"] == list(CLASSES[:4]) and meta["crop_size"] == 32
    # what the image side is for: the trained image checkpoint initialises a video model (center inflation)
    video = build_model("mvitv2_tiny", num_classes=4, input_size=32)
    load_pretrained(video, tmp_path / "out" / "checkpoints" / "last.ckpt", init_mode="center")
    kernel = ckpt["state_dict"]["net.patch_embed.proj.weight"]  # (32, 3, 1, 7, 7)
    inflated = video.patch_embed.proj.weight.detach()  # (32, 3, 3, 7, 7)
    assert torch.equal(inflated[:, :, 1:2], kernel) and not inflated[:, :, [0, 2]].any()
    assert torch.equal(video.head.projection.weight.detach(), ckpt["state_dict"]["net.head.projection.weight"])


@pytest.mark.parametrize("name, preset, drop_path", [("t", "mvitv2_t", 0.1), ("s", "mvitv2_s", 0.1), ("b", "mvitv2_b", 0.3)])
def test_image_experiments_compose(tmp_path, name, preset, drop_path):
    from hydra.utils import instantiate

    cfg = compose_cfg([f"experiment=in1k_mvitv2_{name}"], tmp_path / "out", tmp_path / "data")
    dm = instantiate(cfg.data)
    with torch.device("meta"):
        net = instantiate(cfg.model)
    assert isinstance(dm, ImageFolderDataModule) and dm.num_classes == net.num_classes == 1000
    assert net.preset == preset and not net.cfg.video and net.cfg.drop_path_rate == drop_path and net.cfg.head_dropout == 0
    assert net.cfg.input_size == dm.crop_size == 224


def test_more_than_one_frame_is_refused(tmp_path):
    """``data.num_frames`` is read by the model group; an image datamodule built with 8 (debug=tiny's video value,
    which debug/tiny_data/imagenet.yaml sets back to 1) would feed an image model sized for 8 frames."""
    with pytest.raises(ValueError, match="data.num_frames must be 1"):
        _dm(tmp_path, num_frames=8)


# Lossless files written by the ffmpeg CLI in the pixel formats cameras, scanners and editors write; each decodes to
# exactly the RGB that ffmpeg itself shows (16-bit: both keep the high byte, within one level of rounding).
FFMPEG_IMAGES = {
    "rgb.png": ("rgb24", 0),
    "rgba.png": ("rgba", 0),  # alpha dropped by both, not composited
    "grey.png": ("gray", 0),
    "grey_alpha.png": ("ya8", 0),
    "palette.png": ("pal8", 0),
    "deep.png": ("rgb48be", 1),
    "scan.bmp": ("bgr24", 0),
    "scan.tiff": ("rgb24", 0),
    # JPEG: luminance only (no chroma upsampling, where decoders legitimately differ). Each decoder's IDCT is within
    # IEEE 1180's peak error of 1 level of the exact one, so the two are within 2 of each other
    "grey.jpg": ("gray", 2),
}


@pytest.mark.parametrize("name", FFMPEG_IMAGES)
def test_reads_images_the_ffmpeg_cli_wrote_as_ffmpeg_shows_them(tmp_path, name):
    from .video_zoo import ffmpeg, ffmpeg_frames, has_ffmpeg

    if not has_ffmpeg():
        pytest.skip("the ffmpeg CLI is not installed (Debian: apt install ffmpeg)")
    pix_fmt, levels = FFMPEG_IMAGES[name]
    path = tmp_path / "train" / "a class" / name
    path.parent.mkdir(parents=True)
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=96x64", "-frames:v", "1", "-pix_fmt", pix_fmt, str(path))
    ours = load_image(str(path))  # (1, 3, H, W) uint8
    reference = ffmpeg_frames(path)  # (1, 3, H, W) uint8, ffmpeg's own decode
    assert ours.shape == reference.shape == (1, 3, 64, 96)
    assert (ours.int() - reference.int()).abs().max() <= levels
    assert ImageFolderDataModule(str(tmp_path), num_classes=1).items("train") == [(str(path), 0)]  # scanned as an image


def test_image_run_stopped_by_a_preemption_signal_resumes_exactly(tmp_path):
    """The image path keeps the stop-and-resume guarantee of the video one: SIGUSR2 mid-epoch checkpoints at the next
    batch end and exits; ``ckpt_path=last`` then ends where an uninterrupted run ends (weights, AdamW moments)."""
    base = ["experiment=in1k_mvitv2_t", "debug=tiny", "data=image_synthetic", "trainer.max_epochs=2"]
    base += ["data.batch_size=2", "trainer.limit_train_batches=3", "test=false", "data.num_workers=0"]  # 3 steps/epoch
    data = tmp_path / "data"
    run(compose_cfg(base, tmp_path / "plain", data))
    signal_cb = ["+callbacks.signal._target_=tests.helpers.SignalAtStep", "+callbacks.signal.step=1"]
    with pytest.raises(SystemExit) as stop:
        run(compose_cfg([*base, *signal_cb], tmp_path / "pre", data))
    assert stop.value.code == 128 + 12  # 128 + SIGUSR2
    saved = torch.load(tmp_path / "pre" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["global_step"] == 2 and saved["epoch"] == 0 and saved["ImageFolderDataModule"]["batches"] == 2
    run(compose_cfg([*base, "ckpt_path=last"], tmp_path / "pre", data))
    assert_same_final_state(tmp_path / "pre", tmp_path / "plain", steps=6)
