"""Config composition: every experiment composes and instantiates its data, model and task."""

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from mvit_video.train import register_resolvers

from .helpers import compose_cfg

EXPERIMENTS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "experiment").glob("*.yaml"))
OFFICIAL = {  # (num_classes, frames, rate, crop, drop path, lr, epochs) from spec §2
    "k400_mvitv2_s": (400, 16, 4, 224, 0.2, 1e-4, 200),
    "k400_mvitv2_b": (400, 32, 3, 224, 0.3, 1e-4, 200),
    "k400_mvitv2_l": (400, 40, 3, 312, 0.75, 1e-4, 200),
    "k600_mvitv2_b": (600, 32, 3, 224, 0.3, 1e-4, 200),
    "k700_mvitv2_b": (700, 32, 3, 224, 0.3, 1e-4, 200),
}


def test_all_issue_experiments_exist():
    assert set(OFFICIAL) | {"demo"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_and_instantiates(name, tmp_path):
    register_resolvers()
    cfg = compose_cfg([f"experiment={name}"], tmp_path / "out", tmp_path / "data")
    dm = instantiate(cfg.data)
    with torch.device("meta"):
        net = instantiate(cfg.model)
    task = instantiate(cfg.task, net=net)
    if name.startswith("ava"):
        assert net.roi_head.projection.out_features == 80
        assert net.backbone.cfg.num_frames == dm.kw["num_frames"] and net.backbone.cfg.input_size == dm.kw["crop_size"]
        return
    assert task.num_classes == dm.num_classes == net.num_classes
    assert net.cfg.num_frames == dm.num_frames and net.cfg.input_size == dm.crop_size
    if name in OFFICIAL:
        classes, frames, rate, crop, dpr, lr, epochs = OFFICIAL[name]
        assert (dm.num_classes, dm.num_frames, dm.sampling_rate, dm.crop_size) == (classes, frames, rate, crop)
        assert net.cfg.drop_path_rate == dpr
        assert task.optimizer_factory.keywords["lr"] == lr
        assert cfg.trainer.max_epochs == epochs


def test_lr_scales_with_nodes(tmp_path):
    register_resolvers()
    cfg = compose_cfg(["experiment=k400_mvitv2_b", "trainer.num_nodes=4"], tmp_path / "o", tmp_path / "d")
    assert cfg.task.optimizer.lr == pytest.approx(4e-4)


def test_missing_dataset_fails_fast_with_instructions(tmp_path):
    from mvit_video.train import run

    cfg = compose_cfg(["experiment=k400_mvitv2_b"], tmp_path / "out", tmp_path / "data")
    with pytest.raises(FileNotFoundError, match=r"(?s)kinetics400/train\.csv.*prepare_kinetics\.py"):
        run(cfg)
