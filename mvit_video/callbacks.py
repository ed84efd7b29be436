"""Stopping loses nothing: a signal gives a checkpoint of the last finished step, a non-zero exit, and an exact resume.

The signals (``Preemption``'s ``signals``):

- ``SIGUSR2``: SLURM's warning before a time limit or a preemption (``#SBATCH --signal=USR2@120``, which
  hydra-submitit-launcher writes from ``signal_delay_s``; ``scancel --signal=USR2 JOB`` sends it by hand);
- ``SIGTERM``: ``kill PID``, ``docker stop``, ``timeout``, Kubernetes, SLURM without ``--signal``;
- ``SIGINT``: Ctrl-C. A second signal stops at once, without a checkpoint (a third Ctrl-C kills).

``Preemption`` catches them during training (from ``on_train_start``, so it replaces Lightning's own SIGTERM
handler, which would end ``fit`` without a checkpoint and exit 0) and, on every rank at the same step:

1. saves ``checkpoints/last.ckpt`` in the run directory at the next batch end; a signal during the last batch of an
   epoch or its validation waits for the epoch's end, so the epoch's validation and checkpoints are not lost. The
   checkpoint carries the model, optimizer, scheduler, loop progress, the datamodule's position in the epoch
   and the random generators' states, and is written to a temporary file first: a second signal while saving leaves
   the previous last.ckpt whole;
2. under SLURM, for SIGUSR2 and SIGTERM, requeues the job (rank 0: ``scontrol requeue $SLURM_JOB_ID``);
3. exits with ``128 + signal number`` (SIGINT 130, SIGTERM 143, SIGUSR2 140), without running the test, so neither
   a shell, a scheduler nor submitit sees a finished job.

The requeued job runs the same command again; ``mvit_video.train.run`` resumes from that ``last.ckpt`` when
``SLURM_RESTART_COUNT`` is set (by hand: ``ckpt_path=last``), and the rest of the epoch sees the same samples with
the same augmentations as an uninterrupted run would have. ``ResumableCSVLogger`` continues its ``metrics.csv``.
"""

from __future__ import annotations

import csv
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
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from torchmetrics.utilities import dim_zero_cat

from .data.sampling import ResumableData

log = logging.getLogger(__name__)

SLURM_SIGNALS = ("SIGUSR2", "SIGTERM")  # a scheduler's stop: requeue; SIGINT is a person's stop: no requeue


class Preemption(L.Callback):
    """On any of ``signals`` during training: checkpoint (``dirpath/last.ckpt``), requeue under SLURM, exit with
    ``exit_code`` (default ``128 + signal number``)."""

    def __init__(
        self,
        dirpath: str,
        signals: tuple[str, ...] | list[str] = ("SIGUSR2", "SIGTERM", "SIGINT"),
        requeue: bool = True,
        exit_code: int | None = None,
        crash_checkpoint: bool = True,
    ) -> None:
        self.dirpath = Path(dirpath)
        self.signums = [getattr(signal, name) for name in signals]
        self.requeue, self.exit_code, self.crash_checkpoint = requeue, exit_code, crash_checkpoint
        self.received: int | None = None  # the first signal's number
        self._stop_pending = False  # the stop checkpoint is written: exit at the next hook (after Lightning logs)
        self._previous: dict[int, Any] = {}
        self._last_batch_end: dict[str, Any] | None = None  # for crash.ckpt: the state after the last finished step
        self._rng_override: dict[str, Any] | None = None  # what state_dict returns while crash.ckpt is written

    def _handler(self, signum: int, frame) -> None:
        """The first signal only sets a flag (the work happens at a batch end); a second one stops now."""
        name = signal.Signals(signum).name
        if self.received is None:
            self.received = signum
            log.warning("received %s: checkpoint at the next batch end, then exit (again: stop now, no checkpoint)", name)
            return
        log.warning("received %s again: stopping now, without a checkpoint", name)
        self._restore()
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.SIG_DFL)  # a third Ctrl-C kills
        raise SystemExit(128 + signum)

    def _install(self) -> None:
        for signum in self.signums:
            previous = signal.signal(signum, self._handler)
            self._previous.setdefault(signum, previous)

    def _restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After Lightning registered its SIGTERM handler (``_SignalConnector``): ours replaces it for training, and
        # Lightning's teardown puts the handlers from before ``fit`` back.
        self.received, self._stop_pending = None, False
        self._install()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()
        if self._stop_pending:
            self._stop(trainer)
        if self._agree(trainer):  # the signal came after the last checkpoint: training is complete, but stop (no test)
            self._save(trainer)
            self._stop(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()
        if self.crash_checkpoint and isinstance(exception, Exception):
            self._save_crash(trainer, exception)

    def _save_crash(self, trainer: L.Trainer, exception: Exception) -> None:
        """An error in a training step: ``checkpoints/crash.ckpt`` holds the state after the last finished step, so
        ``ckpt_path=<it>`` goes on exactly from there once the cause is fixed; the error is then re-raised (by
        Lightning). Only where that state is still whole: one process, in the training batches of an epoch (not
        its validation), before the failing batch's optimizer step changed the weights."""
        snap = self._last_batch_end
        if (
            snap is None
            or trainer.world_size > 1
            or not trainer.training
            or trainer.sanity_checking
            or trainer.global_step != snap["global_step"]
            or trainer.current_epoch != snap["epoch"]
        ):
            log.error(
                "no crash checkpoint (%s): the last consistent one is %s", type(exception).__name__, self.dirpath / "last.ckpt"
            )
            return
        # the state after the last step: the generators as they were then, the datamodule's position before the
        # failing batch (the loops restart from their last completed batch by themselves)
        self._rng_override = snap["rng"]
        if isinstance(trainer.datamodule, ResumableData):
            trainer.datamodule.load_state_dict({"epoch": snap["epoch"], "batches": snap["batches"]})
        path = self.dirpath / "crash.ckpt"
        try:
            trainer.save_checkpoint(path)
        finally:
            self._rng_override = None
        log.error(
            "%s at global step %d: state after the last finished step saved to %s; resume with ckpt_path=%s",
            type(exception).__name__,
            trainer.global_step,
            path,
            path,
        )

    def _agree(self, trainer: L.Trainer) -> bool:
        """Ranks get the signal at slightly different moments: any rank's signal stops all, at the same step."""
        return bool(trainer.strategy.reduce_boolean_decision(self.received is not None, all=False))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        last = batch_idx + 1 >= trainer.num_training_batches  # batch_idx counts from the epoch's start, also resumed
        self._last_batch_end = (
            None
            if last
            else {
                "global_step": trainer.global_step,
                "epoch": trainer.current_epoch,
                "rng": self.state_dict(),
                "batches": batch_idx + 1,
            }
        )
        if self._stop_pending or not self._agree(trainer) or last:
            return  # the last batch of an epoch: wait for its validation and checkpoints (on_train_epoch_end)
        self._save(trainer)  # here, where Lightning's loops expect a mid-epoch checkpoint
        self._stop_pending = True

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if self._stop_pending:  # after the saved batch's logging, which Lightning does after on_train_batch_end
            self._stop(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Ours runs before the ModelCheckpoint callbacks (Lightning puts them last): save now, stop when they are done
        # (at the next epoch's start, or at the end of training).
        if not self._stop_pending and self._agree(trainer):
            self._save(trainer)
            self._stop_pending = True

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_batch_end = None
        if self._stop_pending:
            self._stop(trainer)

    def _save(self, trainer: L.Trainer) -> None:
        path = self.dirpath / "last.ckpt"
        tmp = path.with_name(".last.ckpt.tmp")
        trainer.save_checkpoint(tmp)  # rank 0 writes; every rank takes part
        if trainer.is_global_zero:
            os.replace(tmp, path)  # whole or not at all: a second signal while writing leaves the old last.ckpt
        log.warning("preemption checkpoint at global step %d: %s", trainer.global_step, path)  # test_slurm reads it

    def _stop(self, trainer: L.Trainer) -> None:
        signum = self.received if self.received is not None else signal.SIGTERM  # another rank's signal
        job = os.environ.get("SLURM_JOB_ID")
        requeue = self.requeue and job and signal.Signals(signum).name in SLURM_SIGNALS
        if trainer.is_global_zero and requeue:
            result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, check=False)
            log.warning("scontrol requeue %s: %s", job, (result.stdout + result.stderr).strip() or "ok")
        for lg in trainer.loggers:  # the CSV logger buffers rows: write them before leaving
            lg.save()
        sys.stdout.flush()
        # SystemExit, not a return: a returning job would write submitit's result file and count as finished, and
        # ``run`` would go on to test.
        raise SystemExit(self.exit_code if self.exit_code is not None else 128 + signum)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if self._rng_override is not None:  # crash.ckpt: the logged-step count as a batch end's checkpoint has it
            # Lightning adds 1 to it on restart (it expects a save at a batch end, before its own increment); this
            # is the checkpoint's documented dict, not a loop attribute
            loop = checkpoint["loops"]["fit_loop"]["epoch_loop.state_dict"]
            loop["_batches_that_stepped"] -= 1

    def state_dict(self) -> dict[str, Any]:
        """The generators' states at the checkpoint, so dropout, drop-path and mixup continue identically."""
        if self._rng_override is not None:  # crash.ckpt: those after the last finished step
            return self._rng_override
        mt, key, pos, has_gauss, gauss = np.random.get_state()
        return {
            "torch": torch.get_rng_state(),
            "numpy": (mt, torch.from_numpy(key.astype(np.int64)), pos, has_gauss, gauss),
            "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        torch.set_rng_state(state["torch"])
        mt, key, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((mt, key.numpy().astype(np.uint32), pos, has_gauss, gauss))
        random.setstate(state["python"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


class ResumableCSVLogger(CSVLogger):
    """Lightning's CSV logger, which on a resumed run continues ``metrics.csv`` instead of deleting it: the rows of
    the earlier run up to the checkpoint are kept, the new ones appended, the header becomes the union of keys."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.resume_step: int | None = None

    def continue_from(self, global_step: int) -> None:
        """Keep the rows logged before ``global_step`` (call before ``fit``). Lightning numbers a row by the batches
        done before it, so the checkpoint's step is the first the resumed run logs: rows from ``global_step`` on
        were logged by the stopped run after its checkpoint (e.g. the next epoch's learning rate) and come again."""
        self.resume_step = global_step

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None and self.resume_step is not None and rank_zero_only.rank == 0:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(self.log_dir, self.resume_step)
        return super().experiment


class _ContinuingWriter(ExperimentWriter):
    def __init__(self, log_dir: str, resume_step: int) -> None:
        self.resume_step = resume_step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        """Instead of deleting the old metrics.csv: keep its rows before the resumed step and its header."""
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            rows = [r for r in reader if r.get("step") in (None, "") or int(float(r["step"])) < self.resume_step]
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=header)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, path)
        self.metrics_keys = header  # new keys later rewrite the file with the union
        log.info("continuing %s: kept %d rows before step %d", path, len(rows), self.resume_step)


class ResumableTensorBoardLogger(TensorBoardLogger):
    """Lightning's TensorBoard logger that a resumed run continues: the same directory (``version`` fixed by the
    config) and, from ``continue_from(step)``, a ``purge_step``: TensorBoard hides what the stopped run logged at
    that step and after (logged again by the resumed run), so no step is shown twice."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        import importlib.util

        if importlib.util.find_spec("tensorboard") is None:
            raise ImportError(
                "the default loggers (conf/logger/default.yaml: csv + tensorboard) need tensorboard: "
                "pip install tensorboard (or pip install -e .[logging]); without it, run with logger=csv"
            )
        super().__init__(*args, **kwargs)

    def continue_from(self, global_step: int) -> None:
        """Call before the first log (before ``fit``)."""
        self._kwargs["purge_step"] = global_step


class EndOfTestReports(L.Callback):
    """End-of-test reports (``mvit_video.reports``) in ``dirpath`` and every logger that takes images; ``report``
    keeps the per-class values for the end-of-run table (``train.print_summary``).

    What it reads, without any task code of its own (the protocol):

    - a classifier's ``test_views[0]`` (``MultiViewAccuracy``): its rows, before the task's ``on_test_epoch_end``
      computes and resets them (callbacks run first), gathered from every process: video-level scores, hence the
      confusion matrix and per-class accuracy; class names from ``metadata["class_names"]``;
    - a task whose ``test_map`` metric has ``per_class_ap`` (``{class id: AP}``) after the task computed it:
      per-class AP, names from ``metadata["action_names"]`` (AVA) or ``metadata["class_names"]``, and the test
      positives per class from its ``per_class_positives`` (``{class id: count}``) where it has them."""

    def __init__(self, dirpath: str | Path) -> None:
        self.dirpath = Path(dirpath)
        self.report: Any = None  # reports.ClassReport of the last test

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from .reports import classification_report, video_scores

        views = getattr(pl_module, "test_views", None)
        self.report = None
        if views is None or not len(views) or not getattr(views[0], "update_called", False):
            return
        metric = views[0]
        with metric.sync_context(should_unsync=True):  # every process's rows (a collective: all ranks get here)
            rows = dim_zero_cat(metric.rows) if isinstance(metric.rows, list) else metric.rows
            rows = rows.detach().cpu()
        names = list(getattr(pl_module, "metadata", {}).get("class_names") or range(metric.num_classes))
        scores, labels = video_scores(rows, metric.num_classes)  # (V, K), (V,)
        self.report = classification_report(scores, labels, [str(n) for n in names])

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from .reports import ap_report, send_to_loggers, write_reports

        test_map = getattr(pl_module, "test_map", None)
        per_class = getattr(test_map, "per_class_ap", None)
        if self.report is None and per_class:
            meta = getattr(pl_module, "metadata", {})
            names = meta.get("action_names") or dict(enumerate(meta.get("class_names") or []))
            self.report = ap_report(per_class, names, getattr(test_map, "per_class_positives", None))
        if self.report is None or not trainer.is_global_zero:
            return
        images = write_reports(self.report, self.dirpath)
        send_to_loggers(trainer.loggers, images, trainer.global_step)
        log.info("test reports: %s", ", ".join(str(p) for p in images))


def mlflow_logger(tracking_uri: str | None = None, **kwargs: Any) -> Any:
    """Lightning's MLFlowLogger. A ``file:`` tracking URI (the run dir's store, no server) is MLflow's file store,
    which MLflow 3 refuses unless ``MLFLOW_ALLOW_FILE_STORE`` is set (it is "in maintenance mode"; a database store
    needs sqlalchemy, which mlflow-skinny lacks): set here for that URI only, unless the environment says otherwise."""
    try:
        import mlflow  # noqa: F401
        from lightning.pytorch.loggers import MLFlowLogger
    except ImportError as err:
        raise ImportError("logger=mlflow needs mlflow: pip install mlflow-skinny (or pip install -e .[logging])") from err
    if tracking_uri and tracking_uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return MLFlowLogger(tracking_uri=tracking_uri, **kwargs)
