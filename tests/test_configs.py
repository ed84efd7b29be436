"""Config composition: every experiment composes and instantiates its data, model and task, and its recipe values
are the official ones (mvit_video.recipes, through scripts/recipe_diff.py)."""

import runpy
from pathlib import Path

import pytest
import torch
import yaml
from hydra.utils import instantiate
from omegaconf import OmegaConf

from mvit_video.recipes import OFFICIAL, expected
from mvit_video.train import register_resolvers

from .helpers import CONF_DIR, compose_cfg, run_script

EXPERIMENTS = sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml"))


@pytest.fixture(scope="module")
def composed(tmp_path_factory):
    """``composed(name, *overrides)``: the experiment's config, composed once per module (composition is the cost)."""
    register_resolvers()
    root = tmp_path_factory.mktemp("configs")
    cache = {}

    def get(name: str, *overrides: str):
        key = (name, *overrides)
        if key not in cache:
            cache[key] = compose_cfg([f"experiment={name}", *overrides], root / "out", root / "data")
        return cache[key]

    return get


def test_all_issue_experiments_exist():
    assert set(OFFICIAL) | {"demo"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiments_compose_one_way(name):
    """Every experiment names its groups with ``override /group: x`` and holds its deltas: none includes another."""
    defaults = yaml.safe_load((Path(CONF_DIR) / "experiment" / f"{name}.yaml").read_text()).get("defaults", [])
    assert defaults and all(isinstance(d, dict) and all(k.startswith("override /") for k in d) for d in defaults)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_and_instantiates(name, composed):
    cfg = composed(name)
    dm = instantiate(cfg.data)
    with torch.device("meta"):
        net = instantiate(cfg.model)
    task = instantiate(cfg.task, net=net)
    detection = name.startswith("ava")
    multilabel = name.startswith("charades")  # mAP over classes, as AVA
    assert cfg.objective == ("val/mAP" if detection or multilabel else "val/top1")
    # No official val split (validation on the test list): the last epoch is tested, not one chosen on test.
    no_val_split = name.split("_")[0] in ("ucf101", "hmdb51", "charades")
    assert cfg.callbacks.model_checkpoint.monitor == (None if no_val_split else cfg.objective)
    if detection:
        assert net.roi_head.projection.out_features == 80
        assert net.backbone.cfg.num_frames == dm.kw["num_frames"] and net.backbone.cfg.input_size == dm.kw["crop_size"]
        return
    assert task.num_classes == dm.num_classes == net.num_classes
    assert net.cfg.num_frames == dm.num_frames and net.cfg.input_size == dm.crop_size
    if name in OFFICIAL:  # what the built objects carry is the official recipe (mvit_video/recipes.py)
        built = {
            "data.num_classes": dm.num_classes,
            "data.num_frames": dm.num_frames,
            "data.sampling_rate": getattr(dm, "sampling_rate", None),  # an image datamodule has none
            "data.crop_size": dm.crop_size,
            "model.drop_path_rate": net.cfg.drop_path_rate,
            "task.optimizer.lr": task.optimizer_factory.keywords["lr"],
            "trainer.max_epochs": cfg.trainer.max_epochs,
        }
        want = expected(name)
        assert built == {key: want.get(key) for key in built}  # an image recipe has no frames: None


def test_lr_scales_with_nodes(tmp_path):
    register_resolvers()
    cfg = compose_cfg(["experiment=k400_mvitv2_b", "trainer.num_nodes=4"], tmp_path / "o", tmp_path / "d")
    assert cfg.task.optimizer.lr == pytest.approx(4 * OFFICIAL["k400_mvitv2_b"].values["task.optimizer.lr"])


def test_no_experiment_scales_the_learning_rates_with_nodes(tmp_path):
    """README: with no experiment, the K400 recipe's "lr 1e-4 per node". Before, the groups held the one-node values
    and only the experiments scaled them, so a 4-node own-dataset run trained at a quarter of the recipe's LR."""
    register_resolvers()
    one = compose_cfg(["data.num_classes=7"], tmp_path / "o", tmp_path / "d")
    four = compose_cfg(["data.num_classes=7", "trainer.num_nodes=4"], tmp_path / "o", tmp_path / "d")
    for key in ("task.optimizer.lr", "task.scheduler.warmup_start_lr", "task.scheduler.end_lr"):
        assert OmegaConf.select(four, key) == pytest.approx(4 * OmegaConf.select(one, key)), key


def test_missing_dataset_fails_fast_with_instructions(tmp_path):
    from mvit_video.train import run

    cfg = compose_cfg(["experiment=k400_mvitv2_b"], tmp_path / "out", tmp_path / "data")
    with pytest.raises(FileNotFoundError, match=r"(?s)kinetics400/train\.csv.*prepare_kinetics\.py"):
        run(cfg)


def _recipe_diff() -> dict:
    return runpy.run_path(str(Path(CONF_DIR).parent / "scripts" / "recipe_diff.py"))


def test_recipe_diff_passes_on_every_experiment():
    out = run_script("recipe_diff.py")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert f"{len(EXPERIMENTS)} experiments, 0 unexplained differences" in out.stdout
    assert "ssv2_mvitv2_l" in out.stdout and "intended: the K400 checkpoint" in out.stdout


def test_recipe_diff_catches_an_undeclared_difference_and_a_stale_declaration():
    check = _recipe_diff()["check"]
    errors = check("ssv2_mvitv2_s", ["model.drop_path_rate=0.3"])
    assert any("model.drop_path_rate" in e for e in errors)
    errors = check("ssv2_mvitv2_s", ["init_from=/ckpt/k400.ckpt"])  # now official, yet declared as a deviation
    assert any("declared but the value is the official one" in e for e in errors)
    assert check("ssv2_mvitv2_s") == []
    # the official value at one node, but a constant: it no longer scales with the number of nodes
    errors = check("k400_mvitv2_s", ["task.optimizer.lr=1e-4"])
    assert [e for e in errors if "scale" in e] == errors and len(errors) == 1


def test_ssv2_flip_is_an_error_unless_allowed(tmp_path):
    register_resolvers()
    cfg = compose_cfg(["experiment=ssv2_mvitv2_s", "data.flip=true"], tmp_path / "o", tmp_path / "d")
    with pytest.raises(Exception, match="left to right") as err:  # Hydra wraps the datamodule's ValueError
        instantiate(cfg.data)
    assert isinstance(err.value.__cause__ or err.value, ValueError)
    cfg = compose_cfg(["experiment=ssv2_mvitv2_s", "data.flip=true", "data.allow_flip=true"], tmp_path / "o", tmp_path / "d")
    assert instantiate(cfg.data).flip


def _compose_with_hydra(overrides: list[str], tmp_path: Path):
    """The config with its ``hydra`` node, to see the run directory and the group choices a command gets."""
    from hydra import compose, initialize_config_dir

    register_resolvers()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("train", overrides=[f"paths.data_dir={tmp_path}", *overrides], return_hydra_config=True)


def test_no_experiment_is_not_the_demo(tmp_path):
    """`python train.py` with no experiment must not quietly run the CPU demo recipe (the README's own-data path)."""
    cfg = _compose_with_hydra([], tmp_path)
    assert cfg.hydra.runtime.choices.experiment is None
    assert cfg.task_name == "train" and "/logs/train/runs/" in cfg.hydra.run.dir
    assert cfg.model.name != "mvitv2_tiny" and not cfg.data.time_shuffle_control
    assert cfg.task.optimizer.lr != 5e-4 and cfg.trainer.max_epochs != 30
    demo = _compose_with_hydra(["experiment=demo"], tmp_path)  # the demo states its deltas
    assert (demo.task_name, demo.model.name, demo.data.root) == ("demo", "mvitv2_tiny", f"{tmp_path}/synthetic_kinetics")
    assert (demo.task.optimizer.lr, demo.trainer.max_epochs, demo.trainer.accelerator) == (5e-4, 30, "cpu")
    assert demo.data.time_shuffle_control and "/logs/demo/runs/" in demo.hydra.run.dir


def test_own_dataset_command_gets_the_official_mvitv2_s_recipe(tmp_path):
    """README: `python train.py data=kinetics data.root=DIR data.num_classes=K` trains MViTv2-S 16x4 with the K400
    optimiser and schedule (spec §2.2) on the user's classes, on the default trainer, logged under logs/train."""
    cfg = _compose_with_hydra(["data=kinetics", "data.root=/data/mine", "data.num_classes=7"], tmp_path)
    assert cfg.data._target_ == "mvit_video.data.kinetics.KineticsDataModule" and cfg.data.root == "/data/mine"
    official = OFFICIAL["k400_mvitv2_s"].values
    keys = (
        "data.num_frames",
        "data.sampling_rate",
        "data.crop_size",
        "model.name",
        "task.optimizer._target_",
        "task.optimizer.lr",
        "task.optimizer.weight_decay",
        "task.scheduler.warmup_epochs",
        "task.scheduler.warmup_start_lr",
        "task.scheduler.end_lr",
        "task.mixup.mixup_alpha",
        "task.label_smoothing",
        "trainer.max_epochs",
    )
    assert {key: OmegaConf.select(cfg, key) for key in keys} == {key: official[key] for key in keys}
    assert cfg.data.synthetic is None and (cfg.model.num_classes, cfg.task.num_classes) == (7, 7)
    assert (cfg.trainer.accelerator, cfg.hydra.runtime.choices.trainer) == ("auto", "default")
    assert cfg.task_name == "train" and "/logs/train/runs/" in cfg.hydra.run.dir and not cfg.data.time_shuffle_control


def test_layer_decay_scales_the_whole_schedule_of_every_group(tmp_path):
    """``task.layer_decay`` < 1: each group's LR is the base schedule times the group's scale, warmup start and end
    LR included. Before, warmup_start_lr and end_lr were absolute, so a low layer (base LR below warmup_start_lr)
    fell during the warmup and rose during the decay."""
    from mvit_video.tasks.optim import configure_optimizers

    register_resolvers()
    cfg = compose_cfg(["experiment=demo", "task.layer_decay=0.5"], tmp_path / "out", tmp_path / "data")
    net = instantiate(cfg.model)
    task = instantiate(cfg.task, net=net)
    steps_per_epoch, epochs = 4, 6
    sched_cfg = cfg.task.scheduler
    assert sched_cfg.warmup_epochs >= 1 and sched_cfg.warmup_start_lr > 0 and sched_cfg.end_lr > 0
    out = configure_optimizers(
        net, task.optimizer_factory, task.scheduler_factory, epochs, steps_per_epoch * epochs, task.layer_decay
    )
    opt, sched = out["optimizer"], out["lr_scheduler"]["scheduler"]
    scales = torch.tensor([g["lr_scale"] for g in opt.param_groups])  # (G,)
    assert scales.min() < 0.5**4  # a low layer's base LR is far below warmup_start_lr * 1
    lrs = []
    for _ in range(steps_per_epoch * epochs + 1):
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    lrs = torch.tensor(lrs, dtype=torch.float64)  # (steps, G)
    warm = int(sched_cfg.warmup_epochs * steps_per_epoch)
    assert (lrs[1 : warm + 1] >= lrs[:warm]).all(), "an LR fell during the warmup"
    assert (lrs[warm + 1 :] <= lrs[warm:-1]).all(), "an LR rose during the cosine decay"
    top = lrs[:, scales.argmax()]  # (steps,)
    ratio = lrs / top[:, None]  # (steps, G): constant in time for every group
    torch.testing.assert_close(ratio, (scales / scales.max()).to(ratio).expand_as(ratio), rtol=1e-9, atol=0)
    assert lrs[0, scales.argmax()] == pytest.approx(sched_cfg.warmup_start_lr)  # the top group's schedule is the base
    assert lrs[-1, scales.argmax()] == pytest.approx(sched_cfg.end_lr)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_debug_tiny_fits_every_experiment(name, composed):
    """``debug=tiny`` on every experiment: the tiny model, 8 frames, no workers, 2 batches, CPU; and no key that the
    data group lacks (its datamodule would get an unexpected argument: instantiating it checks that)."""
    cfg = composed(name, "debug=tiny")
    instantiate(cfg.data)
    with torch.device("meta"):
        net = instantiate(cfg.model)
    instantiate(cfg.task, net=net)
    backbone = net.backbone if name.startswith("ava") else net
    assert backbone.cfg.embed_dim == 32 and backbone.cfg.num_frames == cfg.data.num_frames == (
        1 if name.startswith("in1k") else 8
    )  # images: 1
    assert (cfg.data.num_workers, cfg.trainer.limit_train_batches, cfg.trainer.accelerator) == (0, 2, "cpu")
    assert cfg.callbacks.progress_bar is None and not cfg.data.get("time_shuffle_control", False)  # AVA: no such option


def test_model_group_has_one_option_per_preset(tmp_path):
    """``model=<preset>`` (as issue 18's fine-tune command types it) is ``model.name=<preset>`` on conf/model/mvitv2.yaml,
    for every registered preset; with experiment=finetune its values (drop path, class count) still apply."""
    from mvit_video.models import list_models

    (tmp_path / "videos" / "left").mkdir(parents=True)
    (tmp_path / "videos" / "right").mkdir()
    register_resolvers()
    for preset in list_models():
        cfg = compose_cfg([f"model={preset}"], tmp_path / "out", tmp_path / "data")
        assert cfg.model.name == preset and cfg.model._target_ == "mvit_video.models.build_model"
    finetune = ["experiment=finetune", f"data.root={tmp_path / 'videos'}", "model=mvitv2_b_32x3"]
    cfg = compose_cfg(finetune, tmp_path / "out", tmp_path / "data")
    assert (cfg.model.name, cfg.model.drop_path_rate, cfg.model.num_classes) == ("mvitv2_b_32x3", 0.2, 2)
