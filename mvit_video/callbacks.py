"""Preemption and time limits on SLURM: checkpoint mid-epoch on the warning signal, requeue, resume exactly.

SLURM sends a signal some time before it stops a job (``#SBATCH --signal=USR2@120``, which hydra-submitit-launcher
writes from ``signal_delay_s``; ``scancel --signal=USR2 JOB`` sends it by hand). ``Preemption`` catches it, and at
the next batch end, on every rank at the same step:

1. saves ``checkpoints/last.ckpt`` in the run directory (which is the same folder for every requeue of the job);
   the checkpoint carries the model, optimizer, scheduler, loop progress, the datamodule's position in the epoch
   and the random generators' states;
2. requeues the job (rank 0: ``scontrol requeue $SLURM_JOB_ID``) and exits without a result, so submitit does not
   see a finished job.

The requeued job runs the same command again; ``mvit_video.train.run`` resumes from that ``last.ckpt`` when
``SLURM_RESTART_COUNT`` is set, and the rest of the epoch sees the same samples with the same augmentations as
an uninterrupted run would have.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

log = logging.getLogger(__name__)


class Preemption(L.Callback):
    """Mid-epoch checkpoint + requeue on ``signal_name`` (default SIGUSR2, submitit's). Outside SLURM the signal still
    gives a resumable checkpoint and a clean stop (exit code ``exit_code``)."""

    def __init__(self, dirpath: str, signal_name: str = "SIGUSR2", requeue: bool = True, exit_code: int = 3) -> None:
        self.dirpath = Path(dirpath)
        self.signum = getattr(signal, signal_name)
        self.requeue, self.exit_code = requeue, exit_code
        self.received = False
        self._previous: Any = None

    def _handler(self, signum, frame) -> None:  # only sets a flag: the work happens at a batch end
        log.warning("received %s: checkpoint at the next batch end", signal.Signals(signum).name)
        self.received = True

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and self._previous is None:
            self._previous = signal.signal(self.signum, self._handler)  # replaces submitit's own handler

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and self._previous is not None:
            signal.signal(self.signum, self._previous)
            self._previous = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        # Ranks get the signal at slightly different moments: agree (any rank) so all save at the same step.
        if not trainer.strategy.reduce_boolean_decision(self.received, all=False):
            return
        path = self.dirpath / "last.ckpt"
        trainer.save_checkpoint(path)
        log.warning("preemption checkpoint at global step %d: %s", trainer.global_step, path)
        job = os.environ.get("SLURM_JOB_ID")
        if trainer.is_global_zero and self.requeue and job:
            result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, check=False)
            log.warning("scontrol requeue %s: %s", job, (result.stdout + result.stderr).strip() or "ok")
        for lg in trainer.loggers:  # the CSV logger buffers rows: write them before leaving
            lg.save()
        sys.stdout.flush()
        # SystemExit, not a return: a returning job would write submitit's result file and count as finished.
        raise SystemExit(self.exit_code)

    def state_dict(self) -> dict[str, Any]:
        """The generators' states at the checkpoint, so dropout, drop-path and mixup continue identically."""
        mt, key, pos, has_gauss, gauss = np.random.get_state()
        return {
            "torch": torch.get_rng_state(), "numpy": (mt, torch.from_numpy(key.astype(np.int64)), pos, has_gauss, gauss),
            "python": random.getstate(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        torch.set_rng_state(state["torch"])
        mt, key, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((mt, key.numpy().astype(np.uint32), pos, has_gauss, gauss))
        random.setstate(state["python"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
