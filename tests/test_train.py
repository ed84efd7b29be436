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


def _final_state(out):
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return ckpt["global_step"], ckpt["state_dict"], ckpt["optimizer_states"][0]["state"]


def test_preemption_signal_checkpoints_mid_epoch_and_resume_is_exact(tmp_path, tiny_kinetics):
    """SIGUSR2 after step 2 of a 2-epoch run (4 steps per epoch); the checkpoint follows at the next batch end
    (step 3, mid-epoch); exit; resume: the final
    weights and optimizer state equal an uninterrupted run's (same samples, augmentations, dropout)."""
    import pytest

    common = ["trainer.max_epochs=2", "test=false", "data.train_jitter_scales=[48,64]", "model.drop_path_rate=0.1"]
    run(_cfg(tmp_path / "plain", tiny_kinetics, common))
    steps, plain_sd, plain_opt = _final_state(tmp_path / "plain" / "out")
    assert steps == 8

    preempted = _cfg(tmp_path / "pre", tiny_kinetics, [*common, "+callbacks.signal._target_=tests.helpers.SignalAtStep",
                                                       "+callbacks.signal.step=2"])  # fmt: skip
    with pytest.raises(SystemExit) as stop:
        run(preempted)
    assert stop.value.code == 3
    saved = torch.load(tmp_path / "pre" / "out" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["global_step"] == 3 and saved["epoch"] == 0  # mid-epoch
    assert saved["KineticsDataModule"] == {"epoch": 0, "batches": 3}

    run(_cfg(tmp_path / "pre", tiny_kinetics, [*common, "ckpt_path=last"]))
    steps, resumed_sd, resumed_opt = _final_state(tmp_path / "pre" / "out")
    assert steps == 8
    for key, value in plain_sd.items():
        torch.testing.assert_close(resumed_sd[key], value, rtol=0, atol=1e-6, msg=key)
    torch.testing.assert_close(resumed_opt[0]["exp_avg"], plain_opt[0]["exp_avg"], rtol=0, atol=1e-7)
