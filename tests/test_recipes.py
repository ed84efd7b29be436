"""The paper's MViTv2-L recipes (arXiv 2112.01526v2 §B.4, Tables 10-13; ``mvit_video.recipes``): their learning
rates follow the paper's per-clip rates, K600/K700 keep K400's values, the values the paper leaves open follow the
one stated rule, stage 1 trains a tiny version from an image checkpoint, and ``model_report.py --experiments`` puts
GFLOPs x views beside the paper's."""

from __future__ import annotations

import logging

import pytest
import torch
from omegaconf import OmegaConf

import mvit_video.train as train_module
from mvit_video import recipes
from mvit_video.recipes import OFFICIAL, UNSOURCED, PaperViews
from mvit_video.train import register_resolvers

from .helpers import compose_cfg, run_script

STAGE1, STAGE2 = "k400_mvitv2_l_in21k_stage1", "k400_mvitv2_l_in21k_stage2"
L_EXPERIMENTS = (STAGE1, STAGE2, "k600_mvitv2_l", "k700_mvitv2_l")
GPUS_PER_NODE = 8  # the configs' NUM_GPUS: a node's batch is 8 x data.batch_size videos


def _clips_per_node(values: dict) -> int:
    return GPUS_PER_NODE * values["data.batch_size"] * values["data.num_samples"]


@pytest.mark.parametrize(("name", "paper_lr", "paper_batch"), [(STAGE1, 1.6e-4, 512), (STAGE2, 1.6e-5, 128)])
def test_l_learning_rates_are_the_papers_per_clip_rates(name: str, paper_lr: float, paper_batch: int) -> None:
    """§B.4: 1.6e-4 per 512 clips (16x4 from IN-21K), 1.6e-5 per 128 clips (40x3). Our lr is per node, so it is the
    paper's rate times the clips one node sees with the recipe's own batch and repeated augmentation."""
    values = OFFICIAL[name].values
    want = paper_lr * _clips_per_node(values) / paper_batch
    assert values["task.optimizer.lr"] == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize(
    ("name", "own"),
    [
        ("k600_mvitv2_l", {"data.crop_size", "data.train_jitter_scales", "data.test_num_clips"}),
        ("k700_mvitv2_l", {"data.test_num_clips"}),
    ],
)
def test_k600_and_k700_l_have_the_k400_values(name: str, own: set[str]) -> None:
    """§B.4: "For Kinetics-600 and Kinetics-700, all hyper-parameters are identical to K400"; only the class count
    and what their tables print (input size, views) differ from K400-L's stage 2."""
    k400, other = OFFICIAL[STAGE2].values, OFFICIAL[name].values
    assert other.keys() == k400.keys()
    differ = {key for key in k400 if other[key] != k400[key]}
    assert differ == own | {"data.num_classes"}


def test_unsourced_values_keep_the_k400_proportions() -> None:
    """The one rule for what the paper leaves open (recipes.py): warm-up 30 of 200 epochs, warm-up start and cosine
    end at 1/100 of the learning rate, as the K400 configs have them. Composed, so the YAML is what is checked."""
    register_resolvers()
    k400 = recipes.K400
    for name in L_EXPERIMENTS:
        unsourced = {key for key, value in OFFICIAL[name].values.items() if value == UNSOURCED}
        assert set(recipes.L_SCHEDULE_UNSOURCED) <= unsourced, name
        cfg = compose_cfg([f"experiment={name}"], ".", ".")
        lr, epochs = cfg.task.optimizer.lr, cfg.trainer.max_epochs
        sched = cfg.task.scheduler
        assert sched.warmup_epochs == pytest.approx(epochs * k400["task.scheduler.warmup_epochs"] / k400["trainer.max_epochs"])
        for key in ("warmup_start_lr", "end_lr"):
            ratio = k400[f"task.scheduler.{key}"] / k400["task.optimizer.lr"]
            assert sched[key] == pytest.approx(lr * ratio, rel=1e-12), (name, key)


def test_recipe_diff_requires_a_declared_choice_for_an_unsourced_value() -> None:
    """Without its recipe_deviations, stage 1 has one error per value with no source (and the init_from one)."""
    import runpy
    from pathlib import Path

    from .helpers import CONF_DIR

    check = runpy.run_path(str(Path(CONF_DIR).parent / "scripts" / "recipe_diff.py"))["check"]
    assert check(STAGE1) == []
    errors = check(STAGE1, ["~recipe_deviations"])
    unsourced = sorted(k for k, v in OFFICIAL[STAGE1].values.items() if v == UNSOURCED)
    assert sorted(e.split(": ")[1].split(" = ")[0] for e in errors if "has no source" in e) == unsourced
    assert len(errors) == len(unsourced) + 1 and any(e.startswith(f"{STAGE1}: init_from") for e in errors)


def _image_checkpoint(path) -> torch.nn.Module:
    """A tiny image model with a class token (the IN-21K files' kind), saved as a checkpoint file at ``path``."""
    from mvit_video.models.registry import build_model

    image = build_model("mvitv2_tiny", video=False, num_frames=1, num_classes=10, cls_token=True)
    torch.save({"state_dict": image.state_dict()}, path)
    return image


def _stage1_tiny(tmp_path, data_root, *extra: str):
    """``python train.py experiment=k400_mvitv2_l_in21k_stage1 debug=tiny init_from=IMAGE ...``'s config."""
    overrides = [f"experiment={STAGE1}", "debug=tiny", f"data.root={data_root}", "data.num_classes=4", *extra]
    cfg = compose_cfg([*overrides, f"init_from={tmp_path / 'image.pth'}"], tmp_path / "out", tmp_path / "data")
    assert cfg.model.name == "mvitv2_tiny" and cfg.init_mode == "center"  # the mode is the experiment's (§4.3)
    return cfg


def _assert_inflated(loaded: dict[str, torch.Tensor], image: torch.nn.Module, cfg) -> None:
    """What was loaded is exactly the ``center`` inflation of the image state dict, but for what stays at init."""
    from mvit_video.models.inflate import inflate_image_state_dict

    expected, report = inflate_image_state_dict(image.state_dict(), train_module.instantiate(cfg.model), "center")
    assert report.inflated and report.zeroed  # 2-D kernels and temporal tables did go through the inflation
    for key in expected.keys() - set(report.left_at_init):  # the classifier (10 -> 4 classes) stays at init
        assert torch.equal(loaded[key], expected[key]), key


def test_stage1_initialises_from_an_image_checkpoint(tmp_path, caplog) -> None:
    """The experiment's init path, as ``train.run`` calls it (``tests/test_inflate.py`` checks that it does): the
    tiny image model is inflated into the tiny video model with the experiment's ``init_mode=center``."""
    image = _image_checkpoint(tmp_path / "image.pth")
    cfg = _stage1_tiny(tmp_path, tmp_path / "unused")
    net = train_module.instantiate(cfg.model)
    with caplog.at_level(logging.INFO, logger="mvit_video.models.convert"):
        train_module.load_pretrained(net, cfg.init_from, strict_head=False, init_mode=cfg.init_mode)
    assert "inflate (center)" in caplog.text
    _assert_inflated(net.state_dict(), image, cfg)


def test_stage1_model_has_the_layout_of_the_in21k_image_l(tmp_path) -> None:
    """Stage 1's model (not the tiny one) takes ``MViTv2_L_in21k.pyth``, whose layout is ``mvitv2_l_cls`` (class
    token, widening inside attention: timm's ``mvitv2_large_cls``, spec §8.1): everything but its 19168-class head
    is copied or inflated. Shapes only (meta tensors)."""
    from mvit_video.models.inflate import inflate_image_state_dict
    from mvit_video.models.registry import build_model

    register_resolvers()
    cfg = compose_cfg([f"experiment={STAGE1}"], tmp_path, tmp_path)
    with torch.device("meta"):
        video, image = train_module.instantiate(cfg.model), build_model("mvitv2_l_cls")
    _, report = inflate_image_state_dict(image.state_dict(), video, "center")
    assert sorted(report.left_at_init) == ["head.projection.bias", "head.projection.weight"]


@pytest.mark.slow
def test_stage1_trains_a_tiny_version_from_an_image_checkpoint(tmp_path, tiny_kinetics, monkeypatch) -> None:
    """``python train.py experiment=k400_mvitv2_l_in21k_stage1 debug=tiny init_from=IMAGE`` trains and validates
    (~10-15 s on 2 cores: the L recipe's 2 clips per video and activation checkpointing), initialised as above."""
    image = _image_checkpoint(tmp_path / "image.pth")
    loaded = {}

    def spy(model, path, **kwargs):  # the real loader; keeps what it loaded, before training changes it
        out = real(model, path, **kwargs)
        loaded.update({k: v.detach().clone() for k, v in model.state_dict().items()})
        return out

    real = train_module.load_pretrained
    monkeypatch.setattr(train_module, "load_pretrained", spy)
    cfg = _stage1_tiny(tmp_path, tiny_kinetics, "test=false")
    metrics = train_module.run(cfg)
    _assert_inflated(loaded, image, cfg)
    assert 0.0 <= metrics["val/top1"] <= 1.0 and (tmp_path / "out" / "checkpoints" / "last.ckpt").is_file()


def test_model_report_puts_experiments_beside_the_paper() -> None:
    out = run_script("model_report.py", "--experiments", "k400_mvitv2_s", "demo")
    assert out.returncode == 0, out.stdout + out.stderr
    row = next(line for line in out.stdout.splitlines() if line.startswith("k400_mvitv2_s "))
    assert "1x5" in row and row.endswith("ok (Table 10)")  # K400-S: 64 GFLOPs x 1 crop x 5 clips
    assert next(line for line in out.stdout.splitlines() if line.startswith("demo ")).endswith("no paper row")


def test_model_report_fails_on_other_views_or_unexplained_gflops(monkeypatch) -> None:
    """A row whose views differ fails even with a note; GFLOPs off by more than 1% fail unless the row says why."""
    monkeypatch.setitem(recipes.PAPER_VIEWS, "demo", PaperViews(1000, 3, 3, "T", "why"))
    monkeypatch.setitem(recipes.PAPER_VIEWS, "ssv2_synthetic", PaperViews(1000, 3, 1, "U"))
    out = run_script("model_report.py", "--experiments", "demo", "ssv2_synthetic")
    assert out.returncode == 1 and "GFLOPs differ (T): why" in out.stdout and "DIFFERS (U: GFLOPs)" in out.stdout
    monkeypatch.setitem(recipes.PAPER_VIEWS, "demo", PaperViews(1000, 1, 3, "V", "why"))
    out = run_script("model_report.py", "--experiments", "demo")
    assert out.returncode == 1 and "DIFFERS (V: views)" in out.stdout


@pytest.mark.slow
def test_model_report_every_experiment_matches_the_paper() -> None:
    """Every experiment's GFLOPs x views (MViTv2-L 40x3 at 352^2 on K600: 3790 x 3 x 4, ...), ~40 s on 2 cores."""
    out = run_script("model_report.py", "--experiments")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "k600_mvitv2_l " in out.stdout and "DIFFERS" not in out.stdout


def test_l_experiments_keep_views_in_the_config(tmp_path) -> None:
    """The views the paper tests with live in the experiments (not only in recipes.PAPER_VIEWS)."""
    register_resolvers()
    for name in L_EXPERIMENTS[1:]:
        cfg = compose_cfg([f"experiment={name}"], tmp_path, tmp_path)
        paper = recipes.PAPER_VIEWS[name]
        assert (cfg.data.test_num_crops, cfg.data.test_num_clips) == (paper.crops, paper.clips), name
        assert OmegaConf.select(cfg, "init_mode") is None  # stage 2 loads a video checkpoint as it is


AVA_EXPERIMENTS = ("ava_mvitv2_s", "ava_mvitv2_b", "ava_mvitv2_l")


def test_ava_experiments_have_the_papers_recipe_and_per_clip_rate() -> None:
    """§B.6 for S, B and L alike (each file states it: experiments include no other; only the model, its frames,
    input size and normalisation differ: recipes.AVA_MODELS). Base lr 0.6 for 64 GPUs x 8 clips: ours is per node (8 GPUs x
    data.batch_size clips) x nodes, so at 8 nodes, the paper's 64 GPUs, the composed lr is 0.6 itself, and the warm-up
    start scales with it. Training boxes: ground truth + proposals kept by IoU (> 0.9), not by score."""
    register_resolvers()
    values = OFFICIAL["ava_mvitv2_s"].values
    assert values["task.optimizer.lr"] == pytest.approx(0.6 * GPUS_PER_NODE * values["data.batch_size"] / 512, rel=1e-12)
    cfgs = {name: compose_cfg([f"experiment={name}", "trainer.num_nodes=8"], ".", ".") for name in AVA_EXPERIMENTS}
    for key in recipes.AVA:
        got = {name: OmegaConf.select(cfg, key) for name, cfg in cfgs.items()}
        assert len({str(v) for v in got.values()}) == 1, (key, got)
    for name, cfg in cfgs.items():
        assert GPUS_PER_NODE * 8 * cfg.data.batch_size == 512 and cfg.task.optimizer.lr == pytest.approx(0.6, rel=1e-12)
        assert cfg.task.scheduler.warmup_start_lr == pytest.approx(0.6 / 100, rel=1e-12), name
        assert cfg.data.train_boxes[0][1] is True and cfg.data.train_boxes[1][3] == 0.9
        assert cfg.data.test_mode == "center" and OFFICIAL[name].values["data.val_boxes.0.2"] == 0.8
    assert cfgs["ava_mvitv2_l"].model.backbone.name == "mvitv2_l_40x3"  # the IN-21K L layout (attention widening)
