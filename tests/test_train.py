"""End to end: a short training run on synthetic files, checkpoint metadata, resume."""

import torch

from mvit_video.train import run

from .helpers import compose_cfg

BASE = [
    "data.num_classes=4", "data.num_workers=0", "data.batch_size=4", "data.crop_size=48",
    "data.train_jitter_scales=[48,60]", "data.test_short_side=48", "data.test_num_clips=2", "data.test_num_crops=1",
    "callbacks.progress_bar=null", "time_shuffle_control=false",
]  # fmt: skip


def _cfg(tmp_path, data_root, extra):
    return compose_cfg(
        [*BASE, f"data.root={data_root}", "data.synthetic=null", *extra], tmp_path / "out", tmp_path / "data"
    )


def test_one_epoch_train_val_test(tmp_path, tiny_kinetics):
    cfg = _cfg(tmp_path, tiny_kinetics, ["trainer.max_epochs=1", "+trainer.limit_train_batches=2"])
    metrics = run(cfg)
    for key in ("train/loss_epoch", "val/top1", "test/top1", "test/top5"):
        assert key in metrics
    out = tmp_path / "out"
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert (out / "metrics.csv").is_file() and (out / "curves.png").stat().st_size > 1000
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    meta = ckpt["mvit_video"]
    assert meta["preset"] == "mvitv2_tiny" and meta["num_frames"] == 8 and meta["crop_size"] == 48
    assert meta["class_names"][:2] == ["moving_left", "moving_right"] and len(meta["class_names"]) == 4


def test_resume_continues_at_saved_step(tmp_path, tiny_kinetics):
    first = _cfg(tmp_path, tiny_kinetics, ["trainer.max_epochs=1", "+trainer.limit_train_batches=2", "test=false"])
    run(first)
    last = tmp_path / "out" / "checkpoints" / "last.ckpt"
    saved = torch.load(last, map_location="cpu", weights_only=True)
    assert saved["global_step"] == 2
    second = _cfg(
        tmp_path, tiny_kinetics,
        ["trainer.max_epochs=2", "+trainer.limit_train_batches=2", "test=false", "ckpt_path=last"],
    )  # fmt: skip
    run(second)
    resumed = torch.load(last, map_location="cpu", weights_only=True)
    assert resumed["global_step"] == 4 and resumed["epoch"] == 1
    assert resumed["lr_schedulers"][0]["last_epoch"] == 4  # the per-step schedule went on, not restarted


def test_lightning_checkpoint_loads_into_a_fresh_model(tmp_path, tiny_kinetics):
    from mvit_video.models import build_model
    from mvit_video.models.convert import load_pretrained

    run(_cfg(tmp_path, tiny_kinetics, ["trainer.max_epochs=1", "+trainer.limit_train_batches=1", "test=false"]))
    ckpt = tmp_path / "out" / "checkpoints" / "last.ckpt"
    model = load_pretrained(build_model("mvitv2_tiny", num_classes=4, input_size=48), ckpt, source="lightning")
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    assert torch.equal(model.head.projection.weight, saved["net.head.projection.weight"])
