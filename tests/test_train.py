"""End to end: a short training run on synthetic files, checkpoint metadata, resume."""

import csv

import torch

from mvit_video.train import run

from .helpers import assert_same_final_state, compose_cfg

# debug=tiny's model and trainer, all batches of the 16/8/8-video dataset
BASE = [
    "debug=tiny",
    "trainer.limit_train_batches=null",
    "trainer.limit_val_batches=null",
    "trainer.limit_test_batches=null",
    "data.num_classes=4",
    "data.crop_size=48",
    "data.train_jitter_scales=[48,60]",
    "data.test_short_side=48",
    "data.test_num_clips=2",
    "data.test_num_crops=1",
]


def _cfg(tmp_path, data_root, extra):
    return compose_cfg([*BASE, f"data.root={data_root}", "data.synthetic=null", *extra], tmp_path / "out", tmp_path / "data")


def test_one_epoch_train_val_test(tmp_path, tiny_kinetics, capsys):
    cfg = _cfg(tmp_path, tiny_kinetics, ["trainer.max_epochs=1", "trainer.limit_train_batches=2"])
    metrics = run(cfg)
    for key in ("train/loss_epoch", "val/top1", "test/top1", "test/top5"):
        assert key in metrics
    assert metrics["test/videos"] == 8 and metrics["test/unreadable_videos"] == 0
    summary = capsys.readouterr().out
    assert "test/top1" in summary and "test/videos" in summary  # the summary says what top-1 covers
    out = tmp_path / "out"
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert (out / "metrics.csv").is_file() and (out / "curves.png").stat().st_size > 1000
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    meta = ckpt["mvit_video"]
    assert meta["preset"] == "mvitv2_tiny" and meta["num_frames"] == 8 and meta["crop_size"] == 48
    assert meta["class_names"][:2] == ["moving_left", "moving_right"] and len(meta["class_names"]) == 4


def test_resume_continues_at_saved_step(tmp_path, tiny_kinetics):
    first = _cfg(tmp_path, tiny_kinetics, ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "test=false"])
    run(first)
    last = tmp_path / "out" / "checkpoints" / "last.ckpt"
    saved = torch.load(last, map_location="cpu", weights_only=True)
    assert saved["global_step"] == 2
    second = _cfg(
        tmp_path, tiny_kinetics, ["trainer.max_epochs=2", "trainer.limit_train_batches=2", "test=false", "ckpt_path=last"]
    )
    run(second)
    resumed = torch.load(last, map_location="cpu", weights_only=True)
    assert resumed["global_step"] == 4 and resumed["epoch"] == 1
    assert resumed["lr_schedulers"][0]["last_epoch"] == 4  # the per-step schedule went on, not restarted


def test_lightning_checkpoint_loads_into_a_fresh_model(tmp_path, tiny_kinetics):
    from mvit_video.models import build_model
    from mvit_video.models.convert import load_pretrained

    run(_cfg(tmp_path, tiny_kinetics, ["trainer.max_epochs=1", "trainer.limit_train_batches=1", "test=false"]))
    ckpt = tmp_path / "out" / "checkpoints" / "last.ckpt"
    model = load_pretrained(build_model("mvitv2_tiny", num_classes=4, input_size=48), ckpt, source="lightning")
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    assert torch.equal(model.head.projection.weight, saved["net.head.projection.weight"])


def test_preemption_signal_checkpoints_mid_epoch_and_resume_is_exact(tmp_path, tiny_kinetics):
    """SIGUSR2 after step 2 of a 2-epoch run (4 steps per epoch); the checkpoint follows at the next batch end
    (step 3, mid-epoch); exit; resume: the final
    weights and optimizer state equal an uninterrupted run's (same samples, augmentations, dropout)."""
    import pytest

    common = [
        "trainer.max_epochs=2",
        "test=false",
        "data.train_jitter_scales=[48,64]",
        "model.drop_path_rate=0.1",
        "trainer.log_every_n_steps=1",
    ]
    run(_cfg(tmp_path / "plain", tiny_kinetics, common))

    preempted = _cfg(
        tmp_path / "pre",
        tiny_kinetics,
        [*common, "+callbacks.signal._target_=tests.helpers.SignalAtStep", "+callbacks.signal.step=2"],
    )
    with pytest.raises(SystemExit) as stop:
        run(preempted)
    assert stop.value.code == 128 + 12  # 128 + SIGUSR2
    saved = torch.load(tmp_path / "pre" / "out" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["global_step"] == 3 and saved["epoch"] == 0  # mid-epoch
    assert saved["KineticsDataModule"] == {"epoch": 0, "batches": 3}

    run(_cfg(tmp_path / "pre", tiny_kinetics, [*common, "ckpt_path=last"]))
    assert_same_final_state(tmp_path / "pre" / "out", tmp_path / "plain" / "out")
    # the resumed run continued metrics.csv: the first part's rows kept, none twice
    rows = list(csv.DictReader((tmp_path / "pre" / "out" / "metrics.csv").open()))
    assert [int(r["step"]) for r in rows if r.get("train/loss_step")] == list(range(8))
    assert [r["epoch"] for r in rows if r.get("val/top1")] == ["0", "1"]

    # A crash (an exception in the step after step 5, past forward and backward) loses nothing either: crash.ckpt
    # holds the state after step 5, the error reaches the caller, and resuming from it ends where the plain run did.
    crashing = _cfg(
        tmp_path / "crash",
        tiny_kinetics,
        [*common, "+callbacks.fail._target_=tests.helpers.FailAtStep", "+callbacks.fail.step=5"],
    )
    with pytest.raises(RuntimeError, match="injected failure at step 5"):
        run(crashing)
    crash = tmp_path / "crash" / "out" / "checkpoints" / "crash.ckpt"
    assert torch.load(crash, map_location="cpu", weights_only=True)["global_step"] == 5
    run(_cfg(tmp_path / "crash", tiny_kinetics, [*common, f"ckpt_path={crash}"]))
    assert_same_final_state(tmp_path / "crash" / "out", tmp_path / "plain" / "out")


def test_resume_last_without_checkpoint_fails_with_a_hint(tmp_path, tiny_kinetics):
    """`ckpt_path=last` in a run dir without last.ckpt (a new, timestamped run dir) is an error naming the dir, the
    fix and the run dirs that have one, before any work; before the fix the run silently started from scratch."""
    import pytest

    earlier = tmp_path / "logs" / "train" / "runs" / "2026-01-01_00-00-00" / "checkpoints"
    earlier.mkdir(parents=True)
    (earlier / "last.ckpt").write_bytes(b"")
    cfg = _cfg(
        tmp_path,
        tiny_kinetics,
        [
            "ckpt_path=last",
            f"paths.log_dir={tmp_path / 'logs'}",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=1",
            "test=false",
        ],
    )
    with pytest.raises(FileNotFoundError) as err:
        run(cfg)
    message = str(err.value)
    assert str(tmp_path / "out" / "checkpoints" / "last.ckpt") in message and "hydra.run.dir=" in message
    assert f"hydra.run.dir={earlier.parent}" in message
    assert not (tmp_path / "out" / "checkpoints").exists()  # nothing trained


def test_slurm_requeue_without_checkpoint_starts_fresh_with_a_warning(tmp_path, tiny_kinetics, monkeypatch, caplog):
    """A requeued SLURM job preempted before its first save has no last.ckpt: that is legitimate (warning, fresh
    start); before the fix it started fresh without a word."""
    import logging

    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    cfg = _cfg(
        tmp_path,
        tiny_kinetics,
        ["trainer.max_epochs=1", "trainer.limit_train_batches=1", "test=false", "trainer.limit_val_batches=1"],
    )
    with caplog.at_level(logging.WARNING, logger="mvit_video.train"):
        run(cfg)
    assert "SLURM restart 1: no" in caplog.text and "starting from scratch" in caplog.text
    assert torch.load(tmp_path / "out" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 1


def test_resume_from_end_of_epoch_checkpoint_with_workers_is_exact(tmp_path, tiny_kinetics):
    """The end-of-epoch last.ckpt (what `ckpt_path=last` finds after a stop in the next epoch) resumes at the next
    epoch's first batch, with DataLoader workers too (they draw indices before Lightning sets the epoch): the final
    weights equal an uninterrupted run's. Before the fix, the resumed epoch ran 0 batches (global step 4, not 8)."""
    common = [
        "trainer.max_epochs=2",
        "test=false",
        "data.num_workers=2",
        "data.crop_size=32",
        "data.train_jitter_scales=[32,40]",
        "data.test_short_side=32",
        "data.test_num_clips=1",
    ]
    copy = tmp_path / "resumed" / "out" / "checkpoints" / "last.ckpt"
    run(
        _cfg(
            tmp_path / "plain",
            tiny_kinetics,
            [
                *common,
                "+callbacks.copy._target_=tests.helpers.CopyLastAtEpochStart",
                "+callbacks.copy.epoch=1",
                f"+callbacks.copy.dest={copy}",
            ],
        )
    )
    saved = torch.load(copy, map_location="cpu", weights_only=True)  # the end of epoch 0

    run(_cfg(tmp_path / "resumed", tiny_kinetics, [*common, "ckpt_path=last"]))
    assert_same_final_state(tmp_path / "resumed" / "out", tmp_path / "plain" / "out")
    assert saved["global_step"] == 4 and saved["KineticsDataModule"] == {"epoch": 1, "batches": 0}  # next: epoch 1


def test_paths_are_under_the_repository_from_any_working_directory(tmp_path):
    """``paths.root_dir`` is the directory holding conf/ (no environment variable set before import): a run started
    elsewhere still puts its logs and data under the repository."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k not in ("MVIT_ROOT", "MVIT_DATA")}
    res = subprocess.run(
        [sys.executable, str(root / "train.py"), "--cfg", "job", "--resolve", "--package", "paths"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"root_dir: {root}\n" in res.stdout and f"log_dir: {root}/logs\n" in res.stdout, res.stdout
    assert f"data_dir: {root}/data\n" in res.stdout, res.stdout
