"""Shared test helpers: a tiny synthetic Kinetics-format dataset on disk and Hydra composition."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from mvit_video.data.synthetic import SyntheticSpec, make_synthetic_kinetics

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
TINY_SPEC = SyntheticSpec(
    num_classes=4, train_per_class=4, val_per_class=2, test_per_class=2, min_seconds=1.0, max_seconds=1.5,
    min_side=72, max_side=112,
)  # fmt: skip


def make_tiny_dataset(root: Path) -> Path:
    return make_synthetic_kinetics(root, TINY_SPEC, workers=2)


def compose_cfg(overrides: list[str], output_dir: Path, data_dir: Path) -> DictConfig:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(
            "train", overrides=[f"paths.output_dir={output_dir}", f"paths.data_dir={data_dir}", *overrides]
        )


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
