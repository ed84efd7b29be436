"""SSv2 on real files: synthetic VP9 webm videos, frame folders and the official JSON files."""

import json

import numpy as np
import pytest
import torch

from mvit_video.data.annotations import DatasetFormatError, template_to_label
from mvit_video.data.ssv2 import SSv2DataModule, segment_indices
from mvit_video.data.synthetic_ssv2 import FLIPPED, TEMPLATES, SyntheticSSv2Spec, make_synthetic_ssv2


@pytest.fixture(scope="module")
def tiny_ssv2(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "ssv2"
    return make_synthetic_ssv2(root, SyntheticSSv2Spec(train_per_class=2, val_per_class=1, min_side=64, max_side=80), workers=2)


def _dm(root, **kw):
    args = dict(
        num_classes=8,
        num_frames=6,
        crop_size=32,
        train_jitter_scales=(40, 48),
        batch_size=4,
        num_workers=0,
        mean=(0.45,) * 3,
        std=(0.225,) * 3,
    )
    args.update(kw)
    return SSv2DataModule(str(root), **args)


def test_files_are_in_the_official_format(tiny_ssv2):
    import av

    labels = json.loads((tiny_ssv2 / "something-something-v2-labels.json").read_text())
    assert labels["Moving something from left to right"] == "1" and len(labels) == 8
    train = json.loads((tiny_ssv2 / "something-something-v2-train.json").read_text())
    assert len(train) == 16 and {"id", "label", "template", "placeholders"} <= set(train[0])
    assert "[something]" in train[0]["template"]
    with av.open(str(tiny_ssv2 / "20bn-something-something-v2" / f"{train[0]['id']}.webm")) as c:
        assert c.streams.video[0].codec_context.name == "vp9"
        assert int(c.streams.video[0].average_rate) == 12
    header, first = (tiny_ssv2 / "frame_lists" / "train.csv").read_text().splitlines()[:2]
    assert header.split() == ["original_vido_id", "video_id", "frame_id", "path", "labels"]
    assert (tiny_ssv2 / "frames" / first.split()[3]).is_file()


def test_flip_changes_the_template_of_direction_dependent_labels():
    names = {template_to_label(t) for t in TEMPLATES}
    assert set(FLIPPED) <= names and all(FLIPPED[FLIPPED[k]] == k for k in FLIPPED)


def test_segment_sampling_follows_the_spec():
    # n=30 frames, 8 segments of (30-1)/8 = 3.625: bounds round(3.625 i) = 0 4 7 11 14 18 22 25 29
    assert segment_indices(30, 8, train=False) == [2, 5, 9, 12, 16, 20, 23, 27]
    bounds = [0, 4, 7, 11, 14, 18, 22, 25, 29]
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        idx = segment_indices(30, 8, train=True, rng=g)
        assert all(bounds[i] <= j <= bounds[i + 1] for i, j in enumerate(idx))
    assert segment_indices(5, 8, train=False) == sorted(segment_indices(5, 8, train=False))  # short videos repeat frames


@pytest.mark.parametrize("source", ["video", "frames"])
def test_batches_from_webm_and_from_frame_folders(tiny_ssv2, source):
    dm = _dm(tiny_ssv2, source=source)
    dm.check_files()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["video"].shape == (4, 3, 6, 32, 32) and batch["label"].max() < 8
    assert dm.class_names[1] == "Moving something from left to right"
    dm.setup("test")
    test = dm.datasets["test"]
    assert len(test) == 8 * 3  # validation videos x 3 crops, 1 clip
    views = [test[i]["video"] for i in range(3)]
    assert not torch.equal(views[0], views[2])  # left vs right crop


def test_webm_and_frames_give_the_same_clip(tiny_ssv2):
    """Both sources sample the same frames (test mode): the pictures agree up to the two codecs' losses."""
    clips = []
    for source in ("video", "frames"):
        dm = _dm(tiny_ssv2, source=source, test_num_crops=1)
        dm.setup("test")
        clips.append(dm.datasets["test"][0]["video"])
    assert clips[0].shape == clips[1].shape
    assert (clips[0] - clips[1]).abs().mean() < 0.25  # normalised units; a different frame would differ by ~1
    assert np.corrcoef(clips[0].flatten(), clips[1].flatten())[0, 1] > 0.9


def test_flip_is_refused_and_errors_name_the_file(tiny_ssv2, tmp_path):
    with pytest.raises(ValueError, match="allow_flip"):
        _dm(tiny_ssv2, flip=True)
    assert _dm(tiny_ssv2, flip=True, allow_flip=True).flip
    with pytest.raises(FileNotFoundError, match="something-something-v2-labels.json"):
        _dm(tmp_path).check_files()
    with pytest.raises(DatasetFormatError, match="8 labels for num_classes=174"):
        _dm(tiny_ssv2, num_classes=174).read_items("train")


def test_cache_is_keyed_by_the_renderer_version(tmp_path, monkeypatch):
    """A changed renderer (synthetic.RENDER_VERSION bumped) regenerates a cached SSv2 set; the same one reuses it.
    Before, the cache key was the SSv2 spec alone and stale videos were reused."""
    from mvit_video.data import synthetic

    spec = SyntheticSSv2Spec(train_per_class=1, val_per_class=1, min_side=32, max_side=40)
    root = make_synthetic_ssv2(tmp_path / "ssv2", spec, workers=1)
    video = root / "20bn-something-something-v2" / "100000.webm"
    video.unlink()
    make_synthetic_ssv2(root, spec, workers=1)
    assert not video.exists()  # same spec, same renderer: the cache is used
    monkeypatch.setattr(synthetic, "RENDER_VERSION", synthetic.RENDER_VERSION + 1)
    make_synthetic_ssv2(root, spec, workers=1)
    assert video.is_file()  # regenerated
    assert json.loads((root / "synthetic_ssv2.json").read_text())["render_version"] == synthetic.RENDER_VERSION
