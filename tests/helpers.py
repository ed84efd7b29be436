"""Shared test helpers: a tiny synthetic Kinetics-format dataset on disk and Hydra composition."""

from __future__ import annotations

import subprocess
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from mvit_video.data.synthetic import SyntheticSpec, make_synthetic_kinetics
from mvit_video.models import build_model
from mvit_video.models.detector import build_ava_detector

AVA_TEST_CLASSES = [1, 5, 12, 80]  # the evaluated ids of the tiny detector tests
CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
TINY_SPEC = SyntheticSpec(
    num_classes=4,
    train_per_class=4,
    val_per_class=2,
    test_per_class=2,
    min_seconds=1.0,
    max_seconds=1.5,
    min_side=72,
    max_side=112,
)


def make_tiny_dataset(root: Path) -> Path:
    return make_synthetic_kinetics(root, TINY_SPEC, workers=2)


def ava_tiny_run(val_videos: int) -> list[str]:
    """Overrides for a one-step AVA run on synthetic data (2 train videos, ``val_videos`` x 2 keyframes), 64^2."""
    return [
        "experiment=ava_synthetic",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=1",
        "data.num_workers=0",
        "data.batch_size=2",
        "data.synthetic.train_videos=2",
        f"data.synthetic.val_videos={val_videos}",
        "data.synthetic.seconds=6",
        "data.synthetic.keyframes=[902,903]",
        "data.seconds=[902,903]",
        "data.crop_size=64",
        "data.jitter_scales=[64,72]",
        "callbacks.progress_bar=null",
    ]


def compose_cfg(overrides: list[str], output_dir: Path, data_dir: Path) -> DictConfig:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("train", overrides=[f"paths.output_dir={output_dir}", f"paths.data_dir={data_dir}", *overrides])


class SignalAtStep:
    """A test callback: sends this process ``signal_name`` at the end of training batch ``step`` (global step), as
    SLURM does before a time limit or a preemption."""

    def __new__(cls, step: int, signal_name: str = "SIGUSR2"):
        import os
        import signal

        import lightning as L

        class _Send(L.Callback):
            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                if trainer.global_step == step:
                    os.kill(os.getpid(), getattr(signal, signal_name))

        return _Send()


class CopyLastAtEpochStart:
    """A test callback: at the start of training epoch ``epoch``, copies ``checkpoints/last.ckpt`` (then the
    end-of-epoch checkpoint of the epoch before) to ``dest``, as if the run had been stopped right after it."""

    def __new__(cls, epoch: int, dest: str):
        import shutil
        from pathlib import Path

        import lightning as L

        class _Copy(L.Callback):
            def on_train_epoch_start(self, trainer, pl_module):
                if trainer.current_epoch == epoch:
                    Path(dest).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt", dest)

        return _Copy()


class WaitForSignalAtStep:
    """A test callback for runs stopped from outside: at the end of the batch that makes global step ``step`` it
    writes ``marker`` (the test then sends its signal) and waits until the ``Preemption`` callback has received
    one, so the stop checkpoint always comes at the next batch end (global step ``step + 1``)."""

    def __new__(cls, step: int, marker: str, timeout_s: float = 120.0):
        import time
        from pathlib import Path

        import lightning as L

        from mvit_video.callbacks import Preemption

        class _Wait(L.Callback):
            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                if trainer.global_step != step:
                    return
                (stopper,) = [cb for cb in trainer.callbacks if isinstance(cb, Preemption)]
                Path(marker).write_text(str(step))
                deadline = time.monotonic() + timeout_s
                while stopper.received is None and time.monotonic() < deadline:
                    time.sleep(0.05)  # the handler runs in this thread, between two sleeps
                if stopper.received is None:
                    raise TimeoutError(f"no signal within {timeout_s} s of {marker}")

        return _Wait()


class FailAtStep:
    """A test callback: raises ``RuntimeError`` inside the training step that would make global step ``step + 1``
    (after forward and backward, just before the optimizer step), as a bug or a bad batch would."""

    def __new__(cls, step: int):
        import lightning as L

        class _Fail(L.Callback):
            def on_before_optimizer_step(self, trainer, pl_module, optimizer):
                if trainer.global_step == step:
                    raise RuntimeError(f"injected failure at step {step}")

        return _Fail()


def run_script(name: str, *args) -> subprocess.CompletedProcess:
    """``scripts/<name>``'s ``main(argv)`` in this process (no interpreter start-up, no re-import of torch), its
    stdout and stderr captured: the same answer as running the script, for the tests that check what it says."""
    import contextlib
    import io
    import runpy

    main = runpy.run_path(str(Path(CONF_DIR).parent / "scripts" / name))["main"]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:  # argparse's usage errors
            code = e.code if isinstance(e.code, int) else 1
    return subprocess.CompletedProcess([name, *map(str, args)], code, out.getvalue(), err.getvalue())


def tiny_detector_and_batch():
    """The tiny AVA detector (no dropout, seeded) and one batch of 2 clips, 3 boxes, multi-hot labels over 80."""
    torch.manual_seed(0)
    det = build_ava_detector(build_model("mvitv2_tiny", num_classes=0, drop_path_rate=0.0), num_classes=80, dropout=0.0)
    video = torch.randn(2, 3, 8, 64, 64)  # (B, C, T, H, W)
    boxes = torch.tensor([[0, 4.0, 4.0, 40.0, 60.0], [1, 10.0, 0.0, 63.0, 30.0], [1, 0.0, 0.0, 64.0, 64.0]])  # (K, 5)
    labels = torch.zeros(3, 80)  # (K, 80) multi-hot
    labels[0, [0, 11]] = labels[1, 4] = labels[2, 79] = 1
    return det, {"video": video, "boxes": boxes, "labels": labels}


def train_steps(
    module: L.LightningModule, batches: list[dict], device: torch.device, precision: str = "bf16-mixed"
) -> list[torch.Tensor]:
    """``len(batches)`` optimiser steps at ``precision``; the training losses, as returned by ``training_step``."""
    losses: list[torch.Tensor] = []
    step = module.training_step

    def recorded(batch, batch_idx):
        loss = step(batch, batch_idx)
        losses.append(loss.detach())
        return loss

    module.training_step = recorded
    trainer = L.Trainer(
        accelerator=device.type,
        devices=1,
        precision=precision,
        max_steps=len(batches),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))
    return losses


def _final_state(out: Path):
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return ckpt["global_step"], ckpt["state_dict"], ckpt["optimizer_states"][0]["state"]


def assert_same_final_state(out: Path, plain_out: Path, steps: int = 8) -> None:
    """The run in ``out`` ended where the uninterrupted run in ``plain_out`` did: step, weights, AdamW moments."""
    (step, sd, opt), (plain_step, plain_sd, plain_opt) = _final_state(out), _final_state(plain_out)
    assert step == plain_step == steps
    for key, value in plain_sd.items():
        torch.testing.assert_close(sd[key], value, rtol=0, atol=1e-6, msg=key)
    torch.testing.assert_close(opt[0]["exp_avg"], plain_opt[0]["exp_avg"], rtol=0, atol=1e-7)
