"""Fine-tuning on a folder per class (issue 18 part 1): the folder layouts and their errors, the split written to disk
and refused when the folder changed, the freeze modes, class weights, ``init_from`` from every source we load, and
(slow) the synthetic motion-direction set trained in each mode beating chance while the time-shuffled control does not.

Layout tests use empty files named like videos: the layout is checked before anything is decoded."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import mvit_video.train as train_module
from mvit_video.data.folder import FolderDataModule, FolderLayoutError, stratified_split
from mvit_video.models import build_model
from mvit_video.models.convert import convert_state_dict
from mvit_video.models.inflate import inflate_image_state_dict
from mvit_video.tasks.classification import VideoClassificationModule, soft_target_cross_entropy
from mvit_video.tasks.optim import balanced_class_weights, freeze

from .helpers import compose_cfg

CLASSES = ["dög walking", "moving left ←", "zebra crossing"]  # spaces and non-ASCII; sorted = label order
TINY = ["experiment=finetune", "debug=tiny", "model.name=mvitv2_tiny"]


def touch_videos(root: Path, per_class: dict[str, list[str]]) -> Path:
    for name, files in per_class.items():
        for f in files:
            (root / name / f).parent.mkdir(parents=True, exist_ok=True)
            (root / name / f).write_bytes(b"")
    return root


def flat_folder(root: Path, n: int = 10) -> Path:
    exts = [".mp4", ".avi", ".mkv", ".webm", ".MOV"]
    return touch_videos(root, {c: [f"v{i}{exts[i % len(exts)]}" for i in range(n)] for c in CLASSES})


def datamodule(root: Path, **kw) -> FolderDataModule:
    dm = FolderDataModule(str(root), batch_size=2, num_workers=0, decoder="pyav", **kw)
    dm.check_files()
    return dm


# Layouts ---------------------------------------------------------------------------------------------------------


def test_flat_folder_gives_a_stratified_seeded_split_written_to_disk(tmp_path):
    root = flat_folder(tmp_path / "videos")
    (root / CLASSES[0] / "sub").mkdir()
    (root / CLASSES[0] / "sub" / "nested.mp4").write_bytes(b"")  # sub-folders of a class belong to it
    dm = datamodule(root, val_fraction=0.2, test_fraction=0.1)
    assert dm.num_classes == 3 and list(dm.class_names.values()) == sorted(CLASSES)
    counts = {s: [sum(lab == k for _, lab in dm.items(s)) for k in range(3)] for s in ("train", "val", "test")}
    assert counts == {"train": [8, 7, 7], "val": [2, 2, 2], "test": [1, 1, 1]}  # round(11*.2)=2, round(11*.1)=1
    paths = [p for s in ("train", "val", "test") for p, _ in dm.items(s)]
    assert len(paths) == len(set(paths)) == 31 and all(Path(p).is_file() for p in paths)
    assert any(p.endswith("sub/nested.mp4") for p, _ in dm.items("train") + dm.items("val") + dm.items("test"))
    saved = json.loads((root / "splits.json").read_text(encoding="utf-8"))
    assert saved["classes"] == sorted(CLASSES) and [tuple(r) for r in saved["val"]] == [
        (str(Path(p).relative_to(root)), lab) for p, lab in dm.items("val")
    ]
    assert dm.metadata()["train_class_counts"] == [8, 7, 7]
    other = stratified_split({c: sorted(f.name for f in (root / c).iterdir()) for c in CLASSES}, 1, 0.2, 0.1)
    assert other["val"] != saved["val"]  # the seed matters (and is recorded)


def test_the_split_is_reused_and_a_changed_folder_is_refused(tmp_path, caplog):
    root = flat_folder(tmp_path / "videos")
    first = datamodule(root).items("val")
    with caplog.at_level(logging.INFO, logger="mvit_video.data.folder"):
        assert datamodule(root).items("val") == first
    assert "reusing the split" in caplog.text
    (root / CLASSES[1] / "new clip.mp4").write_bytes(b"")
    (root / CLASSES[2] / "v3.webm").unlink()
    with pytest.raises(FolderLayoutError) as err:
        datamodule(root)
    msg = str(err.value)
    assert "splits.json" in msg and "added: moving left ←/new clip.mp4" in msg and "removed: zebra crossing/v3.webm" in msg
    with pytest.raises(FolderLayoutError, match="seed: 0 in the file, 5 now"):
        (root / CLASSES[2] / "v3.webm").write_bytes(b"")
        (root / CLASSES[1] / "new clip.mp4").unlink()
        datamodule(root, split_seed=5)
    alt = tmp_path / "elsewhere" / "split.json"
    alt.parent.mkdir()
    assert datamodule(root, split_seed=5, split_file=str(alt)).items("val") != first  # a new split, elsewhere


def test_split_folders_layout_and_test_defaulting_to_val(tmp_path):
    root = tmp_path / "videos"
    touch_videos(root / "train", {"a b": ["1.mp4", "2.mp4"], "é": ["3.mkv"]})
    touch_videos(root / "val", {"é": ["4.webm"]})
    dm = datamodule(root)
    assert dm.class_names == {0: "a b", 1: "é"} and not (root / "splits.json").exists()
    assert [(Path(p).relative_to(root).as_posix(), lab) for p, lab in dm.items("test")] == [("val/é/4.webm", 1)]
    (root / "val" / "é" / "4.webm").unlink()
    (root / "val" / "é").rmdir()
    (root / "val").rmdir()
    with pytest.raises(FolderLayoutError, match=r"train exists but .*val does not"):
        datamodule(root)
    touch_videos(root / "val", {"é": ["4.webm"]})
    touch_videos(root / "test", {"unknown": ["5.mp4"]})
    with pytest.raises(FolderLayoutError, match=r"test/unknown: class folder not among the 2 classes"):
        datamodule(root)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda r: (r / "a" / "notes.txt").write_text("x"), r"a/notes.txt: not a video file"),
        (lambda r: (r / "empty").mkdir(), r"empty: empty class folder"),
        (lambda r: (r / "loose.mp4").write_bytes(b""), r"loose.mp4: a file outside a class folder"),
    ],
)
def test_layout_errors_name_the_file(tmp_path, make, match):
    root = touch_videos(tmp_path / "v", {"a": ["1.mp4", "2.mp4", "3.mp4"], "b": ["1.mp4", "2.mp4", "3.mp4"]})
    make(root)
    with pytest.raises(FolderLayoutError, match=match):
        datamodule(root, val_fraction=0.3, test_fraction=0.0)


def test_too_few_videos_one_class_and_a_missing_root_are_errors(tmp_path):
    root = touch_videos(tmp_path / "v", {"a": ["1.mp4"], "b": ["1.mp4", "2.mp4", "3.mp4"]})
    with pytest.raises(FolderLayoutError, match="class 'a' has 1 video"):
        datamodule(root)
    with pytest.raises(FolderLayoutError, match="a classifier needs at least two"):
        datamodule(touch_videos(tmp_path / "one", {"a": ["1.mp4"]}))
    with pytest.raises(FileNotFoundError, match="no such folder"):
        datamodule(tmp_path / "missing")


def test_finetune_experiment_counts_the_classes(tmp_path):
    """``experiment=finetune data.root=DIR``: the model, the task and mixup get the number of class folders."""
    root = flat_folder(tmp_path / "videos")
    cfg = compose_cfg(["experiment=finetune", f"data.root={root}"], tmp_path / "o", tmp_path / "d")
    from hydra.utils import instantiate

    dm = instantiate(cfg.data)
    assert dm.num_classes == cfg.model.num_classes == cfg.task.num_classes == cfg.task.mixup.num_classes == 3
    assert (cfg.task.layer_decay, cfg.model.drop_path_rate, cfg.task.freeze) == (0.7, 0.2, "none")


# Freeze modes and class weights ----------------------------------------------------------------------------------


def _task(mode: str, **kw) -> VideoClassificationModule:
    net = build_model("mvitv2_tiny", num_classes=3, input_size=32, num_frames=4, drop_path_rate=0.5, head_dropout=0.5)
    return VideoClassificationModule(net, torch.optim.SGD, num_classes=3, label_smoothing=0.0, freeze=mode, **kw)


def test_linear_probe_trains_only_the_head_on_deterministic_features():
    task = _task("backbone").train()
    net = task.net
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trainable == {"head.projection.weight", "head.projection.bias"}
    assert not any(m.training for m in (net.patch_embed, net.norm, *net.blocks)) and net.head.training
    x = torch.randn(2, 3, 4, 32, 32)  # (B, C, T, H, W)
    feats = [net.forward_features(x)[0][:, 0] for _ in range(2)]  # (B, C) final-norm cls  # drop path 0.5 would make these differ
    torch.testing.assert_close(feats[0], feats[1], rtol=0, atol=0)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=1.0)
    F.cross_entropy(net(x), torch.tensor([0, 2])).backward()
    opt.step()
    changed = {k for k, v in net.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"head.projection.weight", "head.projection.bias"}


def test_partial_unfreezing_trains_the_last_blocks_norm_and_head():
    task = _task("last_2").train()
    net, depth = task.net, len(task.net.blocks)
    trainable = {
        n.split(".")[0] + (f".{n.split('.')[1]}" if n.startswith("blocks") else "")
        for n, p in net.named_parameters()
        if p.requires_grad
    }
    assert trainable == {f"blocks.{depth - 2}", f"blocks.{depth - 1}", "norm", "head"}
    assert [b.training for b in net.blocks] == [False] * (depth - 2) + [True, True]
    assert freeze(net, "none") == []
    with pytest.raises(ValueError, match=re.escape("expected none | backbone | last_N")):
        freeze(net, "last_99")


def test_balanced_class_weights_make_a_weighted_cross_entropy():
    w = balanced_class_weights([6, 2, 1])  # N / (K n_k) = 9 / (3 n_k)
    torch.testing.assert_close(w, torch.tensor([0.5, 1.5, 3.0]))
    logits, labels = torch.randn(5, 3, dtype=torch.float64), torch.tensor([0, 1, 2, 2, 0])
    got = soft_target_cross_entropy(logits, F.one_hot(labels, 3).double(), w.double())
    # the loss takes log_softmax in fp32 (logits.float()), the reference in fp64: a few fp32 ulps per term, the
    # weighted mean of terms of one sign keeps the relative error; bound 8 * eps32 (exp, sum, log, subtract, mean)
    want = F.cross_entropy(logits, labels, weight=w.double())
    torch.testing.assert_close(got, want, rtol=8 * torch.finfo(torch.float32).eps, atol=0)
    task = _task("none", class_weights="balanced", metadata={"train_class_counts": [6, 2, 1]})
    torch.testing.assert_close(task.class_weights, w)
    assert "class_weights" not in task.state_dict()  # checkpoints keep their keys
    with pytest.raises(ValueError, match="needs the training split.s class counts"):
        _task("none", class_weights="balanced")
    with pytest.raises(ValueError, match="no training videos"):
        balanced_class_weights([3, 0, 1])


# init_from: every source we load ---------------------------------------------------------------------------------


def _loaded_net(tmp_path: Path, monkeypatch, ckpt: Path, *overrides: str) -> torch.nn.Module:
    """``train.py experiment=finetune init_from=ckpt`` up to the first step (train=false test=false): the net the
    task was built around, right after ``init_from`` was loaded."""
    nets = []
    real = train_module.load_pretrained

    def spy(model, path, **kw):
        nets.append(real(model, path, **kw))
        return nets[-1]

    monkeypatch.setattr(train_module, "load_pretrained", spy)
    root = flat_folder(tmp_path / "videos", n=4)
    over = [*TINY, f"data.root={root}", f"init_from={ckpt}", "train=false", "test=false", *overrides]
    train_module.run(compose_cfg(over, tmp_path / "out", tmp_path / "data"))
    (net,) = nets
    return net


def _same(net: torch.nn.Module, expected: dict[str, torch.Tensor], skip: tuple[str, ...] = ()) -> None:
    got = net.state_dict()
    keys = [k for k in expected if not k.startswith(skip)]
    assert len(keys) > 30
    for k in keys:
        assert torch.equal(got[k], expected[k]), k


def _tiny_source(num_classes: int) -> torch.nn.Module:
    torch.manual_seed(7)
    return build_model("mvitv2_tiny", num_classes=num_classes, input_size=32, num_frames=8)


def test_init_from_our_checkpoint(tmp_path, monkeypatch):
    src = _tiny_source(3)
    torch.save({"state_dict": {f"net.{k}": v for k, v in src.state_dict().items()}, "mvit_video": {}}, tmp_path / "a.ckpt")
    _same(_loaded_net(tmp_path, monkeypatch, tmp_path / "a.ckpt"), src.state_dict())  # same classes: head kept


def test_init_from_a_slowfast_pyth_drops_a_head_of_another_size(tmp_path, monkeypatch):
    src = _tiny_source(7)
    torch.save({"model_state": {f"module.{k}": v for k, v in src.state_dict().items()}, "epoch": 1}, tmp_path / "k.pyth")
    net = _loaded_net(tmp_path, monkeypatch, tmp_path / "k.pyth")
    assert net.head.projection.out_features == 3
    _same(net, src.state_dict(), skip=("head.",))


def test_init_from_an_image_checkpoint_with_init_mode(tmp_path, monkeypatch):
    torch.manual_seed(3)
    image = build_model("mvitv2_tiny", video=False, num_frames=1, num_classes=10, input_size=32)
    torch.save(image.state_dict(), tmp_path / "image.pth")
    net = _loaded_net(tmp_path, monkeypatch, tmp_path / "image.pth", "init_mode=center")
    video = build_model("mvitv2_tiny", num_classes=3, input_size=32)
    expected, report = inflate_image_state_dict(image.state_dict(), video, "center")
    from_image = set(report.copied) | set(report.inflated) | set(report.resized)  # not left at (random) init
    _same(net, {k: v for k, v in expected.items() if k in from_image})


@pytest.mark.slow  # builds MViTv2-S twice and torchvision's mvit_v2_s: ~3 s
def test_init_from_torchvision_mvit_v2_s(tmp_path, monkeypatch):
    from torchvision.models.video import mvit_v2_s

    torch.manual_seed(0)
    tv = mvit_v2_s().state_dict()
    torch.save(tv, tmp_path / "tv.pth")
    net = _loaded_net(tmp_path, monkeypatch, tmp_path / "tv.pth", "model.name=mvitv2_s_16x4", "data.crop_size=224")
    ours = build_model("mvitv2_s_16x4", num_classes=3, num_frames=8)  # debug=tiny's 8 frames: rel_pos_t resized
    _same(net, convert_state_dict(tv, "torchvision", ours, strict_head=False), skip=("head.",))


# The done-when runs: a folder of direction-of-motion classes, trained in each mode ---------------------------------

# experiment=finetune made small for 2 CPU cores: the tiny model at 4x32² (4 frames 8 apart: 1.07 s of the 1.2-1.6 s
# videos), no flip (left/right are classes), no augmentation or mixup, the demo's lr; 2 test clips per video and the
# time-shuffled control (test_time_shuffled/*).
MOTION = [
    "experiment=finetune", "model.name=mvitv2_tiny", "trainer=cpu", "data.num_frames=4", "data.sampling_rate=8",
    "data.crop_size=32", "data.train_jitter_scales=[32,40]", "data.test_short_side=32", "data.flip=false",
    "data.random_resized_crop=false", "data.rand_augment=null", "data.erase_prob=0.0", "data.num_samples=1",
    "data.batch_size=8", "data.num_workers=2", "data.test_num_clips=2", "data.test_num_crops=1", "data.val_fraction=0.2",
    "data.test_fraction=0.2", "data.time_shuffle_control=true", "model.drop_path_rate=0.0", "model.head_dropout=0.0",
    "task.mixup=null", "task.optimizer.lr=5e-4", "task.scheduler.warmup_epochs=1", "task.scheduler.warmup_start_lr=1e-5",
    "task.scheduler.end_lr=1e-6", "trainer.check_val_every_n_epoch=2", "callbacks.progress_bar=null",
    "+data.synthetic.per_class=120", "+data.synthetic.min_seconds=1.2", "+data.synthetic.max_seconds=1.6",
    "+data.synthetic.min_side=40", "+data.synthetic.max_side=56",
]  # fmt: skip


def above_chance(top1: float, videos: int, classes: int, alpha: float = 0.01) -> bool:
    """Whether ``top1`` on ``videos`` test videos is more than chance would give with probability ``alpha``: the
    one-sided binomial test against p = 1/classes."""
    from math import comb

    k, p = round(top1 * videos), 1 / classes
    tail = sum(comb(videos, i) * p**i * (1 - p) ** (videos - i) for i in range(k, videos + 1))  # P(X >= k)
    return tail < alpha


@pytest.mark.slow
def test_direction_folder_trains_in_each_mode_and_the_time_shuffled_control_falls(tmp_path):
    """480 videos (288 train, 96 val, 96 test). Full fine-tuning and the last two blocks, each from random init, learn
    the four directions; the linear probe runs on the full run's backbone with a new head (``reset_head``: its trained
    head would make the probe trivial; a random backbone's features carry no direction, see the module's numbers).
    Shuffling the frames in time keeps every frame and loses the direction: the control falls towards chance."""
    data = [f"data.root={tmp_path / 'dirs'}"]
    runs = {
        "none": [*MOTION, *data, "trainer.max_epochs=8"],
        "last_2": [*MOTION, *data, "trainer.max_epochs=8", "task.freeze=last_2"],
    }
    results = {mode: train_module.run(compose_cfg(over, tmp_path / mode, tmp_path / "data")) for mode, over in runs.items()}
    probe = [*MOTION, *data, "trainer.max_epochs=3", "task.freeze=backbone", "task.reset_head=true"]
    probe.append(f"init_from={tmp_path / 'none' / 'checkpoints' / 'last.ckpt'}")
    results["backbone"] = train_module.run(compose_cfg(probe, tmp_path / "backbone", tmp_path / "data"))
    for mode, m in results.items():
        assert m["test/videos"] == 96, mode
        assert above_chance(m["test/top1"], 96, 4), (mode, m["test/top1"])
        assert m["test_time_shuffled/top1"] < (m["test/top1"] + 0.25) / 2, (mode, m)  # nearer chance than trained
